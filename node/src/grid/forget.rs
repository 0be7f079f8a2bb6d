//! Forgetting a snapshot: the manager drops it and answers which packets no
//! snapshot of any source references any more, per target, with delete
//! tickets; the source asks each target to delete them. Shared packets stay.
//! A target that cannot be reached keeps its packets until the manager's
//! garbage collection reaches it; the report says so.

use std::collections::BTreeMap;

use futures::StreamExt;
use serde::Serialize;
use strew_coordinator::{NodeId, PacketId, SnapshotId};

use super::{GridError, KnownIndex, ManagerApi, PacketTransport};

#[derive(Debug, Clone, Serialize)]
pub struct ForgetReport {
    pub snapshot: SnapshotId,
    pub deleted: u64,
    /// Packets freed by the manager that could not be deleted now, per target.
    pub undeleted: BTreeMap<NodeId, Vec<PacketId>>,
}

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
    let jobs: Vec<(NodeId, PacketId)> = response
        .deletions
        .iter()
        .flat_map(|(t, ids)| ids.iter().map(move |id| (*t, *id)))
        .collect();
    let results: Vec<(NodeId, PacketId, bool)> = futures::stream::iter(jobs)
        .map(|(target, id)| {
            let ticket = tickets.get(&(target, id)).copied();
            async move {
                let ok = match ticket {
                    Some(ticket) => match transport.delete(target, ticket, id).await {
                        Ok(()) => true,
                        Err(err) => {
                            tracing::warn!(%err, packet = %id, "delete failed");
                            false
                        }
                    },
                    None => false,
                };
                (target, id, ok)
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut report = ForgetReport {
        snapshot,
        deleted: 0,
        undeleted: BTreeMap::new(),
    };
    for (target, id, ok) in results {
        if ok {
            report.deleted += 1;
        } else {
            report.undeleted.entry(target).or_default().push(id);
        }
    }
    Ok(report)
}
