//! Which node stored each packet here (its holder) and which of those packets
//! are the holder's snapshot roots (issue 18): a small redb index next to the
//! packet store (`packets/holders.redb`), keyed `holder ‖ packet`, with the
//! roots in a table of their own, so listing a holder's roots scans its roots
//! only, never its data packets. The packet protocol's holder reads,
//! `MarkRoot` and `ListRoots` are answered from it.
//!
//! Owns this index only; the packets themselves are the [`PacketStore`]'s.
//! An entry whose packet was deleted is harmless (the store answers "not
//! found") and is skipped when listing roots.
//!
//! [`PacketStore`]: crate::store::PacketStore

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use strew_coordinator::{NodeId, PacketId};

/// `holder ‖ packet` → 1 when the packet is one of the holder's roots, 0 otherwise.
const HELD: TableDefinition<&[u8; 64], u8> = TableDefinition::new("held-v1");
/// `holder ‖ packet` of the holder's roots only (what `ListRoots` scans).
const ROOTS: TableDefinition<&[u8; 64], ()> = TableDefinition::new("roots-v1");

#[derive(Debug, thiserror::Error)]
pub enum HoldersError {
    #[error("holder index: {0}")]
    Db(String),
}

fn db<E: std::fmt::Display>(e: E) -> HoldersError {
    HoldersError::Db(e.to_string())
}

/// The holder index of one packet store.
#[derive(Clone)]
pub struct HolderIndex {
    db: Arc<Database>,
}

fn key(holder: &NodeId, id: &PacketId) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&holder.0);
    k[32..].copy_from_slice(&id.0);
    k
}

impl HolderIndex {
    /// Opens (or creates) the index in the packet store's directory.
    pub fn open(dir: &Path) -> Result<Self, HoldersError> {
        std::fs::create_dir_all(dir).map_err(db)?;
        let db_ =
            crate::redb_cache::create(dir.join("holders.redb"), crate::redb_cache::HOLDERS_CACHE)
                .map_err(db)?;
        let txn = db_.begin_write().map_err(db)?;
        txn.open_table(HELD).map_err(db)?;
        txn.open_table(ROOTS).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(HolderIndex { db: Arc::new(db_) })
    }

    /// Records `holder` as a storer of `id` (keeps a root mark).
    pub fn record(&self, id: &PacketId, holder: &NodeId) -> Result<(), HoldersError> {
        let k = key(holder, id);
        if self.get(&k)?.is_some() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(HELD).map_err(db)?;
            if t.get(&k).map_err(db)?.is_none() {
                t.insert(&k, 0).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    fn get(&self, k: &[u8; 64]) -> Result<Option<u8>, HoldersError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(HELD).map_err(db)?;
        Ok(t.get(k).map_err(db)?.map(|v| v.value()))
    }

    pub fn is_holder(&self, id: &PacketId, holder: &NodeId) -> Result<bool, HoldersError> {
        Ok(self.get(&key(holder, id))?.is_some())
    }

    /// Marks `id` as a root of `holder`; false when `holder` did not store it.
    pub fn mark_root(&self, id: &PacketId, holder: &NodeId) -> Result<bool, HoldersError> {
        let k = key(holder, id);
        if self.get(&k)?.is_none() {
            return Ok(false);
        }
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(HELD).map_err(db)?;
            t.insert(&k, 1).map_err(db)?;
            txn.open_table(ROOTS)
                .map_err(db)?
                .insert(&k, ())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(true)
    }

    /// Whether `id` is one of `holder`'s roots.
    pub fn is_root(&self, id: &PacketId, holder: &NodeId) -> Result<bool, HoldersError> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(ROOTS).map_err(db)?;
        Ok(t.get(&key(holder, id)).map_err(db)?.is_some())
    }

    /// `id` is no longer one of `holder`'s roots; with `forget`, the holder
    /// no longer holds it either (the root packet was deleted), otherwise it
    /// stays recorded as an ordinary packet of the holder.
    pub fn unmark_root(
        &self,
        id: &PacketId,
        holder: &NodeId,
        forget: bool,
    ) -> Result<(), HoldersError> {
        let k = key(holder, id);
        let txn = self.db.begin_write().map_err(db)?;
        {
            txn.open_table(ROOTS).map_err(db)?.remove(&k).map_err(db)?;
            let mut held = txn.open_table(HELD).map_err(db)?;
            if forget {
                held.remove(&k).map_err(db)?;
            } else if held.get(&k).map_err(db)?.is_some() {
                held.insert(&k, 0).map_err(db)?;
            }
        }
        txn.commit().map_err(db)
    }

    /// Snapshot roots kept here, for every holder (`status`: root copies
    /// are not moved by repair or `strew leave`).
    pub fn root_count(&self) -> Result<u64, HoldersError> {
        let txn = self.db.begin_read().map_err(db)?;
        txn.open_table(ROOTS).map_err(db)?.len().map_err(db)
    }

    /// Whether `holder` stored at least one packet here that is not a root:
    /// one the sequence manager ticketed, which vouches for the holder
    /// (scans at most the holder's roots plus one entry).
    pub fn holds_ticketed(&self, holder: &NodeId) -> Result<bool, HoldersError> {
        let start = key(holder, &PacketId([0; 32]));
        let end = key(holder, &PacketId([0xff; 32]));
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(HELD).map_err(db)?;
        for entry in t.range::<&[u8; 64]>(&start..=&end).map_err(db)? {
            if entry.map_err(db)?.1.value() == 0 {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Up to `limit` roots of `holder` after `after`, in id order, for which
    /// `present` holds (the packet is still stored).
    pub fn roots_of(
        &self,
        holder: &NodeId,
        after: Option<&PacketId>,
        limit: usize,
        present: impl Fn(&PacketId) -> bool,
    ) -> Result<Vec<PacketId>, HoldersError> {
        let start = match after {
            Some(a) => key(holder, a),
            None => key(holder, &PacketId([0; 32])),
        };
        let end = key(holder, &PacketId([0xff; 32]));
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(ROOTS).map_err(db)?;
        let mut out = Vec::new();
        for entry in t.range::<&[u8; 64]>(&start..=&end).map_err(db)? {
            if out.len() >= limit {
                break;
            }
            let (k, _) = entry.map_err(db)?;
            let k = k.value();
            let mut id = [0u8; 32];
            id.copy_from_slice(&k[32..]);
            let id = PacketId(id);
            if after != Some(&id) && present(&id) {
                out.push(id);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_are_per_holder_paged_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let owner = NodeId([1; 32]);
        let other = NodeId([2; 32]);
        let ids: Vec<PacketId> = (0..5u8).map(|n| PacketId([n; 32])).collect();
        {
            let index = HolderIndex::open(dir.path()).expect("open");
            for id in &ids {
                index.record(id, &owner).expect("record");
            }
            index.record(&ids[0], &other).expect("record");
            assert!(!index.mark_root(&ids[1], &NodeId([9; 32])).expect("mark"));
            for id in &ids[1..4] {
                assert!(index.mark_root(id, &owner).expect("mark"));
            }
            // Recording again keeps the mark.
            index.record(&ids[1], &owner).expect("record");
        }
        let index = HolderIndex::open(dir.path()).expect("reopen");
        assert!(index.is_holder(&ids[0], &other).expect("holder"));
        assert!(!index.is_holder(&ids[1], &other).expect("holder"));
        let all = |_: &PacketId| true;
        assert_eq!(
            index.roots_of(&owner, None, 10, all).expect("list"),
            ids[1..4].to_vec()
        );
        assert_eq!(index.roots_of(&other, None, 10, all).expect("list"), vec![]);
        assert_eq!(
            index.roots_of(&owner, None, 2, all).expect("list"),
            ids[1..3].to_vec()
        );
        assert_eq!(
            index.roots_of(&owner, Some(&ids[2]), 2, all).expect("list"),
            vec![ids[3]]
        );
        let gone = ids[2];
        assert_eq!(
            index
                .roots_of(&owner, None, 10, |id| *id != gone)
                .expect("list"),
            vec![ids[1], ids[3]]
        );
    }
}
