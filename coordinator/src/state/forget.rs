//! Forgetting a snapshot: its chunk copies lose a reference, and those no
//! snapshot references any more leave the records; their packets that no
//! other copy and no pending plan holds are the deletions to deliver.

use std::collections::{BTreeMap, BTreeSet};

use super::{Applied, ApplyError, Deletion, ManagerState, Touched};
use crate::ids::{DataId, NodeId, SnapshotId};
use crate::records::{LogKind, profile_key};
use crate::units::{Millis, format_size};

impl ManagerState {
    pub(super) fn forget(
        &mut self,
        id: &SnapshotId,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let snapshot = self
            .snapshots
            .remove(id)
            .ok_or(ApplyError::UnknownSnapshot(*id))?;
        touched.snapshots.insert(*id);
        let referenced: BTreeSet<DataId> = snapshot.chunks.iter().copied().collect();
        let mut deletions: BTreeMap<NodeId, Vec<Deletion>> = BTreeMap::new();
        let mut freed = 0u64;
        for key in referenced {
            let Some(chunk) = self.chunks.get_mut(&key) else {
                continue;
            };
            touched.chunks.insert(key);
            chunk.refs = chunk.refs.saturating_sub(1);
            if chunk.refs > 0 {
                continue;
            }
            let Some(chunk) = self.chunks.remove(&key) else {
                continue;
            };
            for p in &chunk.packets {
                if self.other_copy_holds(&chunk.data_id, &key, &p.packet_id, &p.target)
                    || self.pending_puts(&p.packet_id, &p.target, None)
                {
                    continue;
                }
                if let Some(record) = self.targets.get_mut(&p.target)
                    && let Some(size) = record.packets.remove(&p.packet_id)
                {
                    record.bytes = record.bytes.saturating_sub(size);
                    touched.targets.insert(p.target);
                    touched.target_packets.insert((p.target, p.packet_id));
                    deletions.entry(p.target).or_default().push(Deletion {
                        packet_id: p.packet_id,
                        generation: p.generation,
                    });
                }
            }
            let bytes = chunk.stored_bytes();
            freed = freed.saturating_add(bytes);
            if let Some(owner) = self.clients.get_mut(&chunk.owner) {
                owner.source_stored_bytes = owner.source_stored_bytes.saturating_sub(bytes);
                touched.clients.insert(chunk.owner);
            }
        }
        let key = profile_key(&snapshot.source, &snapshot.set);
        if let Some(profile) = self.profiles.get_mut(&key) {
            profile.snapshots.retain(|s| s != id);
            let latest = profile.snapshots.last().and_then(|s| self.snapshots.get(s));
            profile.sealed_sequence = latest.map(|s| s.sealed_sequence.clone());
            profile.data_id = latest.map(|s| s.data_id);
            touched.profiles.insert(key);
        }
        self.log(
            touched,
            at,
            LogKind::Forgotten,
            snapshot.source,
            format!("snapshot {id} forgotten, {} freed", format_size(freed)),
        );
        Ok(Applied::Deletions(deletions))
    }
}
