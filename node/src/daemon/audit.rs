//! Audits on the live grid: the leader's auditor.
//!
//! While this node leads the coordinator group, every round it asks the
//! coordinator which targets are due (`audit_round`: each target about every
//! `audit_interval`, default 460 challenges a day, on a random packet it
//! should hold and a random 1 KiB chunk of it), sends the challenges over
//! the packet protocol (a few at a time), checks each proof against the
//! PacketId alone, and records the outcomes through the group
//! (`RecordAudits`). A wrong proof, "not found" or a corrupt copy fails at
//! once; no answer fails after [`ATTEMPTS`] tries; a target that cannot be
//! dialled is unreachable (the repair grace deals with absence). The
//! coordinator scores the outcomes; failed packets and disqualified targets
//! are then the repair checker's to rebuild.
//!
//! Owns the schedule, the network side of a challenge and the audit metrics;
//! it must not decide which packets to challenge or how outcomes score.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use strew_coordinator::audit::{AuditOutcome, AuditPolicy, AuditResult, Challenge};
use strew_overlay::{OverlayError, OverlayHandle, RequestFailure};
use tracing::{debug, warn};

use super::manager::ManagerService;

/// Environment variable setting the time between two challenges of one
/// target (a duration such as `3m` or `500ms`; tests shorten it).
pub const ENV_AUDIT_INTERVAL: &str = "STREW_AUDIT_INTERVAL";
/// Challenges in flight at once.
pub const AUDIT_CONCURRENCY: usize = 8;
/// Most challenges one round sends (the rest are due next round).
pub const MAX_PER_ROUND: usize = 256;
/// Tries of a challenge that gets no answer before it counts as failed.
pub const ATTEMPTS: u32 = 3;

/// How the auditor runs.
#[derive(Debug, Clone, Copy)]
pub struct AuditSettings {
    pub policy: AuditPolicy,
    /// How often a round looks for due targets.
    pub round_every: Duration,
}

impl AuditSettings {
    /// The coordinator's defaults, the interval overridden by `STREW_AUDIT_INTERVAL`.
    pub fn from_env() -> Result<Self, String> {
        let mut policy = AuditPolicy::default();
        if let Ok(text) = std::env::var(ENV_AUDIT_INTERVAL) {
            let interval = strew_coordinator::parse_duration(&text)
                .map_err(|e| format!("{ENV_AUDIT_INTERVAL}={text:?}: {e}"))?;
            if interval.is_zero() {
                return Err(format!("{ENV_AUDIT_INTERVAL}={text:?}: must be positive"));
            }
            policy.interval = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
        }
        let interval = Duration::from_millis(policy.interval);
        Ok(AuditSettings {
            policy,
            round_every: (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
        })
    }
}

/// The audit metric families (counted on the leader that audited).
#[derive(Clone, Default)]
pub struct AuditMetrics {
    pub passed: Counter,
    pub failed: Counter,
    pub unreachable: Counter,
    pub disqualified: Gauge,
}

impl AuditMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = AuditMetrics::default();
        registry.register(
            "strew_audits_passed",
            "Audit challenges whose proof verified against the PacketId",
            m.passed.clone(),
        );
        registry.register(
            "strew_audits_failed",
            "Audit challenges answered wrongly, not found, or unanswered after retries",
            m.failed.clone(),
        );
        registry.register(
            "strew_audits_unreachable",
            "Audit challenges whose target could not be reached",
            m.unreachable.clone(),
        );
        registry.register(
            "strew_nodes_disqualified",
            "Targets disqualified by their audit score",
            m.disqualified.clone(),
        );
        m
    }
}

/// Runs until aborted: audit rounds while this node leads.
pub async fn run(service: Arc<ManagerService>, settings: AuditSettings, metrics: AuditMetrics) {
    let overlay = service.overlay().clone();
    let mut tick = tokio::time::interval(settings.round_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !service.leads() {
            continue;
        }
        let now = strew_overlay::now_ms();
        let round = service.audit_round(&settings.policy, now, MAX_PER_ROUND);
        if round.challenges.is_empty() {
            continue;
        }
        let results: Vec<AuditResult> = futures::stream::iter(round.challenges)
            .map(|challenge| challenge_once(&overlay, challenge))
            .buffer_unordered(AUDIT_CONCURRENCY)
            .filter_map(|r| async move { r })
            .collect()
            .await;
        for result in &results {
            match result.outcome {
                AuditOutcome::Passed => metrics.passed.inc(),
                AuditOutcome::Failed => metrics.failed.inc(),
                AuditOutcome::Unreachable => metrics.unreachable.inc(),
            };
        }
        debug!(
            challenges = results.len(),
            deferred = round.deferred,
            "audit round"
        );
        if let Err(error) = service
            .record_audits(&results, &settings.policy, strew_overlay::now_ms())
            .await
        {
            warn!(%error, "cannot record audit outcomes");
        }
        metrics
            .disqualified
            .set(i64::try_from(service.disqualified_targets()).unwrap_or(i64::MAX));
    }
}

/// Sends one challenge (retrying when there is no answer) and says how it
/// went; `None` when the outcome says nothing about the target (the target
/// does not take this node for its manager yet, or this node is shutting down).
pub(crate) async fn challenge_once(
    overlay: &OverlayHandle,
    challenge: Challenge,
) -> Option<AuditResult> {
    let mut attempt = 0;
    let outcome = loop {
        attempt += 1;
        match overlay.audit_packet(&challenge).await {
            Ok(Ok(())) => break AuditOutcome::Passed,
            Ok(Err(why)) => {
                warn!(
                    target = %challenge.target,
                    packet = %challenge.packet,
                    chunk = challenge.chunk,
                    %why,
                    "audit failed"
                );
                break AuditOutcome::Failed;
            }
            Err(OverlayError::Request {
                failure: RequestFailure::Unreachable(_),
                ..
            }) => break AuditOutcome::Unreachable,
            Err(OverlayError::Refused { .. } | OverlayError::Stopped) => return None,
            Err(error) if attempt >= ATTEMPTS => {
                warn!(target = %challenge.target, packet = %challenge.packet, %error,
                    attempts = attempt, "audit unanswered");
                break AuditOutcome::Failed;
            }
            Err(error) => {
                debug!(target = %challenge.target, %error, attempt, "audit retry");
            }
        }
    };
    Some(AuditResult {
        target: challenge.target,
        packet: challenge.packet,
        outcome,
    })
}
