//! The manager's side of audits: which targets are due for a challenge and
//! on which packet, and the command recording what the auditor found.
//!
//! Leader-side and pure: the caller passes the time and the randomness, runs
//! the challenges over the network and proposes
//! [`Command::RecordAudits`] through consensus. Scoring lives in
//! [`crate::audit`]; what a failed or disqualified target means for its
//! stripes lives in the repair checker. This module must not do I/O.

use rand_core::Rng;

use crate::audit::{self, AuditPolicy, AuditResult, Challenge, MAX_RESULTS_PER_COMMAND};
use crate::manager::Manager;
use crate::state::Command;
use crate::units::Millis;

/// What one audit round found to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditRound {
    /// Challenges to send now, at most one per target.
    pub challenges: Vec<Challenge>,
    /// Targets due but left for the next round (the round was full).
    pub deferred: usize,
}

impl Manager {
    /// Challenges for every target due at `now` under `policy` (online, not
    /// disqualified, holding packets, not challenged within the interval),
    /// at most `max` of them; each on a random packet and a random 1 KiB chunk.
    pub fn audit_round<R: Rng + ?Sized>(
        &self,
        policy: &AuditPolicy,
        now: Millis,
        max: usize,
        rng: &mut R,
    ) -> AuditRound {
        let state = self.state();
        let mut round = AuditRound::default();
        for (target, record) in &state.targets {
            if record.packets.is_empty() || !record.audit.is_due(policy, now) {
                continue;
            }
            if !state.clients.get(target).is_some_and(|c| c.profile.online) {
                continue;
            }
            if round.challenges.len() >= max {
                round.deferred += 1;
                continue;
            }
            if let Some(challenge) = audit::challenge(*target, &record.packets, rng) {
                round.challenges.push(challenge);
            }
        }
        round
    }

    /// The commands recording `results` (split to the per-command bound).
    pub fn audit_commands(
        results: &[AuditResult],
        policy: &AuditPolicy,
        now: Millis,
    ) -> Vec<Command> {
        results
            .chunks(MAX_RESULTS_PER_COMMAND)
            .map(|part| Command::RecordAudits {
                results: part.to_vec(),
                policy: *policy,
                at: now,
            })
            .collect()
    }
}
