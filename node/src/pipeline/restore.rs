//! The way back: sequence + packets + the owner's secret → the tree,
//! byte-identical.
//!
//! Opens the snapshot root with a key derived from the owner's private
//! secret, decodes the manifest's stripes with the keys the root lists and
//! checks them against the snapshot's manifest id, picks the convergence
//! secret the manifest names (to verify data chunks), validates the manifest
//! as it streams into scratch files ([`DiskManifest`]: paths stay inside
//! DEST, times and modes in range), creates
//! directories and files, then decodes every distinct chunk once, in
//! sequence order and in parallel, verifying each chunk's hash, and writes
//! its extents where they belong. Runs of zeros are not written, so sparse
//! files come back sparse and of the right length. Symlinks are created
//! last and modes and mtimes set after all contents (directories deepest
//! first), so no write ever goes through a restored symlink. Setuid,
//! setgid and sticky bits are masked unless asked for; times beyond
//! ±[`MAX_MTIME_S`] seconds are clamped.

use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;
use strew_coordinator::{DataId, PacketId};

use super::chunk_writes::{ChunkWrites, ChunkWritesError, Selected, Write};
use super::codec::{Codec, PacketSource, StripeError, StripeRecord};
use super::manifest::{Entry, EntryKind, MAX_MANIFEST_BYTES, ManifestError};
use super::manifest_disk::DiskManifest;
use super::secret::{ChunkKey, ConvergenceSecret};
use super::sequence::Sequence;
use crate::spill::SpillError;

/// Restored times are clamped to ±this many seconds around 1970 (about
/// 34,000 years): every real file system's range fits, and no arithmetic
/// on a manifest's time can overflow.
pub const MAX_MTIME_S: i64 = 1 << 40;

/// Stripes decoded concurrently per step (bounds memory: each ≤ 4 MiB).
const STRIPES_IN_FLIGHT: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error("snapshot manifest")]
    Manifest(#[from] ManifestError),
    #[error("the manifest decodes to {actual}, not to the snapshot id {expected}")]
    ManifestMismatch { expected: DataId, actual: DataId },
    #[error(
        "the snapshot root does not open with this node's private convergence secret: restore with \
         the key this snapshot was made with (`strew key import`)"
    )]
    NotOwner,
    #[error("the sequence has no snapshot root (made by a strew older than format version 2?)")]
    NoRoot,
    #[error("the snapshot root holds {0} bytes, not one 32-byte key per manifest chunk")]
    BadRoot(usize),
    #[error(
        "the snapshot's data was keyed under a convergence secret this node does not have \
         (a grid-scope snapshot needs the grid's grid-convergence.key in the data dir)"
    )]
    UnknownSecret,
    #[error("chunk {data_id} decodes to {actual} bytes, but the snapshot needs {expected}")]
    ChunkLength {
        data_id: DataId,
        expected: u64,
        actual: u64,
    },
    #[error("the sequence has no stripe for chunk {0}, which the manifest needs")]
    MissingStripe(DataId),
    #[error("reading the snapshot's sequence: {0}")]
    Sequence(String),
    #[error(
        "{0} exists and is not empty; restore into a new or empty directory, or pass --overwrite to replace what is there"
    )]
    DestNotEmpty(PathBuf),
    #[error(transparent)]
    Select(#[from] super::select::SelectError),
    #[error(
        "the snapshot has more than 2^32 entries or file extents: restore parts of it with --include"
    )]
    TooManyWrites,
    #[error("the restore's tables could not be kept on disk (is the temporary directory full?)")]
    Scratch(#[from] SpillError),
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<ChunkWritesError> for RestoreError {
    fn from(e: ChunkWritesError) -> Self {
        match e {
            ChunkWritesError::TooMany => RestoreError::TooManyWrites,
            ChunkWritesError::Scratch(e) => RestoreError::Scratch(e),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore into a non-empty DEST, replacing what the snapshot names.
    pub overwrite: bool,
    /// Keep setuid, setgid and sticky bits (masked by default).
    pub preserve_setid: bool,
    /// Only these paths or patterns (and the directories above them); all when empty.
    pub include: Vec<String>,
}

/// Counters, also read live by progress displays.
#[derive(Debug, Default)]
pub struct RestoreProgress {
    pub total_bytes: AtomicU64,
    pub bytes_written: AtomicU64,
    pub stripes: AtomicU64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub stripes: u64,
    /// Stripes rebuilt with parity because packets were missing or corrupt.
    pub degraded_stripes: u64,
    /// (JSON: packet ids in hex, as everywhere else.)
    #[serde(serialize_with = "ids_as_text")]
    pub missing_packets: Vec<PacketId>,
    #[serde(serialize_with = "ids_as_text")]
    pub corrupt_packets: Vec<PacketId>,
}

/// Serialises packet ids as their hex text.
fn ids_as_text<S: serde::Serializer>(ids: &[PacketId], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ids.iter().map(ToString::to_string))
}

/// The secrets a restore uses.
#[derive(Debug, Clone)]
pub struct RestoreKeys {
    /// The owner's private secret: opens the snapshot root and verifies the manifest.
    pub owner: ConvergenceSecret,
    /// Secrets the data may be keyed under (the grid's, the private one);
    /// the manifest names which by its fingerprint.
    pub data: Vec<ConvergenceSecret>,
}

/// A codec for decoding only (compression level and redundancy come from the packets).
fn decoder(secret: ConvergenceSecret) -> Codec {
    Codec {
        secret,
        zstd_level: 3,
        redundancy: strew_coordinator::Redundancy::Erasure { k: 1, m: 1 },
    }
}

/// Opens the snapshot root, decodes and validates the manifest as it
/// streams in, keeping it in scratch files (what a restore holds: a few
/// bytes an entry, not the manifest), and returns it with the codec that
/// verifies its data chunks.
pub fn open_manifest(
    sequence: &Sequence,
    keys: &RestoreKeys,
    source: &dyn PacketSource,
) -> Result<(DiskManifest, Codec), RestoreError> {
    let manifest = decode_manifest(sequence, keys, source, |r| DiskManifest::decode_from(r))?;
    let codec = data_codec(keys, &manifest.head.secret)?;
    Ok((manifest, codec))
}

/// [`open_manifest`], each byte the decoder reads also written to `copy`
/// (a cache of the manifest, read again with
/// [`DiskManifest::decode_from`]). The copy is best effort: whether it is
/// whole is the answer's `bool`; a failed write never fails the decode.
pub fn open_manifest_copying(
    sequence: &Sequence,
    keys: &RestoreKeys,
    source: &dyn PacketSource,
    copy: &mut dyn std::io::Write,
) -> Result<(DiskManifest, Codec, bool), RestoreError> {
    let mut whole = true;
    let manifest = decode_manifest(sequence, keys, source, |r| {
        DiskManifest::decode_from(Tee {
            from: r,
            copy,
            whole: &mut whole,
        })
    })?;
    let codec = data_codec(keys, &manifest.head.secret)?;
    Ok((manifest, codec, whole && copy.flush().is_ok()))
}

/// A reader that writes what it reads to `copy` until a write fails.
struct Tee<'a> {
    from: &'a mut dyn std::io::Read,
    copy: &'a mut dyn std::io::Write,
    whole: &'a mut bool,
}

impl std::io::Read for Tee<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.from.read(buf)?;
        if *self.whole && self.copy.write_all(&buf[..n]).is_err() {
            *self.whole = false;
        }
        Ok(n)
    }
}

/// The codec that verifies data keyed under the secret whose fingerprint
/// the manifest names.
fn data_codec(keys: &RestoreKeys, fingerprint: &[u8; 32]) -> Result<Codec, RestoreError> {
    let secret = keys
        .data
        .iter()
        .chain(std::iter::once(&keys.owner))
        .find(|s| s.fingerprint() == *fingerprint)
        .ok_or(RestoreError::UnknownSecret)?;
    Ok(decoder(secret.clone()))
}

/// Opens the snapshot root and hands the manifest's bytes, decrypted and
/// checked against the snapshot id as they stream, to `decode`.
fn decode_manifest<T>(
    sequence: &Sequence,
    keys: &RestoreKeys,
    source: &dyn PacketSource,
    decode: impl FnOnce(&mut dyn std::io::Read) -> Result<T, ManifestError>,
) -> Result<T, RestoreError> {
    let owner = decoder(keys.owner.clone());
    let (root, stripes) = sequence
        .manifest
        .split_first()
        .ok_or(RestoreError::NoRoot)?;
    let indices: Vec<DataId> = stripes.iter().map(|s| s.data_id).collect();
    let root_key = keys.owner.root_key(&indices);
    let (listed, _) = match owner.decode_unverified(root, &root_key, source) {
        Ok(x) => x,
        Err(StripeError::WrongKey { .. }) => return Err(RestoreError::NotOwner),
        Err(e) => return Err(e.into()),
    };
    if listed.len() != 32 * stripes.len() {
        return Err(RestoreError::BadRoot(listed.len()));
    }
    let chunk_keys: Vec<ChunkKey> = listed
        .chunks_exact(32)
        .map(|c| {
            let mut k = [0u8; 32];
            k.copy_from_slice(c);
            ChunkKey(k)
        })
        .collect();
    // The manifest is decoded as its stripes are, a batch at a time, and
    // hashed on the way: its bytes are never all held besides its decoded
    // form (a million-chunk manifest is tens of MB).
    let mut reader = ManifestReader {
        owner: &owner,
        source,
        batches: stripes
            .chunks(MANIFEST_BATCH)
            .zip(chunk_keys.chunks(MANIFEST_BATCH)),
        pieces: std::collections::VecDeque::new(),
        current: (Vec::new(), 0),
        hasher: keys.owner.chunk_key_hasher(),
        read: 0,
        failed: None,
    };
    let decoded = decode(&mut reader);
    if let Some(e) = reader.failed.take() {
        return Err(e.into());
    }
    // The rest (nothing, in a well-formed manifest) is hashed too: the
    // snapshot id covers every byte.
    if std::io::copy(&mut reader, &mut std::io::sink()).is_err() {
        if let Some(e) = reader.failed.take() {
            return Err(e.into());
        }
        return Err(ManifestError::TooLarge(reader.read).into());
    }
    let actual = ChunkKey(*reader.hasher.finalize().as_bytes()).storage_index();
    if actual != sequence.snapshot {
        return Err(RestoreError::ManifestMismatch {
            expected: sequence.snapshot,
            actual,
        });
    }
    Ok(decoded?)
}

/// Manifest stripes decoded (in parallel) a batch at a time: a manifest
/// stripe holds about 1 MiB (at most 4), so a batch holds about 8 MiB of
/// the manifest's bytes, enough to keep the cores busy.
const MANIFEST_BATCH: usize = 8;

/// The manifest's plaintext as a reader: its stripes are decoded a batch
/// at a time as the CBOR decoder asks for bytes, and hashed as they are. A
/// stripe that fails stops it (`failed` says why); so does a manifest past
/// [`MAX_MANIFEST_BYTES`].
struct ManifestReader<'a, I> {
    owner: &'a Codec,
    source: &'a dyn PacketSource,
    batches: I,
    pieces: std::collections::VecDeque<Vec<u8>>,
    /// The piece being read, and how far.
    current: (Vec<u8>, usize),
    hasher: blake3::Hasher,
    read: usize,
    failed: Option<StripeError>,
}

impl<'a, I> std::io::Read for ManifestReader<'a, I>
where
    I: Iterator<Item = (&'a [StripeRecord], &'a [ChunkKey])>,
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let (piece, at) = &mut self.current;
            if *at < piece.len() {
                let n = buf.len().min(piece.len() - *at);
                buf[..n].copy_from_slice(&piece[*at..*at + n]);
                *at += n;
                return Ok(n);
            }
            if let Some(next) = self.pieces.pop_front() {
                self.current = (next, 0);
                continue;
            }
            if self.failed.is_some() {
                return Err(std::io::Error::other("a manifest stripe failed"));
            }
            let Some((stripes, keys)) = self.batches.next() else {
                return Ok(0);
            };
            let (owner, source) = (self.owner, self.source);
            let decoded: Vec<Result<Vec<u8>, StripeError>> = stripes
                .par_iter()
                .zip(keys.par_iter())
                .map(|(s, key)| owner.decode(s, key, source).map(|(bytes, _)| bytes))
                .collect();
            for piece in decoded {
                match piece {
                    Ok(bytes) => {
                        self.hasher.update(&bytes);
                        self.read += bytes.len();
                        if self.read > MAX_MANIFEST_BYTES {
                            return Err(std::io::Error::other("manifest too large"));
                        }
                        self.pieces.push_back(bytes);
                    }
                    Err(e) => {
                        self.failed = Some(e);
                        return Err(std::io::Error::other("a manifest stripe failed"));
                    }
                }
            }
        }
    }
}

/// Where `e` is restored (made when needed, not kept: a tree of a million
/// files would hold a million paths).
fn entry_path(dest: &Path, e: &Entry) -> PathBuf {
    dest.join(std::ffi::OsStr::from_bytes(&e.path))
}

/// A file's size (0 for anything else).
fn size_of(e: &Entry) -> u64 {
    match e.kind {
        EntryKind::File { size, .. } => size,
        _ => 0,
    }
}

/// A snapshot's data stripes in sequence order, a page at a time: a grid
/// restore reads its sequence from the manager page by page (and the
/// targets and read tickets of each page) while the chunks of the page
/// before are decoded, so it starts at once and holds a page, not the
/// sequence.
pub trait StripePages {
    /// The next page of data stripes; `None` after the last.
    fn next_page(&mut self) -> Result<Option<Vec<StripeRecord>>, RestoreError>;
}

/// Data stripes held in memory, handed out in pages.
pub struct InMemory<'a> {
    rest: &'a [StripeRecord],
}

impl<'a> InMemory<'a> {
    pub fn new(data: &'a [StripeRecord]) -> Self {
        InMemory { rest: data }
    }
}

impl StripePages for InMemory<'_> {
    fn next_page(&mut self) -> Result<Option<Vec<StripeRecord>>, RestoreError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let (page, rest) = self.rest.split_at(self.rest.len().min(4096));
        self.rest = rest;
        Ok(Some(page.to_vec()))
    }
}

/// Restores the snapshot described by `sequence` into `dest`.
pub fn restore(
    sequence: &Sequence,
    keys: &RestoreKeys,
    source: &dyn PacketSource,
    dest: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport, RestoreError> {
    let mut pages = InMemory::new(&sequence.data);
    restore_paged(sequence, &mut pages, keys, source, dest, opts, progress)
}

/// Restores the snapshot whose root and manifest stripes `head` holds
/// (its `data` is not read) and whose data stripes `pages` hands out.
pub fn restore_paged(
    head: &Sequence,
    pages: &mut dyn StripePages,
    keys: &RestoreKeys,
    source: &dyn PacketSource,
    dest: &Path,
    opts: &RestoreOptions,
    progress: &RestoreProgress,
) -> Result<RestoreReport, RestoreError> {
    let (manifest, codec) = open_manifest(head, keys, source)?;
    let codec = &codec;
    let manifest = &manifest;
    // With --include, only the chunks the selected files need are decoded,
    // so only their stripes are fetched.
    let wanted = if opts.include.is_empty() {
        None
    } else {
        let mut wanting = super::select::Wanting::new(&opts.include)?;
        for e in manifest.heads() {
            wanting.push(&e?);
        }
        Some(wanting.finish()?)
    };
    let tables = Selected {
        manifest,
        wanted: wanted.as_deref(),
    };
    let taken = |i: usize| wanted.as_ref().is_none_or(|w| w[i]);
    prepare_dest(dest, opts.overwrite)?;
    let mut report = RestoreReport::default();

    // 1. Directories, in order; then which chunks each file needs.
    // Files whose bytes all come from one chunk are created, written and
    // finished by the worker that decodes that chunk: one open per file.
    let mut single: Vec<bool> = vec![false; manifest.entry_count()];
    let mut multi: Vec<u32> = Vec::new();
    let mut empty: Vec<u32> = Vec::new();
    for (i, e) in manifest.entries().enumerate() {
        let e = e?;
        if !taken(i) {
            continue;
        }
        match &e.kind {
            EntryKind::Dir => {
                let path = &entry_path(dest, &e);
                clear_non_dir(path, opts.overwrite)?;
                if !path.is_dir() {
                    fs::create_dir(path).map_err(io(path))?;
                }
                report.dirs += 1;
            }
            EntryKind::File { size, extents, .. } => {
                // By table index: a file whose extents name two places of
                // one chunk is written as a file of several chunks.
                let first = extents.first().map(|x| x.chunk);
                match first {
                    None => empty.push(i as u32),
                    Some(c) if extents.iter().all(|x| x.chunk == c) => single[i] = true,
                    Some(_) => multi.push(i as u32),
                }
                report.files += 1;
                report.bytes += size;
            }
            EntryKind::Symlink { .. } => report.symlinks += 1,
        }
    }
    progress.total_bytes.store(report.bytes, Ordering::Relaxed);
    let mut writes = ChunkWrites::build(&tables)?;
    let pool = super::backup::io_pool().map_err(|e| RestoreError::Io {
        path: dest.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    // Empty files are finished now; multi-chunk files are created at their
    // full size (which also makes their holes) and written chunk by chunk.
    pool.install(|| {
        empty.par_iter().chain(multi.par_iter()).try_for_each(|&i| {
            let e = manifest.entry(i)?;
            let path = &entry_path(dest, &e);
            clear_non_dir(path, opts.overwrite)?;
            let f = File::create_new(path).map_err(io(path))?;
            f.set_len(size_of(&e)).map_err(io(path))?;
            if size_of(&e) == 0 {
                finish_file(&f, path, &e, opts)?;
            }
            Ok::<(), RestoreError>(())
        })
    })?;
    drop((empty, multi));

    // 2. Contents: each needed stripe once, in sequence order, a page at
    // a time; a chunk's writes are dropped once it is written.
    let notes = Mutex::new(&mut report);
    while let Some(page) = pages.next_page()? {
        // Each needed chunk once: claimed as it is met.
        let mut order: Vec<(&StripeRecord, u32, ChunkKey)> = Vec::new();
        for s in &page {
            if let Some((c, key)) = writes.claim(&tables, &s.data_id)? {
                order.push((s, c, key));
            }
        }
        write_stripes(
            &order,
            &writes,
            &Context {
                pool: &pool,
                codec,
                source,
                dest,
                single: &single,
                manifest,
                opts,
                progress,
                notes: &notes,
            },
        )?;
    }
    if let Some(missing) = writes.first_left(&tables)? {
        return Err(RestoreError::MissingStripe(missing));
    }

    // 3. Symlinks, then metadata: files, symlinks, directories deepest first.
    for (i, e) in manifest.heads().enumerate() {
        let e = e?;
        if let (true, EntryKind::Symlink { target }) = (taken(i), &e.kind) {
            let path = &entry_path(dest, &e);
            clear_non_dir(path, opts.overwrite)?;
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), path)
                .map_err(io(path))?;
        }
    }
    for i in (0..manifest.entry_count()).rev() {
        if !taken(i) {
            continue;
        }
        let e = manifest.entry(i as u32)?;
        let path = &entry_path(dest, &e);
        let (s, ns) = clamp_time(e.mtime_s, e.mtime_ns);
        let mtime = filetime::FileTime::from_unix_time(s, ns);
        match e.kind {
            EntryKind::Symlink { .. } => {
                filetime::set_symlink_file_times(path, mtime, mtime).map_err(io(path))?;
            }
            EntryKind::File { .. } if single[i] || size_of(&e) == 0 => {} // finished already
            EntryKind::File { .. } | EntryKind::Dir => {
                fs::set_permissions(path, fs::Permissions::from_mode(mode(e.mode, opts)))
                    .map_err(io(path))?;
                filetime::set_file_times(path, mtime, mtime).map_err(io(path))?;
            }
        }
    }
    Ok(report)
}

/// What decoding and writing stripes needs from the restore.
struct Context<'a, 'r> {
    pool: &'a rayon::ThreadPool,
    codec: &'a Codec,
    source: &'a dyn PacketSource,
    dest: &'a Path,
    single: &'a [bool],
    manifest: &'a DiskManifest,
    opts: &'a RestoreOptions,
    progress: &'a RestoreProgress,
    notes: &'a Mutex<&'r mut RestoreReport>,
}

/// Decodes `order`'s stripes ([`STRIPES_IN_FLIGHT`] at once), verifies
/// each chunk and writes its extents where `writes` says.
fn write_stripes(
    order: &[(&StripeRecord, u32, ChunkKey)],
    writes: &ChunkWrites,
    cx: &Context<'_, '_>,
) -> Result<(), RestoreError> {
    let Context {
        pool,
        codec,
        source,
        dest,
        single,
        manifest,
        opts,
        progress,
        notes,
    } = *cx;
    for group in order.chunks(STRIPES_IN_FLIGHT) {
        // The paths of the files of several chunks that this group writes
        // into, each read once (a large file's chunks come one after the
        // other); a file of one chunk is read by the worker that makes it.
        let chunks: Vec<u32> = group.iter().map(|&(_, c, _)| c).collect();
        let needs = writes.writes_of(&chunks)?;
        let mut shared: Vec<u32> = needs
            .iter()
            .flatten()
            .map(|w| w.file)
            .filter(|&f| !single[f as usize])
            .collect();
        shared.sort_unstable();
        shared.dedup();
        let shared: Vec<(u32, PathBuf)> = shared
            .into_iter()
            .map(|f| Ok((f, entry_path(dest, &manifest.entry(f)?))))
            .collect::<Result<_, RestoreError>>()?;
        let shared_path = |f: u32| {
            shared
                .binary_search_by_key(&f, |(g, _)| *g)
                .ok()
                .map(|at| &shared[at].1)
        };
        pool.install(|| {
            group.par_iter().zip(&needs).try_for_each(|(&(stripe, _, key), need)| {
                let (chunk, n) = codec.decode(stripe, &key, source)?;
                if chunk.len() != stripe.plain_len as usize && stripe.plain_len != 0 {
                    return Err(RestoreError::ChunkLength {
                        data_id: stripe.data_id,
                        expected: u64::from(stripe.plain_len),
                        actual: chunk.len() as u64,
                    });
                }
                let needed = need
                    .iter()
                    .map(|w| u64::from(w.off) + u64::from(w.len))
                    .max()
                    .unwrap_or(0);
                if needed > chunk.len() as u64 {
                    return Err(RestoreError::ChunkLength {
                        data_id: stripe.data_id,
                        expected: needed,
                        actual: chunk.len() as u64,
                    });
                }
                let mut targets = need.iter().peekable();
                while let Some(&Write {
                    file,
                    off,
                    len,
                    at,
                }) = targets.next()
                {
                    let piece = |off: u32, len: u32| &chunk[off as usize..(off + len) as usize];
                    if let Some(path) = shared_path(file) {
                        let f = OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_NOFOLLOW)
                            .open(path)
                            .map_err(io(path))?;
                        write_extent(&f, path, at, piece(off, len))?;
                        progress.bytes_written.fetch_add(u64::from(len), Ordering::Relaxed);
                    } else {
                        let entry = manifest.entry(file)?;
                        let path = &entry_path(dest, &entry);
                        // Every extent of this file is in this chunk, listed
                        // consecutively: write them all through one handle.
                        clear_non_dir(path, opts.overwrite)?;
                        let f = File::create_new(path).map_err(io(path))?;
                        let mut written = u64::from(len);
                        write_extent(&f, path, at, piece(off, len))?;
                        while let Some(&&Write {
                            file: next,
                            off,
                            len,
                            at,
                        }) = targets.peek()
                        {
                            if next != file {
                                break;
                            }
                            targets.next();
                            write_extent(&f, path, at, piece(off, len))?;
                            written += u64::from(len);
                        }
                        f.set_len(size_of(&entry)).map_err(io(path))?;
                        finish_file(&f, path, &entry, opts)?;
                        progress.bytes_written.fetch_add(written, Ordering::Relaxed);
                    }
                }
                progress.stripes.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut r) = notes.lock() {
                    r.stripes += 1;
                    if !n.missing.is_empty() || !n.corrupt.is_empty() {
                        r.degraded_stripes += 1;
                        if !n.corrupt.is_empty() {
                            tracing::warn!(chunk = %stripe.data_id, corrupt = ?n.corrupt, "corrupt packets skipped; rebuilt from the rest of the stripe");
                        }
                        r.missing_packets.extend(n.missing);
                        r.corrupt_packets.extend(n.corrupt);
                    }
                }
                Ok::<(), RestoreError>(())
            })
        })?;
    }
    Ok(())
}

/// Writes `bytes` at `at`, leaving runs of zeros as holes (the file is
/// sized with `set_len`, so they read back as zeros).
fn write_extent(f: &File, path: &Path, at: u64, bytes: &[u8]) -> Result<(), RestoreError> {
    // Blocks aligned to the file (not to the extent), so holes line up with
    // the file system's pages; consecutive non-zero blocks go out in one write.
    let mut pos = 0usize;
    while pos < bytes.len() {
        let block_end = |p: usize| {
            let file_off = at + p as u64;
            let next = (file_off / HOLE_BLOCK + 1) * HOLE_BLOCK;
            (p + (next - file_off) as usize).min(bytes.len())
        };
        let end = block_end(pos);
        if bytes[pos..end].iter().all(|b| *b == 0) {
            pos = end;
            continue;
        }
        let mut run_end = end;
        while run_end < bytes.len() {
            let next = block_end(run_end);
            if bytes[run_end..next].iter().all(|b| *b == 0) {
                break;
            }
            run_end = next;
        }
        f.write_all_at(&bytes[pos..run_end], at + pos as u64)
            .map_err(io(path))?;
        pos = run_end;
    }
    Ok(())
}

/// Granularity of holes in restored files (a common file-system block).
const HOLE_BLOCK: u64 = 4096;

/// Sets a file's permission bits and mtime through its open handle.
fn finish_file(
    f: &File,
    path: &Path,
    e: &Entry,
    opts: &RestoreOptions,
) -> Result<(), RestoreError> {
    f.set_permissions(fs::Permissions::from_mode(mode(e.mode, opts)))
        .map_err(io(path))?;
    let t = system_time(e.mtime_s, e.mtime_ns);
    f.set_times(fs::FileTimes::new().set_accessed(t).set_modified(t))
        .map_err(io(path))
}

/// The permission bits to restore: setuid, setgid and sticky only when asked.
pub fn mode(mode: u32, opts: &RestoreOptions) -> u32 {
    if opts.preserve_setid {
        mode & 0o7777
    } else {
        mode & 0o777
    }
}

/// A manifest time inside ±[`MAX_MTIME_S`] with nanoseconds below a second.
pub fn clamp_time(s: i64, ns: u32) -> (i64, u32) {
    (s.clamp(-MAX_MTIME_S, MAX_MTIME_S), ns.min(999_999_999))
}

/// A manifest time as a `SystemTime`; clamped, so it never overflows.
pub fn system_time(s: i64, ns: u32) -> std::time::SystemTime {
    let (s, ns) = clamp_time(s, ns);
    let epoch = std::time::UNIX_EPOCH;
    let nanos = std::time::Duration::from_nanos(u64::from(ns));
    let t = if s >= 0 {
        epoch.checked_add(std::time::Duration::from_secs(s.unsigned_abs()))
    } else {
        epoch.checked_sub(std::time::Duration::from_secs(s.unsigned_abs()))
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(epoch)
}

fn prepare_dest(dest: &Path, overwrite: bool) -> Result<(), RestoreError> {
    match fs::read_dir(dest) {
        Ok(mut rd) => {
            if rd.next().is_some() && !overwrite {
                return Err(RestoreError::DestNotEmpty(dest.to_path_buf()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dest).map_err(io(dest))
        }
        Err(e) => Err(io(dest)(e)),
    }
}

/// With overwrite, removes a file or symlink where the snapshot puts
/// something (never following it); without, leaves it and lets creation fail.
fn clear_non_dir(path: &Path, overwrite: bool) -> Result<(), RestoreError> {
    if !overwrite {
        return Ok(());
    }
    match fs::symlink_metadata(path) {
        Ok(m) if !m.is_dir() => fs::remove_file(path).map_err(io(path)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_manifest_times_never_panic_and_clamp() {
        let far = system_time(i64::MAX, u32::MAX);
        let d = far.duration_since(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(d.as_secs(), MAX_MTIME_S as u64);
        assert_eq!(d.subsec_nanos(), 999_999_999);
        let before = system_time(i64::MIN, 0);
        let back = std::time::UNIX_EPOCH.duration_since(before).unwrap();
        assert_eq!(back.as_secs(), MAX_MTIME_S as u64);
        assert_eq!(clamp_time(1_700_000_000, 5), (1_700_000_000, 5));
    }

    #[test]
    fn setid_bits_are_masked_unless_preserved() {
        let plain = RestoreOptions::default();
        let keep = RestoreOptions {
            preserve_setid: true,
            ..RestoreOptions::default()
        };
        assert_eq!(mode(0o4755, &plain), 0o755);
        assert_eq!(mode(0o2755, &plain), 0o755);
        assert_eq!(mode(0o1777, &plain), 0o777);
        assert_eq!(mode(0o6755, &keep), 0o6755);
        assert_eq!(mode(0o170_644, &keep), 0o644);
    }
}
