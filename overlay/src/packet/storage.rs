//! What the packet protocol needs from a node's packet store, as a trait, so
//! the overlay does not depend on the node crate (which implements it for its
//! redb `PacketStore`), plus a bounded in-memory store for tests and benches.
//!
//! Implementations are synchronous; the overlay calls them through
//! `spawn_blocking`. This module must not know the network.

use std::collections::BTreeMap;
use std::sync::Mutex;

use strew_coordinator::{NodeId, PacketId};

use crate::packet::wire::ROOT_GENERATION;

/// Storage failures, sorted by what the requester should do.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Not enough free allocated space: try another target.
    #[error("store full: {needed} bytes needed, {free} free")]
    Full { needed: u64, free: u64 },
    /// The bytes do not hash to the id: the requester sent garbage.
    #[error("bytes hash to {actual}, not the given packet id")]
    WrongId { actual: PacketId },
    /// Local failure (disk, database): the target is unhealthy.
    #[error("store failed")]
    Failed(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What a generation-bound delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// The packet had that generation and is gone (with its generation).
    Deleted,
    /// No such packet.
    Absent,
    /// The packet is there under another generation (stored again since
    /// the ticket was issued, or for someone else): kept.
    OtherGeneration,
}

/// A packet store as the packet protocol sees it. Each packet has a storage
/// generation recorded with it, durably, by its latest store; a delete names
/// it, so a delete ticket deletes once and never a copy stored again later
/// (also when the copy was stored again before the delete arrived).
pub trait PacketStorage: Send + Sync + 'static {
    /// Stores `bytes` under `id` with storage generation `generation`. It
    /// must verify the id (`bytes` hash to it, else `WrongId`, nothing
    /// stored): the packet service relies on it and does not hash again.
    /// Storing an existing packet again succeeds and gives it
    /// this generation (older delete tickets no longer match). Returns the
    /// generation the packet has.
    fn put(&self, id: PacketId, bytes: &[u8], generation: u64) -> Result<u64, StorageError>;
    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError>;
    /// Removes a packet if it has `generation`.
    fn delete(&self, id: &PacketId, generation: u64) -> Result<DeleteOutcome, StorageError>;
    /// Removes several packets, each if it has its generation; one result
    /// each, in order. A store that commits in groups overrides it to make
    /// them durable together.
    fn delete_many(&self, deletes: &[(PacketId, u64)]) -> Vec<Result<DeleteOutcome, StorageError>> {
        deletes
            .iter()
            .map(|(id, generation)| self.delete(id, *generation))
            .collect()
    }
    fn free_bytes(&self) -> Result<u64, StorageError>;
    fn capacity(&self) -> u64;

    /// Records that `holder` stored `id` here (the authenticated requester of
    /// an accepted put). A store that keeps no holders serves no holder reads.
    fn record_holder(&self, _id: &PacketId, _holder: &NodeId) -> Result<(), StorageError> {
        Ok(())
    }
    /// Whether `holder` stored `id` here.
    fn is_holder(&self, _id: &PacketId, _holder: &NodeId) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// Whether `holder` stored a packet here under a manager ticket (not a
    /// root): only such a holder may store roots without a ticket.
    fn holds_ticketed(&self, _holder: &NodeId) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// Marks `id`, stored here by `holder`, as one of `holder`'s snapshot
    /// roots; false when `holder` did not store it.
    fn mark_root(&self, _id: &PacketId, _holder: &NodeId) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// Drops `id` from `holder`'s roots: deleted if it was stored as a root
    /// (generation [`ROOT_GENERATION`]), else only unmarked. False when it
    /// was not one of `holder`'s roots.
    fn drop_root(&self, _id: &PacketId, _holder: &NodeId) -> Result<bool, StorageError> {
        Ok(false)
    }
    /// Up to `limit` of `holder`'s root packets, in id order, after `after`.
    fn roots_of(
        &self,
        _holder: &NodeId,
        _after: Option<&PacketId>,
        _limit: usize,
    ) -> Result<Vec<PacketId>, StorageError> {
        Ok(Vec::new())
    }
    /// Up to `limit` stored packets in id order after `after`, each with
    /// its size and generation (roots included: the caller tells them by
    /// [`ROOT_GENERATION`]). A store that cannot list answers none.
    fn inventory(
        &self,
        _after: Option<&PacketId>,
        _limit: usize,
    ) -> Result<Vec<HeldPacket>, StorageError> {
        Ok(Vec::new())
    }
}

/// One packet of a target's inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldPacket {
    pub packet_id: PacketId,
    pub size: u64,
    pub generation: u64,
}

/// (holder, packet) → whether the packet is one of the holder's roots.
type Held = BTreeMap<(NodeId, PacketId), bool>;

/// An in-memory store with a byte capacity (tests, benchmarks, the simulator of the wire).
#[derive(Debug)]
pub struct MemoryStorage {
    capacity: u64,
    packets: Mutex<BTreeMap<PacketId, (u64, Vec<u8>)>>,
    /// (holder, packet) → is a root.
    holders: Mutex<Held>,
}

impl MemoryStorage {
    pub fn new(capacity: u64) -> Self {
        MemoryStorage {
            capacity,
            packets: Mutex::new(BTreeMap::new()),
            holders: Mutex::new(BTreeMap::new()),
        }
    }

    #[allow(clippy::type_complexity)]
    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, BTreeMap<PacketId, (u64, Vec<u8>)>>, StorageError> {
        self.packets
            .lock()
            .map_err(|_| StorageError::Failed("memory store lock poisoned".into()))
    }

    fn held(&self) -> Result<std::sync::MutexGuard<'_, Held>, StorageError> {
        self.holders
            .lock()
            .map_err(|_| StorageError::Failed("memory store lock poisoned".into()))
    }

    fn used(map: &BTreeMap<PacketId, (u64, Vec<u8>)>) -> u64 {
        map.values().map(|(_, v)| v.len() as u64).sum()
    }
}

impl PacketStorage for MemoryStorage {
    fn put(&self, id: PacketId, bytes: &[u8], generation: u64) -> Result<u64, StorageError> {
        let actual = PacketId::of(bytes);
        if actual != id {
            return Err(StorageError::WrongId { actual });
        }
        let mut map = self.lock()?;
        if let Some((existing, _)) = map.get_mut(&id) {
            *existing = generation;
            return Ok(generation);
        }
        let free = self.capacity.saturating_sub(Self::used(&map));
        if bytes.len() as u64 > free {
            return Err(StorageError::Full {
                needed: bytes.len() as u64,
                free,
            });
        }
        map.insert(id, (generation, bytes.to_vec()));
        Ok(generation)
    }

    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock()?.get(id).map(|(_, bytes)| bytes.clone()))
    }

    fn delete(&self, id: &PacketId, generation: u64) -> Result<DeleteOutcome, StorageError> {
        let mut map = self.lock()?;
        match map.get(id) {
            None => Ok(DeleteOutcome::Absent),
            Some((g, _)) if *g != generation => Ok(DeleteOutcome::OtherGeneration),
            Some(_) => {
                map.remove(id);
                Ok(DeleteOutcome::Deleted)
            }
        }
    }

    fn free_bytes(&self) -> Result<u64, StorageError> {
        let map = self.lock()?;
        Ok(self.capacity.saturating_sub(Self::used(&map)))
    }

    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn inventory(
        &self,
        after: Option<&PacketId>,
        limit: usize,
    ) -> Result<Vec<HeldPacket>, StorageError> {
        use std::ops::Bound;
        let map = self.lock()?;
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(*a));
        Ok(map
            .range((start, Bound::Unbounded))
            .take(limit)
            .map(|(id, (generation, bytes))| HeldPacket {
                packet_id: *id,
                size: bytes.len() as u64,
                generation: *generation,
            })
            .collect())
    }

    fn record_holder(&self, id: &PacketId, holder: &NodeId) -> Result<(), StorageError> {
        self.held()?.entry((*holder, *id)).or_insert(false);
        Ok(())
    }

    fn is_holder(&self, id: &PacketId, holder: &NodeId) -> Result<bool, StorageError> {
        Ok(self.held()?.contains_key(&(*holder, *id)))
    }

    fn holds_ticketed(&self, holder: &NodeId) -> Result<bool, StorageError> {
        Ok(self
            .held()?
            .range((*holder, PacketId([0; 32]))..)
            .take_while(|((h, _), _)| h == holder)
            .any(|(_, root)| !*root))
    }

    fn mark_root(&self, id: &PacketId, holder: &NodeId) -> Result<bool, StorageError> {
        Ok(match self.held()?.get_mut(&(*holder, *id)) {
            Some(root) => {
                *root = true;
                true
            }
            None => false,
        })
    }

    fn drop_root(&self, id: &PacketId, holder: &NodeId) -> Result<bool, StorageError> {
        // The same lock order as `roots_of`: packets, then holders.
        let mut packets = self.lock()?;
        let mut held = self.held()?;
        match held.get_mut(&(*holder, *id)) {
            Some(root) if *root => {
                if packets.get(id).is_some_and(|(g, _)| *g == ROOT_GENERATION) {
                    packets.remove(id);
                    held.remove(&(*holder, *id));
                } else {
                    *root = false;
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn roots_of(
        &self,
        holder: &NodeId,
        after: Option<&PacketId>,
        limit: usize,
    ) -> Result<Vec<PacketId>, StorageError> {
        let packets = self.lock()?;
        Ok(self
            .held()?
            .range((*holder, PacketId([0; 32]))..)
            .take_while(|((h, _), _)| h == holder)
            .filter(|((_, id), root)| **root && after.is_none_or(|a| id > a))
            .filter(|((_, id), _)| packets.contains_key(id))
            .map(|((_, id), _)| *id)
            .take(limit)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_verifies_ids_and_capacity() {
        let store = MemoryStorage::new(10);
        let a = b"0123456".to_vec();
        assert!(matches!(
            store.put(PacketId::of(b"other"), &a, 1),
            Err(StorageError::WrongId { .. })
        ));
        assert_eq!(store.put(PacketId::of(&a), &a, 5).unwrap(), 5);
        assert_eq!(
            store.put(PacketId::of(&a), &a, 6).unwrap(),
            6,
            "the latest store's generation holds"
        );
        assert_eq!(store.free_bytes().unwrap(), 3);
        let b = b"abcd".to_vec();
        assert!(matches!(
            store.put(PacketId::of(&b), &b, 1),
            Err(StorageError::Full { needed: 4, free: 3 })
        ));
        assert_eq!(store.get(&PacketId::of(&a)).unwrap(), Some(a.clone()));
        assert_eq!(
            store.delete(&PacketId::of(&a), 5).unwrap(),
            DeleteOutcome::OtherGeneration,
            "a delete of the earlier store keeps the copy stored again"
        );
        assert_eq!(
            store.delete(&PacketId::of(&a), 6).unwrap(),
            DeleteOutcome::Deleted
        );
        assert_eq!(
            store.delete(&PacketId::of(&a), 6).unwrap(),
            DeleteOutcome::Absent
        );
    }
}
