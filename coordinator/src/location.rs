//! Location evidence: declared locations checked against physics.
//!
//! Light in fibre covers about 200 km per millisecond, so a round trip of
//! `r` ms proves the two ends are at most about `100 × r` km apart. A
//! measured RTT can therefore *refute* a claimed distance (two nodes claiming
//! to be 16 000 km apart cannot answer each other in 5 ms), never prove a
//! minimum: anyone can add delay. This module keeps, per node, the smallest
//! RTT each trusted observer measured to it, and judges the node's claimed
//! location against each observer's claimed location:
//! `great-circle distance ≤ KM_PER_RTT_MS × rtt_ms + tolerance`.
//!
//! Only observations by trusted observers count (the caller decides who: the
//! coordinator group's members, later certified members and vetted nodes);
//! each observer counts once per node, so a node is [`Verdict::Refuted`]
//! only when at least [`EvidencePolicy::refute_quorum`] independent observers
//! refute it. What a refutation costs is [`LocationCheck`]'s business
//! (placement excludes refuted nodes under `enforce`).
//!
//! Pure: no clocks (times are passed in), no I/O; bounded (observers per
//! node, nodes); iteration over `BTreeMap`s only.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::grid::GridView;
use crate::ids::NodeId;
use crate::units::{Millis, haversine_km};

/// Kilometres a millisecond of round-trip time can cover at most (light in
/// fibre, ~200 km/ms one way, halved for the round trip).
pub const KM_PER_RTT_MS: f64 = 100.0;

/// What a refuted location claim costs (`location_check`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocationCheck {
    /// Nothing is measured against claims.
    Off,
    /// Refuted claims are flagged (logs, `peers`), placement is unchanged.
    #[default]
    Warn,
    /// Refuted nodes are never chosen as targets.
    Enforce,
}

impl LocationCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            LocationCheck::Off => "off",
            LocationCheck::Warn => "warn",
            LocationCheck::Enforce => "enforce",
        }
    }
}

impl fmt::Display for LocationCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown `location_check` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("location check must be off, warn or enforce, not {0:?}")]
pub struct LocationCheckError(pub String);

impl FromStr for LocationCheck {
    type Err = LocationCheckError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "off" => Ok(LocationCheck::Off),
            "warn" => Ok(LocationCheck::Warn),
            "enforce" => Ok(LocationCheck::Enforce),
            _ => Err(LocationCheckError(s.to_string())),
        }
    }
}

/// How observations are judged and how many are kept.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidencePolicy {
    /// Slack added to the physical bound: declared locations are city-level,
    /// not street-level.
    pub tolerance_km: f64,
    /// Independent refuting observers that make a claim [`Verdict::Refuted`].
    pub refute_quorum: u32,
    /// Observers remembered per node (the first ones stay).
    pub max_observers_per_node: usize,
    /// Nodes remembered (observations of further nodes are dropped).
    pub max_nodes: usize,
    /// An observation older than this is replaced by the next one rather
    /// than merged (a node may move, a path may change).
    pub max_age: Millis,
}

impl Default for EvidencePolicy {
    fn default() -> Self {
        EvidencePolicy {
            tolerance_km: 50.0,
            refute_quorum: 2,
            max_observers_per_node: 16,
            max_nodes: 200_000,
            max_age: 24 * 60 * 60 * 1000,
        }
    }
}

/// One RTT measurement of `observer` to `subject`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttObservation {
    pub observer: NodeId,
    pub subject: NodeId,
    pub rtt_micros: u32,
}

/// What the evidence says about a node's claimed location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// No trusted observer measured the node (yet).
    Unchecked,
    /// Every trusted observer's RTT fits the claimed distances.
    Consistent,
    /// Refuted by fewer observers than the quorum: flagged, not acted on.
    Suspect,
    /// Refuted by at least the quorum of independent observers.
    Refuted,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unchecked => "unchecked",
            Verdict::Consistent => "consistent",
            Verdict::Suspect => "suspect",
            Verdict::Refuted => "refuted",
        }
    }
}

/// The counts behind a verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// Trusted observers whose RTT fits the claimed distance.
    pub consistent: u32,
    /// Trusted observers whose RTT refutes it.
    pub refuted: u32,
    pub verdict: Verdict,
}

/// One refuting observation, for explanations.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Refutation {
    pub observer: NodeId,
    pub rtt_ms: f64,
    /// Great-circle distance between the two claimed locations.
    pub claimed_km: f64,
    /// The most the RTT allows (tolerance included).
    pub allowed_km: f64,
}

impl fmt::Display for Refutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.2} ms from {} allows at most {:.0} km, the claims are {:.0} km apart",
            self.rtt_ms, self.observer, self.allowed_km, self.claimed_km
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    min_rtt_micros: u32,
    since: Millis,
}

/// Per node, the smallest RTT each trusted observer measured to it.
#[derive(Clone, Debug, Default)]
pub struct LocationBook {
    policy: EvidencePolicy,
    by_subject: BTreeMap<NodeId, BTreeMap<NodeId, Seen>>,
}

impl LocationBook {
    pub fn new(policy: EvidencePolicy) -> Self {
        LocationBook {
            policy,
            by_subject: BTreeMap::new(),
        }
    }

    pub fn policy(&self) -> &EvidencePolicy {
        &self.policy
    }

    /// Records observations at `now`; those of untrusted observers, of a
    /// node by itself, or past the bounds are dropped. Returns how many were kept.
    pub fn record(
        &mut self,
        observations: &[RttObservation],
        trusted: &dyn Fn(&NodeId) -> bool,
        now: Millis,
    ) -> usize {
        let mut kept = 0;
        for o in observations {
            if o.observer == o.subject || !trusted(&o.observer) {
                continue;
            }
            if !self.by_subject.contains_key(&o.subject)
                && self.by_subject.len() >= self.policy.max_nodes
            {
                continue;
            }
            let max_observers = self.policy.max_observers_per_node;
            let max_age = self.policy.max_age;
            let observers = self.by_subject.entry(o.subject).or_default();
            let room = observers.len() < max_observers;
            let fresh = Seen {
                min_rtt_micros: o.rtt_micros,
                since: now,
            };
            match observers.get_mut(&o.observer) {
                Some(seen) if now.saturating_sub(seen.since) <= max_age => {
                    seen.min_rtt_micros = seen.min_rtt_micros.min(o.rtt_micros);
                }
                Some(seen) => *seen = fresh,
                None if room => {
                    observers.insert(o.observer, fresh);
                }
                None => continue,
            }
            kept += 1;
        }
        kept
    }

    /// Forgets a node (it left the grid).
    pub fn forget(&mut self, node: &NodeId) {
        self.by_subject.remove(node);
    }

    /// The refuting observations of `subject`'s claim, judged with the
    /// locations the view holds now, and the number of consistent ones.
    fn judge(
        &self,
        subject: &NodeId,
        view: &GridView,
        trusted: &dyn Fn(&NodeId) -> bool,
    ) -> (u32, Vec<Refutation>) {
        let mut consistent = 0;
        let mut refutations = Vec::new();
        let (Some(observers), Some(claim)) = (self.by_subject.get(subject), view.get(subject))
        else {
            return (0, refutations);
        };
        for (observer, seen) in observers {
            if !trusted(observer) {
                continue;
            }
            let Some(at) = view.get(observer) else {
                continue;
            };
            let rtt_ms = f64::from(seen.min_rtt_micros) / 1000.0;
            let claimed_km = haversine_km(&claim.location, &at.location);
            let allowed_km = KM_PER_RTT_MS * rtt_ms + self.policy.tolerance_km;
            if claimed_km <= allowed_km {
                consistent += 1;
            } else {
                refutations.push(Refutation {
                    observer: *observer,
                    rtt_ms,
                    claimed_km,
                    allowed_km,
                });
            }
        }
        (consistent, refutations)
    }

    /// The evidence about one node's claimed location.
    pub fn evidence(
        &self,
        subject: &NodeId,
        view: &GridView,
        trusted: &dyn Fn(&NodeId) -> bool,
    ) -> Evidence {
        let (consistent, refutations) = self.judge(subject, view, trusted);
        let refuted = u32::try_from(refutations.len()).unwrap_or(u32::MAX);
        let verdict = if refuted >= self.policy.refute_quorum.max(1) {
            Verdict::Refuted
        } else if refuted > 0 {
            Verdict::Suspect
        } else if consistent > 0 {
            Verdict::Consistent
        } else {
            Verdict::Unchecked
        };
        Evidence {
            consistent,
            refuted,
            verdict,
        }
    }

    /// Every node with any evidence, by id.
    pub fn all_evidence(
        &self,
        view: &GridView,
        trusted: &dyn Fn(&NodeId) -> bool,
    ) -> BTreeMap<NodeId, Evidence> {
        self.by_subject
            .keys()
            .map(|id| (*id, self.evidence(id, view, trusted)))
            .filter(|(_, e)| e.verdict != Verdict::Unchecked)
            .collect()
    }

    /// The nodes whose claims are [`Verdict::Refuted`], with the refutations.
    pub fn refuted(
        &self,
        view: &GridView,
        trusted: &dyn Fn(&NodeId) -> bool,
    ) -> BTreeMap<NodeId, Vec<Refutation>> {
        let quorum = self.policy.refute_quorum.max(1) as usize;
        self.by_subject
            .keys()
            .filter_map(|id| {
                let (_, refutations) = self.judge(id, view, trusted);
                (refutations.len() >= quorum).then_some((*id, refutations))
            })
            .collect()
    }

    /// The nodes placement must leave out under `check`: the refuted ones
    /// under [`LocationCheck::Enforce`], none otherwise.
    pub fn exclusions(
        &self,
        check: LocationCheck,
        view: &GridView,
        trusted: &dyn Fn(&NodeId) -> bool,
    ) -> BTreeMap<NodeId, Vec<Refutation>> {
        match check {
            LocationCheck::Enforce => self.refuted(view, trusted),
            LocationCheck::Off | LocationCheck::Warn => BTreeMap::new(),
        }
    }

    /// A sentence naming the refuted claims among `nodes` (for placement
    /// refusals under `enforce`): who claims where, and what refutes it.
    pub fn explain_refuted(
        refuted: &BTreeMap<NodeId, Vec<Refutation>>,
        view: &GridView,
        limit: usize,
    ) -> String {
        let mut parts = Vec::new();
        for (id, refutations) in refuted.iter().take(limit) {
            let claim = view
                .get(id)
                .map(|p| format!("{:.2},{:.2}", p.location.lat, p.location.lon))
                .unwrap_or_else(|| "?".into());
            let why: Vec<String> = refutations.iter().map(ToString::to_string).collect();
            parts.push(format!("{id} claims {claim}, but {}", why.join("; ")));
        }
        if refuted.len() > limit {
            parts.push(format!("and {} more", refuted.len() - limit));
        }
        parts.join(". ")
    }
}
