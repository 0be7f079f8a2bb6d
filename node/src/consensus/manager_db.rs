//! The sequence manager's applied state, durable in one redb database
//! (`DATA_DIR/manager/manager.redb`).
//!
//! Owns the table layout (one versioned table per record kind: the six
//! records of SPEC R3 plus snapshots, pending backups and counters), the
//! schema version check and its migrations, loading the whole
//! [`ManagerState`] on open, and writing exactly the records an applied
//! batch of commands touched — together with the consensus layer's
//! replication position (last applied log id, membership, group key) — in
//! one durable transaction. Rows are encoded by [`Batch::collect`] (under the
//! caller's read of the state, no disk) and written by [`ManagerDb::write`]
//! (disk, no state), so nobody holds the manager while an fsync runs. The
//! raft log and its snapshots are the history: no command log is kept here.
//! This module must not decide anything: it only mirrors what
//! `Manager::apply` did. Target records and pending backups, which grow
//! without bound, are kept one row per element ([`split`]).

mod garbage;
mod split;

use std::path::Path;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;
use strew_coordinator::cbor;
use strew_coordinator::{ManagerState, Touched};

/// The layout version this code writes and reads. Version 1 also kept every
/// applied command (`commands-v1`); opening it drops that table. Version 2
/// kept target records and pending backups whole (`target-data-v1`,
/// `pending-v1`); opening it splits them ([`split::migrate_v2`]).
pub const SCHEMA_VERSION: u64 = 3;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta-v1");
/// The meta row holding `ManagerState::rebuilt_since` (absent: never rebuilt).
const REBUILT_SINCE: &str = "rebuilt_since";

fn write_rebuilt_since(
    meta: &mut redb::Table<&str, u64>,
    since: Option<u64>,
) -> Result<(), redb::StorageError> {
    match since {
        Some(at) => meta.insert(REBUILT_SINCE, at).map(drop),
        None => meta.remove(REBUILT_SINCE).map(drop),
    }
}
const MODE: TableDefinition<&str, &[u8]> = TableDefinition::new("grid-mode-v1");
/// Global client profile.
const CLIENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("clients-v1");
/// Source client profile.
const PROFILES: TableDefinition<&str, &[u8]> = TableDefinition::new("source-profiles-v1");
/// Source data record (per chunk: its packets and their targets).
const CHUNKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("source-data-v1");
/// Data assembly record.
const ASSEMBLIES: TableDefinition<u64, &[u8]> = TableDefinition::new("assembly-v1");
/// Global backup log (append-only).
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("backup-log-v1");
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots-v1");
/// Version 1's command log, dropped on open.
const OLD_COMMANDS: TableDefinition<u64, &[u8]> = TableDefinition::new("commands-v1");
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
    #[error("a record for table {table} does not encode")]
    Encode {
        table: &'static str,
        #[source]
        source: cbor::CborError,
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

fn encode<T: Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    cbor::encode(value).map_err(|source| StoreError::Encode { table, source })
}

fn decode<T: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    cbor::decode(bytes).map_err(|e| StoreError::Decode {
        table,
        message: e.to_string(),
    })
}

/// What opening the database found: the state and the replication position
/// last written with it (`None` before any entry was applied).
pub struct Loaded {
    pub state: ManagerState,
    pub position: Option<Vec<u8>>,
}

/// One table's rows to write: `(key, Some(value))` to insert, `(key, None)` to remove.
type Rows<K> = Vec<(K, Option<Vec<u8>>)>;

/// The encoded rows of one applied batch, ready to write without the state.
#[derive(Default)]
pub struct Batch {
    /// `next_pending`, `next_assembly`, `rebuilt_since`.
    counters: Option<(u64, u64, Option<u64>)>,
    mode: Option<Vec<u8>>,
    clients: Rows<[u8; 32]>,
    profiles: Rows<String>,
    chunks: Rows<[u8; 32]>,
    snapshots: Rows<[u8; 32]>,
    /// Target records and pending backups.
    split: split::SplitRows,
    /// Collection queue entries.
    garbage: garbage::GarbageRows,
    assemblies: Rows<u64>,
    log: Vec<(u64, Vec<u8>)>,
    log_trimmed_before: Option<u64>,
    position: Vec<u8>,
}

fn rows<'a, K: Ord + 'a, KO, V: Serialize + 'a>(
    table: &'static str,
    keys: impl IntoIterator<Item = &'a K>,
    map: &std::collections::BTreeMap<K, V>,
    key: impl Fn(&K) -> KO,
) -> Result<Rows<KO>, StoreError> {
    keys.into_iter()
        .map(|k| {
            let value = map.get(k).map(|v| encode(table, v)).transpose()?;
            Ok((key(k), value))
        })
        .collect()
}

impl Batch {
    /// Bytes of the encoded rows this batch writes (keys aside): what one
    /// applied batch costs the disk before redb's own overhead.
    pub fn bytes(&self) -> usize {
        fn sum<K>(rows: &Rows<K>) -> usize {
            rows.iter()
                .map(|(_, v)| v.as_ref().map_or(0, Vec::len))
                .sum()
        }
        sum(&self.clients)
            + sum(&self.profiles)
            + sum(&self.chunks)
            + sum(&self.snapshots)
            + sum(&self.assemblies)
            + self.split.bytes()
            + self.garbage.bytes()
            + self.log.iter().map(|(_, v)| v.len()).sum::<usize>()
            + self.mode.as_ref().map_or(0, Vec::len)
    }

    /// The part of [`bytes`](Self::bytes) that target records and pending
    /// backups take.
    pub fn split_bytes(&self) -> usize {
        self.split.bytes()
    }

    /// Encodes the records `touched` names as `state` holds them now, and
    /// the replication position that goes with them. Reads only memory.
    pub fn collect(
        state: &ManagerState,
        touched: &Touched,
        position: Vec<u8>,
    ) -> Result<Batch, StoreError> {
        let log = match touched.log_from {
            Some(from) => state
                .log
                .iter()
                .filter(|e| e.seq >= from)
                .map(|e| Ok((e.seq, encode("backup-log-v1", e)?)))
                .collect::<Result<_, StoreError>>()?,
            None => Vec::new(),
        };
        Ok(Batch {
            counters: touched.counters.then_some((
                state.next_pending,
                state.next_assembly,
                state.rebuilt_since,
            )),
            mode: touched
                .mode
                .then(|| encode("grid-mode-v1", &state.mode))
                .transpose()?,
            clients: rows("clients-v1", &touched.clients, &state.clients, |id| id.0)?,
            profiles: rows(
                "source-profiles-v1",
                &touched.profiles,
                &state.profiles,
                |k| k.clone(),
            )?,
            chunks: rows("source-data-v1", &touched.chunks, &state.chunks, |id| id.0)?,
            snapshots: rows("snapshots-v1", &touched.snapshots, &state.snapshots, |id| {
                id.0
            })?,
            split: split::SplitRows::collect(state, touched)?,
            garbage: garbage::GarbageRows::collect(state, touched),
            // Assembly records are only ever added.
            assemblies: rows(
                "assembly-v1",
                &touched.assemblies,
                &state.assemblies,
                |id| *id,
            )?
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .collect(),
            log,
            log_trimmed_before: touched.log_trimmed_before,
            position,
        })
    }
}

/// The manager's database.
pub struct ManagerDb {
    db: Database,
}

impl ManagerDb {
    /// Opens (or creates, or migrates) the database and loads what it holds.
    pub fn open(path: &Path) -> Result<(ManagerDb, Loaded), StoreError> {
        let db = crate::redb_cache::create(path, crate::redb_cache::MANAGER_CACHE)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get("schema")?.map(|v| v.value());
            match found {
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found @ (1 | 2)) => {
                    if found == 1 {
                        // The raft log and its snapshots are the history now.
                        txn.delete_table(OLD_COMMANDS)?;
                        meta.remove("applied")?;
                    }
                    split::migrate_v2(&txn)?;
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
                Some(found) => return Err(StoreError::Schema { found }),
            }
            // Create every table so readers never meet a missing one.
            txn.open_table(MODE)?;
            txn.open_table(CLIENTS)?;
            txn.open_table(PROFILES)?;
            txn.open_table(CHUNKS)?;
            txn.open_table(split::TARGETS)?;
            txn.open_table(split::TARGET_PACKETS)?;
            txn.open_table(ASSEMBLIES)?;
            txn.open_table(LOG)?;
            txn.open_table(SNAPSHOTS)?;
            txn.open_table(split::PENDING)?;
            txn.open_table(split::PENDING_ITEMS)?;
            txn.open_table(garbage::GARBAGE)?;
            txn.open_table(REPLICATION)?;
        }
        txn.commit()?;
        let loaded = Self::load(&db)?;
        Ok((ManagerDb { db }, loaded))
    }

    fn load(db: &Database) -> Result<Loaded, StoreError> {
        let txn = db.begin_read()?;
        let mut state = ManagerState::default();
        let meta = txn.open_table(META)?;
        let counter = |name: &str| -> Result<u64, StoreError> {
            Ok(meta.get(name)?.map(|v| v.value()).unwrap_or(0))
        };
        state.next_pending = counter("next_pending")?;
        state.next_assembly = counter("next_assembly")?;
        state.rebuilt_since = meta.get(REBUILT_SINCE)?.map(|v| v.value());
        if let Some(mode) = txn.open_table(MODE)?.get("mode")? {
            state.mode = decode("grid-mode-v1", mode.value())?;
        }
        for row in txn.open_table(CLIENTS)?.iter()? {
            let (_, v) = row?;
            let record: strew_coordinator::ClientRecord = decode("clients-v1", v.value())?;
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
            let record: strew_coordinator::ChunkRecord = decode("source-data-v1", v.value())?;
            state.chunks.insert(record.data_id, record);
        }
        split::load(&txn, &mut state)?;
        garbage::load(&txn, &mut state)?;
        for row in txn.open_table(SNAPSHOTS)?.iter()? {
            let (_, v) = row?;
            let record: strew_coordinator::SnapshotRecord = decode("snapshots-v1", v.value())?;
            state.snapshots.insert(record.id, record);
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
        let position = txn
            .open_table(REPLICATION)?
            .get(REPLICATION_KEY)?
            .map(|v| v.value().to_vec());
        Ok(Loaded { state, position })
    }

    /// Writes one applied batch and its replication position, durably, in
    /// one transaction.
    pub fn write(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            txn.open_table(REPLICATION)?
                .insert(REPLICATION_KEY, batch.position.as_slice())?;
            if let Some((next_pending, next_assembly, rebuilt_since)) = batch.counters {
                let mut meta = txn.open_table(META)?;
                meta.insert("next_pending", next_pending)?;
                meta.insert("next_assembly", next_assembly)?;
                write_rebuilt_since(&mut meta, rebuilt_since)?;
            }
            if let Some(mode) = &batch.mode {
                txn.open_table(MODE)?.insert("mode", mode.as_slice())?;
            }
            let mut clients = txn.open_table(CLIENTS)?;
            for (k, v) in &batch.clients {
                match v {
                    Some(v) => clients.insert(k.as_slice(), v.as_slice())?,
                    None => clients.remove(k.as_slice())?,
                };
            }
            let mut profiles = txn.open_table(PROFILES)?;
            for (k, v) in &batch.profiles {
                match v {
                    Some(v) => profiles.insert(k.as_str(), v.as_slice())?,
                    None => profiles.remove(k.as_str())?,
                };
            }
            for (table, rows) in [(CHUNKS, &batch.chunks), (SNAPSHOTS, &batch.snapshots)] {
                let mut table = txn.open_table(table)?;
                for (k, v) in rows {
                    match v {
                        Some(v) => table.insert(k.as_slice(), v.as_slice())?,
                        None => table.remove(k.as_slice())?,
                    };
                }
            }
            batch.split.write(&txn)?;
            batch.garbage.write(&txn)?;
            {
                let mut table = txn.open_table(ASSEMBLIES)?;
                for (k, v) in &batch.assemblies {
                    match v {
                        Some(v) => table.insert(*k, v.as_slice())?,
                        None => table.remove(*k)?,
                    };
                }
            }
            let mut log = txn.open_table(LOG)?;
            if let Some(before) = batch.log_trimmed_before {
                log.retain_in(..before, |_, _| false)?;
            }
            for (seq, event) in &batch.log {
                log.insert(*seq, event.as_slice())?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Replaces everything the database holds with `state` and `position`, in
    /// one durable transaction (a consensus snapshot being installed).
    pub fn replace(&mut self, state: &ManagerState, position: &[u8]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(Durability::Immediate)?;
        {
            let mut meta = txn.open_table(META)?;
            meta.insert("next_pending", state.next_pending)?;
            meta.insert("next_assembly", state.next_assembly)?;
            write_rebuilt_since(&mut meta, state.rebuilt_since)?;
            let mut mode = txn.open_table(MODE)?;
            mode.retain(|_, _| false)?;
            mode.insert("mode", encode("grid-mode-v1", &state.mode)?.as_slice())?;
            let mut clients = txn.open_table(CLIENTS)?;
            clients.retain(|_, _| false)?;
            for (id, r) in &state.clients {
                clients.insert(
                    id.as_bytes().as_slice(),
                    encode("clients-v1", r)?.as_slice(),
                )?;
            }
            let mut profiles = txn.open_table(PROFILES)?;
            profiles.retain(|_, _| false)?;
            for (key, r) in &state.profiles {
                profiles.insert(key.as_str(), encode("source-profiles-v1", r)?.as_slice())?;
            }
            let mut chunks = txn.open_table(CHUNKS)?;
            chunks.retain(|_, _| false)?;
            for (id, r) in &state.chunks {
                chunks.insert(
                    id.as_bytes().as_slice(),
                    encode("source-data-v1", r)?.as_slice(),
                )?;
            }
            split::replace(&txn, state)?;
            garbage::replace(&txn, state)?;
            let mut snapshots = txn.open_table(SNAPSHOTS)?;
            snapshots.retain(|_, _| false)?;
            for (id, r) in &state.snapshots {
                snapshots.insert(
                    id.as_bytes().as_slice(),
                    encode("snapshots-v1", r)?.as_slice(),
                )?;
            }
            let mut assemblies = txn.open_table(ASSEMBLIES)?;
            assemblies.retain(|_, _| false)?;
            for (id, r) in &state.assemblies {
                assemblies.insert(*id, encode("assembly-v1", r)?.as_slice())?;
            }
            let mut log = txn.open_table(LOG)?;
            log.retain(|_, _| false)?;
            for event in &state.log {
                log.insert(event.seq, encode("backup-log-v1", event)?.as_slice())?;
            }
            txn.open_table(REPLICATION)?
                .insert(REPLICATION_KEY, position)?;
        }
        txn.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use strew_coordinator::{
        Command, GeoPoint, GroupKey, Manager, ManagerConfig, NodeId, NodeProfile,
    };

    fn manager() -> Manager {
        Manager::new(
            SigningKey::from_bytes(&[200; 32]),
            GroupKey([7; 32]),
            ManagerConfig::default(),
        )
    }

    fn join(n: u8, at: u64) -> Command {
        let id = NodeId(SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes());
        let location = GeoPoint::new(40.0 + f64::from(n), 2.0).expect("location");
        Command::Join {
            profile: NodeProfile::new(id, location, 1 << 30, 0),
            token: None,
            at,
        }
    }

    /// Backup parameters any placement suits.
    fn params(redundancy: strew_coordinator::Redundancy) -> strew_coordinator::BackupParams {
        strew_coordinator::BackupParams {
            backup_distance: "..".parse().expect("range"),
            spread: "..".parse().expect("range"),
            redundancy,
            compression: strew_coordinator::Compression::None,
            encryption: strew_coordinator::Encryption {
                cipher: "chacha20poly1305".into(),
                convergence: strew_coordinator::ConvergenceScope::Grid,
            },
            sync_interval_secs: None,
        }
    }

    /// Applies `commands` as one batch and writes it with `position`.
    fn apply_and_write(m: &mut Manager, db: &mut ManagerDb, commands: &[Command], position: &[u8]) {
        let mut touched = Touched::default();
        for c in commands {
            touched.merge(m.apply(c).expect("applies").touched);
        }
        let batch = Batch::collect(m.state(), &touched, position.to_vec()).expect("encodes");
        db.write(&batch).expect("writes");
    }

    #[test]
    fn batches_and_their_position_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        let mut m = manager();
        {
            let (mut db, loaded) = ManagerDb::open(&path).expect("opens");
            assert_eq!(loaded.position, None);
            assert_eq!(loaded.state, ManagerState::default());
            apply_and_write(&mut m, &mut db, &[join(1, 1), join(2, 2)], b"entry-2");
            let node = NodeId(SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes());
            let offline = Command::SetOnline {
                node,
                online: false,
                at: 3,
            };
            apply_and_write(&mut m, &mut db, &[offline, join(3, 4)], b"entry-4");
        }
        let (_, loaded) = ManagerDb::open(&path).expect("reopens");
        assert_eq!(&loaded.state, m.state());
        assert_eq!(loaded.position.as_deref(), Some(&b"entry-4"[..]));
    }

    /// A backup of `CHUNKS` chunks (erasure 2+1) planned in parts of
    /// `PART`, its receipts and its order handed in page by page (the order
    /// started twice), committed and forgotten, each step decided as the
    /// daemon does and written as one batch: after every step the database
    /// reopens to exactly the manager's state, and a step writes only the
    /// pending backup's rows it changed.
    #[test]
    fn a_backup_in_parts_writes_only_its_new_rows_and_reopens_exactly() {
        use rand::SeedableRng;
        use rand::rngs::StdRng;
        use redb::ReadableTableMetadata;
        use strew_coordinator::manager::{
            ChunkPlan, CommitOrderRequest, CommitRequest, CommitStep, OrderStep, PacketSpec,
            PlanRequest,
        };
        use strew_coordinator::{DataId, PacketId, Redundancy, StoreReceipt};
        const CHUNKS: usize = 40;
        const PART: usize = 16;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        let (mut db, _) = ManagerDb::open(&path).expect("opens");
        let mut m = manager();
        let mut position = 0u64;
        let mut step = |m: &mut Manager, db: &mut ManagerDb, command: Command| -> Batch {
            let touched = m.apply(&command).expect("applies").touched;
            position += 1;
            let batch = Batch::collect(m.state(), &touched, position.to_be_bytes().to_vec())
                .expect("encodes");
            db.write(&batch).expect("writes");
            batch
        };
        let reopened = |db: &ManagerDb| ManagerDb::load(&db.db).expect("loads").state;
        for n in 1..=6 {
            step(&mut m, &mut db, join(n, u64::from(n)));
        }
        let source = NodeId(SigningKey::from_bytes(&[1; 32]).verifying_key().to_bytes());
        let location = GeoPoint::new(41.0, 2.0).expect("location");
        let params = params(Redundancy::Erasure { k: 2, m: 1 });
        let ids: Vec<DataId> = (0..CHUNKS)
            .map(|i| DataId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
            .collect();
        let mut rng = StdRng::seed_from_u64(5);
        let mut pending = None;
        let mut uploads = Vec::new();
        for part in ids.chunks(PART) {
            let request = PlanRequest {
                source,
                set: "home".into(),
                location,
                params: params.clone(),
                chunks: part
                    .iter()
                    .map(|id| ChunkPlan {
                        data_id: *id,
                        packets: (0..3u8)
                            .map(|j| PacketSpec {
                                packet_id: PacketId::of(&[id.0.as_slice(), &[j]].concat()),
                                size: 1000,
                            })
                            .collect(),
                    })
                    .collect(),
                exclude: Vec::new(),
                extend: pending,
            };
            let (command, draft) = m.decide_plan(&request, 10, &mut rng).expect("plans");
            let batch = step(&mut m, &mut db, command);
            if pending.is_some() {
                // An extension writes its own chunks, not the backup's.
                let written: usize = batch.split.item_rows();
                assert_eq!(written, part.len(), "rows written for a part");
            }
            pending = Some(draft.pending_id);
            uploads.extend(draft.uploads);
            assert_eq!(&reopened(&db), m.state());
        }
        let pending_id = pending.expect("planned");
        // The last chunk's first packet moves off its target (its upload
        // failed): one row rewritten, and the old place queued for collection.
        let last = uploads.last().expect("planned").clone();
        let request = strew_coordinator::RetargetRequest {
            pending_id,
            source,
            slots: vec![(last.data_id, 0)],
            avoid: vec![last.packets[0].target],
        };
        let (command, _) = m
            .decide_retarget(&request, 15, &mut rng)
            .expect("retargets");
        let batch = step(&mut m, &mut db, command.clone());
        assert_eq!(batch.split.item_rows(), 1, "rows written for a move");
        assert_eq!(&reopened(&db), m.state());
        let [moved] = m.retargeted_chunks(&command).try_into().expect("one chunk");
        assert_ne!(moved.packets[0].target, last.packets[0].target);
        *uploads.last_mut().expect("planned") = moved;
        let receipts: Vec<StoreReceipt> = uploads
            .iter()
            .flat_map(|c| &c.packets)
            .map(|p| {
                let n = (1..=6u8)
                    .find(|n| {
                        NodeId(SigningKey::from_bytes(&[*n; 32]).verifying_key().to_bytes())
                            == p.target
                    })
                    .expect("a test target");
                StoreReceipt::unsigned(p.target, source, p.packet_id, p.size, p.generation, 0)
                    .sign_with(&SigningKey::from_bytes(&[n; 32]))
                    .expect("signs")
            })
            .collect();
        for page in receipts.chunks(25) {
            let command = m
                .decide_receipts(source, pending_id, page)
                .expect("receipts");
            let batch = step(&mut m, &mut db, command);
            assert_eq!(batch.split.item_rows(), page.len());
        }
        assert_eq!(&reopened(&db), m.state());
        // The order in pages of 16, once started and then started afresh.
        for restart in [ids.len() / 2, ids.len()] {
            for (n, page) in ids[..restart].chunks(16).enumerate() {
                let request = CommitOrderRequest {
                    pending_id,
                    source,
                    first: (n * 16) as u64,
                    chunks: page.to_vec(),
                };
                let Ok(OrderStep::Propose(command)) = m.decide_commit_order(&request) else {
                    panic!("an order page is proposed");
                };
                step(&mut m, &mut db, command);
                assert_eq!(&reopened(&db), m.state());
            }
        }
        let commit = CommitRequest {
            pending_id,
            source,
            receipts: Vec::new(),
            manifest: ids[0],
            manifest_chunks: vec![ids[0]],
            chunks: Vec::new(),
            bytes: 1000,
        };
        let Ok(CommitStep::Propose { command, snapshot }) = m.decide_commit(&commit, 20, &mut rng)
        else {
            panic!("the commit is proposed");
        };
        step(&mut m, &mut db, command);
        let state = reopened(&db);
        assert_eq!(&state, m.state());
        assert!(state.pending.is_empty());
        let held: usize = state.targets.values().map(|t| t.packets.len()).sum();
        assert_eq!(held, 3 * CHUNKS);
        let forget = m.decide_forget(source, snapshot, 30).expect("forgets");
        step(&mut m, &mut db, forget);
        drop(db);
        let state = ManagerDb::open(&path).expect("reopens").1.state;
        assert_eq!(&state, m.state());
        assert_eq!(
            state
                .targets
                .values()
                .map(|t| t.packets.len())
                .sum::<usize>(),
            0
        );
        // Every freed packet is queued for collection, row by row (and the
        // moved packet's old place); a collection removes its rows.
        assert_eq!(state.garbage.len(), 3 * CHUNKS + 1);
        let (mut db, _) = ManagerDb::open(&path).expect("reopens");
        let entries: Vec<_> = state.garbage.keys().take(CHUNKS).copied().collect();
        step(&mut m, &mut db, Command::Collected { entries });
        assert_eq!(&reopened(&db), m.state());
        assert_eq!(m.state().garbage.len(), 2 * CHUNKS + 1);
        drop(db);
        // And the pending rows of the gone backup left with it.
        let (db, _) = ManagerDb::open(&path).expect("reopens");
        let txn = db.db.begin_read().expect("read");
        assert_eq!(
            txn.open_table(split::PENDING_ITEMS)
                .expect("items")
                .len()
                .expect("len"),
            0
        );
    }

    #[test]
    fn trimmed_log_events_leave_the_database() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        let mut m = manager();
        {
            let (mut db, _) = ManagerDb::open(&path).expect("opens");
            let joins: Vec<Command> = (1..8).map(|n| join(n, u64::from(n))).collect();
            apply_and_write(&mut m, &mut db, &joins, b"entry-7");
            let trim = Command::TrimLog { before_seq: 4 };
            apply_and_write(&mut m, &mut db, &[trim, join(9, 9)], b"entry-8");
        }
        let (_, loaded) = ManagerDb::open(&path).expect("reopens");
        assert_eq!(&loaded.state, m.state());
        let seqs: Vec<u64> = loaded.state.log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![4, 5, 6, 7]);
    }

    #[test]
    fn replace_installs_a_whole_state_and_drops_what_it_lacks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        let mut shipped = manager();
        for n in 1..6 {
            shipped.apply(&join(n, u64::from(n))).expect("applies");
        }
        {
            let (mut db, _) = ManagerDb::open(&path).expect("opens");
            let mut local = manager();
            apply_and_write(&mut local, &mut db, &[join(9, 1)], b"entry-1");
            db.replace(shipped.state(), b"snapshot-5")
                .expect("replaces");
        }
        let (_, loaded) = ManagerDb::open(&path).expect("reopens");
        assert_eq!(&loaded.state, shipped.state());
        assert_eq!(loaded.position.as_deref(), Some(&b"snapshot-5"[..]));
    }

    #[test]
    fn a_version_1_database_loses_its_command_log_and_keeps_its_records() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        let mut m = manager();
        {
            let (mut db, _) = ManagerDb::open(&path).expect("opens");
            apply_and_write(&mut m, &mut db, &[join(1, 1)], b"entry-1");
            // Make it look like version 1: schema 1 and a command log.
            let txn = db.db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema", 1)
                .expect("schema");
            txn.open_table(OLD_COMMANDS)
                .expect("commands")
                .insert(1, b"old".as_slice())
                .expect("command");
            txn.commit().expect("commit");
        }
        let (db, loaded) = ManagerDb::open(&path).expect("migrates");
        assert_eq!(&loaded.state, m.state());
        let txn = db.db.begin_read().expect("read");
        let schema = txn
            .open_table(META)
            .expect("meta")
            .get("schema")
            .expect("get");
        assert_eq!(schema.map(|v| v.value()), Some(SCHEMA_VERSION));
        assert!(
            txn.open_table(OLD_COMMANDS).is_err(),
            "the command log is gone"
        );
    }

    #[test]
    fn a_version_2_database_has_its_whole_records_split_into_rows() {
        use strew_coordinator::{
            DataId, PacketId, PendingBackup, PlannedChunk, Receipted, Redundancy, StoredPacket,
            TargetRecord,
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        let target = NodeId([4; 32]);
        let mut record = TargetRecord {
            bytes: 30,
            reserved: 7,
            ..TargetRecord::default()
        };
        for n in 1..4u8 {
            record.packets.insert(PacketId([n; 32]), 10);
        }
        let packet = StoredPacket {
            packet_id: PacketId([9; 32]),
            size: 7,
            target,
            generation: 3,
        };
        let pending = PendingBackup {
            id: 0,
            source: NodeId([1; 32]),
            set: "home".into(),
            location: GeoPoint::new(41.0, 2.0).expect("location"),
            params: params(Redundancy::Replicas { n: 1 }),
            new_chunks: vec![PlannedChunk {
                data_id: DataId([8; 32]),
                packets: vec![packet],
                key: None,
            }],
            reused: vec![DataId([5; 32]), DataId([6; 32])],
            created_at: 1,
            expires_at: 2,
            receipted: vec![Receipted {
                packet_id: packet.packet_id,
                target,
                generation: 3,
            }],
            order: vec![DataId([8; 32])],
            order_stored: Vec::new(),
        };
        {
            let (db, _) = ManagerDb::open(&path).expect("opens");
            let txn = db.db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema", 2)
                .expect("schema");
            txn.open_table(split::TARGETS_V1)
                .expect("targets")
                .insert(
                    target.0.as_slice(),
                    encode("t", &record).expect("encodes").as_slice(),
                )
                .expect("target");
            txn.open_table(split::PENDING_V1)
                .expect("pending")
                .insert(0, encode("p", &pending).expect("encodes").as_slice())
                .expect("pending");
            txn.commit().expect("commit");
        }
        let (db, loaded) = ManagerDb::open(&path).expect("migrates");
        assert_eq!(loaded.state.targets.get(&target), Some(&record));
        assert_eq!(loaded.state.pending.get(&0), Some(&pending));
        let txn = db.db.begin_read().expect("read");
        assert!(
            txn.open_table(split::TARGETS_V1).is_err(),
            "old targets gone"
        );
        assert!(
            txn.open_table(split::PENDING_V1).is_err(),
            "old pending gone"
        );
        drop(txn);
        drop(db);
        let (_, again) = ManagerDb::open(&path).expect("reopens");
        assert_eq!(again.state, loaded.state);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("manager.redb");
        {
            let (db, _) = ManagerDb::open(&path).expect("opens");
            let txn = db.db.begin_write().expect("txn");
            txn.open_table(META)
                .expect("meta")
                .insert("schema", SCHEMA_VERSION + 1)
                .expect("schema");
            txn.commit().expect("commit");
        }
        assert!(matches!(
            ManagerDb::open(&path),
            Err(StoreError::Schema { found }) if found == SCHEMA_VERSION + 1
        ));
    }
}
