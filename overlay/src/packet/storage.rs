//! What the packet protocol needs from a node's packet store, as a trait, so
//! the overlay does not depend on the node crate (which implements it for its
//! redb `PacketStore`), plus a bounded in-memory store for tests and benches.
//!
//! Implementations are synchronous; the overlay calls them through
//! `spawn_blocking`. This module must not know the network.

use std::collections::BTreeMap;
use std::sync::Mutex;

use strew_coordinator::PacketId;

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

/// A packet store as the packet protocol sees it.
pub trait PacketStorage: Send + Sync + 'static {
    /// Stores `bytes` under `id` (verifying the id); storing an existing packet again succeeds.
    fn put(&self, id: PacketId, bytes: &[u8]) -> Result<(), StorageError>;
    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError>;
    /// Removes a packet; `Ok(false)` if it was not there.
    fn delete(&self, id: &PacketId) -> Result<bool, StorageError>;
    fn free_bytes(&self) -> Result<u64, StorageError>;
    fn capacity(&self) -> u64;
}

/// An in-memory store with a byte capacity (tests, benchmarks, the simulator of the wire).
#[derive(Debug)]
pub struct MemoryStorage {
    capacity: u64,
    packets: Mutex<BTreeMap<PacketId, Vec<u8>>>,
}

impl MemoryStorage {
    pub fn new(capacity: u64) -> Self {
        MemoryStorage {
            capacity,
            packets: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<PacketId, Vec<u8>>>, StorageError> {
        self.packets
            .lock()
            .map_err(|_| StorageError::Failed("memory store lock poisoned".into()))
    }

    fn used(map: &BTreeMap<PacketId, Vec<u8>>) -> u64 {
        map.values().map(|v| v.len() as u64).sum()
    }
}

impl PacketStorage for MemoryStorage {
    fn put(&self, id: PacketId, bytes: &[u8]) -> Result<(), StorageError> {
        let actual = PacketId::of(bytes);
        if actual != id {
            return Err(StorageError::WrongId { actual });
        }
        let mut map = self.lock()?;
        if map.contains_key(&id) {
            return Ok(());
        }
        let free = self.capacity.saturating_sub(Self::used(&map));
        if bytes.len() as u64 > free {
            return Err(StorageError::Full {
                needed: bytes.len() as u64,
                free,
            });
        }
        map.insert(id, bytes.to_vec());
        Ok(())
    }

    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock()?.get(id).cloned())
    }

    fn delete(&self, id: &PacketId) -> Result<bool, StorageError> {
        Ok(self.lock()?.remove(id).is_some())
    }

    fn free_bytes(&self) -> Result<u64, StorageError> {
        let map = self.lock()?;
        Ok(self.capacity.saturating_sub(Self::used(&map)))
    }

    fn capacity(&self) -> u64 {
        self.capacity
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
            store.put(PacketId::of(b"other"), &a),
            Err(StorageError::WrongId { .. })
        ));
        store.put(PacketId::of(&a), &a).unwrap();
        store.put(PacketId::of(&a), &a).unwrap();
        assert_eq!(store.free_bytes().unwrap(), 3);
        let b = b"abcd".to_vec();
        assert!(matches!(
            store.put(PacketId::of(&b), &b),
            Err(StorageError::Full { needed: 4, free: 3 })
        ));
        assert_eq!(store.get(&PacketId::of(&a)).unwrap(), Some(a.clone()));
        assert!(store.delete(&PacketId::of(&a)).unwrap());
        assert!(!store.delete(&PacketId::of(&a)).unwrap());
    }
}
