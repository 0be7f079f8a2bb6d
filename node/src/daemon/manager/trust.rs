//! The manager's trust duties: founding the group's grid root from the
//! founder's files, recording grid-key-signed admissions and removals of
//! coordinators, and handing the grid's convergence secret to the nodes the
//! grid admits.
//!
//! Owns the manager calls `Certify`, `Revoke` and `GridSecret` and the
//! founding proposal. Every certificate and revocation is checked against
//! the replicated grid id here and again by every member when applied
//! (`TrustState::apply`). Which certified node joins raft, and when, is
//! [`crate::daemon::group`]'s.

use std::collections::BTreeSet;

use strew_coordinator::{
    GridRoot, MemberCert, NodeId, Revocation, TrustCommand, TrustState, trust::grid_id_of,
};
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{GridSecret, Refusal, RefusalCode};
use tracing::{info, warn};

use super::ManagerService;
use crate::consensus::types::Proposal;
use crate::consensus::{Outcome, WriteError};
use crate::trust::GridTrust;

fn untrusted(detail: impl Into<String>) -> ManagerResponse {
    ManagerResponse::Refused(Refusal::new(RefusalCode::Untrusted, detail))
}

impl ManagerService {
    /// The coordinators certified in the replicated state.
    pub fn certified(&self) -> BTreeSet<NodeId> {
        self.replica.read_trust(TrustState::members)
    }

    /// The replicated trust root and certificates.
    pub fn trust_state(&self) -> TrustState {
        self.replica.trust()
    }

    /// Proposes a trust change (the caller holds `proposals`).
    async fn propose_trust(&self, command: TrustCommand) -> Result<(), ManagerResponse> {
        match self.member.propose(Proposal::Trust(command)).await {
            Ok(committed) => match committed.outcome {
                Outcome::Applied(_) => Ok(()),
                Outcome::Rejected(why) => Err(untrusted(why.to_string())),
            },
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// On the founder's node, as leader of a group with no grid root yet:
    /// proposes the root (grid id, open or closed, convergence secret) and
    /// this node's own certificate.
    pub async fn ensure_grid_root(&self, trust: &GridTrust, now: u64) -> Result<(), WriteError> {
        if self.replica.read_trust(|t| t.root.is_some()) || !self.member.is_leader() {
            return Ok(());
        }
        let local = trust.local();
        let (Some(key), Some(convergence)) = (local.key, local.convergence) else {
            return Ok(());
        };
        let me = self.overlay.node_id();
        let founder = match MemberCert::issue(&key, me, now) {
            Ok(cert) => cert,
            Err(err) => {
                warn!(%err, "cannot certify this node with the grid key");
                return Ok(());
            }
        };
        let root = GridRoot {
            grid: grid_id_of(&key),
            open: local.open.unwrap_or(false),
            convergence,
        };
        let grid = root.grid;
        let _turn = self.proposals.lock().await;
        let committed = self
            .member
            .propose(Proposal::Trust(TrustCommand::Found { root, founder }))
            .await?;
        if let Outcome::Applied(_) = committed.outcome {
            info!(%grid, "founded the coordinator group of grid");
        }
        Ok(())
    }

    /// `Certify`: records a grid-key-signed certificate (leader only).
    pub(super) async fn certify(&self, cert: MemberCert) -> ManagerResponse {
        let command = TrustCommand::Certify(cert);
        if let Err(e) = self.replica.read_trust(|t| t.check(&command)) {
            return untrusted(format!("certificate refused: {e}"));
        }
        let _turn = self.proposals.lock().await;
        if let Err(r) = self.barrier().await {
            return r;
        }
        if let TrustCommand::Certify(cert) = &command {
            info!(node = %cert.node, "recording a coordinator certificate");
        }
        match self.propose_trust(command).await {
            Ok(()) => ManagerResponse::Recorded,
            Err(r) => r,
        }
    }

    /// `Revoke`: records a grid-key-signed revocation (leader only); the
    /// group loop then removes the node from raft.
    pub(super) async fn revoke(&self, revocation: Revocation) -> ManagerResponse {
        let node = revocation.node;
        let command = TrustCommand::Revoke(revocation);
        if let Err(e) = self.replica.read_trust(|t| t.check(&command)) {
            return untrusted(format!("revocation refused: {e}"));
        }
        let _turn = self.proposals.lock().await;
        if let Err(r) = self.barrier().await {
            return r;
        }
        info!(%node, "recording the removal of a coordinator");
        match self.propose_trust(command).await {
            Ok(()) => ManagerResponse::Recorded,
            Err(r) => r,
        }
    }

    /// `GridSecret`: the convergence secret, for a node the grid admits: a
    /// certified coordinator always; in an open grid any node the manager
    /// has in its records (joined through gossip); in a closed grid a node
    /// whose record carries a subscription from a join token.
    pub(super) async fn grid_secret(&self, requester: NodeId) -> ManagerResponse {
        if let Err(r) = self.barrier().await {
            return r;
        }
        let Some(root) = self.replica.read_trust(|t| t.root.clone()) else {
            return ManagerResponse::Refused(Refusal::new(
                RefusalCode::NoGroup,
                "the coordinator group has no grid root yet",
            ));
        };
        let certified = self.replica.read_trust(|t| t.is_member(&requester));
        let admitted = certified
            || self.replica.read(|m| {
                m.state().clients.get(&requester).is_some_and(|c| {
                    root.open
                        || c.subscription.plan
                            != strew_coordinator::Subscription::default_plan().plan
                })
            });
        if !admitted {
            let why = if root.open {
                "this node has not joined the grid yet (its announcement may still be travelling)"
            } else {
                "this is a closed grid: join it with a token from `strew grid invite`"
            };
            let code = if root.open {
                RefusalCode::NotJoined
            } else {
                RefusalCode::Quota
            };
            return ManagerResponse::Refused(Refusal::new(code, why));
        }
        ManagerResponse::GridSecret(GridSecret {
            grid_id: root.grid,
            open: root.open,
            convergence: root.convergence,
        })
    }
}
