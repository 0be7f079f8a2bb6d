//! The daemon's upkeep: compacting the packet store and the outbox by policy,
//! keeping the node's own metrics current (store disk use and garbage,
//! compactions, the node's role in the coordinator group, the health of its
//! own backups as `status` computes it), keeping its snapshot roots on
//! enough targets, and re-registering its snapshots with a rebuilt
//! coordinator group.
//!
//! Owns the schedule and the metric families; the store decides how to
//! compact, `jobs` how to judge a backup's health.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use super::DaemonContext;
use super::jobs::SourceJobs;
use crate::store::{CompactionPolicy, PacketStore};

/// How often the store's garbage is looked at.
const COMPACT_EVERY: Duration = Duration::from_secs(30);
/// How often the health of this node's own backups is recomputed.
const HEALTH_EVERY: Duration = Duration::from_secs(300);
/// How often lost copies of this node's snapshot roots are put back.
const ROOTS_EVERY: Duration = Duration::from_secs(3600);
/// Environment variable overriding [`ROOTS_EVERY`] (a duration such as
/// `2s`; tests shorten it).
pub const ENV_ROOTS_EVERY: &str = "STREW_ROOT_UPKEEP";

/// How often this node asks whether the coordinator group was rebuilt (and
/// then re-registers its snapshots), while it keeps snapshot roots. One
/// `Who` each time, besides the group follow's every 30 s (which does not
/// keep the answer): every 5 minutes adds a tenth to the leader's `Who` load.
const REREGISTER_EVERY: Duration = Duration::from_secs(300);
/// Environment variable overriding [`REREGISTER_EVERY`] (tests shorten it).
pub const ENV_REREGISTER_EVERY: &str = "STREW_REREGISTER_EVERY";

fn every(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|text| strew_coordinator::parse_duration(&text).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// The node's own metric families.
#[derive(Clone, Default)]
pub struct NodeMetrics {
    pub store_disk_bytes: Gauge,
    pub store_garbage_bytes: Gauge,
    pub store_compactions: Counter,
    pub store_reclaimed_bytes: Counter,
    pub outbox_disk_bytes: Gauge,
    /// 1 when this node is a voting member of the coordinator group.
    pub group_member: Gauge,
    /// 1 when this node leads the coordinator group.
    pub group_leader: Gauge,
    pub snapshots: Gauge,
    /// Snapshots with at least one target unreachable now.
    pub snapshots_degraded: Gauge,
    pub snapshot_targets_unreachable: Gauge,
}

impl NodeMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = NodeMetrics::default();
        registry.register(
            "strew_store_disk_bytes",
            "Bytes of the packet store's segment files on disk",
            m.store_disk_bytes.clone(),
        );
        registry.register(
            "strew_store_garbage_bytes",
            "Bytes on disk not held by a stored packet (deleted packets awaiting compaction)",
            m.store_garbage_bytes.clone(),
        );
        registry.register(
            "strew_store_compactions",
            "Compactions of the packet store",
            m.store_compactions.clone(),
        );
        registry.register(
            "strew_store_reclaimed_bytes",
            "Disk bytes compaction gave back",
            m.store_reclaimed_bytes.clone(),
        );
        registry.register(
            "strew_outbox_disk_bytes",
            "Bytes of the outbox (packets of backups not yet committed) on disk",
            m.outbox_disk_bytes.clone(),
        );
        registry.register(
            "strew_group_member",
            "1 when this node is a member of the coordinator group",
            m.group_member.clone(),
        );
        registry.register(
            "strew_group_leader",
            "1 when this node leads the coordinator group (it is the sequence manager)",
            m.group_leader.clone(),
        );
        registry.register(
            "strew_snapshots",
            "Snapshots of this node's backups the sequence manager holds",
            m.snapshots.clone(),
        );
        registry.register(
            "strew_snapshots_degraded",
            "Snapshots of this node with at least one target unreachable now",
            m.snapshots_degraded.clone(),
        );
        registry.register(
            "strew_snapshot_targets_unreachable",
            "Distinct targets of this node's snapshots that are unreachable now",
            m.snapshot_targets_unreachable.clone(),
        );
        m
    }
}

/// Compacts `store` when its garbage is worth it; returns the bytes reclaimed.
pub async fn compact_if_worth_it(store: &PacketStore, policy: CompactionPolicy) -> u64 {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || s.maybe_compact(&policy)).await {
        Ok(Ok(n)) => n,
        Ok(Err(error)) => {
            warn!(%error, "compaction failed; the store keeps its garbage for now");
            0
        }
        Err(error) => {
            warn!(%error, "compaction task failed");
            0
        }
    }
}

/// Runs until aborted: compaction of the store and the outbox, and metrics.
pub async fn run(ctx: DaemonContext, jobs: Arc<SourceJobs>, metrics: NodeMetrics) {
    let mut compact = tokio::time::interval(COMPACT_EVERY);
    let mut health = tokio::time::interval(HEALTH_EVERY);
    let mut roots = tokio::time::interval(every(ENV_ROOTS_EVERY, ROOTS_EVERY));
    roots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut root_pass: Option<tokio::task::JoinHandle<()>> = None;
    let mut rebuilt = tokio::time::interval(every(ENV_REREGISTER_EVERY, REREGISTER_EVERY));
    rebuilt.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rebuild_pass: Option<tokio::task::JoinHandle<Option<u64>>> = None;
    let mut reregistered: Option<u64> = None;
    let mut last = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = compact.tick() => {
                let reclaimed = compact_if_worth_it(&ctx.store, CompactionPolicy::default()).await;
                if reclaimed > 0 {
                    info!(reclaimed, "packet store compacted");
                }
                compact_if_worth_it(jobs.outbox(), CompactionPolicy::default()).await;
                last = refresh_store_metrics(&ctx, &jobs, &metrics, last).await;
                let (member, leader) = match &ctx.coordinator {
                    Some(service) => {
                        let status = service.group_status();
                        let leader = status.leader == Some(status.me);
                        let member = status.members.iter().any(|m| {
                            m.raft_id == status.me && m.role == crate::consensus::group::Role::Voter
                        });
                        (member, leader)
                    }
                    None => (false, false),
                };
                metrics.group_member.set(i64::from(member));
                metrics.group_leader.set(i64::from(leader));
            }
            _ = roots.tick() => {
                // In the background (it waits on targets), one pass at a time.
                if root_pass.as_ref().is_none_or(|p| p.is_finished()) {
                    let (jobs, ctx) = (jobs.clone(), ctx.clone());
                    root_pass = Some(tokio::spawn(async move {
                        jobs.keep_roots(&ctx).await;
                    }));
                }
            }
            _ = rebuilt.tick() => {
                // In the background (it waits on the manager), one at a time.
                if let Some(pass) = rebuild_pass.take_if(|p| p.is_finished()) {
                    reregistered = pass.await.ok().flatten().or(reregistered);
                }
                if rebuild_pass.is_none() {
                    let (jobs, ctx, done) = (jobs.clone(), ctx.clone(), reregistered);
                    rebuild_pass = Some(tokio::spawn(async move {
                        jobs.reregister_if_rebuilt(&ctx, done).await
                    }));
                }
            }
            _ = health.tick() => {
                if let Some(h) = jobs.health(&ctx).await {
                    metrics.snapshots.set(h.snapshots as i64);
                    metrics.snapshots_degraded.set(h.degraded as i64);
                    metrics.snapshot_targets_unreachable.set(h.unreachable_targets as i64);
                }
            }
        }
    }
}

/// Updates the store gauges; counters move by what changed since `last`
/// (compactions, reclaimed bytes). Returns the new `last`.
async fn refresh_store_metrics(
    ctx: &DaemonContext,
    jobs: &SourceJobs,
    metrics: &NodeMetrics,
    last: (u64, u64),
) -> (u64, u64) {
    let (store, outbox) = (ctx.store.clone(), jobs.outbox().clone());
    let usage = tokio::task::spawn_blocking(move || (store.disk_usage(), outbox.disk_usage()))
        .await
        .ok();
    let Some((Ok(u), outbox)) = usage else {
        return last;
    };
    metrics.store_disk_bytes.set(u.disk_bytes as i64);
    metrics.store_garbage_bytes.set(u.garbage_bytes as i64);
    metrics
        .store_compactions
        .inc_by(u.compactions.saturating_sub(last.0));
    metrics
        .store_reclaimed_bytes
        .inc_by(u.reclaimed_bytes.saturating_sub(last.1));
    if let Ok(o) = outbox {
        metrics.outbox_disk_bytes.set(o.disk_bytes as i64);
    }
    (u.compactions, u.reclaimed_bytes)
}
