//! Gossip of announcements: the topic, gossipsub's configuration and peer
//! scoring, and the admission gate (replay and rate per node, new identities
//! per source IP through `ip_rate`) that sits on top of the stateless checks
//! in `announcement`.
//!
//! Owns the decision Accept / Ignore / Reject for every received announcement.
//! It must not touch the swarm or the grid view: the event loop applies the
//! decision (reports it to gossipsub, updates the grid view, counts metrics)
//! through `driver`, which also publishes this node's own announcements.

pub(crate) mod driver;
pub mod ip_rate;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ip_rate::IpRateLimit;
use std::time::Duration;

use libp2p::gossipsub::{
    self, IdentTopic, MessageAcceptance, PeerScoreParams, PeerScoreThresholds, TopicScoreParams,
    ValidationMode,
};
use strew_coordinator::NodeId;

use crate::announcement::{
    ANNOUNCEMENT_MAX_BYTES, Announcement, AnnouncementError, FreshnessLimits,
};

/// The gossipsub topic carrying announcements.
pub const ANNOUNCE_TOPIC: &str = "/strew/announce/1";

/// The topic as gossipsub wants it.
pub fn topic() -> IdentTopic {
    IdentTopic::new(ANNOUNCE_TOPIC)
}

/// gossipsub configured for strew: signed messages (Strict), content-addressed
/// ids, application validation on, small transmit size.
pub fn config(heartbeat: Duration) -> Result<gossipsub::Config, gossipsub::ConfigBuilderError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(ANNOUNCEMENT_MAX_BYTES + 1024)
        .heartbeat_interval(heartbeat)
        // Content-addressed ids: the same announcement relayed twice is one message.
        .message_id_fn(|msg: &gossipsub::Message| {
            gossipsub::MessageId::from(blake3::hash(&msg.data).as_bytes().to_vec())
        })
        .duplicate_cache_time(Duration::from_secs(120))
        .build()
}

/// Peer scoring: invalid announcements cost the sender heavily; low-traffic
/// penalties (mesh delivery deficits) are off because announcements are rare by design.
pub fn score_params() -> (PeerScoreParams, PeerScoreThresholds) {
    let topic = TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.01,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 3600.0,
        first_message_deliveries_weight: 1.0,
        first_message_deliveries_decay: 0.9,
        first_message_deliveries_cap: 50.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_failure_penalty_weight: 0.0,
        invalid_message_deliveries_weight: -10.0,
        invalid_message_deliveries_decay: 0.9,
        ..TopicScoreParams::default()
    };
    let mut params = PeerScoreParams::default();
    params.topics.insert(topic_hash(), topic);
    // Loopback and LAN test grids put every node on one address: don't punish that.
    params.ip_colocation_factor_whitelist.extend([
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ]);
    let thresholds = PeerScoreThresholds {
        gossip_threshold: -20.0,
        publish_threshold: -40.0,
        graylist_threshold: -80.0,
        accept_px_threshold: 10.0,
        opportunistic_graft_threshold: 5.0,
    };
    (params, thresholds)
}

fn topic_hash() -> gossipsub::TopicHash {
    topic().hash()
}

/// The gate's verdict on one received message.
#[derive(Debug)]
pub enum Verdict {
    /// Valid and new: forward it and update the grid view.
    Accept(Box<Announcement>),
    /// Not forwarded, sender not penalised (replay, rate limit, clock trouble).
    Ignore(Ignored, String),
    /// Not forwarded, sender penalised (forgery, garbage, impossible values).
    Reject(AnnouncementError),
}

/// Why an announcement was ignored: the metric's `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// Already seen (it arrived by another path): normal in a mesh.
    Duplicate,
    /// Expired or from the future: the clocks of the two nodes disagree.
    Clock,
    /// The node announces more often than the rate limit allows.
    Rate,
    /// A node not known yet, delivered from an IP address (or its /24, /64)
    /// that brought in more new identities than its budget per minute.
    IpRate,
}

impl Ignored {
    pub fn label(self) -> &'static str {
        match self {
            Ignored::Duplicate => "duplicate",
            Ignored::Clock => "clock",
            Ignored::Rate => "rate",
            Ignored::IpRate => "ip_rate",
        }
    }
}

impl Verdict {
    /// What gossipsub is told.
    pub fn acceptance(&self) -> MessageAcceptance {
        match self {
            Verdict::Accept(_) => MessageAcceptance::Accept,
            Verdict::Ignore(..) => MessageAcceptance::Ignore,
            Verdict::Reject(_) => MessageAcceptance::Reject,
        }
    }
}

/// Per-node admission state: the newest accepted `issued_at` and a token bucket.
#[derive(Debug)]
pub struct AnnouncementGate {
    limits: FreshnessLimits,
    /// Announcements a node may burst.
    burst: f64,
    /// Tokens regained per millisecond.
    refill_per_ms: f64,
    nodes: BTreeMap<NodeId, NodeState>,
    /// New identities per delivering IP and subnet.
    new_per_ip: IpRateLimit,
}

#[derive(Debug, Clone, Copy)]
struct NodeState {
    last_issued_at: u64,
    tokens: f64,
    last_refill_ms: u64,
    expires_at: u64,
}

impl AnnouncementGate {
    /// `burst` announcements at once, then one per `per` on average, per node.
    pub fn new(limits: FreshnessLimits, burst: u32, per: Duration) -> Self {
        let per_ms = per.as_millis().max(1) as f64;
        AnnouncementGate {
            limits,
            burst: f64::from(burst.max(1)),
            refill_per_ms: 1.0 / per_ms,
            nodes: BTreeMap::new(),
            new_per_ip: IpRateLimit::new(ip_rate::DEFAULT_NEW_NODES_PER_IP_PER_MINUTE),
        }
    }

    /// Replaces the budget of new identities per source IP a minute (0: no limit).
    pub fn with_new_nodes_per_ip(mut self, per_minute: u32) -> Self {
        self.new_per_ip = IpRateLimit::new(per_minute);
        self
    }

    /// Judges one message published by `source` (gossipsub's verified author)
    /// whose delivering peer's address is unknown or does not matter.
    pub fn judge(&mut self, source: Option<NodeId>, data: &[u8], now_ms: u64) -> Verdict {
        self.judge_from(source, data, None, now_ms)
    }

    /// Judges one message published by `source` and delivered by a peer
    /// whose connection showed `via`: a node not known yet also takes one
    /// token from `via`'s budget of new identities.
    pub fn judge_from(
        &mut self,
        source: Option<NodeId>,
        data: &[u8],
        via: Option<IpAddr>,
        now_ms: u64,
    ) -> Verdict {
        let ann = match Announcement::verify(data, now_ms, &self.limits) {
            Ok(ann) => ann,
            Err(err) if err.is_benign() => return Verdict::Ignore(Ignored::Clock, err.to_string()),
            Err(err) => return Verdict::Reject(err),
        };
        if source != Some(ann.node()) {
            // Strict mode: the author signed the gossipsub envelope; it must be the announced node.
            return Verdict::Reject(AnnouncementError::BadSignature);
        }
        if !self.nodes.contains_key(&ann.node())
            && let Some(ip) = via
            && !self.new_per_ip.allow(ip, now_ms)
        {
            return Verdict::Ignore(
                Ignored::IpRate,
                format!("too many new nodes delivered from {ip}"),
            );
        }
        let state = self.nodes.entry(ann.node()).or_insert(NodeState {
            last_issued_at: 0,
            tokens: self.burst,
            last_refill_ms: now_ms,
            expires_at: 0,
        });
        if ann.issued_at <= state.last_issued_at {
            return Verdict::Ignore(
                Ignored::Duplicate,
                format!(
                    "replayed or out-of-order announcement (issued {} <= {})",
                    ann.issued_at, state.last_issued_at
                ),
            );
        }
        let elapsed = now_ms.saturating_sub(state.last_refill_ms) as f64;
        state.tokens = (state.tokens + elapsed * self.refill_per_ms).min(self.burst);
        state.last_refill_ms = now_ms;
        if state.tokens < 1.0 {
            return Verdict::Ignore(
                Ignored::Rate,
                format!("node {} announces too often", ann.node()),
            );
        }
        state.tokens -= 1.0;
        state.last_issued_at = ann.issued_at;
        state.expires_at = ann.expires_at();
        Verdict::Accept(Box::new(ann))
    }

    /// Forgets nodes whose last announcement expired (bounds the map).
    pub fn expire(&mut self, now_ms: u64) {
        self.nodes.retain(|_, s| s.expires_at > now_ms);
    }

    /// Nodes currently tracked.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announcement::PROTOCOL_VERSION;
    use crate::peer;
    use libp2p::identity::Keypair;

    const NOW: u64 = 1_800_000_000_000;

    fn signed(key: &Keypair, issued_at: u64) -> Vec<u8> {
        Announcement {
            protocol_version: PROTOCOL_VERSION,
            node_id: peer::node_id_of_key(&key.public()).unwrap().0,
            issued_at,
            valid_for_secs: 600,
            lat: 1.0,
            lon: 2.0,
            storage_allocated: 100,
            storage_free: 50,
            bandwidth_limit: 0,
            load: 0.0,
            uptime_secs: 0,
            coordinator_eligible: false,
            x25519_public: [0; 32],
            listen_addrs: vec![],
            external_addrs: Vec::new(),
            behind_nat: false,
            work_nonce: None,
        }
        .sign(key)
        .unwrap()
    }

    #[test]
    fn gate_accepts_new_ignores_replays_and_floods() {
        let key = Keypair::generate_ed25519();
        let node = peer::node_id_of_key(&key.public());
        let mut gate =
            AnnouncementGate::new(FreshnessLimits::default(), 2, Duration::from_secs(60));
        assert!(matches!(
            gate.judge(node, &signed(&key, NOW), NOW),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            gate.judge(node, &signed(&key, NOW), NOW),
            Verdict::Ignore(..)
        ));
        assert!(matches!(
            gate.judge(node, &signed(&key, NOW + 1), NOW),
            Verdict::Accept(_)
        ));
        // Burst of 2 used up: the third within a minute is dropped...
        assert!(matches!(
            gate.judge(node, &signed(&key, NOW + 2), NOW + 10),
            Verdict::Ignore(..)
        ));
        // ...and a minute later one more is allowed.
        assert!(matches!(
            gate.judge(node, &signed(&key, NOW + 3), NOW + 60_010),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn gate_limits_new_identities_per_delivering_ip() {
        let mut gate =
            AnnouncementGate::new(FreshnessLimits::default(), 2, Duration::from_secs(60))
                .with_new_nodes_per_ip(3);
        let via: IpAddr = "203.0.113.9".parse().unwrap();
        let keys: Vec<Keypair> = (0..10).map(|_| Keypair::generate_ed25519()).collect();
        let verdicts: Vec<Verdict> = keys
            .iter()
            .map(|k| {
                gate.judge_from(
                    peer::node_id_of_key(&k.public()),
                    &signed(k, NOW),
                    Some(via),
                    NOW,
                )
            })
            .collect();
        let accepted = verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Accept(_)))
            .count();
        assert_eq!(accepted, 3);
        assert!(
            verdicts[3..]
                .iter()
                .all(|v| matches!(v, Verdict::Ignore(Ignored::IpRate, _)))
        );
        // A node already known is not a new identity: its update passes.
        let known = &keys[0];
        assert!(matches!(
            gate.judge_from(
                peer::node_id_of_key(&known.public()),
                &signed(known, NOW + 1),
                Some(via),
                NOW
            ),
            Verdict::Accept(_)
        ));
        // Another address has its own budget; an unknown one (sync) none.
        let other: IpAddr = "198.51.100.9".parse().unwrap();
        assert!(matches!(
            gate.judge_from(
                peer::node_id_of_key(&keys[4].public()),
                &signed(&keys[4], NOW),
                Some(other),
                NOW
            ),
            Verdict::Accept(_)
        ));
        assert!(matches!(
            gate.judge(
                peer::node_id_of_key(&keys[5].public()),
                &signed(&keys[5], NOW),
                NOW
            ),
            Verdict::Accept(_)
        ));
    }

    #[test]
    fn gate_rejects_author_mismatch_and_garbage() {
        let key = Keypair::generate_ed25519();
        let other = peer::node_id_of_key(&Keypair::generate_ed25519().public());
        let mut gate =
            AnnouncementGate::new(FreshnessLimits::default(), 2, Duration::from_secs(60));
        let v = gate.judge(other, &signed(&key, NOW), NOW);
        assert!(matches!(v, Verdict::Reject(_)));
        assert_eq!(v.acceptance(), MessageAcceptance::Reject);
        assert!(matches!(
            gate.judge(other, b"\x00\x01garbage", NOW),
            Verdict::Reject(_)
        ));
    }

    #[test]
    fn gate_forgets_expired_nodes() {
        let key = Keypair::generate_ed25519();
        let node = peer::node_id_of_key(&key.public());
        let mut gate =
            AnnouncementGate::new(FreshnessLimits::default(), 2, Duration::from_secs(60));
        let _ = gate.judge(node, &signed(&key, NOW), NOW);
        assert_eq!(gate.len(), 1);
        gate.expire(NOW + 600_001);
        assert!(gate.is_empty());
    }

    #[test]
    fn gossip_config_and_scores_are_valid() {
        assert!(config(Duration::from_secs(1)).is_ok());
        let (p, t) = score_params();
        assert!(p.validate().is_ok());
        assert!(t.validate().is_ok());
    }
}
