//! The overlay's configuration: listen and bootstrap addresses, what the node
//! declares about itself, gossip timing, and packet-exchange limits.
//!
//! Owns defaults and validation only; reading files, flags and environment is
//! the node's job.

use std::time::Duration;

use libp2p::Multiaddr;

use crate::budget::DEFAULT_INBOUND_BUDGET;
use crate::error::OverlayError;
use crate::packet::MAX_PACKET_BYTES;

/// The smallest inbound budget: one largest manager or raft message (64 MiB)
/// and a few packets besides.
pub const MIN_INBOUND_BUDGET: usize = 96 * 1024 * 1024;

/// What this node declares in its announcements (besides live figures).
#[derive(Clone, Debug, PartialEq)]
pub struct LocalProfile {
    pub lat: f64,
    pub lon: f64,
    pub storage_allocated: u64,
    /// Bytes per second; 0 = unlimited.
    pub bandwidth_limit: u64,
    pub coordinator_eligible: bool,
    pub x25519_public: [u8; 32],
}

/// Overlay settings.
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub profile: LocalProfile,
    /// Shortest period between this node's periodic announcements. The actual
    /// period grows with the grid so the whole grid stays within `announce_budget_per_hour`.
    pub announce_interval: Duration,
    /// Announcements per hour a node should receive from the whole grid (periodic ones).
    pub announce_budget_per_hour: u32,
    /// How long receivers keep this node's entry without hearing from it (at least 3 periods).
    pub peer_ttl: Duration,
    /// Largest packet this node accepts as a target (≤ `MAX_PACKET_BYTES`).
    pub max_packet_bytes: u64,
    /// Bytes per second for packet bodies in and out; 0 = unlimited.
    pub bandwidth: u64,
    pub request_timeout: Duration,
    /// Concurrent packet streams per connection (request-response limit).
    pub max_streams_per_peer: usize,
    /// Inbound requests being stored/served per peer before answering `Busy`.
    pub max_inflight_per_peer: usize,
    /// Inbound requests being stored/served in total before answering `Busy`.
    pub max_inflight_total: usize,
    /// Packet reads (GETs) each peer may make of this node: a token bucket
    /// per peer (default 64 a second, bursts of 256, 1024 peers tracked);
    /// over it the answer is `Busy`.
    pub read_limit: crate::packet::ReadLimit,
    pub idle_connection_timeout: Duration,
    /// How often an unreachable bootstrap is retried while the node has no peers.
    pub bootstrap_retry: Duration,
    /// Bytes of inbound messages held at once across all peers and
    /// protocols; past it new messages are refused unread (`Busy`).
    pub inbound_budget: usize,
    /// Most nodes the grid view holds; past it the least recently confirmed
    /// node makes room for a new one.
    pub max_grid_nodes: usize,
    /// New node ids per minute the grid view takes in by gossip from one
    /// delivering IP address (four times that from its /24 or /64); past it
    /// announcements of unknown nodes from there are ignored. 0: no limit.
    pub new_nodes_per_ip: u32,
    /// This node's proof-of-work stamp, announced as `work_nonce` (see
    /// `strew_coordinator::work`); computed once by the node and kept.
    pub work_nonce: Option<u64>,
    /// Whether this node offers the relay v2 service (coordination only,
    /// see `behaviour::RELAY_*`); meant for publicly reachable nodes.
    pub relay_service: bool,
    /// How often AutoNAT tests one of this node's candidate addresses.
    pub autonat_probe_interval: Duration,
}

impl OverlayConfig {
    /// Defaults for a node at `profile`, listening on all interfaces (TCP and QUIC, ephemeral ports).
    pub fn new(profile: LocalProfile) -> Self {
        OverlayConfig {
            listen: default_listen(),
            bootstrap: Vec::new(),
            profile,
            announce_interval: Duration::from_secs(10 * 60),
            announce_budget_per_hour: 36_000,
            peer_ttl: Duration::from_secs(45 * 60),
            max_packet_bytes: MAX_PACKET_BYTES as u64,
            bandwidth: 0,
            request_timeout: Duration::from_secs(120),
            max_streams_per_peer: 16,
            max_inflight_per_peer: 8,
            max_inflight_total: 64,
            read_limit: crate::packet::ReadLimit::default(),
            idle_connection_timeout: Duration::from_secs(3600),
            bootstrap_retry: Duration::from_secs(15),
            inbound_budget: DEFAULT_INBOUND_BUDGET,
            max_grid_nodes: crate::grid::DEFAULT_MAX_GRID_NODES,
            new_nodes_per_ip: crate::gossip::ip_rate::DEFAULT_NEW_NODES_PER_IP_PER_MINUTE,
            work_nonce: None,
            relay_service: false,
            autonat_probe_interval: Duration::from_secs(5),
        }
    }

    /// Checks values a user may have set.
    pub fn validate(&self) -> Result<(), OverlayError> {
        let bad = |m: String| Err(OverlayError::Config(m));
        let p = &self.profile;
        if !p.lat.is_finite() || !(-90.0..=90.0).contains(&p.lat) {
            return bad(format!("latitude {} is not in -90..=90", p.lat));
        }
        if !p.lon.is_finite() || !(-180.0..=180.0).contains(&p.lon) {
            return bad(format!("longitude {} is not in -180..=180", p.lon));
        }
        if self.listen.is_empty() {
            return bad("at least one listen address is needed".into());
        }
        if self.announce_interval < Duration::from_millis(500) {
            return bad("announce interval must be at least 500ms".into());
        }
        if self.peer_ttl < 2 * self.announce_interval {
            return bad(format!(
                "peer TTL ({:?}) must be at least twice the announce interval ({:?})",
                self.peer_ttl, self.announce_interval
            ));
        }
        if self.max_packet_bytes == 0 || self.max_packet_bytes > MAX_PACKET_BYTES as u64 {
            return bad(format!(
                "max packet size must be in 1..={MAX_PACKET_BYTES} bytes"
            ));
        }
        if self.max_streams_per_peer == 0
            || self.max_inflight_per_peer == 0
            || self.max_inflight_total == 0
            || self.max_grid_nodes == 0
        {
            return bad("concurrency limits must be at least 1".into());
        }
        // One message of every protocol must fit, or honest peers could never be served.
        if self.inbound_budget < MIN_INBOUND_BUDGET {
            return bad(format!(
                "the inbound buffer budget must be at least {} MiB",
                MIN_INBOUND_BUDGET >> 20
            ));
        }
        Ok(())
    }

    /// The period between this node's announcements in a grid of `grid_size` nodes:
    /// `max(announce_interval, grid_size / budget per hour)`.
    pub fn effective_interval(&self, grid_size: usize) -> Duration {
        let budget = f64::from(self.announce_budget_per_hour.max(1));
        let scaled = Duration::from_secs_f64(grid_size as f64 * 3600.0 / budget);
        scaled.max(self.announce_interval)
    }

    /// How long this node's announcement stays valid in a grid of `grid_size` nodes.
    pub fn effective_ttl(&self, grid_size: usize) -> Duration {
        self.peer_ttl.max(3 * self.effective_interval(grid_size))
    }
}

/// `/ip4/0.0.0.0/tcp/0` and `/ip4/0.0.0.0/udp/0/quic-v1`.
pub fn default_listen() -> Vec<Multiaddr> {
    ["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"]
        .iter()
        .filter_map(|a| a.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OverlayConfig {
        OverlayConfig::new(LocalProfile {
            lat: 1.0,
            lon: 2.0,
            storage_allocated: 1 << 30,
            bandwidth_limit: 0,
            coordinator_eligible: false,
            x25519_public: [0; 32],
        })
    }

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert!(cfg().validate().is_ok());
        let mut c = cfg();
        c.profile.lat = 123.0;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("latitude 123")
        );
        let mut c = cfg();
        c.peer_ttl = Duration::from_secs(1);
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.max_packet_bytes = MAX_PACKET_BYTES as u64 + 1;
        assert!(c.validate().is_err());
    }

    #[test]
    fn announce_period_grows_with_the_grid_within_the_budget() {
        let c = cfg();
        assert_eq!(c.effective_interval(10), Duration::from_secs(600));
        // 100k nodes, 36000/h budget: every node announces every 10000 s (~2.8 h).
        assert_eq!(c.effective_interval(100_000), Duration::from_secs(10_000));
        assert_eq!(c.effective_ttl(100_000), Duration::from_secs(30_000));
    }
}
