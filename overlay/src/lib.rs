//! strew's libp2p overlay: transports (TCP and QUIC with Noise and Yamux),
//! peer routing (Kademlia, identify, ping), gossip of signed capacity and
//! location announcements into the grid view, grid sync for newcomers, and
//! direct packet exchange between source and target under the sequence
//! manager's storage tickets, and NAT traversal (AutoNAT v2, relay v2 for
//! coordination, DCUtR hole punching; see [`reachability`]).
//!
//! The node crate starts it with [`start`] and talks to it through
//! [`OverlayHandle`]; storage is reached through the [`PacketStorage`] trait so
//! this crate does not depend on the node.

pub mod announcement;
pub mod bandwidth;
pub mod behaviour;
pub mod budget;
pub mod cbor;
pub mod config;
mod discovery;
pub mod error;
pub mod gossip;
pub mod grid;
mod handle;
pub mod ip_limits;
pub mod liveness;
pub mod manager;
pub mod metrics;
pub mod muxer;
pub mod outbound;
pub mod packet;
pub mod peer;
pub mod raft;
pub mod reachability;
pub mod room;
pub mod runtime;
pub mod space;
pub mod sync;

pub use announcement::{ANNOUNCEMENT_MAX_BYTES, Announcement, AnnouncementError, PROTOCOL_VERSION};
pub use bandwidth::BandwidthLimiter;
pub use config::{LocalProfile, OverlayConfig};
pub use error::{OverlayError, RequestFailure};
pub use manager::{ManagerAnswer, ManagerEndpoint, ManagerRequest, ManagerResponse, RefusalCode};
pub use metrics::OverlayMetrics;
pub use packet::{
    DeleteOutcome, MAX_PACKET_BYTES, MemoryStorage, PacketStorage, ReadLimit, Receipt, Refusal,
    StorageError,
};
pub use raft::{RaftAnswer, RaftEndpoint};
pub use reachability::Reachability;
pub use runtime::{OverlayHandle, PeerInfo, now_ms, start};

/// libp2p as this crate uses it (the node reaches keys and multiaddrs through here).
pub use libp2p;
pub use libp2p::Multiaddr;
pub use libp2p::identity::Keypair;
