//! A commit in pages (SPEC R10/R12): a snapshot's chunk order too long for
//! one message or raft entry is handed in page by page
//! (`Command::CommitOrder`) and collected with its pending backup; the
//! commit that follows (`CommitBackup { paged: true }`) names none of it,
//! so no entry grows with the snapshot. Applying is deterministic: the
//! same pages and commit give the same snapshot on every member.

use super::*;
use crate::records::{MAX_CHUNK_COPIES, chunk_copy_key};

impl ManagerState {
    pub(super) fn commit_order(
        &mut self,
        pending_id: u64,
        first: u64,
        keys: &[DataId],
        stored: &[PlannedChunk],
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let pending = self
            .pending
            .get(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        // A page at 0 starts the order afresh. What earlier pages hold is
        // looked up in the pending index: a page costs its own size.
        let restart = first == 0;
        let recorded = if restart { 0 } else { pending.order.len() };
        if first != recorded as u64 {
            return Err(ApplyError::Invalid(format!(
                "a page of backup {pending_id}'s order starts at {first}, but {} chunk(s) are recorded",
                pending.order.len()
            )));
        }
        let mut new_keys: BTreeSet<DataId> = BTreeSet::new();
        let mut new_ids: BTreeSet<DataId> = BTreeSet::new();
        for copy in stored {
            let Some(plan) = self.planned_chunk(pending_id, &copy.data_id) else {
                return Err(ApplyError::UnknownChunk(copy.data_id));
            };
            let used_before = !restart && self.ordered_copy(pending_id, &copy.data_id).is_some();
            if !same_packets(&plan.packets, &copy.packets)
                || used_before
                || !new_ids.insert(copy.data_id)
            {
                return Err(ApplyError::Invalid(format!(
                    "chunk {} is not a planned copy used for the first time",
                    copy.data_id
                )));
            }
            if !self.is_copy_key(&copy.data_id, &copy.record_key()) {
                return Err(ApplyError::Invalid(format!(
                    "chunk {} has no copy key {}",
                    copy.data_id,
                    copy.record_key()
                )));
            }
            new_keys.insert(copy.record_key());
        }
        let mut seen: BTreeSet<DataId> = BTreeSet::new();
        for key in keys {
            let before = !restart && self.in_order(pending_id, key);
            if before || !seen.insert(*key) {
                return Err(ApplyError::Invalid(format!(
                    "chunk copy {key} is in backup {pending_id}'s order twice"
                )));
            }
            let new_copy =
                new_keys.contains(key) || (!restart && self.ordered_copy_key(pending_id, key));
            if !new_copy && !self.chunks.contains_key(key) {
                return Err(ApplyError::UnknownChunk(*key));
            }
        }
        let pending = self
            .pending
            .get_mut(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        let (dropped, dropped_stored) = if restart {
            (
                std::mem::take(&mut pending.order),
                std::mem::take(&mut pending.order_stored),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        touched.touch_list(pending_id, PendingList::Order, pending.order.len());
        let from = pending.order_stored.len();
        touched.touch_list(pending_id, PendingList::OrderStored, from);
        pending.order.extend_from_slice(keys);
        pending.order_stored.extend_from_slice(stored);
        self.index_ordered(pending_id, (&dropped, &dropped_stored), keys, stored);
        touched.pending.insert(pending_id);
        Ok(Applied::Done)
    }

    /// The snapshot and new copies a paged commit records: the pending
    /// backup's collected order and copies, each copy with the generations
    /// its recorded receipts name, under its planned key or, when another
    /// backup stored a different copy under that key meanwhile, the next
    /// free one (the order follows the move).
    pub(super) fn paged_snapshot(
        &self,
        snapshot: &SnapshotRecord,
    ) -> Result<(SnapshotRecord, Vec<PlannedChunk>), ApplyError> {
        let pending = self
            .pending
            .get(&snapshot.pending_id)
            .ok_or(ApplyError::UnknownPending(snapshot.pending_id))?;
        if !snapshot.chunks.is_empty() || pending.order.is_empty() {
            return Err(ApplyError::Invalid(format!(
                "a paged commit of backup {} names its chunks in pages, and only there",
                pending.id
            )));
        }
        let generations: BTreeMap<(PacketId, NodeId), u64> = pending
            .receipted
            .iter()
            .map(|r| ((r.packet_id, r.target), r.generation))
            .collect();
        let mut taken: BTreeSet<DataId> = BTreeSet::new();
        let mut moved: BTreeMap<DataId, DataId> = BTreeMap::new();
        let mut stored = Vec::with_capacity(pending.order_stored.len());
        for planned in &pending.order_stored {
            let mut copy = planned.clone();
            for p in &mut copy.packets {
                if let Some(g) = generations.get(&(p.packet_id, p.target)) {
                    p.generation = *g;
                }
            }
            let free = |k: &DataId| {
                !taken.contains(k)
                    && self
                        .chunks
                        .get(k)
                        .is_none_or(|c| same_packets(&c.packets, &copy.packets))
            };
            let key = copy.record_key();
            if !free(&key) {
                let other = (0..MAX_CHUNK_COPIES)
                    .map(|n| chunk_copy_key(&copy.data_id, n))
                    .find(|k| free(k))
                    .ok_or_else(|| {
                        ApplyError::Invalid(format!(
                            "chunk {} has no free copy key left",
                            copy.data_id
                        ))
                    })?;
                moved.insert(key, other);
                copy.key = (other != copy.data_id).then_some(other);
            }
            taken.insert(copy.record_key());
            stored.push(copy);
        }
        let chunks = pending
            .order
            .iter()
            .map(|k| moved.get(k).copied().unwrap_or(*k))
            .collect();
        Ok((
            SnapshotRecord {
                chunks,
                ..snapshot.clone()
            },
            stored,
        ))
    }
}
