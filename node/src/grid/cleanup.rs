//! Tidying up after a backup: abandoning pending plans the backup replaced
//! or gave up (their reservations released at once) and deleting the packets
//! they had put on targets, in parallel, each delete bounded in time. A
//! cancelled backup ends here too.

use std::collections::BTreeSet;

use strew_coordinator::NodeId;

use super::{GridError, ManagerApi, PacketTransport};

/// Aborts the plans of a cancelled backup (their reservations are released
/// at once) and deletes what it had uploaded; the error says so.
pub(super) async fn cancelled<M: ManagerApi, T: PacketTransport>(
    manager: &M,
    transport: &T,
    abandoned: Vec<u64>,
    exclude: &[NodeId],
) -> GridError {
    let plans = abandoned.len();
    let report = clean_up(
        manager,
        transport,
        Cleanup {
            abandoned,
            tickets: Vec::new(),
            skip: exclude.iter().copied().collect(),
        },
    )
    .await;
    GridError::Cancelled(format!(
        "{plans} plan(s) aborted and their reservations released; {} uploaded packet(s) deleted, {} left to the manager's expiry",
        report.deleted,
        report.failed + report.skipped
    ))
}

/// What a committed backup leaves to tidy up: the plans it replaced (their
/// reservations) and packets nothing references. Not part of the backup's
/// answer: it runs after it, in the background.
#[derive(Debug, Clone, Default)]
pub struct Cleanup {
    pub abandoned: Vec<u64>,
    pub tickets: Vec<strew_coordinator::StorageTicket>,
    /// Targets whose uploads failed: not contacted (the manager's expiry of
    /// the abandoned plans covers them).
    pub skip: BTreeSet<NodeId>,
}

/// What [`clean_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub deleted: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// Calls of leftover deletes (each up to [`super::deletes::PER_CALL`] on
/// one target) in flight at once.
const CLEANUP_PARALLEL: usize = 4;
/// A call of leftover deletes that takes longer is given up (the target may
/// be gone).
const CLEANUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// Abandons replaced plans and deletes leftover packets, in parallel, each
/// delete bounded in time, skipping targets that failed during the backup.
pub async fn clean_up<M: ManagerApi, T: PacketTransport>(
    manager: &M,
    transport: &T,
    cleanup: Cleanup,
) -> CleanupReport {
    let mut tickets = cleanup.tickets;
    for pending_id in cleanup.abandoned {
        match manager.abandon(pending_id).await {
            Ok(more) => tickets.extend(more),
            Err(err) => {
                tracing::warn!(pending_id, %err, "could not abandon a replaced plan; the manager will expire it")
            }
        }
    }
    let mut report = CleanupReport::default();
    let mut jobs = Vec::new();
    for ticket in &tickets {
        if cleanup.skip.contains(&ticket.target) {
            report.skipped += ticket.entries.len();
            continue;
        }
        for entry in &ticket.entries {
            jobs.push((ticket.target, entry.packet_id, ticket));
        }
    }
    let outcomes: Vec<bool> =
        super::deletes::delete_all(transport, jobs, CLEANUP_PARALLEL, CLEANUP_DEADLINE)
            .await
            .into_iter()
            .map(|(_, _, result)| {
                if let Err(err) = &result {
                    tracing::debug!(%err, "leftover packet not deleted now");
                }
                result.is_ok()
            })
            .collect();
    report.deleted = outcomes.iter().filter(|ok| **ok).count();
    report.failed = outcomes.len() - report.deleted;
    if report.failed + report.skipped > 0 {
        tracing::info!(
            deleted = report.deleted,
            failed = report.failed,
            skipped = report.skipped,
            "leftover packets not deleted now; the manager's expiry covers them"
        );
    }
    report
}
