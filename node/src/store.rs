//! The local packet store of a target: packets on disk, indexed in redb.
//!
//! Packets are appended to segment files (`segments/NNNNNNNN.seg`, rolled at
//! [`SEGMENT_ROLL_BYTES`]) and indexed in `packets.redb`
//! (PacketId → segment, offset, length). A write appends the bytes, makes
//! them durable (`sync_data`), and only then commits the index entry with
//! immediate durability, so after a crash a packet is either fully stored
//! and indexed, or absent: an index entry never points at bytes that were
//! not on disk. Bytes appended but never indexed are unreachable garbage and
//! are reclaimed by [`PacketStore::compact`].
//!
//! The store accounts used bytes against the capacity the node donated and
//! refuses a write that would exceed it. It verifies that a packet's bytes
//! hash to its PacketId before storing. A target's packets also have a
//! storage generation (`generations-v1`, PacketId → u64), written in the
//! same transaction as the index entry and removed with it, so a delete
//! bound to a generation is honoured once, also across restarts. It knows
//! nothing of tickets, peers, or which backup a packet belongs to.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use strew_coordinator::PacketId;

/// A segment is closed for appends once it grows past this size.
pub const SEGMENT_ROLL_BYTES: u64 = 256 * 1024 * 1024;

/// How many times a read looks a packet up again when its segment file
/// went away under it (each time the index named another place).
const PLACE_LOOKUPS: u32 = 8;

/// PacketId → (segment number, offset, length).
const PACKETS: TableDefinition<&[u8; 32], (u32, u64, u32)> = TableDefinition::new("packets-v1");
/// Segment number → live bytes in it.
const SEGMENTS: TableDefinition<u32, u64> = TableDefinition::new("segments-v1");
/// PacketId → storage generation (packets a target stored under a ticket).
const GENERATIONS: TableDefinition<&[u8; 32], u64> = TableDefinition::new("generations-v1");
/// Scalar metadata: "used", "schema".
const META: TableDefinition<&str, u64> = TableDefinition::new("meta-v1");
const SCHEMA_VERSION: u64 = 1;

/// Errors of the packet store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("packet store I/O at {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("packet store index")]
    Index(#[from] redb::Error),
    #[error("packet bytes hash to {actual}, not to the claimed PacketId {claimed}")]
    WrongPacketId { claimed: PacketId, actual: PacketId },
    #[error("packet store full: {needed} more bytes needed, {free} free of {capacity} donated")]
    Full {
        needed: u64,
        free: u64,
        capacity: u64,
    },
    #[error("packet of {len} bytes exceeds the largest storable packet ({max} bytes)")]
    TooLarge { len: usize, max: usize },
    #[error("index names packet {id} at {segment}:{offset}+{len}, but that segment is shorter")]
    Truncated {
        id: PacketId,
        segment: u32,
        offset: u64,
        len: u32,
    },
    #[error(
        "packet store schema version {found} is newer than this strew understands ({SCHEMA_VERSION})"
    )]
    Schema { found: u64 },
}

macro_rules! redb_err {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Index(e.into())
            }
        }
    )*};
}
redb_err!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The packet was written.
    Stored,
    /// The packet was already present; nothing was written.
    AlreadyPresent,
}

/// What a generation-bound delete did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationDelete {
    Deleted,
    Absent,
    /// The packet has another generation (or none): kept.
    OtherGeneration,
}

/// Usage figures of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    pub packets: u64,
    pub used_bytes: u64,
    pub capacity: u64,
    pub free_bytes: u64,
}

struct Writer {
    segment: u32,
    file: File,
    len: u64,
}

struct Inner {
    dir: PathBuf,
    db: Database,
    capacity: Mutex<u64>,
    writer: Mutex<Writer>,
    readers: Mutex<BTreeMap<u32, Arc<File>>>,
    /// Held by a compaction: two at once (the daemon's upkeep and a
    /// backup's cleanup) would move the same packets and remove each
    /// other's files.
    compacting: Mutex<()>,
    /// Compactions run and disk bytes they reclaimed since the store opened.
    compactions: AtomicU64,
    reclaimed: AtomicU64,
}

/// When [`PacketStore::maybe_compact`] compacts: enough garbage, in bytes and
/// as a share of the segment files.
#[derive(Debug, Clone, Copy)]
pub struct CompactionPolicy {
    pub min_garbage_bytes: u64,
    pub min_garbage_ratio: f64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_garbage_bytes: 8 << 20,
            min_garbage_ratio: 0.25,
        }
    }
}

/// Disk figures of the store: segment files against live packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DiskUsage {
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Bytes of stored (live) packets.
    pub live_bytes: u64,
    /// `disk_bytes - live_bytes`: deleted packets and crash leftovers.
    pub garbage_bytes: u64,
    pub compactions: u64,
    pub reclaimed_bytes: u64,
}

/// Whether a group put hashes its packets or was handed checked ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Hash,
    Checked,
}

/// Refuses a packet over the size limit or whose bytes are not its id.
fn check(id: &PacketId, bytes: &[u8]) -> Result<(), StoreError> {
    if bytes.len() > MAX_PACKET_BYTES {
        return Err(StoreError::TooLarge {
            len: bytes.len(),
            max: MAX_PACKET_BYTES,
        });
    }
    let actual = PacketId::of(bytes);
    if actual != *id {
        return Err(StoreError::WrongPacketId {
            claimed: *id,
            actual,
        });
    }
    Ok(())
}

/// A packet whose bytes were hashed against its id (and its size checked)
/// when it was made, on the thread that made it: a store's single
/// committing thread then takes it without hashing it again.
#[derive(Debug)]
pub struct CheckedPacket {
    id: PacketId,
    bytes: Vec<u8>,
}

impl CheckedPacket {
    /// Checks `bytes` against `id`.
    pub fn check(id: PacketId, bytes: Vec<u8>) -> Result<CheckedPacket, StoreError> {
        check(&id, &bytes)?;
        Ok(CheckedPacket { id, bytes })
    }

    pub fn id(&self) -> PacketId {
        self.id
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// A crash-safe, capacity-accounted store of packets. Cheap to clone; all
/// clones share one store. Synchronous: call it from blocking threads.
#[derive(Clone)]
pub struct PacketStore {
    inner: Arc<Inner>,
}

/// The largest packet the store accepts (the pipeline's 4 MiB chunk maximum
/// plus headers, compression worst case and replicas stored whole).
pub const MAX_PACKET_BYTES: usize = 5 * 1024 * 1024;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a store lock cannot leave the on-disk state
    // inconsistent (the index is transactional), so a poisoned lock is usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PacketStore {
    /// Opens (or creates) the store in `dir` with `capacity` donated bytes.
    /// Appends always go to a fresh segment, so a torn tail left by a crash
    /// is never written after.
    pub fn open(dir: &Path, capacity: u64) -> Result<Self, StoreError> {
        let seg_dir = dir.join("segments");
        fs::create_dir_all(&seg_dir).map_err(io(&seg_dir))?;
        let db_path = dir.join("packets.redb");
        let db = crate::redb_cache::create(&db_path, crate::redb_cache::PACKET_INDEX_CACHE)?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let schema = meta.get("schema")?.map(|v| v.value());
            match schema {
                Some(found) if found > SCHEMA_VERSION => return Err(StoreError::Schema { found }),
                Some(_) => {}
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                    meta.insert("used", 0)?;
                }
            }
            txn.open_table(PACKETS)?;
            txn.open_table(SEGMENTS)?;
            txn.open_table(GENERATIONS)?;
        }
        txn.commit()?;
        let next = Self::highest_segment_on_disk(&seg_dir)?.map_or(0, |n| n + 1);
        let path = segment_path(dir, next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(PacketStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                db,
                capacity: Mutex::new(capacity),
                writer: Mutex::new(Writer {
                    segment: next,
                    file,
                    len: 0,
                }),
                readers: Mutex::new(BTreeMap::new()),
                compacting: Mutex::new(()),
                compactions: AtomicU64::new(0),
                reclaimed: AtomicU64::new(0),
            }),
        })
    }

    fn highest_segment_on_disk(seg_dir: &Path) -> Result<Option<u32>, StoreError> {
        let mut highest = None;
        for entry in fs::read_dir(seg_dir).map_err(io(seg_dir))? {
            let entry = entry.map_err(io(seg_dir))?;
            let name = entry.file_name();
            let Some(num) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            highest = highest.max(Some(num));
        }
        Ok(highest)
    }

    /// Changes the donated capacity (it may drop below what is used: then
    /// the store is full until packets are deleted).
    pub fn set_capacity(&self, capacity: u64) {
        *lock(&self.inner.capacity) = capacity;
    }

    /// Stores one packet. See [`PacketStore::put_many`].
    pub fn put(&self, id: PacketId, bytes: &[u8]) -> Result<PutOutcome, StoreError> {
        let mut outcome = self.put_many(&[(id, bytes)])?;
        Ok(outcome.pop().unwrap_or(PutOutcome::AlreadyPresent))
    }

    /// Stores packets atomically as a group: all of them become durable and
    /// indexed, or none does. Verifies every PacketId first; refuses the
    /// whole group if the new bytes would exceed the capacity.
    pub fn put_many(&self, packets: &[(PacketId, &[u8])]) -> Result<Vec<PutOutcome>, StoreError> {
        self.put_group(packets, None, Verify::Hash)
            .map(|out| out.into_iter().map(|(o, _)| o).collect())
    }

    /// Stores packets as [`put_many`](Self::put_many) does, each with a
    /// storage generation recorded in the same transaction; a packet present
    /// already takes this generation (a delete ticket issued for an older
    /// store of it no longer matches). Returns each packet's generation.
    pub fn put_many_with_generations(
        &self,
        packets: &[(PacketId, &[u8], u64)],
    ) -> Result<Vec<u64>, StoreError> {
        let plain: Vec<(PacketId, &[u8])> = packets.iter().map(|(id, b, _)| (*id, *b)).collect();
        let generations: Vec<u64> = packets.iter().map(|(_, _, g)| *g).collect();
        self.put_group(&plain, Some(&generations), Verify::Hash)
            .map(|out| out.into_iter().map(|(_, g)| g).collect())
    }

    /// [`put_many_with_generations`](Self::put_many_with_generations) of
    /// packets checked already (by whichever thread made the
    /// [`CheckedPacket`]): the committing thread does not hash them again.
    pub fn put_checked_with_generations(
        &self,
        packets: &[(&CheckedPacket, u64)],
    ) -> Result<Vec<u64>, StoreError> {
        let plain: Vec<(PacketId, &[u8])> =
            packets.iter().map(|(p, _)| (p.id, &p.bytes[..])).collect();
        let generations: Vec<u64> = packets.iter().map(|(_, g)| *g).collect();
        self.put_group(&plain, Some(&generations), Verify::Checked)
            .map(|out| out.into_iter().map(|(_, g)| g).collect())
    }

    /// The storage generation of a packet, if it has one.
    pub fn generation_of(&self, id: &PacketId) -> Result<Option<u64>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(GENERATIONS)?;
        Ok(table.get(&id.0)?.map(|v| v.value()))
    }

    fn put_group(
        &self,
        packets: &[(PacketId, &[u8])],
        generations: Option<&[u64]>,
        verify: Verify,
    ) -> Result<Vec<(PutOutcome, u64)>, StoreError> {
        if verify == Verify::Hash {
            for (id, bytes) in packets {
                check(id, bytes)?;
            }
        }
        let mut writer = lock(&self.inner.writer);
        let txn = self.inner.db.begin_write()?;
        let mut outcomes = Vec::with_capacity(packets.len());
        {
            let mut index = txn.open_table(PACKETS)?;
            let mut segments = txn.open_table(SEGMENTS)?;
            let mut meta = txn.open_table(META)?;
            let mut recorded = txn.open_table(GENERATIONS)?;
            let used = meta.get("used")?.map_or(0, |v| v.value());
            // Which packets are new (also de-duplicating within the group)?
            let mut fresh: BTreeMap<PacketId, &[u8]> = BTreeMap::new();
            for (i, (id, bytes)) in packets.iter().enumerate() {
                let present = fresh.contains_key(id) || index.get(&id.0)?.is_some();
                let generation = match generations.and_then(|g| g.get(i)) {
                    Some(&wanted) => {
                        // The latest store's generation holds: a delete
                        // ticket of an earlier store (the packet was freed,
                        // then stored again before the delete arrived) must
                        // not delete the live copy.
                        recorded.insert(&id.0, wanted)?;
                        wanted
                    }
                    None => 0,
                };
                outcomes.push(if present {
                    (PutOutcome::AlreadyPresent, generation)
                } else {
                    fresh.insert(*id, bytes);
                    (PutOutcome::Stored, generation)
                });
            }
            if fresh.is_empty() {
                drop((index, segments, meta, recorded));
                txn.commit()?;
                return Ok(outcomes);
            }
            let needed: u64 = fresh.values().map(|b| b.len() as u64).sum();
            let capacity = *lock(&self.inner.capacity);
            if used + needed > capacity {
                return Err(StoreError::Full {
                    needed,
                    free: capacity.saturating_sub(used),
                    capacity,
                });
            }
            if writer.len >= SEGMENT_ROLL_BYTES {
                self.roll(&mut writer)?;
            }
            let seg_path = segment_path(&self.inner.dir, writer.segment);
            let mut offset = writer.len;
            for (id, bytes) in &fresh {
                index.insert(&id.0, (writer.segment, offset, bytes.len() as u32))?;
                offset += bytes.len() as u64;
            }
            // Durable bytes before a durable index: the crash-safety invariant.
            let file = &mut writer.file;
            let written = fresh
                .values()
                .try_for_each(|bytes| file.write_all(bytes))
                .and_then(|()| file.sync_data());
            if let Err(err) = written {
                // The segment may now hold a torn tail at an unknown length:
                // never append after it. The index entries die with `txn`.
                self.roll(&mut writer)?;
                return Err(io(&seg_path)(err));
            }
            writer.len = offset;
            let live = segments.get(writer.segment)?.map_or(0, |v| v.value());
            segments.insert(writer.segment, live + needed)?;
            meta.insert("used", used + needed)?;
        }
        txn.commit()?;
        Ok(outcomes)
    }

    /// Moves a live packet into the active segment: the copy is made
    /// durable first, then one transaction repoints the index and moves the
    /// live-byte count, so a crash leaves the packet at its old or its new
    /// place, never nowhere.
    fn relocate(&self, id: PacketId, bytes: &[u8]) -> Result<(), StoreError> {
        let mut writer = lock(&self.inner.writer);
        if writer.len >= SEGMENT_ROLL_BYTES {
            self.roll(&mut writer)?;
        }
        let seg_path = segment_path(&self.inner.dir, writer.segment);
        let written = writer
            .file
            .write_all(bytes)
            .and_then(|()| writer.file.sync_data());
        if let Err(err) = written {
            self.roll(&mut writer)?;
            return Err(io(&seg_path)(err));
        }
        let offset = writer.len;
        writer.len += bytes.len() as u64;
        let txn = self.inner.db.begin_write()?;
        {
            let mut index = txn.open_table(PACKETS)?;
            let Some((old_seg, _, len)) = index.get(&id.0)?.map(|v| v.value()) else {
                return Ok(()); // deleted meanwhile: the copy is garbage
            };
            index.insert(&id.0, (writer.segment, offset, len))?;
            let mut segments = txn.open_table(SEGMENTS)?;
            let old_live = segments.get(old_seg)?.map_or(0, |v| v.value());
            segments.insert(old_seg, old_live.saturating_sub(u64::from(len)))?;
            let live = segments.get(writer.segment)?.map_or(0, |v| v.value());
            segments.insert(writer.segment, live + u64::from(len))?;
        }
        txn.commit()?;
        Ok(())
    }

    fn roll(&self, writer: &mut Writer) -> Result<(), StoreError> {
        let next = writer.segment + 1;
        let path = segment_path(&self.inner.dir, next);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(io(&path))?;
        *writer = Writer {
            segment: next,
            file,
            len: 0,
        };
        Ok(())
    }

    fn reader(&self, segment: u32) -> Result<Arc<File>, StoreError> {
        let mut readers = lock(&self.inner.readers);
        if let Some(file) = readers.get(&segment) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.inner.dir, segment);
        let file = Arc::new(File::open(&path).map_err(io(&path))?);
        readers.insert(segment, file.clone());
        Ok(file)
    }

    /// Reads a packet's bytes, or `None` if it is not stored. The bytes are
    /// returned as stored; callers that did not write them verify the
    /// PacketId themselves (see [`PacketId::of`]).
    ///
    /// A packet can move (compaction) or go (a delete that empties its
    /// segment) between reading its place and opening its segment: a
    /// segment file that is gone is no error while the index names another
    /// place, or none, when read again.
    pub fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StoreError> {
        let mut place = self.place(id)?;
        let mut looked = 0;
        loop {
            let Some((segment, offset, len)) = place else {
                return Ok(None);
            };
            let file = match self.reader(segment) {
                Ok(file) => file,
                Err(StoreError::Io { path, source })
                    if source.kind() == std::io::ErrorKind::NotFound && looked < PLACE_LOOKUPS =>
                {
                    let now = self.place(id)?;
                    if now == place {
                        // Still named there: the file is missing, not moved.
                        return Err(StoreError::Io { path, source });
                    }
                    place = now;
                    looked += 1;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let mut buf = vec![0u8; len as usize];
            file.read_exact_at(&mut buf, offset).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    StoreError::Truncated {
                        id: *id,
                        segment,
                        offset,
                        len,
                    }
                } else {
                    StoreError::Io {
                        path: segment_path(&self.inner.dir, segment),
                        source: e,
                    }
                }
            })?;
            return Ok(Some(buf));
        }
    }

    /// Where the index puts a packet: segment, offset, length.
    fn place(&self, id: &PacketId) -> Result<Option<(u32, u64, u32)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(PACKETS)?;
        Ok(index.get(&id.0)?.map(|v| v.value()))
    }

    /// The stored length of a packet, or `None` if it is not stored.
    pub fn size_of(&self, id: &PacketId) -> Result<Option<u64>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(PACKETS)?;
        Ok(index.get(&id.0)?.map(|v| u64::from(v.value().2)))
    }

    /// Whether a packet is stored.
    pub fn contains(&self, id: &PacketId) -> Result<bool, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(PACKETS)?;
        Ok(index.get(&id.0)?.is_some())
    }

    /// Removes a packet from the index and frees its bytes in the accounting.
    /// Returns whether it was present. A segment whose every packet is gone
    /// is deleted from disk; partly-dead segments are reclaimed by `compact`.
    pub fn delete(&self, id: &PacketId) -> Result<bool, StoreError> {
        Ok(self.delete_many(std::slice::from_ref(id))? > 0)
    }

    /// Removes a packet only while it has storage generation `generation`
    /// (checked and removed in one transaction, with its generation).
    pub fn delete_generation(
        &self,
        id: &PacketId,
        generation: u64,
    ) -> Result<GenerationDelete, StoreError> {
        let outcome = self.remove(std::slice::from_ref(id), Some(&[generation]))?;
        Ok(outcome.first().copied().unwrap_or(GenerationDelete::Absent))
    }

    /// [`delete_generation`](Self::delete_generation) for many packets in
    /// one index transaction (one commit, one fsync): what happened to
    /// each, in order.
    pub fn delete_generations(
        &self,
        wanted: &[(PacketId, u64)],
    ) -> Result<Vec<GenerationDelete>, StoreError> {
        let ids: Vec<PacketId> = wanted.iter().map(|(id, _)| *id).collect();
        let generations: Vec<u64> = wanted.iter().map(|(_, g)| *g).collect();
        self.remove(&ids, Some(&generations))
    }

    /// Removes packets as [`PacketStore::delete`] does, in one index
    /// transaction (one commit, one fsync) for all of them. Returns how many
    /// were present; absent and repeated ids are skipped.
    pub fn delete_many(&self, ids: &[PacketId]) -> Result<usize, StoreError> {
        let outcome = self.remove(ids, None)?;
        Ok(outcome
            .iter()
            .filter(|o| **o == GenerationDelete::Deleted)
            .count())
    }

    /// Removes `ids` (each only while it has the generation at its place
    /// in `generations`, when given): what happened to each.
    fn remove(
        &self,
        ids: &[PacketId],
        generations: Option<&[u64]>,
    ) -> Result<Vec<GenerationDelete>, StoreError> {
        let mut outcome = vec![GenerationDelete::Absent; ids.len()];
        if ids.is_empty() {
            return Ok(outcome);
        }
        let writer = lock(&self.inner.writer);
        let txn = self.inner.db.begin_write()?;
        let mut emptied = Vec::new();
        {
            let mut recorded = txn.open_table(GENERATIONS)?;
            let mut index = txn.open_table(PACKETS)?;
            let mut segments = txn.open_table(SEGMENTS)?;
            let mut meta = txn.open_table(META)?;
            let mut freed = 0u64;
            for (i, id) in ids.iter().enumerate() {
                if let Some(wanted) = generations.and_then(|g| g.get(i)) {
                    // A packet stored before generations existed has none:
                    // only a (legacy) ticket naming generation 0 deletes it.
                    let has = recorded.get(&id.0)?.map(|v| v.value());
                    if has.unwrap_or(0) != *wanted {
                        if index.get(&id.0)?.is_some() {
                            outcome[i] = GenerationDelete::OtherGeneration;
                        }
                        continue;
                    }
                }
                recorded.remove(&id.0)?;
                let Some((segment, _, len)) = index.remove(&id.0)?.map(|v| v.value()) else {
                    continue;
                };
                outcome[i] = GenerationDelete::Deleted;
                freed += u64::from(len);
                let live = segments.get(segment)?.map_or(0, |v| v.value());
                let left = live.saturating_sub(u64::from(len));
                if left == 0 && segment != writer.segment {
                    segments.remove(segment)?;
                    emptied.push(segment);
                } else {
                    segments.insert(segment, left)?;
                }
            }
            if !outcome.contains(&GenerationDelete::Deleted) {
                return Ok(outcome);
            }
            let used = meta.get("used")?.map_or(0, |v| v.value());
            meta.insert("used", used.saturating_sub(freed))?;
        }
        txn.commit()?;
        for segment in emptied {
            lock(&self.inner.readers).remove(&segment);
            let path = segment_path(&self.inner.dir, segment);
            // The index no longer names it; failing to unlink only wastes space.
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %err, "could not remove empty segment");
            }
        }
        drop(writer);
        Ok(outcome)
    }

    /// Up to `limit` stored packets in id order after `after`: id, size and
    /// storage generation (0 when it has none).
    pub fn inventory(
        &self,
        after: Option<&PacketId>,
        limit: usize,
    ) -> Result<Vec<(PacketId, u64, u64)>, StoreError> {
        use std::ops::Bound;
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(PACKETS)?;
        let generations = txn.open_table(GENERATIONS)?;
        let start = after.map_or(Bound::Unbounded, |a| Bound::Excluded(&a.0));
        let mut out = Vec::new();
        for entry in index
            .range::<&[u8; 32]>((start, Bound::Unbounded))?
            .take(limit)
        {
            let (key, value) = entry?;
            let id = *key.value();
            let generation = generations.get(&id)?.map_or(0, |g| g.value());
            out.push((PacketId(id), u64::from(value.value().2), generation));
        }
        Ok(out)
    }

    /// Every stored PacketId, in order.
    pub fn list(&self) -> Result<Vec<PacketId>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(PACKETS)?;
        let mut out = Vec::new();
        for entry in index.iter()? {
            let (key, _) = entry?;
            out.push(PacketId(*key.value()));
        }
        Ok(out)
    }

    /// Packets, used, capacity and free bytes.
    pub fn usage(&self) -> Result<Usage, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let meta = txn.open_table(META)?;
        let used = meta.get("used")?.map_or(0, |v| v.value());
        let packets = txn.open_table(PACKETS)?.len()?;
        let capacity = *lock(&self.inner.capacity);
        Ok(Usage {
            packets,
            used_bytes: used,
            capacity,
            free_bytes: capacity.saturating_sub(used),
        })
    }

    /// Bytes used by stored packets.
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.usage()?.used_bytes)
    }

    /// Bytes still free of the donated capacity.
    pub fn free_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.usage()?.free_bytes)
    }

    /// The donated capacity in bytes.
    pub fn capacity(&self) -> u64 {
        *lock(&self.inner.capacity)
    }

    /// Rewrites the live packets of closed segments that are at most half
    /// live into the active segment and removes the old files, and removes
    /// segment files the index does not reference at all (crash leftovers).
    /// Returns the bytes of disk reclaimed.
    pub fn compact(&self) -> Result<u64, StoreError> {
        let _one_at_a_time = lock(&self.inner.compacting);
        let seg_dir = self.inner.dir.join("segments");
        // A mostly dead active segment is closed first, so its space can be
        // reclaimed too (a store that only shrinks never rolls by size).
        let active = {
            let mut writer = lock(&self.inner.writer);
            if writer.len > 0 {
                let txn = self.inner.db.begin_read()?;
                let live = txn
                    .open_table(SEGMENTS)?
                    .get(writer.segment)?
                    .map_or(0, |v| v.value());
                if live * 2 <= writer.len {
                    self.roll(&mut writer)?;
                }
            }
            writer.segment
        };
        let (sparse, referenced) = {
            let txn = self.inner.db.begin_read()?;
            let segments = txn.open_table(SEGMENTS)?;
            let mut sparse = Vec::new();
            let mut referenced = Vec::new();
            for entry in segments.iter()? {
                let (seg, live) = entry?;
                let (seg, live) = (seg.value(), live.value());
                referenced.push(seg);
                let path = segment_path(&self.inner.dir, seg);
                let size = match fs::metadata(&path) {
                    Ok(m) => m.len(),
                    // Emptied by a delete since the read began: nothing to move.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io(&path)(e)),
                };
                if seg != active && live * 2 <= size {
                    sparse.push(seg);
                }
            }
            (sparse, referenced)
        };
        let mut reclaimed = 0;
        // Segment files nothing points at.
        for entry in fs::read_dir(&seg_dir).map_err(io(&seg_dir))? {
            let entry = entry.map_err(io(&seg_dir))?;
            let Some(num) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            // Only segments before the active one: a put may roll to a
            // new segment meanwhile, and its file is unreferenced until the
            // put commits.
            if num < active && !referenced.contains(&num) {
                lock(&self.inner.readers).remove(&num);
                reclaimed += remove_segment_file(&entry.path())?;
            }
        }
        for seg in sparse {
            let ids: Vec<PacketId> = {
                let txn = self.inner.db.begin_read()?;
                let index = txn.open_table(PACKETS)?;
                let mut ids = Vec::new();
                for entry in index.iter()? {
                    let (key, loc) = entry?;
                    if loc.value().0 == seg {
                        ids.push(PacketId(*key.value()));
                    }
                }
                ids
            };
            for id in ids {
                if let Some(bytes) = self.get(&id)? {
                    self.relocate(id, &bytes)?;
                }
            }
            lock(&self.inner.readers).remove(&seg);
            reclaimed += remove_segment_file(&segment_path(&self.inner.dir, seg))?;
            let txn = self.inner.db.begin_write()?;
            txn.open_table(SEGMENTS)?.remove(seg)?;
            txn.commit()?;
        }
        self.inner.compactions.fetch_add(1, Ordering::Relaxed);
        self.inner.reclaimed.fetch_add(reclaimed, Ordering::Relaxed);
        Ok(reclaimed)
    }

    /// Segment files against live packets, and what compaction did so far.
    pub fn disk_usage(&self) -> Result<DiskUsage, StoreError> {
        let seg_dir = self.inner.dir.join("segments");
        let mut disk = 0;
        for entry in fs::read_dir(&seg_dir).map_err(io(&seg_dir))? {
            let entry = entry.map_err(io(&seg_dir))?;
            if entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".seg"))
            {
                disk += entry.metadata().map_err(io(&entry.path()))?.len();
            }
        }
        let live = self.used_bytes()?;
        Ok(DiskUsage {
            disk_bytes: disk,
            live_bytes: live,
            garbage_bytes: disk.saturating_sub(live),
            compactions: self.inner.compactions.load(Ordering::Relaxed),
            reclaimed_bytes: self.inner.reclaimed.load(Ordering::Relaxed),
        })
    }

    /// Compacts when the policy says the garbage is worth it; returns the
    /// bytes reclaimed (0 when it did not run).
    pub fn maybe_compact(&self, policy: &CompactionPolicy) -> Result<u64, StoreError> {
        let u = self.disk_usage()?;
        let ratio = u.garbage_bytes as f64 / u.disk_bytes.max(1) as f64;
        if u.garbage_bytes >= policy.min_garbage_bytes && ratio >= policy.min_garbage_ratio {
            return self.compact();
        }
        Ok(0)
    }
}

/// Removes a segment file the index no longer names: its size, or 0 when
/// it is gone already (a delete that emptied it removed it meanwhile).
fn remove_segment_file(path: &Path) -> Result<u64, StoreError> {
    let gone = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if gone(&e) => return Ok(0),
        Err(e) => return Err(io(path)(e)),
    };
    match fs::remove_file(path) {
        Ok(()) => Ok(size),
        Err(e) if gone(&e) => Ok(0),
        Err(e) => Err(io(path)(e)),
    }
}

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join("segments").join(format!("{segment:08}.seg"))
}

#[cfg(test)]
mod tests;
