//! A snapshot's health as its source sees it: per stripe, whether every
//! packet's target is up (healthy), enough are for a restore (degraded), or
//! not (lost); the dashboard and `strew status --json` show it. The manager
//! sums it (`Standing`, with the targets this node sees down); this module
//! counts it from the sealed sequence itself, page by page, for a manager
//! that does not answer `Standing` (one older than this node). The rule of
//! what a stripe needs is the coordinator's ([`classify`]).

pub use strew_coordinator::manager::Health;
use strew_coordinator::manager::classify;
use strew_coordinator::seal::Sequence as SealedSequence;
use strew_coordinator::{NodeId, Redundancy};

/// Classifies every stripe of `seq`; `up` says whether a target is reachable.
pub fn health(
    seq: &SealedSequence,
    redundancy: Option<Redundancy>,
    up: impl Fn(&NodeId) -> bool,
) -> Health {
    let mut h = Health::default();
    for stripe in &seq.stripes {
        h.count(classify(&stripe.packets, redundancy, &up));
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::seal::{SequenceEntry, SequenceStripe};
    use strew_coordinator::{DataId, PacketId, SnapshotId};

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
