//! The manager service's side of outliving the coordinator group (issue 18):
//! this leader's attestation of a sequence and its certificate (what a
//! source's snapshot root keeps), `strew grid rebuild` from a certified
//! member, and sources' page-by-page re-registrations of a lost group's
//! snapshots. The checks and the records are the coordinator's (`fetch_attestation`,
//! `decide_begin_rebuild`, `decide_reregister`); finding the roots and
//! re-registering them is [`crate::grid::rebuild`]'s.

use strew_coordinator::manager::ReregisterDecision;
use strew_coordinator::{ManagerError, NodeId, Registration, SnapshotId};
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{AttestationAnswer, Refusal, RefusalCode, ReregisterRequest};
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
                self.propose(command).await?;
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
}
