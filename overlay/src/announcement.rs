//! The signed capacity-and-location announcement every node gossips.
//!
//! Owns the wire format (CBOR envelope `{body, signature}` where `body` is the
//! CBOR of [`Announcement`] and `signature` is the announcing node's Ed25519
//! signature over `DOMAIN || body`), signing, and the stateless validation
//! rules (size, signature, version, value ranges, freshness). Per-node state
//! (replay, rate) lives in `gossip`; this module must not keep any.

use libp2p::Multiaddr;
use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use strew_coordinator::NodeId;

use crate::cbor::{self, CborError};
use crate::peer;

/// Largest accepted encoded announcement (envelope included).
pub const ANNOUNCEMENT_MAX_BYTES: usize = 2048;
/// The announcement format this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// At most this many listen addresses per announcement.
pub const MAX_LISTEN_ADDRS: usize = 8;
/// Longest accepted listen address text.
pub const MAX_ADDR_LEN: usize = 200;
/// Domain separation for the signature.
const DOMAIN: &[u8] = b"strew/announcement/v1";

/// What a node declares about itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Announcement {
    pub protocol_version: u16,
    #[serde(with = "cbor::bytes32")]
    pub node_id: [u8; 32],
    /// Unix milliseconds when the node signed this; also the per-node sequence number.
    pub issued_at: u64,
    /// How long receivers may keep the entry without hearing again.
    pub valid_for_secs: u32,
    pub lat: f64,
    pub lon: f64,
    pub storage_allocated: u64,
    pub storage_free: u64,
    /// Bytes per second the node is willing to move; 0 means unlimited.
    pub bandwidth_limit: u64,
    /// Busy fraction in 0..=1 (in-flight packet work over capacity).
    pub load: f32,
    pub uptime_secs: u64,
    pub coordinator_eligible: bool,
    #[serde(with = "cbor::bytes32")]
    pub x25519_public: [u8; 32],
    /// Where the node listens (multiaddr text), so receivers can dial it directly.
    pub listen_addrs: Vec<String>,
    /// The node's external addresses confirmed by others (identify's
    /// observed addresses that AutoNAT confirmed dialable); empty for a node
    /// behind NAT or on a loopback grid. At most [`MAX_LISTEN_ADDRS`].
    /// Placement reads the failure domain (/24, /64) from these when the
    /// manager has no connection of its own to the node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_addrs: Vec<String>,
    /// AutoNAT found this node not dialable (behind NAT): others reach it
    /// through relays and hole punching, and placement prefers others.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub behind_nat: bool,
    /// The node's proof-of-work stamp (`strew_coordinator::work`): a nonce
    /// such that BLAKE3(node id, nonce) starts with enough zero bits. An
    /// open grid's leader takes a node into replicated state only with one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_nonce: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    #[serde(with = "cbor::bytes")]
    body: Vec<u8>,
    #[serde(with = "cbor::bytes")]
    signature: Vec<u8>,
}

/// The longest an announcement may stay valid: a node seen once is
/// forgotten within a day unless it announces again.
pub const MAX_VALID_FOR_SECS: u32 = 24 * 3600;

/// Freshness bounds applied by receivers.
#[derive(Clone, Copy, Debug)]
pub struct FreshnessLimits {
    /// How far in the future `issued_at` may lie (clock skew).
    pub max_future_ms: u64,
    pub min_valid_for_secs: u32,
    pub max_valid_for_secs: u32,
}

impl Default for FreshnessLimits {
    fn default() -> Self {
        FreshnessLimits {
            max_future_ms: 120_000,
            min_valid_for_secs: 2,
            max_valid_for_secs: MAX_VALID_FOR_SECS,
        }
    }
}

/// Why an announcement was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum AnnouncementError {
    #[error("undecodable announcement")]
    Decode(#[source] CborError),
    #[error("node id is not an Ed25519 public key")]
    BadKey,
    #[error("signature does not verify against the announced node id")]
    BadSignature,
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u16),
    #[error("{field} out of range: {detail}")]
    OutOfRange { field: &'static str, detail: String },
    #[error("issued {ahead_ms} ms in the future")]
    FromFuture { ahead_ms: u64 },
    #[error("expired {late_ms} ms ago")]
    Expired { late_ms: u64 },
    #[error("signing failed")]
    Signing,
    #[error("announcement does not encode")]
    Encode(#[source] CborError),
}

impl AnnouncementError {
    /// True for errors an honest relayer could have forwarded (clock trouble):
    /// these are ignored rather than penalised.
    pub fn is_benign(&self) -> bool {
        matches!(
            self,
            AnnouncementError::FromFuture { .. } | AnnouncementError::Expired { .. }
        )
    }
}

impl Announcement {
    /// The announcing node.
    pub fn node(&self) -> NodeId {
        NodeId(self.node_id)
    }

    /// Unix milliseconds after which receivers drop the entry.
    pub fn expires_at(&self) -> u64 {
        self.issued_at
            .saturating_add(u64::from(self.valid_for_secs) * 1000)
    }

    /// The listen addresses that parse as multiaddrs.
    pub fn multiaddrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// The first public IP address among the confirmed external addresses.
    pub fn external_ip(&self) -> Option<std::net::IpAddr> {
        self.external_addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
            .filter_map(|a| crate::peer::ip_of(&a))
            .find(|ip| strew_coordinator::network::is_public(*ip))
    }

    /// Encodes and signs with the node's identity (which must be the announced node).
    pub fn sign(&self, key: &Keypair) -> Result<Vec<u8>, AnnouncementError> {
        let body = cbor::encode(self).map_err(AnnouncementError::Encode)?;
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&body);
        let signature = key.sign(&msg).map_err(|_| AnnouncementError::Signing)?;
        cbor::encode(&Envelope { body, signature }).map_err(AnnouncementError::Encode)
    }

    /// Decodes and checks everything that needs no per-node state: size,
    /// signature, version, ranges and freshness at `now_ms`.
    pub fn verify(
        bytes: &[u8],
        now_ms: u64,
        limits: &FreshnessLimits,
    ) -> Result<Announcement, AnnouncementError> {
        let env: Envelope =
            cbor::decode(bytes, ANNOUNCEMENT_MAX_BYTES).map_err(AnnouncementError::Decode)?;
        let ann: Announcement =
            cbor::decode(&env.body, ANNOUNCEMENT_MAX_BYTES).map_err(AnnouncementError::Decode)?;
        let key = peer::public_key_of(&ann.node()).ok_or(AnnouncementError::BadKey)?;
        let mut msg = DOMAIN.to_vec();
        msg.extend_from_slice(&env.body);
        if !key.verify(&msg, &env.signature) {
            return Err(AnnouncementError::BadSignature);
        }
        ann.check_ranges(limits)?;
        if ann.issued_at > now_ms.saturating_add(limits.max_future_ms) {
            return Err(AnnouncementError::FromFuture {
                ahead_ms: ann.issued_at - now_ms,
            });
        }
        if ann.expires_at() <= now_ms {
            return Err(AnnouncementError::Expired {
                late_ms: now_ms - ann.expires_at(),
            });
        }
        Ok(ann)
    }

    /// Value ranges: what a well-behaved node can declare.
    pub fn check_ranges(&self, limits: &FreshnessLimits) -> Result<(), AnnouncementError> {
        let bad = |field: &'static str, detail: String| {
            Err(AnnouncementError::OutOfRange { field, detail })
        };
        if self.protocol_version != PROTOCOL_VERSION {
            return Err(AnnouncementError::UnsupportedVersion(self.protocol_version));
        }
        if !self.lat.is_finite() || !(-90.0..=90.0).contains(&self.lat) {
            return bad("latitude", format!("{} is not in -90..=90", self.lat));
        }
        if !self.lon.is_finite() || !(-180.0..=180.0).contains(&self.lon) {
            return bad("longitude", format!("{} is not in -180..=180", self.lon));
        }
        if self.storage_free > self.storage_allocated {
            return bad(
                "storage_free",
                format!(
                    "{} exceeds storage_allocated {}",
                    self.storage_free, self.storage_allocated
                ),
            );
        }
        if !self.load.is_finite() || !(0.0..=1.0).contains(&self.load) {
            return bad("load", format!("{} is not in 0..=1", self.load));
        }
        if !(limits.min_valid_for_secs..=limits.max_valid_for_secs).contains(&self.valid_for_secs) {
            return bad(
                "valid_for_secs",
                format!(
                    "{} is not in {}..={}",
                    self.valid_for_secs, limits.min_valid_for_secs, limits.max_valid_for_secs
                ),
            );
        }
        if self.listen_addrs.len() > MAX_LISTEN_ADDRS {
            return bad(
                "listen_addrs",
                format!(
                    "{} addresses (max {MAX_LISTEN_ADDRS})",
                    self.listen_addrs.len()
                ),
            );
        }
        for addr in &self.listen_addrs {
            if addr.len() > MAX_ADDR_LEN || addr.parse::<Multiaddr>().is_err() {
                return bad("listen_addrs", format!("{addr:?} is not a multiaddr"));
            }
        }
        if self.external_addrs.len() > MAX_LISTEN_ADDRS {
            return bad(
                "external_addrs",
                format!(
                    "{} addresses (max {MAX_LISTEN_ADDRS})",
                    self.external_addrs.len()
                ),
            );
        }
        for addr in &self.external_addrs {
            if addr.len() > MAX_ADDR_LEN || addr.parse::<Multiaddr>().is_err() {
                return bad("external_addrs", format!("{addr:?} is not a multiaddr"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key: &Keypair, now: u64) -> Announcement {
        let node = peer::node_id_of_key(&key.public()).unwrap();
        Announcement {
            protocol_version: PROTOCOL_VERSION,
            node_id: node.0,
            issued_at: now,
            valid_for_secs: 60,
            lat: 48.85,
            lon: 2.35,
            storage_allocated: 10 << 30,
            storage_free: 9 << 30,
            bandwidth_limit: 0,
            load: 0.1,
            uptime_secs: 5,
            coordinator_eligible: true,
            x25519_public: [3; 32],
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".into()],
            external_addrs: Vec::new(),
            behind_nat: false,
            work_nonce: None,
        }
    }

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn signed_announcement_verifies_and_is_small() {
        let key = Keypair::generate_ed25519();
        let ann = sample(&key, NOW);
        let bytes = ann.sign(&key).unwrap();
        assert!(bytes.len() < 512, "announcement is {} bytes", bytes.len());
        let back = Announcement::verify(&bytes, NOW + 1, &FreshnessLimits::default()).unwrap();
        assert_eq!(back, ann);
    }

    #[test]
    fn forged_announcement_is_refused() {
        let key = Keypair::generate_ed25519();
        let forger = Keypair::generate_ed25519();
        // Claims to be `key`'s node but is signed by someone else.
        let bytes = sample(&key, NOW).sign(&forger).unwrap();
        assert!(matches!(
            Announcement::verify(&bytes, NOW, &FreshnessLimits::default()),
            Err(AnnouncementError::BadSignature)
        ));
    }

    #[test]
    fn impossible_values_are_refused() {
        let key = Keypair::generate_ed25519();
        let limits = FreshnessLimits::default();
        type Mutation = Box<dyn Fn(&mut Announcement)>;
        let cases: Vec<Mutation> = vec![
            Box::new(|a| a.lat = 123.0),
            Box::new(|a| a.lon = -181.0),
            Box::new(|a| a.lat = f64::NAN),
            Box::new(|a| a.storage_free = a.storage_allocated + 1),
            Box::new(|a| a.load = 2.0),
            Box::new(|a| a.valid_for_secs = 0),
            // At most a day: a node seen once cannot squat in views for a week.
            Box::new(|a| a.valid_for_secs = MAX_VALID_FOR_SECS + 1),
            Box::new(|a| a.valid_for_secs = 7 * 24 * 3600),
            Box::new(|a| a.protocol_version = 99),
            Box::new(|a| a.listen_addrs = vec!["not an addr".into()]),
            Box::new(|a| a.listen_addrs = vec!["/ip4/1.2.3.4/tcp/1".into(); 9]),
        ];
        for (i, case) in cases.iter().enumerate() {
            let mut ann = sample(&key, NOW);
            case(&mut ann);
            let bytes = ann.sign(&key).unwrap();
            let err = Announcement::verify(&bytes, NOW, &limits).unwrap_err();
            assert!(!err.is_benign(), "case {i}: {err}");
        }
    }

    #[test]
    fn a_day_of_validity_is_accepted() {
        let key = Keypair::generate_ed25519();
        let mut ann = sample(&key, NOW);
        ann.valid_for_secs = MAX_VALID_FOR_SECS;
        ann.work_nonce = Some(42);
        let bytes = ann.sign(&key).unwrap();
        let back = Announcement::verify(&bytes, NOW, &FreshnessLimits::default()).unwrap();
        assert_eq!(back, ann);
        assert_eq!(back.expires_at(), NOW + 24 * 3600 * 1000);
    }

    #[test]
    fn stale_and_future_announcements_are_benign_refusals() {
        let key = Keypair::generate_ed25519();
        let limits = FreshnessLimits::default();
        let bytes = sample(&key, NOW).sign(&key).unwrap();
        let late = Announcement::verify(&bytes, NOW + 61_000, &limits).unwrap_err();
        assert!(matches!(late, AnnouncementError::Expired { .. }) && late.is_benign());
        let early = Announcement::verify(&bytes, NOW - 600_000, &limits).unwrap_err();
        assert!(matches!(early, AnnouncementError::FromFuture { .. }) && early.is_benign());
    }

    #[test]
    fn oversize_and_garbage_are_refused() {
        let limits = FreshnessLimits::default();
        let big = vec![0u8; ANNOUNCEMENT_MAX_BYTES + 1];
        assert!(matches!(
            Announcement::verify(&big, NOW, &limits),
            Err(AnnouncementError::Decode(CborError::TooLarge { .. }))
        ));
        for junk in [&b""[..], b"\xa2", b"hello world", &[0x5f; 40]] {
            assert!(Announcement::verify(junk, NOW, &limits).is_err());
        }
    }
}
