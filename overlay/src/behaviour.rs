//! The composed libp2p behaviour: Kademlia, identify, ping, gossipsub and the
//! four strew request-response protocols (packets, grid sync, manager, raft). Owns construction and protocol
//! settings only; the event loop (`runtime`) reacts to what it emits.

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, connection_limits, gossipsub, identify, kad, ping, request_response};

use crate::bandwidth::BandwidthLimiter;
use crate::config::OverlayConfig;
use crate::error::OverlayError;
use crate::gossip;
use crate::manager::{MANAGER_PROTOCOL, ManagerCodec};
use crate::packet::{MAX_PACKET_BYTES, PACKET_PROTOCOL, PacketCodec};
use crate::raft::driver::RAFT_TIMEOUT;
use crate::raft::{RAFT_PROTOCOL, RaftCodec};
use crate::sync::{SYNC_PROTOCOL, SyncCodec};

/// Kademlia protocol id (a strew-private DHT, not the IPFS one).
pub const KAD_PROTOCOL: &str = "/strew/kad/1.0.0";
/// Identify protocol version string.
pub const IDENTIFY_PROTOCOL: &str = "/strew/id/1.0.0";

/// Connection limits: bounded pending handshakes (garbage on the port costs
/// little), a bounded total, and at most two connections per peer.
pub const MAX_PENDING_INCOMING: u32 = 64;
pub const MAX_ESTABLISHED: u32 = 1024;
pub const MAX_PER_PEER: u32 = 2;
/// Concurrent streams per connection of the manager and raft protocols.
/// Their messages (up to 64 MiB) are read whole before anyone checks who
/// sent them, so these bound what one peer can make a node buffer:
/// (4 + 8) × 64 MiB per connection in the worst case.
pub const MANAGER_STREAMS: usize = 4;
pub const RAFT_STREAMS: usize = 8;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub limits: connection_limits::Behaviour,
    pub kad: kad::Behaviour<kad::store::MemoryStore>,
    pub identify: identify::Behaviour,
    pub ping: ping::Behaviour,
    pub gossipsub: gossipsub::Behaviour,
    pub packets: request_response::Behaviour<PacketCodec>,
    pub sync: request_response::Behaviour<SyncCodec>,
    pub manager: request_response::Behaviour<ManagerCodec>,
    pub raft: request_response::Behaviour<RaftCodec>,
}

impl Behaviour {
    pub fn new(
        key: &Keypair,
        config: &OverlayConfig,
        limiter: BandwidthLimiter,
    ) -> Result<Self, OverlayError> {
        let peer_id = key.public().to_peer_id();

        let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
        kad_config.set_query_timeout(Duration::from_secs(30));
        // The event loop bootstraps on connection and then periodically; kad's own
        // timer would only log "no known peers" on the first node of a grid.
        kad_config.set_periodic_bootstrap_interval(None);
        let mut kad =
            kad::Behaviour::with_config(peer_id, kad::store::MemoryStore::new(peer_id), kad_config);
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
            PacketCodec::new(MAX_PACKET_BYTES, limiter),
            [(
                StreamProtocol::new(PACKET_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(config.max_streams_per_peer),
        );

        let sync = request_response::Behaviour::with_codec(
            SyncCodec,
            [(
                StreamProtocol::new(SYNC_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            request_response::Config::default()
                .with_request_timeout(Duration::from_secs(30))
                .with_max_concurrent_streams(4),
        );

        let manager = request_response::Behaviour::with_codec(
            ManagerCodec,
            [(
                StreamProtocol::new(MANAGER_PROTOCOL),
                request_response::ProtocolSupport::Full,
            )],
            // Few streams: a message may be 64 MiB and is buffered whole
            // before the caller is known to be a client the manager serves.
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(MANAGER_STREAMS),
        );

        // Raft messages carry their own deadlines (one heartbeat for
        // appends, longer for snapshot chunks); this is only the outer bound.
        let raft = request_response::Behaviour::with_codec(
            RaftCodec,
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
                .with_max_established(Some(MAX_ESTABLISHED))
                .with_max_established_per_peer(Some(MAX_PER_PEER)),
        );

        Ok(Behaviour {
            limits,
            kad,
            identify,
            ping,
            gossipsub,
            packets,
            sync,
            manager,
            raft,
        })
    }
}
