//! The search behind placement: exact branch and bound over small rings,
//! randomised greedy with restarts and anchor sweeps over large ones, and
//! the apportioning of packets to the chosen targets and their stripes.
//!
//! Owns only pure functions over candidates; the rules and the re-check live
//! in the parent module.

use super::*;

/// Two candidates may both be targets of one backup: within the spread of
/// each other, and not one failure domain by network.
pub(super) fn compatible(a: &Candidate, b: &Candidate, spread: &DistanceRange) -> bool {
    !same_network(a.network, b.network) && spread.contains(haversine_km(&a.location, &b.location))
}

/// How many targets a placement aims for: enough to spread load, bounded.
pub(super) fn target_goal(width: usize, total_packets: u64, policy: &PlacementPolicy) -> usize {
    let by_size = total_packets.div_ceil(64) as usize;
    let cap = width * policy.max_targets_per_width.max(1);
    (by_size.min(cap))
        .max(2 * width)
        .min(total_packets as usize)
        .max(width)
}

/// Uniform in (0, 1].
pub(super) fn unit_open<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    1.0 - rng.random::<f64>()
}

/// Candidates in a random order where each comes early with probability
/// proportional to its weight (exponential keys, Efraimidis–Spirakis).
/// Lazy: popping k of n costs O(n + k log n).
pub(super) fn weighted_order<R: Rng + ?Sized>(
    cands: &[Candidate],
    rng: &mut R,
) -> BinaryHeap<Reverse<(u64, usize)>> {
    let keyed: Vec<Reverse<(u64, usize)>> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| {
            // Positive finite keys order like their bit patterns.
            let key = -unit_open(rng).ln() / c.weight.max(1.0);
            Reverse((key.to_bits(), i))
        })
        .collect();
    BinaryHeap::from(keyed)
}

/// Adds candidates while they stay compatible with everything chosen, until
/// the set is feasible and has `goal` members. The order is random, weighted
/// by free space; in `compact` mode, after the first (anchor) target, the
/// rest come by increasing distance from the anchor, which keeps a cluster
/// tight when the spread has a maximum.
pub(super) fn greedy_extend<R: Rng + ?Sized>(
    cands: &[Candidate],
    spread: &DistanceRange,
    chosen: &mut Vec<usize>,
    need: u64,
    goal: usize,
    compact: bool,
    rng: &mut R,
) -> u64 {
    let mut cap: u64 = sum_caps(chosen.iter().map(|&i| cands[i].cap));
    let mut taken: BTreeSet<usize> = chosen.iter().copied().collect();
    let mut order = weighted_order(cands, rng);
    let mut consider = |i: usize, chosen: &mut Vec<usize>, cap: &mut u64| {
        if taken.contains(&i) {
            return;
        }
        if chosen
            .iter()
            .all(|&j| compatible(&cands[i], &cands[j], spread))
        {
            chosen.push(i);
            taken.insert(i);
            *cap = cap.saturating_add(cands[i].cap);
        }
    };
    if compact {
        if chosen.is_empty()
            && let Some(Reverse((_, first))) = order.pop()
        {
            consider(first, chosen, &mut cap);
        }
        let Some(&anchor) = chosen.first() else {
            return cap;
        };
        let mut by_distance: Vec<(f64, u64, usize)> = order
            .into_iter()
            .map(|Reverse((key, i))| {
                let d = haversine_km(&cands[anchor].location, &cands[i].location);
                (d, key, i)
            })
            .collect();
        by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (_, _, i) in by_distance {
            if cap >= need && chosen.len() >= goal {
                break;
            }
            consider(i, chosen, &mut cap);
        }
        return cap;
    }
    while let Some(Reverse((_, i))) = order.pop() {
        if cap >= need && chosen.len() >= goal {
            break;
        }
        consider(i, chosen, &mut cap);
    }
    cap
}

/// Exact branch and bound over at most 64 candidates: finds a pairwise
/// compatible set whose capacity reaches `need`, or the largest-capacity one.
pub(super) fn exact_search(
    cands: &[Candidate],
    spread: &DistanceRange,
    need: u64,
    budget: u64,
) -> Found {
    let n = cands.len();
    debug_assert!(n <= 64);
    // Highest capacity first: good sets are found early, bounds bite sooner.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| (Reverse(cands[i].cap), cands[i].id));
    let mut compat = vec![0u64; n];
    for a in 0..n {
        for b in 0..n {
            if a != b && compatible(&cands[order[a]], &cands[order[b]], spread) {
                compat[a] |= 1 << b;
            }
        }
    }
    let caps: Vec<u64> = order.iter().map(|&i| cands[i].cap).collect();

    struct State<'a> {
        compat: &'a [u64],
        caps: &'a [u64],
        need: u64,
        best_cap: u64,
        best_set: u64,
        steps: u64,
        budget: u64,
    }
    fn mask_cap(caps: &[u64], mut mask: u64) -> u64 {
        let mut sum = 0;
        while mask != 0 {
            let v = mask.trailing_zeros() as usize;
            sum = caps[v].saturating_add(sum);
            mask &= mask - 1;
        }
        sum
    }
    fn dfs(s: &mut State<'_>, set: u64, set_cap: u64, allowed: u64) {
        if set_cap > s.best_cap {
            s.best_cap = set_cap;
            s.best_set = set;
        }
        if s.best_cap >= s.need || s.steps >= s.budget {
            return;
        }
        s.steps += 1;
        let mut allowed = allowed;
        while allowed != 0 {
            if set_cap.saturating_add(mask_cap(s.caps, allowed)) <= s.best_cap {
                return;
            }
            let v = allowed.trailing_zeros() as usize;
            allowed &= allowed - 1;
            dfs(
                s,
                set | (1 << v),
                set_cap.saturating_add(s.caps[v]),
                allowed & s.compat[v],
            );
            if s.best_cap >= s.need || s.steps >= s.budget {
                return;
            }
        }
    }

    let all = if n == 64 { u64::MAX } else { (1u64 << n) - 1 };
    let mut state = State {
        compat: &compat,
        caps: &caps,
        need,
        best_cap: 0,
        best_set: 0,
        steps: 0,
        budget,
    };
    dfs(&mut state, 0, 0, all);
    let feasible = state.best_cap >= need;
    let exhaustive = feasible || state.steps < state.budget;
    let mut chosen = Vec::new();
    let mut set = state.best_set;
    while set != 0 {
        let v = set.trailing_zeros() as usize;
        chosen.push(order[v]);
        set &= set - 1;
    }
    Found {
        chosen,
        cap: state.best_cap,
        feasible,
        exhaustive,
        steps: state.steps,
    }
}

/// Finds a compatible set of candidates with capacity ≥ `need`, aiming for `goal` members.
pub(super) fn search<R: Rng + ?Sized>(
    cands: &[Candidate],
    spread: &DistanceRange,
    need: u64,
    goal: usize,
    policy: &PlacementPolicy,
    rng: &mut R,
) -> Found {
    let total: u64 = sum_caps(cands.iter().map(|c| c.cap));
    if total < need {
        // Even all eligible nodes together cannot hold it.
        let mut found = if cands.len() <= policy.exact_limit.min(64) {
            exact_search(cands, spread, u64::MAX, policy.exact_step_budget)
        } else {
            greedy_best(cands, spread, need, goal, policy, rng)
        };
        found.feasible = false;
        found.exhaustive = true;
        return found;
    }
    if cands.len() <= policy.exact_limit.min(64) {
        let mut found = exact_search(cands, spread, need, policy.exact_step_budget);
        if found.feasible {
            found.cap = greedy_extend(cands, spread, &mut found.chosen, need, goal, false, rng);
        }
        return found;
    }
    greedy_best(cands, spread, need, goal, policy, rng)
}

pub(super) fn greedy_best<R: Rng + ?Sized>(
    cands: &[Candidate],
    spread: &DistanceRange,
    need: u64,
    goal: usize,
    policy: &PlacementPolicy,
    rng: &mut R,
) -> Found {
    let mut best = Found {
        chosen: Vec::new(),
        cap: 0,
        feasible: false,
        exhaustive: false,
        steps: 0,
    };
    for _ in 0..policy.restarts.max(1) {
        let mut chosen = Vec::new();
        let cap = greedy_extend(cands, spread, &mut chosen, need, goal, false, rng);
        let feasible = cap >= need;
        if feasible || cap > best.cap || (cap == best.cap && chosen.len() > best.chosen.len()) {
            best = Found {
                chosen,
                cap,
                feasible,
                exhaustive: false,
                steps: 0,
            };
        }
        if feasible {
            return best;
        }
    }
    if spread.max_km.is_some() {
        let swept = anchor_sweep(cands, spread, need, goal, policy, rng);
        if swept.feasible || swept.cap > best.cap {
            return swept;
        }
        best.exhaustive = swept.exhaustive;
    }
    best
}

/// Exact search for a bounded spread on a ring too large for one bitset.
/// Every solution lies within the spread of each of its members, so it is
/// found by an exact search of the neighbourhood of any member ("anchor").
/// Anchors are taken in random order weighted by free space; a finished
/// anchor is left out of later neighbourhoods (its sets were all explored).
/// Neighbourhoods keep one node per location when the spread has a positive
/// minimum (co-located nodes can never be together; the roomiest is kept).
/// When no neighbourhood had to be cut to 63 nodes and the step budget held,
/// the sweep is exhaustive and a refusal is a proof.
pub(super) fn anchor_sweep<R: Rng + ?Sized>(
    cands: &[Candidate],
    spread: &DistanceRange,
    need: u64,
    goal: usize,
    policy: &PlacementPolicy,
    rng: &mut R,
) -> Found {
    let n = cands.len();
    let dedup = spread.min_km.is_some_and(|m| m > 0.0);
    let mut order = weighted_order(cands, rng);
    let mut done = vec![false; n];
    let mut budget = policy.exact_step_budget;
    let mut best = Found {
        chosen: Vec::new(),
        cap: 0,
        feasible: false,
        exhaustive: true,
        steps: 0,
    };
    while let Some(Reverse((_, anchor))) = order.pop() {
        // Scanning the ring costs about n/16 steps' worth of work.
        let scan = (n as u64 / 16).max(1);
        if budget < scan {
            best.exhaustive = false;
            break;
        }
        budget -= scan;
        let mut neighbours: Vec<usize> = Vec::new();
        let mut by_location: BTreeMap<(u64, u64), usize> = BTreeMap::new();
        for i in 0..n {
            if i == anchor || done[i] || !compatible(&cands[anchor], &cands[i], spread) {
                continue;
            }
            if dedup {
                let key = (
                    cands[i].location.lat.to_bits(),
                    cands[i].location.lon.to_bits(),
                );
                let slot = by_location.entry(key).or_insert(i);
                if (cands[i].cap, Reverse(cands[i].id))
                    > (cands[*slot].cap, Reverse(cands[*slot].id))
                {
                    *slot = i;
                }
            } else {
                neighbours.push(i);
            }
        }
        if dedup {
            neighbours = by_location.into_values().collect();
        }
        let own: u64 = sum_caps(
            std::iter::once(cands[anchor].cap).chain(neighbours.iter().map(|&i| cands[i].cap)),
        );
        done[anchor] = true;
        if own < need && own <= best.cap {
            continue;
        }
        if neighbours.len() > 63 {
            // Keep the nearest: compact clusters are likeliest to fit a maximum spread.
            neighbours.sort_by(|&a, &b| {
                let da = haversine_km(&cands[anchor].location, &cands[a].location);
                let db = haversine_km(&cands[anchor].location, &cands[b].location);
                da.total_cmp(&db).then(a.cmp(&b))
            });
            neighbours.truncate(63);
            best.exhaustive = false;
        }
        let mut local = vec![anchor];
        local.extend(neighbours);
        let sub: Vec<Candidate> = local.iter().map(|&i| cands[i].clone()).collect();
        let found = exact_search(&sub, spread, need, budget);
        budget = budget.saturating_sub(found.steps);
        if !found.exhaustive {
            best.exhaustive = false;
        }
        if found.cap > best.cap {
            best.cap = found.cap;
            best.chosen = found.chosen.iter().map(|&j| local[j]).collect();
        }
        if found.feasible {
            best.feasible = true;
            best.exhaustive = true;
            best.cap = greedy_extend(cands, spread, &mut best.chosen, need, goal, true, rng);
            return best;
        }
    }
    best
}

/// Splits `total` packets over targets in proportion to their weight, never
/// above a target's cap (water-filling, then largest remainders).
/// Requires Σ caps ≥ total.
pub(super) fn apportion(caps: &[u64], weights: &[f64], total: u64) -> Vec<u64> {
    let n = caps.len();
    let mut counts = vec![0u64; n];
    let mut fixed = vec![false; n];
    let mut remaining = total;
    let mut shares = vec![0f64; n];
    loop {
        let active_weight: f64 = (0..n).filter(|&i| !fixed[i]).map(|i| weights[i]).sum();
        if active_weight <= 0.0 {
            break;
        }
        let mut capped_any = false;
        for i in 0..n {
            if fixed[i] {
                continue;
            }
            shares[i] = remaining as f64 * weights[i] / active_weight;
            if shares[i] >= caps[i] as f64 {
                fixed[i] = true;
                counts[i] = caps[i];
                remaining = remaining.saturating_sub(caps[i]);
                capped_any = true;
            }
        }
        if !capped_any {
            break;
        }
    }
    for i in 0..n {
        if !fixed[i] {
            counts[i] = (shares[i].floor() as u64).min(caps[i]);
        }
    }
    let mut assigned: u64 = counts.iter().sum();
    // Largest fractional remainder first, ties by index: deterministic.
    let mut by_fraction: Vec<usize> = (0..n).filter(|&i| !fixed[i]).collect();
    by_fraction.sort_by(|&a, &b| {
        let fa = shares[a] - shares[a].floor();
        let fb = shares[b] - shares[b].floor();
        fb.total_cmp(&fa).then(a.cmp(&b))
    });
    for &i in by_fraction.iter().cycle().take(by_fraction.len() * 2) {
        if assigned >= total {
            break;
        }
        if counts[i] < caps[i] {
            counts[i] += 1;
            assigned += 1;
        }
    }
    // Rounding can leave a few packets over; any target with room takes them.
    for i in 0..n {
        while assigned < total && counts[i] < caps[i] {
            counts[i] += 1;
            assigned += 1;
        }
    }
    counts
}

/// Lays out per-target packet counts (each ≤ stripes, summing to stripes × width)
/// so that every stripe gets `width` distinct targets: the targets' runs are
/// concatenated and position p goes to stripe p mod stripes. A run never
/// exceeds `stripes`, so it never visits a stripe twice.
pub(super) fn lay_out(
    targets: &[NodeId],
    counts: &[u64],
    stripes: usize,
    width: usize,
) -> Vec<Vec<NodeId>> {
    let mut layout = vec![Vec::with_capacity(width); stripes];
    let mut position = 0usize;
    for (target, &count) in targets.iter().zip(counts) {
        for _ in 0..count {
            layout[position % stripes].push(*target);
            position += 1;
        }
    }
    layout
}

/// The sum of packet capacities, saturating: a node's capacity derives from
/// what it announces, and no announced figure may overflow a sum.
pub(super) fn sum_caps(caps: impl IntoIterator<Item = u64>) -> u64 {
    caps.into_iter().fold(0u64, u64::saturating_add)
}
