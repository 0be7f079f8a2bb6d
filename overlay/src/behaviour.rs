//! The composed libp2p behaviour: Kademlia, identify, ping, gossipsub, the
//! four strew request-response protocols (packets, grid sync, manager, raft)
//! and NAT traversal (AutoNAT v2 client and server, relay v2 client, a relay
//! service on nodes configured for it, DCUtR). Owns construction and protocol
//! settings only; the event loop (`runtime`) reacts to what it emits.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, gossipsub, identify, kad, ping, relay,
    request_response,
};

use crate::bandwidth::BandwidthLimiter;
use crate::budget::InboundBudget;
use crate::config::OverlayConfig;
use crate::error::OverlayError;
use crate::gossip;
use crate::manager::{MANAGER_PROTOCOL, ManagerCodec};
use crate::packet::codec::PutGate;
use crate::packet::{MAX_PACKET_BYTES, PACKET_PROTOCOL, PacketCodec};
use crate::raft::driver::RAFT_TIMEOUT;
use crate::raft::{GateMarker, RAFT_PROTOCOL, RaftCodec, RaftGate};
use crate::sync::{SYNC_PROTOCOL, SyncCodec};

/// Kademlia protocol id (a strew-private DHT, not the IPFS one).
pub const KAD_PROTOCOL: &str = "/strew/kad/1.0.0";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/strew/id/1.0.0";

/// Connection limits: bounded pending handshakes (garbage on the port costs
/// little), inbound and outbound established connections counted apart (so
/// strangers dialling in cannot take the slots this node dials out with),
/// and at most four connections per peer (two as before, plus room for an
/// AutoNAT dial-back and a hole-punched connection beside a relayed one).
pub const MAX_PENDING_INCOMING: u32 = 64;
pub const MAX_PENDING_OUTGOING: u32 = 128;
pub const MAX_ESTABLISHED_INCOMING: u32 = 768;
pub const MAX_ESTABLISHED_OUTGOING: u32 = 256;
pub const MAX_PER_PEER: u32 = 4;
/// Kademlia records: strew stores none, so the record store is capped at a
/// token size and inbound records are never stored (`FilterBoth`).
pub const KAD_MAX_RECORDS: usize = 16;
pub const KAD_MAX_RECORD_BYTES: usize = 1024;
/// Concurrent streams per connection of the manager and raft protocols.
/// Every message is reserved in the global inbound budget before any of it
/// is read; these bound how much of that budget one connection can ask for.
pub const MANAGER_STREAMS: usize = 4;
pub const RAFT_STREAMS: usize = 8;
/// The relay service: coordination only (DCUtR hole punches, reaching a
/// node behind NAT for a grid message), never packet data. Circuits last at
/// most 2 minutes and carry at most 128 KiB each way (relay v2 defaults);
/// few reservations and circuits in all and per peer.
pub const RELAY_MAX_RESERVATIONS: usize = 64;
pub const RELAY_MAX_CIRCUITS: usize = 16;
pub const RELAY_MAX_CIRCUITS_PER_PEER: usize = 2;
pub const RELAY_CIRCUIT_DURATION: Duration = Duration::from_secs(120);
pub const RELAY_CIRCUIT_BYTES: u64 = 128 * 1024;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub ip_limits: crate::ip_limits::IpLimits,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub packets: request_response::Behaviour<PacketCodec>,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub manager: request_response::Behaviour<ManagerCodec>,
    /// Must stay just before `raft`: it tells the raft codec of each new
    /// connection its peer (`raft::gate`).
    pub raft_gate: GateMarker,
    pub raft: request_response::Behaviour<RaftCodec>,
    pub relay_client: relay::client::Behaviour,
    /// The relay service (coordination only), on nodes configured for it.
    pub relay: Toggle<relay::Behaviour>,
    pub dcutr: dcutr::Behaviour,
    pub autonat: autonat::v2::client::Behaviour,
    pub autonat_server: autonat::v2::server::Behaviour,
}

impl Behaviour {
    pub fn new(
        key: &Keypair,
        config: &OverlayConfig,
        limiter: BandwidthLimiter,
        gate: PutGate,
        raft_gate: RaftGate,
        relay_client: relay::client::Behaviour,
    ) -> Result<Self, OverlayError> {
        let peer_id = key.public().to_peer_id();
        let budget = InboundBudget::new(config.inbound_budget);

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(Duration::from_secs(30));
        // The event loop bootstraps on connection and then periodically; kad's own
        // timer would only log "no known peers" on the first node of a grid.
        kad_config.set_periodic_bootstrap_interval(None);
        kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
        let store = kad::store::MemoryStore::with_config(
            peer_id,
            kad::store::MemoryStoreConfig {
                max_records: KAD_MAX_RECORDS,
                max_value_bytes: KAD_MAX_RECORD_BYTES,
                max_providers_per_key: 4,
                max_provided_keys: KAD_MAX_RECORDS,
            },
        );
        let mut kad = kad::Behaviour::with_config(peer_id, store, kad_config);
        // Loopback and LAN grids never confirm an external address: be a server explicitly.
        kad.set_mode(Some(kad::Mode::Server));

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(format!("strew/{}", env!("CARGO_PKG_VERSION"))),
        );

        let ping = ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_secs(15)));

        let gossip_config = gossip::config(Duration::from_secs(1))
            .map_err(|e| OverlayError::Config(format!("gossipsub: {e}")))?;
        let mut gossipsub = gossipsub::Behaviour::new(
            gossipsub::MessageAuthenticity::Signed(key.clone()),
            gossip_config,
        )
        .map_err(|e| OverlayError::Config(format!("gossipsub: {e}")))?;
        let (params, thresholds) = gossip::score_params();
        gossipsub
            .with_peer_score(params, thresholds)
            .map_err(|e| OverlayError::Config(format!("gossipsub scoring: {e}")))?;
        gossipsub
            .subscribe(&gossip::topic())
            .map_err(|e| OverlayError::Config(format!("gossipsub subscribe: {e}")))?;

        let packets = request_response::Behaviour::with_codec(
            PacketCodec::new(MAX_PACKET_BYTES, limiter, budget.clone()).with_put_gate(gate),
            [(
                StreamProtocol::new(PACKET_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(config.max_streams_per_peer),
        );

        let sync = request_response::Behaviour::with_codec(
            SyncCodec::new(budget.clone()),
            [(
                StreamProtocol::new(SYNC_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(30))
                .with_max_concurrent_streams(4),
        );

        let manager = request_response::Behaviour::with_codec(
            ManagerCodec::new(budget.clone()),
            [(
                StreamProtocol::new(MANAGER_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            // Few streams: a message may be 64 MiB (reserved in the inbound
            // budget before it is read).
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MANAGER_STREAMS),
        );

        // Raft messages carry their own deadlines (one heartbeat for
        // appends, longer for snapshot chunks); this is only the outer bound.
        let raft = request_response::Behaviour::with_codec(
            RaftCodec::new(budget, raft_gate.clone()),
            [(
                StreamProtocol::new(RAFT_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(RAFT_TIMEOUT)
                .with_max_concurrent_streams(RAFT_STREAMS),
        );

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_pending_incoming(Some(MAX_PENDING_INCOMING))
                .with_max_pending_outgoing(Some(MAX_PENDING_OUTGOING))
                .with_max_established_incoming(Some(MAX_ESTABLISHED_INCOMING))
                .with_max_established_outgoing(Some(MAX_ESTABLISHED_OUTGOING))
                .with_max_established_per_peer(Some(MAX_PER_PEER)),
        );

        Ok(Behaviour {
            limits,
            ip_limits: crate::ip_limits::IpLimits::default(),
            kad,
            identify,
            ping,
            gossipsub,
            packets,
            sync,
            manager,
            raft_gate: GateMarker::new(raft_gate),
            raft,
            relay_client,
            relay: Toggle::from(config.relay_service.then(|| {
                relay::Behaviour::new(
                    peer_id,
                    relay::Config {
                        max_reservations: RELAY_MAX_RESERVATIONS,
                        max_reservations_per_peer: 2,
                        max_circuits: RELAY_MAX_CIRCUITS,
                        max_circuits_per_peer: RELAY_MAX_CIRCUITS_PER_PEER,
                        max_circuit_duration: RELAY_CIRCUIT_DURATION,
                        max_circuit_bytes: RELAY_CIRCUIT_BYTES,
                        ..Default::default()
                    },
                )
            })),
            dcutr: dcutr::Behaviour::new(peer_id),
            autonat: autonat::v2::client::Behaviour::new(
                rand::make_rng::<rand::rngs::StdRng>(),
                autonat::v2::client::Config::default()
                    .with_probe_interval(config.autonat_probe_interval),
            ),
            autonat_server: autonat::v2::server::Behaviour::default(),
        })
    }
}
