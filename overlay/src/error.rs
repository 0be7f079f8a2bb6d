//! The overlay crate's error types, sorted by what the caller should do:
//! [`OverlayError`] for every operation of the handle, and [`RequestFailure`]
//! for how one outbound request failed in transit.

use std::io;

use libp2p::request_response::OutboundFailure;
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
    /// The request failed in transit; `failure` says how (unreachable,
    /// stream refused, timed out, I/O). Part of the message, not a source,
    /// so error-chain formatters do not repeat it.
    #[error("request to {target} failed: {failure}")]
    Request {
        target: NodeId,
        failure: RequestFailure,
    },
    /// The target answered something that does not fit the request.
    #[error("target {target} answered wrongly: {detail}")]
    BadResponse { target: NodeId, detail: String },
}

impl OverlayError {
    /// How the request failed in transit, if that is what happened.
    pub fn request_failure(&self) -> Option<&RequestFailure> {
        match self {
            OverlayError::Request { failure, .. } => Some(failure),
            _ => None,
        }
    }
}

/// How an outbound request failed in transit, sorted by what the caller
/// should do with the peer. Each keeps libp2p's (or the OS's) words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    /// No connection could be made (dial failure, bad peer id): the peer is
    /// down or not reachable from here; try another.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// A connection was there but the peer would not carry the request: it
    /// does not speak the protocol, refused the stream, or the connection
    /// closed before an answer.
    #[error("refused: {0}")]
    Refused(String),
    /// No answer within the deadline; the peer may have acted on the request.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// The stream broke while reading or writing (includes oversize or
    /// undecodable answers, which surface as I/O errors from the codec).
    #[error("i/o error: {0}")]
    Io(String),
}

impl RequestFailure {
    /// The detail text (libp2p's or the OS's words).
    pub fn detail(&self) -> &str {
        match self {
            RequestFailure::Unreachable(d)
            | RequestFailure::Refused(d)
            | RequestFailure::TimedOut(d)
            | RequestFailure::Io(d) => d,
        }
    }
}

impl From<&OutboundFailure> for RequestFailure {
    fn from(failure: &OutboundFailure) -> Self {
        let detail = failure.to_string();
        match failure {
            OutboundFailure::DialFailure => RequestFailure::Unreachable(detail),
            OutboundFailure::Timeout => RequestFailure::TimedOut(detail),
            OutboundFailure::ConnectionClosed | OutboundFailure::UnsupportedProtocols => {
                RequestFailure::Refused(detail)
            }
            OutboundFailure::Io(err) => match err.kind() {
                io::ErrorKind::TimedOut => RequestFailure::TimedOut(detail),
                io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset => {
                    RequestFailure::Refused(detail)
                }
                _ => RequestFailure::Io(detail),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libp2p_failures_keep_unreachable_refused_and_timed_out_apart() {
        let of = |f: OutboundFailure| RequestFailure::from(&f);
        assert!(matches!(
            of(OutboundFailure::DialFailure),
            RequestFailure::Unreachable(_)
        ));
        assert!(matches!(
            of(OutboundFailure::Timeout),
            RequestFailure::TimedOut(_)
        ));
        assert!(matches!(
            of(OutboundFailure::ConnectionClosed),
            RequestFailure::Refused(_)
        ));
        assert!(matches!(
            of(OutboundFailure::UnsupportedProtocols),
            RequestFailure::Refused(_)
        ));
        let eof = of(OutboundFailure::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "stream closed",
        )));
        assert!(matches!(eof, RequestFailure::Io(_)));
        assert!(eof.detail().contains("stream closed"));
        let slow = of(OutboundFailure::Io(io::ErrorKind::TimedOut.into()));
        assert!(matches!(slow, RequestFailure::TimedOut(_)));
    }

    #[test]
    fn the_failure_is_in_the_message_once() {
        let err = OverlayError::Request {
            target: NodeId([1; 32]),
            failure: RequestFailure::TimedOut("no answer".into()),
        };
        let text = err.to_string();
        assert!(text.contains("timed out: no answer"), "{text}");
        assert!(std::error::Error::source(&err).is_none());
    }
}
