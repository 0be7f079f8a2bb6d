//! A snapshot's manifest as a restore holds it: decoded as its bytes stream
//! in from the manifest's stripes, checked entry by entry as they pass
//! ([`EntryCheck`]: the rules of [`Manifest::validate`]), and kept in
//! scratch files ([`crate::spill`]) instead of memory:
//!
//! - the chunk table as fixed 36-byte records, read by position;
//! - each entry without its extents as a CBOR record, found through its
//!   8-byte offset, itself a fixed record of a scratch file;
//! - the files' extents as fixed 12-byte records, read in entry order.
//!
//! A decoded [`Manifest`] holds about 270 bytes a file and 36 a chunk; this
//! holds nothing that grows with the tree. While it decodes it holds the
//! lengths of the first [`MEMORY_ELEMENTS`] chunks (4 bytes each; the
//! extents are checked against them, and against the table past them) and
//! the entry check's path hashes ([`EntryCheck`]: in memory up to a bound,
//! then on disk), dropped when it is done.

use std::sync::Mutex;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use super::manifest::{
    ChunkRef, Entry, EntryCheck, EntryKind, Extent, Manifest, ManifestError, check_version,
};
use super::manifest_spill::{CHUNK_RECORD, ChunkTable, ManifestHead, chunk_ref};
use crate::spill::{FixedSpill, Spill, SpillError};
use crate::spill_table::MEMORY_ELEMENTS;

/// Bytes of an extent's record: chunk, offset, length (little-endian).
const EXTENT_RECORD: usize = 12;

/// An entry as kept: its extents (in the extent file) left out, and how
/// many of them it has.
#[derive(Serialize, Deserialize)]
struct Stored(Entry, u64);

/// A decoded and checked manifest whose tables are on disk (anonymous
/// scratch files, gone when this is dropped).
pub struct DiskManifest {
    pub version: u32,
    pub head: ManifestHead,
    chunks: ChunkTable,
    entries: Spill<Stored>,
    /// Where entry `i`'s record starts: 8-byte records.
    offsets: FixedSpill<8>,
    extents: FixedSpill<EXTENT_RECORD>,
    /// The run of the chunk table read last, from which chunk: a restore
    /// asks for chunks in sequence order, which is the table's order, so
    /// one read serves [`CHUNK_RUN`] of them.
    recent: Mutex<(u32, Vec<[u8; CHUNK_RECORD]>)>,
}

/// Chunks read at once by [`DiskManifest::chunk`] (36 KiB).
const CHUNK_RUN: usize = 1024;

impl std::fmt::Debug for DiskManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskManifest")
            .field("head", &self.head)
            .field("chunks", &self.chunks.items())
            .field("entries", &self.offsets.items())
            .finish()
    }
}

impl DiskManifest {
    /// Decodes from a reader (which bounds its own size), checking every
    /// entry as it is read.
    pub fn decode_from<R: std::io::Read>(reader: R) -> Result<DiskManifest, ManifestError> {
        let built: Build = ciborium::from_reader(reader).map_err(ManifestError::Decode)?;
        built.finish()
    }

    /// Chunks in the chunk table.
    pub fn chunk_count(&self) -> usize {
        self.chunks.items() as usize
    }

    /// Entries (directories, files and symlinks).
    pub fn entry_count(&self) -> usize {
        self.offsets.items() as usize
    }

    /// Chunk `c` of the table.
    pub fn chunk(&self, c: u32) -> Result<ChunkRef, SpillError> {
        let Ok(mut recent) = self.recent.lock() else {
            return self.chunks.get(c);
        };
        let (first, run) = &mut *recent;
        if let Some(record) = c.checked_sub(*first).and_then(|at| run.get(at as usize)) {
            return Ok(chunk_ref(record));
        }
        // A little before `c` too: the stripes of a backup's batch are
        // sealed in the order their encodings finish, not quite the table's.
        let from = c.saturating_sub(CHUNK_RUN as u32 / 4);
        self.chunks.get_run(from, CHUNK_RUN, run)?;
        *first = from;
        run.get((c - from) as usize)
            .map(chunk_ref)
            .ok_or(SpillError::Damaged(c as usize))
    }

    /// The chunk table, in order.
    pub fn chunks(&self) -> impl Iterator<Item = Result<ChunkRef, SpillError>> + '_ {
        self.chunks.iter()
    }

    /// Entry `i`, its extents left out.
    pub fn entry(&self, i: u32) -> Result<Entry, SpillError> {
        if u64::from(i) >= self.offsets.items() {
            return Err(SpillError::Damaged(i as usize));
        }
        let at = u64::from_le_bytes(self.offsets.get(u64::from(i))?);
        Ok(self.entries.get(at)?.0)
    }

    /// The entries in order, their extents left out.
    pub fn heads(&self) -> impl Iterator<Item = Result<Entry, SpillError>> + '_ {
        self.entries.reader().map(|stored| Ok(stored?.0))
    }

    /// The entries in order, with their extents.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, SpillError>> + '_ {
        let mut records = self.extents.reader();
        self.entries.reader().map(move |stored| {
            let Stored(mut entry, n) = stored?;
            if let EntryKind::File { extents, .. } = &mut entry.kind {
                for _ in 0..n {
                    let record = records.next().unwrap_or(Err(SpillError::Damaged(0)))?;
                    extents.push(extent_of(&record));
                }
            }
            Ok(entry)
        })
    }

    /// The whole manifest in memory (for tests and small trees).
    pub fn to_manifest(&self) -> Result<Manifest, SpillError> {
        Ok(self.head.with_tables(
            self.version,
            self.chunks().collect::<Result<_, _>>()?,
            self.entries().collect::<Result<_, _>>()?,
        ))
    }
}

fn extent_record(x: &Extent) -> [u8; EXTENT_RECORD] {
    let mut r = [0u8; EXTENT_RECORD];
    r[..4].copy_from_slice(&x.chunk.to_le_bytes());
    r[4..8].copy_from_slice(&x.offset.to_le_bytes());
    r[8..].copy_from_slice(&x.len.to_le_bytes());
    r
}

fn extent_of(r: &[u8; EXTENT_RECORD]) -> Extent {
    let word = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
    Extent {
        chunk: word(0),
        offset: word(4),
        len: word(8),
    }
}

/// The chunk table as it is read: the records, and each chunk's length for
/// checking the extents that follow.
struct Chunks {
    table: ChunkTable,
    /// The first [`MEMORY_ELEMENTS`] chunks' lengths; the table, flushed
    /// at its end, answers for the rest.
    lens: Vec<u32>,
}

impl Chunks {
    /// Chunk `c`'s length, if the table has it.
    fn len_of(&self, c: u32) -> Result<Option<u32>, SpillError> {
        if let Some(len) = self.lens.get(c as usize) {
            return Ok(Some(*len));
        }
        if u64::from(c) >= self.table.items() {
            return Ok(None);
        }
        Ok(Some(self.table.get(c)?.len))
    }
}

/// The entries as they are read.
struct Entries {
    records: Spill<Stored>,
    offsets: FixedSpill<8>,
    extents: FixedSpill<EXTENT_RECORD>,
}

impl Entries {
    fn push(&mut self, mut entry: Entry) -> Result<(), ManifestError> {
        if self.offsets.items() >= u64::from(u32::MAX) {
            return Err(ManifestError::Malformed(
                "more than 2^32 entries".to_string(),
            ));
        }
        let extents = match &mut entry.kind {
            EntryKind::File { extents, .. } => std::mem::take(extents),
            _ => Vec::new(),
        };
        self.offsets
            .push(&self.records.next_offset().to_le_bytes())
            .map_err(ManifestError::Scratch)?;
        self.records
            .push(&Stored(entry, extents.len() as u64))
            .map_err(ManifestError::Scratch)?;
        for x in &extents {
            self.extents
                .push(&extent_record(x))
                .map_err(ManifestError::Scratch)?;
        }
        Ok(())
    }
}

/// What the decoder collects. A scratch file that fails or an entry that
/// breaks a rule does not stop the CBOR decoding (the rest is read and
/// skipped, so the caller still hashes every byte); it is kept and
/// returned by [`Build::finish`].
#[derive(Default)]
struct Build {
    version: Option<u32>,
    name: Option<String>,
    time_ms: Option<u64>,
    roots: Option<Vec<String>>,
    secret: Option<[u8; 32]>,
    chunks: Option<Result<Chunks, ManifestError>>,
    entries: Option<Result<Entries, ManifestError>>,
}

impl Build {
    fn finish(self) -> Result<DiskManifest, ManifestError> {
        let missing = |field: &str| ManifestError::Malformed(format!("missing field `{field}`"));
        let version = self.version.ok_or_else(|| missing("version"))?;
        check_version(version)?;
        let mut chunks = self.chunks.ok_or_else(|| missing("chunks"))??;
        let mut entries = self.entries.ok_or_else(|| missing("entries"))??;
        let head = ManifestHead {
            name: self.name.ok_or_else(|| missing("name"))?,
            time_ms: self.time_ms.ok_or_else(|| missing("time_ms"))?,
            roots: self.roots.ok_or_else(|| missing("roots"))?,
            secret: self.secret.ok_or_else(|| missing("secret"))?,
        };
        chunks.table.flush().map_err(ManifestError::Scratch)?;
        entries.records.flush().map_err(ManifestError::Scratch)?;
        entries.extents.flush().map_err(ManifestError::Scratch)?;
        entries.offsets.flush().map_err(ManifestError::Scratch)?;
        Ok(DiskManifest {
            version,
            head,
            chunks: chunks.table,
            entries: entries.records,
            offsets: entries.offsets,
            extents: entries.extents,
            recent: Mutex::new((0, Vec::new())),
        })
    }
}

/// The manifest's secret field, read as [`Manifest`] reads it.
#[derive(Deserialize)]
struct Secret(#[serde(with = "strew_coordinator::cbor::bytes32")] [u8; 32]);

impl<'de> Deserialize<'de> for Build {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(BuildVisitor)
    }
}

struct BuildVisitor;

/// Sets a field met once; a second time is an error, as for [`Manifest`].
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, field: &'static str) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(field));
    }
    Ok(())
}

impl<'de> Visitor<'de> for BuildVisitor {
    type Value = Build;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a snapshot manifest (a map of its fields)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Build, A::Error> {
        let mut b = Build::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "version" => once(&mut b.version, map.next_value()?, "version")?,
                "name" => once(&mut b.name, map.next_value()?, "name")?,
                "time_ms" => once(&mut b.time_ms, map.next_value()?, "time_ms")?,
                "roots" => once(&mut b.roots, map.next_value()?, "roots")?,
                "secret" => once(&mut b.secret, map.next_value::<Secret>()?.0, "secret")?,
                "chunks" => {
                    let chunks = map.next_value_seed(ChunksSeed)?;
                    once(&mut b.chunks, chunks, "chunks")?;
                }
                "entries" => {
                    // Every manifest strew writes lists its chunk table
                    // first: the extents are checked against it as they pass.
                    let entries = match &b.chunks {
                        Some(Ok(chunks)) => map.next_value_seed(EntriesSeed(chunks))?,
                        Some(Err(_)) => {
                            map.next_value::<IgnoredAny>()?;
                            Err(ManifestError::Malformed("the chunk table failed".into()))
                        }
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            Err(ManifestError::Malformed(
                                "the entries come before the chunk table".into(),
                            ))
                        }
                    };
                    once(&mut b.entries, entries, "entries")?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(b)
    }
}

/// Reads the chunk table into its scratch file.
struct ChunksSeed;

impl<'de> DeserializeSeed<'de> for ChunksSeed {
    type Value = Result<Chunks, ManifestError>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ChunksSeed {
    type Value = Result<Chunks, ManifestError>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the manifest's chunk table")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = ChunkTable::new()
            .map(|table| Chunks {
                table,
                lens: Vec::new(),
            })
            .map_err(ManifestError::Scratch);
        while let Some(chunk) = seq.next_element::<ChunkRef>()? {
            let Ok(chunks) = &mut out else { continue };
            if chunks.table.items() >= u64::from(u32::MAX) {
                out = Err(ManifestError::Malformed(
                    "more than 2^32 chunks".to_string(),
                ));
            } else if let Err(e) = chunks.table.push(&chunk) {
                out = Err(ManifestError::Scratch(e));
            } else if chunks.lens.len() < MEMORY_ELEMENTS {
                chunks.lens.push(chunk.len);
            }
        }
        // The entries that follow read the lengths past the first ones
        // from the table.
        if let Ok(chunks) = &mut out
            && let Err(e) = chunks.table.flush()
        {
            out = Err(ManifestError::Scratch(e));
        }
        Ok(out)
    }
}

/// Reads the entries into their scratch files, checking each against the
/// chunk lengths read before.
struct EntriesSeed<'a>(&'a Chunks);

impl<'de> DeserializeSeed<'de> for EntriesSeed<'_> {
    type Value = Result<Entries, ManifestError>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntriesSeed<'_> {
    type Value = Result<Entries, ManifestError>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the manifest's entries")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let chunks = self.0;
        let count = chunks.table.items() as usize;
        let mut check = EntryCheck::default();
        let mut out = (|| {
            Ok(Entries {
                records: Spill::new()?,
                offsets: FixedSpill::new()?,
                extents: FixedSpill::new()?,
            })
        })()
        .map_err(ManifestError::Scratch);
        while let Some(entry) = seq.next_element::<Entry>()? {
            let Ok(entries) = &mut out else { continue };
            // A length the table cannot read is a scratch error, not the
            // manifest's.
            let unread = std::cell::RefCell::new(None);
            let checked = check.check(&entry, count, |c| {
                chunks.len_of(c).unwrap_or_else(|e| {
                    unread.borrow_mut().get_or_insert(e);
                    None
                })
            });
            let kept = match unread.into_inner() {
                Some(e) => Err(ManifestError::Scratch(e)),
                None => checked.and_then(|()| entries.push(entry)),
            };
            if let Err(e) = kept {
                out = Err(e);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;
    use strew_coordinator::DataId;

    use super::*;
    use crate::pipeline::secret::ChunkKey;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry::for_tests(path, kind)
    }

    #[test]
    fn lengths_past_the_ones_in_memory_are_read_from_the_table() {
        let mut table = ChunkTable::new().unwrap();
        for i in 0..10u32 {
            table
                .push(&ChunkRef {
                    key: ChunkKey([i as u8; 32]),
                    len: 100 + i,
                })
                .unwrap();
        }
        table.flush().unwrap();
        // As a table of more than MEMORY_ELEMENTS chunks holds them: the
        // first ones in memory, the rest only in the table.
        let chunks = Chunks {
            table,
            lens: vec![100, 101, 102],
        };
        let lens: Vec<Option<u32>> = (0..11).map(|c| chunks.len_of(c).unwrap()).collect();
        let mut want: Vec<Option<u32>> = (0..10).map(|i| Some(100 + i)).collect();
        want.push(None);
        assert_eq!(lens, want);
    }

    fn file(chunks: &[u32]) -> EntryKind {
        EntryKind::File {
            size: 10 * chunks.len() as u64,
            data_id: DataId([3; 32]),
            extents: chunks
                .iter()
                .map(|&chunk| Extent {
                    chunk,
                    offset: 5,
                    len: 10,
                })
                .collect(),
        }
    }

    fn sample() -> Manifest {
        let chunks = (0..3000u32)
            .map(|i| ChunkRef {
                key: ChunkKey(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                len: 20 + i % 7,
            })
            .collect();
        let mut entries = vec![entry("d", EntryKind::Dir), entry("d/e", EntryKind::Dir)];
        for i in 0..1000u32 {
            entries.push(entry(&format!("d/e/f{i}"), file(&[i, i + 1000, 2999])));
        }
        entries.push(entry("d/empty", file(&[])));
        let target = ByteBuf::from(b"e/f1".to_vec());
        entries.push(entry("d/link", EntryKind::Symlink { target }));
        let mut m = Manifest::for_tests(chunks, entries);
        m.name = "set".into();
        m.roots = vec!["/home/a".into()];
        m.secret = [5; 32];
        m
    }

    #[test]
    fn a_streamed_decode_holds_what_the_in_memory_one_holds() {
        let m = sample();
        let bytes = m.encode();
        let disk = DiskManifest::decode_from(&bytes[..]).expect("decodes");
        assert_eq!(disk.to_manifest().expect("read back"), m);
        assert_eq!((disk.chunk_count(), disk.entry_count()), (3000, 1004));
        for c in [2999, 0, 1, 2998, 1500, 1501, 1024, 1023] {
            assert_eq!(disk.chunk(c).expect("chunk"), m.chunks[c as usize]);
        }
        assert!(disk.chunk(3000).is_err());
        let mut head = m.entries[500].clone();
        if let EntryKind::File { extents, .. } = &mut head.kind {
            extents.clear();
        }
        assert_eq!(disk.entry(500).expect("entry"), head);
        assert!(disk.entry(1004).is_err());
        assert_eq!(disk.heads().count(), 1004);
    }

    #[test]
    fn what_validate_refuses_a_streamed_decode_refuses() {
        let bad = |f: &dyn Fn(&mut Manifest)| {
            let mut m = sample();
            f(&mut m);
            let memory = Manifest::decode(&m.encode())
                .map(|_| ())
                .map_err(|e| e.to_string());
            let disk = DiskManifest::decode_from(&m.encode()[..])
                .map(|_| ())
                .map_err(|e| e.to_string());
            assert!(memory.is_err(), "the in-memory decode accepts it");
            assert_eq!(disk, memory);
        };
        bad(&|m| m.entries[3].path = ByteBuf::from(b"d/e/f0".to_vec()));
        bad(&|m| m.entries[3].path = ByteBuf::from(b"x/f".to_vec()));
        bad(&|m| m.entries[3].path = ByteBuf::from(b"../f".to_vec()));
        bad(&|m| m.entries[3].mode = 0o170_000);
        bad(&|m| m.entries[3].mtime_ns = 1_000_000_000);
        bad(&|m| m.entries[3].kind = file(&[3000]));
        bad(&|m| m.chunks[2999].len = 14);
        bad(&|m| m.version = 99);
    }

    #[test]
    fn entries_before_the_chunk_table_or_a_missing_field_are_errors() {
        #[derive(Serialize)]
        struct Reordered<'a> {
            version: u32,
            name: &'a str,
            time_ms: u64,
            roots: &'a [String],
            #[serde(with = "strew_coordinator::cbor::bytes32")]
            secret: [u8; 32],
            entries: &'a [Entry],
            chunks: &'a [ChunkRef],
        }
        let m = sample();
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &Reordered {
                version: m.version,
                name: &m.name,
                time_ms: m.time_ms,
                roots: &m.roots,
                secret: m.secret,
                entries: &m.entries,
                chunks: &m.chunks,
            },
            &mut bytes,
        )
        .expect("encode");
        assert!(matches!(
            DiskManifest::decode_from(&bytes[..]),
            Err(ManifestError::Malformed(_))
        ));
        let mut short = Vec::new();
        ciborium::into_writer(
            &std::collections::BTreeMap::from([("version", 3)]),
            &mut short,
        )
        .expect("encode");
        assert!(matches!(
            DiskManifest::decode_from(&short[..]),
            Err(ManifestError::Malformed(_))
        ));
        assert!(matches!(
            DiskManifest::decode_from(&b"\xff\x00garbage"[..]),
            Err(ManifestError::Decode(_))
        ));
    }
}
