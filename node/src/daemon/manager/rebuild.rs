//! The manager service's side of outliving the coordinator group (issue 18):
//! a sequence with this leader's attestation and certificate (what a
//! source's snapshot root keeps), `strew grid rebuild` from a certified
//! member, and sources' re-registrations of a lost group's snapshots. The
//! checks and the records are the coordinator's (`fetch_attested_sequence`,
//! `decide_begin_rebuild`, `decide_reregister`); finding the roots and
//! re-registering them is [`crate::grid::rebuild`]'s.

use strew_coordinator::{ManagerError, NodeId, Registration, SnapshotId};
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{AttestedSequence, Refusal, RefusalCode, ReregisterRequest};
use tracing::info;

use super::{ManagerService, heavy, refuse};
use crate::sync::lock;
use crate::wire;

impl ManagerService {
    /// Since when the applied state says the group is a rebuilt one.
    pub fn rebuilt_since(&self) -> Option<u64> {
        self.replica.read(|m| m.state().rebuilt_since)
    }

    /// `FetchAttestedSequence`: the sequence, this leader's attestation of
    /// it, and this leader's grid-key certificate.
    pub(super) async fn attested_sequence(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> ManagerResponse {
        if let Err(r) = self.barrier().await {
            return r;
        }
        let attested = heavy(|| {
            self.replica
                .read(|m| m.fetch_attested_sequence(requester, snapshot, &mut *lock(&self.rng)))
        });
        let me = self.overlay().node_id();
        let cert = self
            .replica
            .read_trust(|t| t.certificates().into_iter().find(|c| c.node == me));
        match attested {
            Ok(a) => ManagerResponse::AttestedSequence(Box::new(AttestedSequence {
                sealed: a.sealed,
                attestation: a.attestation,
                cert,
            })),
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

    /// `Reregister`: a source's snapshot of the lost group, checked against
    /// the grid this group pins. The caller holds `proposals`.
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
        let registration = Registration {
            attestation: request.attestation,
            cert: request.cert,
            sequence: request.sequence,
            params: wire::backup_params(request.params),
        };
        let command = heavy(|| {
            self.replica.read(|m| {
                m.decide_reregister(requester, &registration, &grid, now, &mut *lock(&self.rng))
            })
        })
        .map_err(|e| refuse(&e))?;
        let known = command.is_none();
        if let Some(command) = command {
            self.propose(command).await?;
            info!(
                source = %requester,
                snapshot = %registration.attestation.what.snapshot,
                "re-registered a snapshot of the lost coordinator group"
            );
        }
        Ok(ManagerResponse::Reregistered { known })
    }
}
