//! A backup's manifest while it is built and stored: its chunk table and
//! its entries are appended to scratch files ([`crate::spill`]) as the walk
//! and the encoder produce them, not held in memory, and the manifest is
//! encoded by streaming them back. The encoding is byte-for-byte the one
//! [`Manifest::encode`] gives for the same contents, so a snapshot's id
//! does not depend on which of the two encoded it.
//!
//! A packed small file's extents are known only once the packed stream is
//! cut past its bytes; its entry is spilled with its place in that stream,
//! and the extents are resolved as the entries are read back.

use std::io::Write;

use serde::ser::{Error as _, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};

use super::manifest::{ChunkRef, Entry, EntryKind, Extent, MANIFEST_VERSION, Manifest};
use super::secret::ChunkKey;
use crate::spill::{FixedSpill, Spill, SpillError};

/// Cut points of the packed small-file stream, in stream order: (stream
/// offset, chunk index, len).
pub type PackChunks = Vec<(u64, u32, u32)>;

/// An entry as the walk leaves it: a packed small file carries where its
/// bytes are in the packed stream (offset, length); its extents are empty.
#[derive(Serialize, Deserialize)]
pub(super) struct Walked {
    entry: Entry,
    packed: Option<(u64, u64)>,
}

/// The entries of a running backup, in the walk's order.
pub(super) struct EntrySpill(Spill<Walked>);

impl EntrySpill {
    pub(super) fn new() -> Result<Self, SpillError> {
        Ok(EntrySpill(Spill::new()?))
    }

    /// Appends a directory, a symlink or a chunked file.
    pub(super) fn push(&mut self, entry: Entry) -> Result<(), SpillError> {
        self.0.push(&Walked {
            entry,
            packed: None,
        })
    }

    /// Appends a packed small file whose `len` bytes start at `stream_off`
    /// of the packed stream.
    pub(super) fn push_packed(
        &mut self,
        entry: Entry,
        stream_off: u64,
        len: u64,
    ) -> Result<(), SpillError> {
        self.0.push(&Walked {
            entry,
            packed: Some((stream_off, len)),
        })
    }
}

/// Bytes of a chunk table's record: the chunk's key, then its length
/// (little-endian).
pub(super) const CHUNK_RECORD: usize = 36;

/// A manifest's chunk table, in order.
pub(super) struct ChunkTable(FixedSpill<CHUNK_RECORD>);

impl ChunkTable {
    pub(super) fn new() -> Result<Self, SpillError> {
        Ok(ChunkTable(FixedSpill::new()?))
    }

    pub(super) fn push(&mut self, chunk: &ChunkRef) -> Result<(), SpillError> {
        let mut record = [0u8; CHUNK_RECORD];
        record[..32].copy_from_slice(&chunk.key.0);
        record[32..].copy_from_slice(&chunk.len.to_le_bytes());
        self.0.push(&record)
    }

    pub(super) fn items(&self) -> u64 {
        self.0.items()
    }

    pub(super) fn flush(&mut self) -> Result<(), SpillError> {
        self.0.flush()
    }

    /// Chunk `i`, if flushed since it was pushed.
    pub(super) fn get(&self, i: u32) -> Result<ChunkRef, SpillError> {
        Ok(chunk_ref(&self.0.get(u64::from(i))?))
    }

    /// Up to `n` chunks from chunk `i` on, into `out` as records.
    pub(super) fn get_run(
        &self,
        i: u32,
        n: usize,
        out: &mut Vec<[u8; CHUNK_RECORD]>,
    ) -> Result<(), SpillError> {
        self.0.get_run(u64::from(i), n, out)
    }

    /// The chunks up to the last flush, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = Result<ChunkRef, SpillError>> + '_ {
        self.0.reader().map(|record| Ok(chunk_ref(&record?)))
    }
}

pub(super) fn chunk_ref(record: &[u8; CHUNK_RECORD]) -> ChunkRef {
    let mut key = [0u8; 32];
    key.copy_from_slice(&record[..32]);
    let mut len = [0u8; 4];
    len.copy_from_slice(&record[32..]);
    ChunkRef {
        key: ChunkKey(key),
        len: u32::from_le_bytes(len),
    }
}

/// What a manifest says besides its tables.
#[derive(Debug, Clone)]
pub struct ManifestHead {
    pub name: String,
    pub time_ms: u64,
    pub roots: Vec<String>,
    pub secret: [u8; 32],
}

impl ManifestHead {
    /// The manifest of this head, `version` and these tables.
    pub fn with_tables(
        &self,
        version: u32,
        chunks: Vec<ChunkRef>,
        entries: Vec<Entry>,
    ) -> Manifest {
        Manifest {
            version,
            name: self.name.clone(),
            time_ms: self.time_ms,
            roots: self.roots.clone(),
            secret: self.secret,
            chunks,
            entries,
        }
    }
}

/// A built manifest whose tables are on disk (in anonymous scratch files,
/// gone when this is dropped).
pub struct SpilledManifest {
    head: ManifestHead,
    chunks: ChunkTable,
    entries: Spill<Walked>,
    pack_chunks: PackChunks,
}

impl std::fmt::Debug for SpilledManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpilledManifest")
            .field("head", &self.head)
            .field("chunks", &self.chunks.0.items())
            .field("entries", &self.entries.items())
            .finish()
    }
}

impl SpilledManifest {
    pub(super) fn new(
        head: ManifestHead,
        mut chunks: ChunkTable,
        entries: EntrySpill,
        pack_chunks: PackChunks,
    ) -> Result<Self, SpillError> {
        let mut entries = entries.0;
        chunks.flush()?;
        entries.flush()?;
        Ok(SpilledManifest {
            head,
            chunks,
            entries,
            pack_chunks,
        })
    }

    /// Chunks in the chunk table.
    pub fn chunk_count(&self) -> u64 {
        self.chunks.0.items()
    }

    /// Entries (directories, files and symlinks).
    pub fn entry_count(&self) -> u64 {
        self.entries.items()
    }

    /// The chunk table, in order.
    pub fn chunks(&self) -> impl Iterator<Item = Result<ChunkRef, SpillError>> + '_ {
        self.chunks.iter()
    }

    /// The entries, in order, packed small files' extents resolved.
    pub fn entries(&self) -> impl Iterator<Item = Result<Entry, SpillError>> + '_ {
        self.entries.reader().map(|walked| {
            let Walked { mut entry, packed } = walked?;
            if let (Some((stream_off, len)), EntryKind::File { extents, .. }) =
                (packed, &mut entry.kind)
            {
                *extents = resolve_packed(&self.pack_chunks, stream_off, len);
            }
            Ok(entry)
        })
    }

    /// Writes the manifest's CBOR encoding (as [`Manifest::encode`] would).
    pub fn encode_into(&self, out: impl Write) -> Result<(), String> {
        let whole = Streamed {
            version: MANIFEST_VERSION,
            name: &self.head.name,
            time_ms: self.head.time_ms,
            roots: &self.head.roots,
            secret: self.head.secret,
            chunks: Chunks(self),
            entries: Entries(self),
        };
        ciborium::into_writer(&whole, out).map_err(|e| e.to_string())
    }

    /// [`Manifest::tree_digest`] of the same contents, streamed.
    pub fn tree_digest(&self) -> Option<[u8; 32]> {
        let mut hasher = blake3::Hasher::new();
        ciborium::into_writer(
            &(&self.head.roots, Chunks(self), Entries(self)),
            &mut hasher,
        )
        .ok()?;
        Some(*hasher.finalize().as_bytes())
    }

    /// The whole manifest in memory (for tests and small trees).
    pub fn to_manifest(&self) -> Result<Manifest, SpillError> {
        Ok(self.head.with_tables(
            MANIFEST_VERSION,
            self.chunks().collect::<Result<_, _>>()?,
            self.entries().collect::<Result<_, _>>()?,
        ))
    }
}

/// A manifest's fields as [`Manifest`] names and orders them, its tables
/// read from the scratch files as they are written out.
#[derive(Serialize)]
struct Streamed<'a> {
    version: u32,
    name: &'a str,
    time_ms: u64,
    roots: &'a [String],
    #[serde(serialize_with = "strew_coordinator::cbor::bytes32::serialize")]
    secret: [u8; 32],
    chunks: Chunks<'a>,
    entries: Entries<'a>,
}

struct Chunks<'a>(&'a SpilledManifest);
struct Entries<'a>(&'a SpilledManifest);

impl Serialize for Chunks<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        stream(s, self.0.chunk_count(), self.0.chunks())
    }
}

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        stream(s, self.0.entry_count(), self.0.entries())
    }
}

/// An array of `len` items read one at a time: an array of another length
/// than its header says is an error, never a different encoding.
fn stream<S: Serializer, T: Serialize>(
    s: S,
    len: u64,
    items: impl Iterator<Item = Result<T, SpillError>>,
) -> Result<S::Ok, S::Error> {
    let want = usize::try_from(len).map_err(S::Error::custom)?;
    let mut seq = s.serialize_seq(Some(want))?;
    let mut got = 0usize;
    for item in items {
        seq.serialize_element(&item.map_err(S::Error::custom)?)?;
        got += 1;
    }
    if got != want {
        return Err(S::Error::custom(format!(
            "a scratch table read back {got} items of {want}"
        )));
    }
    seq.end()
}

/// Extents covering `len` bytes at `stream_off` of the packed stream.
pub(super) fn resolve_packed(pack_chunks: &PackChunks, stream_off: u64, len: u64) -> Vec<Extent> {
    let mut out = Vec::new();
    if len == 0 {
        return out;
    }
    let mut i =
        pack_chunks.partition_point(|(start, _, clen)| start + u64::from(*clen) <= stream_off);
    let mut off = stream_off;
    let mut left = len;
    while left > 0 {
        let Some(&(start, index, clen)) = pack_chunks.get(i) else {
            break; // cannot happen for offsets inside the stream
        };
        let within = off - start;
        let take = (u64::from(clen) - within).min(left);
        out.push(Extent {
            chunk: index,
            offset: within as u32,
            len: take as u32,
        });
        off += take;
        left -= take;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;
    use strew_coordinator::DataId;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry::for_tests(path, kind)
    }

    fn file(size: u64, extents: Vec<Extent>) -> EntryKind {
        EntryKind::File {
            size,
            data_id: DataId([size as u8; 32]),
            extents,
        }
    }

    #[test]
    fn the_streamed_encoding_is_the_in_memory_one_with_packed_extents_resolved() {
        let mut chunks = ChunkTable::new().expect("scratch");
        for i in 0..5000u32 {
            let key = ChunkKey(*blake3::hash(&i.to_le_bytes()).as_bytes());
            chunks.push(&ChunkRef { key, len: 100 }).expect("push");
        }
        // The packed stream: 10 bytes in chunk 4998, then 20 in chunk 4999.
        let pack: PackChunks = vec![(0, 4998, 10), (10, 4999, 20)];
        let mut entries = EntrySpill::new().expect("scratch");
        entries.push(entry("a", EntryKind::Dir)).expect("push");
        let big: Vec<Extent> = (0..4998)
            .map(|chunk| Extent {
                chunk,
                offset: 0,
                len: 100,
            })
            .collect();
        entries
            .push(entry("a/big", file(499_800, big)))
            .expect("push");
        entries
            .push_packed(entry("a/small", file(12, Vec::new())), 5, 12)
            .expect("push");
        entries
            .push_packed(entry("a/same", file(12, Vec::new())), 5, 12)
            .expect("push");
        let link = EntryKind::Symlink {
            target: ByteBuf::from(b"big".to_vec()),
        };
        entries.push(entry("a/link", link)).expect("push");
        let head = ManifestHead {
            name: "set".into(),
            time_ms: 42,
            roots: vec!["/home/a".into()],
            secret: [9; 32],
        };
        let spilled = SpilledManifest::new(head, chunks, entries, pack).expect("seal");
        assert_eq!((spilled.chunk_count(), spilled.entry_count()), (5000, 5));

        let whole = spilled.to_manifest().expect("read back");
        let resolved = vec![
            Extent {
                chunk: 4998,
                offset: 5,
                len: 5,
            },
            Extent {
                chunk: 4999,
                offset: 0,
                len: 7,
            },
        ];
        for small in &whole.entries[2..4] {
            assert_eq!(small.kind, file(12, resolved.clone()), "{:?}", small.path);
        }
        let mut streamed = Vec::new();
        spilled.encode_into(&mut streamed).expect("encode");
        assert_eq!(streamed, whole.encode());
        assert_eq!(spilled.tree_digest(), whole.tree_digest());
        assert!(spilled.tree_digest().is_some());
        assert_eq!(Manifest::decode(&streamed).expect("valid"), whole);
    }

    #[test]
    fn packed_offsets_resolve_across_chunk_boundaries() {
        let chunks = vec![(0, 0, 10), (10, 3, 5), (15, 4, 20)];
        assert_eq!(
            resolve_packed(&chunks, 8, 10),
            vec![
                Extent {
                    chunk: 0,
                    offset: 8,
                    len: 2
                },
                Extent {
                    chunk: 3,
                    offset: 0,
                    len: 5
                },
                Extent {
                    chunk: 4,
                    offset: 0,
                    len: 3
                },
            ]
        );
        assert_eq!(
            resolve_packed(&chunks, 10, 5),
            vec![Extent {
                chunk: 3,
                offset: 0,
                len: 5
            }]
        );
        assert!(resolve_packed(&chunks, 3, 0).is_empty());
    }
}
