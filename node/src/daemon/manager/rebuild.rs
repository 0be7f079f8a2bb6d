//! The manager service's side of outliving the coordinator group (issue 18):
//! this leader's attestation of a sequence and its certificate (what a
//! source's snapshot root keeps), `strew grid rebuild` from a certified
//! member, sources' page-by-page re-registrations of a lost group's
//! snapshots, and an operator's collection of the packets no snapshot
//! references once the rebuild's grace is over. The checks and the records are the coordinator's (`fetch_attestation`,
//! `decide_begin_rebuild`, `decide_reregister`); finding the roots and
//! re-registering them is [`crate::grid::rebuild`]'s.

use strew_coordinator::manager::ReregisterDecision;
use strew_coordinator::{ManagerError, NodeId, Registration, SnapshotId, Unreferenced};
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{AttestationAnswer, Refusal, RefusalCode, ReregisterRequest};
use strew_overlay::packet::MAX_INVENTORY_PAGE;
use tracing::info;

use super::{ManagerService, heavy, refuse};
use crate::sync::lock;
use crate::wire;

impl ManagerService {
    /// Since when the applied state says the group is a rebuilt one.
    pub fn rebuilt_since(&self) -> Option<u64> {
        self.replica.read(|m| m.state().rebuilt_since)
    }

    /// `FetchAttestation`: this leader's attestation of a sequence, and its
    /// grid-key certificate.
    pub(super) async fn attestation(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> ManagerResponse {
        if let Err(r) = self.barrier().await {
            return r;
        }
        let attested = heavy(|| {
            self.replica
                .read(|m| m.fetch_attestation(requester, snapshot))
        });
        let me = self.overlay().node_id();
        let cert = self
            .replica
            .read_trust(|t| t.certificates().into_iter().find(|c| c.node == me));
        match attested {
            Ok(attestation) => {
                ManagerResponse::Attestation(Box::new(AttestationAnswer { attestation, cert }))
            }
            Err(e) => refuse(&e),
        }
    }

    /// `Rebuild`: marks the group rebuilt, only for a certified member. The
    /// caller holds `proposals`.
    pub(super) async fn rebuild(
        &self,
        requester: NodeId,
        now: u64,
    ) -> Result<ManagerResponse, ManagerResponse> {
        if !self.certified().contains(&requester) {
            return Err(ManagerResponse::Refused(Refusal::new(
                RefusalCode::NotOwner,
                "only a certified coordinator of this grid may mark its group rebuilt",
            )));
        }
        if let Some(command) = self
            .replica
            .read(|m| m.decide_begin_rebuild(requester, now))
        {
            self.propose(command).await?;
            info!(by = %requester, "the coordinator group is marked rebuilt: sources re-register their snapshots");
        }
        let since = self
            .replica
            .read(|m| m.state().rebuilt_since)
            .unwrap_or(now);
        Ok(ManagerResponse::Rebuilding { since })
    }

    /// `Reregister`: one page of a source's snapshot of the lost group,
    /// checked against the grid this group pins. The caller holds
    /// `proposals`.
    pub(super) async fn reregister(
        &self,
        requester: NodeId,
        request: ReregisterRequest,
        now: u64,
    ) -> Result<ManagerResponse, ManagerResponse> {
        let Some(grid) = self.replica.read_trust(|t| t.grid()) else {
            return Err(refuse(&ManagerError::Invalid(
                "this coordinator group has no grid: it takes no re-registered snapshots".into(),
            )));
        };
        let Some(pages) = request.page_digests() else {
            return Err(refuse(&ManagerError::Invalid(
                "the page digests are not 32 bytes each".into(),
            )));
        };
        let registration = Registration {
            attestation: request.attestation,
            cert: request.cert,
            pages,
            page: request.page,
            sequence: request.sequence,
            params: wire::backup_params(request.params),
        };
        let decision = heavy(|| {
            self.replica.read(|m| {
                m.decide_reregister(requester, &registration, &grid, now, &mut *lock(&self.rng))
            })
        })
        .map_err(|e| refuse(&e))?;
        let pages = registration.pages.len() as u32;
        match decision {
            ReregisterDecision::Have { pages_done, pages } => {
                Ok(ManagerResponse::Reregistered { pages_done, pages })
            }
            ReregisterDecision::Propose(command) => {
                self.propose(*command).await?;
                let pages_done = registration.page + 1;
                if pages_done == pages {
                    info!(
                        source = %requester,
                        snapshot = %registration.attestation.what.snapshot,
                        pages,
                        "re-registered a snapshot of the lost coordinator group"
                    );
                }
                Ok(ManagerResponse::Reregistered { pages_done, pages })
            }
        }
    }

    /// `CollectUnreferenced`: one page of `target`'s inventory, and the
    /// packets of it no record references queued for collection (counted
    /// only, for a dry run). Only a certified member may ask, and only once
    /// the rebuild's grace is over (checked before the target is asked).
    pub(super) async fn collect_unreferenced(
        &self,
        requester: NodeId,
        page: CollectPage,
        now: u64,
    ) -> ManagerResponse {
        if !self.certified().contains(&requester) {
            return ManagerResponse::Refused(Refusal::new(
                RefusalCode::NotOwner,
                "only a certified coordinator of this grid may collect unreferenced packets",
            ));
        }
        if let Err(r) = self.barrier().await {
            return r;
        }
        let decide = |held: &[Unreferenced], dry_run| {
            self.replica.read(|m| {
                m.decide_collect_unreferenced(
                    requester,
                    page.target,
                    held,
                    page.grace_ms,
                    dry_run,
                    now,
                )
            })
        };
        if let Err(e) = decide(&[], true) {
            return refuse(&e);
        }
        let listed = match self.overlay().inventory(page.target, page.after).await {
            Ok(listed) => listed,
            Err(err) => {
                // Busy: this target, not the request, failed; try it again later.
                return ManagerResponse::Refused(Refusal::new(
                    RefusalCode::Busy,
                    format!("target {} did not list its packets: {err}", page.target),
                ));
            }
        };
        let next = (listed.len() == MAX_INVENTORY_PAGE)
            .then(|| listed.last().map(|p| p.packet_id))
            .flatten();
        let held: Vec<Unreferenced> = listed
            .iter()
            .map(|p| Unreferenced {
                packet_id: p.packet_id,
                generation: p.generation,
                size: p.size,
            })
            .collect();
        let (command, found) = match decide(&held, page.dry_run) {
            Ok(decided) => decided,
            Err(e) => return refuse(&e),
        };
        if let Some(command) = command {
            let _turn = self.proposals.lock().await;
            if let Err(r) = self.propose(command).await {
                return r;
            }
            info!(
                by = %requester,
                target = %page.target,
                packets = found.len(),
                "packets no snapshot references are queued for collection"
            );
        }
        ManagerResponse::Unreferenced {
            scanned: listed.len() as u64,
            found: found.len() as u64,
            bytes: found.iter().map(|p| p.size).sum(),
            next,
        }
    }
}

/// One `CollectUnreferenced` call's arguments.
#[derive(Debug, Clone, Copy)]
pub(super) struct CollectPage {
    pub target: NodeId,
    pub after: Option<strew_coordinator::PacketId>,
    pub grace_ms: u64,
    pub dry_run: bool,
}
