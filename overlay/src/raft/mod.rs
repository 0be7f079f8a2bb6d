//! The coordinator group's raft protocol (`/strew/raft/4`): opaque,
//! size-bounded, length-prefixed messages between members of the group.
//!
//! Owns the codec (one framed message per stream direction, at most
//! [`MAX_RAFT_BYTES`], read only into room reserved in the inbound budget) and the [`RaftEndpoint`] seam through which the node
//! plugs its consensus member in. The overlay never looks inside a message:
//! encoding, decoding and deciding whether the sender may speak to the group
//! are the node's. The sender is the authenticated remote peer (Noise). The
//! protocol's runtime state (messages in flight both ways) is in `driver`.

pub(crate) mod driver;
pub mod gate;

use std::future::Future;
use std::io;
use std::pin::Pin;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response;
use strew_coordinator::NodeId;

use crate::budget::InboundBudget;
use crate::cbor;
pub use gate::{GateMarker, RaftGate};

/// Protocol id. Version 2: each message is length-prefixed (`cbor::read_framed`).
/// Version 3: entries may propose trust changes (grid root, certificates).
pub const RAFT_PROTOCOL: &str = "/strew/raft/4";
/// Largest request or reply on the wire, 4 MiB (the node's raft messages
/// are bounded to the same size before they are handed over: entries of at
/// most 1 MiB, a few per append, snapshot chunks below it).
pub const MAX_RAFT_BYTES: usize = 4 << 20;

/// A boxed answer of the endpoint.
pub type RaftAnswer<'a> = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'a>>;

/// The node's side of the raft protocol: answers a message from `sender`
/// with the reply bytes, or `None` to close the stream without a reply
/// (the sender sees the member as unreachable).
pub trait RaftEndpoint: Send + Sync + 'static {
    fn handle(&self, sender: NodeId, message: Vec<u8>) -> RaftAnswer<'_>;
}

/// The raft codec: opaque bytes, size-bounded in both directions and read
/// only into room reserved in the inbound budget, from members only (the
/// [`RaftGate`] decides before anything is read).
#[derive(Debug, Default)]
pub struct RaftCodec {
    budget: InboundBudget,
    gate: RaftGate,
    /// The remote peer of the connection this codec serves (bound when the
    /// connection is set up, see [`gate`]).
    peer: Option<libp2p::PeerId>,
}

impl RaftCodec {
    pub fn new(budget: InboundBudget, gate: RaftGate) -> Self {
        RaftCodec {
            budget,
            gate,
            peer: None,
        }
    }
}

impl Clone for RaftCodec {
    /// A per-connection clone takes the peer of the connection being set up;
    /// a per-stream clone keeps its connection's.
    fn clone(&self) -> Self {
        RaftCodec {
            budget: self.budget.clone(),
            gate: self.gate.clone(),
            peer: self.peer.or_else(|| self.gate.connecting_peer()),
        }
    }
}

/// A raft message: inbound ones hold their share of the inbound budget
/// until they are answered.
#[derive(Debug)]
pub struct RaftMessage {
    pub bytes: Vec<u8>,
    reserved: Option<crate::budget::Reserved>,
}

impl RaftMessage {
    /// The bytes and the share of the budget they hold (keep it until the
    /// message is answered).
    pub fn into_parts(self) -> (Vec<u8>, Option<crate::budget::Reserved>) {
        (self.bytes, self.reserved)
    }

    /// Bytes of the message as held in the inbound budget.
    pub fn reserved(&self) -> usize {
        self.reserved.as_ref().map_or(0, |r| r.bytes())
    }
}

impl From<Vec<u8>> for RaftMessage {
    fn from(bytes: Vec<u8>) -> Self {
        RaftMessage {
            bytes,
            reserved: None,
        }
    }
}

impl From<cbor::Framed> for RaftMessage {
    fn from(framed: cbor::Framed) -> Self {
        RaftMessage {
            bytes: framed.bytes,
            reserved: Some(framed.reserved),
        }
    }
}

fn check_len(len: usize) -> io::Result<()> {
    if len > MAX_RAFT_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("raft message of {len} bytes exceeds {MAX_RAFT_BYTES} bytes"),
        ));
    }
    Ok(())
}

impl request_response::Codec for RaftCodec {
    type Protocol = StreamProtocol;
    type Request = RaftMessage;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<RaftMessage>
    where
        T: AsyncRead + Unpin + Send,
    {
        if !self.gate.admits(self.peer.as_ref()) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "raft stream from a peer that is not a member of this coordinator group",
            ));
        }
        Ok(cbor::read_framed(io, MAX_RAFT_BYTES, &self.budget)
            .await?
            .into())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        // The reply to this node's own request: held only while read.
        Ok(cbor::read_framed(io, MAX_RAFT_BYTES, &self.budget)
            .await?
            .bytes)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: RaftMessage,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        check_len(req.bytes.len())?;
        cbor::write_framed(io, &req.bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        check_len(res.len())?;
        cbor::write_framed(io, &res).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use request_response::Codec;

    #[test]
    fn messages_pass_unchanged_and_oversized_ones_are_refused() {
        futures::executor::block_on(async {
            let protocol = StreamProtocol::new(RAFT_PROTOCOL);
            let budget = InboundBudget::new(1 << 20);
            let gate = RaftGate::default();
            gate.set_serving(true);
            let mut codec = RaftCodec::new(budget.clone(), gate);
            let mut wire = futures::io::Cursor::new(Vec::new());
            codec
                .write_request(&protocol, &mut wire, b"append entries".to_vec().into())
                .await
                .unwrap();
            let mut read = futures::io::Cursor::new(wire.into_inner());
            let got = codec.read_request(&protocol, &mut read).await.unwrap();
            assert_eq!(got.bytes, b"append entries");
            assert_eq!(budget.used(), got.reserved(), "held until answered");
            drop(got);
            assert_eq!(budget.used(), 0);

            let mut sink = futures::io::Cursor::new(Vec::new());
            let huge = vec![0u8; MAX_RAFT_BYTES + 1];
            assert!(
                codec
                    .write_response(&protocol, &mut sink, huge.clone())
                    .await
                    .is_err()
            );
            // A peer announcing more than the limit is refused on its prefix.
            let mut framed = ((MAX_RAFT_BYTES + 1) as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(&huge[..16]);
            let mut read = futures::io::Cursor::new(framed);
            assert!(codec.read_response(&protocol, &mut read).await.is_err());
        });
    }

    #[test]
    fn a_stream_from_a_non_member_is_refused_unread() {
        futures::executor::block_on(async {
            let protocol = StreamProtocol::new(RAFT_PROTOCOL);
            let budget = InboundBudget::new(1 << 20);
            let gate = RaftGate::default();
            gate.set_serving(true);
            let member = libp2p::identity::Keypair::generate_ed25519()
                .public()
                .to_peer_id();
            let member_id = crate::peer::node_id_of(&member).unwrap();
            gate.set_members(Some(&[member_id]));
            let base = RaftCodec::new(budget.clone(), gate.clone());
            // Connections are set up: one from the member, one from a stranger.
            gate.connecting(member);
            let mut from_member = base.clone();
            gate.connecting(libp2p::PeerId::random());
            let from_stranger = base.clone();
            let mut wire = futures::io::Cursor::new(Vec::new());
            from_member
                .write_request(&protocol, &mut wire, b"vote".to_vec().into())
                .await
                .unwrap();
            let bytes = wire.into_inner();
            // A per-stream clone keeps its connection's peer.
            let mut stream = from_stranger.clone();
            let mut read = futures::io::Cursor::new(bytes.clone());
            let refused = stream.read_request(&protocol, &mut read).await;
            assert_eq!(
                refused.map(|m| m.bytes).unwrap_err().kind(),
                io::ErrorKind::PermissionDenied
            );
            assert_eq!(read.position(), 0, "nothing of the stream was read");
            assert_eq!(budget.used(), 0);
            let mut stream = from_member.clone();
            let mut read = futures::io::Cursor::new(bytes);
            let got = stream.read_request(&protocol, &mut read).await.unwrap();
            assert_eq!(got.bytes, b"vote");
        });
    }
}
