//! Batched deletes, the sending side (issue 14): cutting a target's deletes
//! into `DeleteMany` requests that fit the header bound, and sending one
//! with its answers checked. One request carries up to
//! [`MAX_DELETE_BATCH`] deletes, each ticket once however many packets it
//! names, so a forget or the leader's collection pays one stream and one
//! group commit per batch instead of per packet.
//!
//! A target of an earlier build cannot decode `DeleteMany` and breaks the
//! stream; the batch is then sent as single deletes, a few at a time.

use std::collections::HashMap;

use futures::StreamExt;
use strew_coordinator::{NodeId, PacketId};

use crate::error::{OverlayError, RequestFailure};
use crate::handle::OverlayHandle;
use crate::packet::wire::{DELETE_BATCH_BYTES, DeleteAnswer, MAX_DELETE_BATCH};
use crate::packet::{PacketRequest, PacketResponse, Refusal};

/// Header bytes a delete's packet id and ticket index take (CBOR: a byte
/// string of 32, an integer, the pair's array), rounded up.
const PER_PACKET_BYTES: usize = 44;
/// Header bytes a ticket takes beyond its own (its byte string's head).
const PER_TICKET_BYTES: usize = 8;
/// Single deletes in flight when a target cannot take a batch.
const FALLBACK_IN_FLIGHT: usize = 8;

/// Cuts `deletes` (packet, ticket bytes), in order, into batches of at most
/// [`MAX_DELETE_BATCH`] whose packets and distinct tickets take at most
/// [`DELETE_BATCH_BYTES`] of header. A ticket larger than that on its own
/// still gets a batch (the header bound itself is the target's check).
pub fn delete_batches<'a>(deletes: &[(PacketId, &'a [u8])]) -> Vec<Vec<(PacketId, &'a [u8])>> {
    let mut batches = Vec::new();
    let mut batch: Vec<(PacketId, &'a [u8])> = Vec::new();
    let mut tickets: std::collections::HashSet<&'a [u8]> = Default::default();
    let mut bytes = 0usize;
    for &(packet, ticket) in deletes {
        let new_ticket = !tickets.contains(ticket);
        let cost = PER_PACKET_BYTES
            + if new_ticket {
                ticket.len() + PER_TICKET_BYTES
            } else {
                0
            };
        if !batch.is_empty()
            && (batch.len() == MAX_DELETE_BATCH || bytes + cost > DELETE_BATCH_BYTES)
        {
            batches.push(std::mem::take(&mut batch));
            tickets.clear();
            bytes = 0;
        }
        let cost = PER_PACKET_BYTES
            + if tickets.insert(ticket) {
                ticket.len() + PER_TICKET_BYTES
            } else {
                0
            };
        bytes += cost;
        batch.push((packet, ticket));
    }
    if !batch.is_empty() {
        batches.push(batch);
    }
    batches
}

impl OverlayHandle {
    /// Deletes `batch` (one of [`delete_batches`]) on `target`: one answer a
    /// packet, in order. `Err` when the target gave no usable answer to the
    /// whole request (unreachable, timed out, busy, refused whole).
    pub async fn delete_packets(
        &self,
        target: NodeId,
        batch: &[(PacketId, &[u8])],
    ) -> Result<Vec<DeleteAnswer>, OverlayError> {
        let mut index: HashMap<&[u8], u32> = HashMap::new();
        let mut tickets = Vec::new();
        let mut packets = Vec::with_capacity(batch.len());
        for &(packet, ticket) in batch {
            let at = *index.entry(ticket).or_insert_with(|| {
                tickets.push(ticket.to_vec());
                (tickets.len() - 1) as u32
            });
            packets.push((packet, at));
        }
        let metrics = &self.shared.metrics;
        match self
            .request(target, PacketRequest::DeleteMany { packets, tickets })
            .await
        {
            Ok(PacketResponse::DeletedMany(answers)) if answers.len() == batch.len() => {
                metrics.packet("out", "delete_many", "ok");
                Ok(answers)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "delete_many", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "delete_many", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!(
                        "{} answers to {} deletes",
                        match other {
                            PacketResponse::DeletedMany(a) => a.len().to_string(),
                            _ => "no".into(),
                        },
                        batch.len()
                    ),
                })
            }
            // A target of an earlier build breaks the stream on a request
            // it cannot decode: one by one, then.
            Err(OverlayError::Request {
                failure: RequestFailure::Io(_),
                ..
            }) => {
                metrics.packet("out", "delete_many", "one_by_one");
                Ok(self.delete_one_by_one(target, batch).await)
            }
            Err(err) => {
                metrics.packet("out", "delete_many", "failed");
                Err(err)
            }
        }
    }

    async fn delete_one_by_one(
        &self,
        target: NodeId,
        batch: &[(PacketId, &[u8])],
    ) -> Vec<DeleteAnswer> {
        // Futures owning their tickets: a closure over the borrowed ones
        // would not be `Send` for every lifetime.
        let deletes: Vec<_> = batch
            .iter()
            .map(|&(packet, ticket)| self.delete_answer(target, packet, ticket.to_vec()))
            .collect();
        futures::stream::iter(deletes)
            .buffered(FALLBACK_IN_FLIGHT)
            .collect()
            .await
    }

    async fn delete_answer(
        &self,
        target: NodeId,
        packet: PacketId,
        ticket: Vec<u8>,
    ) -> DeleteAnswer {
        match self.delete_packet(target, packet, ticket).await {
            Ok(existed) => DeleteAnswer::Deleted { existed },
            Err(OverlayError::Refused { reason, .. }) => DeleteAnswer::Refused(reason),
            Err(err) => DeleteAnswer::Refused(Refusal::StoreFailed(format!(
                "no answer to a single delete: {err}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor;
    use crate::packet::wire::{MAX_HEADER_BYTES, RequestHeader, TicketBytes};

    fn id(i: u32) -> PacketId {
        let mut b = [0u8; 32];
        b[..4].copy_from_slice(&i.to_be_bytes());
        PacketId(b)
    }

    /// The header a batch is sent as, encoded.
    fn header_len(batch: &[(PacketId, &[u8])]) -> usize {
        let mut tickets: Vec<&[u8]> = Vec::new();
        let packets = batch
            .iter()
            .map(|&(p, t)| {
                let at = tickets.iter().position(|x| *x == t).unwrap_or_else(|| {
                    tickets.push(t);
                    tickets.len() - 1
                });
                (p, at as u32)
            })
            .collect();
        let header = RequestHeader::DeleteMany {
            packets,
            tickets: tickets.iter().map(|t| TicketBytes(t.to_vec())).collect(),
        };
        cbor::encode(&header).expect("encode").len()
    }

    #[test]
    fn batches_keep_order_and_fit_the_count_and_the_header() {
        // 1,000 deletes under 32-packet tickets of 1.6 KB, then 300 under
        // a ticket each of 900 B: every batch within both bounds, with
        // room in the header, and nothing lost or reordered.
        let shared: Vec<Vec<u8>> = (0..32u8).map(|i| vec![i; 1_600]).collect();
        let own: Vec<Vec<u8>> = (0..300u16).map(|i| vec![(i % 251) as u8; 900]).collect();
        let mut deletes: Vec<(PacketId, &[u8])> = (0..1_000u32)
            .map(|i| (id(i), shared[(i / 32) as usize].as_slice()))
            .collect();
        deletes.extend((0..300u32).map(|i| (id(10_000 + i), own[i as usize].as_slice())));
        let batches = delete_batches(&deletes);
        let flat: Vec<_> = batches.iter().flatten().copied().collect();
        assert_eq!(flat, deletes);
        for batch in &batches {
            assert!(!batch.is_empty() && batch.len() <= MAX_DELETE_BATCH);
            let len = header_len(batch);
            assert!(len <= DELETE_BATCH_BYTES, "{len} header bytes");
            assert!(len < MAX_HEADER_BYTES);
        }
        // Shared tickets fill batches to the count; a ticket each fills
        // them to the bytes: 48 KiB / (44 + 908) B is 51 deletes.
        let shared_only = delete_batches(&deletes[..1_000]);
        let counts: Vec<usize> = shared_only.iter().map(Vec::len).collect();
        assert_eq!(counts, [256, 256, 256, 232]);
        let own_only = delete_batches(&deletes[1_000..]);
        let counts: Vec<usize> = own_only.iter().map(Vec::len).collect();
        assert_eq!(counts, [51, 51, 51, 51, 51, 45]);
        assert!(delete_batches(&[]).is_empty());
    }
}
