//! The replicated state machine: committed log entries applied to the
//! sequence manager.
//!
//! Owns [`StateMachine`] (openraft's `RaftStateMachine`) and its snapshot
//! builder. Each committed [`Proposal::Manager`] command goes through
//! `Manager::execute_at`, which writes the changed records *and* this
//! module's [`ReplicationPosition`] (last applied log id, membership, group
//! key) in one durable redb transaction, so a restart never re-applies or
//! skips an entry. A snapshot is the whole `ManagerState` plus that position,
//! as CBOR; installing one replaces the manager's state at once. The
//! [`Manager`] lives in an `Arc<Mutex<_>>` shared with the manager service,
//! which reads it; only this module changes it. redb is synchronous, so every
//! manager call runs on tokio's blocking pool.

// openraft's error types are large and its traits return them by value.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};
use strew_coordinator::{Applied, GroupKey, Manager, ManagerError, ManagerState};

use super::types::{Member, Outcome, Proposal, RaftId, StrewRaft};

/// What the state machine records next to the manager's records, in the
/// same transaction: how far the log has been applied, the membership in
/// force, and the group's sealing key once one is committed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationPosition {
    pub last_applied: Option<LogId<RaftId>>,
    pub membership: StoredMembership<RaftId, Member>,
    pub group_key: Option<GroupKey>,
}

impl ReplicationPosition {
    fn to_bytes(&self) -> Result<Vec<u8>, AnyError> {
        let mut out = Vec::new();
        ciborium::into_writer(self, &mut out).map_err(|e| AnyError::new(&e))?;
        Ok(out)
    }
}

/// The manager's position cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum StateMachineError {
    #[error(transparent)]
    Manager(#[from] ManagerError),
    #[error("the manager's replication position does not decode: {0}")]
    Position(String),
    #[error("the manager lock is poisoned (a panic while applying)")]
    Poisoned,
}

/// Reads the replication position the manager holds (default before any entry).
pub fn read_position(manager: &Manager) -> Result<ReplicationPosition, StateMachineError> {
    match manager.replication_position()? {
        Some(bytes) => ciborium::from_reader(bytes.as_slice())
            .map_err(|e| StateMachineError::Position(e.to_string())),
        None => Ok(ReplicationPosition::default()),
    }
}

/// A snapshot's contents.
#[derive(Deserialize)]
struct SnapshotImage {
    position: ReplicationPosition,
    state: ManagerState,
}

/// [`SnapshotImage`] borrowed, for writing it without copying the state.
#[derive(Serialize)]
struct SnapshotImageRef<'a> {
    position: &'a ReplicationPosition,
    state: &'a ManagerState,
}

/// The last snapshot built or installed: its meta and CBOR bytes.
#[derive(Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Member>,
    bytes: Vec<u8>,
}

type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, StorageIOError<RaftId>> {
    m.lock().map_err(|_| {
        StorageIOError::write_state_machine(AnyError::new(&StateMachineError::Poisoned))
    })
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

/// The raft state machine over a shared [`Manager`].
pub struct StateMachine {
    manager: Shared<Manager>,
    position: ReplicationPosition,
    current: Shared<Option<StoredSnapshot>>,
}

impl StateMachine {
    /// Wraps `manager`, reading back how far it has applied the log. A group
    /// key already committed replaces the manager's own.
    pub fn new(manager: Shared<Manager>) -> Result<StateMachine, StateMachineError> {
        let position = {
            let mut guard = manager.lock().map_err(|_| StateMachineError::Poisoned)?;
            let position = read_position(&guard)?;
            if let Some(key) = &position.group_key {
                guard.set_group_key(key.clone());
            }
            position
        };
        Ok(StateMachine {
            manager,
            position,
            current: Arc::new(Mutex::new(None)),
        })
    }

    /// The manager this state machine applies to.
    pub fn manager(&self) -> Shared<Manager> {
        self.manager.clone()
    }

    fn builder(&self) -> SnapshotBuilder {
        SnapshotBuilder {
            manager: self.manager.clone(),
            current: self.current.clone(),
        }
    }
}

/// Applies one entry; the position moves to it whatever the outcome.
fn apply_one(
    manager: &mut Manager,
    position: &mut ReplicationPosition,
    entry: Entry<StrewRaft>,
) -> Result<Outcome, StorageIOError<RaftId>> {
    let log_id = entry.log_id;
    let fail = |e: AnyError| StorageIOError::apply(log_id, e);
    position.last_applied = Some(log_id);
    let outcome = match entry.payload {
        EntryPayload::Blank => Outcome::Applied(Applied::Done),
        EntryPayload::Membership(membership) => {
            position.membership = StoredMembership::new(Some(log_id), membership);
            Outcome::Applied(Applied::Done)
        }
        EntryPayload::Normal(Proposal::SetGroupKey(key)) => {
            if position.group_key.is_some() {
                Outcome::Rejected("the group key is already set".into())
            } else {
                manager.set_group_key(key.clone());
                position.group_key = Some(key);
                Outcome::Applied(Applied::Done)
            }
        }
        EntryPayload::Normal(Proposal::Manager(command)) => {
            let bytes = position.to_bytes().map_err(fail)?;
            return match manager.execute_at(command, &bytes) {
                Ok(applied) => Ok(Outcome::Applied(applied)),
                Err(ManagerError::Apply(e)) => Ok(Outcome::Rejected(e.to_string())),
                Err(e) => Err(fail(AnyError::new(&e))),
            };
        }
    };
    let bytes = position.to_bytes().map_err(fail)?;
    manager
        .set_replication_position(&bytes)
        .map_err(|e| fail(AnyError::new(&e)))?;
    Ok(outcome)
}

impl RaftStateMachine<StrewRaft> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Member>), StorageError<RaftId>>
    {
        Ok((self.position.last_applied, self.position.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<StrewRaft>> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry<StrewRaft>> = entries.into_iter().collect();
        let manager = self.manager.clone();
        let mut position = self.position.clone();
        let (outcomes, position) = blocking(move || {
            let mut guard = lock(&manager)?;
            let mut outcomes = Vec::with_capacity(entries.len());
            for entry in entries {
                outcomes.push(apply_one(&mut guard, &mut position, entry)?);
            }
            Ok((outcomes, position))
        })
        .await?;
        self.position = position;
        Ok(outcomes)
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
        let image: SnapshotImage = ciborium::from_reader(bytes.as_slice())
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
        let position = image.position.clone();
        let position_bytes = position
            .to_bytes()
            .map_err(|e| StorageIOError::write_snapshot(signature.clone(), e))?;
        let manager = self.manager.clone();
        let sig = signature.clone();
        blocking(move || {
            let mut guard = lock(&manager)?;
            guard
                .replace_state(image.state, &position_bytes)
                .map_err(|e| StorageIOError::write_snapshot(sig, AnyError::new(&e)))?;
            if let Some(key) = &image.position.group_key {
                guard.set_group_key(key.clone());
            }
            Ok(())
        })
        .await?;
        self.position = position;
        *lock(&self.current)? = Some(StoredSnapshot {
            meta: meta.clone(),
            bytes,
        });
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<StrewRaft>>, StorageError<RaftId>> {
        let cached = lock(&self.current)?.clone();
        let stored = match cached {
            Some(stored) => stored,
            // None built since this process started: the durable state is one.
            None if self.position.last_applied.is_some() => {
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

/// Builds a snapshot of the manager's state under its lock, so the state and
/// the position in it describe the same log index.
pub struct SnapshotBuilder {
    manager: Shared<Manager>,
    current: Shared<Option<StoredSnapshot>>,
}

impl RaftSnapshotBuilder<StrewRaft> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<StrewRaft>, StorageError<RaftId>> {
        let manager = self.manager.clone();
        let (position, bytes) = blocking(move || {
            let guard = lock(&manager)?;
            let position = read_position(&guard)
                .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
            let mut bytes = Vec::new();
            ciborium::into_writer(
                &SnapshotImageRef {
                    position: &position,
                    state: guard.state(),
                },
                &mut bytes,
            )
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
            Ok((position, bytes))
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
        *lock(&self.current)? = Some(StoredSnapshot {
            meta: meta.clone(),
            bytes: bytes.clone(),
        });
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}
