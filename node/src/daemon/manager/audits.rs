//! The manager service's side of audits: the round of challenges the
//! coordinator picks over the applied state, recording what the auditor
//! found as replicated `RecordAudits` commands, the counts the metrics
//! show, and `AuditSnapshot` (`strew check`): one page of a source's
//! snapshot challenged now, its outcomes recorded like a round's. Sending a
//! challenge is [`crate::daemon::audit`]'s; which packets and how outcomes
//! score are the coordinator's (`audit_round`, `audit_snapshot_page`,
//! `audit`).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use strew_coordinator::audit::{AuditOutcome, AuditPolicy, AuditResult, Reputation};
use strew_coordinator::{AuditRound, Manager, NodeId, SnapshotId};
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{AuditVerdict, PacketAudited, StripeAudited};
use tracing::warn;

use super::repair::RepairCommitError;
use super::{ManagerService, heavy, refuse};
use crate::consensus::Outcome;
use crate::daemon::audit::{AUDIT_CONCURRENCY, challenge_once};
use crate::sync::lock;

/// A challenge of a snapshot audit page that has not ended by then tells
/// nothing (`NoAnswer`).
const PAGE_CHALLENGE_DEADLINE: Duration = Duration::from_secs(30);
/// Challenges of a page not done by then tell nothing either, so the page
/// is answered well within the manager call's 120 s deadline.
const PAGE_DEADLINE: Duration = Duration::from_secs(60);

impl ManagerService {
    /// The challenges due at `now` (at most `max`), picked over the applied state.
    pub fn audit_round(&self, policy: &AuditPolicy, now: u64, max: usize) -> AuditRound {
        heavy(|| {
            self.replica
                .read(|m| m.audit_round(policy, now, max, &mut *lock(&self.rng)))
        })
    }

    /// Targets disqualified by their audits, as the applied state has them.
    pub fn disqualified_targets(&self) -> usize {
        self.replica.read(|m| {
            m.state()
                .targets
                .values()
                .filter(|r| r.audit.is_disqualified())
                .count()
        })
    }

    /// Every target's audit record as the applied state has it, with
    /// whether it is vetted under `policy`.
    pub fn reputations(&self, policy: &AuditPolicy) -> BTreeMap<NodeId, (Reputation, bool)> {
        self.replica.read(|m| {
            m.state()
                .targets
                .iter()
                .map(|(id, r)| (*id, (r.audit.clone(), r.audit.is_vetted(policy))))
                .collect()
        })
    }

    /// Records audit outcomes through the group (leader only).
    pub async fn record_audits(
        &self,
        results: &[AuditResult],
        policy: &AuditPolicy,
        now: u64,
    ) -> Result<(), RepairCommitError> {
        let _turn = self.proposals.lock().await;
        if !self.member.is_leader() {
            return Err(RepairCommitError::NotLeader);
        }
        for command in Manager::audit_commands(results, policy, now) {
            if let Outcome::Rejected(why) = self.member.execute(command).await?.outcome {
                return Err(RepairCommitError::Rejected(why));
            }
        }
        Ok(())
    }
}

impl ManagerService {
    /// `AuditSnapshot`: challenges every packet copy of one page of
    /// `requester`'s snapshot now, records the outcomes (scored under the
    /// coordinator's default audit policy, as the leader's rounds are) and
    /// answers what each copy showed.
    pub(super) async fn audit_snapshot(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> ManagerResponse {
        if let Err(r) = self.barrier().await {
            return r;
        }
        let page = heavy(|| {
            self.replica.read(|m| {
                m.audit_snapshot_page(requester, snapshot, from, count, &mut *lock(&self.rng))
            })
        });
        let (stripes, total) = match page {
            Ok(page) => page,
            Err(e) => return refuse(&e),
        };
        let overlay = self.overlay().clone();
        let jobs: Vec<(usize, usize, strew_coordinator::audit::Challenge)> = stripes
            .iter()
            .enumerate()
            .flat_map(|(s, stripe)| {
                stripe
                    .challenges
                    .iter()
                    .enumerate()
                    .map(move |(p, c)| (s, p, *c))
            })
            .collect();
        let answers: Vec<(usize, usize, Option<AuditResult>)> = futures::stream::iter(jobs)
            .map(|(s, p, challenge)| {
                let overlay = &overlay;
                async move {
                    let result = tokio::time::timeout(
                        PAGE_CHALLENGE_DEADLINE,
                        challenge_once(overlay, challenge),
                    )
                    .await
                    .ok()
                    .flatten();
                    (s, p, result)
                }
            })
            .buffer_unordered(AUDIT_CONCURRENCY)
            .take_until(tokio::time::sleep(PAGE_DEADLINE))
            .collect()
            .await;
        let results: Vec<AuditResult> = answers.iter().filter_map(|(_, _, r)| *r).collect();
        if let Err(error) = self
            .record_audits(&results, &AuditPolicy::default(), strew_overlay::now_ms())
            .await
        {
            warn!(%error, "cannot record the outcomes of a snapshot audit");
        }
        let mut verdicts: BTreeMap<(usize, usize), AuditVerdict> = BTreeMap::new();
        for (s, p, result) in answers {
            let verdict = match result.map(|r| r.outcome) {
                Some(AuditOutcome::Passed) => AuditVerdict::Passed,
                Some(AuditOutcome::Failed) => AuditVerdict::Failed,
                Some(AuditOutcome::Unreachable) => AuditVerdict::Unreachable,
                None => AuditVerdict::NoAnswer,
            };
            verdicts.insert((s, p), verdict);
        }
        let stripes = stripes
            .into_iter()
            .enumerate()
            .map(|(s, stripe)| StripeAudited {
                stripe: stripe.stripe,
                data_id: stripe.data_id,
                needed: stripe.needed,
                packets: stripe
                    .challenges
                    .iter()
                    .enumerate()
                    .map(|(p, c)| PacketAudited {
                        packet: c.packet,
                        target: c.target,
                        verdict: verdicts
                            .get(&(s, p))
                            .copied()
                            .unwrap_or(AuditVerdict::NoAnswer),
                    })
                    .collect(),
            })
            .collect();
        ManagerResponse::Audited { stripes, total }
    }
}
