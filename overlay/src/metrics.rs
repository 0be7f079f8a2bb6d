//! strew's own overlay metrics (Prometheus, prometheus-client 0.25), next to
//! libp2p's protocol metrics which are registered in the same registry.
//!
//! Owns metric definitions and their registration. It must not serve HTTP
//! (the node does) or decide anything.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PacketLabel {
    /// `in` (served as target) or `out` (sent as source).
    pub direction: &'static str,
    /// `put`, `get`, `delete`.
    pub op: &'static str,
    /// `ok`, `refused`, `failed`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: &'static str,
}

/// The overlay's counters and gauges.
#[derive(Clone, Debug, Default)]
pub struct OverlayMetrics {
    /// Nodes in the grid view (this node excluded).
    pub grid_peers: Gauge,
    pub connected_peers: Gauge,
    pub announcements: Family<ResultLabel, Counter>,
    pub announcements_published: Counter,
    pub view_refreshes: Counter,
    pub packets: Family<PacketLabel, Counter>,
    pub packet_bytes: Family<DirectionLabel, Counter>,
    pub store_capacity_bytes: Gauge,
    pub store_free_bytes: Gauge,
    pub inflight_requests: Gauge,
}

impl OverlayMetrics {
    /// Creates the metrics and registers them under the `strew` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let m = OverlayMetrics::default();
        let r = registry.sub_registry_with_prefix("strew");
        r.register(
            "grid_peers",
            "Nodes in this node's grid view, itself excluded",
            m.grid_peers.clone(),
        );
        r.register(
            "connected_peers",
            "Open libp2p connections' distinct peers",
            m.connected_peers.clone(),
        );
        r.register(
            "announcements",
            "Received announcements by validation result: accepted, duplicate (seen already), clock (expired or from the future: clock skew), rate (over the per-node rate limit), ip_rate (a new node over its delivering IP's budget), rejected (invalid)",
            m.announcements.clone(),
        );
        r.register(
            "oversize_messages",
            "Framed messages (manager, raft, packet) refused for exceeding their protocol's size limit, inbound or outbound",
            crate::cbor::OVERSIZE_MESSAGES.clone(),
        );
        r.register(
            "announcements_published",
            "Announcements this node published",
            m.announcements_published.clone(),
        );
        r.register(
            "grid_view_refreshes",
            "Connected peers missing from the grid view asked for their own announcement (their gossip stopped arriving)",
            m.view_refreshes.clone(),
        );
        r.register(
            "packets",
            "Packet requests by direction, operation and result",
            m.packets.clone(),
        );
        r.register(
            "packet_bytes",
            "Packet body bytes moved (in = received, out = sent)",
            m.packet_bytes.clone(),
        );
        r.register(
            "store_capacity_bytes",
            "Storage this node donates",
            m.store_capacity_bytes.clone(),
        );
        r.register(
            "store_free_bytes",
            "Free donated storage",
            m.store_free_bytes.clone(),
        );
        r.register(
            "inflight_requests",
            "Inbound packet requests being served",
            m.inflight_requests.clone(),
        );
        m
    }

    pub fn announcement(&self, result: &'static str) {
        self.announcements
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn packet(&self, direction: &'static str, op: &'static str, result: &'static str) {
        self.packets
            .get_or_create(&PacketLabel {
                direction,
                op,
                result,
            })
            .inc();
    }

    pub fn bytes(&self, direction: &'static str, n: usize) {
        self.packet_bytes
            .get_or_create(&DirectionLabel { direction })
            .inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_appear_in_the_text_exposition() {
        let mut registry = Registry::default();
        let m = OverlayMetrics::register(&mut registry);
        m.announcement("accepted");
        m.packet("in", "put", "ok");
        m.bytes("in", 42);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("strew_announcements_total{result=\"accepted\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("strew_packet_bytes_total{direction=\"in\"} 42"),
            "{text}"
        );
    }
}
