//! The raft entry bound as the coordinator group enforces it (SPEC R10):
//! every proposal is measured before it is proposed, one that could never
//! travel in a raft message is refused with [`WriteError::EntryTooLarge`]
//! (never proposed: an entry no follower can receive wedges the group), and
//! both the refusals and the largest entry proposed are exported as metrics.
//!
//! The manager keeps its plans far smaller (one part of a backup is at most
//! [`strew_coordinator::MAX_ENTRY_BYTES`]); this is the last line for every
//! other command.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::group::WriteError;
use super::types::Proposal;
use super::wire::MAX_RAFT_MESSAGE;

/// Room an append-entries message needs besides one entry (vote, log ids,
/// the entry's own envelope).
const ENVELOPE_BYTES: usize = 64 << 10;

/// Largest encoded proposal the group accepts: one entry alone in an
/// append-entries message must fit [`MAX_RAFT_MESSAGE`].
pub const MAX_PROPOSAL_BYTES: usize = MAX_RAFT_MESSAGE - ENVELOPE_BYTES;

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
    check_against(proposal, MAX_PROPOSAL_BYTES)
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
    use strew_coordinator::{Command, SnapshotId};

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
}
