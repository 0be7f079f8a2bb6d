//! Placement: choosing the targets of a backup under geographic distance
//! constraints, and assigning every packet of every stripe to one of them.
//!
//! Owns [`PlacementRequest`], [`Placement`], [`PlacementRefusal`], the search
//! ([`place`], [`place_replacements`]) and the independent constraint check
//! ([`Placement::check`]). The rules (SPEC R3): every target lies within the
//! backup distance of the source; every two distinct targets of the backup lie
//! within the packet spread of each other; the W packets of a stripe sit on W
//! distinct targets; no target receives more than its free storage; offline
//! and overloaded nodes are never chosen; load follows free capacity. Two
//! targets of one backup never share a public network (an IPv4 /24 or IPv6
//! /64, see [`crate::network`]): such nodes are one failure domain, so they
//! count as incompatible like two nodes outside the spread, and no stripe
//! can have two packets behind one router. Nodes with loopback, private or
//! unknown addresses are exempt. Nodes behind NAT weigh a quarter of their
//! free space ([`BEHIND_NAT_WEIGHT`]): directly reachable targets are preferred.
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
use crate::network::NetworkDomain;
use crate::units::{DistanceRange, GeoPoint, Redundancy, format_km, format_size, haversine_km};

mod refusal;
mod search;
#[cfg(test)]
mod tests;

use refusal::*;
use search::*;

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

/// Whether two nodes are one failure domain by network (both public, same /24 or /64).
fn same_network(a: Option<NetworkDomain>, b: Option<NetworkDomain>) -> bool {
    matches!((a, b), (Some(x), Some(y)) if x == y)
}

fn check_pairwise(profiles: &[&NodeProfile], spread: &DistanceRange) -> Result<(), String> {
    for (i, a) in profiles.iter().enumerate() {
        for b in &profiles[i + 1..] {
            if same_network(a.network, b.network) {
                return Err(format!(
                    "targets {} and {} share the network {}, one failure domain",
                    a.node_id,
                    b.node_id,
                    a.network.map(|n| n.to_string()).unwrap_or_default()
                ));
            }
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
    /// Public network (failure domain), if any.
    network: Option<NetworkDomain>,
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

/// Load-balancing weight of a node behind NAT relative to a directly
/// reachable one with the same free space: it is chosen less often (a
/// source must hole-punch to reach it; packets are never relayed), never excluded.
pub const BEHIND_NAT_WEIGHT: f64 = 0.25;

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
        weight: if p.behind_nat {
            p.storage_free as f64 * BEHIND_NAT_WEIGHT
        } else {
            p.storage_free as f64
        },
        network: p.network,
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
                view, req, policy, &cands, ring_nodes, &found, width, need, accept, rng,
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
    replacements(
        view,
        req,
        policy,
        backup_targets,
        stripe_survivors,
        count,
        false,
        rng,
    )
}

/// [`place_replacements_with`], except that targets the backup already uses
/// may be chosen too (never one holding a packet of this stripe: never in
/// `stripe_survivors`). The backup's set of targets does not grow, so the
/// spread rule holds as it did; for a backup spread over every eligible
/// node, the only way to rebuild a stripe.
pub fn place_replacements_reusing<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    backup_targets: &[NodeId],
    stripe_survivors: &[NodeId],
    count: usize,
    rng: &mut R,
) -> Result<Vec<NodeId>, PlacementRefusal> {
    replacements(
        view,
        req,
        policy,
        backup_targets,
        stripe_survivors,
        count,
        true,
        rng,
    )
}

#[allow(clippy::too_many_arguments)]
fn replacements<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    backup_targets: &[NodeId],
    stripe_survivors: &[NodeId],
    count: usize,
    reuse: bool,
    rng: &mut R,
) -> Result<Vec<NodeId>, PlacementRefusal> {
    validate(req)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let excluded: BTreeSet<NodeId> = if reuse {
        stripe_survivors.iter().copied().collect()
    } else {
        backup_targets
            .iter()
            .chain(stripe_survivors)
            .copied()
            .collect()
    };
    let existing: Vec<&NodeProfile> = backup_targets
        .iter()
        .filter_map(|id| view.get(id))
        .collect();
    let accept = |c: &Candidate| {
        !excluded.contains(&c.id)
            && existing.iter().all(|e| {
                e.node_id == c.id
                    || (req.spread.contains(haversine_km(&c.location, &e.location))
                        && !same_network(c.network, e.network))
            })
    };
    let need = count as u64;
    let (cands, found) = match choose(view, req, policy, 1, need, count, &accept, rng) {
        Choice::Found(cands, found) => (cands, found),
        Choice::Refused(cands, ring_nodes, found) => {
            return Err(explain(
                view, req, policy, &cands, ring_nodes, &found, count, need, &accept, rng,
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
            if e.node_id != n.node_id && same_network(n.network, e.network) {
                return Err(internal(
                    cands.len(),
                    count,
                    "two targets share a network".into(),
                ));
            }
        }
    }
    Ok(chosen)
}
