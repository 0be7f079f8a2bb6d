//! The manager service's side of audits: the round of challenges the
//! coordinator picks over the applied state, recording what the auditor
//! found as replicated `RecordAudits` commands, and the counts the metrics
//! show. Sending the challenges is [`crate::daemon::audit`]'s; which packets
//! and how outcomes score are the coordinator's (`audit_round`, `audit`).

use std::collections::BTreeMap;

use strew_coordinator::audit::{AuditPolicy, AuditResult, Reputation};
use strew_coordinator::{AuditRound, Manager, NodeId};

use super::repair::RepairCommitError;
use super::{ManagerService, heavy};
use crate::consensus::Outcome;
use crate::sync::lock;

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
