//! The raft entry bound as the coordinator group enforces it (SPEC R10/R12,
//! issue 12): every proposal is measured before it is proposed, one over
//! [`strew_coordinator::MAX_ENTRY_BYTES`] (1 MiB) is refused with
//! [`WriteError::EntryTooLarge`] (never proposed: an entry no follower can
//! receive wedges the group), and both the refusals and the largest entry
//! proposed are exported as metrics. Work larger than one entry is split
//! by the manager (plans in parts, receipts and commit orders in pages),
//! so every raft message fits [`MAX_RAFT_MESSAGE`] (4 MiB).

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use strew_coordinator::MAX_ENTRY_BYTES;

use super::group::{MAX_PAYLOAD_ENTRIES, SNAPSHOT_CHUNK_BYTES, WriteError};
use super::types::Proposal;
use super::wire::MAX_RAFT_MESSAGE;

/// Room an append-entries message needs besides its entries (vote, log
/// ids, each entry's envelope).
const ENVELOPE_BYTES: usize = 64 << 10;

const _: () =
    assert!(MAX_PAYLOAD_ENTRIES as usize * (MAX_ENTRY_BYTES + ENVELOPE_BYTES) <= MAX_RAFT_MESSAGE);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES + ENVELOPE_BYTES <= MAX_RAFT_MESSAGE);

/// Proposals refused for their size since the process started.
pub static ENTRIES_REFUSED: LazyLock<Counter> = LazyLock::new(Counter::default);
/// Bytes of the largest proposal made since the process started.
pub static LARGEST_ENTRY: LazyLock<Gauge> = LazyLock::new(Gauge::default);

/// Registers the bound's metrics (a daemon does this once).
pub fn register(registry: &mut Registry) {
    registry.register(
        "strew_raft_entries_refused",
        "Proposals refused before proposing because their entry exceeds the raft bound",
        ENTRIES_REFUSED.clone(),
    );
    registry.register(
        "strew_raft_largest_entry_bytes",
        "Bytes of the largest raft entry this node proposed",
        LARGEST_ENTRY.clone(),
    );
}

/// The proposal's encoded size, or why it may not be proposed.
pub fn check(proposal: &Proposal) -> Result<usize, WriteError> {
    check_against(proposal, MAX_ENTRY_BYTES)
}

fn check_against(proposal: &Proposal, limit: usize) -> Result<usize, WriteError> {
    let bytes = strew_coordinator::cbor::encode(proposal)
        .map_err(|e| WriteError::Fatal(format!("a proposal does not encode: {e}")))?
        .len();
    if bytes > limit {
        ENTRIES_REFUSED.inc();
        return Err(WriteError::EntryTooLarge { bytes, limit });
    }
    let size = i64::try_from(bytes).unwrap_or(i64::MAX);
    if size > LARGEST_ENTRY.get() {
        LARGEST_ENTRY.set(size);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::MAX_BATCH;
    use strew_coordinator::audit::{
        AuditOutcome, AuditPolicy, AuditResult, MAX_RESULTS_PER_COMMAND,
    };
    use strew_coordinator::{Command, GeoPoint, NodeId, NodeProfile, PacketId, SnapshotId};

    #[test]
    fn a_proposal_over_the_bound_is_refused_and_counted() {
        let small = Proposal::Manager(Command::TrimLog { before_seq: 3 });
        let bytes = check(&small).expect("a small entry passes");
        assert!(LARGEST_ENTRY.get() >= bytes as i64);
        let big = Proposal::Batch(
            (0..200)
                .map(|i| Command::Forget {
                    snapshot: SnapshotId([i as u8; 32]),
                    at: i,
                    expired: false,
                })
                .collect(),
        );
        let before = ENTRIES_REFUSED.get();
        assert!(matches!(
            check_against(&big, 1000),
            Err(WriteError::EntryTooLarge { limit: 1000, .. })
        ));
        assert!(ENTRIES_REFUSED.get() > before);
    }

    /// A profile with every optional field set (the largest a join carries).
    fn full_profile(n: u32) -> NodeProfile {
        let mut id = [0xffu8; 32];
        id[..4].copy_from_slice(&n.to_be_bytes());
        let mut p = NodeProfile::new(
            NodeId(id),
            GeoPoint::new(-89.123456789, 179.987654321).expect("valid"),
            u64::MAX,
            u64::MAX,
        );
        p.bandwidth_limit = u64::MAX;
        p.load = 0.123_456_79;
        p.uptime_secs = u64::MAX;
        p.x25519_public = [0xff; 32];
        p.protocol_version = u32::MAX;
        p.network = Some(strew_coordinator::network::NetworkDomain::V6([0xff; 8]));
        p.behind_nat = true;
        p
    }

    #[test]
    fn the_largest_batch_of_joins_fits_one_entry() {
        let batch = Proposal::Batch(
            (0..MAX_BATCH as u32)
                .map(|n| Command::Join {
                    profile: full_profile(n),
                    token: None,
                    at: u64::MAX,
                })
                .collect(),
        );
        let bytes = check(&batch).expect("fits");
        eprintln!("a batch of {MAX_BATCH} joins: {bytes} bytes");
        assert!(bytes <= MAX_ENTRY_BYTES, "{bytes} bytes");
    }

    #[test]
    fn the_largest_audit_record_fits_one_entry() {
        let audits = Proposal::Manager(Command::RecordAudits {
            results: (0..MAX_RESULTS_PER_COMMAND)
                .map(|n| AuditResult {
                    target: NodeId([0xff; 32]),
                    packet: PacketId([(n % 251) as u8; 32]),
                    outcome: AuditOutcome::Unreachable,
                })
                .collect(),
            policy: AuditPolicy::default(),
            at: u64::MAX,
        });
        let bytes = check(&audits).expect("fits");
        eprintln!("{MAX_RESULTS_PER_COMMAND} audit results: {bytes} bytes");
        assert!(bytes <= MAX_ENTRY_BYTES, "{bytes} bytes");
    }

    #[test]
    fn every_kind_is_bound_to_one_mib() {
        // Forgets one over the entry bound: refused at 1 MiB, though a raft
        // message would carry it.
        let forgets = Proposal::Batch(
            (0..30_000u32)
                .map(|i| Command::Forget {
                    snapshot: SnapshotId([(i % 251) as u8; 32]),
                    at: u64::from(i),
                    expired: false,
                })
                .collect(),
        );
        assert!(matches!(
            check(&forgets),
            Err(WriteError::EntryTooLarge { limit, bytes }) if limit == MAX_ENTRY_BYTES && bytes > limit
        ));
    }
}
