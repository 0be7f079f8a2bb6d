//! Location evidence on the leader: RTT reports from nodes go into the
//! coordinator's pure [`LocationBook`]; under `location_check = enforce`
//! placement and repair leave refuted nodes out, and a refusal names the
//! refuted claims.
//!
//! The book lives in the leader's memory only (not replicated): after a
//! failover the new leader starts empty and fills within a report interval.
//! Trusted observers are the coordinator group's members (until admission
//! certifies members and vets nodes). Owns nothing else.

use std::collections::{BTreeMap, BTreeSet};

use strew_coordinator::location::Refutation;
use strew_coordinator::manager::PlanRequest;
use strew_coordinator::{LocationBook, LocationCheck, NodeId, RttObservation, Verdict};
use strew_overlay::manager::wire::MAX_EVIDENCE_ENTRIES;
use strew_overlay::manager::{
    EvidenceVerdict, NodeEvidence, Refusal, RefusalCode, RttReport, wire::MAX_RTT_SAMPLES,
};
use strew_overlay::{ManagerResponse, now_ms};
use tracing::warn;

use super::ManagerService;
use crate::sync::lock;

/// Refuted claims named in one refusal; the rest are counted.
const NAMED_IN_REFUSAL: usize = 5;

fn verdict(v: Verdict) -> EvidenceVerdict {
    match v {
        Verdict::Unchecked => EvidenceVerdict::Unchecked,
        Verdict::Consistent => EvidenceVerdict::Consistent,
        Verdict::Suspect => EvidenceVerdict::Suspect,
        Verdict::Refuted => EvidenceVerdict::Refuted,
    }
}

impl ManagerService {
    /// What a refuted location claim costs from now on.
    pub fn set_location_check(&self, check: LocationCheck) {
        *lock(&self.location_check) = check;
    }

    pub fn location_check(&self) -> LocationCheck {
        *lock(&self.location_check)
    }

    /// Whose RTTs count as evidence: the certified members of the group and
    /// targets vetted by their audits (100 passed, not disqualified).
    fn trusted_observers(&self) -> BTreeSet<NodeId> {
        let mut trusted: BTreeSet<NodeId> = self.members().into_iter().collect();
        trusted.extend(self.replica.read(|m| {
            m.state()
                .targets
                .iter()
                .filter(|(_, r)| vetted(r))
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
        }));
        trusted
    }

    /// Whether `node`'s RTTs count as evidence (see [`Self::trusted_observers`]).
    fn is_trusted_observer(&self, node: &NodeId) -> bool {
        self.members().contains(node)
            || self
                .replica
                .read(|m| m.state().targets.get(node).is_some_and(vetted))
    }

    /// Records a node's RTT report (leader only; the caller checked).
    pub(super) fn record_rtt(&self, observer: NodeId, report: &RttReport) -> ManagerResponse {
        if report.samples.len() > MAX_RTT_SAMPLES {
            return ManagerResponse::Refused(Refusal::new(
                RefusalCode::Invalid,
                format!(
                    "an RTT report carries at most {MAX_RTT_SAMPLES} samples, not {}",
                    report.samples.len()
                ),
            ));
        }
        if self.location_check() == LocationCheck::Off {
            return ManagerResponse::Recorded;
        }
        // Every sample has the same observer: judge it once, not by
        // building the whole trusted set on every report (a hot path: each
        // node reports every few seconds).
        if !self.is_trusted_observer(&observer) {
            return ManagerResponse::Recorded;
        }
        let observations: Vec<RttObservation> = report
            .samples
            .iter()
            .map(|s| RttObservation {
                observer,
                subject: s.peer,
                rtt_micros: s.rtt_micros,
            })
            .collect();
        lock(&self.location).record(&observations, &|id| *id == observer, now_ms());
        ManagerResponse::Recorded
    }

    /// The evidence of every node that has any.
    pub(super) fn evidence(&self) -> ManagerResponse {
        let trusted = self.trusted_observers();
        let book = lock(&self.location);
        let all = self
            .replica
            .read(|m| book.all_evidence(m.view(), &|id| trusted.contains(id)));
        ManagerResponse::Evidence(
            all.into_iter()
                .take(MAX_EVIDENCE_ENTRIES)
                .map(|(node, e)| NodeEvidence {
                    node,
                    consistent: e.consistent,
                    refuted: e.refuted,
                    verdict: verdict(e.verdict),
                })
                .collect(),
        )
    }

    /// Under `enforce`, adds the refuted nodes to the plan's exclusions and
    /// returns them (for the refusal's words); otherwise logs them once per
    /// plan and changes nothing.
    pub(super) fn apply_location_check(
        &self,
        request: &mut PlanRequest,
    ) -> BTreeMap<NodeId, Vec<Refutation>> {
        let check = self.location_check();
        if check == LocationCheck::Off {
            return BTreeMap::new();
        }
        let trusted = self.trusted_observers();
        let book = lock(&self.location);
        let refuted = self
            .replica
            .read(|m| book.refuted(m.view(), &|id| trusted.contains(id)));
        if check == LocationCheck::Warn {
            for (node, why) in &refuted {
                let first = why.first().map(ToString::to_string).unwrap_or_default();
                warn!(%node, refutations = why.len(), %first, "location claim refuted by measured RTTs (location_check = warn: still a target)");
            }
            return BTreeMap::new();
        }
        for node in refuted.keys() {
            if !request.exclude.contains(node) {
                request.exclude.push(*node);
            }
        }
        refuted
    }

    /// The nodes repairs must not choose: the refuted ones under `enforce`.
    pub(super) fn location_exclusions(&self) -> BTreeSet<NodeId> {
        if self.location_check() != LocationCheck::Enforce {
            return BTreeSet::new();
        }
        let trusted = self.trusted_observers();
        let book = lock(&self.location);
        self.replica
            .read(|m| book.refuted(m.view(), &|id| trusted.contains(id)))
            .into_keys()
            .collect()
    }

    /// A placement refusal, with the refuted claims `enforce` left out named.
    pub(super) fn refusal_naming(
        &self,
        response: ManagerResponse,
        refuted: &BTreeMap<NodeId, Vec<Refutation>>,
    ) -> ManagerResponse {
        match response {
            ManagerResponse::Refused(mut why) if !refuted.is_empty() => {
                let names = self
                    .replica
                    .read(|m| LocationBook::explain_refuted(refuted, m.view(), NAMED_IN_REFUSAL));
                why.detail = format!(
                    "{} ({} node(s) left out because location_check = enforce and measured round-trip times refute their claimed locations: {names})",
                    why.detail,
                    refuted.len()
                );
                ManagerResponse::Refused(why)
            }
            other => other,
        }
    }
}

/// A target whose audits vetted it (and did not disqualify it since).
fn vetted(record: &strew_coordinator::TargetRecord) -> bool {
    record
        .audit
        .is_vetted(&strew_coordinator::audit::AuditPolicy::default())
        && !record.audit.is_disqualified()
}
