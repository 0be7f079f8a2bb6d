//! Durable manager state in one redb database.
//!
//! Owns the table layout (one versioned table per record kind: the six
//! records of SPEC R3 plus snapshots, pending backups, counters and the
//! applied command log), the schema version check, loading the whole
//! [`ManagerState`] on open, and writing exactly the records a command
//! touched — together with the command itself — in one durable transaction.
//! It also keeps one opaque blob for a consensus layer (its replication
//! position: last applied log id, membership, group key) written in the same
//! transaction as the state it describes, and can replace the whole state at
//! once (a consensus snapshot being installed). Values are CBOR (ciborium). This module must not decide anything: it only
//! mirrors what [`ManagerState::apply`] did.

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::state::{Command, ManagerState, Touched};

/// The layout version this code writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta-v1");
const MODE: TableDefinition<&str, &[u8]> = TableDefinition::new("grid-mode-v1");
/// Global client profile.
const CLIENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("clients-v1");
/// Source client profile.
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("source-profiles-v1");
/// Source data record (per chunk: its packets and their targets).
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("source-data-v1");
/// Target data record.
const TARGETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("target-data-v1");
/// Data assembly record.
const ASSEMBLIES: TableDefinition<u64, &[u8]> = TableDefinition::new("assembly-v1");
/// Global backup log (append-only).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("backup-log-v1");
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots-v1");
const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending-v1");
/// Every applied command, by index (what a consensus log would replay).
const COMMANDS: TableDefinition<u64, &[u8]> = TableDefinition::new("commands-v1");
/// The consensus layer's replication position (opaque bytes under one key).
const REPLICATION: TableDefinition<&str, &[u8]> = TableDefinition::new("replication-v1");
const REPLICATION_KEY: &str = "position";

/// Failures of the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("metadata database error")]
    Db(#[source] redb::Error),
    #[error(
        "metadata database has schema version {found}; this build reads version {SCHEMA_VERSION}"
    )]
    Schema { found: u64 },
    #[error("record in table {table} does not decode: {message}")]
    Decode {
        table: &'static str,
        message: String,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.into())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    if ciborium::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Decode {
        table,
        message: e.to_string(),
    })
}

/// The manager's database.
pub struct Store {
    db: Database,
    applied: u64,
}

impl Store {
    /// Opens (or creates) the database and loads the state it holds.
    pub fn open(path: &Path) -> Result<(Store, ManagerState), StoreError> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema")?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) => return Err(StoreError::Schema { found }),
            }
            // Create every table so readers never meet a missing one.
            txn.open_table(MODE)?;
            txn.open_table(CLIENTS)?;
            txn.open_table(PROFILES)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(TARGETS)?;
            txn.open_table(ASSEMBLIES)?;
            txn.open_table(LOG)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(PENDING)?;
            txn.open_table(COMMANDS)?;
            txn.open_table(REPLICATION)?;
        }
        txn.commit()?;
        let (state, applied) = Self::load(&db)?;
        Ok((Store { db, applied }, state))
    }

    fn load(db: &Database) -> Result<(ManagerState, u64), StoreError> {
        let txn = db.begin_read()?;
        let mut state = ManagerState::default();
        let meta = txn.open_table(META)?;
        let counter = |name: &str| -> Result<u64, StoreError> {
            Ok(meta.get(name)?.map(|v| v.value()).unwrap_or(0))
        };
        state.next_pending = counter("next_pending")?;
        state.next_assembly = counter("next_assembly")?;
        let applied = counter("applied")?;
        if let Some(mode) = txn.open_table(MODE)?.get("mode")? {
            state.mode = decode("grid-mode-v1", mode.value())?;
        }
        for row in txn.open_table(CLIENTS)?.iter()? {
            let (_, v) = row?;
            let record: crate::records::ClientRecord = decode("clients-v1", v.value())?;
            state.clients.insert(record.profile.node_id, record);
        }
        for row in txn.open_table(PROFILES)?.iter()? {
            let (k, v) = row?;
            state.profiles.insert(
                k.value().to_string(),
                decode("source-profiles-v1", v.value())?,
            );
        }
        for row in txn.open_table(CHUNKS)?.iter()? {
            let (_, v) = row?;
            let record: crate::records::ChunkRecord = decode("source-data-v1", v.value())?;
            state.chunks.insert(record.data_id, record);
        }
        for row in txn.open_table(TARGETS)?.iter()? {
            let (k, v) = row?;
            let id: [u8; 32] = k.value().try_into().map_err(|_| StoreError::Decode {
                table: "target-data-v1",
                message: "key is not 32 bytes".into(),
            })?;
            state
                .targets
                .insert(crate::ids::NodeId(id), decode("target-data-v1", v.value())?);
        }
        for row in txn.open_table(SNAPSHOTS)?.iter()? {
            let (_, v) = row?;
            let record: crate::records::SnapshotRecord = decode("snapshots-v1", v.value())?;
            state.snapshots.insert(record.id, record);
        }
        for row in txn.open_table(PENDING)?.iter()? {
            let (k, v) = row?;
            state
                .pending
                .insert(k.value(), decode("pending-v1", v.value())?);
        }
        for row in txn.open_table(ASSEMBLIES)?.iter()? {
            let (k, v) = row?;
            state
                .assemblies
                .insert(k.value(), decode("assembly-v1", v.value())?);
        }
        for row in txn.open_table(LOG)?.iter()? {
            let (_, v) = row?;
            state.log.push(decode("backup-log-v1", v.value())?);
        }
        Ok((state, applied))
    }

    /// Reloads the state as the database holds it (after a failed write).
    pub fn reload(&mut self) -> Result<ManagerState, StoreError> {
        let (state, applied) = Self::load(&self.db)?;
        self.applied = applied;
        Ok(state)
    }

    /// Number of commands applied and persisted so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Writes `command` and every record it touched, durably, in one transaction.
    pub fn persist(
        &mut self,
        state: &ManagerState,
        touched: &Touched,
        command: &Command,
    ) -> Result<(), StoreError> {
        self.persist_at(state, touched, command, None)
    }

    /// [`persist`](Self::persist), and in the same transaction records the
    /// consensus layer's replication position (when given).
    pub fn persist_at(
        &mut self,
        state: &ManagerState,
        touched: &Touched,
        command: &Command,
        position: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        let index = self.applied + 1;
        {
            if let Some(position) = position {
                txn.open_table(REPLICATION)?
                    .insert(REPLICATION_KEY, position)?;
            }
            txn.open_table(COMMANDS)?
                .insert(index, command.to_bytes().as_slice())?;
            let mut meta = txn.open_table(META)?;
            meta.insert("applied", index)?;
            if touched.counters {
                meta.insert("next_pending", state.next_pending)?;
                meta.insert("next_assembly", state.next_assembly)?;
            }
            if touched.mode {
                txn.open_table(MODE)?
                    .insert("mode", encode(&state.mode).as_slice())?;
            }
            let mut clients = txn.open_table(CLIENTS)?;
            for id in &touched.clients {
                match state.clients.get(id) {
                    Some(r) => clients.insert(id.as_bytes().as_slice(), encode(r).as_slice())?,
                    None => clients.remove(id.as_bytes().as_slice())?,
                };
            }
            let mut profiles = txn.open_table(PROFILES)?;
            for key in &touched.profiles {
                match state.profiles.get(key) {
                    Some(r) => profiles.insert(key.as_str(), encode(r).as_slice())?,
                    None => profiles.remove(key.as_str())?,
                };
            }
            let mut chunks = txn.open_table(CHUNKS)?;
            for id in &touched.chunks {
                match state.chunks.get(id) {
                    Some(r) => chunks.insert(id.as_bytes().as_slice(), encode(r).as_slice())?,
                    None => chunks.remove(id.as_bytes().as_slice())?,
                };
            }
            let mut targets = txn.open_table(TARGETS)?;
            for id in &touched.targets {
                match state.targets.get(id) {
                    Some(r) => targets.insert(id.as_bytes().as_slice(), encode(r).as_slice())?,
                    None => targets.remove(id.as_bytes().as_slice())?,
                };
            }
            let mut snapshots = txn.open_table(SNAPSHOTS)?;
            for id in &touched.snapshots {
                match state.snapshots.get(id) {
                    Some(r) => snapshots.insert(id.as_bytes().as_slice(), encode(r).as_slice())?,
                    None => snapshots.remove(id.as_bytes().as_slice())?,
                };
            }
            let mut pending = txn.open_table(PENDING)?;
            for id in &touched.pending {
                match state.pending.get(id) {
                    Some(r) => pending.insert(*id, encode(r).as_slice())?,
                    None => pending.remove(*id)?,
                };
            }
            let mut assemblies = txn.open_table(ASSEMBLIES)?;
            for id in &touched.assemblies {
                if let Some(r) = state.assemblies.get(id) {
                    assemblies.insert(*id, encode(r).as_slice())?;
                }
            }
            if let Some(from) = touched.log_from {
                let mut log = txn.open_table(LOG)?;
                for event in state.log.iter().skip(from as usize) {
                    log.insert(event.seq, encode(event).as_slice())?;
                }
            }
        }
        txn.commit()?;
        self.applied = index;
        Ok(())
    }

    /// The consensus layer's replication position, as last written.
    pub fn replication_position(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(REPLICATION)?;
        Ok(table.get(REPLICATION_KEY)?.map(|v| v.value().to_vec()))
    }

    /// Records only the replication position, durably (an entry that changed
    /// no record: a rejected command, a membership change).
    pub fn set_replication_position(&mut self, position: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        txn.open_table(REPLICATION)?
            .insert(REPLICATION_KEY, position)?;
        txn.commit()?;
        Ok(())
    }

    /// Replaces everything the database holds with `state` and `position`, in
    /// one durable transaction (a consensus snapshot being installed). The
    /// command log restarts empty: the state no longer derives from it.
    pub fn replace(&mut self, state: &ManagerState, position: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("applied", 0)?;
            meta.insert("next_pending", state.next_pending)?;
            meta.insert("next_assembly", state.next_assembly)?;
            let mut mode = txn.open_table(MODE)?;
            mode.retain(|_, _| false)?;
            mode.insert("mode", encode(&state.mode).as_slice())?;
            let mut clients = txn.open_table(CLIENTS)?;
            clients.retain(|_, _| false)?;
            for (id, r) in &state.clients {
                clients.insert(id.as_bytes().as_slice(), encode(r).as_slice())?;
            }
            let mut profiles = txn.open_table(PROFILES)?;
            profiles.retain(|_, _| false)?;
            for (key, r) in &state.profiles {
                profiles.insert(key.as_str(), encode(r).as_slice())?;
            }
            let mut chunks = txn.open_table(CHUNKS)?;
            chunks.retain(|_, _| false)?;
            for (id, r) in &state.chunks {
                chunks.insert(id.as_bytes().as_slice(), encode(r).as_slice())?;
            }
            let mut targets = txn.open_table(TARGETS)?;
            targets.retain(|_, _| false)?;
            for (id, r) in &state.targets {
                targets.insert(id.as_bytes().as_slice(), encode(r).as_slice())?;
            }
            let mut snapshots = txn.open_table(SNAPSHOTS)?;
            snapshots.retain(|_, _| false)?;
            for (id, r) in &state.snapshots {
                snapshots.insert(id.as_bytes().as_slice(), encode(r).as_slice())?;
            }
            let mut pending = txn.open_table(PENDING)?;
            pending.retain(|_, _| false)?;
            for (id, r) in &state.pending {
                pending.insert(*id, encode(r).as_slice())?;
            }
            let mut assemblies = txn.open_table(ASSEMBLIES)?;
            assemblies.retain(|_, _| false)?;
            for (id, r) in &state.assemblies {
                assemblies.insert(*id, encode(r).as_slice())?;
            }
            let mut log = txn.open_table(LOG)?;
            log.retain(|_, _| false)?;
            for event in &state.log {
                log.insert(event.seq, encode(event).as_slice())?;
            }
            txn.open_table(COMMANDS)?.retain(|_, _| false)?;
            txn.open_table(REPLICATION)?
                .insert(REPLICATION_KEY, position)?;
        }
        txn.commit()?;
        self.applied = 0;
        Ok(())
    }

    /// The applied commands from `from` (1-based) on, in order: what a new replica replays.
    pub fn commands_since(&self, from: u64) -> Result<Vec<Command>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(COMMANDS)?;
        let mut out = Vec::new();
        for row in table.range(from..)? {
            let (_, v) = row?;
            out.push(
                Command::from_bytes(v.value()).map_err(|e| StoreError::Decode {
                    table: "commands-v1",
                    message: e.to_string(),
                })?,
            );
        }
        Ok(out)
    }
}
