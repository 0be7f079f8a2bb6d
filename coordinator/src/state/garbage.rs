//! The collection queue: packets no record references any more that a
//! target may still hold. Every deletion a command produces (a forget, an
//! abort or expiry, a commit's orphans, a repair's superseded copy) is queued
//! here in the same apply, so a delete nobody delivered (the source crashed,
//! the target was offline, the answer was too large to carry every ticket)
//! is not forgotten: the leader collects due entries in bounded batches
//! (`Command::Collected` removes what the targets confirmed).
//!
//! An answer carries at most [`MAX_DELETIONS_ANSWERED`] deletions; those are
//! due [`COLLECT_HOLD`] later (the caller delivers them first), the rest at
//! once. A packet recorded on its target again leaves the queue, so a
//! collection never deletes a live copy.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Applied, Deletion, ManagerState, Touched};
use crate::ids::{NodeId, PacketId};
use crate::units::Millis;

/// Most deletions one applied command hands back to its caller (and so one
/// forget, abandon or commit answer carries, about 100 bytes each with
/// their tickets): the rest are collected by the leader.
pub const MAX_DELETIONS_ANSWERED: usize = 16_384;
/// How long the queue leaves answered deletions to the caller that got
/// their tickets before the leader collects them itself.
pub const COLLECT_HOLD: Millis = 10 * 60 * 1000;
/// Most entries one `Collected` command removes (its raft entry stays far
/// under the entry bound: about 70 bytes an entry).
pub const MAX_COLLECT_BATCH: usize = 4_096;

/// One queued deletion: the generation its delete ticket names, and when
/// the leader should deliver it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Garbage {
    pub generation: u64,
    pub due: Millis,
}

/// What the leader should do with the due part of the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DueGarbage {
    /// Deletions to deliver, per target.
    pub deliver: BTreeMap<NodeId, Vec<Deletion>>,
    /// Entries that are live again (recorded on their target): drop them
    /// from the queue without deleting anything.
    pub stale: Vec<(NodeId, PacketId)>,
}

impl DueGarbage {
    pub fn is_empty(&self) -> bool {
        self.deliver.is_empty() && self.stale.is_empty()
    }
}

impl ManagerState {
    /// Queues what `applied` asks to delete and keeps at most
    /// [`MAX_DELETIONS_ANSWERED`] of it in the answer. `answered_due` is
    /// when the answered part falls to the leader (the overflow is due at
    /// `at`). Packets this command recorded on a target leave the queue first.
    pub(super) fn queue_garbage(
        &mut self,
        applied: Applied,
        at: Millis,
        answered_due: Millis,
        touched: &mut Touched,
    ) -> Applied {
        let recorded: Vec<(NodeId, PacketId)> = touched
            .target_packets
            .iter()
            .filter(|(t, p)| self.holds(t, p))
            .copied()
            .collect();
        for key in recorded {
            if self.garbage.remove(&key).is_some() {
                touched.garbage.insert(key);
            }
        }
        match applied {
            Applied::Deletions(d) => {
                Applied::Deletions(self.queue_deletions(d, at, answered_due, touched))
            }
            Applied::Committed { snapshot, orphans } => Applied::Committed {
                snapshot,
                orphans: self.queue_deletions(orphans, at, answered_due, touched),
            },
            Applied::Done => Applied::Done,
        }
    }

    fn queue_deletions(
        &mut self,
        deletions: BTreeMap<NodeId, Vec<Deletion>>,
        at: Millis,
        answered_due: Millis,
        touched: &mut Touched,
    ) -> BTreeMap<NodeId, Vec<Deletion>> {
        let mut answered: BTreeMap<NodeId, Vec<Deletion>> = BTreeMap::new();
        let mut count = 0usize;
        for (target, list) in deletions {
            for d in list {
                let due = if count < MAX_DELETIONS_ANSWERED {
                    answered.entry(target).or_default().push(d);
                    answered_due
                } else {
                    at
                };
                count += 1;
                let key = (target, d.packet_id);
                self.garbage.insert(
                    key,
                    Garbage {
                        generation: d.generation,
                        due,
                    },
                );
                touched.garbage.insert(key);
            }
        }
        answered
    }

    fn holds(&self, target: &NodeId, packet: &PacketId) -> bool {
        self.targets
            .get(target)
            .is_some_and(|r| r.packets.contains_key(packet))
    }

    /// Up to `limit` queued entries due at `now`, skipping targets `skip`
    /// names (offline, or backing off): what to deliver, and what to drop.
    /// A packet a pending plan puts on the same target waits (its upload
    /// may already be there; the plan's commit or abort decides).
    pub fn due_garbage(
        &self,
        now: Millis,
        limit: usize,
        skip: impl Fn(&NodeId) -> bool,
    ) -> DueGarbage {
        use std::ops::Bound;
        let mut out = DueGarbage::default();
        let mut taken = 0usize;
        // Target by target: a skipped target's entries (an offline target
        // may have many) are stepped over at once, not one by one.
        let mut from: Bound<(NodeId, PacketId)> = Bound::Unbounded;
        while taken < limit {
            let Some((&(target, _), _)) = self.garbage.range((from, Bound::Unbounded)).next()
            else {
                break;
            };
            let last = (target, PacketId([0xff; 32]));
            from = Bound::Excluded(last);
            if skip(&target) {
                continue;
            }
            let first = (target, PacketId([0; 32]));
            for ((_, packet), g) in self.garbage.range(first..=last) {
                if taken >= limit {
                    break;
                }
                if g.due > now {
                    continue;
                }
                if self.holds(&target, packet) {
                    out.stale.push((target, *packet));
                } else if self.pending_puts(packet, &target, None) {
                    continue;
                } else {
                    out.deliver.entry(target).or_default().push(Deletion {
                        packet_id: *packet,
                        generation: g.generation,
                    });
                }
                taken += 1;
            }
        }
        out
    }

    /// Removes collected (or stale) entries; unknown ones are skipped, so a
    /// repeated command changes nothing.
    pub(super) fn collected(&mut self, entries: &[(NodeId, PacketId)], touched: &mut Touched) {
        for key in entries {
            if self.garbage.remove(key).is_some() {
                touched.garbage.insert(*key);
            }
        }
    }
}
