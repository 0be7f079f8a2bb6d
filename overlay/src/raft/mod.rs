//! The coordinator group's raft protocol (`/strew/raft/1`): opaque,
//! size-bounded messages between members of the group.
//!
//! Owns the codec (one message per stream direction, at most
//! [`MAX_RAFT_BYTES`]) and the [`RaftEndpoint`] seam through which the node
//! plugs its consensus member in. The overlay never looks inside a message:
//! encoding, decoding and deciding whether the sender may speak to the group
//! are the node's. The sender is the authenticated remote peer (Noise). The
//! protocol's runtime state (messages in flight both ways) is in `driver`.

pub(crate) mod driver;

use std::future::Future;
use std::io;
use std::pin::Pin;

use futures::{AsyncRead, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;
use strew_coordinator::NodeId;

use crate::cbor;

/// Protocol id.
pub const RAFT_PROTOCOL: &str = "/strew/raft/1";
/// Largest request or reply on the wire (the node's raft messages are
/// bounded to the same size before they are handed over).
pub const MAX_RAFT_BYTES: usize = 64 << 20;

/// A boxed answer of the endpoint.
pub type RaftAnswer<'a> = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send + 'a>>;

/// The node's side of the raft protocol: answers a message from `sender`
/// with the reply bytes, or `None` to close the stream without a reply
/// (the sender sees the member as unreachable).
pub trait RaftEndpoint: Send + Sync + 'static {
    fn handle(&self, sender: NodeId, message: Vec<u8>) -> RaftAnswer<'_>;
}

/// The raft codec: opaque bytes, size-bounded in both directions.
#[derive(Clone, Debug, Default)]
pub struct RaftCodec;

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
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        cbor::read_limited(io, MAX_RAFT_BYTES).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        cbor::read_limited(io, MAX_RAFT_BYTES).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        check_len(req.len())?;
        io.write_all(&req).await?;
        io.close().await
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
        io.write_all(&res).await?;
        io.close().await
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
            let mut codec = RaftCodec;
            let mut wire = futures::io::Cursor::new(Vec::new());
            codec
                .write_request(&protocol, &mut wire, b"append entries".to_vec())
                .await
                .unwrap();
            let mut read = futures::io::Cursor::new(wire.into_inner());
            let got = codec.read_request(&protocol, &mut read).await.unwrap();
            assert_eq!(got, b"append entries");

            let mut sink = futures::io::Cursor::new(Vec::new());
            let huge = vec![0u8; MAX_RAFT_BYTES + 1];
            assert!(
                codec
                    .write_response(&protocol, &mut sink, huge.clone())
                    .await
                    .is_err()
            );
            let mut read = futures::io::Cursor::new(huge);
            assert!(codec.read_response(&protocol, &mut read).await.is_err());
        });
    }
}
