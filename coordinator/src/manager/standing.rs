//! How a snapshot stands, summed where the records are: per target, the
//! packets and bytes it holds of the snapshot, and per stripe whether every
//! packet's target is up (healthy), enough are for a restore (degraded), or
//! not (lost), against the targets the asking source sees down.
//!
//! A source used to learn this by fetching its whole sealed sequence, page
//! by page, every few minutes: about 600 MB for a million-chunk snapshot.
//! The answer here is bounded by the snapshot's targets, not its stripes,
//! and reads the current records (where repairs keep targets up to date).
//! Owns [`Health`], [`classify`] (how many packets a stripe needs) and
//! [`Manager::snapshot_standing`] (summed a page at a time). Reads only;
//! no I/O, no clock.

use super::*;
use crate::seal::SequenceEntry;
use crate::units::Redundancy;

/// Most targets a source may name down in one call: more than any snapshot
/// of a grid this protocol serves is placed on (the answer lists each once).
pub const MAX_STANDING_DOWN: usize = 16_384;

/// Sequence pages one `Standing` call sums (32,768 stripes, tens of
/// milliseconds): a large snapshot's standing takes several calls, each
/// as bounded as a sequence page's, so no call holds the manager long.
pub const STANDING_PAGES: usize = 16;

/// Stripes of a snapshot by what a restore could read of them now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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

    /// Counts one stripe.
    pub fn count(&mut self, class: StripeHealth) {
        self.stripes += 1;
        match class {
            StripeHealth::Healthy => self.healthy += 1,
            StripeHealth::Degraded => self.degraded += 1,
            StripeHealth::Lost => self.lost += 1,
        }
    }
}

/// One stripe's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StripeHealth {
    /// Every packet (every copy of a replicated one) has a target up.
    Healthy,
    /// Some do not, but enough for a restore do.
    Degraded,
    /// Too few packets are on targets that are up.
    Lost,
}

/// Classifies a stripe of `packets` (each with its targets); `up` says
/// whether a target is reachable. How many distinct packets a restore
/// needs comes from `redundancy` when the stripe has its width; a stripe of
/// another width (a copy stored with another redundancy) needs one packet
/// if all its entries are copies of one packet, else two thirds of them
/// (the default `erasure:4+2`'s ratio).
pub fn classify(
    packets: &[SequenceEntry],
    redundancy: Option<Redundancy>,
    up: impl Fn(&NodeId) -> bool,
) -> StripeHealth {
    let distinct: BTreeSet<PacketId> = packets.iter().map(|p| p.packet_id).collect();
    let available: BTreeSet<PacketId> = packets
        .iter()
        .filter(|p| p.targets.iter().any(&up))
        .map(|p| p.packet_id)
        .collect();
    let needed = match redundancy {
        Some(r) if r.width() == packets.len() => r.data_packets(),
        _ if distinct.len() == 1 => 1,
        _ => (distinct.len() * 2).div_ceil(3),
    };
    if packets.iter().all(|p| p.targets.iter().any(&up)) {
        StripeHealth::Healthy
    } else if available.len() >= needed {
        StripeHealth::Degraded
    } else {
        StripeHealth::Lost
    }
}

/// What one target holds of a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetShare {
    pub target: NodeId,
    pub packets: u64,
    pub bytes: u64,
}

/// A snapshot's standing: its stripes' health and its targets, by node id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Standing {
    pub health: Health,
    pub targets: Vec<TargetShare>,
}

impl Standing {
    /// Adds the standing of other stripes of the snapshot (another call's
    /// part): health summed, targets merged by node id.
    pub fn add(&mut self, part: &Standing) {
        self.health.add(&part.health);
        let mut targets: BTreeMap<NodeId, (u64, u64)> = self
            .targets
            .iter()
            .map(|t| (t.target, (t.packets, t.bytes)))
            .collect();
        for t in &part.targets {
            let share = targets.entry(t.target).or_default();
            share.0 += t.packets;
            share.1 = share.1.saturating_add(t.bytes);
        }
        self.targets = StandingSum {
            health: Health::default(),
            targets,
        }
        .finish()
        .targets;
    }
}

/// A standing being summed a page at a time ([`Manager::add_standing_page`]).
#[derive(Clone, Debug, Default)]
pub struct StandingSum {
    health: Health,
    targets: BTreeMap<NodeId, (u64, u64)>,
}

impl StandingSum {
    /// The standing summed so far, targets by node id.
    pub fn finish(self) -> Standing {
        Standing {
            health: self.health,
            targets: self
                .targets
                .into_iter()
                .map(|(target, (packets, bytes))| TargetShare {
                    target,
                    packets,
                    bytes,
                })
                .collect(),
        }
    }
}

/// Checks a list of targets named down and makes it a set.
pub fn down_set(down: &[NodeId]) -> Result<BTreeSet<NodeId>, ManagerError> {
    if down.len() > MAX_STANDING_DOWN {
        return Err(ManagerError::Invalid(format!(
            "at most {MAX_STANDING_DOWN} targets may be named down, not {}",
            down.len()
        )));
    }
    Ok(down.iter().copied().collect())
}

impl Manager {
    /// (d) How `requester`'s `snapshot` stands with the targets in `down`
    /// unreachable (at most [`MAX_STANDING_DOWN`]): every page of
    /// [`add_standing_page`](Self::add_standing_page) summed.
    pub fn snapshot_standing(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        down: &[NodeId],
    ) -> Result<Standing, ManagerError> {
        let down = down_set(down)?;
        let mut sum = StandingSum::default();
        let mut from = 0;
        while let Some(next) = self.add_standing_page(requester, snapshot, &down, from, &mut sum)? {
            from = next;
        }
        Ok(sum.finish())
    }

    /// Adds stripes `from..from + MAX_SEQUENCE_PAGE` of `requester`'s
    /// `snapshot` to `sum`; where the next page starts, or `None` after the
    /// last. A driver that holds the state under a lock takes it per page,
    /// so a large snapshot's standing never stalls the applies for long.
    pub fn add_standing_page(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        down: &BTreeSet<NodeId>,
        from: usize,
        sum: &mut StandingSum,
    ) -> Result<Option<usize>, ManagerError> {
        let (record, sequence) = self.sequence_header(requester, snapshot)?;
        let total = record.chunks.len();
        let from = from.min(total);
        let to = from.saturating_add(MAX_SEQUENCE_PAGE).min(total);
        let up = |t: &NodeId| !down.contains(t);
        let stripes = self.current_stripes(record, &sequence, from..to)?;
        for (stripe, key) in stripes.iter().zip(&record.chunks[from..to]) {
            for entry in &stripe.packets {
                for target in &entry.targets {
                    let share = sum.targets.entry(*target).or_default();
                    share.0 += 1;
                    share.1 = share.1.saturating_add(entry.size);
                }
            }
            let redundancy = self.state.chunks.get(key).and_then(|c| c.redundancy);
            sum.health.count(classify(&stripe.packets, redundancy, up));
        }
        Ok((to < total).then_some(to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(packet: u8, target: u8) -> SequenceEntry {
        SequenceEntry {
            packet_id: PacketId([packet; 32]),
            size: 1,
            targets: vec![NodeId([target; 32])],
            generation: 0,
        }
    }

    fn stripe(n: u8, targets: &[u8]) -> Vec<SequenceEntry> {
        targets
            .iter()
            .enumerate()
            .map(|(i, t)| entry(n * 10 + i as u8, *t))
            .collect()
    }

    #[test]
    fn stripes_are_healthy_degraded_or_lost_by_what_is_up() {
        let down = [7u8, 8, 9];
        let up = |t: &NodeId| !down.contains(&t.0[0]);
        let erasure = Some(Redundancy::Erasure { k: 4, m: 2 });
        let mut h = Health::default();
        for s in [
            stripe(1, &[1, 2, 3, 4, 5, 6]),
            stripe(2, &[1, 2, 3, 4, 7, 8]),
            stripe(3, &[1, 2, 7, 8, 9, 9]),
        ] {
            h.count(classify(&s, erasure, up));
        }
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

    #[test]
    fn a_stripe_of_another_width_needs_one_copy_or_two_thirds() {
        let up = |t: &NodeId| t.0[0] == 1;
        let erasure = Some(Redundancy::Erasure { k: 4, m: 2 });
        // Three copies of one packet (replicas): one up is enough.
        let copies = vec![entry(5, 1), entry(5, 2), entry(5, 3)];
        assert_eq!(classify(&copies, erasure, up), StripeHealth::Degraded);
        assert_eq!(classify(&copies, erasure, |_| false), StripeHealth::Lost);
        // Three distinct packets: two of them must be up.
        let three = vec![entry(1, 1), entry(2, 1), entry(3, 2)];
        assert_eq!(classify(&three, erasure, up), StripeHealth::Degraded);
        let one_up = vec![entry(1, 1), entry(2, 2), entry(3, 2)];
        assert_eq!(classify(&one_up, erasure, up), StripeHealth::Lost);
    }
}
