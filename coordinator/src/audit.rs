//! Audits: which packets to challenge, and the reputation a target earns by
//! its answers.
//!
//! A [`Challenge`] names a packet a target should hold and one 1 KiB chunk of
//! it; the target answers with that chunk and its BLAKE3 tree proof, which
//! the auditor checks against the PacketId alone (the PacketId is the BLAKE3
//! root of the stored bytes; the overlay's `packet::proof` does the check).
//! A wrong or missing answer fails at once; a timeout fails after the
//! auditor's retries; an unreachable target is the repair grace's business,
//! not the audit score's.
//!
//! Outcomes feed a per-target [`Reputation`] modelled on Storj's audit
//! score: α and β decay by λ per audit, a pass adds 1 to α and a failure 1
//! to β, and the score is α / (α + β). Below the disqualification threshold
//! (or after `evict_after` failures in a row) the target is disqualified: it
//! gets no new packets and every packet it holds counts as lost. A packet
//! that failed an audit counts as lost at once, whatever the score. A target
//! is vetted once it has passed `vetting_audits` audits. The arithmetic is
//! fixed-point (millionths), so every replica of the replicated state
//! computes the same score.
//!
//! Sans-IO: times and randomness come from the caller. This module must not
//! send messages or choose targets for new packets.

use std::collections::{BTreeMap, BTreeSet};

use rand_core::Rng;
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, PacketId};
use crate::units::Millis;

/// Bytes of one challenged chunk (BLAKE3's chunk size).
pub const CHUNK_BYTES: u64 = 1024;
/// Default time between two challenges of one target: 460 a day, which finds
/// the loss of 1 % of a target's packets within a day with 99 % probability
/// (1 − 0.99^460 ≈ 0.99).
pub const DEFAULT_AUDIT_INTERVAL: Millis = 86_400_000 / 460;
/// Failed audits in a row that disqualify a target whatever its score, by
/// default. Challenges pick packets at random, so a node that lost a few
/// percent of its packets almost never fails three in a row (its failed
/// packets are rebuilt one by one), while a node that lost everything is
/// disqualified at its third challenge instead of after the ~40 the score
/// alone would take (Storj's 0.96 threshold).
pub const DEFAULT_EVICT_AFTER: u32 = 3;
/// Most audit outcomes one replicated command carries.
pub const MAX_RESULTS_PER_COMMAND: usize = 1024;
/// Most failed packets remembered per target (past that the target is
/// disqualified long before; the bound keeps the record small).
pub const MAX_FAILED_PACKETS: usize = 256;
/// Fixed-point scale of α and β.
const SCALE: u128 = 1_000_000;

/// The audit settings. They travel inside [`crate::state::Command::RecordAudits`],
/// so every replica scores with the leader's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPolicy {
    /// Time between two challenges of one target.
    pub interval: Millis,
    /// Failed audits in a row that disqualify a target whatever its score
    /// (0: the score alone decides).
    pub evict_after: u32,
    /// λ, the forgetting factor, in thousandths (Storj: 0.999).
    pub lambda_milli: u32,
    /// Disqualified below this score, in thousandths (Storj: 0.96).
    pub disqualify_below_milli: u32,
    /// α of a target never audited (Storj: 1000, so one early failure is not fatal).
    pub initial_alpha: u32,
    /// Passed audits after which a target is vetted (Storj: 100).
    pub vetting_audits: u32,
}

impl Default for AuditPolicy {
    fn default() -> Self {
        AuditPolicy {
            interval: DEFAULT_AUDIT_INTERVAL,
            evict_after: DEFAULT_EVICT_AFTER,
            lambda_milli: 999,
            disqualify_below_milli: 960,
            initial_alpha: 1000,
            vetting_audits: 100,
        }
    }
}

/// A challenge: `target` must prove it holds chunk `chunk` of `packet`
/// (`size` bytes, as the manager recorded it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub target: NodeId,
    pub packet: PacketId,
    pub size: u64,
    pub chunk: u64,
}

/// How a target answered one challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditOutcome {
    /// The chunk and its proof verified against the PacketId.
    Passed,
    /// A wrong proof, "not found", or no answer after retries.
    Failed,
    /// The target could not be reached. Not counted against it: the repair
    /// policy's grace period deals with absence.
    Unreachable,
}

/// One challenge's outcome, as the auditor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditResult {
    pub target: NodeId,
    pub packet: PacketId,
    pub outcome: AuditOutcome,
}

/// Where a target stands after its audits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Standing {
    Good,
    /// Some audits failed; the score is still above the threshold.
    Suspect {
        failures: u32,
    },
    /// Disqualified: its packets must be rebuilt elsewhere and it gets no new ones.
    Evicted,
}

/// A target's audit history and score.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reputation {
    /// α and β in millionths; both zero until the first scored audit.
    pub alpha: u64,
    pub beta: u64,
    pub passed: u64,
    pub failed: u64,
    pub unreachable: u64,
    pub consecutive_failures: u32,
    pub last_audit: Option<Millis>,
    pub disqualified_at: Option<Millis>,
    /// Packets that failed an audit while on this target (bounded).
    pub failed_packets: BTreeSet<PacketId>,
}

impl Reputation {
    /// α / (α + β) in thousandths; 1000 for a target never scored.
    pub fn score_milli(&self) -> u32 {
        let total = u128::from(self.alpha) + u128::from(self.beta);
        if total == 0 {
            return 1000;
        }
        (u128::from(self.alpha) * 1000 / total) as u32
    }

    pub fn is_disqualified(&self) -> bool {
        self.disqualified_at.is_some()
    }

    pub fn is_vetted(&self, policy: &AuditPolicy) -> bool {
        self.passed >= u64::from(policy.vetting_audits)
    }

    /// Whether `packet` failed an audit on this target.
    pub fn failed(&self, packet: &PacketId) -> bool {
        self.failed_packets.contains(packet)
    }

    /// Whether the target is due for a challenge at `now`.
    pub fn is_due(&self, policy: &AuditPolicy, now: Millis) -> bool {
        !self.is_disqualified()
            && self
                .last_audit
                .is_none_or(|last| now.saturating_sub(last) >= policy.interval)
    }

    /// Records one outcome (for `packet`, if known) and returns the standing.
    pub fn record(
        &mut self,
        policy: &AuditPolicy,
        packet: Option<PacketId>,
        outcome: AuditOutcome,
        now: Millis,
    ) -> Standing {
        self.last_audit = Some(now);
        if outcome == AuditOutcome::Unreachable {
            self.unreachable += 1;
            return self.standing();
        }
        if self.alpha == 0 && self.beta == 0 {
            self.alpha = saturate(u128::from(policy.initial_alpha) * SCALE);
        }
        let lambda = u128::from(policy.lambda_milli.min(1000));
        let decay = |v: u64| u128::from(v) * lambda / 1000;
        let (alpha, beta) = match outcome {
            AuditOutcome::Passed => (decay(self.alpha) + SCALE, decay(self.beta)),
            _ => (decay(self.alpha), decay(self.beta) + SCALE),
        };
        self.alpha = saturate(alpha);
        self.beta = saturate(beta);
        if outcome == AuditOutcome::Passed {
            self.passed += 1;
            self.consecutive_failures = 0;
        } else {
            self.failed += 1;
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            if let Some(packet) = packet
                && self.failed_packets.len() < MAX_FAILED_PACKETS
            {
                self.failed_packets.insert(packet);
            }
        }
        let by_score = self.score_milli() < policy.disqualify_below_milli;
        let in_a_row = policy.evict_after > 0 && self.consecutive_failures >= policy.evict_after;
        if self.disqualified_at.is_none() && (by_score || in_a_row) {
            self.disqualified_at = Some(now);
        }
        self.standing()
    }

    pub fn standing(&self) -> Standing {
        if self.is_disqualified() {
            Standing::Evicted
        } else if self.failed > 0 {
            Standing::Suspect {
                failures: self.failed.min(u64::from(u32::MAX)) as u32,
            }
        } else {
            Standing::Good
        }
    }
}

fn saturate(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The number of challengeable chunks of a packet of `size` bytes.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES).max(1)
}

/// Picks one of a target's packets, near-uniformly (PacketIds are hashes):
/// the first id at or after a random point, wrapping around.
pub fn pick_packet<R: Rng + ?Sized>(
    held: &BTreeMap<PacketId, u64>,
    rng: &mut R,
) -> Option<(PacketId, u64)> {
    let mut point = [0u8; 32];
    rng.fill_bytes(&mut point);
    held.range(PacketId(point)..)
        .next()
        .or_else(|| held.iter().next())
        .map(|(id, size)| (*id, *size))
}

/// A challenge for `target` on one of the packets it holds, or `None` if it holds none.
pub fn challenge<R: Rng + ?Sized>(
    target: NodeId,
    held: &BTreeMap<PacketId, u64>,
    rng: &mut R,
) -> Option<Challenge> {
    let (packet, size) = pick_packet(held, rng)?;
    Some(challenge_packet(target, packet, size, rng))
}

/// A challenge for `target` on `packet` (`size` bytes): a random chunk of it.
pub fn challenge_packet<R: Rng + ?Sized>(
    target: NodeId,
    packet: PacketId,
    size: u64,
    rng: &mut R,
) -> Challenge {
    let chunk = ((u128::from(rng.next_u64()) * u128::from(chunk_count(size))) >> 64) as u64;
    Challenge {
        target,
        packet,
        size,
        chunk,
    }
}

/// Reputations per target, in `NodeId` order (the simulator's ledger; the
/// manager keeps each target's [`Reputation`] in its target record).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLedger {
    records: BTreeMap<NodeId, Reputation>,
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
        let mut standing = record.standing();
        for _ in 0..count {
            standing = record.record(policy, None, outcome, now);
        }
        standing
    }

    /// The target's standing (`Good` if never audited).
    pub fn standing(&self, target: &NodeId) -> Standing {
        self.records
            .get(target)
            .map(Reputation::standing)
            .unwrap_or(Standing::Good)
    }

    /// Whether the target is due for a challenge at `now`.
    pub fn is_due(&self, policy: &AuditPolicy, target: &NodeId, now: Millis) -> bool {
        self.records
            .get(target)
            .is_none_or(|r| r.is_due(policy, now))
    }

    pub fn get(&self, target: &NodeId) -> Option<&Reputation> {
        self.records.get(target)
    }

    /// Forgets a target (it left the grid for good).
    pub fn forget(&mut self, target: &NodeId) -> Option<Reputation> {
        self.records.remove(target)
    }

    /// Totals over all targets: (passed, failed, unreachable).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.records.values().fold((0, 0, 0), |(p, f, u), r| {
            (p + r.passed, f + r.failed, u + r.unreachable)
        })
    }

    /// Disqualified targets, in id order.
    pub fn evicted(&self) -> impl Iterator<Item = &NodeId> {
        self.records
            .iter()
            .filter(|(_, r)| r.is_disqualified())
            .map(|(id, _)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn failures_to_disqualify(policy: &AuditPolicy, passes_first: u32) -> u32 {
        let mut r = Reputation::default();
        for t in 0..passes_first {
            r.record(policy, None, AuditOutcome::Passed, u64::from(t));
        }
        let mut n = 0;
        while !r.is_disqualified() {
            n += 1;
            r.record(policy, None, AuditOutcome::Failed, 0);
            assert!(n < 10_000, "never disqualified");
        }
        n
    }

    #[test]
    fn storj_scoring_disqualifies_a_target_that_keeps_failing() {
        // The score alone (no limit on failures in a row).
        let policy = AuditPolicy {
            evict_after: 0,
            ..AuditPolicy::default()
        };
        // With α₀ = 1000, λ = 0.999 and the 0.96 threshold, a fresh target
        // survives a few failures but not a run of them: α/(α+β) < 0.96
        // once β/α > 1/24, about 41 failures in a row.
        let n = failures_to_disqualify(&policy, 0);
        assert!((38..=45).contains(&n), "{n} failures");
        // A long good history buys no more than a fresh start: α is capped at
        // 1/(1−λ) = 1000 either way.
        let m = failures_to_disqualify(&policy, 5000);
        assert!((38..=45).contains(&m), "{m} failures");
    }

    #[test]
    fn occasional_failures_are_survived_and_absence_does_not_count() {
        // Isolated failures never make three in a row.
        let policy = AuditPolicy::default();
        assert_eq!(policy.evict_after, DEFAULT_EVICT_AFTER);
        let mut r = Reputation::default();
        for t in 0..2000u64 {
            let outcome = if t % 50 == 0 {
                AuditOutcome::Failed
            } else {
                AuditOutcome::Passed
            };
            r.record(&policy, None, outcome, t);
            r.record(&policy, None, AuditOutcome::Unreachable, t);
        }
        assert!(!r.is_disqualified(), "score {}", r.score_milli());
        assert!(r.score_milli() >= 970, "score {}", r.score_milli());
        assert_eq!(r.unreachable, 2000);
        assert!(r.is_vetted(&policy));
        assert!(matches!(r.standing(), Standing::Suspect { failures: 40 }));
    }

    #[test]
    fn failed_packets_are_remembered_and_bounded() {
        let policy = AuditPolicy::default();
        let mut r = Reputation::default();
        for i in 0..(MAX_FAILED_PACKETS as u32 + 10) {
            let id = PacketId::of(&i.to_le_bytes());
            r.record(&policy, Some(id), AuditOutcome::Failed, 0);
        }
        assert_eq!(r.failed_packets.len(), MAX_FAILED_PACKETS);
        assert!(r.failed(&PacketId::of(&0u32.to_le_bytes())));
        assert!(r.is_disqualified());
        // A disqualified target is never due again.
        assert!(!r.is_due(&policy, 1 << 40));
    }

    #[test]
    fn evict_after_disqualifies_a_run_of_failures() {
        let policy = AuditPolicy {
            evict_after: 3,
            ..AuditPolicy::default()
        };
        let mut ledger = AuditLedger::new();
        let t = NodeId([1; 32]);
        assert!(ledger.is_due(&policy, &t, 0));
        ledger.record(&policy, t, AuditOutcome::Failed, 0);
        ledger.record(&policy, t, AuditOutcome::Passed, 1);
        ledger.record(&policy, t, AuditOutcome::Failed, 2);
        assert_eq!(
            ledger.record(&policy, t, AuditOutcome::Failed, 3),
            Standing::Suspect { failures: 3 }
        );
        assert_eq!(
            ledger.record(&policy, t, AuditOutcome::Failed, 4),
            Standing::Evicted
        );
        assert_eq!(ledger.evicted().collect::<Vec<_>>(), vec![&t]);
        assert_eq!(ledger.totals(), (1, 4, 0));
    }

    #[test]
    fn challenges_cover_every_packet_and_chunk() {
        let mut rng = rand::rngs::Xoshiro256PlusPlus::seed_from_u64(1);
        let held: BTreeMap<PacketId, u64> = (0u8..5).map(|i| (PacketId::of(&[i]), 3000)).collect();
        let mut packets = BTreeSet::new();
        let mut chunks = BTreeSet::new();
        for _ in 0..400 {
            let c = challenge(NodeId([2; 32]), &held, &mut rng).expect("non-empty");
            assert!(c.chunk < chunk_count(3000));
            packets.insert(c.packet);
            chunks.insert(c.chunk);
        }
        assert_eq!(packets.len(), 5);
        assert_eq!(chunks.len(), 3);
        assert_eq!(challenge(NodeId([2; 32]), &BTreeMap::new(), &mut rng), None);
        assert_eq!(chunk_count(0), 1);
        assert_eq!(chunk_count(1024), 1);
        assert_eq!(chunk_count(1025), 2);
    }
}
