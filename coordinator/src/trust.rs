//! The grid's trust root: the grid key, the membership certificates it
//! signs, their revocations, and the replicated record of who is certified.
//!
//! Owns [`GridId`] derivation (the public half of the Ed25519 grid key),
//! [`MemberCert`] and [`Revocation`] (signing and offline verification, with
//! their own domain-separation contexts), [`GridRoot`] (the grid id, whether
//! the grid is open, and the grid-scope convergence secret) and
//! [`TrustState`], the part of the coordinator group's replicated state that
//! says which nodes are certified coordinators. A node is a member only while
//! it holds a certificate chained to the grid id that is newer than any
//! revocation of it. This module must not decide when to admit a node (the
//! daemon's group policy does), keep the grid key (the founding node's data
//! dir does) or do any I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{GridId, NodeId};
use crate::quota::Subscription;
use crate::units::Millis;

/// Domain separation for membership certificates.
const CERT_CONTEXT: &[u8] = b"strew/member-cert/v1\0";
/// Domain separation for revocations.
const REVOKE_CONTEXT: &[u8] = b"strew/member-revoke/v1\0";
/// Domain separation for invitations (join tokens).
const INVITE_CONTEXT: &[u8] = b"strew/invite/v1\0";
/// Domain separation for subscription renewals.
const RENEW_CONTEXT: &[u8] = b"strew/renew/v1\0";
/// Most bootstrap addresses an invitation carries, and their length.
pub const MAX_INVITE_BOOTSTRAP: usize = 8;
const MAX_ADDR_LEN: usize = 512;
const CERT_VERSION: u8 = 1;
/// Most certificates a member list may carry (the group has at most a few
/// voters and learners; this bounds the work of checking a list).
pub const MAX_CERTIFIED: usize = 32;

/// Why a certificate, a revocation or a trust command is not accepted.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustError {
    #[error("signed for grid {got}, but this grid is {expected}")]
    WrongGrid { expected: GridId, got: GridId },
    #[error("format version {0} is not understood (this node knows version {CERT_VERSION})")]
    UnknownVersion(u8),
    #[error("the grid key's signature does not verify")]
    BadSignature,
    #[error("grid id {0} is not a valid Ed25519 key")]
    BadGridKey(GridId),
    #[error("the coordinator group has no grid root yet (the founder's node has not founded it)")]
    NoGrid,
    #[error("the group already belongs to grid {0}")]
    AlreadyFounded(GridId),
    #[error("the founder's certificate names {cert}, not the grid {root}")]
    FounderMismatch { root: GridId, cert: GridId },
    #[error(
        "the certificate of {node} (issued at {issued_at} ms) predates its revocation at {revoked_at} ms"
    )]
    Revoked {
        node: NodeId,
        issued_at: Millis,
        revoked_at: Millis,
    },
    #[error("the signed bytes do not encode: {0}")]
    Malformed(String),
    #[error("the invitation expired at {0} ms")]
    InviteExpired(Millis),
    #[error("the invitation was already used by {0}")]
    InviteUsed(NodeId),
    #[error("the renewal is older than the last one applied for {0}")]
    StaleRenewal(NodeId),
}

/// The grid id of a grid key.
pub fn grid_id_of(grid_key: &SigningKey) -> GridId {
    GridId(grid_key.verifying_key().to_bytes())
}

/// What a grid-key signature covers.
#[derive(Serialize)]
struct SignedBody<'a> {
    version: u8,
    grid: &'a GridId,
    node: &'a NodeId,
    at: Millis,
}

fn signed_bytes(
    context: &[u8],
    version: u8,
    grid: &GridId,
    node: &NodeId,
    at: Millis,
) -> Result<Vec<u8>, TrustError> {
    let mut out = context.to_vec();
    let body = SignedBody {
        version,
        grid,
        node,
        at,
    };
    crate::cbor::encode_into(&body, &mut out).map_err(|e| TrustError::Malformed(e.to_string()))?;
    Ok(out)
}

fn verify_signature(grid: &GridId, bytes: &[u8], signature: &[u8]) -> Result<(), TrustError> {
    let key =
        VerifyingKey::from_bytes(grid.as_bytes()).map_err(|_| TrustError::BadGridKey(*grid))?;
    let signature: [u8; 64] = signature.try_into().map_err(|_| TrustError::BadSignature)?;
    key.verify_strict(bytes, &Signature::from_bytes(&signature))
        .map_err(|_| TrustError::BadSignature)
}

/// The grid key's statement "`node` is a coordinator of grid `grid`",
/// made at `issued_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberCert {
    pub version: u8,
    pub grid: GridId,
    pub node: NodeId,
    pub issued_at: Millis,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// The checks every grid-key statement starts with: a version this node
/// understands, made for the grid it pinned.
fn check_header(version: u8, made_for: &GridId, pinned: &GridId) -> Result<(), TrustError> {
    if version != CERT_VERSION {
        return Err(TrustError::UnknownVersion(version));
    }
    if made_for != pinned {
        return Err(TrustError::WrongGrid {
            expected: *pinned,
            got: *made_for,
        });
    }
    Ok(())
}

impl MemberCert {
    /// Signs a certificate for `node` with the grid key.
    pub fn issue(
        grid_key: &SigningKey,
        node: NodeId,
        issued_at: Millis,
    ) -> Result<Self, TrustError> {
        let grid = grid_id_of(grid_key);
        let bytes = signed_bytes(CERT_CONTEXT, CERT_VERSION, &grid, &node, issued_at)?;
        Ok(MemberCert {
            version: CERT_VERSION,
            grid,
            node,
            issued_at,
            signature: grid_key.sign(&bytes).to_bytes().to_vec(),
        })
    }

    /// Checks the certificate offline against the pinned grid id.
    pub fn verify(&self, grid: &GridId) -> Result<(), TrustError> {
        check_header(self.version, &self.grid, grid)?;
        let bytes = signed_bytes(
            CERT_CONTEXT,
            self.version,
            &self.grid,
            &self.node,
            self.issued_at,
        )?;
        verify_signature(grid, &bytes, &self.signature)
    }
}

/// The grid key's statement "`node` is no longer a coordinator", made at
/// `at`: every certificate of `node` issued at or before `at` is void.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub version: u8,
    pub grid: GridId,
    pub node: NodeId,
    pub at: Millis,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl Revocation {
    /// Signs a revocation of `node` with the grid key.
    pub fn issue(grid_key: &SigningKey, node: NodeId, at: Millis) -> Result<Self, TrustError> {
        let grid = grid_id_of(grid_key);
        let bytes = signed_bytes(REVOKE_CONTEXT, CERT_VERSION, &grid, &node, at)?;
        Ok(Revocation {
            version: CERT_VERSION,
            grid,
            node,
            at,
            signature: grid_key.sign(&bytes).to_bytes().to_vec(),
        })
    }

    /// Checks the revocation offline against the pinned grid id.
    pub fn verify(&self, grid: &GridId) -> Result<(), TrustError> {
        check_header(self.version, &self.grid, grid)?;
        let bytes = signed_bytes(
            REVOKE_CONTEXT,
            self.version,
            &self.grid,
            &self.node,
            self.at,
        )?;
        verify_signature(grid, &bytes, &self.signature)
    }
}

/// The grid key's invitation to join a closed grid with a subscription:
/// what `strew grid invite` prints (inside a join token). A bearer
/// credential: the first node that redeems it gets the subscription; it can
/// be redeemed only once and only until `valid_until`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invite {
    pub version: u8,
    pub grid: GridId,
    /// Random; names the invitation so it is redeemed once.
    pub id: [u8; 16],
    pub subscription: Subscription,
    pub valid_until: Millis,
    /// Where the grid can be reached (multiaddrs).
    pub bootstrap: Vec<String>,
    /// The grid-scope convergence secret.
    pub convergence: [u8; 32],
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl fmt::Debug for Invite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invite")
            .field("grid", &self.grid)
            .field("subscription", &self.subscription)
            .field("valid_until", &self.valid_until)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct InviteBody<'a> {
    version: u8,
    grid: &'a GridId,
    id: &'a [u8; 16],
    subscription: &'a Subscription,
    valid_until: Millis,
    bootstrap: &'a [String],
    convergence: &'a [u8; 32],
}

impl Invite {
    fn signed_bytes(&self) -> Result<Vec<u8>, TrustError> {
        let mut out = INVITE_CONTEXT.to_vec();
        let body = InviteBody {
            version: self.version,
            grid: &self.grid,
            id: &self.id,
            subscription: &self.subscription,
            valid_until: self.valid_until,
            bootstrap: &self.bootstrap,
            convergence: &self.convergence,
        };
        crate::cbor::encode_into(&body, &mut out)
            .map_err(|e| TrustError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Signs an invitation with the grid key (bootstrap addresses beyond
    /// [`MAX_INVITE_BOOTSTRAP`] are dropped).
    pub fn issue(
        grid_key: &SigningKey,
        id: [u8; 16],
        subscription: Subscription,
        valid_until: Millis,
        mut bootstrap: Vec<String>,
        convergence: [u8; 32],
    ) -> Result<Self, TrustError> {
        bootstrap.truncate(MAX_INVITE_BOOTSTRAP);
        bootstrap.retain(|a| a.len() <= MAX_ADDR_LEN);
        let mut invite = Invite {
            version: CERT_VERSION,
            grid: grid_id_of(grid_key),
            id,
            subscription,
            valid_until,
            bootstrap,
            convergence,
            signature: Vec::new(),
        };
        invite.signature = grid_key.sign(&invite.signed_bytes()?).to_bytes().to_vec();
        Ok(invite)
    }

    /// Checks the signature against the pinned grid id (not the expiry).
    pub fn verify(&self, grid: &GridId) -> Result<(), TrustError> {
        check_header(self.version, &self.grid, grid)?;
        if self.bootstrap.len() > MAX_INVITE_BOOTSTRAP
            || self.bootstrap.iter().any(|a| a.len() > MAX_ADDR_LEN)
        {
            return Err(TrustError::Malformed(
                "too many or too long bootstrap addresses".into(),
            ));
        }
        verify_signature(grid, &self.signed_bytes()?, &self.signature)
    }
}

/// The grid key's new expiry for `node`'s subscription (`strew grid renew`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    pub version: u8,
    pub grid: GridId,
    pub node: NodeId,
    /// The new end of the subscription (`None`: open-ended).
    pub expires_at: Option<Millis>,
    /// When it was signed: a renewal older than the last applied one is refused.
    pub at: Millis,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct RenewalBody<'a> {
    version: u8,
    grid: &'a GridId,
    node: &'a NodeId,
    expires_at: Option<Millis>,
    at: Millis,
}

impl Renewal {
    fn signed_bytes(&self) -> Result<Vec<u8>, TrustError> {
        let mut out = RENEW_CONTEXT.to_vec();
        let body = RenewalBody {
            version: self.version,
            grid: &self.grid,
            node: &self.node,
            expires_at: self.expires_at,
            at: self.at,
        };
        crate::cbor::encode_into(&body, &mut out)
            .map_err(|e| TrustError::Malformed(e.to_string()))?;
        Ok(out)
    }

    pub fn issue(
        grid_key: &SigningKey,
        node: NodeId,
        expires_at: Option<Millis>,
        at: Millis,
    ) -> Result<Self, TrustError> {
        let mut renewal = Renewal {
            version: CERT_VERSION,
            grid: grid_id_of(grid_key),
            node,
            expires_at,
            at,
            signature: Vec::new(),
        };
        renewal.signature = grid_key.sign(&renewal.signed_bytes()?).to_bytes().to_vec();
        Ok(renewal)
    }

    pub fn verify(&self, grid: &GridId) -> Result<(), TrustError> {
        check_header(self.version, &self.grid, grid)?;
        verify_signature(grid, &self.signed_bytes()?, &self.signature)
    }
}

/// What the founder gives the group: the grid id, whether the grid is open,
/// and the grid-scope convergence secret (handed to admitted nodes).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridRoot {
    pub grid: GridId,
    pub open: bool,
    pub convergence: [u8; 32],
}

impl fmt::Debug for GridRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GridRoot")
            .field("grid", &self.grid)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// A change of who is trusted, as the coordinator group replicates it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TrustCommand {
    /// The founder's node forms the group: the grid root and its own certificate.
    Found { root: GridRoot, founder: MemberCert },
    /// A grid-key-signed certificate admits a coordinator.
    Certify(MemberCert),
    /// A grid-key-signed revocation removes one.
    Revoke(Revocation),
    /// `node` redeemed an invitation at `at` (once per invitation).
    Redeem {
        invite: Invite,
        node: NodeId,
        at: Millis,
    },
    /// A grid-key-signed renewal of a subscription.
    Renew(Renewal),
}

/// The replicated record of the trust root and its certified coordinators.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustState {
    pub root: Option<GridRoot>,
    /// The newest valid certificate of each certified node.
    pub certs: BTreeMap<NodeId, MemberCert>,
    /// The newest revocation time of each removed node.
    pub revoked: BTreeMap<NodeId, Millis>,
    /// Invitations redeemed, and by whom.
    #[serde(default)]
    pub redeemed: BTreeMap<[u8; 16], NodeId>,
    /// The signing time of the last renewal applied per node.
    #[serde(default)]
    pub renewed: BTreeMap<NodeId, Millis>,
}

impl TrustState {
    /// The grid id, once founded.
    pub fn grid(&self) -> Option<GridId> {
        self.root.as_ref().map(|r| r.grid)
    }

    /// The certified coordinators.
    pub fn members(&self) -> BTreeSet<NodeId> {
        self.certs.keys().copied().collect()
    }

    pub fn is_member(&self, node: &NodeId) -> bool {
        self.certs.contains_key(node)
    }

    /// The certificates of the certified coordinators, in NodeId order.
    pub fn certificates(&self) -> Vec<MemberCert> {
        self.certs.values().cloned().collect()
    }

    /// Checks `command` against the state without changing it.
    pub fn check(&self, command: &TrustCommand) -> Result<(), TrustError> {
        match command {
            TrustCommand::Found { root, founder } => {
                if let Some(grid) = self.grid() {
                    return Err(TrustError::AlreadyFounded(grid));
                }
                if founder.grid != root.grid {
                    return Err(TrustError::FounderMismatch {
                        root: root.grid,
                        cert: founder.grid,
                    });
                }
                founder.verify(&root.grid)
            }
            TrustCommand::Certify(cert) => {
                let grid = self.grid().ok_or(TrustError::NoGrid)?;
                cert.verify(&grid)?;
                match self.revoked.get(&cert.node) {
                    Some(&revoked_at) if cert.issued_at <= revoked_at => Err(TrustError::Revoked {
                        node: cert.node,
                        issued_at: cert.issued_at,
                        revoked_at,
                    }),
                    _ => Ok(()),
                }
            }
            TrustCommand::Revoke(revocation) => {
                let grid = self.grid().ok_or(TrustError::NoGrid)?;
                revocation.verify(&grid)
            }
            TrustCommand::Redeem { invite, node, at } => {
                let grid = self.grid().ok_or(TrustError::NoGrid)?;
                invite.verify(&grid)?;
                match self.redeemed.get(&invite.id) {
                    Some(by) if by != node => return Err(TrustError::InviteUsed(*by)),
                    Some(_) => return Ok(()),
                    None => {}
                }
                if *at > invite.valid_until {
                    return Err(TrustError::InviteExpired(invite.valid_until));
                }
                Ok(())
            }
            TrustCommand::Renew(renewal) => {
                let grid = self.grid().ok_or(TrustError::NoGrid)?;
                renewal.verify(&grid)?;
                match self.renewed.get(&renewal.node) {
                    Some(&last) if renewal.at <= last => {
                        Err(TrustError::StaleRenewal(renewal.node))
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Applies `command` (checked first; the state is unchanged when it fails).
    pub fn apply(&mut self, command: &TrustCommand) -> Result<(), TrustError> {
        self.check(command)?;
        match command {
            TrustCommand::Found { root, founder } => {
                self.root = Some(root.clone());
                self.certs.insert(founder.node, founder.clone());
            }
            TrustCommand::Certify(cert) => {
                let newer = self
                    .certs
                    .get(&cert.node)
                    .is_none_or(|known| known.issued_at < cert.issued_at);
                if newer {
                    self.certs.insert(cert.node, cert.clone());
                }
            }
            TrustCommand::Revoke(revocation) => {
                let at = self.revoked.entry(revocation.node).or_insert(revocation.at);
                *at = (*at).max(revocation.at);
                let at = *at;
                if self
                    .certs
                    .get(&revocation.node)
                    .is_some_and(|c| c.issued_at <= at)
                {
                    self.certs.remove(&revocation.node);
                }
            }
            TrustCommand::Redeem { invite, node, .. } => {
                self.redeemed.insert(invite.id, *node);
            }
            TrustCommand::Renew(renewal) => {
                self.renewed.insert(renewal.node, renewal.at);
            }
        }
        Ok(())
    }
}

/// The nodes of `claimed` that hold a valid certificate of `grid` among
/// `certs` (at most [`MAX_CERTIFIED`] certificates are looked at): what a
/// node believes of a member list someone sent it.
pub fn certified_members(
    grid: &GridId,
    claimed: &[NodeId],
    certs: &[MemberCert],
) -> BTreeSet<NodeId> {
    certs
        .iter()
        .take(MAX_CERTIFIED)
        .filter(|c| claimed.contains(&c.node) && c.verify(grid).is_ok())
        .map(|c| c.node)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn root(grid_key: &SigningKey) -> GridRoot {
        GridRoot {
            grid: grid_id_of(grid_key),
            open: false,
            convergence: [9; 32],
        }
    }

    #[test]
    fn a_certificate_verifies_only_against_its_grid_and_unaltered() {
        let grid_key = key(1);
        let grid = grid_id_of(&grid_key);
        let cert = MemberCert::issue(&grid_key, NodeId([5; 32]), 100).expect("signs");
        assert_eq!(cert.verify(&grid), Ok(()));
        let other = grid_id_of(&key(2));
        assert!(matches!(
            cert.verify(&other),
            Err(TrustError::WrongGrid { .. })
        ));
        let mut moved = cert.clone();
        moved.node = NodeId([6; 32]);
        assert_eq!(moved.verify(&grid), Err(TrustError::BadSignature));
        let mut truncated = cert.clone();
        truncated.signature.truncate(10);
        assert_eq!(truncated.verify(&grid), Err(TrustError::BadSignature));
        // A certificate signed by another key but claiming this grid.
        let mut forged = MemberCert::issue(&key(2), NodeId([5; 32]), 100).expect("signs");
        forged.grid = grid;
        assert_eq!(forged.verify(&grid), Err(TrustError::BadSignature));
        // A revocation's signature is not a certificate's.
        let revocation = Revocation::issue(&grid_key, NodeId([5; 32]), 100).expect("signs");
        let mut confused = cert;
        confused.signature = revocation.signature;
        assert_eq!(confused.verify(&grid), Err(TrustError::BadSignature));
    }

    #[test]
    fn founding_certifying_and_revoking_change_the_members() {
        let grid_key = key(1);
        let founder = NodeId([1; 32]);
        let second = NodeId([2; 32]);
        let mut state = TrustState::default();
        let early = MemberCert::issue(&grid_key, second, 5).expect("signs");
        assert_eq!(
            state.apply(&TrustCommand::Certify(early.clone())),
            Err(TrustError::NoGrid)
        );
        let found = TrustCommand::Found {
            root: root(&grid_key),
            founder: MemberCert::issue(&grid_key, founder, 1).expect("signs"),
        };
        state.apply(&found).expect("founds");
        assert!(matches!(
            state.apply(&found),
            Err(TrustError::AlreadyFounded(_))
        ));
        state
            .apply(&TrustCommand::Certify(early.clone()))
            .expect("certifies");
        assert_eq!(state.members(), BTreeSet::from([founder, second]));
        let revoke = Revocation::issue(&grid_key, second, 10).expect("signs");
        state.apply(&TrustCommand::Revoke(revoke)).expect("revokes");
        assert_eq!(state.members(), BTreeSet::from([founder]));
        // The old certificate cannot be replayed; a newer one re-admits.
        assert!(matches!(
            state.apply(&TrustCommand::Certify(early)),
            Err(TrustError::Revoked { .. })
        ));
        let again = MemberCert::issue(&grid_key, second, 11).expect("signs");
        state
            .apply(&TrustCommand::Certify(again))
            .expect("re-admits");
        assert!(state.is_member(&second));
        // Another grid's key changes nothing.
        let stranger = MemberCert::issue(&key(3), NodeId([3; 32]), 20).expect("signs");
        let before = state.clone();
        assert!(state.apply(&TrustCommand::Certify(stranger)).is_err());
        assert_eq!(state, before);
    }

    #[test]
    fn an_invitation_is_redeemed_once_before_it_expires_and_renewals_only_move_forward() {
        let grid_key = key(1);
        let mut state = TrustState::default();
        let found = TrustCommand::Found {
            root: root(&grid_key),
            founder: MemberCert::issue(&grid_key, NodeId([1; 32]), 1).expect("signs"),
        };
        state.apply(&found).expect("founds");
        let plan = Subscription {
            source_storage: Some(1 << 20),
            ..Subscription::default_plan()
        };
        let invite = Invite::issue(
            &grid_key,
            [7; 16],
            plan,
            100,
            vec!["/ip4/1.2.3.4/tcp/1".into()],
            [9; 32],
        )
        .expect("signs");
        let (a, b) = (NodeId([2; 32]), NodeId([3; 32]));
        let redeem = |node, at| TrustCommand::Redeem {
            invite: invite.clone(),
            node,
            at,
        };
        assert_eq!(
            state.apply(&redeem(a, 101)),
            Err(TrustError::InviteExpired(100))
        );
        state.apply(&redeem(a, 50)).expect("redeems");
        state
            .apply(&redeem(a, 60))
            .expect("the same node again: idempotent");
        assert_eq!(state.apply(&redeem(b, 60)), Err(TrustError::InviteUsed(a)));
        let mut richer = invite.clone();
        richer.subscription.source_storage = None;
        assert_eq!(
            richer.verify(&grid_id_of(&grid_key)),
            Err(TrustError::BadSignature)
        );
        let other = Invite::issue(
            &key(2),
            [8; 16],
            Subscription::default_plan(),
            100,
            Vec::new(),
            [0; 32],
        )
        .expect("signs");
        assert!(matches!(
            state.apply(&TrustCommand::Redeem {
                invite: other,
                node: b,
                at: 1
            }),
            Err(TrustError::WrongGrid { .. })
        ));
        let renew =
            |at| TrustCommand::Renew(Renewal::issue(&grid_key, a, Some(500), at).expect("signs"));
        state.apply(&renew(10)).expect("renews");
        assert_eq!(state.apply(&renew(10)), Err(TrustError::StaleRenewal(a)));
        state.apply(&renew(11)).expect("a newer renewal");
    }

    #[test]
    fn a_member_list_is_believed_only_for_certified_nodes() {
        let grid_key = key(1);
        let grid = grid_id_of(&grid_key);
        let a = NodeId([1; 32]);
        let b = NodeId([2; 32]);
        let c = NodeId([3; 32]);
        let certs = vec![
            MemberCert::issue(&grid_key, a, 1).expect("signs"),
            MemberCert::issue(&key(7), b, 1).expect("signs"),
        ];
        assert_eq!(
            certified_members(&grid, &[a, b, c], &certs),
            BTreeSet::from([a])
        );
        assert!(certified_members(&grid, &[a, b, c], &[]).is_empty());
        // A certificate for a node the list does not name adds nothing.
        assert!(certified_members(&grid, &[b], &certs).is_empty());
    }
}
