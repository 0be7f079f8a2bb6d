//! The replicated state machine: openraft's view of this member's
//! [`ManagerReplica`].
//!
//! Owns [`StateMachine`] (openraft's `RaftStateMachine`) and its snapshot
//! builder, as a thin adapter: committed entries go to
//! [`ManagerReplica::apply_batch`] on a blocking thread (one durable redb
//! transaction per applied batch, written with the replication position,
//! so a restart never re-applies or skips an entry); a snapshot is the
//! replica's image (the whole `ManagerState` plus that position, as CBOR);
//! installing one replaces the replica's state at once. A write that fails
//! is a storage error: openraft stops this member, and a restart resumes
//! from what the disk holds.

// openraft's error types are large and its traits return them by value.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use strew_coordinator::cbor;

use super::replica::{ManagerReplica, SnapshotImage};
use super::types::{Member, Outcome, RaftId, StrewRaft};
use crate::sync::lock;

pub use super::replica::{ReplicaError as StateMachineError, ReplicationPosition};

/// The last snapshot built or installed: its meta and CBOR bytes.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Member>,
    bytes: Vec<u8>,
}

async fn blocking<T, F>(f: F) -> Result<T, StorageError<RaftId>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StorageIOError<RaftId>> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(StorageError::from),
        Err(join) => Err(StorageIOError::write_state_machine(AnyError::new(&join)).into()),
    }
}

/// The raft state machine over a shared [`ManagerReplica`].
pub struct StateMachine {
    replica: Arc<ManagerReplica>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl StateMachine {
    pub fn new(replica: Arc<ManagerReplica>) -> StateMachine {
        StateMachine {
            replica,
            current: Arc::new(Mutex::new(None)),
        }
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            replica: self.replica.clone(),
            current: self.current.clone(),
        }
    }
}

impl RaftStateMachine<StrewRaft> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Member>), StorageError<RaftId>>
    {
        let position = self.replica.position();
        Ok((position.last_applied, position.membership))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<StrewRaft>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<StrewRaft>> = entries.into_iter().collect();
        let last = entries.last().map(|e| e.log_id);
        let replica = self.replica.clone();
        blocking(move || {
            replica.apply_batch(entries).map_err(|e| match last {
                Some(log_id) => StorageIOError::apply(log_id, AnyError::new(&e)),
                None => StorageIOError::write_state_machine(AnyError::new(&e)),
            })
        })
        .await
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        self.builder()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<RaftId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<RaftId>> {
        let bytes = snapshot.into_inner();
        let signature = Some(meta.signature());
        let image: SnapshotImage = cbor::decode(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(signature.clone(), AnyError::new(&e)))?;
        if image.position.last_applied != meta.last_log_id {
            return Err(StorageIOError::read_snapshot(
                signature,
                AnyError::error(format!(
                    "snapshot holds state up to {:?}, its meta says {:?}",
                    image.position.last_applied, meta.last_log_id
                )),
            )
            .into());
        }
        let replica = self.replica.clone();
        let sig = signature.clone();
        blocking(move || {
            replica
                .install(image)
                .map_err(|e| StorageIOError::write_snapshot(sig, AnyError::new(&e)))
        })
        .await?;
        *lock(&self.current) = Some(StoredSnapshot {
            meta: meta.clone(),
            bytes,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<StrewRaft>>, StorageError<RaftId>> {
        let cached = lock(&self.current).clone();
        let stored = match cached {
            Some(stored) => stored,
            // None built since this process started: the durable state is one.
            None if self.replica.position().last_applied.is_some() => {
                let built = self.builder().build_snapshot().await?;
                return Ok(Some(built));
            }
            None => return Ok(None),
        };
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.bytes)),
        }))
    }
}

/// Builds a snapshot of the replica's state under its read lock, so the
/// state and the position in it describe the same log index.
pub struct SnapshotBuilder {
    replica: Arc<ManagerReplica>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl RaftSnapshotBuilder<StrewRaft> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<StrewRaft>, StorageError<RaftId>> {
        let replica = self.replica.clone();
        let (position, bytes) = blocking(move || {
            replica
                .image()
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))
        })
        .await?;
        let snapshot_id = match &position.last_applied {
            Some(id) => format!(
                "{}-{}-{:016x}",
                id.leader_id,
                id.index,
                rand::random::<u64>()
            ),
            None => format!("empty-{:016x}", rand::random::<u64>()),
        };
        let meta = SnapshotMeta {
            last_log_id: position.last_applied,
            last_membership: position.membership,
            snapshot_id,
        };
        *lock(&self.current) = Some(StoredSnapshot {
            meta: meta.clone(),
            bytes: bytes.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}
