//! Refusals that explain themselves: what placement found, which bound to
//! relax and by how much (SPEC R3). Suggested bounds count only nodes the
//! request could use and always lie outside the current range.

use super::*;

pub(super) fn internal(eligible: usize, count: usize, why: String) -> PlacementRefusal {
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
pub(super) fn explain<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    cands: &[Candidate],
    ring_nodes: usize,
    found: &Found,
    needed_targets: usize,
    needed_packets: u64,
    accept: Accept<'_>,
    rng: &mut R,
) -> PlacementRefusal {
    let eligible = cands.len();
    let total_cap: u64 = super::search::sum_caps(cands.iter().map(|c| c.cap));
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
        "{ring_nodes} online node(s) lie within the backup distance {bd} of the source, {eligible} of them usable (room for a {} packet, not overloaded, not excluded after failed uploads)",
        format_size(req.packet_size)
    );
    if eligible < needed_targets {
        refusal.advice = format!(
            "cannot place: {ring_text}, but each stripe needs {needed_targets} distinct targets. {}",
            advice_or(policy, || widen_backup_advice(
                view,
                req,
                policy,
                needed_targets,
                accept
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
                needed_targets,
                accept
            ))
        );
        return refusal;
    }
    // Only mentioned where it can matter: some candidates have public addresses.
    let networks = if cands.iter().any(|c| c.network.is_some()) {
        " and on distinct public networks (/24, /64)"
    } else {
        ""
    };
    let proof = if found.exhaustive {
        "the largest"
    } else {
        "the largest found"
    };
    if found.chosen.len() >= needed_targets {
        refusal.reason = RefusalReason::NotEnoughCapacity;
        refusal.advice = format!(
            "cannot place: {ring_text}; {proof} set of them pairwise within the spread {}{networks} has {} node(s) that can take only {} of the {needed_packets} packets. Back up less at once, lower the redundancy, or relax the spread",
            req.spread,
            found.chosen.len(),
            found.cap
        );
        return refusal;
    }
    refusal.reason = RefusalReason::SpreadTooStrict;
    refusal.advice = format!(
        "cannot place: {ring_text}, but {proof} set of them pairwise within the packet spread {}{networks} has {} node(s) and each stripe needs {needed_targets}. {}",
        req.spread,
        found.chosen.len(),
        advice_or(policy, || relax_spread_advice(
            view,
            req,
            policy,
            needed_targets,
            accept,
            rng
        ))
    );
    refusal
}

/// The advice, or a generic pointer when the policy skips the extra searches.
pub(super) fn advice_or(policy: &PlacementPolicy, advice: impl FnOnce() -> String) -> String {
    if policy.advise {
        advice()
    } else {
        "Relax the backup distance or the spread.".into()
    }
}

/// Suggests a backup distance that would hold enough eligible nodes: only
/// nodes this request could use count (online, not overloaded, with room,
/// not excluded, e.g. after failed uploads), and a suggested bound always lies
/// outside the current range, so following it changes the answer.
pub(super) fn widen_backup_advice(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    needed: usize,
    accept: Accept<'_>,
) -> String {
    if req.backup_distance.min_km.is_none() && req.backup_distance.max_km.is_none() {
        return "the backup distance is already unbounded, so widening it cannot help: add nodes or free space, or lower the redundancy".into();
    }
    // Walk outwards from the source only as far as the advice needs.
    let lo = req.backup_distance.min_or_zero();
    let hi = req.backup_distance.max_km;
    let mut eligible_distances: Vec<f64> = Vec::new();
    let mut beyond_lo = 0usize;
    let mut exhausted = true;
    for (p, d) in view.nearest_online(&req.source) {
        if hi.is_some_and(|hi| d > hi) && beyond_lo >= needed {
            exhausted = false;
            break;
        }
        if candidate(p, req, policy, 1).is_some_and(|c| accept(&c)) {
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
        && req.backup_distance.max_km.is_some_and(|hi| *d > hi)
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
        if within.len() >= needed
            && let d = within[within.len() - needed]
            && d < lo
        {
            options.push(format!(
                "lower the minimum backup distance to {}",
                format_km(d.floor())
            ));
        }
    }
    if options.is_empty() {
        "No wider backup distance adds usable nodes: wait for unreachable targets to return, add nodes or free space, or lower the redundancy.".into()
    } else {
        format!("To reach {needed} nodes, {}.", options.join(" or "))
    }
}

/// Tries relaxed spreads and reports the first that would work.
pub(super) fn relax_spread_advice<R: Rng + ?Sized>(
    view: &GridView,
    req: &PlacementRequest,
    policy: &PlacementPolicy,
    needed: usize,
    accept: Accept<'_>,
    rng: &mut R,
) -> String {
    let per_target = req.stripes.max(1) as u64;
    let (cands, _) = candidates(view, req, policy, per_target, accept);
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
