//! This member's applied copy of the sequence manager: the coordinator's
//! pure [`Manager`] and the replication position it has reached, in memory,
//! mirrored to redb ([`super::manager_db`]).
//!
//! Owns [`ManagerReplica`]: the manager service reads it (`read`, shared,
//! never across an await); only the raft state machine changes it, one
//! committed batch at a time: every entry of the batch is applied in memory
//! under the write lock, the touched records are encoded, the lock is
//! released, and only then is the batch written and fsynced. A plan being
//! decided never waits for a disk write. Also owns
//! [`ReplicationPosition`] (last applied log id, membership, group key) and
//! the snapshot image (the whole state plus its position, as CBOR).

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use ed25519_dalek::SigningKey;
use openraft::{EntryPayload, LogId, StoredMembership};
use serde::{Deserialize, Serialize};
use strew_coordinator::{
    Applied, ApplyError, CborError, GroupKey, Manager, ManagerConfig, ManagerState, Touched,
    TrustState, cbor,
};

use super::manager_db::{Batch, ManagerDb, StoreError};
use super::types::{Member, Outcome, Proposal, RaftId, StrewRaft};
use crate::sync::{lock, read, write};

/// What the state machine records next to the manager's records, in the
/// same transaction: how far the log has been applied, the membership in
/// force, and the group's sealing key once one is committed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReplicationPosition {
    pub last_applied: Option<LogId<RaftId>>,
    pub membership: StoredMembership<RaftId, Member>,
    pub group_key: Option<GroupKey>,
    /// The grid root and the certified coordinators (absent from positions
    /// written before the trust root existed: none).
    #[serde(default)]
    pub trust: TrustState,
}

/// Failures of the applied state.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("the manager database {path} cannot be opened")]
    Open {
        path: PathBuf,
        #[source]
        source: StoreError,
    },
    #[error("the manager's replication position does not decode")]
    Position(#[source] CborError),
    #[error("the manager's state cannot be encoded")]
    Encode(#[source] CborError),
    #[error("a snapshot does not decode")]
    Snapshot(#[source] CborError),
    #[error("writing the applied state failed")]
    Write(#[source] StoreError),
    #[error("opening the manager database was interrupted")]
    Interrupted,
}

/// A snapshot's contents.
#[derive(Deserialize)]
pub struct SnapshotImage {
    pub position: ReplicationPosition,
    pub state: ManagerState,
}

/// [`SnapshotImage`] borrowed, for writing it without copying the state.
#[derive(Serialize)]
struct SnapshotImageRef<'a> {
    position: &'a ReplicationPosition,
    state: &'a ManagerState,
}

struct AppliedState {
    manager: Manager,
    position: ReplicationPosition,
}

/// The manager as this member applied the log.
pub struct ManagerReplica {
    applied: RwLock<AppliedState>,
    /// Only the state machine writes, one batch at a time.
    db: Mutex<ManagerDb>,
}

impl ManagerReplica {
    /// Opens (or creates) the manager database at `path` and loads it, on a
    /// blocking thread. `local_key` seals until the group's key is known.
    pub async fn open(
        path: &Path,
        identity: SigningKey,
        local_key: GroupKey,
        config: ManagerConfig,
    ) -> Result<ManagerReplica, ReplicaError> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, identity, local_key, config))
            .await
            .map_err(|_| ReplicaError::Interrupted)?
    }

    /// [`open`](Self::open) on the calling thread.
    pub fn open_blocking(
        path: &Path,
        identity: SigningKey,
        local_key: GroupKey,
        config: ManagerConfig,
    ) -> Result<ManagerReplica, ReplicaError> {
        let (db, loaded) = ManagerDb::open(path).map_err(|source| ReplicaError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let position: ReplicationPosition = match &loaded.position {
            Some(bytes) => cbor::decode(bytes).map_err(ReplicaError::Position)?,
            None => ReplicationPosition::default(),
        };
        let key = position.group_key.clone().unwrap_or(local_key);
        let manager = Manager::from_state(loaded.state, identity, key, config);
        Ok(ManagerReplica {
            applied: RwLock::new(AppliedState { manager, position }),
            db: Mutex::new(db),
        })
    }

    /// Runs `f` on the applied manager (a shared read; never hold it across an await).
    pub fn read<T>(&self, f: impl FnOnce(&Manager) -> T) -> T {
        f(&read(&self.applied).manager)
    }

    /// The replication position reached.
    pub fn position(&self) -> ReplicationPosition {
        read(&self.applied).position.clone()
    }

    /// Whether a group sealing key has been committed and applied here.
    pub fn has_group_key(&self) -> bool {
        read(&self.applied).position.group_key.is_some()
    }

    /// The replicated trust root and certified coordinators.
    pub fn trust(&self) -> TrustState {
        read(&self.applied).position.trust.clone()
    }

    /// Runs `f` on the replicated trust state (never hold it across an await).
    pub fn read_trust<T>(&self, f: impl FnOnce(&TrustState) -> T) -> T {
        f(&read(&self.applied).position.trust)
    }

    /// Applies committed entries in memory, then writes them in one durable
    /// transaction with the position (blocking: call on a blocking thread).
    pub fn apply_batch(
        &self,
        entries: Vec<openraft::Entry<StrewRaft>>,
    ) -> Result<Vec<Outcome>, ReplicaError> {
        let (outcomes, batch) = {
            let mut guard = write(&self.applied);
            let applied = &mut *guard;
            let mut touched = Touched::default();
            let mut outcomes = Vec::with_capacity(entries.len());
            for entry in entries {
                outcomes.push(apply_one(applied, entry, &mut touched));
            }
            let position = cbor::encode(&applied.position).map_err(ReplicaError::Encode)?;
            let batch = Batch::collect(applied.manager.state(), &touched, position)
                .map_err(ReplicaError::Write)?;
            (outcomes, batch)
        };
        // The manager is free again: readers go on while the disk works.
        lock(&self.db).write(&batch).map_err(ReplicaError::Write)?;
        Ok(outcomes)
    }

    /// The whole state and its position as CBOR (a snapshot), with the position.
    pub fn image(&self) -> Result<(ReplicationPosition, Vec<u8>), ReplicaError> {
        let guard = read(&self.applied);
        let bytes = cbor::encode(&SnapshotImageRef {
            position: &guard.position,
            state: guard.manager.state(),
        })
        .map_err(ReplicaError::Encode)?;
        Ok((guard.position.clone(), bytes))
    }

    /// Replaces the whole state with a snapshot's (blocking: writes it durably
    /// first, then swaps it in memory).
    pub fn install(&self, image: SnapshotImage) -> Result<(), ReplicaError> {
        let position = cbor::encode(&image.position).map_err(ReplicaError::Encode)?;
        lock(&self.db)
            .replace(&image.state, &position)
            .map_err(ReplicaError::Write)?;
        let mut guard = write(&self.applied);
        guard.manager.replace_state(image.state);
        if let Some(key) = &image.position.group_key {
            guard.manager.set_group_key(key.clone());
        }
        guard.position = image.position;
        Ok(())
    }
}

/// Applies one entry in memory; the position moves to it whatever the outcome.
fn apply_one(
    applied: &mut AppliedState,
    entry: openraft::Entry<StrewRaft>,
    touched: &mut Touched,
) -> Outcome {
    let log_id = entry.log_id;
    applied.position.last_applied = Some(log_id);
    match entry.payload {
        EntryPayload::Blank => Outcome::Applied(Applied::Done),
        EntryPayload::Membership(membership) => {
            applied.position.membership = StoredMembership::new(Some(log_id), membership);
            Outcome::Applied(Applied::Done)
        }
        EntryPayload::Normal(Proposal::SetGroupKey(key)) => {
            if applied.position.group_key.is_some() {
                Outcome::Rejected(ApplyError::Invalid("the group key is already set".into()))
            } else {
                applied.manager.set_group_key(key.clone());
                applied.position.group_key = Some(key);
                Outcome::Applied(Applied::Done)
            }
        }
        EntryPayload::Normal(Proposal::Trust(command)) => {
            match applied.position.trust.apply(&command) {
                Ok(()) => Outcome::Applied(Applied::Done),
                Err(e) => Outcome::Rejected(ApplyError::Invalid(format!("trust: {e}"))),
            }
        }
        EntryPayload::Normal(Proposal::Manager(command)) => match applied.manager.apply(&command) {
            Ok(effects) => {
                touched.merge(effects.touched);
                Outcome::Applied(effects.applied)
            }
            Err(e) => Outcome::Rejected(e),
        },
        EntryPayload::Normal(Proposal::Batch(commands)) => {
            let mut rejected = Vec::new();
            for command in &commands {
                match applied.manager.apply(command) {
                    Ok(effects) => touched.merge(effects.touched),
                    Err(e) => rejected.push(e),
                }
            }
            match rejected.first() {
                None => Outcome::Applied(Applied::Done),
                Some(first) => Outcome::Rejected(ApplyError::Invalid(format!(
                    "{} of {} commands did not apply; the first: {first}",
                    rejected.len(),
                    commands.len()
                ))),
            }
        }
    }
}
