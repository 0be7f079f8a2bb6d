//! Subscriptions, the grid's admission mode, join tokens and quota checks.
//!
//! Owns [`Subscription`] (a node's contract: storage it may use as a source,
//! storage it donates as a target, network, processor and bandwidth
//! allocations), [`GridMode`] (open with a default plan, or closed behind
//! manager-signed [`JoinToken`]s) and the arithmetic that refuses what a
//! contract does not allow. Everything here is integer arithmetic or a
//! signature check, so every replica of the coordinator group reaches the same
//! verdict. This module must not track usage itself (the manager state does).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::units::{Millis, format_size};

/// A node's contract with the grid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Name of the plan (`"default"` on an open grid).
    pub plan: String,
    /// Stored bytes (redundancy included) this node may use as a source.
    /// `None`: derived from the donation (open grid default plan).
    pub source_storage: Option<u64>,
    /// Bytes this node donates as a target; `None`: whatever it announces.
    pub target_storage: Option<u64>,
    /// Restore/upload traffic allowed per day, bytes; 0 = unlimited.
    pub network_bytes_per_day: u64,
    /// Share of one CPU core the node lends to grid work (repair, audits), in thousandths.
    pub processor_millicores: u32,
    /// Bandwidth limit, bytes per second; 0 = unlimited.
    pub bandwidth: u64,
    /// When the contract ends; `None` = open-ended.
    pub expires_at: Option<Millis>,
    /// An open grid's earned plan: the source quota is what the node
    /// verifiably stores for others plus [`EARNED_ALLOWANCE`] (at most its
    /// source limit otherwise), not what it declares.
    #[serde(default)]
    pub earned: bool,
}

/// What a node of an open grid may store before it stores anything for
/// others (its quota then grows with the bytes it holds for others).
pub const EARNED_ALLOWANCE: u64 = 1 << 30;

impl Subscription {
    /// The open grid's default plan: store as much as you donate (counted in
    /// stored bytes, so the data you can back up is the donation divided by
    /// the redundancy overhead).
    pub fn default_plan() -> Self {
        Subscription {
            plan: "default".into(),
            source_storage: None,
            target_storage: None,
            network_bytes_per_day: 0,
            processor_millicores: 250,
            bandwidth: 0,
            expires_at: None,
            earned: false,
        }
    }

    /// The plan of an open grid with a trust root: the default plan, its
    /// source quota earned from bytes stored for others.
    pub fn earned_plan() -> Self {
        Subscription {
            plan: "earned".into(),
            earned: true,
            ..Subscription::default_plan()
        }
    }

    /// Bytes donated, given what the node announces it allocates.
    pub fn donated(&self, announced_allocation: u64) -> u64 {
        self.target_storage
            .map_or(announced_allocation, |cap| cap.min(announced_allocation))
    }

    /// Stored bytes the node may use as a source, given what it declares
    /// and what it verifiably stores for others.
    pub fn source_limit(&self, announced_allocation: u64, stored_for_others: u64) -> u64 {
        let limit = self
            .source_storage
            .unwrap_or_else(|| self.donated(announced_allocation));
        if self.earned {
            limit.min(stored_for_others.saturating_add(EARNED_ALLOWANCE))
        } else {
            limit
        }
    }

    /// Whether the contract is in force at `now`.
    pub fn active(&self, now: Millis) -> bool {
        self.expires_at.is_none_or(|end| now <= end)
    }
}

/// How nodes are admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GridMode {
    /// Anyone may join and gets this plan.
    Open { default_plan: Subscription },
    /// Only holders of a join token signed by one of these managers may join.
    Closed { token_issuers: Vec<NodeId> },
}

impl Default for GridMode {
    fn default() -> Self {
        GridMode::Open {
            default_plan: Subscription::default_plan(),
        }
    }
}

/// Refusals of the contract.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaError {
    #[error(
        "source quota exceeded: {node} already stores {}, this backup needs {} more, the subscription allows {}; forget old snapshots, donate more storage or ask for a larger plan",
        format_size(*used), format_size(*extra), format_size(*limit)
    )]
    SourceQuota {
        node: NodeId,
        used: u64,
        extra: u64,
        limit: u64,
    },
    #[error(
        "the subscription of {node} expired at {} (unix time): new backups are refused, stored data is kept for the grid's grace period (30 days unless its coordinators set `subscription_grace`) and then deleted; ask the grid's owner to renew it (`strew grid renew`)",
        crate::units::format_unix_ms(*expires_at)
    )]
    Expired { node: NodeId, expires_at: Millis },
    #[error(
        "{node} has {pending} backups planned and not committed (at most {limit}): commit or abandon one first"
    )]
    TooManyPending {
        node: NodeId,
        pending: usize,
        limit: usize,
    },
    #[error(
        "{node} has {} reserved by backups not yet committed and this plan needs {} more (at most {} per source): commit or abandon a backup first, or back up less at once",
        format_size(*pending), format_size(*extra), format_size(*limit)
    )]
    PendingBytes {
        node: NodeId,
        pending: u64,
        extra: u64,
        limit: u64,
    },
    #[error(
        "network quota exceeded: {node} moved {} today (UTC) and this needs {} more, the subscription allows {} a day; try again tomorrow or ask the grid's owner for a larger plan",
        format_size(*used), format_size(*extra), format_size(*limit)
    )]
    NetworkQuota {
        node: NodeId,
        used: u64,
        extra: u64,
        limit: u64,
    },
    #[error("this grid is closed: {0} needs a join token signed by the sequence manager")]
    TokenRequired(NodeId),
    #[error("join token rejected: {0}")]
    BadToken(String),
}

/// One UTC day in milliseconds.
pub const DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// Bytes a node moved through the grid on one UTC day (what its
/// subscription's `network_bytes_per_day` limits): uploads its plans
/// ticketed and reads its read tickets allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkDay {
    /// Days since the epoch (UTC).
    pub day: u64,
    pub bytes: u64,
}

impl NetworkDay {
    /// Bytes moved on the day of `at` (0 once that day is over).
    pub fn used(&self, at: Millis) -> u64 {
        if self.day == at / DAY_MS {
            self.bytes
        } else {
            0
        }
    }

    /// Counts `bytes` more on the day of `at`.
    pub fn add(&mut self, at: Millis, bytes: u64) {
        let day = at / DAY_MS;
        if self.day != day {
            *self = NetworkDay { day, bytes: 0 };
        }
        self.bytes = self.bytes.saturating_add(bytes);
    }
}

/// Checks that `extra` more bytes moved on the day of `at` fit the node's
/// `network_bytes_per_day` (0: unlimited).
pub fn check_network(
    node: NodeId,
    subscription: &Subscription,
    network: &NetworkDay,
    extra: u64,
    at: Millis,
) -> Result<(), QuotaError> {
    let limit = subscription.network_bytes_per_day;
    let used = network.used(at);
    if limit > 0 && used.saturating_add(extra) > limit {
        return Err(QuotaError::NetworkQuota {
            node,
            used,
            extra,
            limit,
        });
    }
    Ok(())
}

/// Checks that `extra` more stored bytes fit the source's contract.
pub fn check_source_quota(
    node: NodeId,
    subscription: &Subscription,
    announced_allocation: u64,
    stored_for_others: u64,
    used: u64,
    extra: u64,
    now: Millis,
) -> Result<(), QuotaError> {
    if let Some(expires_at) = subscription
        .expires_at
        .filter(|_| !subscription.active(now))
    {
        return Err(QuotaError::Expired { node, expires_at });
    }
    let limit = subscription.source_limit(announced_allocation, stored_for_others);
    if used.saturating_add(extra) > limit {
        return Err(QuotaError::SourceQuota {
            node,
            used,
            extra,
            limit,
        });
    }
    Ok(())
}

const TOKEN_CONTEXT: &[u8] = b"strew/join-token/v1\0";

/// A manager's signed admission of one node to a closed grid, with its plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinToken {
    pub node: NodeId,
    pub subscription: Subscription,
    /// The token must be used before this time.
    pub valid_until: Millis,
    pub issuer: NodeId,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct TokenBody<'a> {
    node: &'a NodeId,
    subscription: &'a Subscription,
    valid_until: Millis,
    issuer: &'a NodeId,
}

impl JoinToken {
    fn signed_bytes(&self) -> Result<Vec<u8>, crate::cbor::CborError> {
        let mut out = TOKEN_CONTEXT.to_vec();
        let body = TokenBody {
            node: &self.node,
            subscription: &self.subscription,
            valid_until: self.valid_until,
            issuer: &self.issuer,
        };
        crate::cbor::encode_into(&body, &mut out)?;
        Ok(out)
    }

    /// Signs a token admitting `node` with `subscription`.
    pub fn issue(
        key: &SigningKey,
        node: NodeId,
        subscription: Subscription,
        valid_until: Millis,
    ) -> Result<Self, QuotaError> {
        let mut token = JoinToken {
            node,
            subscription,
            valid_until,
            issuer: NodeId(key.verifying_key().to_bytes()),
            signature: Vec::new(),
        };
        let body = token
            .signed_bytes()
            .map_err(|e| QuotaError::BadToken(e.to_string()))?;
        token.signature = key.sign(&body).to_bytes().to_vec();
        Ok(token)
    }

    /// Checks the token admits `node` at `now` and was signed by one of `issuers`.
    pub fn verify(&self, node: &NodeId, issuers: &[NodeId], now: Millis) -> Result<(), QuotaError> {
        if &self.node != node {
            return Err(QuotaError::BadToken(format!(
                "issued to {}, presented by {node}",
                self.node
            )));
        }
        if now > self.valid_until {
            return Err(QuotaError::BadToken(format!(
                "expired at {} ms",
                self.valid_until
            )));
        }
        if !issuers.contains(&self.issuer) {
            return Err(QuotaError::BadToken(format!(
                "signed by {}, who does not issue tokens for this grid",
                self.issuer
            )));
        }
        let key = VerifyingKey::from_bytes(self.issuer.as_bytes())
            .map_err(|_| QuotaError::BadToken("issuer is not an Ed25519 key".into()))?;
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| QuotaError::BadToken("malformed signature".into()))?;
        let body = self
            .signed_bytes()
            .map_err(|e| QuotaError::BadToken(e.to_string()))?;
        key.verify_strict(&body, &Signature::from_bytes(&signature))
            .map_err(|_| QuotaError::BadToken("signature does not verify".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_plan_allows_storing_what_is_donated() {
        let sub = Subscription::default_plan();
        let node = NodeId([1; 32]);
        assert_eq!(sub.source_limit(1000, 0), 1000);
        assert!(check_source_quota(node, &sub, 1000, 0, 600, 400, 0).is_ok());
        let err = check_source_quota(node, &sub, 1000, 0, 600, 401, 0).unwrap_err();
        assert!(matches!(err, QuotaError::SourceQuota { limit: 1000, .. }));
        assert!(err.to_string().contains("forget old snapshots"));
        let capped = Subscription {
            target_storage: Some(300),
            ..Subscription::default_plan()
        };
        assert_eq!(capped.donated(1000), 300);
        let expiring = Subscription {
            expires_at: Some(10),
            ..Subscription::default_plan()
        };
        assert!(matches!(
            check_source_quota(node, &expiring, 1000, 0, 0, 1, 11),
            Err(QuotaError::Expired { .. })
        ));
    }

    #[test]
    fn an_earned_plan_grows_with_bytes_stored_for_others_not_with_declarations() {
        let sub = Subscription::earned_plan();
        let node = NodeId([1; 32]);
        let declared = 10 * EARNED_ALLOWANCE;
        assert_eq!(sub.source_limit(declared, 0), EARNED_ALLOWANCE);
        assert_eq!(sub.source_limit(declared, 5), EARNED_ALLOWANCE + 5);
        assert_eq!(sub.source_limit(100, 5), 100, "never beyond the donation");
        assert!(matches!(
            check_source_quota(node, &sub, declared, 0, EARNED_ALLOWANCE, 1, 0),
            Err(QuotaError::SourceQuota { .. })
        ));
        assert!(check_source_quota(node, &sub, declared, 1, EARNED_ALLOWANCE, 1, 0).is_ok());
    }

    #[test]
    fn join_tokens_admit_only_their_node_from_a_trusted_issuer() {
        let manager = SigningKey::from_bytes(&[3; 32]);
        let manager_id = NodeId(manager.verifying_key().to_bytes());
        let node = NodeId([5; 32]);
        let token = JoinToken::issue(&manager, node, Subscription::default_plan(), 100).unwrap();
        assert!(token.verify(&node, &[manager_id], 50).is_ok());
        assert!(token.verify(&NodeId([6; 32]), &[manager_id], 50).is_err());
        assert!(token.verify(&node, &[manager_id], 101).is_err());
        assert!(token.verify(&node, &[NodeId([7; 32])], 50).is_err());
        let mut richer = token.clone();
        richer.subscription.source_storage = Some(u64::MAX);
        assert!(richer.verify(&node, &[manager_id], 50).is_err());
    }
}
