//! Grid-view sync (`/strew/grid-sync/3`): a node that has just connected to a
//! peer pulls that peer's current signed announcements page by page, so a
//! newcomer learns the whole grid at once instead of waiting a full
//! announcement period (and so periodic announcements can stay rare).
//!
//! Owns the messages and their size-bounded CBOR codec. Every synced
//! announcement is re-validated by the receiver exactly like a gossiped one;
//! this module must not trust or interpret them. The protocol's runtime
//! state (whom this node synced with) is in `driver`.

pub(crate) mod driver;

pub use driver::MAX_SYNC_PAGES;

use std::io;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::{Deserialize, Serialize};
use strew_coordinator::NodeId;

use crate::announcement::ANNOUNCEMENT_MAX_BYTES;
use crate::budget::InboundBudget;
use crate::cbor;

/// Protocol id.
/// Version 2: each message is length-prefixed (`cbor::read_framed`).
pub const SYNC_PROTOCOL: &str = "/strew/grid-sync/3";
/// Most announcements in one page.
pub const MAX_PAGE: u32 = 512;
/// Largest request on the wire.
pub const MAX_REQUEST_BYTES: usize = 256;
/// Largest response on the wire.
pub const MAX_RESPONSE_BYTES: usize = MAX_PAGE as usize * (ANNOUNCEMENT_MAX_BYTES + 8) + 64;

/// Asks for announcements of nodes ordered after `after` (by NodeId).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub after: Option<NodeId>,
    pub limit: u32,
}

/// One page of signed announcements, exactly as their authors signed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub announcements: Vec<SignedBytes>,
    /// The last NodeId in this page when more follow.
    pub next: Option<NodeId>,
}

/// A byte string (one signed announcement envelope).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignedBytes(#[serde(with = "cbor::bytes")] pub Vec<u8>);

/// Decodes a request (fuzz entry point).
pub fn decode_request(bytes: &[u8]) -> Result<SyncRequest, cbor::CborError> {
    cbor::decode(bytes, MAX_REQUEST_BYTES)
}

/// Decodes a response (fuzz entry point).
pub fn decode_response(bytes: &[u8]) -> Result<SyncResponse, cbor::CborError> {
    let resp: SyncResponse = cbor::decode(bytes, MAX_RESPONSE_BYTES)?;
    Ok(resp)
}

/// The sync codec: one framed CBOR value per stream direction,
/// size-bounded, read only into room reserved in the inbound budget.
#[derive(Clone, Debug, Default)]
pub struct SyncCodec {
    budget: InboundBudget,
}

impl SyncCodec {
    pub fn new(budget: InboundBudget) -> Self {
        SyncCodec { budget }
    }
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = SyncRequest;
    type Response = SyncResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let framed = cbor::read_framed(io, MAX_REQUEST_BYTES, &self.budget).await?;
        decode_request(&framed.bytes).map_err(cbor::invalid)
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SyncResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let framed = cbor::read_framed(io, MAX_RESPONSE_BYTES, &self.budget).await?;
        decode_response(&framed.bytes).map_err(cbor::invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: SyncRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        cbor::write_message(io, &req, MAX_REQUEST_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: SyncResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        cbor::write_message(io, &res, MAX_RESPONSE_BYTES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let req = SyncRequest {
            after: Some(NodeId([1; 32])),
            limit: 10,
        };
        assert_eq!(decode_request(&cbor::encode(&req).unwrap()).unwrap(), req);
        let res = SyncResponse {
            announcements: vec![SignedBytes(vec![1, 2, 3])],
            next: None,
        };
        assert_eq!(decode_response(&cbor::encode(&res).unwrap()).unwrap(), res);
        assert!(decode_request(&[0xff; 300]).is_err());
        assert!(decode_response(b"nonsense").is_err());
    }
}
