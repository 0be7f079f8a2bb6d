//! The manager's side of audits: which targets are due for a challenge and
//! on which packet, the challenges that check one page of a source's
//! snapshot (`strew check`), and the command recording what the auditor
//! found.
//!
//! Leader-side and pure: the caller passes the time and the randomness, runs
//! the challenges over the network and proposes
//! [`Command::RecordAudits`] through consensus. Scoring lives in
//! [`crate::audit`]; what a failed or disqualified target means for its
//! stripes lives in the repair checker. This module must not do I/O.

use rand_core::Rng;
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditPolicy, AuditResult, Challenge, MAX_RESULTS_PER_COMMAND};
use crate::ids::{DataId, NodeId, SnapshotId};
use crate::manager::{Manager, ManagerError};
use crate::state::{ApplyError, Command};
use crate::units::Millis;

/// Most stripes one snapshot audit page covers (at width 6, 384
/// challenges: a page is answered within the manager call's deadline even
/// when a few targets must be retried).
pub const MAX_AUDIT_PAGE: usize = 64;

/// The challenges that check one stripe of a snapshot: one per packet
/// copy, on a random 1 KiB chunk, and how many distinct packets the stripe
/// needs to be recoverable (K, or 1 for replicas).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeChallenges {
    /// The stripe's position in the snapshot's sequence.
    pub stripe: u64,
    pub data_id: DataId,
    pub needed: u8,
    pub challenges: Vec<Challenge>,
}

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

    /// Challenges for stripes `from..from+count` (`count` at most
    /// [`MAX_AUDIT_PAGE`]) of one of `requester`'s snapshots, on the targets
    /// its chunk records name now (after repairs), and how many stripes the
    /// snapshot has. Only the snapshot's source may ask.
    pub fn audit_snapshot_page<R: Rng + ?Sized>(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
        rng: &mut R,
    ) -> Result<(Vec<StripeChallenges>, u64), ManagerError> {
        let count = count as usize;
        if count == 0 || count > MAX_AUDIT_PAGE {
            return Err(ManagerError::Invalid(format!(
                "an audit page covers 1 to {MAX_AUDIT_PAGE} stripes, not {count}"
            )));
        }
        let state = self.state();
        let record = self.own_snapshot(requester, snapshot)?;
        let total = record.chunks.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(total);
        let end = start.saturating_add(count).min(total);
        let mut page = Vec::with_capacity(end - start);
        for (i, key) in record.chunks[start..end].iter().enumerate() {
            let chunk = state
                .chunks
                .get(key)
                .ok_or(ApplyError::UnknownChunk(*key))?;
            let needed = chunk.redundancy.map_or(1, |r| r.data_packets());
            page.push(StripeChallenges {
                stripe: (start + i) as u64,
                data_id: chunk.data_id,
                needed: u8::try_from(needed).unwrap_or(u8::MAX),
                challenges: chunk
                    .packets
                    .iter()
                    .map(|p| audit::challenge_packet(p.target, p.packet_id, p.size, rng))
                    .collect(),
            });
        }
        Ok((page, total as u64))
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
