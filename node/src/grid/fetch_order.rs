//! Restore order by measured speed: a pure scorer fed with the fetches a
//! restore observes (which target, how many bytes, how long, success or
//! failure) that ranks a stripe's packets so the K needed come from the
//! targets answering fastest.
//!
//! Owns the policy: [`FetchOrder`] performs no I/O and reads no clock
//! (callers pass durations); [`Observed`] is the thin stateful adapter the
//! restore's packet source calls around each fetch (it times fetches and
//! learns each stripe width's K from the packet headers it sees, so parity
//! shares are known as such). The number of stripes in flight stays bounded
//! by the pipeline's restore step.
//!
//! The expected cost of the next fetch from a target is
//! `max(rtt + bytes / throughput, waiting) × (1 + in_flight)`, where `rtt`
//! and `throughput` are exponentially weighted averages of what that target
//! showed during this restore (`rtt` from the fetches' durations minus the
//! time their bytes needed at the observed throughput, floored at zero),
//! `waiting` is how long its oldest unanswered fetch has waited (a target
//! that does not answer is slow before any answer says so), and `in_flight`
//! counts its unanswered fetches, which spreads load over equally fast
//! targets. A measurement ages: per fetch answered by others, a target's
//! distance above the fastest shrinks by [`AGING`], so one hiccup does not
//! exclude a target for the whole restore. A target not yet measured counts
//! as the fastest one known (so every target gets tried); a target that
//! failed is ranked after every working one. Parity shares cost a decode, so
//! a parity packet is chosen over a data packet only when its target is
//! clearly faster ([`PARITY_PENALTY`]). The decoder asks for the order
//! again before each fetch, so what other stripes' fetches showed meanwhile
//! counts.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use strew_coordinator::{NodeId, PacketId};

use crate::pipeline::packet;

/// Weight of the newest observation in the moving averages.
const ALPHA: f64 = 0.5;
/// Per fetch answered by other targets, how much of a target's distance
/// above the fastest one remains: a target measured slow once (a hiccup) is
/// tried again after a while instead of never.
pub const AGING: f64 = 0.9;
/// Extra relative cost of a parity share (it needs an erasure decode).
pub const PARITY_PENALTY: f64 = 0.25;
/// Expected seconds of a fetch while no target has been measured yet: only
/// its product with the fetches in flight matters (it spreads the first
/// fetches over the targets).
const FIRST_GUESS_SECS: f64 = 0.01;
/// Throughput below which a measurement is treated as this floor (bytes/s),
/// so a zero-length or instant fetch never divides by zero.
const MIN_THROUGHPUT: f64 = 1.0;

/// What one target showed so far during a restore.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TargetSpeed {
    /// Moving average of the per-fetch latency in seconds.
    pub rtt_secs: f64,
    /// Moving average of bytes per second while transferring.
    pub throughput: f64,
    pub fetches: u64,
    pub failures: u64,
    pub in_flight: u32,
    /// The restore's count of answered fetches when this target last answered.
    pub seen_at: u64,
    /// How long its oldest unanswered fetch has been waiting: a target
    /// never expected to answer faster than that.
    pub waiting_secs: f64,
}

impl TargetSpeed {
    fn measured(&self) -> bool {
        self.fetches > 0
    }

    /// Expected seconds for `bytes` from what was measured alone.
    fn raw_secs(&self, bytes: u64) -> f64 {
        self.rtt_secs + bytes as f64 / self.throughput.max(MIN_THROUGHPUT)
    }
}

/// The scorer: observations in, orders out.
#[derive(Debug, Clone, Default)]
pub struct FetchOrder {
    targets: HashMap<NodeId, TargetSpeed>,
    /// Fetches answered so far.
    clock: u64,
}

/// One candidate for a share of a stripe: its position in the stripe, the
/// targets holding it, and whether it is a parity share.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub position: usize,
    pub targets: &'a [NodeId],
    pub parity: bool,
}

impl FetchOrder {
    pub fn new() -> Self {
        FetchOrder::default()
    }

    /// A fetch to `target` starts.
    pub fn started(&mut self, target: NodeId) {
        self.targets.entry(target).or_default().in_flight += 1;
    }

    /// A fetch to `target` of `bytes` finished after `elapsed`.
    pub fn succeeded(&mut self, target: NodeId, bytes: u64, elapsed: Duration) {
        self.clock += 1;
        let clock = self.clock;
        let t = self.targets.entry(target).or_default();
        t.in_flight = t.in_flight.saturating_sub(1);
        let secs = elapsed.as_secs_f64();
        let sample_throughput = (bytes as f64 / secs.max(1e-9)).max(MIN_THROUGHPUT);
        if t.measured() {
            t.throughput += ALPHA * (sample_throughput - t.throughput);
            // The part of this fetch its bytes do not explain at the
            // (smoothed) throughput is latency.
            let sample_rtt = (secs - bytes as f64 / t.throughput).max(0.0);
            t.rtt_secs += ALPHA * (sample_rtt - t.rtt_secs);
        } else {
            t.throughput = sample_throughput;
            t.rtt_secs = 0.0;
        }
        t.fetches += 1;
        t.seen_at = clock;
    }

    /// The oldest fetch to `target` still unanswered has waited `waited`
    /// (zero when none is).
    pub fn waiting(&mut self, target: NodeId, waited: Duration) {
        self.targets.entry(target).or_default().waiting_secs = waited.as_secs_f64();
    }

    /// A fetch to `target` failed (down, refused, wrong bytes).
    pub fn failed(&mut self, target: NodeId) {
        let t = self.targets.entry(target).or_default();
        t.in_flight = t.in_flight.saturating_sub(1);
        t.failures += 1;
    }

    /// What `target` showed so far.
    pub fn speed(&self, target: &NodeId) -> TargetSpeed {
        self.targets.get(target).copied().unwrap_or_default()
    }

    /// Whether `target` failed during this restore.
    pub fn has_failed(&self, target: &NodeId) -> bool {
        self.targets.get(target).is_some_and(|t| t.failures > 0)
    }

    /// Expected seconds for the next fetch of `bytes` from `target`; `None`
    /// for a target that failed. An unmeasured target gets the best
    /// expectation among the measured ones ([`FIRST_GUESS_SECS`] when none is).
    pub fn expected_secs(&self, target: &NodeId, bytes: u64) -> Option<f64> {
        let t = self.speed(target);
        if t.failures > 0 {
            return None;
        }
        let best = self
            .targets
            .values()
            .filter(|o| o.measured() && o.failures == 0)
            .map(|o| o.raw_secs(bytes))
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
        let base = match best {
            Some(best) if t.measured() => {
                let stale = self.clock.saturating_sub(t.seen_at);
                let age = AGING.powi(i32::try_from(stale).unwrap_or(i32::MAX));
                best + (t.raw_secs(bytes) - best) * age
            }
            Some(best) => best,
            None => FIRST_GUESS_SECS,
        }
        .max(t.waiting_secs);
        Some(base * (1.0 + f64::from(t.in_flight)))
    }

    /// `targets` from fastest expected to slowest, failed ones last (kept,
    /// in their given order, as a last resort).
    pub fn rank_targets(&self, targets: &[NodeId], bytes: u64) -> Vec<NodeId> {
        let mut scored: Vec<(usize, Option<f64>, NodeId)> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| (i, self.expected_secs(t, bytes), *t))
            .collect();
        scored.sort_by(|a, b| cmp_cost(a.1, b.1).then(a.0.cmp(&b.0)));
        scored.into_iter().map(|(_, _, t)| t).collect()
    }

    /// The order in which to try a stripe's shares: by the expected cost of
    /// each share's best target (parity shares penalised), ties kept in
    /// stripe order (data shares first). Returns positions.
    pub fn rank_shares(&self, shares: &[Candidate<'_>], bytes: u64) -> Vec<usize> {
        let mut scored: Vec<(usize, Option<f64>)> = shares
            .iter()
            .map(|c| {
                let best = c
                    .targets
                    .iter()
                    .filter_map(|t| self.expected_secs(t, bytes))
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))));
                let cost = best.map(|s| {
                    if c.parity {
                        s * (1.0 + PARITY_PENALTY)
                    } else {
                        s
                    }
                });
                (c.position, cost)
            })
            .collect();
        scored.sort_by(|a, b| cmp_cost(a.1, b.1).then(a.0.cmp(&b.0)));
        scored.into_iter().map(|(p, _)| p).collect()
    }
}

/// Packet size assumed before any packet was fetched (the pipeline's
/// packets are at most a few MiB; only the ratio between targets matters).
const DEFAULT_PACKET_BYTES: u64 = 1 << 20;

/// The restore side of the scorer: times fetches, remembers the packet size
/// and each stripe width's K, and answers orders.
#[derive(Debug, Default)]
pub struct Observed {
    order: FetchOrder,
    /// Stripe width (K + M) → K, from the headers of fetched packets.
    k_by_width: HashMap<usize, usize>,
    /// Moving average of fetched packet sizes.
    packet_bytes: Option<f64>,
    /// When each unanswered fetch began, per target.
    pending: HashMap<NodeId, Vec<Instant>>,
}

impl Observed {
    fn bytes(&self) -> u64 {
        self.packet_bytes.map_or(DEFAULT_PACKET_BYTES, |b| b as u64)
    }

    /// Positions of a stripe's `packets` to try, fastest first (`targets`
    /// says where each packet is; a packet with no known target goes last).
    pub fn order(
        &self,
        packets: &[PacketId],
        targets: &HashMap<PacketId, Vec<NodeId>>,
    ) -> Vec<usize> {
        let k = self.k_by_width.get(&packets.len()).copied();
        let candidates: Vec<Candidate<'_>> = packets
            .iter()
            .enumerate()
            .map(|(position, id)| Candidate {
                position,
                targets: targets.get(id).map_or(&[][..], Vec::as_slice),
                parity: k.is_some_and(|k| position >= k),
            })
            .collect();
        self.order.rank_shares(&candidates, self.bytes())
    }

    /// The targets holding a packet, fastest first.
    pub fn targets_for(&mut self, targets: &[NodeId]) -> Vec<NodeId> {
        self.tell_waits();
        self.order.rank_targets(targets, self.bytes())
    }

    /// A fetch from `target` begins; `None` when that target already failed
    /// during this restore (it is skipped).
    pub fn start(&mut self, target: NodeId) -> Option<Instant> {
        if self.order.has_failed(&target) {
            return None;
        }
        self.order.started(target);
        let now = Instant::now();
        self.pending.entry(target).or_default().push(now);
        Some(now)
    }

    /// Tells the scorer how long each target's oldest open fetch has waited.
    fn tell_waits(&mut self) {
        let now = Instant::now();
        for (target, starts) in &self.pending {
            let oldest = starts.iter().min().map_or(Duration::ZERO, |t| now - *t);
            self.order.waiting(*target, oldest);
        }
    }

    /// A fetch begun at `started` ended with `bytes` (`None`: it failed).
    pub fn finish(&mut self, target: NodeId, started: Instant, bytes: Option<&[u8]>) {
        if let Some(starts) = self.pending.get_mut(&target) {
            if let Some(i) = starts.iter().position(|t| *t == started) {
                starts.swap_remove(i);
            }
            if starts.is_empty() {
                self.pending.remove(&target);
                self.order.waiting(target, Duration::ZERO);
            }
        }
        let Some(bytes) = bytes else {
            self.order.failed(target);
            return;
        };
        self.order
            .succeeded(target, bytes.len() as u64, started.elapsed());
        let len = bytes.len() as f64;
        self.packet_bytes = Some(self.packet_bytes.map_or(len, |b| b + ALPHA * (len - b)));
        // Unverified bytes only steer the order; the decoder checks them.
        if let Ok((header, _)) = packet::decode_packet(bytes) {
            let width = usize::from(header.k) + usize::from(header.m);
            self.k_by_width.insert(width, usize::from(header.k));
        }
    }

    /// What each target showed during this restore.
    pub fn speeds(&self) -> impl Iterator<Item = (&NodeId, &TargetSpeed)> {
        self.order.targets.iter()
    }
}

/// Known costs before unknown (failed) ones; NaN-free by construction.
fn cmp_cost(a: Option<f64>, b: Option<f64>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(x), Some(y)) => x.total_cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(b: u8) -> NodeId {
        NodeId([b; 32])
    }

    const MIB: u64 = 1 << 20;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn unmeasured_targets_keep_stripe_order_with_data_first() {
        let order = FetchOrder::new();
        let (a, b, c) = ([node(1)], [node(2)], [node(3)]);
        let shares = [
            Candidate {
                position: 0,
                targets: &a,
                parity: false,
            },
            Candidate {
                position: 1,
                targets: &b,
                parity: false,
            },
            Candidate {
                position: 2,
                targets: &c,
                parity: true,
            },
        ];
        assert_eq!(order.rank_shares(&shares, MIB), vec![0, 1, 2]);
    }

    #[test]
    fn a_slow_target_is_asked_last_and_a_fast_parity_share_replaces_it() {
        let mut order = FetchOrder::new();
        for (n, elapsed) in [(1, 10), (2, 400), (3, 10)] {
            order.started(node(n));
            order.succeeded(node(n), MIB, ms(elapsed));
        }
        let (a, b, c) = ([node(1)], [node(2)], [node(3)]);
        let shares = [
            Candidate {
                position: 0,
                targets: &a,
                parity: false,
            },
            Candidate {
                position: 1,
                targets: &b,
                parity: false,
            },
            Candidate {
                position: 2,
                targets: &c,
                parity: true,
            },
        ];
        // K = 2: positions 0 and 2 come first; the slow data share is last.
        assert_eq!(order.rank_shares(&shares, MIB), vec![0, 2, 1]);
    }

    #[test]
    fn parity_is_not_chosen_over_an_equally_fast_data_share() {
        let mut order = FetchOrder::new();
        for n in [1, 2] {
            order.started(node(n));
            order.succeeded(node(n), MIB, ms(10));
        }
        let (a, b) = ([node(1)], [node(2)]);
        let shares = [
            Candidate {
                position: 1,
                targets: &a,
                parity: true,
            },
            Candidate {
                position: 0,
                targets: &b,
                parity: false,
            },
        ];
        assert_eq!(order.rank_shares(&shares, MIB), vec![0, 1]);
    }

    #[test]
    fn failed_targets_rank_after_every_working_one_even_slow_ones() {
        let mut order = FetchOrder::new();
        order.started(node(1));
        order.failed(node(1));
        order.started(node(2));
        order.succeeded(node(2), MIB, Duration::from_secs(5));
        order.succeeded(node(4), MIB, ms(10));
        assert!(order.has_failed(&node(1)));
        assert_eq!(order.expected_secs(&node(1), MIB), None);
        assert_eq!(
            order.rank_targets(&[node(1), node(2), node(3), node(4)], MIB),
            vec![node(3), node(4), node(2), node(1)],
            "unmeasured as fast as the fastest, then the slow one, the failed one last"
        );
    }

    #[test]
    fn fetches_in_flight_spread_load_over_equally_fast_targets() {
        let mut order = FetchOrder::new();
        for n in [1, 2] {
            order.started(node(n));
            order.succeeded(node(n), MIB, ms(20));
        }
        order.started(node(1));
        order.started(node(1));
        assert_eq!(
            order.rank_targets(&[node(1), node(2)], MIB),
            vec![node(2), node(1)]
        );
        assert_eq!(order.speed(&node(1)).in_flight, 2);
    }

    #[test]
    fn latency_and_throughput_are_told_apart() {
        let mut order = FetchOrder::new();
        // Target 1: 1 MiB in 10 ms, then 64 KiB in 10 ms: high latency.
        // Target 2: 1 MiB in 20 ms, then 64 KiB in ~1.25 ms: pure bandwidth.
        order.succeeded(node(1), MIB, ms(10));
        order.succeeded(node(1), 64 << 10, ms(10));
        order.succeeded(node(2), MIB, ms(20));
        order.succeeded(node(2), 64 << 10, Duration::from_micros(1250));
        let s1 = order.speed(&node(1));
        let s2 = order.speed(&node(2));
        assert!(s1.rtt_secs > s2.rtt_secs, "{s1:?} vs {s2:?}");
        // Small packets: the low-latency target wins.
        assert_eq!(
            order.rank_targets(&[node(1), node(2)], 4 << 10),
            vec![node(2), node(1)]
        );
        assert_eq!(s1.fetches, 2);
    }

    #[test]
    fn a_slow_start_is_forgiven_as_the_target_speeds_up() {
        let mut order = FetchOrder::new();
        order.succeeded(node(1), MIB, ms(300));
        order.succeeded(node(2), MIB, ms(50));
        assert_eq!(
            order.rank_targets(&[node(1), node(2)], MIB),
            vec![node(2), node(1)]
        );
        for _ in 0..20 {
            order.succeeded(node(1), MIB, ms(5));
        }
        assert_eq!(
            order.rank_targets(&[node(1), node(2)], MIB),
            vec![node(1), node(2)]
        );
    }

    #[test]
    fn an_unanswered_fetch_makes_a_target_slow_before_it_answers() {
        let mut order = FetchOrder::new();
        order.succeeded(node(1), MIB, ms(10));
        // Unmeasured and idle: as fast as the fastest.
        assert_eq!(
            order.rank_targets(&[node(2), node(1)], MIB),
            vec![node(2), node(1)]
        );
        order.started(node(2));
        order.waiting(node(2), ms(500));
        assert_eq!(
            order.rank_targets(&[node(2), node(1)], MIB),
            vec![node(1), node(2)]
        );
        order.waiting(node(2), Duration::ZERO);
        order.succeeded(node(2), MIB, ms(10));
        assert_eq!(order.speed(&node(2)).in_flight, 0);
        assert_eq!(
            order.rank_targets(&[node(2), node(1)], MIB),
            vec![node(2), node(1)]
        );
    }

    #[test]
    fn a_hiccup_ages_away_as_other_targets_answer() {
        let mut order = FetchOrder::new();
        order.succeeded(node(1), MIB, ms(10));
        order.succeeded(node(2), MIB, ms(100));
        let first = order.expected_secs(&node(2), MIB).expect("working");
        for _ in 0..20 {
            order.succeeded(node(1), MIB, ms(10));
        }
        let later = order.expected_secs(&node(2), MIB).expect("working");
        let best = order.expected_secs(&node(1), MIB).expect("working");
        assert!(later < first, "{later} !< {first}");
        // 0.9^20 ≈ 0.12 of the distance is left.
        assert!(
            later - best < 0.15 * (first - best),
            "{later} {best} {first}"
        );
        assert!(later > best);
    }

    #[test]
    fn instant_and_empty_fetches_stay_finite() {
        let mut order = FetchOrder::new();
        order.succeeded(node(1), 0, Duration::ZERO);
        order.succeeded(node(1), MIB, Duration::ZERO);
        let e = order.expected_secs(&node(1), MIB);
        assert!(e.is_some_and(f64::is_finite), "{e:?}");
    }
}
