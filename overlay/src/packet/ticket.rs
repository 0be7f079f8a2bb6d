//! Checking a manager's storage ticket on the target, before anything is written.
//!
//! Owns the decode (size-bounded CBOR) and the mapping of ticket failures to
//! wire refusals. The ticket format and its signature belong to
//! `strew_coordinator::StorageTicket`; this module must not re-implement them.

use std::collections::BTreeSet;

use strew_coordinator::{NodeId, PacketId};
// TEMP SHIM until coordinator's StorageTicket lands (not committed)
#[derive(serde::Serialize, serde::Deserialize)]
pub struct StorageTicket { pub manager: NodeId, pub target: NodeId, pub entries: Vec<(PacketId, u64)>, pub expires_at: u64 }
impl StorageTicket {
    pub fn verify(&self, m: &NodeId, me: &NodeId, now: u64) -> Result<(), String> {
        if &self.manager != m || &self.target != me || now > self.expires_at { return Err("bad".into()) } Ok(())
    }
    pub fn size_for(&self, p: &PacketId) -> Option<u64> { self.entries.iter().find(|e| &e.0 == p).map(|e| e.1) }
}

use crate::cbor;
use crate::packet::wire::{MAX_HEADER_BYTES, Refusal};

/// Encodes a ticket for the wire.
pub fn encode(ticket: &StorageTicket) -> Vec<u8> {
    cbor::encode(ticket)
}

/// Decodes a ticket from the wire.
pub fn decode(bytes: &[u8]) -> Result<StorageTicket, cbor::CborError> {
    cbor::decode(bytes, MAX_HEADER_BYTES)
}

/// Verifies `ticket` was signed by one of `managers`, is addressed to `me`,
/// has not expired at `now_ms`, and names `packet_id`; returns its size.
pub fn check(
    ticket: &[u8],
    managers: &BTreeSet<NodeId>,
    me: &NodeId,
    now_ms: u64,
    packet_id: &PacketId,
) -> Result<u64, Refusal> {
    let ticket = decode(ticket).map_err(|e| Refusal::BadTicket(format!("undecodable: {e}")))?;
    if managers.is_empty() {
        return Err(Refusal::BadTicket(
            "this node knows no sequence manager to trust yet".into(),
        ));
    }
    let mut last_err = None;
    for manager in managers {
        match ticket.verify(manager, me, now_ms) {
            Ok(()) => {
                return ticket.size_for(packet_id).ok_or(Refusal::NotInTicket);
            }
            Err(err) => last_err = Some(err.to_string()),
        }
    }
    Err(Refusal::BadTicket(last_err.unwrap_or_default()))
}
