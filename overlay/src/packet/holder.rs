//! Requests a target answers for the node that stored a packet (its holder),
//! with no manager involved (issue 18, recovery without coordinators): a
//! holder read (`Get` with an empty ticket), storing a small snapshot root
//! packet (`PutRoot`, bounded by a per-holder count and size instead of a
//! manager ticket), marking a held packet as one of the holder's snapshot
//! roots, listing those roots a page at a time, and dropping a root whose
//! snapshot the holder forgot.
//!
//! The holder is the authenticated requester of the accepted put (the
//! libp2p connection proves its peer id), so nobody else can read, mark or
//! list what a node stored. A target learns nothing new: it already knew who
//! stored each packet. Owns these three answers only; the per-peer read
//! limit is the driver's, storage the [`PacketStorage`]'s.

use strew_coordinator::{NodeId, PacketId};

use crate::packet::storage::{PacketStorage, StorageError};
use crate::packet::wire::{
    MAX_ROOT_PACKET_BYTES, MAX_ROOTS_PAGE, MAX_ROOTS_PER_HOLDER, PacketResponse, ROOT_GENERATION,
    Refusal,
};

fn failed(err: StorageError) -> PacketResponse {
    PacketResponse::Refused(Refusal::StoreFailed(err.to_string()))
}

/// Serves `packet_id` to `requester` if it stored it here.
pub fn read(
    storage: &dyn PacketStorage,
    packet_id: &PacketId,
    requester: &NodeId,
) -> PacketResponse {
    match storage.is_holder(packet_id, requester) {
        Ok(true) => {}
        Ok(false) => {
            return PacketResponse::Refused(Refusal::NoTicket);
        }
        Err(err) => return failed(err),
    }
    match storage.get(packet_id) {
        Ok(Some(bytes)) => PacketResponse::Found(bytes),
        Ok(None) => PacketResponse::NotFound,
        Err(err) => failed(err),
    }
}

/// Stores a root packet of `requester` with no ticket, within its quota
/// here, and marks it as its root. Storing one it already has is a no-op.
/// Only a requester that already stored a ticketed packet here may: the
/// sequence manager chose this target for it, so a stranger's free
/// identities cannot fill the disk with roots.
pub fn put_root(
    storage: &dyn PacketStorage,
    packet_id: PacketId,
    bytes: &[u8],
    requester: &NodeId,
) -> PacketResponse {
    if bytes.len() > MAX_ROOT_PACKET_BYTES {
        return PacketResponse::Refused(Refusal::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_ROOT_PACKET_BYTES as u64,
        });
    }
    let actual = PacketId::of(bytes);
    if actual != packet_id {
        return PacketResponse::Refused(Refusal::WrongPacketId { actual });
    }
    match storage.holds_ticketed(requester) {
        Ok(true) => {}
        Ok(false) => {
            return PacketResponse::Refused(Refusal::NotPermitted(
                "roots are kept only for a node that stored a ticketed packet here".into(),
            ));
        }
        Err(err) => return failed(err),
    }
    let held = match storage.roots_of(requester, None, MAX_ROOTS_PER_HOLDER + 1) {
        Ok(ids) => ids,
        Err(err) => return failed(err),
    };
    if held.contains(&packet_id) {
        return PacketResponse::Marked { held: true };
    }
    if held.len() >= MAX_ROOTS_PER_HOLDER {
        return PacketResponse::Refused(Refusal::NotPermitted(format!(
            "this target already keeps {MAX_ROOTS_PER_HOLDER} roots for you"
        )));
    }
    let stored = storage
        .put(packet_id, bytes, ROOT_GENERATION)
        .and_then(|_| storage.record_holder(&packet_id, requester))
        .and_then(|()| storage.mark_root(&packet_id, requester));
    match stored {
        Ok(held) => PacketResponse::Marked { held },
        Err(StorageError::Full { needed, free }) => {
            PacketResponse::Refused(Refusal::Full { needed, free })
        }
        Err(err) => failed(err),
    }
}

/// Marks `packet_id` as a root of `requester`, if it stored it here.
pub fn mark_root(
    storage: &dyn PacketStorage,
    packet_id: &PacketId,
    requester: &NodeId,
) -> PacketResponse {
    match storage.mark_root(packet_id, requester) {
        Ok(held) => PacketResponse::Marked { held },
        Err(err) => failed(err),
    }
}

/// Drops `packet_id` from `requester`'s roots here (its snapshot was
/// forgotten): a packet `PutRoot` stored is deleted, a marked data packet
/// only unmarked. `Deleted { existed }` says whether it was a root of the
/// requester; nobody else's roots are touched.
pub fn drop_root(
    storage: &dyn PacketStorage,
    packet_id: &PacketId,
    requester: &NodeId,
) -> PacketResponse {
    match storage.drop_root(packet_id, requester) {
        Ok(existed) => PacketResponse::Deleted { existed },
        Err(err) => failed(err),
    }
}

/// One page of `requester`'s roots held here.
pub fn list_roots(
    storage: &dyn PacketStorage,
    requester: &NodeId,
    after: Option<&PacketId>,
    limit: u32,
) -> PacketResponse {
    let limit = usize::try_from(limit)
        .unwrap_or(MAX_ROOTS_PAGE)
        .min(MAX_ROOTS_PAGE);
    match storage.roots_of(requester, after, limit) {
        Ok(ids) => PacketResponse::Roots(ids),
        Err(err) => failed(err),
    }
}
