//! The repair checker: which stripes of the manager's state need rebuilding
//! at a given time, and the store tickets a repairer uploads under.
//!
//! Sans-IO like the rest of [`crate::repair`]: the state says which nodes are
//! online and since when they are not (`ClientRecord::offline_since`, set by
//! the replicated `SetOnline`), the [`RepairPolicy`] says when a packet
//! counts as gone, and the checker turns every stripe of a committed
//! snapshot into a [`StripeVerdict`]. It must not choose new targets
//! ([`Manager::decide_repair`] does), move bytes or read a clock.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{DataId, NodeId, PacketId, SnapshotId};
use crate::manager::{Manager, ManagerError};
use crate::repair::{PacketStatus, RepairPolicy, StripeVerdict};
use crate::ticket::{StorageTicket, TicketEntry, TicketKind};
use crate::units::Millis;

/// How long a target may be unreachable before its packets are rebuilt
/// elsewhere, unless configured otherwise (Storj's 4 hours).
pub const DEFAULT_REPAIR_GRACE: Millis = 4 * 60 * 60 * 1000;

/// Default pace of repair traffic (reads and writes together), bytes per
/// second, unless configured otherwise (`repair_bandwidth`).
pub const DEFAULT_REPAIR_BANDWIDTH: u64 = 8_000_000;

/// Longest wait before a stripe whose repair failed is tried again (the
/// back-off doubles up to this).
pub const MAX_REPAIR_BACKOFF: Millis = 5 * 60 * 1000;

/// How often the checker looks at the stripes for a grace period: a tenth of
/// it, between 1 s and 5 min (a packet is repaired at most that long after
/// its grace ends).
pub const fn check_period(grace: Millis) -> Millis {
    let tenth = grace / 10;
    if tenth < 1000 {
        1000
    } else if tenth > 300_000 {
        300_000
    } else {
        tenth
    }
}

impl Default for RepairPolicy {
    /// Grace [`DEFAULT_REPAIR_GRACE`]; the threshold by the stripe's width
    /// ([`RepairPolicy::threshold_for`]: eager up to 4+3, half the parity
    /// beyond).
    fn default() -> Self {
        RepairPolicy {
            grace: DEFAULT_REPAIR_GRACE,
            threshold: 0,
        }
    }
}

/// One stripe to rebuild, as the checker found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairTask {
    /// The newest committed snapshot referencing the chunk: its backup set's
    /// constraints are the ones the replacements keep.
    pub snapshot: SnapshotId,
    pub data_id: DataId,
    /// Slots whose packets are gone (a [`StripeVerdict::Rebuild`]'s `rebuild`).
    pub rebuild: Vec<usize>,
    /// Every slot whose target is reachable, in slot order: a repairer reads
    /// K of them (the verdict's `read` first) and falls back to the others
    /// when a read fails.
    pub read: Vec<usize>,
}

/// What one pass of the checker found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairCheck {
    /// Stripes of committed snapshots looked at.
    pub stripes: u64,
    /// Stripes to rebuild now.
    pub tasks: Vec<RepairTask>,
    /// Stripes due for repair with fewer than K packets reachable now.
    pub waiting: u64,
    /// Stripes with fewer than K packets left anywhere.
    pub lost: u64,
    /// Targets whose packets count as gone (away past the grace period, or
    /// unknown to the manager): replacements need not stay near them.
    pub given_up: BTreeSet<NodeId>,
    /// When the next unreachable packet passes the grace period.
    pub next_deadline: Option<Millis>,
}

impl RepairCheck {
    /// Stripes that need a repair (now, or once enough packets are reachable).
    pub fn pending(&self) -> u64 {
        self.tasks.len() as u64 + self.waiting
    }
}

impl Manager {
    /// What the manager knows about `packet` on `target`: missing when the
    /// node is unknown, leaving the grid, disqualified by its audits or
    /// failed an audit of this packet; else reachable while the node is
    /// online, unreachable since it was marked offline.
    pub fn packet_status(&self, target: &NodeId, packet: &PacketId) -> PacketStatus {
        if let Some(record) = self.state().targets.get(target)
            && (record.exiting_since.is_some()
                || record.audit.is_disqualified()
                || record.audit.failed(packet))
        {
            return PacketStatus::Missing;
        }
        match self.state().clients.get(target) {
            None => PacketStatus::Missing,
            Some(c) if c.profile.online => PacketStatus::Reachable,
            // A record from before `offline_since` existed: away since it
            // was last heard from, as far as the manager knows.
            Some(c) => PacketStatus::Unreachable {
                since: c
                    .offline_since
                    .unwrap_or(c.profile.last_seen.max(c.joined_at)),
            },
        }
    }

    /// Assesses every stripe of every committed snapshot at `now` under
    /// `policy`. Changes nothing; the tasks come in chunk order.
    pub fn check_repairs(&self, policy: &RepairPolicy, now: Millis) -> RepairCheck {
        let state = self.state();
        // Each chunk under the newest snapshot that references it.
        let mut newest: BTreeMap<DataId, (Millis, SnapshotId)> = BTreeMap::new();
        for snapshot in state.snapshots.values() {
            for data_id in &snapshot.chunks {
                let entry = newest
                    .entry(*data_id)
                    .or_insert((snapshot.created_at, snapshot.id));
                if snapshot.created_at > entry.0 {
                    *entry = (snapshot.created_at, snapshot.id);
                }
            }
        }
        let mut check = RepairCheck::default();
        for (data_id, (_, snapshot_id)) in newest {
            let Some(chunk) = state.chunks.get(&data_id) else {
                continue;
            };
            let Some(snapshot) = state.snapshots.get(&snapshot_id) else {
                continue;
            };
            let Some(profile) = state.profiles.get(&crate::records::profile_key(
                &snapshot.source,
                &snapshot.set,
            )) else {
                continue;
            };
            check.stripes += 1;
            let statuses: Vec<PacketStatus> = chunk
                .packets
                .iter()
                .map(|p| self.packet_status(&p.target, &p.packet_id))
                .collect();
            for (p, status) in chunk.packets.iter().zip(&statuses) {
                if policy.is_gone(*status, now) {
                    check.given_up.insert(p.target);
                }
            }
            if let Some(deadline) = policy.next_deadline(&statuses, now) {
                check.next_deadline =
                    Some(check.next_deadline.map_or(deadline, |d| d.min(deadline)));
            }
            // A stripe's geometry is its own width: a deduplicated chunk
            // may be stored with another set's redundancy.
            let redundancy = if profile.params.redundancy.width() == statuses.len() {
                profile.params.redundancy
            } else {
                stripe_redundancy(chunk.packets.iter().map(|p| p.packet_id))
            };
            // A leaving target's packets move whatever the threshold: the
            // node is about to stop.
            let leaving = chunk.packets.iter().any(|p| {
                state
                    .targets
                    .get(&p.target)
                    .is_some_and(|r| r.exiting_since.is_some())
            });
            let eager = RepairPolicy {
                threshold: 1,
                ..*policy
            };
            let policy_here = if leaving { &eager } else { policy };
            match policy_here.assess(redundancy, &statuses, now) {
                StripeVerdict::Healthy { .. } => {}
                StripeVerdict::Waiting { .. } => check.waiting += 1,
                StripeVerdict::Lost { .. } => check.lost += 1,
                StripeVerdict::Rebuild { rebuild, .. } => check.tasks.push(RepairTask {
                    snapshot: snapshot_id,
                    data_id,
                    rebuild,
                    read: (0..statuses.len())
                        .filter(|&i| statuses[i] == PacketStatus::Reachable)
                        .collect(),
                }),
            }
        }
        check
    }

    /// Store tickets, signed by this manager, for a repairer to upload
    /// rebuilt packets: `(target, packet, size, generation)` each (the
    /// generation its `MovePacket` records).
    pub fn repair_tickets(
        &self,
        uploads: &[(NodeId, PacketId, u64, u64)],
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        let mut per_target: BTreeMap<NodeId, Vec<TicketEntry>> = BTreeMap::new();
        for (target, packet_id, size, generation) in uploads {
            per_target.entry(*target).or_default().push(TicketEntry {
                packet_id: *packet_id,
                size: *size,
                generation: *generation,
            });
        }
        self.tickets(TicketKind::Store, None, per_target, now)
    }
}

/// The redundancy of a stripe stored under another set's parameters: one
/// packet copied to every slot is replicas, distinct packets are erasure
/// with two thirds of them needed (the default 4+2's ratio), as the
/// source-side health report assumes.
fn stripe_redundancy(ids: impl Iterator<Item = PacketId>) -> crate::units::Redundancy {
    use crate::units::Redundancy;
    let ids: Vec<PacketId> = ids.collect();
    let distinct: BTreeSet<PacketId> = ids.iter().copied().collect();
    let width = ids.len().min(255) as u8;
    if distinct.len() <= 1 {
        return Redundancy::Replicas { n: width.max(1) };
    }
    let k = (usize::from(width) * 2).div_ceil(3).max(1) as u8;
    Redundancy::Erasure {
        k,
        m: width.saturating_sub(k).max(1),
    }
}
