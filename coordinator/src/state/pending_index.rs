//! Lookups over the pending backups, derived from them and never
//! serialised: which pending backup plans a chunk, a packet on a target, a
//! record key, which packets it has receipts for, which copies it reuses,
//! which targets it plans packets on, and what its chunk order (handed in
//! page by page) holds so far. A backup of a million
//! chunks is planned, receipted and ordered in pages; without these, every
//! page would scan everything planned before it (quadratic in the backup).
//!
//! Kept in step by the commands that change pending backups (begin, extend,
//! receipts, commit, abort) and rebuilt whole when a state arrives from
//! outside (loaded, installed from a snapshot: [`ManagerState::reindex`]).
//! Lookups on a state not indexed yet fall back to scanning.

use std::collections::{BTreeMap, BTreeSet};

use super::ManagerState;
use crate::ids::{DataId, NodeId, PacketId};
use crate::records::{
    MAX_CHUNK_COPIES, PendingBackup, PlannedChunk, Receipted, StoredPacket, chunk_copy_key,
};

/// The index (equal to any other: it is derived, not state).
#[derive(Clone, Debug, Default)]
pub struct PendingIndex {
    built: bool,
    /// (pending id, DataId) → position of the chunk in `new_chunks`.
    chunks: BTreeMap<(u64, DataId), usize>,
    /// (PacketId, target, pending id) → position of its chunk.
    packets: BTreeMap<(PacketId, NodeId, u64), usize>,
    /// (record key, pending id) of every planned copy.
    keys: BTreeSet<(DataId, u64)>,
    /// (pending id, PacketId, target) receipted.
    receipted: BTreeSet<(u64, PacketId, NodeId)>,
    /// (pending id, record key) of every reused copy.
    reused: BTreeSet<(u64, DataId)>,
    /// (pending id, record key) in the order so far.
    order: BTreeSet<(u64, DataId)>,
    /// (pending id, DataId) → record key of the order's new copies.
    order_stored: BTreeMap<(u64, DataId), DataId>,
    /// (pending id, record key) of the order's new copies.
    order_stored_keys: BTreeSet<(u64, DataId)>,
    /// Pending id → stored bytes of its planned packets (its
    /// `stored_bytes()`, which every plan part would otherwise sum anew).
    bytes: BTreeMap<u64, u64>,
    /// (pending id, target) → planned packets on that target: the
    /// backup's targets so far, without a pass over its chunks.
    targets: BTreeMap<(u64, NodeId), u64>,
}

impl PartialEq for PendingIndex {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl PendingIndex {
    fn add_chunks(&mut self, id: u64, from: usize, chunks: &[PlannedChunk]) {
        let added = chunks
            .iter()
            .flat_map(|c| &c.packets)
            .fold(0u64, |sum, p| sum.saturating_add(p.size));
        let bytes = self.bytes.entry(id).or_default();
        *bytes = bytes.saturating_add(added);
        for (i, chunk) in chunks.iter().enumerate() {
            let at = from + i;
            self.chunks.insert((id, chunk.data_id), at);
            self.keys.insert((chunk.record_key(), id));
            for p in &chunk.packets {
                self.packets.insert((p.packet_id, p.target, id), at);
                self.count_target(id, p.target, 1);
            }
        }
    }

    /// Adds `delta` planned packets of backup `id` to `target`'s count
    /// (an entry leaves at zero).
    fn count_target(&mut self, id: u64, target: NodeId, delta: i64) {
        let count = self.targets.entry((id, target)).or_default();
        *count = count.saturating_add_signed(delta);
        if *count == 0 {
            self.targets.remove(&(id, target));
        }
    }

    fn add(&mut self, pending: &PendingBackup) {
        self.add_chunks(pending.id, 0, &pending.new_chunks);
        self.add_receipted(pending.id, &pending.receipted);
        self.add_reused(pending.id, &pending.reused);
        self.add_order(pending.id, &pending.order, &pending.order_stored);
    }

    fn add_reused(&mut self, id: u64, reused: &[DataId]) {
        self.reused.extend(reused.iter().map(|key| (id, *key)));
    }

    fn add_order(&mut self, id: u64, keys: &[DataId], stored: &[PlannedChunk]) {
        self.order.extend(keys.iter().map(|key| (id, *key)));
        for copy in stored {
            self.order_stored
                .insert((id, copy.data_id), copy.record_key());
            self.order_stored_keys.insert((id, copy.record_key()));
        }
    }

    fn remove_order(&mut self, id: u64, keys: &[DataId], stored: &[PlannedChunk]) {
        for key in keys {
            self.order.remove(&(id, *key));
        }
        for copy in stored {
            self.order_stored.remove(&(id, copy.data_id));
            self.order_stored_keys.remove(&(id, copy.record_key()));
        }
    }

    fn add_receipted(&mut self, id: u64, receipted: &[Receipted]) {
        for r in receipted {
            self.receipted.insert((id, r.packet_id, r.target));
        }
    }

    fn remove(&mut self, pending: &PendingBackup) {
        let id = pending.id;
        self.bytes.remove(&id);
        let targets: Vec<(u64, NodeId)> = self.targets_of(id).map(|t| (id, t)).collect();
        for key in targets {
            self.targets.remove(&key);
        }
        for chunk in &pending.new_chunks {
            self.chunks.remove(&(id, chunk.data_id));
            self.keys.remove(&(chunk.record_key(), id));
            for p in &chunk.packets {
                self.packets.remove(&(p.packet_id, p.target, id));
            }
        }
        for r in &pending.receipted {
            self.receipted.remove(&(id, r.packet_id, r.target));
        }
        for key in &pending.reused {
            self.reused.remove(&(id, *key));
        }
        self.remove_order(id, &pending.order, &pending.order_stored);
    }

    fn targets_of(&self, id: u64) -> impl Iterator<Item = NodeId> + '_ {
        self.targets
            .range((id, NodeId([0; 32]))..=(id, NodeId([u8::MAX; 32])))
            .map(|((_, target), _)| *target)
    }
}

impl ManagerState {
    /// Rebuilds the pending index from the pending backups (a state loaded
    /// or installed whole).
    pub fn reindex(&mut self) {
        let mut index = PendingIndex {
            built: true,
            ..PendingIndex::default()
        };
        for pending in self.pending.values() {
            index.add(pending);
        }
        self.index = index;
    }

    /// Builds the index if this state has none yet.
    pub(super) fn ensure_index(&mut self) {
        if !self.index.built {
            self.reindex();
        }
    }

    pub(super) fn index_begun(&mut self, pending: &PendingBackup) {
        if self.index.built {
            self.index.add(pending);
        }
    }

    /// Packet `old` of backup `id`'s chunk at `at` now goes to `target`.
    pub(super) fn index_retargeted(
        &mut self,
        id: u64,
        at: usize,
        old: &StoredPacket,
        target: NodeId,
    ) {
        if self.index.built {
            self.index.packets.remove(&(old.packet_id, old.target, id));
            self.index.packets.insert((old.packet_id, target, id), at);
            self.index.count_target(id, old.target, -1);
            self.index.count_target(id, target, 1);
        }
    }

    pub(super) fn index_extended(
        &mut self,
        id: u64,
        from: usize,
        chunks: &[PlannedChunk],
        reused: &[DataId],
    ) {
        if self.index.built {
            self.index.add_chunks(id, from, chunks);
            self.index.add_reused(id, reused);
        }
    }

    /// A page of the order was added to backup `id`, after the order it
    /// replaced (`dropped`, empty unless the page restarted the order).
    pub(super) fn index_ordered(
        &mut self,
        id: u64,
        dropped: (&[DataId], &[PlannedChunk]),
        keys: &[DataId],
        stored: &[PlannedChunk],
    ) {
        if self.index.built {
            self.index.remove_order(id, dropped.0, dropped.1);
            self.index.add_order(id, keys, stored);
        }
    }

    pub(super) fn index_receipted(&mut self, id: u64, receipted: &[Receipted]) {
        if self.index.built {
            self.index.add_receipted(id, receipted);
        }
    }

    pub(super) fn index_removed(&mut self, pending: &PendingBackup) {
        if self.index.built {
            self.index.remove(pending);
        }
    }

    /// The stored bytes of `pending`'s planned packets (from the index,
    /// without summing its chunks, once the state is indexed).
    pub fn pending_stored_bytes(&self, pending: &PendingBackup) -> u64 {
        if self.index.built {
            self.index.bytes.get(&pending.id).copied().unwrap_or(0)
        } else {
            pending.stored_bytes()
        }
    }

    /// The targets pending backup `pending` plans packets on so far, in
    /// order, each once (from the index, without a pass over its chunks,
    /// once the state is indexed).
    pub fn pending_targets(&self, pending: &PendingBackup) -> Vec<NodeId> {
        if self.index.built {
            self.index.targets_of(pending.id).collect()
        } else {
            pending
                .new_chunks
                .iter()
                .flat_map(|c| c.packets.iter().map(|p| p.target))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect()
        }
    }

    /// Pending backup `id`'s planned copy of `data_id`, if it plans one.
    pub fn planned_chunk(&self, id: u64, data_id: &DataId) -> Option<&PlannedChunk> {
        let at = self.planned_position(id, data_id)?;
        self.pending.get(&id)?.new_chunks.get(at)
    }

    /// Where pending backup `id`'s planned copy of `data_id` sits in its
    /// `new_chunks`, if it plans one.
    pub fn planned_position(&self, id: u64, data_id: &DataId) -> Option<usize> {
        let pending = self.pending.get(&id)?;
        if self.index.built {
            self.index.chunks.get(&(id, *data_id)).copied()
        } else {
            pending
                .new_chunks
                .iter()
                .position(|c| &c.data_id == data_id)
        }
    }

    /// Pending backup `id`'s planned chunk that puts `packet_id` on `target`.
    pub fn planned_packet(
        &self,
        id: u64,
        packet_id: &PacketId,
        target: &NodeId,
    ) -> Option<&PlannedChunk> {
        let pending = self.pending.get(&id)?;
        let holds = |c: &&PlannedChunk| {
            c.packets
                .iter()
                .any(|p| &p.packet_id == packet_id && &p.target == target)
        };
        if self.index.built {
            let at = *self.index.packets.get(&(*packet_id, *target, id))?;
            pending.new_chunks.get(at).filter(holds)
        } else {
            pending.new_chunks.iter().find(holds)
        }
    }

    /// Whether pending backup `id` has a receipt for `packet_id` on `target`.
    pub(super) fn is_receipted(&self, id: u64, packet_id: &PacketId, target: &NodeId) -> bool {
        if self.index.built {
            self.index.receipted.contains(&(id, *packet_id, *target))
        } else {
            self.pending.get(&id).is_some_and(|p| {
                p.receipted
                    .iter()
                    .any(|r| &r.packet_id == packet_id && &r.target == target)
            })
        }
    }

    /// Whether a pending backup (other than `except`, if given) puts
    /// `packet_id` on `target`.
    pub fn pending_puts(&self, packet_id: &PacketId, target: &NodeId, except: Option<u64>) -> bool {
        if self.index.built {
            self.index
                .packets
                .range((*packet_id, *target, 0)..=(*packet_id, *target, u64::MAX))
                .any(|((.., id), _)| Some(*id) != except)
        } else {
            self.pending.values().any(|other| {
                Some(other.id) != except
                    && other.new_chunks.iter().any(|c| {
                        c.packets
                            .iter()
                            .any(|q| &q.packet_id == packet_id && &q.target == target)
                    })
            })
        }
    }

    /// Whether `key` is in pending backup `id`'s order so far.
    pub fn in_order(&self, id: u64, key: &DataId) -> bool {
        if self.index.built {
            self.index.order.contains(&(id, *key))
        } else {
            self.pending.get(&id).is_some_and(|p| p.order.contains(key))
        }
    }

    /// The record key of the new copy of `data_id` that pending backup
    /// `id`'s order uses so far, if any.
    pub fn ordered_copy(&self, id: u64, data_id: &DataId) -> Option<DataId> {
        if self.index.built {
            self.index.order_stored.get(&(id, *data_id)).copied()
        } else {
            self.pending.get(&id).and_then(|p| {
                p.order_stored
                    .iter()
                    .find(|c| &c.data_id == data_id)
                    .map(PlannedChunk::record_key)
            })
        }
    }

    /// Whether record key `key` is a new copy pending backup `id`'s order
    /// uses so far.
    pub fn ordered_copy_key(&self, id: u64, key: &DataId) -> bool {
        if self.index.built {
            self.index.order_stored_keys.contains(&(id, *key))
        } else {
            self.pending
                .get(&id)
                .is_some_and(|p| p.order_stored.iter().any(|c| &c.record_key() == key))
        }
    }

    /// The copy of `data_id` pending backup `id` reuses (the highest copy
    /// number among its reused keys still recorded for `data_id`).
    pub fn reused_copy(&self, id: u64, data_id: &DataId) -> Option<DataId> {
        let pending = self.pending.get(&id)?;
        (0..MAX_CHUNK_COPIES)
            .rev()
            .map(|n| chunk_copy_key(data_id, n))
            .find(|key| {
                let reused = if self.index.built {
                    self.index.reused.contains(&(id, *key))
                } else {
                    pending.reused.contains(key)
                };
                reused && self.chunks.get(key).is_some_and(|c| &c.data_id == data_id)
            })
    }

    /// Whether a pending backup plans a copy under record key `key`.
    pub fn key_pending(&self, key: &DataId) -> bool {
        if self.index.built {
            self.index
                .keys
                .range((*key, 0)..=(*key, u64::MAX))
                .next()
                .is_some()
        } else {
            self.pending
                .values()
                .any(|p| p.new_chunks.iter().any(|c| &c.record_key() == key))
        }
    }
}
