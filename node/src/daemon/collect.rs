//! The leader's collection: delivering the deletes of the replicated
//! collection queue (packets nothing references any more: the rest of a
//! forget too large for one answer, the uploads of expired plans, deletes
//! a source or a repair could not deliver) and recording what the targets
//! confirmed.
//!
//! Every [`COLLECT_EVERY`] the group's leader takes up to [`PER_PASS`] due
//! entries of targets that are online and not backing off, signs delete
//! tickets, sends the deletes in batches per target ([`CALLS_IN_FLIGHT`]
//! calls at a time; the overlay
//! answers a request to this node itself locally), and proposes `Collected`
//! for every delete a target confirmed (deleted, already absent, or held
//! under another generation: a live copy that must stay). A target whose
//! deletes fail is backed off: exponentially while it confirms none of
//! them, a second when it confirmed some (slow, not gone). Its entries stay
//! queued, so nothing is forgotten while it is away. Owns the schedule, the
//! I/O and the collection metrics; what is due is the coordinator's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strew_coordinator::{Deletion, NodeId, PacketId, StorageTicket};
use strew_overlay::OverlayHandle;
use tracing::{debug, info, warn};

use super::manager::ManagerService;
use crate::grid::deletes::delete_all;
use crate::grid::{OverlayTransport, TransportError, TransportFailure};

/// How often the leader looks at the queue.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// Most entries one pass takes (a pass that takes this many runs again at
/// once).
pub const PER_PASS: usize = 4_096;
/// Calls of deletes in flight at once (each up to
/// [`PER_CALL`](crate::grid::deletes::PER_CALL) deletes on one target, in
/// `DeleteMany` batches).
pub const CALLS_IN_FLIGHT: usize = 8;
/// A call of deletes that takes longer counts as a failure of each of
/// them.
const DELETE_DEADLINE: Duration = Duration::from_secs(20);
/// Longest wait before a failing target is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Prometheus metrics of the collection.
#[derive(Clone, Default)]
pub struct CollectMetrics {
    pub collected: Counter,
    pub failures: Counter,
    pub queue: Gauge,
}

impl CollectMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = CollectMetrics::default();
        registry.register(
            "strew_collect_packets",
            "Queued deletes this node delivered as the leader (deleted, absent or live again)",
            m.collected.clone(),
        );
        registry.register(
            "strew_collect_failures",
            "Queued deletes whose target failed or did not answer (retried later)",
            m.failures.clone(),
        );
        registry.register(
            "strew_collect_queue",
            "Entries in the replicated collection queue (packets still to delete)",
            m.queue.clone(),
        );
        m
    }
}

/// Runs until aborted, active while this node leads.
pub async fn run(service: Arc<ManagerService>, metrics: CollectMetrics) {
    let overlay = service.overlay().clone();
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Failing targets: not before, attempts.
    let mut backoff: HashMap<NodeId, (Instant, u32)> = HashMap::new();
    let mut again = false;
    loop {
        if !again {
            tick.tick().await;
        }
        again = false;
        if !service.leads() {
            backoff.clear();
            continue;
        }
        metrics
            .queue
            .set(i64::try_from(service.collection_queue()).unwrap_or(i64::MAX));
        let now = Instant::now();
        let me = overlay.node_id();
        let skip = |target: &NodeId| {
            backoff.get(target).is_some_and(|(at, _)| *at > now)
                || (*target != me && !online(&overlay, target))
        };
        let (due, tickets) = match service.due_collection(strew_overlay::now_ms(), PER_PASS, skip) {
            Ok(due) => due,
            Err(error) => {
                warn!(%error, "collection: cannot sign delete tickets");
                continue;
            }
        };
        if due.is_empty() {
            continue;
        }
        let taken = due.stale.len() + due.deliver.values().map(Vec::len).sum::<usize>();
        let outcome = deliver(&overlay, due.deliver, &tickets).await;
        let mut done = due.stale;
        for (target, out) in outcome {
            metrics.collected.inc_by(out.confirmed.len() as u64);
            metrics.failures.inc_by(out.failed as u64);
            let confirmed_any = !out.confirmed.is_empty();
            done.extend(out.confirmed.into_iter().map(|id| (target, id)));
            match out.error {
                None => {
                    backoff.remove(&target);
                }
                Some(error) => {
                    let before = backoff.get(&target).map_or(0, |b| b.1);
                    let (wait, attempts) = backoff_after(before, confirmed_any);
                    debug!(%target, %error, failed = out.failed, retry_in = ?wait, "collection: deletes on a target failed");
                    backoff.insert(target, (Instant::now() + wait, attempts));
                }
            }
        }
        if done.is_empty() {
            continue;
        }
        match service.commit_collected(&done).await {
            Ok(()) => {
                info!(collected = done.len(), "collected unreferenced packets");
                again = taken >= PER_PASS;
            }
            Err(error) => warn!(%error, "collection: cannot record collected packets"),
        }
    }
}

fn online(overlay: &OverlayHandle, target: &NodeId) -> bool {
    overlay
        .with_grid_view(|v| v.get(target).is_some_and(|p| p.online))
        .unwrap_or(false)
}

/// How long a target whose deletes failed in a pass is left alone, and how
/// many passes in a row it has now failed without confirming anything
/// (`attempts`: that count before this pass). A target that confirmed some
/// of its deletes is slow, not gone: it is tried again after a second. One
/// that confirmed none waits twice as long each time, up to
/// [`MAX_BACKOFF`].
fn backoff_after(attempts: u32, confirmed_any: bool) -> (Duration, u32) {
    if confirmed_any {
        return (COLLECT_EVERY, 0);
    }
    let attempts = attempts + 1;
    let wait = Duration::from_secs(1 << attempts.min(9)).min(MAX_BACKOFF);
    (wait, attempts)
}

/// What one target did with its deletes in a pass.
#[derive(Debug, Default, PartialEq)]
struct TargetOutcome {
    /// Deleted, already absent, or live again: done.
    confirmed: Vec<PacketId>,
    /// Failed or timed out: stay queued.
    failed: usize,
    /// The last failure's reason, if any failed.
    error: Option<String>,
}

type Delivered = BTreeMap<NodeId, TargetOutcome>;

/// One delete's result as the collection counts it: its target, its
/// packet, and why it stays queued.
type Outcome = (NodeId, PacketId, Result<(), String>);

/// Sorts each delete's result by target.
fn tally(results: Vec<Outcome>) -> Delivered {
    let mut out: Delivered = BTreeMap::new();
    for (target, id, result) in results {
        let entry = out.entry(target).or_default();
        match result {
            Ok(()) => entry.confirmed.push(id),
            Err(error) => {
                entry.failed += 1;
                entry.error = Some(error);
            }
        }
    }
    out
}

/// Sends every delete the way a forget does ([`delete_all`]: each
/// target's in `DeleteMany` batches, each ticket encoded once), at most
/// [`CALLS_IN_FLIGHT`] calls at a time.
async fn deliver(
    overlay: &OverlayHandle,
    deliver: BTreeMap<NodeId, Vec<Deletion>>,
    tickets: &[StorageTicket],
) -> Delivered {
    let mut ticket_of: HashMap<(NodeId, PacketId), &StorageTicket> = HashMap::new();
    for t in tickets {
        for e in &t.entries {
            ticket_of.insert((t.target, e.packet_id), t);
        }
    }
    let mut results: Vec<Outcome> = Vec::new();
    let mut jobs = Vec::new();
    for (target, list) in &deliver {
        for d in list {
            match ticket_of.get(&(*target, d.packet_id)) {
                Some(ticket) => jobs.push((*target, d.packet_id, *ticket)),
                None => results.push((
                    *target,
                    d.packet_id,
                    Err("no delete ticket was signed for it".to_string()),
                )),
            }
        }
    }
    let transport = OverlayTransport::new(overlay.clone());
    let sent = delete_all(&transport, jobs, CALLS_IN_FLIGHT, DELETE_DEADLINE).await;
    results.extend(
        sent.into_iter()
            .map(|(target, id, result)| (target, id, confirmed(result))),
    );
    tally(results)
}

/// Whether a target's answer to one delete ends it: deleted, already
/// absent, or held under another generation (a copy stored again since:
/// live, it stays).
fn confirmed(result: Result<(), TransportError>) -> Result<(), String> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind == TransportFailure::LiveCopy => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_target_counts_what_it_confirmed_and_what_failed() {
        let (a, b) = (NodeId([1; 32]), NodeId([2; 32]));
        let id = |n: u8| PacketId::of(&[n]);
        let out = tally(vec![
            (a, id(1), Ok(())),
            (a, id(2), Err("the delete timed out".into())),
            (b, id(3), Ok(())),
            (a, id(4), Ok(())),
        ]);
        assert_eq!(
            out[&a],
            TargetOutcome {
                confirmed: vec![id(1), id(4)],
                failed: 1,
                error: Some("the delete timed out".into()),
            }
        );
        assert_eq!(out[&b].confirmed, vec![id(3)]);
        assert_eq!((out[&b].failed, out[&b].error.clone()), (0, None));
    }

    #[test]
    fn a_live_copy_ends_a_delete_any_other_failure_keeps_it_queued() {
        let t = NodeId([1; 32]);
        let failed = |kind| Err(TransportError::new(t, kind, "why"));
        assert_eq!(confirmed(Ok(())), Ok(()));
        assert_eq!(confirmed(failed(TransportFailure::LiveCopy)), Ok(()));
        for kind in [
            TransportFailure::Rejected,
            TransportFailure::TimedOut,
            TransportFailure::Unreachable,
            TransportFailure::Io,
        ] {
            assert!(confirmed(failed(kind)).is_err(), "{kind:?}");
        }
    }

    #[test]
    fn a_slow_target_is_tried_again_soon_a_silent_one_ever_later() {
        // Confirmed some: a second, and the count starts over.
        assert_eq!(backoff_after(5, true), (COLLECT_EVERY, 0));
        // Confirmed none: 2 s, 4 s, … up to the cap.
        assert_eq!(backoff_after(0, false), (Duration::from_secs(2), 1));
        assert_eq!(backoff_after(1, false), (Duration::from_secs(4), 2));
        assert_eq!(
            backoff_after(30, false).0,
            Duration::from_secs(512).min(MAX_BACKOFF)
        );
    }
}
