//! The source's index of chunks it has committed to the grid: DataId → the
//! stripe's PacketIds. The pipeline consults it so unchanged chunks are not
//! encoded or uploaded again (incremental backups). It is a cache of the
//! manager's truth: after a `forget`, or when the manager says a chunk is
//! gone, it is cleared and the next backup re-plans everything (the manager
//! then dedups what it still holds, so nothing is uploaded twice).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};
use strew_coordinator::DataId;

use crate::pipeline::{KnownChunks, StripeRecord};

const KNOWN: TableDefinition<&[u8; 32], &[u8]> = TableDefinition::new("known-chunks-v1");

#[derive(Clone)]
pub struct KnownIndex {
    db: Arc<Database>,
}

impl KnownIndex {
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = crate::redb_cache::create(path, crate::redb_cache::KNOWN_CACHE)?;
        let txn = db.begin_write()?;
        txn.open_table(KNOWN)?;
        txn.commit()?;
        Ok(KnownIndex { db: Arc::new(db) })
    }

    /// Records committed stripes.
    pub fn insert<'a>(
        &self,
        stripes: impl IntoIterator<Item = &'a StripeRecord>,
    ) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(KNOWN)?;
            for s in stripes {
                let mut bytes = Vec::new();
                // Serialising plain data into a Vec cannot fail.
                let _ = ciborium::into_writer(s, &mut bytes);
                table.insert(&s.data_id.0, bytes.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Forgets everything (the next backup re-plans all chunks).
    pub fn clear(&self) -> Result<(), redb::Error> {
        let txn = self.db.begin_write()?;
        txn.delete_table(KNOWN)?;
        txn.open_table(KNOWN)?;
        txn.commit()?;
        Ok(())
    }

    fn lookup(&self, id: &DataId) -> Result<Option<StripeRecord>, redb::Error> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KNOWN)?;
        let Some(bytes) = table.get(&id.0)? else {
            return Ok(None);
        };
        // An entry that does not decode is treated as unknown: re-uploading
        // is always safe, trusting a garbled record is not.
        Ok(ciborium::from_reader(bytes.value()).ok())
    }
}

impl KnownChunks for KnownIndex {
    fn known(&self, id: &DataId) -> Option<StripeRecord> {
        match self.lookup(id) {
            Ok(found) => found,
            Err(err) => {
                tracing::warn!(%err, "known-chunk index unreadable; treating chunk as new");
                None
            }
        }
    }
}
