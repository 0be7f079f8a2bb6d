//! The source side of the packet protocol as the handle offers it: put, get,
//! delete and audit with their answers checked (receipt signed by the target
//! and naming the packet, fetched bytes hashing to the id, audit proofs
//! verifying against the PacketId) and counted.
//!
//! Owns those checks only; the raw request, its per-target slot and its
//! `Busy` retries are [`OverlayHandle::request`]'s, the bookkeeping of the
//! request in flight is the packet driver's.

use strew_coordinator::audit::Challenge;
use strew_coordinator::{NodeId, PacketId};

use crate::error::OverlayError;
use crate::handle::OverlayHandle;
use crate::packet::{MAX_PACKET_BYTES, PacketRequest, PacketResponse, Receipt, Refusal, proof};

impl OverlayHandle {
    /// Puts a packet on `target` under the manager's `ticket` (CBOR bytes of a
    /// `StorageTicket`, see `packet::ticket::encode`); returns the target's
    /// verified receipt (signed by the target, for this node, naming the
    /// packet and its size). `packet_id` is the id the caller already
    /// computed for `bytes` (the pipeline names every packet as it makes it),
    /// so the body is not hashed again here: the target hashes it and refuses
    /// a body that is not `packet_id` (`Refusal::WrongPacketId`).
    pub async fn put_packet(
        &self,
        target: NodeId,
        ticket: Vec<u8>,
        packet_id: PacketId,
        bytes: Vec<u8>,
    ) -> Result<Receipt, OverlayError> {
        let size = bytes.len() as u64;
        if size > MAX_PACKET_BYTES as u64 {
            return Err(OverlayError::TooLarge {
                size,
                limit: MAX_PACKET_BYTES as u64,
            });
        }
        let metrics = &self.shared.metrics;
        let res = self
            .request(
                target,
                PacketRequest::Put {
                    packet_id,
                    ticket,
                    bytes,
                },
            )
            .await;
        match res {
            Ok(PacketResponse::Stored(receipt)) => {
                if receipt.target != target
                    || receipt.source != self.node_id()
                    || receipt.packet_id != packet_id
                    || receipt.size != size
                    || receipt.generation == 0
                    || receipt.verify().is_err()
                {
                    metrics.packet("out", "put", "failed");
                    return Err(OverlayError::BadResponse {
                        target,
                        detail: "receipt does not match the packet or is not signed by the target"
                            .into(),
                    });
                }
                metrics.packet("out", "put", "ok");
                metrics.bytes("out", size as usize);
                Ok(receipt)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "put", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "put", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!("unexpected answer to put: {}", describe(&other)),
                })
            }
            Err(err) => {
                metrics.packet("out", "put", "failed");
                Err(err)
            }
        }
    }

    /// Fetches a packet from `target` under a manager's read `ticket` (CBOR
    /// bytes of a `StorageTicket` naming this node as holder); `Ok(None)` if
    /// the target does not hold it. The bytes are verified against `packet_id`.
    pub async fn get_packet(
        &self,
        target: NodeId,
        packet_id: PacketId,
        ticket: Vec<u8>,
    ) -> Result<Option<Vec<u8>>, OverlayError> {
        let metrics = &self.shared.metrics;
        match self
            .request(target, PacketRequest::Get { packet_id, ticket })
            .await
        {
            Ok(PacketResponse::Found(bytes)) => {
                if PacketId::of(&bytes) != packet_id {
                    metrics.packet("out", "get", "failed");
                    return Err(OverlayError::BadResponse {
                        target,
                        detail: format!("returned bytes do not hash to {packet_id}"),
                    });
                }
                metrics.packet("out", "get", "ok");
                metrics.bytes("in", bytes.len());
                Ok(Some(bytes))
            }
            Ok(PacketResponse::NotFound) => {
                metrics.packet("out", "get", "ok");
                Ok(None)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "get", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "get", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!("unexpected answer to get: {}", describe(&other)),
                })
            }
            Err(err) => {
                metrics.packet("out", "get", "failed");
                Err(err)
            }
        }
    }

    /// Deletes a packet on `target` under a manager ticket naming it; returns whether it existed.
    pub async fn delete_packet(
        &self,
        target: NodeId,
        packet_id: PacketId,
        ticket: Vec<u8>,
    ) -> Result<bool, OverlayError> {
        let metrics = &self.shared.metrics;
        match self
            .request(target, PacketRequest::Delete { packet_id, ticket })
            .await
        {
            Ok(PacketResponse::Deleted { existed }) => {
                metrics.packet("out", "delete", "ok");
                Ok(existed)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "delete", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "delete", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!("unexpected answer to delete: {}", describe(&other)),
                })
            }
            Err(err) => {
                metrics.packet("out", "delete", "failed");
                Err(err)
            }
        }
    }

    /// Challenges `target` to prove it holds chunk `challenge.chunk` of a
    /// packet (this node must be a manager the target trusts). `Ok(Ok(()))`
    /// when the proof verifies against the PacketId, `Ok(Err(why))` when the
    /// target answered wrongly (a bad proof, not found, a corrupt copy);
    /// `Err` when there was no usable answer (unreachable, timeout, busy,
    /// or the target does not take this node for its manager).
    pub async fn audit_packet(
        &self,
        challenge: &Challenge,
    ) -> Result<Result<(), String>, OverlayError> {
        let target = challenge.target;
        let metrics = &self.shared.metrics;
        let request = PacketRequest::Audit {
            packet_id: challenge.packet,
            chunk: challenge.chunk,
        };
        let answer = match self.request(target, request).await {
            Ok(PacketResponse::Proof(proof)) => {
                match proof::verify(&challenge.packet, challenge.size, challenge.chunk, &proof) {
                    Ok(_) => Ok(()),
                    Err(err) => Err(err.to_string()),
                }
            }
            Ok(PacketResponse::NotFound) => Err("the target does not hold the packet".into()),
            Ok(PacketResponse::Refused(Refusal::CannotProve(why))) => Err(why),
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "audit", "refused");
                return Err(OverlayError::Refused { target, reason });
            }
            Ok(other) => Err(format!(
                "unexpected answer to an audit: {}",
                describe(&other)
            )),
            Err(err) => {
                metrics.packet("out", "audit", "failed");
                return Err(err);
            }
        };
        metrics.packet("out", "audit", if answer.is_ok() { "ok" } else { "wrong" });
        Ok(answer)
    }
}

fn describe(res: &PacketResponse) -> &'static str {
    match res {
        PacketResponse::Stored(_) => "stored",
        PacketResponse::Found(_) => "found",
        PacketResponse::NotFound => "not found",
        PacketResponse::Deleted { .. } => "deleted",
        PacketResponse::DeletedMany(_) => "deleted many",
        PacketResponse::Proof(_) => "proof",
        PacketResponse::Marked { .. } => "marked",
        PacketResponse::Roots(_) => "roots",
        PacketResponse::Inventory(_) => "inventory",
        PacketResponse::Refused(_) => "refused",
    }
}
