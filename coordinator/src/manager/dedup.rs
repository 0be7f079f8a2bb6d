//! Cross-source dedup as the manager decides it (issue 11): which stored
//! copy of a chunk a new backup may reuse, and under which record key a
//! copy it uploads itself is kept.
//!
//! A copy is reused only when every one of these holds: it is recorded
//! (every packet receipted by its target at commit), not marked bad, its
//! PacketIds are exactly the ones the new source computed for the chunk
//! (so garbage registered under a known DataId is never reused: the honest
//! source's own encoding disagrees with it), it has at least the new
//! backup's redundancy, and its targets meet the new backup's distance
//! from the source and pairwise spread. Otherwise the source uploads its
//! own copy under the next free [`chunk_copy_key`]. This module only reads
//! the state; it must not change it, sign or do I/O.

use super::*;
use crate::records::{ChunkRecord, MAX_CHUNK_COPIES, chunk_copy_key};
use crate::units::haversine_km;

impl Manager {
    /// The record key of a stored copy of `chunk` that the backup asked
    /// for by `request` may reuse, if any.
    pub(crate) fn reusable_copy(&self, chunk: &ChunkPlan, request: &PlanRequest) -> Option<DataId> {
        (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(&chunk.data_id, n))
            .find(|key| {
                self.state
                    .chunks
                    .get(key)
                    .is_some_and(|copy| self.copy_suits(copy, chunk, request))
            })
    }

    /// Whether a copy is one the new backup can rely on (see the module doc).
    fn copy_suits(&self, copy: &ChunkRecord, chunk: &ChunkPlan, request: &PlanRequest) -> bool {
        if copy.bad || copy.data_id != chunk.data_id {
            return false;
        }
        let same_ids = copy.packets.len() == chunk.packets.len()
            && copy
                .packets
                .iter()
                .zip(&chunk.packets)
                .all(|(a, b)| a.packet_id == b.packet_id && a.size == b.size);
        if !same_ids {
            return false;
        }
        let wanted = request.params.redundancy;
        if copy
            .redundancy
            .is_some_and(|r| r.tolerated_losses() < wanted.tolerated_losses())
        {
            return false;
        }
        let mut locations = Vec::with_capacity(copy.packets.len());
        for p in &copy.packets {
            let Some(client) = self.state.clients.get(&p.target) else {
                return false;
            };
            let location = client.profile.location;
            if !request
                .params
                .backup_distance
                .contains(haversine_km(&request.location, &location))
            {
                return false;
            }
            locations.push((p.target, location));
        }
        locations.iter().enumerate().all(|(i, (a, la))| {
            locations[i + 1..]
                .iter()
                .all(|(b, lb)| a == b || request.params.spread.contains(haversine_km(la, lb)))
        })
    }

    /// The record key a new copy of `data_id` is stored under: the first
    /// copy key no stored copy and no pending plan uses; `None` when all
    /// [`MAX_CHUNK_COPIES`] are taken.
    pub(crate) fn free_copy_key(&self, data_id: &DataId) -> Option<DataId> {
        (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(data_id, n))
            .find(|key| !self.state.chunks.contains_key(key) && !self.key_pending(key))
    }

    fn key_pending(&self, key: &DataId) -> bool {
        self.state.key_pending(key)
    }

    /// The copy of `data_id` a snapshot of `source` already uses (a chunk
    /// the source committed before and so did not plan again), if any.
    pub(crate) fn own_copy(&self, data_id: &DataId, source: &NodeId) -> Option<DataId> {
        (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(data_id, n))
            .find(|key| {
                self.state
                    .chunks
                    .get(key)
                    .is_some_and(|c| c.sources.contains(source) && !c.bad)
            })
    }

    /// A good copy with exactly the PacketIds the source computed,
    /// whatever its placement: reused only when every copy key is taken.
    pub(crate) fn any_good_copy(&self, chunk: &ChunkPlan) -> Option<DataId> {
        (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(&chunk.data_id, n))
            .find(|key| {
                self.state.chunks.get(key).is_some_and(|c| {
                    !c.bad
                        && c.packets.len() == chunk.packets.len()
                        && c.packets
                            .iter()
                            .zip(&chunk.packets)
                            .all(|(a, b)| a.packet_id == b.packet_id)
                })
            })
    }
}
