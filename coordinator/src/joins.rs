//! Who may enter an open grid's replicated state (SPEC R10): the leader's
//! join gate.
//!
//! Identities are free, so a node the grid view merely heard of must not
//! cost the raft log anything. In an open grid the leader proposes a new
//! node's `Join` only once the node has been in its view continuously for
//! `min_seen_ms` and announced a valid proof-of-work stamp (`work`). (A
//! closed grid admits by invitation instead; the gate is not asked.)
//!
//! Owns the first-seen times of the nodes currently in the view and the
//! memo of their checked stamps; both are bounded by the view (a node
//! absent from one observation is forgotten, so its continuity starts
//! again). It must not propose anything, nor batch: the daemon's manager
//! does, a bounded number per tick.

use std::collections::BTreeMap;

use crate::ids::NodeId;
use crate::work;

/// How long a node must have been in the leader's view, by default.
pub const DEFAULT_MIN_SEEN_MS: u64 = 10 * 60 * 1000;

/// What a node must show before its first `Join`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinPolicy {
    /// Continuous presence in the leader's grid view.
    pub min_seen_ms: u64,
    /// Zero bits of the announced proof-of-work stamp.
    pub work_bits: u32,
}

impl Default for JoinPolicy {
    fn default() -> Self {
        JoinPolicy {
            min_seen_ms: DEFAULT_MIN_SEEN_MS,
            work_bits: work::DEFAULT_WORK_BITS,
        }
    }
}

/// Why a node may not join yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotYet {
    #[error("not in the view at the last observation")]
    Unseen,
    #[error("announced no proof-of-work stamp")]
    NoStamp,
    #[error("its proof-of-work stamp has too few zero bits")]
    WeakStamp,
    #[error("in the view for {seen_ms} ms of the {needed_ms} ms required")]
    TooNew { seen_ms: u64, needed_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    since: u64,
    /// The announced nonce and whether it passed (checked once per nonce).
    stamp: Option<(u64, bool)>,
}

/// The leader's record of who has been in its view since when.
#[derive(Debug, Clone, Default)]
pub struct JoinGate {
    policy: JoinPolicy,
    seen: BTreeMap<NodeId, Seen>,
}

impl JoinGate {
    pub fn new(policy: JoinPolicy) -> Self {
        JoinGate {
            policy,
            seen: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> JoinPolicy {
        self.policy
    }

    /// One observation of the view: the nodes in it (online) with their
    /// announced stamps. Nodes missing from it are forgotten.
    pub fn observe(&mut self, present: impl IntoIterator<Item = (NodeId, Option<u64>)>, now: u64) {
        let bits = self.policy.work_bits;
        let mut next = BTreeMap::new();
        for (node, nonce) in present {
            let mut seen = self.seen.get(&node).copied().unwrap_or(Seen {
                since: now,
                stamp: None,
            });
            seen.stamp = match (nonce, seen.stamp) {
                (None, _) => None,
                (Some(n), Some((old, ok))) if old == n => Some((n, ok)),
                (Some(n), _) => Some((n, work::check(&node, n, bits))),
            };
            next.insert(node, seen);
        }
        self.seen = next;
    }

    /// Whether `node` may join now.
    pub fn ready(&self, node: &NodeId, now: u64) -> Result<(), NotYet> {
        let seen = self.seen.get(node).ok_or(NotYet::Unseen)?;
        match seen.stamp {
            None if self.policy.work_bits > 0 => return Err(NotYet::NoStamp),
            Some((_, false)) if self.policy.work_bits > 0 => return Err(NotYet::WeakStamp),
            _ => {}
        }
        let seen_ms = now.saturating_sub(seen.since);
        if seen_ms < self.policy.min_seen_ms {
            return Err(NotYet::TooNew {
                seen_ms,
                needed_ms: self.policy.min_seen_ms,
            });
        }
        Ok(())
    }

    /// Nodes that only have to wait (valid stamp, not seen long enough):
    /// the view must be looked at again later even if it does not change.
    pub fn waiting(&self, now: u64) -> usize {
        self.seen
            .keys()
            .filter(|n| matches!(self.ready(n, now), Err(NotYet::TooNew { .. })))
            .count()
    }

    /// Nodes tracked (those of the last observation).
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;
    const BITS: u32 = 8;

    fn policy() -> JoinPolicy {
        JoinPolicy {
            min_seen_ms: 60_000,
            work_bits: BITS,
        }
    }

    fn stamped(seed: u8) -> (NodeId, Option<u64>) {
        let node = NodeId([seed; 32]);
        (node, work::find(&node, BITS, 0))
    }

    fn weak(node: NodeId) -> u64 {
        (0..).find(|n| !work::check(&node, *n, BITS)).unwrap()
    }

    #[test]
    fn a_stamped_node_joins_after_being_seen_long_enough() {
        let mut gate = JoinGate::new(policy());
        let (node, nonce) = stamped(1);
        gate.observe([(node, nonce)], NOW);
        assert!(matches!(
            gate.ready(&node, NOW + 59_999),
            Err(NotYet::TooNew { .. })
        ));
        assert_eq!(gate.waiting(NOW + 1), 1);
        gate.observe([(node, nonce)], NOW + 30_000);
        assert_eq!(gate.ready(&node, NOW + 60_000), Ok(()));
        assert_eq!(gate.waiting(NOW + 60_000), 0);
    }

    #[test]
    fn leaving_the_view_restarts_the_clock() {
        let mut gate = JoinGate::new(policy());
        let (node, nonce) = stamped(2);
        gate.observe([(node, nonce)], NOW);
        gate.observe([], NOW + 30_000);
        assert_eq!(gate.ready(&node, NOW + 30_000), Err(NotYet::Unseen));
        gate.observe([(node, nonce)], NOW + 40_000);
        assert!(gate.ready(&node, NOW + 70_000).is_err());
        assert_eq!(gate.ready(&node, NOW + 100_000), Ok(()));
    }

    #[test]
    fn no_or_weak_stamp_never_joins() {
        let mut gate = JoinGate::new(policy());
        let bare = NodeId([3; 32]);
        let cheat = NodeId([4; 32]);
        // A stamp of another node does not count for this one either.
        let (_, borrowed) = stamped(5);
        let borrowed = borrowed.filter(|n| !work::check(&cheat, *n, BITS));
        let cheat_nonce = borrowed.unwrap_or(weak(cheat));
        gate.observe([(bare, None), (cheat, Some(cheat_nonce))], NOW);
        let later = NOW + 3_600_000;
        assert_eq!(gate.ready(&bare, later), Err(NotYet::NoStamp));
        assert_eq!(gate.ready(&cheat, later), Err(NotYet::WeakStamp));
        // They wait for nothing time can give.
        assert_eq!(gate.waiting(later), 0);
    }

    #[test]
    fn a_lax_policy_lets_anyone_in_at_once() {
        let mut gate = JoinGate::new(JoinPolicy {
            min_seen_ms: 0,
            work_bits: 0,
        });
        let node = NodeId([6; 32]);
        gate.observe([(node, None)], NOW);
        assert_eq!(gate.ready(&node, NOW), Ok(()));
    }

    #[test]
    fn the_gate_holds_only_the_last_view() {
        let mut gate = JoinGate::new(policy());
        gate.observe((0..100u8).map(|i| (NodeId([i; 32]), None)), NOW);
        assert_eq!(gate.len(), 100);
        gate.observe((0..10u8).map(|i| (NodeId([i; 32]), None)), NOW + 1);
        assert_eq!(gate.len(), 10);
    }
}
