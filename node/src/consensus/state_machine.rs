//! The replicated state machine: openraft's view of this member's
//! [`ManagerReplica`].
//!
//! Owns [`StateMachine`] (openraft's `RaftStateMachine`) and its snapshot
//! builder, as a thin adapter: committed entries go to
//! [`ManagerReplica::apply_batch`] on a blocking thread (one durable redb
//! transaction per applied batch, written with the replication position,
//! so a restart never re-applies or skips an entry); installing a snapshot
//! replaces the replica's state at once. A write that fails is a storage
//! error: openraft stops this member, and a restart resumes from what the
//! disk holds.
//!
//! Snapshots are never kept. The replica's durable state already is one, so
//! building a snapshot (which openraft does every `snapshot_every` entries,
//! keeping only its meta, to know how far the log may be trimmed) records
//! the position applied and encodes nothing. The image a follower needs (the
//! whole `ManagerState` plus its position, as CBOR) is made when openraft
//! asks for the current snapshot, at the position applied then, which is at
//! least the last one built. A manager of a million chunk records thus
//! neither holds a copy of its state as bytes nor encodes one every few
//! thousand entries under the read lock.

// openraft's error types are large and its traits return them by value.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use strew_coordinator::cbor;

use super::replica::{ManagerReplica, SnapshotImage};
use super::types::{Member, Outcome, RaftId, StrewRaft};

pub use super::replica::{ReplicaError as StateMachineError, ReplicationPosition};

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
}

impl StateMachine {
    pub fn new(replica: Arc<ManagerReplica>) -> StateMachine {
        StateMachine { replica }
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            replica: self.replica.clone(),
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
        drop(bytes);
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
        .await
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<StrewRaft>>, StorageError<RaftId>> {
        if self.replica.position().last_applied.is_none() {
            return Ok(None);
        }
        let replica = self.replica.clone();
        let (position, bytes) = blocking(move || {
            replica
                .image()
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))
        })
        .await?;
        Ok(Some(Snapshot {
            meta: snapshot_meta(position),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}

/// The meta of a snapshot at `position` (a fresh id each time: two images
/// at one position are equal, but their ids need not be).
fn snapshot_meta(position: ReplicationPosition) -> SnapshotMeta<RaftId, Member> {
    let snapshot_id = match &position.last_applied {
        Some(id) => format!(
            "{}-{}-{:016x}",
            id.leader_id,
            id.index,
            rand::random::<u64>()
        ),
        None => format!("empty-{:016x}", rand::random::<u64>()),
    };
    SnapshotMeta {
        last_log_id: position.last_applied,
        last_membership: position.membership,
        snapshot_id,
    }
}

/// Records a snapshot at the position applied (see the module's doc: the
/// durable state is the snapshot; openraft keeps only the meta of what is
/// built, so its data is left empty).
pub struct SnapshotBuilder {
    replica: Arc<ManagerReplica>,
}

impl RaftSnapshotBuilder<StrewRaft> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<StrewRaft>, StorageError<RaftId>> {
        Ok(Snapshot {
            meta: snapshot_meta(self.replica.position()),
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}
