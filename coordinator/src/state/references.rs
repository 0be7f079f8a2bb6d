//! Who still references a stored packet: the one computation behind every
//! delete ticket (orphans of a commit, an abort, an expiry or a move) and
//! behind refusing plans that name another chunk's packets. Pure reads of
//! the parent module's state.

use std::collections::{BTreeMap, BTreeSet};

use super::{ApplyError, Deletion, ManagerState};
use crate::ids::{DataId, NodeId, PacketId};
use crate::records::{MAX_CHUNK_COPIES, PendingBackup, PlannedChunk, chunk_copy_key};

impl ManagerState {
    /// Whether `key` is the record key of one of `data_id`'s copies.
    pub(super) fn is_copy_key(&self, data_id: &DataId, key: &DataId) -> bool {
        (0..MAX_CHUNK_COPIES).any(|n| &chunk_copy_key(data_id, n) == key)
    }

    /// Refuses a planned chunk naming a PacketId that is stored already for
    /// something else than a copy of the same chunk: a plan must never make
    /// the manager believe (and later delete) another source's packet.
    pub(super) fn check_not_foreign(&self, chunk: &PlannedChunk) -> Result<(), ApplyError> {
        let own: BTreeSet<PacketId> = (0..MAX_CHUNK_COPIES)
            .filter_map(|n| self.chunks.get(&chunk_copy_key(&chunk.data_id, n)))
            .flat_map(|c| c.packets.iter().map(|p| p.packet_id))
            .collect();
        for p in &chunk.packets {
            if own.contains(&p.packet_id) {
                continue;
            }
            if self
                .targets
                .values()
                .any(|t| t.packets.contains_key(&p.packet_id))
            {
                return Err(ApplyError::Invalid(format!(
                    "packet {} of chunk {} is already stored for another chunk",
                    p.packet_id, chunk.data_id
                )));
            }
        }
        Ok(())
    }

    /// Whether a committed chunk record or a pending plan other than
    /// `except` puts `packet_id` on `target`.
    pub(super) fn references(&self, packet_id: &PacketId, target: &NodeId, except: u64) -> bool {
        let committed = self
            .targets
            .get(target)
            .is_some_and(|t| t.packets.contains_key(packet_id));
        committed || self.pending_puts(packet_id, target, Some(except))
    }

    /// The packets of `pending` that nothing references (the orphans of an
    /// abort or a commit), with the generation its store tickets asked for:
    /// if the target held the packet already under another generation, the
    /// delete ticket does not match and the target keeps it.
    pub(super) fn unreferenced(&self, pending: &PendingBackup) -> BTreeMap<NodeId, Vec<Deletion>> {
        let mut out: BTreeMap<NodeId, Vec<Deletion>> = BTreeMap::new();
        for chunk in &pending.new_chunks {
            for p in &chunk.packets {
                if !self.references(&p.packet_id, &p.target, pending.id) {
                    let list = out.entry(p.target).or_default();
                    let deletion = Deletion {
                        packet_id: p.packet_id,
                        generation: p.generation,
                    };
                    if !list.contains(&deletion) {
                        list.push(deletion);
                    }
                }
            }
        }
        out
    }

    /// Whether another copy of the same chunk than `key` still puts
    /// `packet_id` on `target` (copies may share a packet on a target).
    pub(super) fn other_copy_holds(
        &self,
        data_id: &DataId,
        key: &DataId,
        packet_id: &PacketId,
        target: &NodeId,
    ) -> bool {
        (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(data_id, n))
            .filter(|k| k != key)
            .filter_map(|k| self.chunks.get(&k))
            .any(|c| {
                c.packets
                    .iter()
                    .any(|p| &p.packet_id == packet_id && &p.target == target)
            })
    }
}
