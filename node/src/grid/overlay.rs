//! The grid traits over the real overlay: [`OverlayManager`] sends
//! [`ManagerApi`] calls to the sequence manager with `/strew/manager/1`,
//! following redirects and retrying while no manager answers;
//! [`OverlayTransport`] moves packets directly to and from targets.
//!
//! Owns finding the manager from the client side (the node the overlay
//! believes in, then wherever a `NotManager` answer points) and turning
//! overlay errors into grid errors. It must not decide anything itself.

use std::time::Duration;

use strew_coordinator::manager::{
    CommitOrderRequest, CommitOrderResponse, CommitRequest, CommitResponse, ForgetResponse,
    MAX_LIST_PAGE, PlanDecision, PlanRequest, RetargetRequest, SnapshotSummary,
};
use strew_coordinator::records::RestoreOutcome;
use strew_coordinator::seal::SealedForRecipient;
use strew_coordinator::ticket::StorageTicket;
use strew_coordinator::{DataId, LeaveStatus, NodeId, PacketId, SnapshotId, StoreReceipt};
use strew_overlay::manager::{
    DryRunAnswer, ManagerInfo, NodeEvidence, ReregisterRequest, RttReport,
};
use strew_overlay::packet::{DeleteAnswer, ticket};
use strew_overlay::{ManagerRequest, ManagerResponse, OverlayError, OverlayHandle, RefusalCode};
use tracing::debug;

use super::{GridError, ManagerApi, PacketTransport, TransportError, TransportFailure};
use crate::wire::{self, ToWire};

/// How long a call waits for a manager to become known or reachable.
const MANAGER_PATIENCE: Duration = Duration::from_secs(45);
/// First pause between attempts (doubles up to [`MAX_BACKOFF`]).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// Redirects followed in a row before giving up (a loop of stale beliefs).
const MAX_REDIRECTS: usize = 4;

/// The sequence manager reached through the overlay.
#[derive(Clone, Debug)]
pub struct OverlayManager {
    overlay: OverlayHandle,
    patience: Duration,
}

impl OverlayManager {
    pub fn new(overlay: OverlayHandle) -> Self {
        OverlayManager {
            overlay,
            patience: MANAGER_PATIENCE,
        }
    }

    /// Gives up on an unreachable manager after `patience` instead of the default.
    pub fn with_patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// Sends `request` to the manager; redirects and transient failures are
    /// retried until `patience` runs out. `Refused` becomes [`GridError::Refused`].
    pub async fn call(&self, request: ManagerRequest) -> Result<ManagerResponse, GridError> {
        let deadline = tokio::time::Instant::now() + self.patience;
        let mut backoff = FIRST_BACKOFF;
        let mut redirects = 0usize;
        let mut hint: Option<NodeId> = None;
        let mut last = String::from("no coordinator-eligible node is in this node's grid view");
        loop {
            let target = hint.take().or_else(|| self.overlay.manager());
            if let Some(target) = target {
                match self.overlay.manager_request(target, request.clone()).await {
                    Ok(ManagerResponse::NotManager { leader }) => {
                        last = format!("{target} does not serve the manager");
                        if let Some(leader) = leader.filter(|l| *l != target)
                            && redirects < MAX_REDIRECTS
                        {
                            debug!(%target, %leader, "redirected to the manager");
                            redirects += 1;
                            hint = Some(leader);
                            continue;
                        }
                    }
                    Ok(ManagerResponse::Unavailable(why)) => {
                        last = format!("manager {target}: {why}");
                    }
                    // A plan decided on a state another proposal changed
                    // first: the same call succeeds on the next try.
                    Ok(ManagerResponse::Refused(why)) if why.code == RefusalCode::Busy => {
                        last = format!("manager {target}: {why}");
                    }
                    Ok(ManagerResponse::Refused(why)) => return Err(GridError::Refused(why)),
                    Ok(answer) => return Ok(answer),
                    Err(OverlayError::Stopped) => {
                        return Err(GridError::NoManager("the node is shutting down".into()));
                    }
                    Err(err) => {
                        last = format!("manager {target}: {err}");
                        // The manager this node believes in is gone: drop the
                        // belief so the daemon asks the coordinators again now.
                        if self.overlay.manager() == Some(target) {
                            self.overlay.set_manager(None);
                        }
                    }
                }
            }
            redirects = 0;
            if tokio::time::Instant::now() + backoff > deadline {
                return Err(GridError::NoManager(last));
            }
            debug!(%last, ?backoff, "manager not reachable yet; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// `strew plan`: the placement the manager would make, without recording it.
    pub async fn dry_run(&self, request: PlanRequest) -> Result<DryRunAnswer, GridError> {
        match self.call(ManagerRequest::DryRun(request.to_wire())).await? {
            ManagerResponse::DryRun(answer) => Ok(answer),
            other => Err(unexpected("dry run", &other)),
        }
    }

    /// Records a grid-key-signed certificate or revocation (`strew grid
    /// admit` / `remove`).
    pub async fn record_trust(&self, request: ManagerRequest) -> Result<(), GridError> {
        match self.call(request).await? {
            ManagerResponse::Recorded => Ok(()),
            other => Err(unexpected("trust change", &other)),
        }
    }

    /// Every node the manager records (`strew grid members`), page by page
    /// (a node recorded between pages may be missed).
    pub async fn members(&self) -> Result<Vec<strew_overlay::manager::MemberSummary>, GridError> {
        use strew_overlay::manager::MAX_MEMBERS_PAGE;
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let request = ManagerRequest::MembersPage {
                after,
                count: MAX_MEMBERS_PAGE as u32,
            };
            let page = match self.call(request).await? {
                ManagerResponse::MembersPage { members, .. } => members,
                other => return Err(unexpected("members", &other)),
            };
            let full = page.len() == MAX_MEMBERS_PAGE;
            after = page.last().map(|m| m.node_id);
            all.extend(page);
            if !full || after.is_none() {
                return Ok(all);
            }
        }
    }

    /// One page of a snapshot audit (`strew check` without `--read-data`):
    /// the leader challenges stripes `from..from+count` now; the stripes'
    /// verdicts and how many stripes the snapshot has.
    pub async fn audit_snapshot_page(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> Result<(Vec<strew_overlay::manager::StripeAudited>, u64), GridError> {
        let request = ManagerRequest::AuditSnapshot {
            snapshot,
            from,
            count,
        };
        match self.call(request).await? {
            ManagerResponse::Audited { stripes, total } => Ok((stripes, total)),
            other => Err(unexpected("audit snapshot", &other)),
        }
    }

    /// How one of this node's snapshots stands with the targets in `down`
    /// unreachable: its stripes' health and what each target holds of it,
    /// summed over as many calls as the snapshot's size takes.
    pub async fn standing(
        &self,
        snapshot: SnapshotId,
        down: Vec<NodeId>,
    ) -> Result<strew_coordinator::manager::Standing, GridError> {
        let mut whole = strew_coordinator::manager::Standing::default();
        let mut from = 0u64;
        loop {
            let request = ManagerRequest::Standing {
                snapshot,
                down: down.clone(),
                from,
            };
            match self.call(request).await? {
                ManagerResponse::Standing { standing, next } => {
                    whole.add(&standing);
                    match next {
                        None => return Ok(whole),
                        // A next call that does not move on would never end.
                        Some(next) if next > from => from = next,
                        Some(next) => {
                            return Err(GridError::Other(format!(
                                "the manager's standing of {snapshot} goes from stripe {from} \
                                 back to {next}"
                            )));
                        }
                    }
                }
                other => return Err(unexpected("standing", &other)),
            }
        }
    }

    /// The grid's convergence secret (refused unless the grid admits this node).
    pub async fn grid_secret(&self) -> Result<strew_overlay::manager::GridSecret, GridError> {
        match self.call(ManagerRequest::GridSecret).await? {
            ManagerResponse::GridSecret(secret) => Ok(secret),
            other => Err(unexpected("grid secret", &other)),
        }
    }

    /// This node leaves the grid (or, with `cancel`, stays after all); the
    /// answer says how many of its packets are still to be moved.
    pub async fn leave(&self, cancel: bool) -> Result<LeaveStatus, GridError> {
        match self.call(ManagerRequest::Leave { cancel }).await? {
            ManagerResponse::Leaving(status) => Ok(status),
            other => Err(unexpected("leave", &other)),
        }
    }

    /// What the manager says about itself.
    pub async fn info(&self) -> Result<ManagerInfo, GridError> {
        match self.call(ManagerRequest::Who).await? {
            ManagerResponse::Info(info) => Ok(info),
            other => Err(unexpected("who", &other)),
        }
    }

    /// Reports RTTs this node measured (location evidence).
    pub async fn report_rtt(&self, report: RttReport) -> Result<(), GridError> {
        match self.call(ManagerRequest::ReportRtt(report)).await? {
            ManagerResponse::Recorded => Ok(()),
            other => Err(unexpected("report rtt", &other)),
        }
    }

    /// The location evidence the manager holds.
    pub async fn evidence(&self) -> Result<Vec<NodeEvidence>, GridError> {
        match self.call(ManagerRequest::Evidence).await? {
            ManagerResponse::Evidence(list) => Ok(list),
            other => Err(unexpected("evidence", &other)),
        }
    }

    /// `strew grid rebuild`: marks the group rebuilt; since when it is.
    pub async fn rebuild(&self) -> Result<u64, GridError> {
        match self.call(ManagerRequest::Rebuild).await? {
            ManagerResponse::Rebuilding { since } => Ok(since),
            other => Err(unexpected("rebuild", &other)),
        }
    }

    /// `strew grid collect-unreferenced`: one page of `target`'s inventory
    /// looked at by the leader.
    pub async fn collect_unreferenced(
        &self,
        target: NodeId,
        after: Option<PacketId>,
        grace_ms: u64,
        dry_run: bool,
    ) -> Result<UnreferencedPage, GridError> {
        let request = ManagerRequest::CollectUnreferenced {
            target,
            after,
            grace_ms,
            dry_run,
        };
        match self.call(request).await? {
            ManagerResponse::Unreferenced {
                scanned,
                found,
                bytes,
                next,
            } if next.is_none_or(|n| after.is_none_or(|a| n > a)) => Ok(UnreferencedPage {
                scanned,
                found,
                bytes,
                next,
            }),
            other => Err(unexpected("collect unreferenced", &other)),
        }
    }

    /// Re-registers one page of a snapshot of a lost group: how many of
    /// its pages the group has now, and how many it has.
    pub async fn reregister(&self, request: ReregisterRequest) -> Result<(u32, u32), GridError> {
        match self
            .call(ManagerRequest::Reregister(Box::new(request)))
            .await?
        {
            ManagerResponse::Reregistered { pages_done, pages } => Ok((pages_done, pages)),
            other => Err(unexpected("reregister", &other)),
        }
    }
}

/// One inventory page the leader looked at for `collect-unreferenced`.
#[derive(Debug, Clone, Copy)]
pub struct UnreferencedPage {
    pub scanned: u64,
    pub found: u64,
    pub bytes: u64,
    pub next: Option<PacketId>,
}

fn unexpected(call: &'static str, answer: &ManagerResponse) -> GridError {
    GridError::Unexpected {
        call,
        answer: match answer {
            ManagerResponse::Planned(_) => "planned",
            ManagerResponse::DryRun(_) => "dry run",
            ManagerResponse::Committed(_) => "committed",
            ManagerResponse::Sequence(_) => "sequence",
            ManagerResponse::SequencePage { .. } => "sequence_page",
            ManagerResponse::Snapshots(_) => "snapshots",
            ManagerResponse::SnapshotsPage { .. } => "snapshots page",
            ManagerResponse::Forgotten(_) => "forgotten",
            ManagerResponse::Abandoned(_) => "abandoned",
            ManagerResponse::ReadTickets(_) => "read tickets",
            ManagerResponse::Recorded => "recorded",
            ManagerResponse::OrderRecorded(_) => "order recorded",
            ManagerResponse::Info(_) => "info",
            ManagerResponse::GridSecret(_) => "grid secret",
            ManagerResponse::Members(_) => "members",
            ManagerResponse::MembersPage { .. } => "members page",
            ManagerResponse::Audited { .. } => "audited",
            ManagerResponse::Standing { .. } => "standing",
            ManagerResponse::Leaving(_) => "leaving",
            ManagerResponse::Evidence(_) => "evidence",
            ManagerResponse::Attestation(_) => "attestation",
            ManagerResponse::Rebuilding { .. } => "rebuilding",
            ManagerResponse::Reregistered { .. } => "reregistered",
            ManagerResponse::Unreferenced { .. } => "unreferenced",
            ManagerResponse::NotManager { .. } => "not manager",
            ManagerResponse::Refused(_) => "refused",
            ManagerResponse::Unavailable(_) => "unavailable",
        },
    }
}

impl ManagerApi for OverlayManager {
    async fn plan(&self, request: PlanRequest) -> Result<PlanDecision, GridError> {
        match self.call(ManagerRequest::Plan(request.to_wire())).await? {
            ManagerResponse::Planned(decision) => Ok(wire::plan_decision(decision)),
            other => Err(unexpected("plan", &other)),
        }
    }

    async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, GridError> {
        match self.call(ManagerRequest::Commit(request.to_wire())).await? {
            ManagerResponse::Committed(response) => Ok(wire::commit_response(response)),
            other => Err(unexpected("commit", &other)),
        }
    }

    async fn fetch_sequence_page(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> Result<(SealedForRecipient, u64), GridError> {
        match self
            .call(ManagerRequest::FetchSequencePage {
                snapshot,
                from,
                count,
            })
            .await?
        {
            ManagerResponse::SequencePage { sealed, total } => Ok((sealed, total)),
            other => Err(unexpected("fetch sequence page", &other)),
        }
    }

    async fn fetch_attestation(
        &self,
        snapshot: SnapshotId,
    ) -> Result<super::Attestation, GridError> {
        match self
            .call(ManagerRequest::FetchAttestation { snapshot })
            .await?
        {
            ManagerResponse::Attestation(a) => Ok(super::Attestation {
                attestation: a.attestation,
                cert: a.cert,
            }),
            other => Err(unexpected("fetch attestation", &other)),
        }
    }

    async fn fetch_sequence(&self, snapshot: SnapshotId) -> Result<SealedForRecipient, GridError> {
        match self
            .call(ManagerRequest::FetchSequence { snapshot })
            .await?
        {
            ManagerResponse::Sequence(sealed) => Ok(sealed),
            other => Err(unexpected("fetch sequence", &other)),
        }
    }

    async fn list(&self, set: Option<String>) -> Result<Vec<SnapshotSummary>, GridError> {
        // In pages: no answer grows with the number of snapshots. A
        // snapshot committed or forgotten between pages may be missed or
        // listed twice; the listing is a view, not a transaction.
        let mut out = Vec::new();
        loop {
            let request = ManagerRequest::ListPage {
                set: set.clone(),
                from: out.len() as u64,
                count: MAX_LIST_PAGE as u32,
            };
            match self.call(request).await? {
                ManagerResponse::SnapshotsPage { snapshots, total } => {
                    let got = snapshots.len();
                    out.extend(snapshots.into_iter().map(wire::snapshot_summary));
                    if got == 0 || out.len() as u64 >= total {
                        return Ok(out);
                    }
                }
                other => return Err(unexpected("list_page", &other)),
            }
        }
    }

    async fn forget(&self, snapshot: SnapshotId) -> Result<ForgetResponse, GridError> {
        match self.call(ManagerRequest::Forget { snapshot }).await? {
            ManagerResponse::Forgotten(response) => Ok(wire::forget_response(response)),
            other => Err(unexpected("forget", &other)),
        }
    }

    async fn record_receipts(
        &self,
        pending_id: u64,
        receipts: Vec<strew_coordinator::StoreReceipt>,
    ) -> Result<(), GridError> {
        match self
            .call(ManagerRequest::Receipts {
                pending_id,
                receipts,
            })
            .await?
        {
            ManagerResponse::Recorded => Ok(()),
            other => Err(unexpected("receipts", &other)),
        }
    }

    async fn retarget(&self, request: RetargetRequest) -> Result<PlanDecision, GridError> {
        match self.call(ManagerRequest::Retarget(request)).await? {
            ManagerResponse::Planned(decision) => Ok(wire::plan_decision(decision)),
            other => Err(unexpected("retarget", &other)),
        }
    }

    async fn commit_order(
        &self,
        request: CommitOrderRequest,
    ) -> Result<CommitOrderResponse, GridError> {
        match self.call(ManagerRequest::CommitOrder(request)).await? {
            ManagerResponse::OrderRecorded(response) => Ok(response),
            other => Err(unexpected("commit_order", &other)),
        }
    }

    async fn abandon(&self, pending_id: u64) -> Result<Vec<StorageTicket>, GridError> {
        match self.call(ManagerRequest::Abandon { pending_id }).await? {
            ManagerResponse::Abandoned(tickets) => Ok(tickets),
            other => Err(unexpected("abandon", &other)),
        }
    }

    async fn record_restore(
        &self,
        snapshot: SnapshotId,
        outcome: RestoreOutcome,
    ) -> Result<(), GridError> {
        match self
            .call(ManagerRequest::RecordRestore {
                snapshot,
                outcome: outcome.to_wire(),
            })
            .await?
        {
            ManagerResponse::Recorded => Ok(()),
            other => Err(unexpected("record restore", &other)),
        }
    }

    async fn read_tickets(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> Result<Vec<StorageTicket>, GridError> {
        match self
            .call(ManagerRequest::ReadTickets {
                snapshot,
                from,
                count,
            })
            .await?
        {
            ManagerResponse::ReadTickets(tickets) => Ok(tickets),
            other => Err(unexpected("read tickets", &other)),
        }
    }

    async fn report_bad(&self, data_id: DataId, packets: Vec<PacketId>) -> Result<(), GridError> {
        match self
            .call(ManagerRequest::ReportBad { data_id, packets })
            .await?
        {
            ManagerResponse::Recorded => Ok(()),
            other => Err(unexpected("report bad", &other)),
        }
    }
}

/// Direct packet exchange over the overlay.
#[derive(Clone, Debug)]
pub struct OverlayTransport {
    overlay: OverlayHandle,
}

impl OverlayTransport {
    pub fn new(overlay: OverlayHandle) -> Self {
        OverlayTransport { overlay }
    }
}

fn transport_error(target: NodeId, err: OverlayError) -> TransportError {
    use strew_overlay::error::RequestFailure;
    let kind = match &err {
        OverlayError::Request { failure, .. } => match failure {
            RequestFailure::Unreachable(_) => TransportFailure::Unreachable,
            RequestFailure::Refused(_) => TransportFailure::Refused,
            RequestFailure::TimedOut(_) => TransportFailure::TimedOut,
            RequestFailure::Io(_) => TransportFailure::Io,
        },
        OverlayError::Refused {
            reason: strew_overlay::Refusal::OtherGeneration,
            ..
        } => TransportFailure::LiveCopy,
        OverlayError::Refused { .. } => TransportFailure::Rejected,
        OverlayError::Stopped | OverlayError::TooLarge { .. } => TransportFailure::Local,
        _ => TransportFailure::Io,
    };
    TransportError::new(target, kind, super::error_text(&err))
}

impl PacketTransport for OverlayTransport {
    async fn put(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
        bytes: Vec<u8>,
    ) -> Result<StoreReceipt, TransportError> {
        let ticket = ticket::encode(ticket).map_err(|e| {
            TransportError::new(target, TransportFailure::Local, super::error_text(&e))
        })?;
        self.overlay
            .put_packet(target, ticket, id, bytes)
            .await
            .map_err(|e| transport_error(target, e))
    }

    async fn get(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
    ) -> Result<Vec<u8>, TransportError> {
        let ticket = ticket::encode(ticket).map_err(|e| {
            TransportError::new(target, TransportFailure::Local, super::error_text(&e))
        })?;
        match self.overlay.get_packet(target, id, ticket).await {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(TransportError::new(
                target,
                TransportFailure::Missing,
                format!("does not hold packet {id}"),
            )),
            Err(e) => Err(transport_error(target, e)),
        }
    }

    async fn delete(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
    ) -> Result<(), TransportError> {
        let ticket = ticket::encode(ticket).map_err(|e| {
            TransportError::new(target, TransportFailure::Local, super::error_text(&e))
        })?;
        self.overlay
            .delete_packet(target, id, ticket)
            .await
            .map(|_existed| ())
            .map_err(|e| transport_error(target, e))
    }

    /// In `DeleteMany` batches, each ticket encoded once.
    async fn delete_many(
        &self,
        target: NodeId,
        deletes: &[(PacketId, &StorageTicket)],
    ) -> Vec<Result<(), TransportError>> {
        let local = |e: &dyn std::error::Error| {
            TransportError::new(target, TransportFailure::Local, super::error_text(e))
        };
        // Each ticket encoded once: the callers name one ticket for all
        // the packets it covers (the same reference).
        // (The index of raw addresses is not `Send`: it ends before any await.)
        let (encoded, which) = {
            let mut index: std::collections::HashMap<*const StorageTicket, usize> =
                Default::default();
            let mut encoded: Vec<Result<Vec<u8>, TransportError>> = Vec::new();
            let mut which = Vec::with_capacity(deletes.len());
            for (_, ticket) in deletes {
                let at = *index.entry(std::ptr::from_ref(*ticket)).or_insert_with(|| {
                    encoded.push(ticket::encode(ticket).map_err(|e| local(&e)));
                    encoded.len() - 1
                });
                which.push(at);
            }
            (encoded, which)
        };
        let mut out: Vec<Option<Result<(), TransportError>>> = vec![None; deletes.len()];
        let mut sendable: Vec<(PacketId, &[u8])> = Vec::new();
        let mut positions = Vec::new();
        for (at, ((id, _), t)) in deletes.iter().zip(&which).enumerate() {
            match &encoded[*t] {
                Ok(bytes) => {
                    sendable.push((*id, bytes.as_slice()));
                    positions.push(at);
                }
                Err(e) => out[at] = Some(Err(e.clone())),
            }
        }
        let mut next = positions.into_iter();
        for batch in strew_overlay::packet::delete_batches(&sendable) {
            let answers: Vec<Result<(), TransportError>> =
                match self.overlay.delete_packets(target, &batch).await {
                    Ok(answers) => answers
                        .into_iter()
                        .map(|a| match a {
                            DeleteAnswer::Deleted { .. } => Ok(()),
                            DeleteAnswer::Refused(reason) => Err(transport_error(
                                target,
                                OverlayError::Refused { target, reason },
                            )),
                        })
                        .collect(),
                    Err(e) => vec![Err(transport_error(target, e)); batch.len()],
                };
            for answer in answers {
                if let Some(at) = next.next() {
                    out[at] = Some(answer);
                }
            }
        }
        out.into_iter()
            .map(|o| {
                o.unwrap_or_else(|| {
                    Err(TransportError::new(
                        target,
                        TransportFailure::Local,
                        "a delete got no answer",
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_delete_of_a_copy_stored_again_is_a_live_copy() {
        let t = NodeId([7; 32]);
        let refused = |reason| transport_error(t, OverlayError::Refused { target: t, reason });
        assert_eq!(
            refused(strew_overlay::Refusal::OtherGeneration).kind,
            TransportFailure::LiveCopy
        );
        assert_eq!(
            refused(strew_overlay::Refusal::NotInTicket).kind,
            TransportFailure::Rejected
        );
    }
}
