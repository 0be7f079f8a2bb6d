//! The source side of the pipeline: walk → read → chunk → (parallel) DataId,
//! compress, encrypt, erasure-code → packet sink, then the snapshot manifest.
//!
//! Three stages joined by bounded channels, so memory stays bounded whatever
//! the input size (a few batches of at most [`BATCH_BYTES`] in flight):
//! 1. a reader thread walks the tree in a deterministic order, streams each
//!    file through FastCDC (files below the minimum chunk size go into a
//!    shared packed stream), hashes whole files, and builds manifest entries;
//! 2. the calling thread keys and encodes each batch of chunks on rayon's pool;
//!    chunks already stored (earlier in this backup, or known to the
//!    [`KnownChunks`] index: a previous snapshot, or the manager's dedup
//!    answer) are not encoded again;
//! 3. a writer thread hands stripes to the [`PacketSink`] in sequence order.
//!
//! Then the manifest (which holds every chunk's key) is stored under the
//! owner's private secret, preceded by the snapshot root: the manifest
//! chunks' keys, under a key only the owner derives (see `secret` and
//! `manifest_store`).
//!
//! A file that cannot be read is reported in the warnings and skipped; the
//! rest of the backup goes on. Only a root that cannot be read, or a sink
//! failure, aborts the backup.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use rayon::prelude::*;
use serde::Serialize;
use serde_bytes::ByteBuf;
use strew_coordinator::DataId;

use super::chunking::ChunkSizes;
use super::codec::{Codec, EncodedStripe, StripeRecord};
use super::exclude::{ExcludeError, ExcludeRules, Excluder};
use super::manifest::{ChunkRef, Entry, EntryKind, Extent};
use super::manifest_spill::{ChunkTable, EntrySpill, ManifestHead, PackChunks, SpilledManifest};
use super::manifest_store;
use super::secret::{ChunkKey, ConvergenceSecret};
use super::sequence::Sequence;
use crate::claim_set::{ClaimSet, claim};

/// A batch is cut when it holds this many bytes of chunks.
pub const BATCH_BYTES: usize = 16 * 1024 * 1024;
const BATCH_CHUNKS: usize = 64;
const CHANNEL_DEPTH: usize = 2;
/// Small files are read in parallel in groups of this many files or bytes.
const SMALL_QUEUE_FILES: usize = 256;
const SMALL_QUEUE_BYTES: u64 = 8 * 1024 * 1024;
/// Threads that open and read small files (latency-bound work).
pub const IO_THREADS: usize = 8;

/// A pool for latency-bound file-system work (opening, reading and creating
/// many small files), separate from rayon's CPU pool.
pub fn io_pool() -> Result<rayon::ThreadPool, BackupError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(IO_THREADS)
        .thread_name(|i| format!("strew-io-{i}"))
        .build()
        .map_err(|e| BackupError::Stage(format!("cannot start I/O threads: {e}")))
}

/// Where encoded stripes go: a local packet store, or uploads to targets.
pub trait PacketSink: Send {
    /// Stores (or queues) a stripe's packets. Called in sequence order.
    fn store(&mut self, stripe: EncodedStripe) -> Result<(), SinkError>;
    /// Everything stored so far must be durable when this returns.
    fn finish(&mut self) -> Result<(), SinkError>;
    /// Offered each data stripe's record in sequence order (new or already
    /// known). `true`: the sink keeps the order itself (on disk, say) and
    /// the report's `sequence.data` leaves it out, so the backup's memory
    /// does not grow with its size.
    fn order(&mut self, _record: &StripeRecord) -> Result<bool, SinkError> {
        Ok(false)
    }
}

/// A sink failure; aborts the backup (nothing is committed).
#[derive(Debug, thiserror::Error)]
#[error("storing packets failed: {message}")]
pub struct SinkError {
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

/// Chunks already stored on the grid, with their stripes.
pub trait KnownChunks: Sync {
    fn known(&self, id: &DataId) -> Option<StripeRecord>;
}

/// No prior knowledge: every chunk not seen in this backup is stored.
pub struct NothingKnown;
impl KnownChunks for NothingKnown {
    fn known(&self, _: &DataId) -> Option<StripeRecord> {
        None
    }
}

impl KnownChunks for HashMap<DataId, StripeRecord> {
    fn known(&self, id: &DataId) -> Option<StripeRecord> {
        self.get(id).cloned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("cannot back up {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "two paths given have the same name {0:?}; back them up in separate sets or from their parent"
    )]
    DuplicateRootName(String),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    Exclude(#[from] ExcludeError),
    #[error("backup pipeline stage failed: {0}")]
    Stage(String),
    #[error("the backup's manifest could not be kept on disk (is the temporary directory full?)")]
    Scratch(#[from] crate::spill::SpillError),
    #[error("the backup was cancelled")]
    Cancelled,
}

/// What a backup was asked to do.
#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub name: String,
    pub time_ms: u64,
    pub sizes: ChunkSizes,
    /// Data chunks are keyed under `codec.secret` (grid or private scope).
    pub codec: Codec,
    /// The owner's private secret: the manifest and the snapshot root are
    /// keyed under it, whatever the data's scope.
    pub owner: ConvergenceSecret,
    /// What to leave out (`.strewignore` files are honoured whatever this says).
    pub excludes: ExcludeRules,
}

/// A file or directory the backup skipped, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Warning {
    pub path: PathBuf,
    pub message: String,
}

/// Counters, also read live by progress displays.
#[derive(Debug, Default)]
pub struct Progress {
    pub files: AtomicU64,
    pub bytes_read: AtomicU64,
    pub chunks: AtomicU64,
    pub new_chunks: AtomicU64,
    pub packets: AtomicU64,
    pub bytes_stored: AtomicU64,
    /// Packet bytes sent to targets (grid backups; 0 for a local pipeline run).
    pub uploaded_bytes: AtomicU64,
    /// Set to stop the backup (Ctrl-C, `strew cancel`): the pipeline stops at
    /// the next batch, a grid backup aborts its plans and releases their
    /// reservations.
    pub cancelled: std::sync::atomic::AtomicBool,
}

impl Progress {
    /// Asks the backup to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BackupStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes_in: u64,
    /// Chunks in the snapshot's chunk table (data only).
    pub chunks: u64,
    /// Distinct data chunks encoded and stored by this backup (of `chunks`).
    pub new_chunks: u64,
    /// Chunks of the snapshot's manifest (stored besides the data chunks).
    pub manifest_chunks: u64,
    /// Distinct chunks the index already knew (not uploaded again).
    pub reused_chunks: u64,
    pub compressed_chunks: u64,
    /// Packets stored by this backup, replicas counted once per copy.
    pub packets: u64,
    /// Bytes of those packets.
    pub bytes_stored: u64,
    /// Files, directories and symlinks left out by excludes (a directory counts once).
    pub excluded: u64,
}

#[derive(Debug)]
pub struct BackupReport {
    pub sequence: Sequence,
    /// The snapshot's manifest, its tables in scratch files.
    pub manifest: SpilledManifest,
    pub stats: BackupStats,
    pub warnings: Vec<Warning>,
}

/// Runs a backup of `roots`.
pub fn backup(
    roots: &[PathBuf],
    opts: &BackupOptions,
    known: &dyn KnownChunks,
    sink: &mut dyn PacketSink,
    progress: &Progress,
) -> Result<BackupReport, BackupError> {
    let named = name_roots(roots)?;
    let excluder = Excluder::new(&opts.excludes)?;
    let (chunk_tx, chunk_rx) = sync_channel::<Batch>(CHANNEL_DEPTH);
    let (out_tx, out_rx) = sync_channel::<Vec<Encoded>>(CHANNEL_DEPTH);
    // The chunks seen so far: on disk past a bound, so memory does not
    // grow with the backup.
    let mut claimed = ClaimSet::new();
    let io_pool = io_pool()?;
    let entries = EntrySpill::new()?;

    let (reader_out, writer_out, encoded) = std::thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut r = Reader::new(opts, chunk_tx, progress, &io_pool, excluder, entries);
            r.run(&named);
            r.finish()
        });
        let writer = scope.spawn(|| write_stage(out_rx, sink, progress));
        let encoded = encode_stage(chunk_rx, out_tx, opts, known, &mut claimed, progress);
        (reader.join(), writer.join(), encoded)
    });
    let reader_out = reader_out.map_err(|_| BackupError::Stage("reader panicked".into()))?;
    let mut written = writer_out.map_err(|_| BackupError::Stage("writer panicked".into()))??;
    encoded?;
    let (entries, pack_chunks, warnings, mut stats) = reader_out;
    // The set of the backup's chunks is done with: the manifest's check
    // below scans the chunk table instead (no memory grows with it).
    drop(claimed);
    let chunks = written.take_table()?;
    let head = ManifestHead {
        name: opts.name.clone(),
        time_ms: opts.time_ms,
        roots: roots.iter().map(|p| p.display().to_string()).collect(),
        secret: opts.codec.secret.fingerprint(),
    };
    let manifest = SpilledManifest::new(head, chunks, entries?, pack_chunks)?;
    let data_new = written.new_chunks;
    let (snapshot, manifest_records) =
        manifest_store::store_manifest(&manifest, opts, known, sink, &mut written)?;
    sink.finish()?;
    stats.chunks = manifest.chunk_count();
    stats.new_chunks = data_new;
    stats.manifest_chunks = manifest_records.len() as u64;
    stats.reused_chunks = written.reused;
    stats.compressed_chunks = written.compressed;
    stats.packets = written.packets;
    stats.bytes_stored = written.bytes_stored;
    Ok(BackupReport {
        sequence: Sequence {
            snapshot,
            manifest: manifest_records,
            data: written.records,
        },
        manifest,
        stats,
        warnings,
    })
}

/// Each root is stored under its own final name component.
fn name_roots(roots: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, BackupError> {
    let mut out: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for root in roots {
        fs::symlink_metadata(root).map_err(|source| BackupError::Root {
            path: root.clone(),
            source,
        })?;
        let absolute = fs::canonicalize(root).map_err(|source| BackupError::Root {
            path: root.clone(),
            source,
        })?;
        // `strew backup link` backs up the link itself, named as given.
        let name = root
            .file_name()
            .filter(|n| *n != "." && *n != "..")
            .or_else(|| absolute.file_name())
            .map(|n| n.as_bytes().to_vec())
            .unwrap_or_else(|| b"root".to_vec());
        if out.iter().any(|(_, n)| *n == name) {
            return Err(BackupError::DuplicateRootName(
                String::from_utf8_lossy(&name).into_owned(),
            ));
        }
        out.push((root.clone(), name));
    }
    Ok(out)
}

/// Chunks handed from the reader to the encoders: (chunk index, bytes).
type Batch = Vec<(u32, Vec<u8>)>;

/// One small file read for packing: its bytes and DataId, or `None` if it grew past the minimum.
type SmallRead = std::io::Result<Option<(Vec<u8>, DataId)>>;

/// One encoded chunk as the writer receives it.
struct Encoded {
    index: u32,
    key: ChunkKey,
    len: u32,
    outcome: Outcome,
}

enum Outcome {
    New(EncodedStripe),
    Known(StripeRecord),
    /// Another chunk of this backup with the same DataId carries it.
    Duplicate,
}

fn encode_stage(
    rx: Receiver<Batch>,
    tx: SyncSender<Vec<Encoded>>,
    opts: &BackupOptions,
    known: &dyn KnownChunks,
    claimed: &mut ClaimSet,
    progress: &Progress,
) -> Result<(), BackupError> {
    for batch in rx {
        // Keyed in parallel, claimed in chunk order (the first of two
        // equal chunks carries their stripe), encoded in parallel.
        let keyed: Vec<(u32, ChunkKey, DataId, Vec<u8>)> = batch
            .into_par_iter()
            .map(|(index, bytes)| {
                let key = opts.codec.key(&bytes);
                (index, key, key.storage_index(), bytes)
            })
            .collect();
        let mut firsts = Vec::with_capacity(keyed.len());
        for (_, _, data_id, _) in &keyed {
            firsts.push(claimed.insert(claim(data_id))?);
        }
        let out: Vec<Encoded> = keyed
            .into_par_iter()
            .zip(firsts)
            .map(|((index, key, data_id, bytes), first)| {
                let outcome = if !first {
                    Outcome::Duplicate
                } else if let Some(record) = known.known(&data_id) {
                    Outcome::Known(record)
                } else {
                    Outcome::New(opts.codec.encode(&key, &bytes))
                };
                progress.chunks.fetch_add(1, Ordering::Relaxed);
                Encoded {
                    index,
                    key,
                    len: bytes.len() as u32,
                    outcome,
                }
            })
            .collect();
        if tx.send(out).is_err() {
            return Ok(()); // the writer stopped (sink error): stop encoding
        }
    }
    Ok(())
}

pub(super) struct Written {
    /// The snapshot's chunk table, in chunk order (given up once the walk
    /// is done).
    table: Option<ChunkTable>,
    records: Vec<StripeRecord>,
    new_chunks: u64,
    reused: u64,
    compressed: u64,
    packets: u64,
    bytes_stored: u64,
}

impl Written {
    fn new() -> Result<Self, BackupError> {
        Ok(Written {
            table: Some(ChunkTable::new()?),
            records: Vec::new(),
            new_chunks: 0,
            reused: 0,
            compressed: 0,
            packets: 0,
            bytes_stored: 0,
        })
    }

    /// Appends chunk `index` of the table: chunks arrive in order.
    fn put_chunk(&mut self, index: u32, chunk: ChunkRef) -> Result<(), BackupError> {
        let table = self.table.as_mut().ok_or_else(no_table)?;
        if u64::from(index) != table.items() {
            return Err(BackupError::Stage(format!(
                "chunk {index} reached the chunk table after {} chunks (a bug in strew)",
                table.items()
            )));
        }
        Ok(table.push(&chunk)?)
    }

    fn take_table(&mut self) -> Result<ChunkTable, BackupError> {
        self.table.take().ok_or_else(no_table)
    }

    pub(super) fn account(&mut self, stripe: &EncodedStripe) {
        self.new_chunks += 1;
        self.compressed += u64::from(stripe.compressed);
        self.packets += stripe.record.packets.len() as u64;
        self.bytes_stored += stripe.stored_bytes();
    }
}

fn write_stage(
    rx: Receiver<Vec<Encoded>>,
    sink: &mut dyn PacketSink,
    progress: &Progress,
) -> Result<Written, BackupError> {
    let mut w = Written::new()?;
    for batch in rx {
        // Returning drops the channel: the encoder and the walker stop too.
        if progress.is_cancelled() {
            return Err(BackupError::Cancelled);
        }
        for e in batch {
            w.put_chunk(
                e.index,
                ChunkRef {
                    key: e.key,
                    len: e.len,
                },
            )?;
            match e.outcome {
                Outcome::New(stripe) => {
                    w.account(&stripe);
                    progress.new_chunks.fetch_add(1, Ordering::Relaxed);
                    progress
                        .packets
                        .fetch_add(stripe.record.packets.len() as u64, Ordering::Relaxed);
                    progress
                        .bytes_stored
                        .fetch_add(stripe.stored_bytes(), Ordering::Relaxed);
                    if !sink.order(&stripe.record)? {
                        w.records.push(stripe.record.clone());
                    }
                    sink.store(stripe)?;
                }
                Outcome::Known(record) => {
                    w.reused += 1;
                    if !sink.order(&record)? {
                        w.records.push(record);
                    }
                }
                Outcome::Duplicate => {}
            }
        }
    }
    Ok(w)
}

fn no_table() -> BackupError {
    BackupError::Stage("the chunk table was given up before the last chunk (a bug in strew)".into())
}

type ReaderOutput = (
    Result<EntrySpill, BackupError>,
    PackChunks,
    Vec<Warning>,
    BackupStats,
);

/// Distinct small files the walk remembers to pack identical ones once;
/// past it, it forgets them all and starts again (a repeat is then packed
/// again: a little more stored, no more memory). At most about 34 MB.
const SMALL_FILES_REMEMBERED: usize = 917_504;

struct Reader<'a> {
    opts: &'a BackupOptions,
    tx: Option<SyncSender<Batch>>,
    progress: &'a Progress,
    entries: EntrySpill,
    /// Why the entries could not be kept (the walk stopped there).
    failed: Option<BackupError>,
    warnings: Vec<Warning>,
    stats: BackupStats,
    next_chunk: u32,
    batch: Batch,
    batch_bytes: usize,
    /// Bytes of the packed stream not yet cut, and where they start in it.
    pack: Vec<u8>,
    pack_start: u64,
    pack_chunks: PackChunks,
    /// Identical small files share one copy in the stream: a small file's
    /// claim → where its bytes start in the stream.
    small_by_id: HashMap<u128, u64>,
    /// Small files waiting to be read in parallel.
    small_queue: Vec<(PathBuf, Entry)>,
    small_queue_bytes: u64,
    io_pool: &'a rayon::ThreadPool,
    excluder: Excluder,
}

impl<'a> Reader<'a> {
    fn new(
        opts: &'a BackupOptions,
        tx: SyncSender<Batch>,
        progress: &'a Progress,
        io_pool: &'a rayon::ThreadPool,
        excluder: Excluder,
        entries: EntrySpill,
    ) -> Self {
        Reader {
            opts,
            tx: Some(tx),
            progress,
            entries,
            failed: None,
            warnings: Vec::new(),
            stats: BackupStats::default(),
            next_chunk: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            pack: Vec::new(),
            pack_start: 0,
            pack_chunks: Vec::new(),
            small_by_id: HashMap::new(),
            small_queue: Vec::new(),
            small_queue_bytes: 0,
            io_pool,
            excluder,
        }
    }

    /// Keeps `entry` (with where its bytes are in the packed stream, for a
    /// packed small file); if it cannot, the walk stops.
    fn keep(&mut self, entry: Entry, packed: Option<(u64, u64)>) {
        let kept = match packed {
            None => self.entries.push(entry),
            Some((stream_off, len)) => self.entries.push_packed(entry, stream_off, len),
        };
        if let Err(e) = kept {
            self.failed.get_or_insert(e.into());
            self.tx = None;
        }
    }

    fn warn(&mut self, path: &Path, message: impl Into<String>) {
        let message = message.into();
        tracing::warn!(path = %path.display(), %message, "skipped during backup");
        self.warnings.push(Warning {
            path: path.to_path_buf(),
            message,
        });
    }

    fn run(&mut self, roots: &[(PathBuf, Vec<u8>)]) {
        // Iterative pre-order walk; children sorted by name for determinism.
        let mut stack: Vec<(PathBuf, Vec<u8>, bool)> = roots
            .iter()
            .rev()
            .map(|(p, r)| (p.clone(), r.clone(), true))
            .collect();
        while let Some((path, rel, is_root)) = stack.pop() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    self.warn(&path, format!("cannot stat: {e}"));
                    continue;
                }
            };
            if is_root {
                self.excluder.enter_root(&path, &meta);
            }
            if self.excluder.excluded(&path, &meta).is_some() {
                self.stats.excluded += 1;
                continue;
            }
            let ft = meta.file_type();
            let mut entry = Entry {
                path: ByteBuf::from(rel.clone()),
                mode: meta.mode() & 0o7777,
                mtime_s: meta.mtime(),
                mtime_ns: meta.mtime_nsec().clamp(0, 999_999_999) as u32,
                kind: EntryKind::Dir,
            };
            if ft.is_dir() {
                if let Some(problem) = self.excluder.enter_dir(&path) {
                    self.warn(&path.join(super::exclude::IGNORE_FILE), problem);
                }
                let mut children = match fs::read_dir(&path) {
                    Ok(rd) => {
                        let mut v = Vec::new();
                        for item in rd {
                            match item {
                                Ok(item) => v.push(item.file_name()),
                                Err(e) => self.warn(&path, format!("cannot list: {e}")),
                            }
                        }
                        v
                    }
                    Err(e) => {
                        self.warn(&path, format!("cannot list directory: {e}"));
                        Vec::new()
                    }
                };
                children.sort();
                self.keep(entry, None);
                self.stats.dirs += 1;
                for name in children.into_iter().rev() {
                    let mut child_rel = rel.clone();
                    child_rel.push(b'/');
                    child_rel.extend_from_slice(name.as_bytes());
                    stack.push((path.join(&name), child_rel, false));
                }
            } else if ft.is_symlink() {
                match fs::read_link(&path) {
                    Ok(target) => {
                        entry.kind = EntryKind::Symlink {
                            target: ByteBuf::from(target.as_os_str().as_bytes().to_vec()),
                        };
                        self.keep(entry, None);
                        self.stats.symlinks += 1;
                    }
                    Err(e) => self.warn(&path, format!("cannot read link: {e}")),
                }
            } else if ft.is_file() {
                self.file(&path, entry, meta.len());
            } else {
                self.warn(
                    &path,
                    "not a regular file, directory or symlink (device, fifo or socket)",
                );
            }
            if self.tx.is_none() {
                return; // downstream stopped
            }
        }
    }

    fn file(&mut self, path: &Path, entry: Entry, size_hint: u64) {
        if size_hint < u64::from(self.opts.sizes.min) {
            self.small_queue_bytes += size_hint;
            self.small_queue.push((path.to_path_buf(), entry));
            if self.small_queue.len() >= SMALL_QUEUE_FILES
                || self.small_queue_bytes >= SMALL_QUEUE_BYTES
            {
                self.drain_small();
            }
        } else {
            self.drain_small();
            self.large_file(path, entry);
        }
    }

    /// Reads the queued small files on the I/O pool (opening and reading
    /// many small files is latency-bound, not CPU-bound), then packs them
    /// into the stream in queue order, so the result is deterministic.
    fn drain_small(&mut self) {
        if self.small_queue.is_empty() {
            return;
        }
        let queue = std::mem::take(&mut self.small_queue);
        self.small_queue_bytes = 0;
        let min = u64::from(self.opts.sizes.min);
        let secret = &self.opts.codec.secret;
        let read: Vec<SmallRead> = self.io_pool.install(|| {
            queue
                .par_iter()
                .map(|(path, _)| {
                    let mut buf = Vec::new();
                    File::open(path)?.take(min).read_to_end(&mut buf)?;
                    if buf.len() as u64 >= min {
                        return Ok(None); // it grew while we looked
                    }
                    let id = secret.file_id(&buf);
                    Ok(Some((buf, id)))
                })
                .collect()
        });
        for ((path, mut entry), result) in queue.into_iter().zip(read) {
            let (buf, data_id) = match result {
                Ok(Some(x)) => x,
                Ok(None) => {
                    self.large_file(&path, entry);
                    continue;
                }
                Err(e) => {
                    self.warn(&path, format!("cannot read: {e}"));
                    continue;
                }
            };
            let len = buf.len() as u64;
            let stream_off = match self.small_by_id.get(&claim(&data_id)) {
                Some(off) => *off,
                None => {
                    let off = self.pack_start + self.pack.len() as u64;
                    self.pack.extend_from_slice(&buf);
                    if self.small_by_id.len() == SMALL_FILES_REMEMBERED {
                        self.small_by_id.clear();
                    }
                    self.small_by_id.insert(claim(&data_id), off);
                    if self.pack.len() >= 2 * self.opts.sizes.max as usize {
                        self.cut_pack(false);
                    }
                    off
                }
            };
            entry.kind = EntryKind::File {
                size: len,
                data_id,
                extents: Vec::new(),
            };
            self.keep(entry, Some((stream_off, len)));
            self.count_file(len);
        }
    }

    fn large_file(&mut self, path: &Path, mut entry: Entry) {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => return self.warn(path, format!("cannot open: {e}")),
        };
        let s = self.opts.sizes;
        let cdc =
            fastcdc::v2020::StreamCDC::new(file, s.min as usize, s.avg as usize, s.max as usize);
        let mut hasher = self.opts.codec.secret.file_id_hasher();
        let mut extents = Vec::new();
        let mut size = 0u64;
        for chunk in cdc {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // Chunks already emitted stay orphaned in the sequence;
                    // the file itself is left out of the snapshot.
                    return self.warn(path, format!("read failed after {size} bytes: {e}"));
                }
            };
            hasher.update(&chunk.data);
            size += chunk.data.len() as u64;
            self.progress
                .bytes_read
                .fetch_add(chunk.data.len() as u64, Ordering::Relaxed);
            let index = self.emit(chunk.data);
            extents.push(Extent {
                chunk: index,
                offset: 0,
                len: chunk.length as u32,
            });
            if self.tx.is_none() {
                return;
            }
        }
        entry.kind = EntryKind::File {
            size,
            data_id: DataId(*hasher.finalize().as_bytes()),
            extents,
        };
        self.keep(entry, None);
        self.stats.files += 1;
        self.stats.bytes_in += size;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
    }

    fn count_file(&mut self, len: u64) {
        self.stats.files += 1;
        self.stats.bytes_in += len;
        self.progress.files.fetch_add(1, Ordering::Relaxed);
        self.progress.bytes_read.fetch_add(len, Ordering::Relaxed);
    }

    /// Cuts the packed stream into chunks; unless `all`, keeps the last
    /// (possibly incomplete) chunk's bytes for the next cut, exactly as a
    /// streaming chunker would.
    fn cut_pack(&mut self, all: bool) {
        if self.pack.is_empty() {
            return;
        }
        let s = self.opts.sizes;
        let cuts: Vec<(usize, usize)> = fastcdc::v2020::FastCDC::new(
            &self.pack,
            s.min as usize,
            s.avg as usize,
            s.max as usize,
        )
        .map(|c| (c.offset, c.length))
        .collect();
        let keep_from = if all {
            self.pack.len()
        } else {
            cuts.last().map_or(0, |(off, _)| *off)
        };
        for (off, len) in cuts {
            if off >= keep_from {
                break;
            }
            let data = self.pack[off..off + len].to_vec();
            let index = self.emit(data);
            self.pack_chunks
                .push((self.pack_start + off as u64, index, len as u32));
        }
        self.pack.drain(..keep_from);
        self.pack_start += keep_from as u64;
    }

    fn emit(&mut self, data: Vec<u8>) -> u32 {
        let index = self.next_chunk;
        self.next_chunk += 1;
        self.batch_bytes += data.len();
        self.batch.push((index, data));
        if self.batch_bytes >= BATCH_BYTES || self.batch.len() >= BATCH_CHUNKS {
            self.flush();
        }
        index
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if let Some(tx) = &self.tx
            && tx.send(batch).is_err()
        {
            self.tx = None;
        }
    }

    fn finish(mut self) -> ReaderOutput {
        self.drain_small();
        self.cut_pack(true);
        self.flush();
        self.tx = None;
        let entries = match self.failed {
            None => Ok(self.entries),
            Some(e) => Err(e),
        };
        (entries, self.pack_chunks, self.warnings, self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::Redundancy;

    /// The first of equal chunks is encoded, the others are duplicates,
    /// also once the set of chunks seen has moved to disk.
    #[test]
    fn the_encode_stage_stores_each_distinct_chunk_once_with_its_set_on_disk() {
        let codec = Codec {
            secret: ConvergenceSecret::from_bytes([5; 32]),
            zstd_level: 1,
            redundancy: Redundancy::Replicas { n: 1 },
        };
        let opts = BackupOptions {
            name: "t".into(),
            time_ms: 0,
            sizes: ChunkSizes::default(),
            codec: codec.clone(),
            owner: codec.secret.clone(),
            excludes: Default::default(),
        };
        let (chunk_tx, chunk_rx) = sync_channel::<Batch>(8);
        let (out_tx, out_rx) = sync_channel::<Vec<Encoded>>(8);
        // 40 chunks of 12 distinct contents, in two batches.
        let content = |i: u32| vec![(i % 12) as u8; 100 + (i % 12) as usize];
        chunk_tx
            .send((0..20).map(|i| (i, content(i))).collect())
            .expect("send");
        chunk_tx
            .send((20..40).map(|i| (i, content(i))).collect())
            .expect("send");
        drop(chunk_tx);
        let mut claimed = ClaimSet::with_memory(3);
        let progress = Progress::default();
        encode_stage(
            chunk_rx,
            out_tx,
            &opts,
            &NothingKnown,
            &mut claimed,
            &progress,
        )
        .expect("encode");
        assert!(claimed.on_disk());
        assert_eq!(claimed.len(), 12);
        let out: Vec<Encoded> = out_rx.iter().flatten().collect();
        assert_eq!(out.len(), 40);
        for e in &out {
            let first = e.index < 12;
            match e.outcome {
                Outcome::New(_) => assert!(first, "chunk {} encoded again", e.index),
                Outcome::Duplicate => assert!(!first, "chunk {} not stored", e.index),
                Outcome::Known(_) => panic!("nothing is known"),
            }
        }
        assert_eq!(progress.chunks.load(Ordering::Relaxed), 40);
    }
}
