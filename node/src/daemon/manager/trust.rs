//! The manager's trust duties: founding the group's grid root from the
//! founder's files, recording grid-key-signed admissions and removals of
//! coordinators, and handing the grid's convergence secret to the nodes the
//! grid admits.
//!
//! Owns the manager calls `Certify`, `Revoke`, `GridSecret`, `Redeem`
//! (an invitation of a closed grid), `Renew` and `Members`, the founding
//! proposal and the grid mode (open, or closed behind invitations) that
//! follows from the root. Every certificate and revocation is checked against
//! the replicated grid id here and again by every member when applied
//! (`TrustState::apply`). Which certified node joins raft, and when, is
//! [`crate::daemon::group`]'s.

use std::collections::BTreeSet;

use strew_coordinator::{
    Command, GridMode, GridRoot, Invite, MemberCert, NodeId, Renewal, Revocation, Subscription,
    TrustCommand, TrustError, TrustState, trust::grid_id_of,
};
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{
    GridSecret, MAX_MEMBERS_PAGE, MemberSummary, Refusal, RefusalCode, SubscriptionInfo,
};
use tracing::{info, warn};

use super::ManagerService;
use crate::consensus::types::Proposal;
use crate::consensus::{Outcome, WriteError};
use crate::trust::GridTrust;

fn untrusted(detail: impl Into<String>) -> ManagerResponse {
    ManagerResponse::Refused(Refusal::new(RefusalCode::Untrusted, detail))
}

/// Why a trust change was not accepted: `Untrusted` for what can never
/// apply, `Unavailable` while the group has no grid root yet (right after
/// the founder formed it: retrying soon succeeds).
fn refused(what: &str, e: &TrustError) -> ManagerResponse {
    match e {
        TrustError::NoGrid => ManagerResponse::Unavailable(Refusal::new(
            RefusalCode::Busy,
            format!("{what} not recorded yet: {e}; retry"),
        )),
        _ => untrusted(format!("{what} refused: {e}")),
    }
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

    /// As leader, once the root is recorded: the grid mode it implies (an
    /// open grid gives every node the default plan; a closed one admits only
    /// invited nodes and certified coordinators).
    pub async fn ensure_grid_mode(&self) -> Result<(), WriteError> {
        let Some(open) = self.replica.read_trust(|t| t.root.as_ref().map(|r| r.open)) else {
            return Ok(());
        };
        let mode = if open {
            GridMode::Open {
                default_plan: Subscription::earned_plan(),
            }
        } else {
            GridMode::Closed {
                token_issuers: Vec::new(),
            }
        };
        if self.replica.read(|m| m.state().mode == mode) || !self.member.is_leader() {
            return Ok(());
        }
        let _turn = self.proposals.lock().await;
        self.member.execute(Command::SetGridMode { mode }).await?;
        info!(open, "grid mode recorded");
        Ok(())
    }

    /// `Redeem`: admits the requester with a grid-key-signed invitation's
    /// subscription (once per invitation, before it expires).
    pub(super) async fn redeem(
        &self,
        requester: NodeId,
        invite: Invite,
        now: u64,
    ) -> ManagerResponse {
        let command = TrustCommand::Redeem {
            invite: invite.clone(),
            node: requester,
            at: now,
        };
        if let Err(e) = self.replica.read_trust(|t| t.check(&command)) {
            return refused("invitation", &e);
        }
        let profile = self
            .overlay
            .with_grid_view(|view| view.iter().find(|p| p.node_id == requester).cloned());
        let Some(profile) = profile.flatten() else {
            return ManagerResponse::Refused(Refusal::new(
                RefusalCode::NotJoined,
                "this node is not in the manager's grid view yet (its announcement may still be travelling); retry",
            ));
        };
        let _turn = self.proposals.lock().await;
        if let Err(r) = self.barrier().await {
            return r;
        }
        if let Err(r) = self.propose_trust(command).await {
            return r;
        }
        let admit = Command::Admit {
            profile,
            subscription: invite.subscription,
            at: now,
        };
        match self.propose(admit).await {
            Ok(_) => {
                info!(node = %requester, "admitted a node with an invitation");
                ManagerResponse::Recorded
            }
            Err(r) => r,
        }
    }

    /// `Renew`: a grid-key-signed new expiry of a node's subscription.
    pub(super) async fn renew(&self, renewal: Renewal, now: u64) -> ManagerResponse {
        let node = renewal.node;
        let expires_at = renewal.expires_at;
        let command = TrustCommand::Renew(renewal);
        if let Err(e) = self.replica.read_trust(|t| t.check(&command)) {
            return refused("renewal", &e);
        }
        let Some(record) = self.replica.read(|m| m.state().clients.get(&node).cloned()) else {
            return ManagerResponse::Refused(Refusal::new(
                RefusalCode::NotJoined,
                format!("{node} has not joined the grid"),
            ));
        };
        let _turn = self.proposals.lock().await;
        if let Err(r) = self.barrier().await {
            return r;
        }
        if let Err(r) = self.propose_trust(command).await {
            return r;
        }
        let admit = Command::Admit {
            profile: record.profile,
            subscription: Subscription {
                expires_at,
                ..record.subscription
            },
            at: now,
        };
        match self.propose(admit).await {
            Ok(_) => ManagerResponse::Recorded,
            Err(r) => r,
        }
    }

    /// `Members` (`page` None: every node, refused past one page) or
    /// `MembersPage` (up to `count` nodes after a node id): each recorded
    /// node's role, subscription and usage (answered to certified
    /// coordinators and recorded nodes).
    pub(super) async fn list_members(
        &self,
        requester: NodeId,
        page: Option<(Option<NodeId>, u32)>,
    ) -> ManagerResponse {
        if let Err(r) = self.barrier().await {
            return r;
        }
        let certified = self.certified();
        let known = certified.contains(&requester)
            || self
                .replica
                .read(|m| m.state().clients.contains_key(&requester));
        if !known {
            return ManagerResponse::Refused(Refusal::new(
                RefusalCode::NotJoined,
                "only nodes of the grid may list its members",
            ));
        }
        let (after, count) = match page {
            Some((_, count)) if count == 0 || count as usize > MAX_MEMBERS_PAGE => {
                return ManagerResponse::Refused(Refusal::new(
                    RefusalCode::Invalid,
                    format!("a members page lists 1 to {MAX_MEMBERS_PAGE} nodes, not {count}"),
                ));
            }
            Some((after, count)) => (after, count as usize),
            None => {
                let total = self.replica.read(|m| m.state().clients.len());
                if total > MAX_MEMBERS_PAGE {
                    return ManagerResponse::Refused(Refusal::new(
                        RefusalCode::Invalid,
                        format!(
                            "{total} members: list them in pages of at most {MAX_MEMBERS_PAGE}"
                        ),
                    ));
                }
                (None, MAX_MEMBERS_PAGE)
            }
        };
        let (list, total) = self.replica.read(|m| {
            use std::ops::Bound;
            let state = m.state();
            let from = after.map_or(Bound::Unbounded, Bound::Excluded);
            let list = state
                .clients
                .range((from, Bound::Unbounded))
                .take(count)
                .map(|(id, c)| {
                    let s = &c.subscription;
                    MemberSummary {
                        node_id: *id,
                        role: if certified.contains(id) {
                            "coordinator".into()
                        } else {
                            "node".into()
                        },
                        subscription: SubscriptionInfo {
                            plan: s.plan.clone(),
                            source_storage: s.source_storage,
                            target_storage: s.target_storage,
                            network_bytes_per_day: s.network_bytes_per_day,
                            bandwidth: s.bandwidth,
                            processor_millicores: s.processor_millicores,
                            expires_at: s.expires_at,
                        },
                        source_stored_bytes: c.source_stored_bytes,
                        target_stored_bytes: state.targets.get(id).map_or(0, |t| t.bytes),
                        online: c.profile.online,
                        network_bytes_today: c.network.used(strew_overlay::now_ms()),
                    }
                })
                .collect();
            (list, state.clients.len() as u64)
        });
        match page {
            Some(_) => ManagerResponse::MembersPage {
                members: list,
                total,
            },
            None => ManagerResponse::Members(list),
        }
    }

    /// In a closed grid, the refusal for a node the manager has not admitted
    /// (no invitation redeemed, not a certified coordinator).
    pub(super) fn closed_to(&self, requester: &NodeId) -> Option<ManagerResponse> {
        let closed = self.replica.read(|m| {
            matches!(m.state().mode, GridMode::Closed { .. })
                && !m.state().clients.contains_key(requester)
        });
        (closed && !self.replica.read_trust(|t| t.is_member(requester))).then(|| {
            ManagerResponse::Refused(Refusal::new(
                RefusalCode::Quota,
                format!(
                    "this is a closed grid and {requester} holds no subscription: ask the grid's owner for a join token (`strew grid invite`) and start this node from it (`strew init --join TOKEN`)"
                ),
            ))
        })
    }

    /// `Certify`: records a grid-key-signed certificate (leader only).
    pub(super) async fn certify(&self, cert: MemberCert) -> ManagerResponse {
        let command = TrustCommand::Certify(cert);
        if let Err(e) = self.replica.read_trust(|t| t.check(&command)) {
            return refused("certificate", &e);
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
            return refused("revocation", &e);
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
