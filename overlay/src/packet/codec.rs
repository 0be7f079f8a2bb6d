//! The packet protocol's request-response codec: framing, size limits and the
//! bandwidth limit on bodies.
//!
//! Owns reading and writing frames (`u32 BE header length | CBOR header | body`)
//! with hard limits checked before any allocation, pacing bodies through the
//! shared [`BandwidthLimiter`], and the [`PutGate`]: a put whose ticket does
//! not hold is drained unbuffered (its body never held in memory) and handed
//! on without its body, so the service answers its typed refusal. Beyond
//! that gate it must not interpret requests (the service does).

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response;

use strew_coordinator::{NodeId, PacketId, TicketKind};

use crate::bandwidth::BandwidthLimiter;
use crate::budget::InboundBudget;
use crate::packet::service::TrustedManagers;
use crate::packet::ticket;
use crate::packet::wire::{
    self, MAX_HEADER_BYTES, MAX_PACKET_BYTES, PacketRequest, PacketResponse,
};

/// Bodies move in slices of this size (one bandwidth-limiter grant each).
pub const SLICE_BYTES: usize = 64 * 1024;

/// Decides from a put's header alone whether its body is worth reading: the
/// ticket must be a store ticket from a trusted manager naming the packet for
/// this node, unexpired.
#[derive(Clone, Debug)]
pub struct PutGate {
    me: NodeId,
    managers: TrustedManagers,
    verified: ticket::VerifiedTickets,
}

impl PutGate {
    pub fn new(me: NodeId, managers: TrustedManagers) -> Self {
        PutGate {
            me,
            managers,
            verified: Default::default(),
        }
    }

    /// Shares the signatures verified with the packet service's checks.
    pub fn with_verified_tickets(mut self, verified: ticket::VerifiedTickets) -> Self {
        self.verified = verified;
        self
    }

    /// Whether `ticket` authorises storing `packet_id` here at `now_ms`.
    pub fn admits(&self, packet_id: &PacketId, ticket: &[u8], now_ms: u64) -> bool {
        if ticket.is_empty() {
            return false;
        }
        let managers = self.managers.read().map(|m| m.clone()).unwrap_or_default();
        ticket::check(
            ticket,
            &managers,
            ticket::Asked {
                kind: TicketKind::Store,
                me: &self.me,
                requester: None,
                packet_id,
                now_ms,
            },
            &self.verified,
        )
        .is_ok()
    }
}

/// The codec; cheap to clone (the limiter, the budget and the gate are shared).
#[derive(Clone, Debug)]
pub struct PacketCodec {
    max_body: usize,
    limiter: BandwidthLimiter,
    budget: InboundBudget,
    gate: Option<PutGate>,
}

impl PacketCodec {
    /// `max_body` is clamped to [`MAX_PACKET_BYTES`]; every header and body
    /// read is reserved in `budget` first.
    pub fn new(max_body: usize, limiter: BandwidthLimiter, budget: InboundBudget) -> Self {
        PacketCodec {
            max_body: max_body.min(MAX_PACKET_BYTES),
            limiter,
            budget,
            gate: None,
        }
    }

    /// Reads put bodies only when `gate` admits their ticket.
    pub fn with_put_gate(mut self, gate: PutGate) -> Self {
        self.gate = Some(gate);
        self
    }
}

impl Default for PacketCodec {
    fn default() -> Self {
        PacketCodec::new(
            MAX_PACKET_BYTES,
            BandwidthLimiter::unlimited(),
            InboundBudget::unlimited(),
        )
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A frame header's CBOR; one that does not encode is an error, never sent empty.
fn encode_header<H: serde::Serialize>(header: &H) -> io::Result<Vec<u8>> {
    crate::cbor::encode(header).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Reads one frame's header bytes (reserved in the budget while read) and
/// returns them.
async fn read_header<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: &InboundBudget,
) -> io::Result<Vec<u8>> {
    Ok(crate::cbor::read_framed(io, MAX_HEADER_BYTES, budget)
        .await
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => invalid(format!("frame header: {e}")),
            _ => e,
        })?
        .bytes)
}

impl PacketCodec {
    fn check_body(&self, len: u64) -> io::Result<usize> {
        if len > self.max_body as u64 {
            return Err(invalid(format!(
                "declared body of {len} bytes exceeds the limit of {}",
                self.max_body
            )));
        }
        Ok(len as usize)
    }

    async fn read_body<T: AsyncRead + Unpin + Send>(
        &self,
        io: &mut T,
        len: usize,
    ) -> io::Result<Vec<u8>> {
        // Reserved before anything is allocated or read; given back once the
        // body is in the request (the service's in-flight limit bounds it then).
        let _reserved = self.budget.reserve(len)?;
        let mut body = vec![0u8; len];
        for slice in body.chunks_mut(SLICE_BYTES) {
            self.limiter.acquire(slice.len()).await;
            io.read_exact(slice).await?;
        }
        Ok(body)
    }

    /// Reads and discards `len` body bytes in slices (nothing held): a put
    /// refused on its header still leaves the stream in step for the answer.
    async fn drain<T: AsyncRead + Unpin + Send>(&self, io: &mut T, len: usize) -> io::Result<()> {
        let mut scratch = vec![0u8; SLICE_BYTES.min(len)];
        let mut left = len;
        while left > 0 {
            let n = left.min(scratch.len());
            self.limiter.acquire(n).await;
            io.read_exact(&mut scratch[..n]).await?;
            left -= n;
        }
        Ok(())
    }

    async fn write_frame<T: AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        header: &[u8],
        body: &[u8],
    ) -> io::Result<()> {
        if header.len() > MAX_HEADER_BYTES {
            return Err(invalid(format!(
                "header of {} bytes exceeds the limit of {MAX_HEADER_BYTES}",
                header.len()
            )));
        }
        self.check_body(body.len() as u64)?;
        io.write_all(&(header.len() as u32).to_be_bytes()).await?;
        io.write_all(header).await?;
        for slice in body.chunks(SLICE_BYTES) {
            self.limiter.acquire(slice.len()).await;
            io.write_all(slice).await?;
        }
        io.flush().await?;
        io.close().await
    }
}

impl request_response::Codec for PacketCodec {
    type Protocol = StreamProtocol;
    type Request = PacketRequest;
    type Response = PacketResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<PacketRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let header = read_header(io, &self.budget).await?;
        let header = wire::decode_request_header(&header).map_err(|e| invalid(e.to_string()))?;
        let len = self.check_body(header.body_len())?;
        if let wire::RequestHeader::Put {
            packet_id, ticket, ..
        } = &header
            && let Some(gate) = &self.gate
            && !gate.admits(packet_id, ticket, crate::runtime::now_ms())
        {
            // The service checks the ticket again and answers its refusal.
            self.drain(io, len).await?;
            return Ok(wire::join_request(header, Vec::new()));
        }
        let body = self.read_body(io, len).await?;
        Ok(wire::join_request(header, body))
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<PacketResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        let header = read_header(io, &self.budget).await?;
        let header = wire::decode_response_header(&header).map_err(|e| invalid(e.to_string()))?;
        let len = self.check_body(header.body_len())?;
        let body = self.read_body(io, len).await?;
        Ok(wire::join_response(header, body))
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: PacketRequest,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let (header, body) = wire::split_request(req);
        self.write_frame(io, &encode_header(&header)?, &body).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: PacketResponse,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let (header, body) = wire::split_response(res);
        self.write_frame(io, &encode_header(&header)?, &body).await
    }
}

/// Decodes a whole request frame from memory (the fuzz and test entry point).
pub fn decode_request_frame(bytes: &[u8]) -> io::Result<PacketRequest> {
    let mut codec = PacketCodec::default();
    let proto = StreamProtocol::new(wire::PACKET_PROTOCOL);
    let mut cursor = futures::io::Cursor::new(bytes);
    futures::executor::block_on(request_response::Codec::read_request(
        &mut codec,
        &proto,
        &mut cursor,
    ))
}

/// Decodes a whole response frame from memory (the fuzz and test entry point).
pub fn decode_response_frame(bytes: &[u8]) -> io::Result<PacketResponse> {
    let mut codec = PacketCodec::default();
    let proto = StreamProtocol::new(wire::PACKET_PROTOCOL);
    let mut cursor = futures::io::Cursor::new(bytes);
    futures::executor::block_on(request_response::Codec::read_response(
        &mut codec,
        &proto,
        &mut cursor,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::wire::Refusal;
    use libp2p::identity::Keypair;
    use request_response::Codec;
    use strew_coordinator::PacketId;

    fn encode_request(req: PacketRequest) -> Vec<u8> {
        let mut codec = PacketCodec::default();
        let proto = StreamProtocol::new(wire::PACKET_PROTOCOL);
        let mut out = futures::io::Cursor::new(Vec::new());
        futures::executor::block_on(codec.write_request(&proto, &mut out, req)).unwrap();
        out.into_inner()
    }

    fn encode_response(res: PacketResponse) -> Vec<u8> {
        let mut codec = PacketCodec::default();
        let proto = StreamProtocol::new(wire::PACKET_PROTOCOL);
        let mut out = futures::io::Cursor::new(Vec::new());
        futures::executor::block_on(codec.write_response(&proto, &mut out, res)).unwrap();
        out.into_inner()
    }

    #[test]
    fn requests_and_responses_round_trip() {
        let bytes = vec![7u8; 200_000];
        let id = PacketId::of(&bytes);
        let reqs = vec![
            PacketRequest::Put {
                packet_id: id,
                ticket: vec![1, 2, 3],
                bytes: bytes.clone(),
            },
            PacketRequest::Get {
                packet_id: id,
                ticket: vec![4],
            },
            PacketRequest::Delete {
                packet_id: id,
                ticket: vec![9],
            },
        ];
        for req in reqs {
            assert_eq!(
                decode_request_frame(&encode_request(req.clone())).unwrap(),
                req
            );
        }
        let receipt = crate::packet::receipt::sign(
            &Keypair::generate_ed25519(),
            NodeId([1; 32]),
            id,
            5,
            7,
            1,
        )
        .unwrap();
        let resps = vec![
            PacketResponse::Stored(receipt),
            PacketResponse::Found(bytes),
            PacketResponse::NotFound,
            PacketResponse::Deleted { existed: true },
            PacketResponse::Refused(Refusal::Full { needed: 5, free: 1 }),
        ];
        for res in resps {
            assert_eq!(
                decode_response_frame(&encode_response(res.clone())).unwrap(),
                res
            );
        }
    }

    #[test]
    fn truncated_oversize_and_garbage_frames_are_errors() {
        let frame = encode_request(PacketRequest::Put {
            packet_id: PacketId::of(b"x"),
            ticket: vec![],
            bytes: vec![1; 1000],
        });
        for cut in [0, 2, 4, 10, frame.len() - 1] {
            assert!(decode_request_frame(&frame[..cut]).is_err(), "cut at {cut}");
        }
        // Header length over the limit: refused before allocating.
        let mut huge = (u32::MAX).to_be_bytes().to_vec();
        huge.extend([0u8; 16]);
        let err = decode_request_frame(&huge).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A Put declaring a body over the packet limit.
        let header = crate::cbor::encode(&wire::RequestHeader::Put {
            packet_id: PacketId::of(b"x"),
            size: MAX_PACKET_BYTES as u64 + 1,
            ticket: vec![],
        })
        .unwrap();
        let mut frame = (header.len() as u32).to_be_bytes().to_vec();
        frame.extend(header);
        let err = decode_request_frame(&frame).unwrap_err();
        assert!(err.to_string().contains("exceeds the limit"), "{err}");
        // Random junk.
        assert!(decode_request_frame(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_response_frame(&[0, 0, 0, 1, 0x00]).is_err());
    }

    #[test]
    fn a_put_whose_ticket_does_not_hold_is_drained_unread() {
        let budget = InboundBudget::new(64 * 1024);
        let managers: TrustedManagers = Default::default();
        let me = crate::peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap();
        let mut codec = PacketCodec::new(
            MAX_PACKET_BYTES,
            BandwidthLimiter::unlimited(),
            budget.clone(),
        )
        .with_put_gate(PutGate::new(me, managers));
        let proto = StreamProtocol::new(wire::PACKET_PROTOCOL);
        // A 1 MiB body: more than the whole budget, yet the request is read.
        let bytes = vec![7u8; 1 << 20];
        let packet_id = PacketId::of(&bytes);
        let mut frame = encode_request(PacketRequest::Put {
            packet_id,
            ticket: vec![1, 2, 3],
            bytes,
        });
        frame.extend_from_slice(b"next");
        let mut cursor = futures::io::Cursor::new(frame);
        let got = futures::executor::block_on(codec.read_request(&proto, &mut cursor)).unwrap();
        assert_eq!(
            got,
            PacketRequest::Put {
                packet_id,
                ticket: vec![1, 2, 3],
                bytes: Vec::new(),
            }
        );
        let at = cursor.position() as usize;
        assert_eq!(&cursor.into_inner()[at..], b"next", "the body was consumed");
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_manager_plans_no_packet_this_protocol_would_refuse() {
        assert_eq!(MAX_PACKET_BYTES as u64, strew_coordinator::MAX_PACKET_BYTES);
    }

    #[test]
    fn writer_refuses_oversize_bodies() {
        let mut codec = PacketCodec::new(
            1024,
            BandwidthLimiter::unlimited(),
            InboundBudget::unlimited(),
        );
        let proto = StreamProtocol::new(wire::PACKET_PROTOCOL);
        let mut out = futures::io::Cursor::new(Vec::new());
        let req = PacketRequest::Put {
            packet_id: PacketId::of(b"x"),
            ticket: vec![],
            bytes: vec![0; 2048],
        };
        assert!(futures::executor::block_on(codec.write_request(&proto, &mut out, req)).is_err());
    }
}
