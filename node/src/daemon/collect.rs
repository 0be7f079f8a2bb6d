//! The leader's collection: delivering the deletes of the replicated
//! collection queue (packets nothing references any more: the rest of a
//! forget too large for one answer, the uploads of expired plans, deletes
//! a source or a repair could not deliver) and recording what the targets
//! confirmed.
//!
//! Every [`COLLECT_EVERY`] the group's leader takes up to [`PER_PASS`] due
//! entries of targets that are online and not backing off, signs delete
//! tickets, sends the deletes ([`CONCURRENCY`] at a time; the overlay
//! answers a request to this node itself locally), and proposes `Collected` for every delete a
//! target confirmed (deleted, already absent, or held under another
//! generation: a live copy that must stay). A target that fails is backed
//! off exponentially; its entries stay queued, so nothing is forgotten while
//! it is away. Owns the schedule, the I/O and the collection metrics; what
//! is due is the coordinator's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strew_coordinator::{Deletion, NodeId, PacketId, StorageTicket};
use strew_overlay::packet::Refusal;
use strew_overlay::{OverlayError, OverlayHandle};
use tracing::{debug, info, warn};

use super::manager::ManagerService;

/// How often the leader looks at the queue.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);
/// Most entries one pass takes (a pass that takes this many runs again at
/// once).
pub const PER_PASS: usize = 4_096;
/// Deletes in flight at once.
pub const CONCURRENCY: usize = 32;
/// A delete that takes longer counts as a failure of its target.
const DELETE_DEADLINE: Duration = Duration::from_secs(10);
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
        for (target, result) in outcome {
            match result {
                Ok(ids) => {
                    backoff.remove(&target);
                    metrics.collected.inc_by(ids.len() as u64);
                    done.extend(ids.into_iter().map(|id| (target, id)));
                }
                Err((ids, error)) => {
                    metrics.failures.inc_by(ids.len() as u64);
                    done.extend(ids.into_iter().map(|id| (target, id)));
                    let attempts = backoff.get(&target).map_or(0, |b| b.1) + 1;
                    let wait = Duration::from_secs(1 << attempts.min(9)).min(MAX_BACKOFF);
                    debug!(%target, %error, retry_in = ?wait, "collection: a target failed");
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

/// Per target: the packets it confirmed, or (the ones it confirmed before
/// failing, the error) when one of its deletes failed.
type Delivered = BTreeMap<NodeId, Result<Vec<PacketId>, (Vec<PacketId>, String)>>;

/// Sends every delete.
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
    let jobs: Vec<(NodeId, Deletion, Option<StorageTicket>)> = deliver
        .into_iter()
        .flat_map(|(target, list)| {
            let ticket_of = &ticket_of;
            list.into_iter().map(move |d| {
                let ticket = ticket_of.get(&(target, d.packet_id)).map(|t| (*t).clone());
                (target, d, ticket)
            })
        })
        .collect();
    let results: Vec<(NodeId, PacketId, Result<(), String>)> = futures::stream::iter(jobs)
        .map(|(target, d, ticket)| async move {
            let result = match ticket {
                Some(ticket) => delete(overlay, target, d.packet_id, &ticket).await,
                None => Err("no delete ticket was signed for it".to_string()),
            };
            (target, d.packet_id, result)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut out: Delivered = BTreeMap::new();
    for (target, id, result) in results {
        let entry = out.entry(target).or_insert_with(|| Ok(Vec::new()));
        match (entry, result) {
            (Ok(ids), Ok(())) => ids.push(id),
            (Err((ids, _)), Ok(())) => ids.push(id),
            (entry @ Ok(_), Err(error)) => {
                let ids = match std::mem::replace(entry, Ok(Vec::new())) {
                    Ok(ids) => ids,
                    Err((ids, _)) => ids,
                };
                *entry = Err((ids, error));
            }
            (Err(_), Err(_)) => {}
        }
    }
    out
}

async fn delete(
    overlay: &OverlayHandle,
    target: NodeId,
    packet: PacketId,
    ticket: &StorageTicket,
) -> Result<(), String> {
    let bytes = strew_overlay::packet::ticket::encode(ticket).map_err(|e| e.to_string())?;
    match tokio::time::timeout(
        DELETE_DEADLINE,
        overlay.delete_packet(target, packet, bytes),
    )
    .await
    {
        Ok(Ok(_existed)) => Ok(()),
        // The target holds a copy stored again since: live, it stays.
        Ok(Err(OverlayError::Refused {
            reason: Refusal::OtherGeneration,
            ..
        })) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("the delete timed out".to_string()),
    }
}
