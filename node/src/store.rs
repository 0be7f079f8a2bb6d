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
        self.put_group(packets, None)
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
        self.put_group(&plain, Some(&generations))
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
    ) -> Result<Vec<(PutOutcome, u64)>, StoreError> {
        for (id, bytes) in packets {
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
    pub fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let index = txn.open_table(PACKETS)?;
        let Some((segment, offset, len)) = index.get(&id.0)?.map(|v| v.value()) else {
            return Ok(None);
        };
        drop(index);
        drop(txn);
        let file = self.reader(segment)?;
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
        Ok(Some(buf))
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
        let ids = std::slice::from_ref(id);
        let removed = self.remove(ids, Some(generation))?;
        if removed > 0 {
            return Ok(GenerationDelete::Deleted);
        }
        Ok(if self.contains(id)? {
            GenerationDelete::OtherGeneration
        } else {
            GenerationDelete::Absent
        })
    }

    /// Removes packets as [`PacketStore::delete`] does, in one index
    /// transaction (one commit, one fsync) for all of them. Returns how many
    /// were present; absent and repeated ids are skipped.
    pub fn delete_many(&self, ids: &[PacketId]) -> Result<usize, StoreError> {
        self.remove(ids, None)
    }

    /// Removes `ids` (only those with generation `only`, when given).
    fn remove(&self, ids: &[PacketId], only: Option<u64>) -> Result<usize, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let writer = lock(&self.inner.writer);
        let txn = self.inner.db.begin_write()?;
        let mut emptied = Vec::new();
        let mut removed = 0;
        {
            let mut recorded = txn.open_table(GENERATIONS)?;
            if let Some(wanted) = only {
                let mut matching = true;
                for id in ids {
                    // A packet stored before generations existed has none:
                    // only a (legacy) ticket naming generation 0 deletes it.
                    let has = recorded.get(&id.0)?.map(|v| v.value());
                    matching &= has.unwrap_or(0) == wanted;
                }
                if !matching {
                    return Ok(0);
                }
            }
            for id in ids {
                recorded.remove(&id.0)?;
            }
            drop(recorded);
            let mut index = txn.open_table(PACKETS)?;
            let mut segments = txn.open_table(SEGMENTS)?;
            let mut meta = txn.open_table(META)?;
            let mut freed = 0u64;
            for id in ids {
                let Some((segment, _, len)) = index.remove(&id.0)?.map(|v| v.value()) else {
                    continue;
                };
                removed += 1;
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
            if removed == 0 {
                return Ok(0);
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
        Ok(removed)
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
                let size = fs::metadata(&path).map_err(io(&path))?.len();
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
            if num != active && !referenced.contains(&num) {
                reclaimed += entry.metadata().map_err(io(&entry.path()))?.len();
                lock(&self.inner.readers).remove(&num);
                fs::remove_file(entry.path()).map_err(io(&entry.path()))?;
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
            let path = segment_path(&self.inner.dir, seg);
            if path.exists() {
                reclaimed += fs::metadata(&path).map_err(io(&path))?.len();
                lock(&self.inner.readers).remove(&seg);
                fs::remove_file(&path).map_err(io(&path))?;
                let txn = self.inner.db.begin_write()?;
                txn.open_table(SEGMENTS)?.remove(seg)?;
                txn.commit()?;
            }
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

fn segment_path(dir: &Path, segment: u32) -> PathBuf {
    dir.join("segments").join(format!("{segment:08}.seg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(n: u8, len: usize) -> (PacketId, Vec<u8>) {
        let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(n)).collect();
        (PacketId::of(&bytes), bytes)
    }

    #[test]
    fn stores_fetches_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (id, bytes) = packet(3, 1000);
        {
            let store = PacketStore::open(dir.path(), 10_000).unwrap();
            assert_eq!(store.put(id, &bytes).unwrap(), PutOutcome::Stored);
            assert_eq!(store.put(id, &bytes).unwrap(), PutOutcome::AlreadyPresent);
            assert_eq!(store.used_bytes().unwrap(), 1000);
        }
        let store = PacketStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(store.get(&id).unwrap(), Some(bytes));
        assert_eq!(store.usage().unwrap().free_bytes, 9000);
        assert_eq!(store.list().unwrap(), vec![id]);
    }

    #[test]
    fn refuses_wrong_id_oversize_and_full() {
        let dir = tempfile::tempdir().unwrap();
        let store = PacketStore::open(dir.path(), 1500).unwrap();
        let (id, bytes) = packet(5, 1000);
        let (other, _) = packet(6, 10);
        assert!(matches!(
            store.put(other, &bytes),
            Err(StoreError::WrongPacketId { .. })
        ));
        store.put(id, &bytes).unwrap();
        let (id2, bytes2) = packet(7, 600);
        let err = store.put(id2, &bytes2).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::Full {
                    needed: 600,
                    free: 500,
                    capacity: 1500
                }
            ),
            "{err}"
        );
        assert!(!store.contains(&id2).unwrap());
        let big = vec![0u8; MAX_PACKET_BYTES + 1];
        assert!(matches!(
            store.put(PacketId::of(&big), &big),
            Err(StoreError::TooLarge { .. })
        ));
        assert_eq!(store.used_bytes().unwrap(), 1000);
    }

    #[test]
    fn group_put_is_all_or_nothing_on_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let store = PacketStore::open(dir.path(), 1000).unwrap();
        let a = packet(1, 600);
        let b = packet(2, 600);
        assert!(store.put_many(&[(a.0, &a.1), (b.0, &b.1)]).is_err());
        assert!(!store.contains(&a.0).unwrap());
        assert_eq!(store.used_bytes().unwrap(), 0);
    }

    #[test]
    fn delete_frees_space_and_compaction_reclaims_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (packet(1, 4000), packet(2, 4000));
        {
            let store = PacketStore::open(dir.path(), 100_000).unwrap();
            store.put(a.0, &a.1).unwrap();
            store.put(b.0, &b.1).unwrap();
        }
        // Reopen: the old segment is closed, new writes go elsewhere.
        let store = PacketStore::open(dir.path(), 100_000).unwrap();
        assert!(store.delete(&a.0).unwrap());
        assert!(!store.delete(&a.0).unwrap());
        assert_eq!(store.used_bytes().unwrap(), 4000);
        let reclaimed = store.compact().unwrap();
        assert!(reclaimed >= 8000, "reclaimed {reclaimed}");
        assert_eq!(store.get(&b.0).unwrap(), Some(b.1.clone()));
        assert_eq!(store.get(&a.0).unwrap(), None);
        assert_eq!(store.used_bytes().unwrap(), 4000);
    }

    #[test]
    fn bytes_appended_without_an_index_entry_are_absent_after_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (packet(1, 100), packet(2, 100));
        {
            let store = PacketStore::open(dir.path(), 10_000).unwrap();
            store.put(a.0, &a.1).unwrap();
            // Simulate a crash between the append and the index commit:
            // bytes of b reach the segment, its index entry never does.
            let mut w = lock(&store.inner.writer);
            w.file.write_all(&b.1).unwrap();
        }
        let store = PacketStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(store.get(&b.0).unwrap(), None);
        assert_eq!(store.get(&a.0).unwrap(), Some(a.1.clone()));
        assert_eq!(store.used_bytes().unwrap(), 100);
        // And the store keeps working after it.
        store.put(b.0, &b.1).unwrap();
        assert_eq!(store.get(&b.0).unwrap(), Some(b.1));
    }

    #[test]
    fn delete_many_removes_present_packets_in_one_go_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = PacketStore::open(dir.path(), 100_000).unwrap();
        let packets: Vec<_> = (1..=5).map(|n| packet(n, 1000 + usize::from(n))).collect();
        for (id, bytes) in &packets {
            store.put(*id, bytes).unwrap();
        }
        let (absent, _) = packet(9, 10);
        let ids = [
            packets[0].0,
            packets[1].0,
            packets[1].0,
            absent,
            packets[3].0,
        ];
        assert_eq!(store.delete_many(&ids).unwrap(), 3);
        assert_eq!(store.delete_many(&[]).unwrap(), 0);
        assert_eq!(store.delete_many(&[absent]).unwrap(), 0);
        let left: u64 = [&packets[2], &packets[4]]
            .iter()
            .map(|(_, b)| b.len() as u64)
            .sum();
        assert_eq!(store.used_bytes().unwrap(), left);
        let mut expected = vec![packets[2].0, packets[4].0];
        expected.sort();
        assert_eq!(store.list().unwrap(), expected);
        assert_eq!(store.get(&packets[0].0).unwrap(), None);
        assert_eq!(
            store.get(&packets[2].0).unwrap(),
            Some(packets[2].1.clone())
        );
        // The accounting survives a reopen.
        drop(store);
        let store = PacketStore::open(dir.path(), 100_000).unwrap();
        assert_eq!(store.used_bytes().unwrap(), left);
        assert_eq!(store.delete_many(&[packets[2].0, packets[4].0]).unwrap(), 2);
        assert_eq!(store.usage().unwrap().packets, 0);
    }

    #[test]
    fn compaction_reclaims_deleted_packets_down_to_live_bytes_also_in_the_active_segment() {
        let dir = tempfile::tempdir().unwrap();
        let store = PacketStore::open(dir.path(), 1 << 30).unwrap();
        let packets: Vec<_> = (1..=40u8)
            .map(|n| packet(n, 100_000 + usize::from(n)))
            .collect();
        for (id, bytes) in &packets {
            store.put(*id, bytes).unwrap();
        }
        let gone: Vec<PacketId> = packets.iter().take(30).map(|(id, _)| *id).collect();
        store.delete_many(&gone).unwrap();
        let before = store.disk_usage().unwrap();
        assert!(before.garbage_bytes >= 3_000_000, "{before:?}");
        let policy = CompactionPolicy {
            min_garbage_bytes: 1 << 20,
            min_garbage_ratio: 0.25,
        };
        let reclaimed = store.maybe_compact(&policy).unwrap();
        assert!(reclaimed >= before.garbage_bytes, "{reclaimed} {before:?}");
        let after = store.disk_usage().unwrap();
        assert_eq!(after.live_bytes, before.live_bytes);
        assert!(
            after.disk_bytes as f64 <= after.live_bytes as f64 * 1.10,
            "disk use within 10% of live packets: {after:?}"
        );
        assert_eq!(after.compactions, 1);
        for (id, bytes) in &packets[30..] {
            assert_eq!(store.get(id).unwrap().as_deref(), Some(bytes.as_slice()));
        }
        // Nothing to gain: the policy does not run it again.
        assert_eq!(store.maybe_compact(&policy).unwrap(), 0);
        // An emptied store (an outbox after its commit) shrinks to nothing.
        let rest: Vec<PacketId> = packets[30..].iter().map(|(id, _)| *id).collect();
        store.delete_many(&rest).unwrap();
        store.compact().unwrap();
        assert_eq!(store.disk_usage().unwrap().disk_bytes, 0);
        drop(store);
        let store = PacketStore::open(dir.path(), 1 << 30).unwrap();
        assert_eq!(store.disk_usage().unwrap().disk_bytes, 0);
    }
}
