//! Automatic repair on the live grid: the leader's checker and repairer.
//!
//! Every check period the group's leader runs the coordinator's checker
//! (`check_repairs`) over its applied state: stripes of committed snapshots
//! with packets on targets offline past `repair_grace` are queued. For each
//! (a few at a time), the leader itself acts as the repairer: the
//! coordinator decides new targets under the stripe's original constraints
//! (`decide_repair`), this node fetches K surviving packets (ciphertext,
//! verified against their PacketIds; never from the source, and no key is
//! needed), rebuilds the missing packets byte-identically
//! ([`crate::pipeline::rebuild`]), uploads them under store tickets it
//! signs, and commits each move (`MovePacket`) through the group once the
//! target's receipt verified. Transfers are paced by `repair_bandwidth`.
//! A failed stripe is retried with exponential back-off. The source plays
//! no part: repair works while it is offline.
//!
//! Owns the schedule, the I/O of one repair and the repair metrics; it must
//! not decide when or where (the coordinator does) nor change replicated
//! state except through the manager service's proposals.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strew_coordinator::repair::RepairTask;
use strew_coordinator::{Command, DataId, ManagerError, NodeId, PacketId};
use strew_overlay::{BandwidthLimiter, OverlayError, OverlayHandle};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::manager::{ManagerService, RepairCommitError, RepairPlan};
use crate::pipeline::packet::decode_packet;
use crate::pipeline::rebuild::{RebuildError, rebuild_packets};
use crate::store::{PacketStore, StoreError};

/// Stripes repaired at once.
pub const REPAIR_CONCURRENCY: usize = 4;
/// Default pace of repair traffic (reads and writes together), bytes per second.
pub const DEFAULT_REPAIR_BANDWIDTH: u64 = strew_coordinator::repair::DEFAULT_REPAIR_BANDWIDTH;
/// Longest wait before a failed stripe is tried again.
const MAX_BACKOFF: Duration = Duration::from_millis(strew_coordinator::repair::MAX_REPAIR_BACKOFF);

/// How the repairer runs.
#[derive(Debug, Clone, Copy)]
pub struct RepairSettings {
    /// How often the checker runs: a tenth of the grace, between 1 s and 5 min.
    pub check_every: Duration,
    /// Bytes per second of repair traffic; 0 = unlimited.
    pub bandwidth: u64,
    pub concurrency: usize,
}

impl RepairSettings {
    pub fn new(grace: Duration, bandwidth: u64) -> Self {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        RepairSettings {
            check_every: Duration::from_millis(strew_coordinator::repair::check_period(grace_ms)),
            bandwidth,
            concurrency: REPAIR_CONCURRENCY,
        }
    }
}

/// The repair metric families (counted on the leader that repaired).
#[derive(Clone, Default)]
pub struct RepairMetrics {
    pub stripes: Counter,
    pub packets: Counter,
    pub bytes_written: Counter,
    pub bytes_read: Counter,
    pub failures: Counter,
    pub queue: Gauge,
    pub lost: Gauge,
}

impl RepairMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = RepairMetrics::default();
        registry.register(
            "strew_repair_stripes",
            "Stripes this node rebuilt as the repairer",
            m.stripes.clone(),
        );
        registry.register(
            "strew_repair_packets",
            "Packets this node rebuilt and uploaded to new targets",
            m.packets.clone(),
        );
        registry.register(
            "strew_repair_bytes",
            "Bytes of rebuilt packets uploaded to new targets (bytes repaired)",
            m.bytes_written.clone(),
        );
        registry.register(
            "strew_repair_read_bytes",
            "Bytes of surviving packets fetched to rebuild from",
            m.bytes_read.clone(),
        );
        registry.register(
            "strew_repair_failures",
            "Stripe repairs that failed (retried later)",
            m.failures.clone(),
        );
        registry.register(
            "strew_repair_queue",
            "Stripes the leader's last check found to need repair (the repair queue)",
            m.queue.clone(),
        );
        registry.register(
            "strew_repair_lost_stripes",
            "Stripes with fewer packets left than a rebuild needs",
            m.lost.clone(),
        );
        m
    }
}

/// Why one stripe's repair failed (it is retried later).
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    #[error("no new targets for the stripe")]
    Decide(#[source] ManagerError),
    #[error("only {got} of the {need} packets needed could be read ({tried} targets tried)")]
    TooFewReads {
        got: usize,
        need: usize,
        tried: usize,
    },
    #[error("cannot rebuild the packets")]
    Rebuild(#[from] RebuildError),
    #[error("the stripe has no slot {0}")]
    NoSlot(usize),
    #[error("the rebuilt packet for slot {slot} is not packet {expected}")]
    WrongRebuild { slot: usize, expected: PacketId },
    #[error("no store ticket names packet {0}")]
    NoTicket(PacketId),
    #[error("cannot upload to {target}")]
    Upload {
        target: NodeId,
        #[source]
        source: OverlayError,
    },
    #[error("this node's packet store failed")]
    Local(#[source] StoreError),
    #[error("cannot record the move")]
    Commit(#[from] RepairCommitError),
    #[error("a repair task failed: {0}")]
    Task(String),
}

/// What one stripe's repair moved.
#[derive(Debug, Clone, Copy, Default)]
struct Repaired {
    packets: u64,
    read: u64,
    written: u64,
}

/// Everything one repair needs.
#[derive(Clone)]
struct Repairer {
    service: Arc<ManagerService>,
    overlay: OverlayHandle,
    store: PacketStore,
    pace: BandwidthLimiter,
}

/// Runs until aborted: the checker and the repairer, active while this node leads.
pub async fn run(
    service: Arc<ManagerService>,
    store: PacketStore,
    settings: RepairSettings,
    metrics: RepairMetrics,
) {
    let repairer = Repairer {
        overlay: service.overlay().clone(),
        service,
        store,
        pace: BandwidthLimiter::new(settings.bandwidth),
    };
    let mut tick = tokio::time::interval(settings.check_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: JoinSet<(DataId, Result<Repaired, RepairError>)> = JoinSet::new();
    let mut in_flight: BTreeSet<DataId> = BTreeSet::new();
    let mut queue: VecDeque<RepairTask> = VecDeque::new();
    let mut given_up: Arc<BTreeSet<NodeId>> = Arc::new(BTreeSet::new());
    // Failed stripes: not before, attempts.
    let mut backoff: HashMap<DataId, (Instant, u32)> = HashMap::new();
    loop {
        let checked = tokio::select! {
            _ = tick.tick() => true,
            Some(joined) = running.join_next(), if !running.is_empty() => {
                let (data_id, outcome) = match joined {
                    Ok(done) => done,
                    Err(e) => {
                        warn!(%e, "a repair task ended abnormally");
                        continue;
                    }
                };
                in_flight.remove(&data_id);
                match outcome {
                    Ok(done) => {
                        backoff.remove(&data_id);
                        repairer.service.repaired().add(
                            done.packets,
                            done.read,
                            done.written,
                            strew_overlay::now_ms(),
                        );
                        metrics.stripes.inc();
                        metrics.packets.inc_by(done.packets);
                        metrics.bytes_read.inc_by(done.read);
                        metrics.bytes_written.inc_by(done.written);
                    }
                    Err(error) => {
                        metrics.failures.inc();
                        let attempts = backoff.get(&data_id).map_or(0, |b| b.1) + 1;
                        let wait = Duration::from_secs(1 << attempts.min(9)).min(MAX_BACKOFF);
                        warn!(chunk = %data_id, error = %error_chain(&error), retry_in = ?wait, "repair failed");
                        backoff.insert(data_id, (Instant::now() + wait, attempts));
                    }
                }
                false
            }
        };
        let repairer = &repairer;
        if !repairer.service.leads() {
            queue.clear();
            repairer.service.set_repairs_pending(0);
            metrics.queue.set(0);
            continue;
        }
        if checked {
            let check = repairer.service.check_repairs(strew_overlay::now_ms());
            let pending = check.pending();
            repairer.service.set_repairs_pending(pending);
            metrics
                .queue
                .set(i64::try_from(pending).unwrap_or(i64::MAX));
            metrics
                .lost
                .set(i64::try_from(check.lost).unwrap_or(i64::MAX));
            if !check.tasks.is_empty() {
                debug!(
                    due = check.tasks.len(),
                    waiting = check.waiting,
                    lost = check.lost,
                    "repair check"
                );
            }
            let now = Instant::now();
            backoff.retain(|id, (_, _)| check.tasks.iter().any(|t| &t.data_id == id));
            queue = check
                .tasks
                .into_iter()
                .filter(|t| !in_flight.contains(&t.data_id))
                .filter(|t| backoff.get(&t.data_id).is_none_or(|(at, _)| *at <= now))
                .collect();
            given_up = Arc::new(check.given_up);
        }
        while running.len() < settings.concurrency {
            let Some(task) = queue.pop_front() else {
                break;
            };
            in_flight.insert(task.data_id);
            repairer.service.repaired().start(strew_overlay::now_ms());
            let repairer = repairer.clone();
            let given_up = given_up.clone();
            running.spawn(async move {
                let data_id = task.data_id;
                (data_id, repairer.repair(task, &given_up).await)
            });
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Repairer {
    fn me(&self) -> NodeId {
        self.overlay.node_id()
    }

    /// Rebuilds one stripe's gone packets onto new targets and records the moves.
    async fn repair(
        &self,
        task: RepairTask,
        given_up: &BTreeSet<NodeId>,
    ) -> Result<Repaired, RepairError> {
        let plan = self
            .service
            .plan_repair(&task, given_up, strew_overlay::now_ms())
            .map_err(RepairError::Decide)?;
        let (survivors, read) = self.fetch_survivors(&task, &plan).await?;
        let wanted = task.rebuild.clone();
        let rebuilt = tokio::task::spawn_blocking(move || rebuild_packets(&survivors, &wanted))
            .await
            .map_err(|e| RepairError::Task(e.to_string()))??;
        let mut written = 0u64;
        for ((slot, bytes), command) in task.rebuild.iter().zip(rebuilt).zip(&plan.moves) {
            let expected = plan
                .packets
                .get(*slot)
                .map(|p| p.packet_id)
                .ok_or(RepairError::NoSlot(*slot))?;
            if PacketId::of(&bytes) != expected {
                return Err(RepairError::WrongRebuild {
                    slot: *slot,
                    expected,
                });
            }
            let Command::MovePacket {
                new_target,
                generation,
                ..
            } = command
            else {
                continue;
            };
            written += bytes.len() as u64;
            self.upload(&plan, *new_target, expected, *generation, bytes)
                .await?;
        }
        let moves = plan.moves.clone();
        // The superseded copies are queued for collection by the moves
        // themselves, due at once: the leader's collection deletes them.
        self.service.commit_moves(moves).await?;
        info!(
            chunk = %task.data_id,
            packets = task.rebuild.len(),
            "repaired a stripe: rebuilt packets are on new targets"
        );
        Ok(Repaired {
            packets: task.rebuild.len() as u64,
            read,
            written,
        })
    }

    /// Fetches K verified packets of the stripe from its reachable targets
    /// (the first packet's header says K); returns them and the bytes read.
    async fn fetch_survivors(
        &self,
        task: &RepairTask,
        plan: &RepairPlan,
    ) -> Result<(Vec<Vec<u8>>, u64), RepairError> {
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut need = usize::MAX;
        let mut read = 0u64;
        let mut tried = 0;
        for slot in &task.read {
            if got.len() >= need {
                break;
            }
            let Some(p) = plan.packets.get(*slot) else {
                continue;
            };
            tried += 1;
            self.pace.acquire(p.size as usize).await;
            let bytes = if p.target == self.me() {
                self.local_get(p.packet_id).await
            } else {
                let ticket = plan
                    .read_tickets
                    .iter()
                    .find(|t| {
                        t.target == p.target && t.entries.iter().any(|e| e.packet_id == p.packet_id)
                    })
                    .and_then(|t| strew_overlay::packet::ticket::encode(t).ok())
                    .unwrap_or_default();
                match self.overlay.get_packet(p.target, p.packet_id, ticket).await {
                    Ok(found) => found,
                    Err(error) => {
                        debug!(target = %p.target, %error, "repair: a surviving packet could not be read");
                        None
                    }
                }
            };
            let Some(bytes) = bytes else {
                continue;
            };
            if need == usize::MAX {
                need = match decode_packet(&bytes) {
                    Ok((header, _)) => usize::from(header.k),
                    Err(_) => continue,
                };
            }
            read += bytes.len() as u64;
            got.push(bytes);
        }
        if got.len() < need || got.is_empty() {
            return Err(RepairError::TooFewReads {
                got: got.len(),
                need: if need == usize::MAX { 1 } else { need },
                tried,
            });
        }
        Ok((got, read))
    }

    /// A packet from this node's own store, if held and intact.
    async fn local_get(&self, id: PacketId) -> Option<Vec<u8>> {
        let store = self.store.clone();
        let bytes = tokio::task::spawn_blocking(move || store.get(&id))
            .await
            .ok()?
            .ok()??;
        (PacketId::of(&bytes) == id).then_some(bytes)
    }

    /// Puts a rebuilt packet on its new target under the plan's ticket (into
    /// this node's own store when the target is this node).
    async fn upload(
        &self,
        plan: &RepairPlan,
        target: NodeId,
        packet_id: PacketId,
        generation: u64,
        bytes: Vec<u8>,
    ) -> Result<(), RepairError> {
        self.pace.acquire(bytes.len()).await;
        if target == self.me() {
            let store = self.store.clone();
            return tokio::task::spawn_blocking(move || {
                store.put_many_with_generations(&[(packet_id, &bytes, generation)])
            })
            .await
            .map_err(|e| RepairError::Task(e.to_string()))?
            .map(|_| ())
            .map_err(RepairError::Local);
        }
        let ticket = plan
            .tickets
            .iter()
            .find(|t| t.target == target && t.entries.iter().any(|e| e.packet_id == packet_id))
            .ok_or(RepairError::NoTicket(packet_id))?;
        let ticket = strew_overlay::packet::ticket::encode(ticket)
            .map_err(|_| RepairError::NoTicket(packet_id))?;
        // The receipt is verified (signed by the target, naming the packet).
        self.overlay
            .put_packet(target, ticket, packet_id, bytes)
            .await
            .map(|_| ())
            .map_err(|source| RepairError::Upload { target, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_runs_a_tenth_of_the_grace_apart_between_one_second_and_five_minutes() {
        let every = |grace: u64| RepairSettings::new(Duration::from_secs(grace), 0).check_every;
        assert_eq!(every(4 * 3600), Duration::from_secs(300));
        assert_eq!(every(600), Duration::from_secs(60));
        assert_eq!(every(3), Duration::from_secs(1));
        assert_eq!(every(0), Duration::from_secs(1));
        let s = RepairSettings::new(Duration::from_secs(3), 1_000);
        assert_eq!((s.bandwidth, s.concurrency), (1_000, REPAIR_CONCURRENCY));
    }
}
