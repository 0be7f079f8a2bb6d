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
    /// Asks the manager for the read tickets of the first `stripes` chunks of `snapshot`.
    pub async fn fetch<M: ManagerApi>(
        manager: &M,
        snapshot: SnapshotId,
        stripes: usize,
    ) -> Result<Self, GridError> {
        Self::fetch_range(manager, snapshot, 0, stripes as u64).await
    }

    /// The read tickets of stripes `from..to` of `snapshot`'s sequence.
    pub async fn fetch_range<M: ManagerApi>(
        manager: &M,
        snapshot: SnapshotId,
        from: u64,
        to: u64,
    ) -> Result<Self, GridError> {
        let mut tickets = ReadTickets::default();
        tickets.add_range(manager, snapshot, from, to).await?;
        Ok(tickets)
    }

    /// The read tickets of the stripes at `indices` (ascending runs are
    /// asked for together).
    pub async fn fetch_at<M: ManagerApi>(
        manager: &M,
        snapshot: SnapshotId,
        indices: &[u64],
    ) -> Result<Self, GridError> {
        let mut sorted = indices.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        let mut tickets = ReadTickets::default();
        let mut i = 0;
        while i < sorted.len() {
            let mut j = i + 1;
            while j < sorted.len() && sorted[j] == sorted[j - 1] + 1 {
                j += 1;
            }
            tickets
                .add_range(manager, snapshot, sorted[i], sorted[j - 1] + 1)
                .await?;
            i = j;
        }
        Ok(tickets)
    }

    async fn add_range<M: ManagerApi>(
        &mut self,
        manager: &M,
        snapshot: SnapshotId,
        mut from: u64,
        to: u64,
    ) -> Result<(), GridError> {
        while from < to {
            let count = (to - from).min(MAX_READ_CHUNKS as u64);
            let page = manager.read_tickets(snapshot, from, count as u32).await?;
            for ticket in page {
                let ticket = Arc::new(ticket);
                for entry in &ticket.entries {
                    self.by_packet
                        .insert((ticket.target, entry.packet_id), ticket.clone());
                }
            }
            from += count;
        }
        Ok(())
    }

    /// The ticket for reading `packet` from `target`, if the manager gave one.
    pub fn get(&self, target: &NodeId, packet: &PacketId) -> Option<&StorageTicket> {
        self.by_packet.get(&(*target, *packet)).map(Arc::as_ref)
    }
}
