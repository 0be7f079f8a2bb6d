//! Placement: choosing the targets of a backup under geographic distance
//! constraints, and assigning every packet of every stripe to one of them.
//!
//! Owns [`PlacementRequest`], [`Placement`], [`PlacementRefusal`], the search
//! ([`place`], [`place_replacements`]) and the independent constraint check
//! ([`Placement::check`]). The rules (SPEC R3): every target lies within the
//! backup distance of the source; every two distinct targets of the backup lie
//! within the packet spread of each other; the W packets of a stripe sit on W
//! distinct targets; no target receives more than its free storage; offline
//! and overloaded nodes are never chosen; load follows free capacity.
//!
//! Finding a large enough pairwise-compatible set is a clique-like problem.
//! Rings of at most [`PlacementPolicy::exact_limit`] eligible nodes are
//! searched exactly (branch and bound over bitsets), so on small grids a
//! refusal is a proof; larger rings use a randomised greedy weighted by free
//! capacity with restarts. Whatever the search, the result is re-checked
//! before it is returned: constraints are never silently violated.
//! See `docs/placement.md` for the argument.
//!
//! This module must not mutate the grid view (the caller books capacity once
//! the decision is committed), read clocks, or draw randomness from anywhere
//! but the RNG it is given.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

use rand::seq::SliceRandom;
use rand::{Rng, RngExt};
use serde::{Deserialize, Serialize};

use crate::grid::{GridView, NodeProfile};
use crate::ids::NodeId;
use crate::units::{DistanceRange, GeoPoint, Redundancy, format_km, format_size, haversine_km};

/// What to place: the source, its constraints, its redundancy and its size.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementRequest {
    pub source: GeoPoint,
    /// The source node itself, never chosen as a target of its own backup.
    pub source_node: Option<NodeId>,
    /// Source → each target.
    pub backup_distance: DistanceRange,
    /// Between every two distinct targets of the backup.
    pub spread: DistanceRange,
    pub redundancy: Redundancy,
    /// Number of stripes; each has `redundancy.width()` packets.
    pub stripes: u32,
    /// Bytes of the largest packet (every packet is booked at this size).
    pub packet_size: u64,
}

impl PlacementRequest {
    /// Total packets to place: stripes × width.
    pub fn total_packets(&self) -> u64 {
        self.stripes as u64 * self.redundancy.width() as u64
    }
}

/// Tuning of the search. The defaults are what the node and the simulator use.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementPolicy {
    /// Nodes whose load is above this are overloaded and never chosen.
    pub max_load: f32,
    /// Rings with at most this many eligible nodes are searched exactly (≤ 64).
    pub exact_limit: usize,
    /// Greedy restarts on larger rings before refusing.
    pub restarts: u32,
    /// Branch-and-bound steps before the exact search gives up being exact.
    pub exact_step_budget: u64,
    /// Upper bound on the number of targets the placement aims for, as a
    /// multiple of the stripe width (more targets spread load; fewer keep
    /// the ticket traffic small).
    pub max_targets_per_width: usize,
    /// Grids with more online nodes than this first try a uniform random
    /// sample of the ring instead of enumerating it (cost independent of grid size).
    pub sample_above: usize,
    /// Size of that sample, as a multiple of the target goal (at least 32 nodes).
    pub pool_per_goal: usize,
    /// Random draws allowed per sample slot before falling back to enumeration.
    pub draws_per_slot: usize,
    /// Whether a refusal searches for advice (which bound to relax by how
    /// much). Costs extra searches; simulators placing millions of times may
    /// turn it off and keep only the facts.
    pub advise: bool,
}

impl Default for PlacementPolicy {
    fn default() -> Self {
        PlacementPolicy {
            max_load: 0.9,
            exact_limit: 40,
            restarts: 8,
            exact_step_budget: 4_000_000,
            max_targets_per_width: 8,
            sample_above: 2_000,
            pool_per_goal: 4,
            draws_per_slot: 16,
            advise: true,
        }
    }
}

/// A placement decision: the targets, and the target of every packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// Distinct targets, sorted by `NodeId`.
    pub targets: Vec<NodeId>,
    /// `stripes[i][j]` is the target of packet `j` of stripe `i`.
    pub stripes: Vec<Vec<NodeId>>,
}

impl Placement {
    /// Packets each target receives.
    pub fn packets_per_target(&self) -> BTreeMap<NodeId, u64> {
        let mut counts = BTreeMap::new();
        for stripe in &self.stripes {
            for target in stripe {
                *counts.entry(*target).or_insert(0) += 1;
            }
        }
        counts
    }

    /// Re-checks every rule of the request against the view. Used on every
    /// result before it leaves this module; callers may use it too.
    pub fn check(&self, view: &GridView, req: &PlacementRequest) -> Result<(), String> {
        if self.stripes.len() != req.stripes as usize {
            return Err(format!(
                "{} stripes placed, {} requested",
                self.stripes.len(),
                req.stripes
            ));
        }
        let listed: BTreeSet<NodeId> = self.targets.iter().copied().collect();
        if listed.len() != self.targets.len() {
            return Err("a target is listed twice".into());
        }
        for (i, stripe) in self.stripes.iter().enumerate() {
            let distinct: BTreeSet<&NodeId> = stripe.iter().collect();
            if stripe.len() != req.redundancy.width() || distinct.len() != stripe.len() {
                return Err(format!(
                    "stripe {i} is not on {} distinct targets",
                    stripe.len()
                ));
            }
            if let Some(stray) = stripe.iter().find(|t| !listed.contains(t)) {
                return Err(format!("stripe {i} uses unlisted target {stray}"));
            }
        }
        let counts = self.packets_per_target();
        let mut profiles = Vec::with_capacity(self.targets.len());
        for target in &self.targets {
            let profile = view
                .get(target)
                .ok_or_else(|| format!("target {target} is not in the grid view"))?;
            target_is_usable(profile, req, counts.get(target).copied().unwrap_or(0))?;
            profiles.push(profile);
        }
        check_pairwise(&profiles, &req.spread)
    }
}

fn target_is_usable(
    profile: &NodeProfile,
    req: &PlacementRequest,
    packets: u64,
) -> Result<(), String> {
    let id = profile.node_id;
    if Some(id) == req.source_node {
        return Err(format!("target {id} is the source itself"));
    }
    if !profile.online {
        return Err(format!("target {id} is offline"));
    }
    let d = haversine_km(&req.source, &profile.location);
    if !req.backup_distance.contains(d) {
        return Err(format!(
            "target {id} is {d:.1} km from the source, outside {}",
            req.backup_distance
        ));
    }
    if packets.saturating_mul(req.packet_size) > profile.storage_free {
        return Err(format!("target {id} gets more than its free storage"));
    }
    Ok(())
}

fn check_pairwise(profiles: &[&NodeProfile], spread: &DistanceRange) -> Result<(), String> {
    for (i, a) in profiles.iter().enumerate() {
        for b in &profiles[i + 1..] {
            let d = haversine_km(&a.location, &b.location);
            if !spread.contains(d) {
                return Err(format!(
                    "targets {} and {} are {d:.1} km apart, outside the spread {spread}",
                    a.node_id, b.node_id
                ));
            }
        }
    }
    Ok(())
}

/// Why a placement was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// The request itself is malformed (zero sizes, bad ranges or redundancy).
    InvalidRequest,
    /// Fewer eligible nodes in the backup ring than packets per stripe need.
    TooFewInRing,
    /// Enough nodes in the ring, but no large enough set of them is pairwise within the spread.
    SpreadTooStrict,
    /// A compatible set exists but cannot hold all the packets.
    NotEnoughCapacity,
}

/// A refused placement: the facts and a sentence a person can act on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementRefusal {
    pub reason: RefusalReason,
    /// Online nodes within the backup distance of the source.
    pub ring_nodes: usize,
    /// Of those, the ones not overloaded and with room for at least one packet.
    pub eligible_nodes: usize,
    /// Distinct targets one stripe needs (or replacements asked for).
    pub needed_targets: usize,
    /// The largest pairwise-compatible set of eligible nodes found.
    pub largest_compatible: usize,
    /// Packets that set could hold, against the packets needed.
    pub capacity_packets: u64,
    pub needed_packets: u64,
    /// True when the search was exhaustive, so the refusal is a proof.
    pub exhaustive: bool,
    /// What to change: which bound to relax and by how much.
    pub advice: String,
}

impl fmt::Display for PlacementRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.advice)
    }
}

impl std::error::Error for PlacementRefusal {}

/// One eligible node, as the search sees it.
#[derive(Clone, Debug)]
struct Candidate {
    id: NodeId,
    location: GeoPoint,
    /// Packets this node can take in this request.
    cap: u64,
    /// Free bytes: the load-balancing weight.
    weight: f64,
}

/// What a search found: the chosen candidates (indices) and whether it is enough.
struct Found {
    chosen: Vec<usize>,
    cap: u64,
    feasible: bool,
    exhaustive: bool,
    /// Branch-and-bound steps spent (exact searches only).
    steps: u64,
}

fn invalid(req_width: usize, advice: String) -> PlacementRefusal {
    PlacementRefusal {
        reason: RefusalReason::InvalidRequest,
        ring_nodes: 0,
        eligible_nodes: 0,
        needed_targets: req_width,
        largest_compatible: 0,
        capacity_packets: 0,
        needed_packets: 0,
        exhaustive: true,
        advice,
    }
}

fn validate(req: &PlacementRequest) -> Result<(), PlacementRefusal> {
    let width = req.redundancy.width();
    if let Err(e) = req.redundancy.validate() {
        return Err(invalid(width, e.to_string()));
    }
    if let Err(e) = req.source.validate() {
        return Err(invalid(width, format!("source location: {e}")));
    }
    for (name, range) in [
        ("backup distance", &req.backup_distance),
        ("spread", &req.spread),
    ] {
        if let Err(e) = range.validate() {
            return Err(invalid(width, format!("{name}: {e}")));
        }
    }
    if req.packet_size == 0 {
        return Err(invalid(
            width,
            "packet size must be at least one byte".into(),
        ));
    }
    Ok(())
}

/// A node as a candidate for `req`, if it is eligible: not the source,
/// online, not overloaded, with room for at least one packet.
fn candidate(
    p: &NodeProfile,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    per_target_max: u64,
) -> Option<Candidate> {
    if Some(p.node_id) == req.source_node || !p.online || p.load > policy.max_load {
        return None;
    }
    let cap = (p.storage_free / req.packet_size).min(per_target_max);
    (cap > 0).then_some(Candidate {
        id: p.node_id,
        location: p.location,
        cap,
        weight: p.storage_free as f64,
    })
}

/// Extra admission rule (replacements: not a survivor, compatible with the backup).
type Accept<'a> = &'a dyn Fn(&Candidate) -> bool;

/// The eligible nodes of the whole backup ring, and the ring's online population.
fn candidates(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    per_target_max: u64,
    accept: Accept<'_>,
) -> (Vec<Candidate>, usize) {
    let ring = view.ring_with_distances(&req.source, &req.backup_distance);
    let ring_nodes = ring.len();
    let cands = ring
        .into_iter()
        .filter_map(|(p, _)| candidate(p, req, policy, per_target_max))
        .filter(|c| accept(c))
        .collect();
    (cands, ring_nodes)
}

/// A uniform random sample of eligible ring nodes, drawn from the online
/// list without enumerating the ring: O(pool × draws) whatever the grid size.
fn sample_pool<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    per_target_max: u64,
    pool_size: usize,
    accept: Accept<'_>,
    rng: &mut R,
) -> Vec<Candidate> {
    let online = view.online_len();
    let mut pool = Vec::with_capacity(pool_size);
    if online == 0 {
        return pool;
    }
    let mut seen = BTreeSet::new();
    for _ in 0..pool_size.saturating_mul(policy.draws_per_slot) {
        if pool.len() >= pool_size {
            break;
        }
        let Some((id, location)) = view.online_location_at(rng.random_range(0..online)) else {
            continue;
        };
        if !req
            .backup_distance
            .contains(haversine_km(&req.source, &location))
            || !seen.insert(id)
        {
            continue;
        }
        if let Some(c) = view
            .get(&id)
            .and_then(|p| candidate(p, req, policy, per_target_max))
            .filter(|c| accept(c))
        {
            pool.push(c);
        }
    }
    pool
}

/// The search result and the candidates it indexes into; on failure also the
/// ring's online population, for the explanation.
enum Choice {
    Found(Vec<Candidate>, Found),
    Refused(Vec<Candidate>, usize, Found),
}

/// Tries a random sample of the ring first (on large grids), then the whole ring.
#[allow(clippy::too_many_arguments)]
fn choose<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    per_target_max: u64,
    need: u64,
    goal: usize,
    accept: Accept<'_>,
    rng: &mut R,
) -> Choice {
    if view.online_len() > policy.sample_above {
        let pool_size = (goal * policy.pool_per_goal).max(32);
        let pool = sample_pool(view, req, policy, per_target_max, pool_size, accept, rng);
        // A sample is never searched exactly: a refusal only ever comes from the full ring.
        let quick = PlacementPolicy {
            restarts: 2,
            exact_limit: 0,
            ..policy.clone()
        };
        let found = search(&pool, &req.spread, need, goal, &quick, rng);
        if found.feasible {
            return Choice::Found(pool, found);
        }
    }
    let (cands, ring_nodes) = candidates(view, req, policy, per_target_max, accept);
    let found = search(&cands, &req.spread, need, goal, policy, rng);
    if found.feasible {
        Choice::Found(cands, found)
    } else {
        Choice::Refused(cands, ring_nodes, found)
    }
}

fn compatible(a: &Candidate, b: &Candidate, spread: &DistanceRange) -> bool {
    spread.contains(haversine_km(&a.location, &b.location))
}

/// How many targets a placement aims for: enough to spread load, bounded.
fn target_goal(width: usize, total_packets: u64, policy: &PlacementPolicy) -> usize {
    let by_size = total_packets.div_ceil(64) as usize;
    let cap = width * policy.max_targets_per_width.max(1);
    (by_size.min(cap))
        .max(2 * width)
        .min(total_packets as usize)
        .max(width)
}

/// Uniform in (0, 1].
fn unit_open<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    1.0 - rng.random::<f64>()
}

/// Candidates in a random order where each comes early with probability
/// proportional to its weight (exponential keys, Efraimidis–Spirakis).
/// Lazy: popping k of n costs O(n + k log n).
fn weighted_order<R: Rng + ?Sized>(
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
fn greedy_extend<R: Rng + ?Sized>(
    cands: &[Candidate],
    spread: &DistanceRange,
    chosen: &mut Vec<usize>,
    need: u64,
    goal: usize,
    compact: bool,
    rng: &mut R,
) -> u64 {
    let mut cap: u64 = chosen.iter().map(|&i| cands[i].cap).sum();
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
            *cap += cands[i].cap;
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
fn exact_search(cands: &[Candidate], spread: &DistanceRange, need: u64, budget: u64) -> Found {
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
            sum += caps[v];
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
            if set_cap + mask_cap(s.caps, allowed) <= s.best_cap {
                return;
            }
            let v = allowed.trailing_zeros() as usize;
            allowed &= allowed - 1;
            dfs(
                s,
                set | (1 << v),
                set_cap + s.caps[v],
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
fn search<R: Rng + ?Sized>(
    cands: &[Candidate],
    spread: &DistanceRange,
    need: u64,
    goal: usize,
    policy: &PlacementPolicy,
    rng: &mut R,
) -> Found {
    let total: u64 = cands.iter().map(|c| c.cap).sum();
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

fn greedy_best<R: Rng + ?Sized>(
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
fn anchor_sweep<R: Rng + ?Sized>(
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
        let own: u64 = cands[anchor].cap + neighbours.iter().map(|&i| cands[i].cap).sum::<u64>();
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
fn apportion(caps: &[u64], weights: &[f64], total: u64) -> Vec<u64> {
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
fn lay_out(targets: &[NodeId], counts: &[u64], stripes: usize, width: usize) -> Vec<Vec<NodeId>> {
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

/// Places a backup with the default policy. See [`place_with`].
pub fn place<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    rng: &mut R,
) -> Result<Placement, PlacementRefusal> {
    place_with(view, req, &PlacementPolicy::default(), rng)
}

/// Chooses targets for every packet of `req` or explains why it cannot.
/// Deterministic for a given view, request, policy and RNG state.
pub fn place_with<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    rng: &mut R,
) -> Result<Placement, PlacementRefusal> {
    place_inner(view, req, policy, &|_| true, rng)
}

/// [`place_with`], never choosing a node in `exclude` (e.g. targets a source
/// could not reach during an earlier attempt of the same backup).
pub fn place_excluding<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    exclude: &BTreeSet<NodeId>,
    rng: &mut R,
) -> Result<Placement, PlacementRefusal> {
    place_inner(view, req, policy, &|c| !exclude.contains(&c.id), rng)
}

fn place_inner<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    accept: Accept<'_>,
    rng: &mut R,
) -> Result<Placement, PlacementRefusal> {
    validate(req)?;
    let width = req.redundancy.width();
    let stripes = req.stripes as usize;
    if stripes == 0 {
        return Ok(Placement {
            targets: Vec::new(),
            stripes: Vec::new(),
        });
    }
    let need = req.total_packets();
    let goal = target_goal(width, need, policy);
    // A target holds at most one packet of each stripe.
    let per_target = req.stripes as u64;
    let (cands, found) = match choose(view, req, policy, per_target, need, goal, accept, rng) {
        Choice::Found(cands, found) => (cands, found),
        Choice::Refused(cands, ring_nodes, found) => {
            return Err(explain(
                view, req, policy, &cands, ring_nodes, &found, width, need, rng,
            ));
        }
    };

    let mut chosen = found.chosen;
    chosen.shuffle(rng);
    let targets: Vec<NodeId> = chosen.iter().map(|&i| cands[i].id).collect();
    let caps: Vec<u64> = chosen.iter().map(|&i| cands[i].cap).collect();
    let weights: Vec<f64> = chosen.iter().map(|&i| cands[i].weight).collect();
    let counts = apportion(&caps, &weights, need);
    let layout = lay_out(&targets, &counts, stripes, width);
    let mut used: Vec<NodeId> = targets
        .iter()
        .zip(&counts)
        .filter(|(_, c)| **c > 0)
        .map(|(t, _)| *t)
        .collect();
    used.sort_unstable();
    let placement = Placement {
        targets: used,
        stripes: layout,
    };
    if let Err(violation) = placement.check(view, req) {
        // Unreachable by construction; refusing is the safe answer if it ever happens.
        return Err(internal(cands.len(), width, violation));
    }
    Ok(placement)
}

/// Chooses `count` new targets for lost packets of one stripe of an existing backup.
///
/// `backup_targets` are all targets the backup uses now (failed ones
/// included): they are never chosen, and a new target must be within the
/// spread of every one of them that is still in the view (targets gone from
/// the view cannot be checked and are skipped). `stripe_survivors` are never
/// chosen either. New targets are pairwise within the spread, distinct, online,
/// not overloaded, within the backup distance, each with room for one packet
/// of `req.packet_size` bytes. Returns them sorted, or a refusal.
pub fn place_replacements<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    backup_targets: &[NodeId],
    stripe_survivors: &[NodeId],
    count: usize,
    rng: &mut R,
) -> Result<Vec<NodeId>, PlacementRefusal> {
    let policy = PlacementPolicy::default();
    place_replacements_with(
        view,
        req,
        &policy,
        backup_targets,
        stripe_survivors,
        count,
        rng,
    )
}

/// [`place_replacements`] with an explicit policy.
pub fn place_replacements_with<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    backup_targets: &[NodeId],
    stripe_survivors: &[NodeId],
    count: usize,
    rng: &mut R,
) -> Result<Vec<NodeId>, PlacementRefusal> {
    validate(req)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let excluded: BTreeSet<NodeId> = backup_targets
        .iter()
        .chain(stripe_survivors)
        .copied()
        .collect();
    let existing: Vec<&NodeProfile> = backup_targets
        .iter()
        .filter_map(|id| view.get(id))
        .collect();
    let accept = |c: &Candidate| {
        !excluded.contains(&c.id)
            && existing
                .iter()
                .all(|e| req.spread.contains(haversine_km(&c.location, &e.location)))
    };
    let need = count as u64;
    let (cands, found) = match choose(view, req, policy, 1, need, count, &accept, rng) {
        Choice::Found(cands, found) => (cands, found),
        Choice::Refused(cands, ring_nodes, found) => {
            return Err(explain(
                view, req, policy, &cands, ring_nodes, &found, count, need, rng,
            ));
        }
    };
    let mut chosen: Vec<NodeId> = found
        .chosen
        .iter()
        .take(count)
        .map(|&i| cands[i].id)
        .collect();
    chosen.sort_unstable();
    // Independent re-check of every rule before answering.
    let mut new_ones: Vec<&NodeProfile> = Vec::with_capacity(count);
    for id in &chosen {
        let profile = view
            .get(id)
            .ok_or_else(|| internal(cands.len(), count, format!("{id} left the view")))?;
        target_is_usable(profile, req, 1).map_err(|v| internal(cands.len(), count, v))?;
        if excluded.contains(id) {
            return Err(internal(cands.len(), count, format!("{id} is excluded")));
        }
        new_ones.push(profile);
    }
    let mut all = existing.clone();
    all.extend(new_ones.iter().copied());
    for n in &new_ones {
        for e in &all {
            if e.node_id != n.node_id
                && !req.spread.contains(haversine_km(&n.location, &e.location))
            {
                return Err(internal(cands.len(), count, "spread violated".into()));
            }
        }
    }
    Ok(chosen)
}

fn internal(eligible: usize, count: usize, why: String) -> PlacementRefusal {
    PlacementRefusal {
        reason: RefusalReason::SpreadTooStrict,
        ring_nodes: eligible,
        eligible_nodes: eligible,
        needed_targets: count,
        largest_compatible: 0,
        capacity_packets: 0,
        needed_packets: count as u64,
        exhaustive: false,
        advice: format!("internal placement error, refused rather than break a constraint: {why}"),
    }
}

/// Builds the refusal: what was found, and which bound to relax by how much.
#[allow(clippy::too_many_arguments)]
fn explain<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    cands: &[Candidate],
    ring_nodes: usize,
    found: &Found,
    needed_targets: usize,
    needed_packets: u64,
    rng: &mut R,
) -> PlacementRefusal {
    let eligible = cands.len();
    let total_cap: u64 = cands.iter().map(|c| c.cap).sum();
    let bd = &req.backup_distance;
    let mut refusal = PlacementRefusal {
        reason: RefusalReason::TooFewInRing,
        ring_nodes,
        eligible_nodes: eligible,
        needed_targets,
        largest_compatible: found.chosen.len(),
        capacity_packets: found.cap,
        needed_packets,
        exhaustive: found.exhaustive,
        advice: String::new(),
    };
    let ring_text = format!(
        "{ring_nodes} online node(s) lie within the backup distance {bd} of the source, {eligible} of them with room for a {} packet and not overloaded",
        format_size(req.packet_size)
    );
    if eligible < needed_targets {
        refusal.advice = format!(
            "cannot place: {ring_text}, but each stripe needs {needed_targets} distinct targets. {}",
            advice_or(policy, || widen_backup_advice(
                view,
                req,
                policy,
                needed_targets
            ))
        );
        return refusal;
    }
    if total_cap < needed_packets {
        refusal.reason = RefusalReason::NotEnoughCapacity;
        refusal.advice = format!(
            "cannot place: {ring_text}; together they can take only {total_cap} of the {needed_packets} packets (a target holds at most one packet per stripe and no more than its free space). Back up less at once, lower the redundancy, or widen the backup distance ({})",
            advice_or(policy, || widen_backup_advice(
                view,
                req,
                policy,
                needed_targets
            ))
        );
        return refusal;
    }
    let proof = if found.exhaustive {
        "the largest"
    } else {
        "the largest found"
    };
    if found.chosen.len() >= needed_targets {
        refusal.reason = RefusalReason::NotEnoughCapacity;
        refusal.advice = format!(
            "cannot place: {ring_text}; {proof} set of them pairwise within the spread {} has {} node(s) that can take only {} of the {needed_packets} packets. Back up less at once, lower the redundancy, or relax the spread",
            req.spread,
            found.chosen.len(),
            found.cap
        );
        return refusal;
    }
    refusal.reason = RefusalReason::SpreadTooStrict;
    refusal.advice = format!(
        "cannot place: {ring_text}, but {proof} set of them pairwise within the packet spread {} has {} node(s) and each stripe needs {needed_targets}. {}",
        req.spread,
        found.chosen.len(),
        advice_or(policy, || relax_spread_advice(
            view,
            req,
            policy,
            needed_targets,
            rng
        ))
    );
    refusal
}

/// The advice, or a generic pointer when the policy skips the extra searches.
fn advice_or(policy: &PlacementPolicy, advice: impl FnOnce() -> String) -> String {
    if policy.advise {
        advice()
    } else {
        "Relax the backup distance or the spread.".into()
    }
}

/// Suggests a backup distance that would hold enough eligible nodes.
fn widen_backup_advice(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    needed: usize,
) -> String {
    // Walk outwards from the source only as far as the advice needs.
    let lo = req.backup_distance.min_or_zero();
    let hi = req.backup_distance.max_km;
    let mut eligible_distances: Vec<f64> = Vec::new();
    let mut beyond_lo = 0usize;
    let mut exhausted = true;
    for (p, d) in view.nearest_online(&req.source) {
        if hi.is_none_or(|hi| d > hi) && beyond_lo >= needed {
            exhausted = false;
            break;
        }
        if Some(p.node_id) != req.source_node
            && p.load <= policy.max_load
            && p.storage_free >= req.packet_size
        {
            eligible_distances.push(d);
            if d >= lo {
                beyond_lo += 1;
            }
        }
    }
    if exhausted && eligible_distances.len() < needed {
        return format!(
            "The whole grid has only {} eligible online node(s): add nodes or free space, or lower the redundancy.",
            eligible_distances.len()
        );
    }
    let mut options = Vec::new();
    // Keep the minimum, raise the maximum: the needed-th eligible node at or beyond the minimum.
    let beyond: Vec<f64> = eligible_distances
        .iter()
        .copied()
        .filter(|d| *d >= lo)
        .collect();
    if let Some(d) = beyond.get(needed - 1)
        && req.backup_distance.max_km.is_some()
    {
        options.push(format!(
            "raise the maximum backup distance to {}",
            format_km(d.ceil())
        ));
    }
    // Keep the maximum, lower the minimum.
    if req.backup_distance.min_km.is_some() {
        let within: Vec<f64> = eligible_distances
            .iter()
            .copied()
            .filter(|d| req.backup_distance.max_km.is_none_or(|hi| *d <= hi))
            .collect();
        if within.len() >= needed {
            let d = within[within.len() - needed];
            options.push(format!(
                "lower the minimum backup distance to {}",
                format_km(d.floor())
            ));
        }
    }
    if options.is_empty() {
        "Widen the backup distance.".into()
    } else {
        format!("To reach {needed} nodes, {}.", options.join(" or "))
    }
}

/// Tries relaxed spreads and reports the first that would work.
fn relax_spread_advice<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    needed: usize,
    rng: &mut R,
) -> String {
    let per_target = req.stripes.max(1) as u64;
    let (cands, _) = candidates(view, req, policy, per_target, &|_| true);
    let need = if needed == req.redundancy.width() {
        req.total_packets()
    } else {
        needed as u64
    };
    let quick = PlacementPolicy {
        restarts: 2,
        ..policy.clone()
    };
    let mut options = Vec::new();
    if let Some(lo) = req.spread.min_km {
        for factor in [0.75, 0.5, 0.25, 0.0] {
            let relaxed = DistanceRange {
                min_km: (factor > 0.0).then_some(lo * factor),
                max_km: req.spread.max_km,
            };
            if search(&cands, &relaxed, need, needed, &quick, rng).feasible {
                options.push(format!(
                    "lower the minimum spread from {} to {}",
                    format_km(lo),
                    relaxed
                        .min_km
                        .map_or("none".into(), |v| format_km(v.floor()))
                ));
                break;
            }
        }
    }
    if let Some(hi) = req.spread.max_km {
        for factor in [1.5, 2.0, 4.0, f64::INFINITY] {
            let relaxed = DistanceRange {
                min_km: req.spread.min_km,
                max_km: factor.is_finite().then_some(hi * factor),
            };
            if search(&cands, &relaxed, need, needed, &quick, rng).feasible {
                options.push(format!(
                    "raise the maximum spread from {} to {}",
                    format_km(hi),
                    relaxed
                        .max_km
                        .map_or("none".into(), |v| format_km(v.ceil()))
                ));
                break;
            }
        }
    }
    if options.is_empty() {
        "Relax the spread or widen the backup distance so that more mutually distant nodes qualify."
            .into()
    } else {
        format!("It would fit if you {}.", options.join(", or "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::Xoshiro256PlusPlus;

    fn node(n: u8, lat: f64, lon: f64, free: u64) -> NodeProfile {
        NodeProfile::new(NodeId([n; 32]), GeoPoint::new(lat, lon).unwrap(), free, 0)
    }

    fn request(redundancy: Redundancy, stripes: u32) -> PlacementRequest {
        PlacementRequest {
            source: GeoPoint::new(48.8566, 2.3522).unwrap(),
            source_node: None,
            backup_distance: DistanceRange::ANY,
            spread: DistanceRange::ANY,
            redundancy,
            stripes,
            packet_size: 1 << 20,
        }
    }

    #[test]
    fn layout_puts_each_stripe_on_distinct_targets() {
        let targets: Vec<NodeId> = (0..5u8).map(|n| NodeId([n; 32])).collect();
        let counts = [7, 7, 3, 2, 2]; // stripes = 7, width = 3
        let layout = lay_out(&targets, &counts, 7, 3);
        for stripe in &layout {
            assert_eq!(stripe.len(), 3);
            let distinct: BTreeSet<_> = stripe.iter().collect();
            assert_eq!(distinct.len(), 3);
        }
    }

    #[test]
    fn apportion_respects_caps_and_follows_weights() {
        let counts = apportion(&[10, 10, 2], &[1.0, 3.0, 100.0], 14);
        assert_eq!(counts.iter().sum::<u64>(), 14);
        assert_eq!(counts[2], 2);
        assert!(counts[1] > counts[0]);
        assert!(counts.iter().zip([10, 10, 2]).all(|(c, cap)| *c <= cap));
    }

    #[test]
    fn offline_overloaded_and_full_nodes_are_never_chosen() {
        let mut nodes = vec![
            node(1, 50.0, 0.0, 1 << 30),
            node(2, 52.0, 5.0, 1 << 30),
            node(3, 45.0, 8.0, 1 << 30),
            node(4, 40.0, -3.0, 1 << 30),
        ];
        nodes.push(node(5, 41.0, 12.0, 1 << 30));
        nodes[4].online = false;
        let mut busy = node(6, 55.0, 12.0, 1 << 30);
        busy.load = 0.99;
        nodes.push(busy);
        nodes.push(node(7, 60.0, 20.0, 10)); // no room for one packet
        let view = GridView::from_profiles(nodes);
        let req = request(Redundancy::Erasure { k: 2, m: 2 }, 3);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let p = place(&view, &req, &mut rng).unwrap();
        assert_eq!(
            p.targets,
            (1..=4u8).map(|n| NodeId([n; 32])).collect::<Vec<_>>()
        );
        let req5 = request(Redundancy::Erasure { k: 3, m: 2 }, 1);
        let refusal = place(&view, &req5, &mut rng).unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
        assert_eq!(refusal.eligible_nodes, 4);
        assert!(refusal.exhaustive);
    }

    #[test]
    fn refusal_names_the_bound_to_relax() {
        // Five nodes in a tight cluster around Lyon and three far away.
        let mut nodes: Vec<NodeProfile> = (0..5u8)
            .map(|n| node(n, 45.75 + 0.05 * n as f64, 4.85, 1 << 30))
            .collect();
        nodes.push(node(10, 40.4, -3.7, 1 << 30)); // Madrid, ~1050 km from Paris
        nodes.push(node(11, 52.52, 13.4, 1 << 30)); // Berlin, ~880 km
        nodes.push(node(12, 41.9, 12.5, 1 << 30)); // Rome, ~1100 km
        let view = GridView::from_profiles(nodes);
        let mut req = request(Redundancy::Erasure { k: 2, m: 1 }, 1);
        req.backup_distance = "..500km".parse().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        // Only the Lyon cluster is in the ring, and it is not spread enough.
        req.spread = "100km..".parse().unwrap();
        let refusal = place(&view, &req, &mut rng).unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::SpreadTooStrict);
        assert_eq!(refusal.ring_nodes, 5);
        assert_eq!(refusal.largest_compatible, 1);
        assert!(refusal.exhaustive);
        assert!(
            refusal.advice.contains("minimum spread"),
            "{}",
            refusal.advice
        );

        // A ring with too few nodes suggests a larger maximum.
        req.spread = DistanceRange::ANY;
        req.backup_distance = "700km..1000km".parse().unwrap();
        let refusal = place(&view, &req, &mut rng).unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
        assert!(
            refusal.advice.contains("raise the maximum backup distance"),
            "{}",
            refusal.advice
        );
        assert!(
            refusal.to_string().contains("1 online node(s)"),
            "{refusal}"
        );
    }

    #[test]
    fn capacity_is_never_exceeded() {
        let nodes = vec![
            node(1, 50.0, 0.0, 3 << 20),
            node(2, 52.0, 5.0, 1 << 20),
            node(3, 45.0, 8.0, 10 << 20),
            node(4, 40.0, -3.0, 10 << 20),
        ];
        let view = GridView::from_profiles(nodes);
        let req = request(Redundancy::Replicas { n: 2 }, 10);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let p = place(&view, &req, &mut rng).unwrap();
        let counts = p.packets_per_target();
        assert!(counts.get(&NodeId([1; 32])).copied().unwrap_or(0) <= 3);
        assert!(counts.get(&NodeId([2; 32])).copied().unwrap_or(0) <= 1);
        let req = request(Redundancy::Replicas { n: 2 }, 13);
        let refusal = place(&view, &req, &mut rng).unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::NotEnoughCapacity);
    }

    #[test]
    fn replacements_avoid_survivors_and_respect_spread_with_the_backup() {
        let nodes: Vec<NodeProfile> = (0..12u8)
            .map(|n| node(n, 35.0 + 2.0 * n as f64, -5.0 + 2.5 * n as f64, 1 << 30))
            .collect();
        let view = GridView::from_profiles(nodes);
        let mut req = request(Redundancy::Erasure { k: 2, m: 1 }, 1);
        req.spread = "150km..".parse().unwrap();
        let backup: Vec<NodeId> = [0u8, 4, 8].iter().map(|n| NodeId([*n; 32])).collect();
        let survivors = &backup[..2];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
        let new = place_replacements(&view, &req, &backup, survivors, 1, &mut rng).unwrap();
        assert_eq!(new.len(), 1);
        assert!(!survivors.contains(&new[0]));
        for e in &backup {
            if *e != new[0] {
                let a = view.get(e).unwrap().location;
                let b = view.get(&new[0]).unwrap().location;
                assert!(haversine_km(&a, &b) >= 150.0);
            }
        }
        let refusal =
            place_replacements(&view, &req, &backup, survivors, 30, &mut rng).unwrap_err();
        assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
    }
}
