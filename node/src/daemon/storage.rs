//! The overlay's storage seam implemented by the node's redb packet store.
//! Owns only the error mapping; it must not add policy.

use strew_coordinator::PacketId;
use strew_overlay::packet::{PacketStorage, StorageError};

use crate::store::{PacketStore, StoreError};

/// [`PacketStore`] as the packet protocol sees it.
#[derive(Clone)]
pub struct StoreAdapter(pub PacketStore);

fn map(err: StoreError) -> StorageError {
    match err {
        StoreError::Full { needed, free, .. } => StorageError::Full { needed, free },
        StoreError::WrongPacketId { actual, .. } => StorageError::WrongId { actual },
        other => StorageError::Failed(Box::new(other)),
    }
}

impl PacketStorage for StoreAdapter {
    fn put(&self, id: PacketId, bytes: &[u8]) -> Result<(), StorageError> {
        self.0.put(id, bytes).map(|_| ()).map_err(map)
    }

    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get(id).map_err(map)
    }

    fn delete(&self, id: &PacketId) -> Result<bool, StorageError> {
        self.0.delete(id).map_err(map)
    }

    fn free_bytes(&self) -> Result<u64, StorageError> {
        self.0.free_bytes().map_err(map)
    }

    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_maps_full_and_wrong_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreAdapter(PacketStore::open(dir.path(), 8).unwrap());
        let bytes = b"0123456789".to_vec();
        assert!(matches!(
            store.put(PacketId::of(b"x"), &bytes),
            Err(StorageError::WrongId { .. })
        ));
        assert!(matches!(
            store.put(PacketId::of(&bytes), &bytes),
            Err(StorageError::Full { .. })
        ));
        let small = b"abc".to_vec();
        store.put(PacketId::of(&small), &small).unwrap();
        assert_eq!(store.get(&PacketId::of(&small)).unwrap(), Some(small));
    }
}
