//! `strew check SNAPSHOT`: whether every packet of a snapshot is still held.
//! By default through audits ([`grid_check_by_audits`]): the coordinator
//! group's leader challenges every packet copy, a page of stripes at a time,
//! for a random 1 KiB chunk and its BLAKE3 proof against the PacketId (one
//! packet read on the target, nothing downloaded; the outcomes count in the
//! targets' audit scores). With `--read-data` ([`grid_check`]) by fetching
//! each one from its target and checking it against its PacketId (restic's
//! `check --read-data`). Every stripe is then healthy (every packet
//! verified), degraded (some missing, still K or more distinct packets
//! verified) or lost; every missing or corrupt packet is named with its
//! stripe, target and reason.
//!
//! Reading needs the source's key only to open the sequence (which packets,
//! on which targets); the packets are ciphertext and are not decrypted.
//! Neither way changes what the grid stores.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;
use strew_coordinator::{NodeId, PacketId, SnapshotId};
use tokio::task::JoinSet;

use strew_coordinator::manager::MAX_AUDIT_PAGE;
use strew_overlay::manager::{AuditVerdict, StripeAudited};

use super::restore::open_sequence;
use super::{GridError, ManagerApi, PacketTransport, ReadTickets, SourceIdentity, error_text};
use crate::pipeline::packet::decode_packet;
use strew_coordinator::ticket::StorageTicket;

/// Packets fetched at once.
const PARALLEL: usize = 8;

/// A packet its target did not give back intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingPacket {
    /// The stripe's position in the snapshot's sequence.
    pub stripe: usize,
    pub data_id: String,
    pub packet: String,
    pub target: String,
    pub reason: String,
}

/// What a check found (`strew check --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub snapshot: String,
    /// `audit` (the leader challenged every packet) or `read` (every packet
    /// was downloaded and verified).
    pub method: &'static str,
    pub stripes: u64,
    pub healthy: u64,
    pub degraded: u64,
    pub lost: u64,
    /// Packet copies asked for, and those that came back intact.
    pub packets: u64,
    pub verified: u64,
    /// Bytes read and verified.
    pub bytes: u64,
    pub missing: Vec<MissingPacket>,
}

impl CheckReport {
    /// A report of `snapshot` with nothing counted yet.
    pub fn empty(snapshot: SnapshotId, method: &'static str) -> Self {
        CheckReport {
            snapshot: snapshot.to_string(),
            method,
            stripes: 0,
            healthy: 0,
            degraded: 0,
            lost: 0,
            packets: 0,
            verified: 0,
            bytes: 0,
            missing: Vec::new(),
        }
    }
}

/// Why a fetch gave nothing usable, and whether the bytes came back but
/// were unusable (corrupt or malformed) rather than not at all.
#[derive(Clone, Debug)]
struct Unusable {
    why: String,
    corrupt: bool,
}

impl From<&str> for Unusable {
    fn from(why: &str) -> Self {
        Unusable {
            why: why.to_string(),
            corrupt: false,
        }
    }
}

/// One fetch's answer: the bytes' length and the stripe's K, or why not.
type Fetched = Result<(u64, u8), Unusable>;

async fn fetch<T: PacketTransport>(
    transport: &T,
    ticket: Option<StorageTicket>,
    target: NodeId,
    id: PacketId,
) -> Fetched {
    let ticket = ticket.ok_or("the manager gave no read ticket for it")?;
    let bytes = transport
        .get(target, &ticket, id)
        .await
        .map_err(|e| Unusable {
            why: error_text(&e),
            corrupt: false,
        })?;
    if PacketId::of(&bytes) != id {
        return Err(Unusable {
            why: "the bytes it returned do not hash to the packet id (corrupt)".into(),
            corrupt: true,
        });
    }
    let (header, _) = decode_packet(&bytes).map_err(|e| Unusable {
        why: format!("malformed packet: {e}"),
        corrupt: true,
    })?;
    Ok((bytes.len() as u64, header.k))
}

/// Fetches and verifies every packet of `snapshot`.
pub async fn grid_check<M: ManagerApi, T: PacketTransport + 'static>(
    me: &SourceIdentity,
    manager: &M,
    transport: Arc<T>,
    snapshot: SnapshotId,
) -> Result<CheckReport, GridError> {
    let seq = open_sequence(me, manager, snapshot).await?;
    let tickets = ReadTickets::fetch(manager, snapshot, seq.stripes.len()).await?;
    // (stripe, entry, target, packet) for every copy the sequence names.
    let mut jobs: Vec<(usize, usize, NodeId, PacketId)> = Vec::new();
    for (s, stripe) in seq.stripes.iter().enumerate() {
        for (e, entry) in stripe.packets.iter().enumerate() {
            for target in &entry.targets {
                jobs.push((s, e, *target, entry.packet_id));
            }
        }
    }
    let mut answers: Vec<Option<Fetched>> = vec![None; jobs.len()];
    let mut running: JoinSet<(usize, Fetched)> = JoinSet::new();
    let mut next = 0;
    while next < jobs.len() || !running.is_empty() {
        while running.len() < PARALLEL && next < jobs.len() {
            let (_, _, target, id) = jobs[next];
            let transport = transport.clone();
            let ticket = tickets.get(&target, &id).cloned();
            let i = next;
            running.spawn(async move { (i, fetch(transport.as_ref(), ticket, target, id).await) });
            next += 1;
        }
        if let Some(joined) = running.join_next().await {
            let (i, answer) =
                joined.map_err(|e| GridError::Other(format!("a check task failed: {e}")))?;
            if let Some(slot) = answers.get_mut(i) {
                *slot = Some(answer);
            }
        }
    }
    let mut report = CheckReport::empty(snapshot, "read");
    report.stripes = seq.stripes.len() as u64;
    report.packets = jobs.len() as u64;
    for (s, stripe) in seq.stripes.iter().enumerate() {
        let mut good_entries = vec![false; stripe.packets.len()];
        let mut good_ids: BTreeSet<PacketId> = BTreeSet::new();
        let mut k: Option<u8> = None;
        let mut all_copies = true;
        let mut corrupt = false;
        for (i, (js, e, target, id)) in jobs.iter().enumerate() {
            if *js != s {
                continue;
            }
            match answers.get(i).cloned().flatten() {
                Some(Ok((len, stripe_k))) => {
                    report.verified += 1;
                    report.bytes += len;
                    good_entries[*e] = true;
                    good_ids.insert(*id);
                    k.get_or_insert(stripe_k);
                }
                other => {
                    all_copies = false;
                    corrupt |= matches!(&other, Some(Err(u)) if u.corrupt);
                    report.missing.push(MissingPacket {
                        stripe: s,
                        data_id: stripe.data_id.to_string(),
                        packet: id.to_string(),
                        target: target.to_string(),
                        reason: match other {
                            Some(Err(u)) => u.why,
                            _ => "not fetched".into(),
                        },
                    });
                }
            }
        }
        let needed = usize::from(k.unwrap_or(1).max(1));
        if all_copies && good_entries.iter().all(|g| *g) {
            report.healthy += 1;
        } else if !good_ids.is_empty() && good_ids.len() >= needed {
            report.degraded += 1;
        } else {
            report.lost += 1;
            if corrupt {
                // Lost with unusable bytes: the next source with this chunk
                // must upload it again rather than reuse this copy.
                let packets = stripe.packets.iter().map(|p| p.packet_id).collect();
                if let Err(err) = manager.report_bad(stripe.data_id, packets).await {
                    tracing::warn!(chunk = %stripe.data_id, %err, "could not report an unusable chunk");
                }
            }
        }
    }
    Ok(report)
}

/// Checks every packet of `snapshot` through the leader's audits, a page
/// of [`MAX_AUDIT_PAGE`] stripes at a time (`bytes` stays 0: nothing is
/// downloaded).
pub async fn grid_check_by_audits(
    manager: &super::OverlayManager,
    snapshot: SnapshotId,
) -> Result<CheckReport, GridError> {
    let mut report = CheckReport::empty(snapshot, "audit");
    let mut from = 0u64;
    loop {
        let (page, total) = manager
            .audit_snapshot_page(snapshot, from, MAX_AUDIT_PAGE as u32)
            .await?;
        report.stripes = total;
        if page.is_empty() {
            break;
        }
        from = from.saturating_add(page.len() as u64);
        tally_audits(&page, &mut report);
        if from >= total {
            break;
        }
    }
    Ok(report)
}

/// Adds one audit page's stripes to `report`.
pub fn tally_audits(page: &[StripeAudited], report: &mut CheckReport) {
    for stripe in page {
        let mut passed: BTreeSet<PacketId> = BTreeSet::new();
        let mut all = true;
        for p in &stripe.packets {
            report.packets += 1;
            if p.verdict == AuditVerdict::Passed {
                report.verified += 1;
                passed.insert(p.packet);
                continue;
            }
            all = false;
            report.missing.push(MissingPacket {
                stripe: usize::try_from(stripe.stripe).unwrap_or(usize::MAX),
                data_id: stripe.data_id.to_string(),
                packet: p.packet.to_string(),
                target: p.target.to_string(),
                reason: match p.verdict {
                    AuditVerdict::Failed => {
                        "failed its audit (wrong proof, not found, corrupt or unanswered)"
                    }
                    AuditVerdict::Unreachable => "its target could not be reached",
                    _ => "its target did not answer the audit",
                }
                .into(),
            });
        }
        if all && !stripe.packets.is_empty() {
            report.healthy += 1;
        } else if passed.len() >= usize::from(stripe.needed.max(1)) {
            report.degraded += 1;
        } else {
            report.lost += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use strew_coordinator::DataId;
    use strew_overlay::manager::PacketAudited;

    use super::*;

    fn stripe(n: u64, needed: u8, verdicts: &[AuditVerdict]) -> StripeAudited {
        StripeAudited {
            stripe: n,
            data_id: DataId([n as u8; 32]),
            needed,
            packets: verdicts
                .iter()
                .enumerate()
                .map(|(i, v)| PacketAudited {
                    packet: PacketId([i as u8; 32]),
                    target: NodeId([100 + i as u8; 32]),
                    verdict: *v,
                })
                .collect(),
        }
    }

    #[test]
    fn audited_stripes_are_healthy_degraded_or_lost_by_k_and_name_what_is_missing() {
        use AuditVerdict::*;
        let mut report = CheckReport::empty(SnapshotId([1; 32]), "audit");
        tally_audits(
            &[
                stripe(0, 4, &[Passed; 6]),
                stripe(1, 4, &[Passed, Passed, Passed, Passed, Failed, Unreachable]),
                stripe(2, 4, &[Passed, Passed, Passed, NoAnswer, Failed, Failed]),
                stripe(3, 1, &[Failed, Passed]),
            ],
            &mut report,
        );
        assert_eq!(
            (report.healthy, report.degraded, report.lost),
            (1, 2, 1),
            "K of 4 met with 4 passed, not with 3; one replica suffices"
        );
        assert_eq!((report.packets, report.verified), (20, 14));
        assert_eq!(report.missing.len(), 6);
        assert!(report.missing.iter().all(|m| m.stripe > 0));
        assert!(
            report.missing[0].reason.contains("audit"),
            "{:?}",
            report.missing[0]
        );
    }
}
