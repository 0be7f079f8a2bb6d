//! Forgetting a snapshot: the manager drops it and answers which packets no
//! snapshot of any source references any more, per target, with delete
//! tickets; the source asks each target to delete them. Shared packets stay.
//! A target that cannot be reached keeps its packets until the manager's
//! garbage collection reaches it; the report says so.

use std::collections::BTreeMap;

use serde::Serialize;
use strew_coordinator::{NodeId, PacketId, SnapshotId};

use super::{Cleanup, GridError, KnownIndex, ManagerApi, PacketTransport};

#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub snapshot: SnapshotId,
    pub deleted: u64,
    /// Packets freed by the manager that could not be deleted now, per target
    /// (JSON: an object keyed by the target's NodeId text, of packet ids
    /// in hex).
    #[serde(serialize_with = "by_target_text")]
    pub undeleted: BTreeMap<NodeId, Vec<PacketId>>,
    /// Unix ms until which the delete tickets of the undeleted packets hold
    /// (the daemon retries them until then).
    pub retry_until: Option<u64>,
    /// More packets were freed than the manager's answer carries (at most
    /// `MAX_DELETIONS_ANSWERED`): the group's leader deletes the rest from
    /// their targets (its collection queue).
    pub more_collected_by_leader: bool,
    /// The delete tickets of targets that could not be reached, to retry.
    #[serde(skip)]
    pub retry: Cleanup,
}

/// Serialises a per-target map with the NodeIds as text keys (JSON object keys must be strings).
fn by_target_text<S: serde::Serializer>(
    map: &BTreeMap<NodeId, Vec<PacketId>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(map.len()))?;
    for (target, ids) in map {
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        m.serialize_entry(&target.to_string(), &ids)?;
    }
    m.end()
}

/// A call of deletes (up to [`super::deletes::PER_CALL`] on one target)
/// that takes longer is given up for now (the target may be gone).
const DELETE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);
/// Calls of deletes in flight at once.
const DELETES_IN_FLIGHT: usize = 4;

pub async fn grid_forget<M: ManagerApi, T: PacketTransport>(
    manager: &M,
    transport: &T,
    known: &KnownIndex,
    snapshot: SnapshotId,
) -> Result<ForgetReport, GridError> {
    let response = manager.forget(snapshot).await?;
    // The local cache may name chunks that are now gone: start afresh.
    let idx = known.clone();
    tokio::task::spawn_blocking(move || idx.clear())
        .await
        .map_err(|e| GridError::Other(format!("known-chunk index task failed: {e}")))?
        .map_err(|e| GridError::Other(format!("known-chunk index: {e}")))?;
    let tickets = super::ticket_index(&response.delete_tickets);
    let mut results: Vec<(NodeId, PacketId, bool)> = Vec::new();
    let mut jobs = Vec::new();
    for (target, ids) in &response.deletions {
        for id in ids {
            match tickets.get(&(*target, *id)) {
                Some(ticket) => jobs.push((*target, *id, *ticket)),
                None => results.push((*target, *id, false)),
            }
        }
    }
    for (target, id, result) in
        super::deletes::delete_all(transport, jobs, DELETES_IN_FLIGHT, DELETE_DEADLINE).await
    {
        if let Err(err) = &result {
            tracing::warn!(packet = %id, %err, "delete failed");
        }
        results.push((target, id, result.is_ok()));
    }
    let mut report = ForgetReport {
        snapshot,
        deleted: 0,
        undeleted: BTreeMap::new(),
        retry_until: None,
        more_collected_by_leader: response.more_collected_by_leader,
        retry: Cleanup::default(),
    };
    for (target, id, ok) in results {
        if ok {
            report.deleted += 1;
        } else {
            report.undeleted.entry(target).or_default().push(id);
        }
    }
    report.retry.tickets = response
        .delete_tickets
        .iter()
        .filter(|t| report.undeleted.contains_key(&t.target))
        .cloned()
        .collect();
    report.retry_until = report.retry.tickets.iter().map(|t| t.expires_at).min();
    Ok(report)
}
