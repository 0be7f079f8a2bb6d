//! A snapshot's health as its source sees it: per stripe, whether every
//! packet's target is up (healthy), enough are for a restore (degraded), or
//! not (lost). Read from the snapshot's sealed sequence and the grid view's
//! liveness; no packet is fetched. The dashboard and `strew status --json`
//! show it.
//!
//! How many packets a stripe needs comes from the backup set's redundancy
//! when the stripe has that width; a stripe stored with another redundancy
//! (a chunk deduplicated against an older backup) needs one packet if all
//! its entries are copies of one packet, else two thirds of them (the
//! default `erasure:4+2`'s ratio).

use std::collections::BTreeSet;

use serde::Serialize;
use strew_coordinator::seal::Sequence as SealedSequence;
use strew_coordinator::{NodeId, PacketId, Redundancy};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    pub stripes: u64,
    pub healthy: u64,
    pub degraded: u64,
    pub lost: u64,
}

impl Health {
    /// Adds another part's (a page's) counts.
    pub fn add(&mut self, other: &Health) {
        self.stripes += other.stripes;
        self.healthy += other.healthy;
        self.degraded += other.degraded;
        self.lost += other.lost;
    }
}

/// Classifies every stripe of `seq`; `up` says whether a target is reachable.
pub fn health(
    seq: &SealedSequence,
    redundancy: Option<Redundancy>,
    up: impl Fn(&NodeId) -> bool,
) -> Health {
    let mut h = Health::default();
    for stripe in &seq.stripes {
        let distinct: BTreeSet<PacketId> = stripe.packets.iter().map(|p| p.packet_id).collect();
        let available: BTreeSet<PacketId> = stripe
            .packets
            .iter()
            .filter(|p| p.targets.iter().any(&up))
            .map(|p| p.packet_id)
            .collect();
        let needed = match redundancy {
            Some(r) if r.width() == stripe.packets.len() => r.data_packets(),
            _ if distinct.len() == 1 => 1,
            _ => (distinct.len() * 2).div_ceil(3),
        };
        h.stripes += 1;
        if available.len() == distinct.len() {
            h.healthy += 1;
        } else if available.len() >= needed {
            h.degraded += 1;
        } else {
            h.lost += 1;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::seal::{SequenceEntry, SequenceStripe};
    use strew_coordinator::{DataId, SnapshotId};

    fn stripe(n: u8, targets: &[u8]) -> SequenceStripe {
        SequenceStripe {
            data_id: DataId([n; 32]),
            packets: targets
                .iter()
                .enumerate()
                .map(|(i, t)| SequenceEntry {
                    packet_id: PacketId([n * 10 + i as u8; 32]),
                    size: 1,
                    targets: vec![NodeId([*t; 32])],
                    generation: 0,
                })
                .collect(),
        }
    }

    #[test]
    fn stripes_are_healthy_degraded_or_lost_by_what_is_up() {
        let seq = SealedSequence {
            snapshot: SnapshotId([0; 32]),
            manifest: DataId([0; 32]),
            manifest_chunks: vec![],
            stripes: vec![
                stripe(1, &[1, 2, 3, 4, 5, 6]),
                stripe(2, &[1, 2, 3, 4, 7, 8]),
                stripe(3, &[1, 2, 7, 8, 9, 9]),
            ],
        };
        let down = [7u8, 8, 9];
        let up = |t: &NodeId| !down.contains(&t.0[0]);
        let h = health(&seq, Some(Redundancy::Erasure { k: 4, m: 2 }), up);
        assert_eq!(
            h,
            Health {
                stripes: 3,
                healthy: 1,
                degraded: 1,
                lost: 1
            }
        );
    }
}
