//! Read tickets on the source side (issue 11): targets serve a packet only
//! under a manager-signed read ticket naming it and this node, so a restore
//! or a `check --read-data` first asks the manager for the tickets of its
//! snapshot, page by page ([`MAX_READ_CHUNKS`] chunks a call, so every
//! answer stays well inside the manager protocol's message limit).
//!
//! Owns the paging and the (target, packet) → ticket index; it must not
//! fetch packets itself.

use std::collections::HashMap;
use std::sync::Arc;

use strew_coordinator::manager::MAX_READ_CHUNKS;
use strew_coordinator::ticket::StorageTicket;
use strew_coordinator::{NodeId, PacketId, SnapshotId};

use super::{GridError, ManagerApi};

/// The read ticket naming each (target, packet) of a snapshot.
#[derive(Clone, Debug, Default)]
pub struct ReadTickets {
    by_packet: HashMap<(NodeId, PacketId), Arc<StorageTicket>>,
}

impl ReadTickets {
    /// Asks the manager for the read tickets of the `stripes` chunks of `snapshot`.
    pub async fn fetch<M: ManagerApi>(
        manager: &M,
        snapshot: SnapshotId,
        stripes: usize,
    ) -> Result<Self, GridError> {
        let mut by_packet = HashMap::new();
        let mut from = 0usize;
        while from < stripes {
            let count = (stripes - from).min(MAX_READ_CHUNKS);
            let page = manager
                .read_tickets(snapshot, from as u64, count as u32)
                .await?;
            for ticket in page {
                let ticket = Arc::new(ticket);
                for entry in &ticket.entries {
                    by_packet.insert((ticket.target, entry.packet_id), ticket.clone());
                }
            }
            from += count;
        }
        Ok(ReadTickets { by_packet })
    }

    /// The ticket for reading `packet` from `target`, if the manager gave one.
    pub fn get(&self, target: &NodeId, packet: &PacketId) -> Option<&StorageTicket> {
        self.by_packet.get(&(*target, *packet)).map(Arc::as_ref)
    }
}
