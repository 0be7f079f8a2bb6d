//! Audits: challenging targets to prove they still hold packets, and keeping
//! score of how they answer.
//!
//! A challenge is a packet id and a fresh nonce; the answer is the BLAKE3 hash
//! of the packet's bytes keyed by the nonce, which only a holder of the bytes
//! can compute. The manager never holds packet bytes, so the source prepares
//! challenges (nonce and expected answer) while it still has the packet, and
//! the manager spends one per audit ([`prepare`], [`respond`], [`verify`]).
//! The [`AuditLedger`] records outcomes per target; under the [`AuditPolicy`]
//! failures count against a target until it is evicted, after which the
//! repair policy treats its packets as missing. Sans-IO: times and randomness
//! come from the caller. This module must not send messages or pick targets
//! for new packets.

use std::collections::BTreeMap;

use rand_core::Rng;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, PacketId};
use crate::units::Millis;

/// How often each target is challenged by default: 460 challenges a day,
/// which finds the loss of 1 % of a node's packets within a day with 99 %
/// probability (1 - 0.99^460 ≈ 0.99).
pub const DEFAULT_AUDIT_INTERVAL: Millis = 24 * 60 * 60 * 1000 / 460;

/// Failed challenges after which a target is evicted by default: a wrong
/// answer is never an accident, but one may be a disk error the node repairs.
pub const DEFAULT_EVICT_AFTER: u32 = 3;

/// The manager's audit settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPolicy {
    /// How often each target is challenged.
    pub interval: Millis,
    /// Failed challenges after which a target is evicted.
    pub evict_after: u32,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            interval: DEFAULT_AUDIT_INTERVAL,
            evict_after: DEFAULT_EVICT_AFTER,
        }
    }
}

/// A challenge sent to a target: prove you hold `packet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub packet: PacketId,
    pub nonce: [u8; 32],
}

/// A challenge with its expected answer, prepared by whoever holds the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedChallenge {
    pub challenge: Challenge,
    pub expected: [u8; 32],
}

/// How a target answered one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// The answer matched.
    Passed,
    /// The answer was wrong, or the target said it does not hold the packet.
    Failed,
    /// The target could not be reached. Not counted against it: the repair
    /// policy's grace period deals with absence.
    Unreachable,
}

/// Where a target stands after its audits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    Good,
    /// Some audits failed, fewer than the eviction limit.
    Suspect {
        failures: u32,
    },
    /// Too many failed audits: its packets must be rebuilt elsewhere and it gets no new ones.
    Evicted,
}

/// Audit history of one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub passed: u64,
    pub failed: u32,
    pub unreachable: u64,
    pub last_audit: Option<Millis>,
    pub evicted: bool,
}

/// Prepares a challenge for a packet whose bytes the caller holds.
pub fn prepare(packet_bytes: &[u8], nonce: [u8; 32]) -> PreparedChallenge {
    let challenge = Challenge {
        packet: PacketId::of(packet_bytes),
        nonce,
    };
    PreparedChallenge {
        challenge,
        expected: respond(&challenge, packet_bytes),
    }
}

/// The target's answer, computed from the bytes it holds.
pub fn respond(challenge: &Challenge, held_bytes: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(&challenge.nonce, held_bytes).as_bytes()
}

/// Checks a target's answer (constant-time comparison through blake3's `Hash`).
pub fn verify(prepared: &PreparedChallenge, answer: &[u8; 32]) -> AuditOutcome {
    if blake3::Hash::from_bytes(prepared.expected) == blake3::Hash::from_bytes(*answer) {
        AuditOutcome::Passed
    } else {
        AuditOutcome::Failed
    }
}

/// Picks which of a target's packets to challenge, uniformly.
pub fn pick_packet<R: Rng + ?Sized>(held: &[PacketId], rng: &mut R) -> Option<PacketId> {
    if held.is_empty() {
        return None;
    }
    let index = ((u128::from(rng.next_u64()) * held.len() as u128) >> 64) as usize;
    held.get(index).copied()
}

/// Audit outcomes per target, in `NodeId` order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLedger {
    records: BTreeMap<NodeId, TargetRecord>,
}

impl AuditLedger {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one outcome and returns the target's standing afterwards.
    pub fn record(
        &mut self,
        policy: &AuditPolicy,
        target: NodeId,
        outcome: AuditOutcome,
        now: Millis,
    ) -> Standing {
        self.record_many(policy, target, outcome, 1, now)
    }

    /// Records `count` challenges with the same outcome at once (a simulator
    /// plays a round of challenges as one step) and returns the standing.
    pub fn record_many(
        &mut self,
        policy: &AuditPolicy,
        target: NodeId,
        outcome: AuditOutcome,
        count: u32,
        now: Millis,
    ) -> Standing {
        let record = self.records.entry(target).or_default();
        record.last_audit = Some(now);
        match outcome {
            AuditOutcome::Passed => record.passed += u64::from(count),
            AuditOutcome::Failed => record.failed = record.failed.saturating_add(count),
            AuditOutcome::Unreachable => record.unreachable += u64::from(count),
        }
        if record.failed >= policy.evict_after.max(1) {
            record.evicted = true;
        }
        standing_of(record)
    }

    /// The target's standing (`Good` if never audited).
    pub fn standing(&self, target: &NodeId) -> Standing {
        self.records
            .get(target)
            .map(standing_of)
            .unwrap_or(Standing::Good)
    }

    /// Whether the target is due for a challenge at `now`.
    pub fn is_due(&self, policy: &AuditPolicy, target: &NodeId, now: Millis) -> bool {
        match self.records.get(target) {
            Some(r) if r.evicted => false,
            Some(TargetRecord {
                last_audit: Some(last),
                ..
            }) => now.saturating_sub(*last) >= policy.interval,
            _ => true,
        }
    }

    pub fn get(&self, target: &NodeId) -> Option<&TargetRecord> {
        self.records.get(target)
    }

    /// Forgets a target (it left the grid for good).
    pub fn forget(&mut self, target: &NodeId) -> Option<TargetRecord> {
        self.records.remove(target)
    }

    /// Totals over all targets: (passed, failed, unreachable).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.records.values().fold((0, 0, 0), |(p, f, u), r| {
            (p + r.passed, f + u64::from(r.failed), u + r.unreachable)
        })
    }

    /// Evicted targets, in id order.
    pub fn evicted(&self) -> impl Iterator<Item = &NodeId> {
        self.records
            .iter()
            .filter(|(_, r)| r.evicted)
            .map(|(id, _)| id)
    }
}

fn standing_of(record: &TargetRecord) -> Standing {
    if record.evicted {
        Standing::Evicted
    } else if record.failed > 0 {
        Standing::Suspect {
            failures: record.failed,
        }
    } else {
        Standing::Good
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_bytes_answer_a_challenge() {
        let packet = b"ciphertext of a packet".to_vec();
        let prepared = prepare(&packet, [7; 32]);
        assert_eq!(prepared.challenge.packet, PacketId::of(&packet));
        let honest = respond(&prepared.challenge, &packet);
        assert_eq!(verify(&prepared, &honest), AuditOutcome::Passed);
        let mut rotten = packet.clone();
        rotten[0] ^= 1;
        let cheat = respond(&prepared.challenge, &rotten);
        assert_eq!(verify(&prepared, &cheat), AuditOutcome::Failed);
        // A different nonce gives a different answer: old answers cannot be replayed.
        let other = prepare(&packet, [8; 32]);
        assert_eq!(verify(&other, &honest), AuditOutcome::Failed);
    }

    #[test]
    fn failures_count_until_eviction_and_absence_does_not() {
        let policy = AuditPolicy {
            interval: 100,
            evict_after: 2,
        };
        let mut ledger = AuditLedger::new();
        let t = NodeId([1; 32]);
        assert!(ledger.is_due(&policy, &t, 0));
        assert_eq!(
            ledger.record(&policy, t, AuditOutcome::Unreachable, 0),
            Standing::Good
        );
        assert!(!ledger.is_due(&policy, &t, 50));
        assert!(ledger.is_due(&policy, &t, 100));
        assert_eq!(
            ledger.record(&policy, t, AuditOutcome::Failed, 100),
            Standing::Suspect { failures: 1 }
        );
        assert_eq!(
            ledger.record(&policy, t, AuditOutcome::Passed, 200),
            Standing::Suspect { failures: 1 }
        );
        assert_eq!(
            ledger.record(&policy, t, AuditOutcome::Failed, 300),
            Standing::Evicted
        );
        assert!(!ledger.is_due(&policy, &t, 10_000));
        assert_eq!(ledger.evicted().collect::<Vec<_>>(), vec![&t]);
        assert_eq!(ledger.totals(), (1, 2, 1));
    }

    #[test]
    fn pick_packet_covers_every_packet() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(1);
        let held: Vec<PacketId> = (0u8..5).map(|i| PacketId::of(&[i])).collect();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(pick_packet(&held, &mut rng).expect("non-empty"));
        }
        assert_eq!(seen.len(), 5);
        assert_eq!(pick_packet(&[], &mut rng), None);
    }
}
