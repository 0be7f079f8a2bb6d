//! The repair policy: which packets count as gone, which stripes to rebuild,
//! and what a rebuild moves over the network; and the manager's repair
//! decision, [`Manager::decide_repair`].
//!
//! Sans-IO: the caller (the sequence manager in the node, or the simulator)
//! reports what it knows about each packet of a stripe — reachable, unreachable
//! since some time, or missing — and the current time; the policy answers with
//! a [`StripeVerdict`]. For a stripe to rebuild, [`Manager::decide_repair`]
//! asks the placement module (`place_replacements_with`) for new targets under
//! the backup's own distance rules and answers with the `MovePacket` commands
//! to replicate once the rebuilt packets are uploaded. This module must not
//! move bytes, read a clock, change the manager's state or know about
//! networking; erasure repair works on ciphertext, so no key appears here.
//! The checker ([`Manager::check_repairs`], in `check`) finds the stripes to
//! rebuild in the manager's replicated state.

use std::collections::BTreeSet;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ids::{DataId, NodeId, SnapshotId};
use crate::manager::{Manager, ManagerError};
use crate::placement::{PlacementRequest, place_replacements_reusing, place_replacements_with};
use crate::records::profile_key;
use crate::state::{ApplyError, Command};
use crate::units::{Millis, Redundancy};

mod check;
pub use check::{
    DEFAULT_REPAIR_BANDWIDTH, DEFAULT_REPAIR_GRACE, MAX_REPAIR_BACKOFF, RepairCheck, RepairTask,
    check_period,
};

/// What the manager knows about one packet of a stripe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PacketStatus {
    /// Its target is reachable and, as far as audits know, still holds it.
    Reachable,
    /// Its target has been unreachable since the given time.
    Unreachable { since: Millis },
    /// Known gone: the target was evicted, failed an audit on it, or was given up.
    Missing,
}

/// The manager's repair settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairPolicy {
    /// How long a target may stay unreachable before its packets count as gone.
    pub grace: Millis,
    /// Rebuild a stripe once this many of its packets are gone (1 = eager;
    /// 0 = by the stripe's width, see [`RepairPolicy::threshold_for`]).
    pub threshold: usize,
}

/// What to do with one stripe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StripeVerdict {
    /// Fewer than `threshold` packets are gone: nothing to do.
    Healthy { gone: usize },
    /// Rebuild the packets in `rebuild` (slot indices) from the packets in `read`.
    Rebuild {
        rebuild: Vec<usize>,
        read: Vec<usize>,
    },
    /// Repair is due but fewer than K packets are reachable now: try again later.
    Waiting { reachable: usize, needed: usize },
    /// Fewer than K packets exist anywhere the manager knows of: the stripe is lost.
    Lost { remaining: usize, needed: usize },
}

/// Bytes one rebuild moves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairTraffic {
    /// Bytes read from surviving targets (K packets for erasure, one copy for replicas).
    pub read: u64,
    /// Bytes written to new targets (one packet per rebuilt slot).
    pub written: u64,
}

impl RepairTraffic {
    pub fn total(&self) -> u64 {
        self.read.saturating_add(self.written)
    }
}

impl RepairPolicy {
    /// Whether a packet counts as gone at `now`: missing, or unreachable for at least the grace period.
    pub fn is_gone(&self, status: PacketStatus, now: Millis) -> bool {
        match status {
            PacketStatus::Reachable => false,
            PacketStatus::Unreachable { since } => now.saturating_sub(since) >= self.grace,
            PacketStatus::Missing => true,
        }
    }

    /// Gone packets at which a stripe of `redundancy` is rebuilt. An explicit
    /// threshold applies as is; the automatic one (0) is Storj's idea of a
    /// repair threshold between K and the stripe's width: eager for narrow
    /// stripes (4+2 waits for nothing: one more loss would leave a single
    /// loss between the stripe and data loss), and for wide ones half the
    /// parity (10+4 is rebuilt once 2 packets are gone, with 2 more losses
    /// still survivable), so a wide code pays one repair for several losses.
    pub fn threshold_for(&self, redundancy: Redundancy) -> usize {
        if self.threshold > 0 {
            return self.threshold;
        }
        let parity = redundancy.width().saturating_sub(redundancy.data_packets());
        (parity / 2).max(1)
    }

    /// Decides what to do with a stripe whose packets have `statuses` (one per slot).
    pub fn assess(
        &self,
        redundancy: Redundancy,
        statuses: &[PacketStatus],
        now: Millis,
    ) -> StripeVerdict {
        let needed = redundancy.data_packets();
        let gone: Vec<usize> = (0..statuses.len())
            .filter(|&i| self.is_gone(statuses[i], now))
            .collect();
        // Packets that still exist somewhere (reachable, or away and possibly coming back).
        let existing = statuses
            .iter()
            .filter(|s| !matches!(s, PacketStatus::Missing))
            .count();
        if existing < needed {
            return StripeVerdict::Lost {
                remaining: existing,
                needed,
            };
        }
        if gone.len() < self.threshold_for(redundancy) {
            return StripeVerdict::Healthy { gone: gone.len() };
        }
        let read: Vec<usize> = (0..statuses.len())
            .filter(|&i| statuses[i] == PacketStatus::Reachable)
            .take(needed)
            .collect();
        if read.len() < needed {
            return StripeVerdict::Waiting {
                reachable: read.len(),
                needed,
            };
        }
        StripeVerdict::Rebuild {
            rebuild: gone,
            read,
        }
    }

    /// When the next packet of `statuses` will pass the grace period, if any is still within it.
    pub fn next_deadline(&self, statuses: &[PacketStatus], now: Millis) -> Option<Millis> {
        statuses
            .iter()
            .filter_map(|s| match *s {
                PacketStatus::Unreachable { since } => Some(since.saturating_add(self.grace)),
                _ => None,
            })
            .filter(|&deadline| deadline > now)
            .min()
    }
}

/// Bytes moved to rebuild `rebuilt` packets of `packet_size` bytes in one stripe.
pub fn repair_traffic(redundancy: Redundancy, rebuilt: usize, packet_size: u64) -> RepairTraffic {
    if rebuilt == 0 {
        return RepairTraffic::default();
    }
    let read_packets = redundancy.data_packets() as u64;
    RepairTraffic {
        read: read_packets.saturating_mul(packet_size),
        written: (rebuilt as u64).saturating_mul(packet_size),
    }
}

/// A stripe to rebuild, as the driver of a [`Manager`] knows it.
#[derive(Clone, Copy, Debug)]
pub struct RepairRequest<'a> {
    /// A committed snapshot that references the chunk. Its backup set's
    /// source location and parameters (distance, spread, redundancy) are the
    /// constraints the replacements keep.
    pub snapshot: SnapshotId,
    /// The chunk (stripe) to repair.
    pub data_id: DataId,
    /// Packet indices to rebuild, in share order (a [`StripeVerdict::Rebuild`]'s `rebuild`).
    pub rebuild: &'a [usize],
    /// Targets the driver gave up on (evicted, or away past the grace
    /// period). Their packets elsewhere in the backup are being rebuilt too,
    /// so their locations no longer constrain where replacements go.
    pub given_up: &'a BTreeSet<NodeId>,
}

impl Manager {
    /// Decides where the rebuilt packets of one stripe go, without changing
    /// anything: one [`Command::MovePacket`] per index of `request.rebuild`,
    /// in that order, to apply once the rebuilt packet is on its new target.
    ///
    /// New targets come from [`place_replacements_with`] under the original
    /// backup's constraints: within the backup distance of the source, within
    /// the spread of every other target of the snapshot (all its chunks) that
    /// is neither rebuilt here nor given up, online, with room for a packet,
    /// and never a target that already holds a packet of this stripe. Nodes
    /// the snapshot does not use yet are preferred; when none fits, one of
    /// its other targets takes the packet ([`place_replacements_reusing`]).
    /// The constraints are those the snapshot's backup set has now (the
    /// source profile keeps the latest backup's parameters). *When* to
    /// rebuild is the [`RepairPolicy`]'s verdict; this only says *where*.
    pub fn decide_repair<R: Rng + ?Sized>(
        &self,
        request: &RepairRequest<'_>,
        now: Millis,
        rng: &mut R,
    ) -> Result<Vec<Command>, ManagerError> {
        self.decide_repair_avoiding(request, &BTreeSet::new(), now, rng)
    }

    /// [`Self::decide_repair`], never choosing a node in `avoid` as a new
    /// target (e.g. nodes whose claimed location measured RTTs refute, under
    /// `location_check = enforce`).
    /// `count` new targets for packets of one stripe of a backup whose
    /// targets are `anchors`, never one in `stripe` (its holders and nodes
    /// to avoid): nodes the backup does not use yet first (it spreads
    /// wider), else any of its targets. How repairs and moved uploads
    /// (`decide_retarget`) choose.
    pub(crate) fn replacements<R: Rng + ?Sized>(
        &self,
        request: &PlacementRequest,
        anchors: &[NodeId],
        stripe: &[NodeId],
        count: usize,
        rng: &mut R,
    ) -> Result<Vec<NodeId>, crate::placement::PlacementRefusal> {
        let policy = &self.config().placement;
        place_replacements_with(self.view(), request, policy, anchors, stripe, count, rng).or_else(
            |_| {
                place_replacements_reusing(
                    self.view(),
                    request,
                    policy,
                    anchors,
                    stripe,
                    count,
                    rng,
                )
            },
        )
    }

    pub fn decide_repair_avoiding<R: Rng + ?Sized>(
        &self,
        request: &RepairRequest<'_>,
        avoid: &BTreeSet<NodeId>,
        now: Millis,
        rng: &mut R,
    ) -> Result<Vec<Command>, ManagerError> {
        let state = self.state();
        let snapshot = state
            .snapshots
            .get(&request.snapshot)
            .ok_or(ApplyError::UnknownSnapshot(request.snapshot))?;
        if !snapshot.chunks.contains(&request.data_id) {
            return Err(ManagerError::Invalid(format!(
                "snapshot {} does not reference chunk {}",
                request.snapshot, request.data_id
            )));
        }
        let chunk = state
            .chunks
            .get(&request.data_id)
            .ok_or(ApplyError::UnknownChunk(request.data_id))?;
        let rebuild: BTreeSet<usize> = request.rebuild.iter().copied().collect();
        if rebuild.len() != request.rebuild.len()
            || rebuild.iter().any(|&j| j >= chunk.packets.len())
        {
            return Err(ManagerError::Invalid(format!(
                "chunk {} has {} packets: cannot rebuild {:?}",
                request.data_id,
                chunk.packets.len(),
                request.rebuild
            )));
        }
        if rebuild.is_empty() {
            return Ok(Vec::new());
        }
        let profile = state
            .profiles
            .get(&profile_key(&snapshot.source, &snapshot.set))
            .ok_or_else(|| {
                ManagerError::Invalid(format!(
                    "snapshot {} has no source profile for set {:?}",
                    snapshot.id, snapshot.set
                ))
            })?;
        // The rest of the backup: every target of the snapshot that stays.
        let mut anchors: BTreeSet<NodeId> = BTreeSet::new();
        for data_id in &snapshot.chunks {
            let Some(other) = state.chunks.get(data_id) else {
                continue;
            };
            for (j, p) in other.packets.iter().enumerate() {
                let moving = data_id == &request.data_id && rebuild.contains(&j);
                if !moving && !request.given_up.contains(&p.target) {
                    anchors.insert(p.target);
                }
            }
        }
        let anchors: Vec<NodeId> = anchors.into_iter().collect();
        // A stripe never has two packets on one target (MovePacket checks
        // it); nodes to avoid are never chosen either, like its holders.
        let stripe: Vec<NodeId> = chunk
            .packets
            .iter()
            .map(|p| p.target)
            .chain(avoid.iter().copied())
            .collect();
        let packet_size = request
            .rebuild
            .iter()
            .map(|&j| chunk.packets[j].size)
            .max()
            .unwrap_or(1);
        let placement_request = PlacementRequest {
            source: profile.location,
            source_node: Some(snapshot.source),
            backup_distance: profile.params.backup_distance,
            spread: profile.params.spread,
            redundancy: profile.params.redundancy,
            stripes: 1,
            packet_size,
        };
        let targets = self.replacements(
            &placement_request,
            &anchors,
            &stripe,
            request.rebuild.len(),
            rng,
        )?;
        Ok(request
            .rebuild
            .iter()
            .zip(targets)
            .map(|(&j, new_target)| Command::MovePacket {
                data_id: request.data_id,
                index: j as u32,
                new_target,
                at: now,
                generation: rng.next_u64().max(1),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: Redundancy = Redundancy::Erasure { k: 4, m: 2 };
    const R: PacketStatus = PacketStatus::Reachable;
    const M: PacketStatus = PacketStatus::Missing;

    fn policy(threshold: usize) -> RepairPolicy {
        RepairPolicy {
            grace: 1_000,
            threshold,
        }
    }

    #[test]
    fn unreachable_counts_as_gone_only_after_the_grace_period() {
        let away = PacketStatus::Unreachable { since: 5_000 };
        let p = policy(1);
        assert!(!p.is_gone(away, 5_999));
        assert!(p.is_gone(away, 6_000));
        let statuses = [R, R, R, R, R, away];
        assert_eq!(
            p.assess(EC, &statuses, 5_500),
            StripeVerdict::Healthy { gone: 0 }
        );
        assert_eq!(
            p.assess(EC, &statuses, 6_000),
            StripeVerdict::Rebuild {
                rebuild: vec![5],
                read: vec![0, 1, 2, 3]
            }
        );
        assert_eq!(p.next_deadline(&statuses, 5_500), Some(6_000));
        assert_eq!(p.next_deadline(&statuses, 6_000), None);
    }

    #[test]
    fn threshold_delays_repair_and_rebuilds_every_gone_packet() {
        let p = policy(2);
        assert_eq!(
            p.assess(EC, &[R, R, R, R, R, M], 0),
            StripeVerdict::Healthy { gone: 1 }
        );
        assert_eq!(
            p.assess(EC, &[M, R, R, R, R, M], 0),
            StripeVerdict::Rebuild {
                rebuild: vec![0, 5],
                read: vec![1, 2, 3, 4]
            }
        );
    }

    #[test]
    fn the_automatic_threshold_is_eager_for_narrow_stripes_and_half_the_parity_for_wide_ones() {
        let auto = policy(0);
        let wide = Redundancy::Erasure { k: 10, m: 4 };
        assert_eq!(auto.threshold_for(EC), 1);
        assert_eq!(auto.threshold_for(Redundancy::Erasure { k: 4, m: 3 }), 1);
        assert_eq!(auto.threshold_for(wide), 2);
        assert_eq!(auto.threshold_for(Redundancy::Erasure { k: 29, m: 51 }), 25);
        assert_eq!(auto.threshold_for(Redundancy::Replicas { n: 3 }), 1);
        assert_eq!(policy(3).threshold_for(wide), 3);
        assert_eq!(RepairPolicy::default().threshold_for(wide), 2);
        let mut statuses = vec![R; 14];
        statuses[3] = M;
        assert_eq!(
            auto.assess(wide, &statuses, 0),
            StripeVerdict::Healthy { gone: 1 }
        );
        statuses[9] = M;
        assert!(matches!(
            auto.assess(wide, &statuses, 0),
            StripeVerdict::Rebuild { ref rebuild, .. } if rebuild == &vec![3, 9]
        ));
        // 4+2 is rebuilt at the first loss.
        assert!(matches!(
            auto.assess(EC, &[R, R, R, R, R, M], 0),
            StripeVerdict::Rebuild { .. }
        ));
    }

    #[test]
    fn too_few_reachable_waits_and_too_few_existing_is_lost() {
        let away = PacketStatus::Unreachable { since: 0 };
        let p = policy(1);
        // Two missing, two away but within grace: 4 exist, only 2 reachable.
        assert_eq!(
            p.assess(EC, &[M, M, away, away, R, R], 10),
            StripeVerdict::Waiting {
                reachable: 2,
                needed: 4
            }
        );
        assert_eq!(
            p.assess(EC, &[M, M, M, away, R, R], 10),
            StripeVerdict::Lost {
                remaining: 3,
                needed: 4
            }
        );
    }

    #[test]
    fn replicas_read_one_copy() {
        let rep = Redundancy::Replicas { n: 3 };
        assert_eq!(
            policy(1).assess(rep, &[M, R, R], 0),
            StripeVerdict::Rebuild {
                rebuild: vec![0],
                read: vec![1]
            }
        );
        assert_eq!(
            repair_traffic(rep, 1, 100),
            RepairTraffic {
                read: 100,
                written: 100
            }
        );
        assert_eq!(repair_traffic(EC, 2, 10).total(), 60);
        assert_eq!(repair_traffic(EC, 0, 10).total(), 0);
    }
}
