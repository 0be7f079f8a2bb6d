//! The overlay crate's error type, sorted by what the caller should do.

use strew_coordinator::NodeId;

use crate::packet::Refusal;

/// Errors from starting the overlay or from a packet operation.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("invalid overlay configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    #[error("transport setup failed")]
    Transport(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The overlay's event loop has stopped (shutdown in progress).
    #[error("the overlay is shut down")]
    Stopped,
    #[error("packet of {size} bytes exceeds the limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    /// The target answered with a refusal.
    #[error("target {target} refused")]
    Refused {
        target: NodeId,
        #[source]
        reason: Refusal,
    },
    /// The request failed in transit (dial failure, timeout, stream reset).
    #[error("request to {target} failed: {detail}")]
    Unreachable { target: NodeId, detail: String },
    /// The target answered something that does not fit the request.
    #[error("target {target} answered wrongly: {detail}")]
    BadResponse { target: NodeId, detail: String },
}
