//! The source side of holder requests (issue 18): store a root packet, mark a packet this node
//! stored as a snapshot root, list the roots a target holds for this node
//! (a page, checked against the page limit), and read a packet back as its
//! holder with no manager ticket; and the manager's side of a target's
//! inventory (a page, checked for order and size). Owns these checks only.

use strew_coordinator::{NodeId, PacketId};

use crate::error::OverlayError;
use crate::handle::OverlayHandle;
use crate::packet::{
    HeldPacket, MAX_INVENTORY_PAGE, MAX_ROOTS_PAGE, PacketRequest, PacketResponse,
};

impl OverlayHandle {
    /// Stores this node's snapshot root packet on `target` (no ticket; the
    /// target's per-holder root quota applies).
    pub async fn put_root(&self, target: NodeId, bytes: Vec<u8>) -> Result<(), OverlayError> {
        let packet_id = PacketId::of(&bytes);
        match self
            .request(target, PacketRequest::PutRoot { packet_id, bytes })
            .await?
        {
            PacketResponse::Marked { held: true } => Ok(()),
            PacketResponse::Refused(reason) => Err(OverlayError::Refused { target, reason }),
            _ => Err(OverlayError::BadResponse {
                target,
                detail: "unexpected answer to put-root".into(),
            }),
        }
    }

    /// Marks `packet_id`, stored on `target` by this node, as one of its
    /// snapshot roots; false when the target does not hold it for this node.
    pub async fn mark_root(
        &self,
        target: NodeId,
        packet_id: PacketId,
    ) -> Result<bool, OverlayError> {
        match self
            .request(target, PacketRequest::MarkRoot { packet_id })
            .await?
        {
            PacketResponse::Marked { held } => Ok(held),
            PacketResponse::Refused(reason) => Err(OverlayError::Refused { target, reason }),
            _ => Err(OverlayError::BadResponse {
                target,
                detail: "unexpected answer to mark-root".into(),
            }),
        }
    }

    /// Asks `target` to drop one of this node's roots (its snapshot was
    /// forgotten); true when it was one of them.
    pub async fn drop_root(
        &self,
        target: NodeId,
        packet_id: PacketId,
    ) -> Result<bool, OverlayError> {
        match self
            .request(target, PacketRequest::DropRoot { packet_id })
            .await?
        {
            PacketResponse::Deleted { existed } => Ok(existed),
            PacketResponse::Refused(reason) => Err(OverlayError::Refused { target, reason }),
            _ => Err(OverlayError::BadResponse {
                target,
                detail: "unexpected answer to drop-root".into(),
            }),
        }
    }

    /// One page (at most `MAX_ROOTS_PAGE`) of the root packets `target`
    /// holds for this node, after `after`.
    pub async fn list_roots(
        &self,
        target: NodeId,
        after: Option<PacketId>,
    ) -> Result<Vec<PacketId>, OverlayError> {
        let limit = MAX_ROOTS_PAGE as u32;
        match self
            .request(target, PacketRequest::ListRoots { after, limit })
            .await?
        {
            PacketResponse::Roots(ids) if ids.len() <= MAX_ROOTS_PAGE => Ok(ids),
            PacketResponse::Roots(ids) => Err(OverlayError::BadResponse {
                target,
                detail: format!("{} root ids exceed the page of {MAX_ROOTS_PAGE}", ids.len()),
            }),
            PacketResponse::Refused(reason) => Err(OverlayError::Refused { target, reason }),
            _ => Err(OverlayError::BadResponse {
                target,
                detail: "unexpected answer to list-roots".into(),
            }),
        }
    }

    /// Reads back a packet this node stored on `target`, with no manager
    /// ticket (the target checks this node is its holder); the bytes are
    /// verified against `packet_id`.
    pub async fn get_held_packet(
        &self,
        target: NodeId,
        packet_id: PacketId,
    ) -> Result<Option<Vec<u8>>, OverlayError> {
        self.get_packet(target, packet_id, Vec::new()).await
    }

    /// One page (at most `MAX_INVENTORY_PAGE`) of the packets `target`
    /// holds, after `after`, with their sizes and generations: answered to
    /// a trusted manager only.
    pub async fn inventory(
        &self,
        target: NodeId,
        after: Option<PacketId>,
    ) -> Result<Vec<HeldPacket>, OverlayError> {
        let limit = MAX_INVENTORY_PAGE as u32;
        match self
            .request(target, PacketRequest::Inventory { after, limit })
            .await?
        {
            PacketResponse::Inventory(packets)
                if packets.len() <= MAX_INVENTORY_PAGE
                    && packets.windows(2).all(|w| w[0].packet_id < w[1].packet_id)
                    && packets
                        .first()
                        .is_none_or(|p| after.is_none_or(|a| p.packet_id > a)) =>
            {
                Ok(packets)
            }
            PacketResponse::Inventory(_) => Err(OverlayError::BadResponse {
                target,
                detail: "an inventory page out of order or over its size".into(),
            }),
            PacketResponse::Refused(reason) => Err(OverlayError::Refused { target, reason }),
            _ => Err(OverlayError::BadResponse {
                target,
                detail: "unexpected answer to inventory".into(),
            }),
        }
    }
}
