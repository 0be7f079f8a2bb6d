//! The raft log and vote, durable in one redb database.
//!
//! Owns [`LogStore`]: openraft's `RaftLogStorage` (and its log reader) on
//! redb. Tables: entries by index (each a whole `Entry` as CBOR), and a small
//! metadata table holding the vote, the committed log id and the last purged
//! log id. Every write is one `Durability::Immediate` transaction, and
//! `LogFlushed::log_io_completed` is called only after it committed, so an
//! acknowledged entry or vote survives a crash. redb is synchronous: each
//! operation runs on tokio's blocking pool. This module does not interpret
//! entries.

// openraft's error types are large and its traits return them by value.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, RaftLogReader, StorageError, StorageIOError, Vote,
};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{RaftId, StrewRaft};

/// Log entries by index, CBOR.
const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft-log-v1");
/// Vote, committed and last purged log ids, CBOR.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft-meta-v1");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "last-purged";

/// The log database cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("raft log database {path}")]
pub struct LogStoreError {
    pub path: String,
    #[source]
    pub source: redb::Error,
}

type Io = StorageIOError<RaftId>;

fn any(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(any)?;
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    ciborium::from_reader(bytes).map_err(any)
}

/// Runs a redb operation on the blocking pool.
async fn blocking<T, F>(f: F) -> Result<T, StorageError<RaftId>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Io> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StorageError::from),
        Err(join) => Err(StorageIOError::write(any(join)).into()),
    }
}

/// The raft log store. Cloning shares the database (the log reader is a clone).
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    /// Opens (or creates) the log database at `path`.
    pub fn open(path: &Path) -> Result<LogStore, LogStoreError> {
        let err = |e: redb::Error| LogStoreError {
            path: path.display().to_string(),
            source: e,
        };
        let db = crate::redb_cache::create(path, crate::redb_cache::RAFT_LOG_CACHE)
            .map_err(|e| err(e.into()))?;
        let txn = db.begin_write().map_err(|e| err(e.into()))?;
        {
            txn.open_table(ENTRIES).map_err(|e| err(e.into()))?;
            txn.open_table(META).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(LogStore { db: Arc::new(db) })
    }

    fn read_meta<T: DeserializeOwned>(db: &Database, key: &str) -> Result<Option<T>, AnyError> {
        let txn = db.begin_read().map_err(any)?;
        let table = txn.open_table(META).map_err(any)?;
        match table.get(key).map_err(any)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn write_meta(db: &Database, key: &str, bytes: &[u8]) -> Result<(), AnyError> {
        let mut txn = db.begin_write().map_err(any)?;
        txn.set_durability(Durability::Immediate).map_err(any)?;
        txn.open_table(META)
            .map_err(any)?
            .insert(key, bytes)
            .map_err(any)?;
        txn.commit().map_err(any)
    }

    fn last_entry(db: &Database) -> Result<Option<Entry<StrewRaft>>, AnyError> {
        let txn = db.begin_read().map_err(any)?;
        let table = txn.open_table(ENTRIES).map_err(any)?;
        match table.last().map_err(any)? {
            Some((_, v)) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn entries(
        db: &Database,
        range: (Bound<u64>, Bound<u64>),
    ) -> Result<Vec<Entry<StrewRaft>>, AnyError> {
        let txn = db.begin_read().map_err(any)?;
        let table = txn.open_table(ENTRIES).map_err(any)?;
        let mut out = Vec::new();
        for row in table.range::<u64>(range).map_err(any)? {
            let (_, v) = row.map_err(any)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn append_all(db: &Database, rows: &[(u64, Vec<u8>)]) -> Result<(), AnyError> {
        let mut txn = db.begin_write().map_err(any)?;
        txn.set_durability(Durability::Immediate).map_err(any)?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(any)?;
            for (index, bytes) in rows {
                table.insert(*index, bytes.as_slice()).map_err(any)?;
            }
        }
        txn.commit().map_err(any)
    }

    /// Removes entries in `range`; records `purged` first when given (one transaction).
    fn remove(
        db: &Database,
        range: (Bound<u64>, Bound<u64>),
        purged: Option<&[u8]>,
    ) -> Result<(), AnyError> {
        let mut txn = db.begin_write().map_err(any)?;
        txn.set_durability(Durability::Immediate).map_err(any)?;
        {
            if let Some(purged) = purged {
                txn.open_table(META)
                    .map_err(any)?
                    .insert(PURGED, purged)
                    .map_err(any)?;
            }
            let mut table = txn.open_table(ENTRIES).map_err(any)?;
            table
                .retain_in::<u64, _>(range, |_, _| false)
                .map_err(any)?;
        }
        txn.commit().map_err(any)
    }
}

impl RaftLogReader<StrewRaft> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<StrewRaft>>, StorageError<RaftId>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        let db = self.db.clone();
        blocking(move || Self::entries(&db, bounds).map_err(StorageIOError::read_logs)).await
    }
}

impl RaftLogStorage<StrewRaft> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<StrewRaft>, StorageError<RaftId>> {
        let db = self.db.clone();
        blocking(move || {
            let purged: Option<LogId<RaftId>> =
                Self::read_meta(&db, PURGED).map_err(StorageIOError::read_logs)?;
            let last = Self::last_entry(&db)
                .map_err(StorageIOError::read_logs)?
                .map(|e| e.log_id);
            Ok(LogState {
                last_purged_log_id: purged,
                last_log_id: last.or(purged),
            })
        })
        .await
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError<RaftId>> {
        let bytes = encode(vote).map_err(StorageIOError::write_vote)?;
        let db = self.db.clone();
        blocking(move || Self::write_meta(&db, VOTE, &bytes).map_err(StorageIOError::write_vote))
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError<RaftId>> {
        let db = self.db.clone();
        blocking(move || Self::read_meta(&db, VOTE).map_err(StorageIOError::read_vote)).await
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<RaftId>>,
    ) -> Result<(), StorageError<RaftId>> {
        let bytes = encode(&committed).map_err(StorageIOError::write)?;
        let db = self.db.clone();
        blocking(move || Self::write_meta(&db, COMMITTED, &bytes).map_err(StorageIOError::write))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, StorageError<RaftId>> {
        let db = self.db.clone();
        blocking(move || {
            let committed: Option<Option<LogId<RaftId>>> =
                Self::read_meta(&db, COMMITTED).map_err(StorageIOError::read)?;
            Ok(committed.flatten())
        })
        .await
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<StrewRaft>,
    ) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<StrewRaft>> + Send,
        I::IntoIter: Send,
    {
        let mut rows = Vec::new();
        for entry in entries {
            let bytes =
                encode(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, e))?;
            rows.push((entry.log_id.index, bytes));
        }
        let db = self.db.clone();
        let written = tokio::task::spawn_blocking(move || Self::append_all(&db, &rows)).await;
        let result = match written {
            Ok(result) => result,
            Err(join) => Err(any(join)),
        };
        match result {
            Ok(()) => {
                // Durable: only now may openraft count these entries.
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        let db = self.db.clone();
        blocking(move || {
            Self::remove(&db, (Bound::Included(log_id.index), Bound::Unbounded), None)
                .map_err(StorageIOError::write_logs)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        let bytes = encode(&log_id).map_err(StorageIOError::write_logs)?;
        let db = self.db.clone();
        blocking(move || {
            Self::remove(
                &db,
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some(&bytes),
            )
            .map_err(StorageIOError::write_logs)
        })
        .await
    }
}
