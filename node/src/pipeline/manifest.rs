//! The snapshot manifest: what a snapshot contains (directories, regular
//! files, symlinks; sizes, modes, mtimes) and where each file's bytes are in
//! the snapshot's chunk table. It is serialised with CBOR (ciborium), then
//! chunked, encrypted under the owner's private secret and stored like any
//! data; the snapshot's manifest id is the storage index of these bytes'
//! key. Version 2 holds each chunk's key (the grid sees only its storage
//! index) and the fingerprint of the convergence secret the data used.
//! Version 3 writes the same fields more compactly: keys as byte strings,
//! and each chunk reference, entry and extent as an array of its fields (about half
//! the bytes of version 2's maps of named fields and arrays of integers).
//! Both are read.
//!
//! Files smaller than the minimum chunk size are packed into a shared
//! content-defined stream (as restic packs small blobs), so a tree of many
//! tiny files does not become a grid of tiny packets; larger files are
//! chunked on their own, so identical large files dedup whole. A file is a
//! list of extents (chunk index, offset, length) into the chunk table.
//!
//! This module owns the format and its validation, including the path rules
//! that keep a restore inside its destination and the ranges of times and
//! modes. It does no I/O.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use strew_coordinator::DataId;

use super::secret::ChunkKey;
use crate::claim_set::ClaimSet;

pub const MANIFEST_VERSION: u32 = 3;
/// The oldest manifest version this strew still reads.
pub const OLDEST_MANIFEST_VERSION: u32 = 2;
/// A manifest larger than this is refused before it is decoded.
pub const MAX_MANIFEST_BYTES: usize = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// The backup set's name.
    pub name: String,
    /// When the backup started, unix milliseconds.
    pub time_ms: u64,
    /// The paths given to `backup`, as given.
    pub roots: Vec<String>,
    /// Fingerprint of the convergence secret the chunks' keys came from
    /// (`ConvergenceSecret::fingerprint`): which secret verifies them.
    #[serde(with = "strew_coordinator::cbor::bytes32")]
    pub secret: [u8; 32],
    /// Every chunk of the snapshot, in sequence order.
    pub chunks: Vec<ChunkRef>,
    /// Entries in pre-order: a directory before what it contains.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// A digest of what the snapshot holds (roots, chunks, entries with their
    /// metadata) but not of its name or time: equal digests mean an
    /// unchanged tree. `None` only if the manifest cannot be encoded.
    pub fn tree_digest(&self) -> Option<[u8; 32]> {
        // Hashed as it is encoded: the encoding is never held whole.
        let mut hasher = blake3::Hasher::new();
        ciborium::into_writer(&(&self.roots, &self.chunks, &self.entries), &mut hasher).ok()?;
        Some(*hasher.finalize().as_bytes())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    /// The chunk's key; the grid knows the chunk by its storage index.
    pub key: ChunkKey,
    pub len: u32,
}

impl ChunkRef {
    /// The chunk's DataId on the grid (its storage index).
    pub fn data_id(&self) -> DataId {
        self.key.storage_index()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative path, components joined by `/`, as raw bytes (Unix file
    /// names need not be UTF-8).
    pub path: ByteBuf,
    /// Permission bits (mode & 0o7777).
    pub mode: u32,
    pub mtime_s: i64,
    /// Below 1e9.
    pub mtime_ns: u32,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    File {
        size: u64,
        /// Id of the whole file's contents (`ConvergenceSecret::file_id`;
        /// found only inside manifests).
        data_id: DataId,
        extents: Vec<Extent>,
    },
    Symlink {
        target: ByteBuf,
    },
}

/// `len` bytes at `offset` within chunk `chunk` of the chunk table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub chunk: u32,
    pub offset: u32,
    pub len: u32,
}

/// Serialises a struct of the manifest as a CBOR array of its fields in
/// order (version 3), and reads that or the map of named fields version 2
/// wrote.
macro_rules! array_or_map {
    ($name:ident { $($field:ident: $ty:ty),+ $(,)? }) => {
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeTuple;
                let mut t = s.serialize_tuple([$(stringify!($field)),+].len())?;
                $(t.serialize_element(&self.$field)?;)+
                t.end()
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                use serde::de::{self, IgnoredAny, MapAccess, SeqAccess};
                const FIELDS: &[&str] = &[$(stringify!($field)),+];
                struct Fields;
                impl<'de> de::Visitor<'de> for Fields {
                    type Value = $name;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        write!(f, "a {} as an array or a map of {:?}", stringify!($name), FIELDS)
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$name, A::Error> {
                        let mut read = 0;
                        $(
                            let $field: $ty = seq
                                .next_element()?
                                .ok_or_else(|| de::Error::invalid_length(read, &self))?;
                            read += 1;
                        )+
                        if seq.next_element::<IgnoredAny>()?.is_some() {
                            return Err(de::Error::invalid_length(read + 1, &self));
                        }
                        Ok($name { $($field),+ })
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<$name, A::Error> {
                        $(let mut $field: Option<$ty> = None;)+
                        while let Some(name) = map.next_key::<String>()? {
                            match name.as_str() {
                                $(stringify!($field) => {
                                    if $field.replace(map.next_value()?).is_some() {
                                        return Err(de::Error::duplicate_field(stringify!($field)));
                                    }
                                })+
                                other => return Err(de::Error::unknown_field(other, FIELDS)),
                            }
                        }
                        Ok($name {
                            $($field: $field.ok_or_else(|| de::Error::missing_field(stringify!($field)))?),+
                        })
                    }
                }
                d.deserialize_any(Fields)
            }
        }
    };
}

array_or_map!(ChunkRef {
    key: ChunkKey,
    len: u32
});
array_or_map!(Extent {
    chunk: u32,
    offset: u32,
    len: u32
});
array_or_map!(Entry {
    path: ByteBuf,
    mode: u32,
    mtime_s: i64,
    mtime_ns: u32,
    kind: EntryKind,
});

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid CBOR for this version")]
    Decode(#[source] ciborium::de::Error<std::io::Error>),
    #[error("manifest too large: {0} bytes")]
    TooLarge(usize),
    #[error(
        "manifest version {0} is not one this strew reads ({OLDEST_MANIFEST_VERSION} to {MANIFEST_VERSION}): it needs another strew"
    )]
    Version(u32),
    #[error("manifest entry {path:?} is unsafe: {why}")]
    UnsafePath { path: String, why: &'static str },
    #[error("manifest entry {path:?}: {why}")]
    Inconsistent { path: String, why: String },
    #[error("the manifest: {0}")]
    Malformed(String),
    #[error(
        "the snapshot's manifest could not be kept on disk while it is read (is the temporary directory full?)"
    )]
    Scratch(#[source] crate::spill::SpillError),
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        // Reserved generously at once: a growing buffer would hold its old
        // and new copies while it doubles (a large manifest is tens of MB),
        // and pages of the reserve never written are never resident. Version
        // 3 writes at most 42 B a chunk reference, 17 an extent, and an
        // entry's path plus 112.
        let extents: usize = self
            .entries
            .iter()
            .map(|e| match &e.kind {
                EntryKind::File { extents, .. } => extents.len(),
                _ => 0,
            })
            .sum();
        let paths: usize = self.entries.iter().map(|e| e.path.len() + 112).sum();
        let mut out = Vec::with_capacity(4096 + self.chunks.len() * 42 + extents * 17 + paths);
        // Serialising plain data into a Vec cannot fail.
        let _ = ciborium::into_writer(self, &mut out);
        out
    }

    /// Decodes and validates (see [`Manifest::validate`]).
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        Manifest::decode_from(bytes)
    }

    /// Decodes from a reader (which bounds its own size) and validates.
    pub fn decode_from<R: std::io::Read>(reader: R) -> Result<Manifest, ManifestError> {
        let mut m: Manifest = ciborium::from_reader(reader).map_err(ManifestError::Decode)?;
        m.validate()?;
        m.shrink_to_fit();
        Ok(m)
    }

    /// Gives back what the tables' growth reserved beyond their length (a
    /// decoded or built table of a million chunks can hold twice what it
    /// needs; large blocks shrink in place).
    pub fn shrink_to_fit(&mut self) {
        self.chunks.shrink_to_fit();
        self.entries.shrink_to_fit();
        for e in &mut self.entries {
            if let EntryKind::File { extents, .. } = &mut e.kind {
                extents.shrink_to_fit();
            }
        }
    }

    /// Checks everything a restore relies on: the version; every path is
    /// relative, made of normal components, unique, and its parent is a
    /// directory listed earlier; modes are permission bits; nanoseconds are
    /// below a second; extents lie inside their chunks and add up to the
    /// file size.
    pub fn validate(&self) -> Result<(), ManifestError> {
        check_version(self.version)?;
        let mut check = EntryCheck::default();
        let chunk_len = |c: u32| self.chunks.get(c as usize).map(|c| c.len);
        for e in &self.entries {
            check.check(e, self.chunks.len(), chunk_len)?;
        }
        Ok(())
    }

    /// Total bytes of regular files.
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Refuses a manifest version this strew does not read.
pub fn check_version(version: u32) -> Result<(), ManifestError> {
    if (OLDEST_MANIFEST_VERSION..=MANIFEST_VERSION).contains(&version) {
        Ok(())
    } else {
        Err(ManifestError::Version(version))
    }
}

/// The entry rules of [`Manifest::validate`], checked one entry at a time
/// in manifest order, so a manifest streamed from its stripes is checked
/// as it passes. Holds a 16-byte hash of each path seen and of each
/// directory, not the paths (a tree of a million files would hold a
/// million paths), in sets whose memory is bounded ([`ClaimSet`]: on disk
/// past their bound); two paths of a manifest colliding in 128 bits of
/// BLAKE3 is not a case to plan for.
#[derive(Default)]
pub struct EntryCheck {
    dirs: ClaimSet,
    seen: ClaimSet,
}

pub(crate) fn path_hash(path: &[u8]) -> u128 {
    let mut h = [0u8; 16];
    h.copy_from_slice(&blake3::hash(path).as_bytes()[..16]);
    u128::from_le_bytes(h)
}

impl EntryCheck {
    /// Checks `e`, the next entry; the chunk table has `chunks` chunks and
    /// `chunk_len` gives each one's length.
    pub fn check(
        &mut self,
        e: &Entry,
        chunks: usize,
        chunk_len: impl Fn(u32) -> Option<u32>,
    ) -> Result<(), ManifestError> {
        let path: &[u8] = &e.path;
        let shown = || String::from_utf8_lossy(path).into_owned();
        check_path(path).map_err(|why| ManifestError::UnsafePath { path: shown(), why })?;
        if e.mode & !0o7777 != 0 {
            return Err(ManifestError::Inconsistent {
                path: shown(),
                why: format!("mode {:#o} has bits beyond the permission bits", e.mode),
            });
        }
        if e.mtime_ns >= 1_000_000_000 {
            return Err(ManifestError::Inconsistent {
                path: shown(),
                why: format!("mtime has {} nanoseconds (not below a second)", e.mtime_ns),
            });
        }
        let hash = path_hash(path);
        if !self.seen.insert(hash).map_err(ManifestError::Scratch)? {
            return Err(ManifestError::Inconsistent {
                path: shown(),
                why: "listed twice".into(),
            });
        }
        if let Some(cut) = path.iter().rposition(|b| *b == b'/')
            && !self
                .dirs
                .contains(path_hash(&path[..cut]))
                .map_err(ManifestError::Scratch)?
        {
            return Err(ManifestError::Inconsistent {
                path: shown(),
                why: "its parent is not a directory listed before it".into(),
            });
        }
        match &e.kind {
            EntryKind::Dir => {
                self.dirs.insert(hash).map_err(ManifestError::Scratch)?;
            }
            EntryKind::Symlink { .. } => {}
            EntryKind::File { size, extents, .. } => {
                let mut total = 0u64;
                for x in extents {
                    let len = chunk_len(x.chunk).ok_or_else(|| ManifestError::Inconsistent {
                        path: shown(),
                        why: format!("extent names chunk {} of {chunks}", x.chunk),
                    })?;
                    if u64::from(x.offset) + u64::from(x.len) > u64::from(len) {
                        return Err(ManifestError::Inconsistent {
                            path: shown(),
                            why: "extent runs past the end of its chunk".into(),
                        });
                    }
                    total += u64::from(x.len);
                }
                if total != *size {
                    return Err(ManifestError::Inconsistent {
                        path: shown(),
                        why: format!("extents hold {total} bytes, size says {size}"),
                    });
                }
            }
        }
        Ok(())
    }
}

/// A safe relative path: non-empty components, none `.` or `..`, no NUL,
/// not absolute.
fn check_path(path: &[u8]) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.contains(&0) {
        return Err("contains a NUL byte");
    }
    if path[0] == b'/' {
        return Err("absolute path");
    }
    for comp in path.split(|b| *b == b'/') {
        match comp {
            b"" => return Err("empty component"),
            b"." | b".." => return Err("`.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
impl Entry {
    /// An entry at `path` (mode 0o640, a time with nanoseconds), of `kind`.
    pub(crate) fn for_tests(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: ByteBuf::from(path.as_bytes().to_vec()),
            mode: 0o640,
            mtime_s: 1_700_000_000,
            mtime_ns: 5,
            kind,
        }
    }
}

#[cfg(test)]
impl Manifest {
    /// A manifest of `chunks` and `entries`, every other field fixed.
    pub(crate) fn for_tests(chunks: Vec<ChunkRef>, entries: Vec<Entry>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            name: "t".into(),
            time_ms: 0,
            roots: vec![],
            secret: [0; 32],
            chunks,
            entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: ByteBuf::from(path.as_bytes().to_vec()),
            mode: 0o644,
            mtime_s: 0,
            mtime_ns: 0,
            kind,
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        let chunks = vec![ChunkRef {
            key: ChunkKey([0; 32]),
            len: 10,
        }];
        Manifest::for_tests(chunks, entries)
    }

    #[test]
    fn path_traversal_and_absolute_paths_are_rejected() {
        for bad in [
            "../etc/passwd",
            "/etc/passwd",
            "a/../../x",
            "a//b",
            "./a",
            "",
        ] {
            let m = manifest(vec![entry(bad, EntryKind::Dir)]);
            let err = Manifest::decode(&m.encode()).unwrap_err();
            assert!(
                matches!(err, ManifestError::UnsafePath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn orphans_duplicates_and_bad_extents_are_rejected() {
        let file = |size, len| EntryKind::File {
            size,
            data_id: DataId([1; 32]),
            extents: vec![Extent {
                chunk: 0,
                offset: 5,
                len,
            }],
        };
        let orphan = manifest(vec![entry("a/b", EntryKind::Dir)]);
        let dup = manifest(vec![entry("a", EntryKind::Dir), entry("a", EntryKind::Dir)]);
        let past_end = manifest(vec![entry("f", file(6, 6))]);
        let wrong_size = manifest(vec![entry("f", file(9, 5))]);
        for m in [orphan, dup, past_end, wrong_size] {
            assert!(matches!(
                Manifest::decode(&m.encode()),
                Err(ManifestError::Inconsistent { .. })
            ));
        }
        let good = manifest(vec![entry("a", EntryKind::Dir), entry("a/f", file(5, 5))]);
        assert_eq!(Manifest::decode(&good.encode()).unwrap(), good);
    }

    /// The rules hold the same once the paths seen and the directories
    /// have gone to disk.
    #[test]
    fn the_entry_check_holds_with_its_path_sets_on_disk() {
        let fresh = || EntryCheck {
            dirs: ClaimSet::with_memory(2),
            seen: ClaimSet::with_memory(2),
        };
        let mut tree = vec![Entry::for_tests("a", EntryKind::Dir)];
        for d in 0..20 {
            tree.push(Entry::for_tests(&format!("a/d{d}"), EntryKind::Dir));
            for f in 0..5 {
                tree.push(Entry::for_tests(&format!("a/d{d}/l{f}"), EntryKind::Dir));
            }
        }
        let run = |extra: &[Entry]| {
            let mut check = fresh();
            for e in tree.iter().chain(extra) {
                check.check(e, 0, |_| None)?;
            }
            assert!(check.seen.on_disk() && check.dirs.on_disk());
            Ok::<_, ManifestError>(())
        };
        run(&[]).expect("a good tree");
        let last = Entry::for_tests("a/d19/l4/x", EntryKind::Dir);
        run(std::slice::from_ref(&last)).expect("a good entry past the bound");
        for bad in [
            Entry::for_tests("a/d0", EntryKind::Dir),
            Entry::for_tests("a/d3/l1", EntryKind::Dir),
            Entry::for_tests("a/d20/x", EntryKind::Dir),
            Entry::for_tests("b/x", EntryKind::Dir),
        ] {
            let err = run(&[bad]).expect_err("refused");
            assert!(matches!(err, ManifestError::Inconsistent { .. }), "{err}");
        }
    }

    #[test]
    fn out_of_range_times_and_modes_are_rejected() {
        let mut late = entry("f", EntryKind::Dir);
        late.mtime_s = i64::MAX;
        late.mtime_ns = 1_000_000_000;
        let mut odd = entry("g", EntryKind::Dir);
        odd.mode = 0o170_755;
        for m in [manifest(vec![late]), manifest(vec![odd])] {
            let err = Manifest::decode(&m.encode()).unwrap_err();
            assert!(matches!(err, ManifestError::Inconsistent { .. }), "{err}");
        }
        let mut extreme = entry("h", EntryKind::Dir);
        extreme.mtime_s = i64::MIN;
        extreme.mtime_ns = 999_999_999;
        extreme.mode = 0o7777;
        assert!(Manifest::decode(&manifest(vec![extreme]).encode()).is_ok());
        let mut old = manifest(vec![]);
        old.version = 1;
        assert!(matches!(
            Manifest::decode(&old.encode()),
            Err(ManifestError::Version(1))
        ));
    }

    /// Version 2's encoding as strew wrote it: maps of named fields, and
    /// keys as arrays of integers.
    mod v2 {
        use serde::Serialize;
        use serde_bytes::ByteBuf;
        use strew_coordinator::DataId;

        #[derive(Serialize)]
        pub struct Manifest {
            pub version: u32,
            pub name: String,
            pub time_ms: u64,
            pub roots: Vec<String>,
            pub secret: [u8; 32],
            pub chunks: Vec<ChunkRef>,
            pub entries: Vec<Entry>,
        }
        #[derive(Serialize)]
        pub struct ChunkRef {
            pub key: [u8; 32],
            pub len: u32,
        }
        #[derive(Serialize)]
        pub struct Entry {
            pub path: ByteBuf,
            pub mode: u32,
            pub mtime_s: i64,
            pub mtime_ns: u32,
            pub kind: EntryKind,
        }
        #[derive(Serialize)]
        pub enum EntryKind {
            Dir,
            File {
                size: u64,
                data_id: DataId,
                extents: Vec<Extent>,
            },
        }
        #[derive(Serialize)]
        pub struct Extent {
            pub chunk: u32,
            pub offset: u32,
            pub len: u32,
        }
    }

    #[test]
    fn a_version_2_manifest_still_reads_and_version_3_is_about_half_its_size() {
        let (chunks, extents) = (300u32, 3u32);
        // Keys are uniformly random bytes, as real ones are.
        let key = |i: u32| *blake3::hash(&i.to_le_bytes()).as_bytes();
        let extent = |i: u32| Extent {
            chunk: i,
            offset: 1,
            len: 100,
        };
        let mut entries = vec![entry("d", EntryKind::Dir)];
        let mut old_entries = vec![v2::Entry {
            path: ByteBuf::from(b"d".to_vec()),
            mode: 0o644,
            mtime_s: 0,
            mtime_ns: 0,
            kind: v2::EntryKind::Dir,
        }];
        for f in 0..chunks / extents {
            let path = format!("d/{f}");
            let xs: Vec<Extent> = (f * extents..(f + 1) * extents).map(extent).collect();
            entries.push(entry(
                &path,
                EntryKind::File {
                    size: u64::from(extents) * 100,
                    data_id: DataId([7; 32]),
                    extents: xs.clone(),
                },
            ));
            old_entries.push(v2::Entry {
                path: ByteBuf::from(path.into_bytes()),
                mode: 0o644,
                mtime_s: 0,
                mtime_ns: 0,
                kind: v2::EntryKind::File {
                    size: u64::from(extents) * 100,
                    data_id: DataId([7; 32]),
                    extents: xs
                        .iter()
                        .map(|x| v2::Extent {
                            chunk: x.chunk,
                            offset: x.offset,
                            len: x.len,
                        })
                        .collect(),
                },
            });
        }
        let mut current = Manifest::for_tests(
            (0..chunks)
                .map(|i| ChunkRef {
                    key: ChunkKey(key(i)),
                    len: 1000,
                })
                .collect(),
            entries,
        );
        current.secret = [250; 32];
        let old = v2::Manifest {
            version: 2,
            name: current.name.clone(),
            time_ms: current.time_ms,
            roots: current.roots.clone(),
            secret: current.secret,
            chunks: (0..chunks)
                .map(|i| v2::ChunkRef {
                    key: key(i),
                    len: 1000,
                })
                .collect(),
            entries: old_entries,
        };
        let mut old_bytes = Vec::new();
        ciborium::into_writer(&old, &mut old_bytes).unwrap();
        let read = Manifest::decode(&old_bytes).unwrap();
        assert_eq!(read.version, 2);
        // A restore streams it to disk and reads the same back.
        let streamed = super::super::manifest_disk::DiskManifest::decode_from(&old_bytes[..])
            .expect("a version 2 manifest streams")
            .to_manifest()
            .expect("read back");
        assert_eq!(streamed, read);
        assert_eq!(Manifest { version: 3, ..read }, current);
        let new_bytes = current.encode();
        assert_eq!(Manifest::decode(&new_bytes).unwrap(), current);
        assert!(
            new_bytes.len() * 100 < old_bytes.len() * 55,
            "version 3 {} bytes, version 2 {}",
            new_bytes.len(),
            old_bytes.len()
        );
        // A version from the future is refused by name, not misread.
        let mut future = current.clone();
        future.version = MANIFEST_VERSION + 1;
        assert!(matches!(
            Manifest::decode(&future.encode()),
            Err(ManifestError::Version(v)) if v == MANIFEST_VERSION + 1
        ));
    }

    #[test]
    fn a_chunk_reference_of_the_wrong_shape_is_a_decode_error() {
        let read = |bytes: Vec<u8>| ciborium::from_reader::<ChunkRef, _>(bytes.as_slice());
        fn cbor<T: Serialize>(value: &T) -> Vec<u8> {
            let mut out = Vec::new();
            ciborium::into_writer(value, &mut out).unwrap();
            out
        }
        let key = serde_bytes::ByteBuf::from(vec![3u8; 32]);
        let good = ChunkRef {
            key: ChunkKey([3; 32]),
            len: 10,
        };
        assert_eq!(read(cbor(&(key.clone(), 10u32))).unwrap(), good);
        let v2 = std::collections::BTreeMap::from([("key", vec![3u32; 32]), ("len", vec![])]);
        assert!(read(cbor(&v2)).is_err(), "len must be a number");
        let mut old = b"\xa2\x63key".to_vec();
        old.extend(cbor(&[3u8; 32]));
        old.extend(b"\x63len\x0a");
        assert_eq!(read(old).unwrap(), good);
        assert!(read(cbor(&(key.clone(),))).is_err(), "too short");
        assert!(read(cbor(&(key.clone(), 10u32, 5u32))).is_err(), "too long");
        assert!(read(cbor(&(serde_bytes::ByteBuf::from(vec![3u8; 31]), 10u32))).is_err());
        let mut unknown = b"\xa2\x63key".to_vec();
        unknown.extend(cbor(&key));
        unknown.extend(b"\x64size\x0a");
        assert!(read(unknown).is_err(), "an unknown field");
        let twice = b"\xa2\x63len\x01\x63len\x02".to_vec();
        assert!(read(twice).is_err(), "a field twice");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(matches!(
            Manifest::decode(b"\xff\x00garbage"),
            Err(ManifestError::Decode(_))
        ));
    }
}
