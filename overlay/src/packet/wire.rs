//! Wire messages of the packet protocol (`/strew/packet/3`).
//!
//! Within version 3, `DeleteMany` (issue 14): up to [`MAX_DELETE_BATCH`]
//! deletes on one target in one request, each naming one of the request's
//! tickets, answered one [`DeleteAnswer`] each, in order. A target of an
//! earlier build cannot decode it and resets the stream; the sender then
//! deletes those packets one by one.
//!
//! Version 3 (issue 18): a `Get` with an empty ticket is a holder read (the
//! target serves a packet to the node that stored it, no manager needed);
//! `PutRoot` stores a small snapshot root packet (no ticket: a per-holder
//! quota bounds it), `MarkRoot` marks a held packet as a root, and
//! `ListRoots` lets the storer find its roots again. Ids are CBOR byte
//! strings (32 bytes) from this version on.
//!
//! Version 2 (issue 11): `Get` carries a read ticket, receipts name the
//! source and the storage generation, delete tickets name generations;
//! version 1 peers do not negotiate with version 2 ones.
//!
//! A frame is `u32 big-endian header length | CBOR header | raw body`, where
//! the body length is declared in the header (`Put.size`, `Found.size`) and is
//! zero otherwise. This module owns the header types, the in-memory
//! request/response types and the header decoders; it must not do I/O
//! (the codec) or make storage decisions (the service).

use serde::{Deserialize, Serialize};
use strew_coordinator::PacketId;

use crate::cbor::{self, CborError};
use crate::packet::receipt::Receipt;
use crate::packet::storage::HeldPacket;

/// Protocol id negotiated by multistream-select.
pub const PACKET_PROTOCOL: &str = "/strew/packet/3";
/// Most root packet ids in one `Roots` answer (a page; ask again after the last).
pub const MAX_ROOTS_PAGE: usize = 256;
/// Largest snapshot root packet a target takes with `PutRoot`.
pub const MAX_ROOT_PACKET_BYTES: usize = 1024 * 1024;
/// Most root packets a target keeps for one holder (`PutRoot` beyond it is
/// refused): a large snapshot's root is many packets (one per 512 stripes),
/// spread over the snapshot's targets. Each counts against the target's
/// donated space like any packet.
pub const MAX_ROOTS_PER_HOLDER: usize = 4096;
/// The storage generation of a packet stored by `PutRoot`: no manager ticket
/// ever names it, so no manager delete ticket removes a root.
pub const ROOT_GENERATION: u64 = u64::MAX;
/// Largest packet body anyone sends: the pipeline's 4 MiB chunk maximum plus
/// compression-expansion, encryption and erasure-share headroom.
pub const MAX_PACKET_BYTES: usize = 5 * 1024 * 1024;
/// Largest CBOR header (a ticket listing many packets fits comfortably).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most deletes in one `DeleteMany`: with one refusal each, its answer
/// stays far under [`MAX_HEADER_BYTES`].
pub const MAX_DELETE_BATCH: usize = 256;
/// Most header bytes a sender lets one `DeleteMany`'s packets and tickets
/// take (the rest of the header bound is headroom).
pub const DELETE_BATCH_BYTES: usize = 48 * 1024;

/// A request as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PacketRequest {
    /// Store `bytes` under `packet_id`, authorised by the manager's `ticket`
    /// (the CBOR of a `strew_coordinator::StorageTicket`).
    Put {
        packet_id: PacketId,
        ticket: Vec<u8>,
        bytes: Vec<u8>,
    },
    /// Fetch a packet; `ticket` must be a manager-signed read ticket naming
    /// it and the requester as its holder, or empty: then the target serves
    /// it only if the requester is the node that stored it here.
    Get {
        packet_id: PacketId,
        ticket: Vec<u8>,
    },
    /// Remove a packet; `ticket` must be a manager-signed ticket naming it
    /// and the generation the packet has here.
    Delete {
        packet_id: PacketId,
        ticket: Vec<u8>,
    },
    /// Several deletes on this target: packet `packets[i].0` under ticket
    /// `tickets[packets[i].1]` (at most [`MAX_DELETE_BATCH`] packets, each
    /// ticket named by one of them). Answered `DeletedMany`, one answer a
    /// packet in order, or one refusal for a malformed request.
    DeleteMany {
        packets: Vec<(PacketId, u32)>,
        tickets: Vec<Vec<u8>>,
    },
    /// An audit: prove holding 1 KiB chunk `chunk` of the packet (only a
    /// trusted manager may ask).
    Audit { packet_id: PacketId, chunk: u64 },
    /// Store a snapshot root packet of the requester (at most
    /// [`MAX_ROOT_PACKET_BYTES`], [`MAX_ROOTS_PER_HOLDER`] per requester),
    /// with no ticket; the answer is `Marked { held: true }`.
    PutRoot { packet_id: PacketId, bytes: Vec<u8> },
    /// Mark a packet the requester stored here as one of its snapshot roots.
    MarkRoot { packet_id: PacketId },
    /// The root packets the requester stored here, in id order after `after`
    /// (at most `limit`, capped at [`MAX_ROOTS_PAGE`]).
    ListRoots { after: Option<PacketId>, limit: u32 },
    /// The requester forgot the snapshot of this root: the target unmarks
    /// it, and deletes it if `PutRoot` stored it (a marked data packet stays
    /// for the manager to free). Answered `Deleted { existed }`: whether it
    /// was one of the requester's roots here.
    DropRoot { packet_id: PacketId },
    /// The packets this target holds, in id order after `after` (at most
    /// `limit`, capped at [`MAX_INVENTORY_PAGE`]), each with its size and
    /// generation: only a trusted manager may ask (a rebuilt group finding
    /// packets no snapshot references).
    Inventory { after: Option<PacketId>, limit: u32 },
}

/// Most packets in one `Inventory` answer (about 50 bytes each in the
/// response header, well under [`MAX_HEADER_BYTES`]).
pub const MAX_INVENTORY_PAGE: usize = 512;

/// A response as the application sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum PacketResponse {
    Stored(Receipt),
    Found(Vec<u8>),
    NotFound,
    Deleted {
        existed: bool,
    },
    /// Answer to `DeleteMany`: one answer a packet, in the request's order.
    DeletedMany(Vec<DeleteAnswer>),
    /// The challenged chunk with its BLAKE3 tree proof (`packet::proof`).
    Proof(Vec<u8>),
    /// Answer to `MarkRoot`: false when the requester did not store the packet here.
    Marked {
        held: bool,
    },
    /// Answer to `ListRoots`.
    Roots(Vec<PacketId>),
    /// Answer to `Inventory`.
    Inventory(Vec<HeldPacket>),
    Refused(Refusal),
}

/// What a target did with one delete of a `DeleteMany`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeleteAnswer {
    /// `existed`: whether the packet was here (false: already absent).
    Deleted {
        existed: bool,
    },
    Refused(Refusal),
}

/// A ticket's bytes inside a `DeleteMany` header (a CBOR byte string).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TicketBytes(#[serde(with = "cbor::bytes")] pub Vec<u8>);

/// Why a target refused a request. Every refusal is final for that request
/// except `Busy`, which asks the source to retry later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    #[error("no storage ticket")]
    NoTicket,
    #[error("ticket invalid: {0}")]
    BadTicket(String),
    #[error("the packet here has another storage generation than the ticket names")]
    OtherGeneration,
    #[error("ticket does not name this packet")]
    NotInTicket,
    #[error("size {declared} differs from the ticket's {ticketed}")]
    SizeMismatch { declared: u64, ticketed: u64 },
    #[error("bytes hash to {actual}, not the declared packet id")]
    WrongPacketId { actual: PacketId },
    #[error("packet of {size} bytes exceeds this target's limit of {limit}")]
    TooLarge { size: u64, limit: u64 },
    #[error("target full: {needed} bytes needed, {free} free")]
    Full { needed: u64, free: u64 },
    #[error("target busy, retry later")]
    Busy,
    #[error("target storage failed: {0}")]
    StoreFailed(String),
    #[error("not permitted: {0}")]
    NotPermitted(String),
    #[error("cannot prove the packet: {0}")]
    CannotProve(String),
    #[error("packets never travel over a relayed connection: connect directly")]
    Relayed,
}

/// Request header on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RequestHeader {
    Put {
        packet_id: PacketId,
        size: u64,
        #[serde(with = "cbor::bytes")]
        ticket: Vec<u8>,
    },
    Get {
        packet_id: PacketId,
        #[serde(with = "cbor::bytes")]
        ticket: Vec<u8>,
    },
    Delete {
        packet_id: PacketId,
        #[serde(with = "cbor::bytes")]
        ticket: Vec<u8>,
    },
    DeleteMany {
        packets: Vec<(PacketId, u32)>,
        tickets: Vec<TicketBytes>,
    },
    Audit {
        packet_id: PacketId,
        chunk: u64,
    },
    PutRoot {
        packet_id: PacketId,
        size: u64,
    },
    MarkRoot {
        packet_id: PacketId,
    },
    ListRoots {
        after: Option<PacketId>,
        limit: u32,
    },
    DropRoot {
        packet_id: PacketId,
    },
    Inventory {
        after: Option<PacketId>,
        limit: u32,
    },
}

/// Response header on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ResponseHeader {
    Stored {
        receipt: Receipt,
    },
    Found {
        size: u64,
    },
    NotFound,
    Deleted {
        existed: bool,
    },
    DeletedMany {
        answers: Vec<DeleteAnswer>,
    },
    Proof {
        size: u64,
    },
    Marked {
        held: bool,
    },
    Roots {
        ids: Vec<PacketId>,
    },
    /// (packet, size, generation) of each packet.
    Inventory {
        packets: Vec<(PacketId, u64, u64)>,
    },
    Refused {
        reason: Refusal,
    },
}

impl RequestHeader {
    /// Body bytes that follow this header.
    pub fn body_len(&self) -> u64 {
        match self {
            RequestHeader::Put { size, .. } | RequestHeader::PutRoot { size, .. } => *size,
            _ => 0,
        }
    }
}

impl ResponseHeader {
    /// Body bytes that follow this header.
    pub fn body_len(&self) -> u64 {
        match self {
            ResponseHeader::Found { size } | ResponseHeader::Proof { size } => *size,
            _ => 0,
        }
    }
}

/// Decodes a request header (already cut to its declared length).
pub fn decode_request_header(bytes: &[u8]) -> Result<RequestHeader, CborError> {
    cbor::decode(bytes, MAX_HEADER_BYTES)
}

/// Decodes a response header (already cut to its declared length).
pub fn decode_response_header(bytes: &[u8]) -> Result<ResponseHeader, CborError> {
    cbor::decode(bytes, MAX_HEADER_BYTES)
}

/// Splits a request into its header and body.
pub fn split_request(req: PacketRequest) -> (RequestHeader, Vec<u8>) {
    match req {
        PacketRequest::Put {
            packet_id,
            ticket,
            bytes,
        } => (
            RequestHeader::Put {
                packet_id,
                size: bytes.len() as u64,
                ticket,
            },
            bytes,
        ),
        PacketRequest::Get { packet_id, ticket } => {
            (RequestHeader::Get { packet_id, ticket }, Vec::new())
        }
        PacketRequest::Delete { packet_id, ticket } => {
            (RequestHeader::Delete { packet_id, ticket }, Vec::new())
        }
        PacketRequest::DeleteMany { packets, tickets } => (
            RequestHeader::DeleteMany {
                packets,
                tickets: tickets.into_iter().map(TicketBytes).collect(),
            },
            Vec::new(),
        ),
        PacketRequest::Audit { packet_id, chunk } => {
            (RequestHeader::Audit { packet_id, chunk }, Vec::new())
        }
        PacketRequest::PutRoot { packet_id, bytes } => (
            RequestHeader::PutRoot {
                packet_id,
                size: bytes.len() as u64,
            },
            bytes,
        ),
        PacketRequest::MarkRoot { packet_id } => {
            (RequestHeader::MarkRoot { packet_id }, Vec::new())
        }
        PacketRequest::ListRoots { after, limit } => {
            (RequestHeader::ListRoots { after, limit }, Vec::new())
        }
        PacketRequest::DropRoot { packet_id } => {
            (RequestHeader::DropRoot { packet_id }, Vec::new())
        }
        PacketRequest::Inventory { after, limit } => {
            (RequestHeader::Inventory { after, limit }, Vec::new())
        }
    }
}

/// Joins a request header and its body.
pub fn join_request(header: RequestHeader, body: Vec<u8>) -> PacketRequest {
    match header {
        RequestHeader::Put {
            packet_id, ticket, ..
        } => PacketRequest::Put {
            packet_id,
            ticket,
            bytes: body,
        },
        RequestHeader::Get { packet_id, ticket } => PacketRequest::Get { packet_id, ticket },
        RequestHeader::Delete { packet_id, ticket } => PacketRequest::Delete { packet_id, ticket },
        RequestHeader::DeleteMany { packets, tickets } => PacketRequest::DeleteMany {
            packets,
            tickets: tickets.into_iter().map(|t| t.0).collect(),
        },
        RequestHeader::Audit { packet_id, chunk } => PacketRequest::Audit { packet_id, chunk },
        RequestHeader::PutRoot { packet_id, .. } => PacketRequest::PutRoot {
            packet_id,
            bytes: body,
        },
        RequestHeader::MarkRoot { packet_id } => PacketRequest::MarkRoot { packet_id },
        RequestHeader::ListRoots { after, limit } => PacketRequest::ListRoots { after, limit },
        RequestHeader::DropRoot { packet_id } => PacketRequest::DropRoot { packet_id },
        RequestHeader::Inventory { after, limit } => PacketRequest::Inventory { after, limit },
    }
}

/// Splits a response into its header and body.
pub fn split_response(res: PacketResponse) -> (ResponseHeader, Vec<u8>) {
    match res {
        PacketResponse::Stored(receipt) => (ResponseHeader::Stored { receipt }, Vec::new()),
        PacketResponse::Found(bytes) => (
            ResponseHeader::Found {
                size: bytes.len() as u64,
            },
            bytes,
        ),
        PacketResponse::NotFound => (ResponseHeader::NotFound, Vec::new()),
        PacketResponse::Deleted { existed } => (ResponseHeader::Deleted { existed }, Vec::new()),
        PacketResponse::DeletedMany(answers) => {
            (ResponseHeader::DeletedMany { answers }, Vec::new())
        }
        PacketResponse::Proof(proof) => (
            ResponseHeader::Proof {
                size: proof.len() as u64,
            },
            proof,
        ),
        PacketResponse::Marked { held } => (ResponseHeader::Marked { held }, Vec::new()),
        PacketResponse::Roots(ids) => (ResponseHeader::Roots { ids }, Vec::new()),
        PacketResponse::Inventory(packets) => (
            ResponseHeader::Inventory {
                packets: packets
                    .into_iter()
                    .map(|p| (p.packet_id, p.size, p.generation))
                    .collect(),
            },
            Vec::new(),
        ),
        PacketResponse::Refused(reason) => (ResponseHeader::Refused { reason }, Vec::new()),
    }
}

/// Joins a response header and its body.
pub fn join_response(header: ResponseHeader, body: Vec<u8>) -> PacketResponse {
    match header {
        ResponseHeader::Stored { receipt } => PacketResponse::Stored(receipt),
        ResponseHeader::Found { .. } => PacketResponse::Found(body),
        ResponseHeader::NotFound => PacketResponse::NotFound,
        ResponseHeader::Deleted { existed } => PacketResponse::Deleted { existed },
        ResponseHeader::DeletedMany { answers } => PacketResponse::DeletedMany(answers),
        ResponseHeader::Proof { .. } => PacketResponse::Proof(body),
        ResponseHeader::Marked { held } => PacketResponse::Marked { held },
        ResponseHeader::Roots { ids } => PacketResponse::Roots(ids),
        ResponseHeader::Inventory { packets } => PacketResponse::Inventory(
            packets
                .into_iter()
                .map(|(packet_id, size, generation)| HeldPacket {
                    packet_id,
                    size,
                    generation,
                })
                .collect(),
        ),
        ResponseHeader::Refused { reason } => PacketResponse::Refused(reason),
    }
}
