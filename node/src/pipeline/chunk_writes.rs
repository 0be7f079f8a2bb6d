//! Where each chunk a restore needs goes: the manifest's file extents
//! inverted into a compact index by chunk, and found by the chunk's storage
//! index as the sequence names it.
//!
//! A restore walks the sequence, not the files, so for every stripe it
//! meets it must know which chunk of the manifest's table it is and which
//! file ranges that chunk fills. Kept as a sorted table of 8-byte id
//! prefixes (12 bytes a chunk) and the offsets of each chunk's writes (4
//! bytes) in memory, and the writes themselves (20 bytes an extent) in a
//! scratch file, ordered by chunk, so the writes of the chunks a group of
//! stripes claims are one read. A hash map of vectors held about 300 bytes
//! a chunk (a million-chunk restore held hundreds of MB for it); flat
//! arrays in memory about 40.
//!
//! The same chunk may sit at several places of the table (a chunk a backup
//! met twice): its writes gather under the first of them, its *canonical*
//! index, and it is decoded once.

use strew_coordinator::DataId;

use super::manifest::{EntryKind, Extent, Manifest};
use super::manifest_disk::DiskManifest;
use super::secret::ChunkKey;
use crate::spill::{FixedSlots, SpillError};

/// One range of a file that a chunk's bytes fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    /// The manifest entry (a regular file).
    pub file: u32,
    /// Where in the chunk the range starts, and its length.
    pub off: u32,
    pub len: u32,
    /// Where in the file it goes.
    pub at: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ChunkWritesError {
    #[error("the manifest has more than 2^32 entries or file extents")]
    TooMany,
    #[error(transparent)]
    Scratch(#[from] SpillError),
}

/// What the index is built from: a checked manifest's chunk table (every
/// extent names a chunk in it) and the files a restore takes.
pub trait Tables {
    fn chunk_count(&self) -> usize;
    fn entry_count(&self) -> usize;
    /// Chunk `c`'s key.
    fn chunk_key(&self, c: u32) -> Result<ChunkKey, SpillError>;
    /// Every chunk's key, in table order.
    fn each_chunk(&self, f: &mut dyn FnMut(u32, &ChunkKey)) -> Result<(), SpillError>;
    /// The extents of each file the restore takes, in entry order.
    fn each_file(&self, f: &mut dyn FnMut(u32, &[Extent])) -> Result<(), SpillError>;
}

impl Tables for Manifest {
    fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn entry_count(&self) -> usize {
        self.entries.len()
    }

    fn chunk_key(&self, c: u32) -> Result<ChunkKey, SpillError> {
        self.chunks
            .get(c as usize)
            .map(|c| c.key)
            .ok_or(SpillError::Damaged(c as usize))
    }

    fn each_chunk(&self, f: &mut dyn FnMut(u32, &ChunkKey)) -> Result<(), SpillError> {
        for (i, c) in self.chunks.iter().enumerate() {
            f(i as u32, &c.key);
        }
        Ok(())
    }

    fn each_file(&self, f: &mut dyn FnMut(u32, &[Extent])) -> Result<(), SpillError> {
        for (i, e) in self.entries.iter().enumerate() {
            if let EntryKind::File { extents, .. } = &e.kind {
                f(i as u32, extents);
            }
        }
        Ok(())
    }
}

/// A manifest on disk, and the entries a restore takes (all when `None`).
pub struct Selected<'a> {
    pub manifest: &'a DiskManifest,
    pub wanted: Option<&'a [bool]>,
}

impl Tables for Selected<'_> {
    fn chunk_count(&self) -> usize {
        self.manifest.chunk_count()
    }

    fn entry_count(&self) -> usize {
        self.manifest.entry_count()
    }

    fn chunk_key(&self, c: u32) -> Result<ChunkKey, SpillError> {
        Ok(self.manifest.chunk(c)?.key)
    }

    fn each_chunk(&self, f: &mut dyn FnMut(u32, &ChunkKey)) -> Result<(), SpillError> {
        for (i, c) in self.manifest.chunks().enumerate() {
            f(i as u32, &c?.key);
        }
        Ok(())
    }

    fn each_file(&self, f: &mut dyn FnMut(u32, &[Extent])) -> Result<(), SpillError> {
        for (i, e) in self.manifest.entries().enumerate() {
            let e = e?;
            let taken = self
                .wanted
                .is_none_or(|w| w.get(i).copied().unwrap_or(false));
            if let (true, EntryKind::File { extents, .. }) = (taken, &e.kind) {
                f(i as u32, extents);
            }
        }
        Ok(())
    }
}

/// The chunks a restore still has to write, and where they go.
pub struct ChunkWrites {
    /// (the first 8 bytes of the chunk's storage index, its canonical index
    /// in the chunk table), sorted: found by binary search, confirmed on
    /// the whole id.
    by_id: Vec<([u8; 8], u32)>,
    /// The writes of canonical chunk `c` are records `start[c]..start[c + 1]`
    /// of `writes`.
    start: Vec<u32>,
    /// A scratch file of [`WRITE_RECORD`]-byte records.
    writes: FixedSlots<WRITE_RECORD>,
    /// One bit per table index: a canonical chunk not written yet.
    pending: Vec<u64>,
}

/// Bytes of a write's record: file, offset, length, place (little-endian).
const WRITE_RECORD: usize = 20;

fn write_record(w: &Write) -> [u8; WRITE_RECORD] {
    let mut r = [0u8; WRITE_RECORD];
    r[..4].copy_from_slice(&w.file.to_le_bytes());
    r[4..8].copy_from_slice(&w.off.to_le_bytes());
    r[8..12].copy_from_slice(&w.len.to_le_bytes());
    r[12..].copy_from_slice(&w.at.to_le_bytes());
    r
}

fn write_of(r: &[u8; WRITE_RECORD]) -> Write {
    let word = |at: usize| u32::from_le_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]]);
    let mut at = [0u8; 8];
    at.copy_from_slice(&r[12..]);
    Write {
        file: word(0),
        off: word(4),
        len: word(8),
        at: u64::from_le_bytes(at),
    }
}

fn prefix(id: &DataId) -> [u8; 8] {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id.0[..8]);
    p
}

impl ChunkWrites {
    /// Inverts the extents of the files `t` lists (a checked manifest:
    /// every extent's chunk is in the table). A file's writes into one
    /// chunk are listed in the order of its extents, one after the other.
    pub fn build(t: &dyn Tables) -> Result<ChunkWrites, ChunkWritesError> {
        let table = t.chunk_count();
        if table >= u32::MAX as usize || t.entry_count() > u32::MAX as usize {
            return Err(ChunkWritesError::TooMany);
        }
        // The chunks some file needs, by id; equal keys share the first
        // index (`canon`, u32::MAX for a chunk no file needs).
        let mut canon = vec![u32::MAX; table];
        let mut outside = false;
        t.each_file(&mut |_, xs| {
            for x in xs {
                match canon.get_mut(x.chunk as usize) {
                    Some(c) => *c = x.chunk,
                    None => outside = true,
                }
            }
        })?;
        if outside {
            // A checked manifest never names a chunk past its table.
            return Err(ChunkWritesError::TooMany);
        }
        let mut by_id: Vec<([u8; 8], u32)> = Vec::new();
        t.each_chunk(&mut |i, key| {
            if canon[i as usize] != u32::MAX {
                by_id.push((prefix(&key.storage_index()), i));
            }
        })?;
        by_id.sort_unstable();
        let mut group = 0;
        while group < by_id.len() {
            let end = group + by_id[group..].partition_point(|e| e.0 == by_id[group].0);
            // Within one prefix (nearly always one chunk), the first index
            // of each key is canonical.
            for a in group..end {
                let ia = by_id[a].1 as usize;
                if canon[ia] != ia as u32 || a + 1 == end {
                    continue;
                }
                let key_a = t.chunk_key(ia as u32)?;
                for &(_, ib) in &by_id[a + 1..end] {
                    if t.chunk_key(ib)? == key_a {
                        canon[ib as usize] = ia as u32;
                    }
                }
            }
            group = end;
        }
        by_id.retain(|(_, i)| canon[*i as usize] == *i);
        by_id.shrink_to_fit();

        // Counts, then offsets, then the writes in entry and extent order.
        let mut start = vec![0u32; table + 1];
        let mut total: u64 = 0;
        t.each_file(&mut |_, xs| {
            for x in xs {
                start[canon[x.chunk as usize] as usize + 1] += 1;
                total += 1;
            }
        })?;
        if total >= u64::from(u32::MAX) {
            return Err(ChunkWritesError::TooMany);
        }
        for c in 0..table {
            start[c + 1] += start[c];
        }
        let mut fill = start.clone();
        // Written in entry order, the writes of one chunk land one after
        // the other, so the file is written in runs, not a record at a time.
        let mut writes = FixedSlots::new()?;
        let mut failed = None;
        t.each_file(&mut |i, xs| {
            let mut at = 0u64;
            for x in xs {
                let slot = &mut fill[canon[x.chunk as usize] as usize];
                let record = write_record(&Write {
                    file: i,
                    off: x.offset,
                    len: x.len,
                    at,
                });
                if let Err(e) = writes.put(u64::from(*slot), &record) {
                    failed.get_or_insert(e);
                }
                *slot += 1;
                at += u64::from(x.len);
            }
        })?;
        if let Some(e) = failed {
            return Err(e.into());
        }
        writes.flush()?;
        let mut pending = vec![0u64; table.div_ceil(64)];
        for (_, i) in &by_id {
            pending[*i as usize / 64] |= 1 << (*i % 64);
        }
        Ok(ChunkWrites {
            by_id,
            start,
            writes,
            pending,
        })
    }

    /// The canonical index and the key of the chunk named `id`, if the
    /// restore needs it and has not claimed it yet; claims it.
    pub fn claim(
        &mut self,
        t: &dyn Tables,
        id: &DataId,
    ) -> Result<Option<(u32, ChunkKey)>, SpillError> {
        let p = prefix(id);
        let from = self.by_id.partition_point(|e| e.0 < p);
        let mut found = None;
        for &(_, c) in self.by_id[from..].iter().take_while(|e| e.0 == p) {
            let key = t.chunk_key(c)?;
            if key.storage_index() == *id {
                found = Some((c, key));
                break;
            }
        }
        let Some((c, key)) = found else {
            return Ok(None);
        };
        let (word, bit) = (c as usize / 64, 1u64 << (c % 64));
        if self.pending[word] & bit == 0 {
            return Ok(None);
        }
        self.pending[word] &= !bit;
        Ok(Some((c, key)))
    }

    /// Where canonical chunk `c`'s bytes go.
    pub fn writes(&self, c: u32) -> Result<Vec<Write>, SpillError> {
        Ok(self.writes_of(&[c])?.pop().unwrap_or_default())
    }

    /// Where each of the canonical chunks `cs` goes, in their order. The
    /// writes of chunks claimed one after the other lie one after the
    /// other: each run of them is one read.
    pub fn writes_of(&self, cs: &[u32]) -> Result<Vec<Vec<Write>>, SpillError> {
        let range = |c: u32| {
            let c = c as usize;
            match (self.start.get(c), self.start.get(c + 1)) {
                (Some(&a), Some(&b)) => (u64::from(a), u64::from(b)),
                _ => (0, 0),
            }
        };
        let mut out = Vec::with_capacity(cs.len());
        let mut i = 0;
        while i < cs.len() {
            let (from, mut to) = range(cs[i]);
            let mut j = i + 1;
            while j < cs.len() && range(cs[j]).0 == to {
                to = range(cs[j]).1;
                j += 1;
            }
            let records = self.writes.get_run(from, to)?;
            let mut at = 0usize;
            for &c in &cs[i..j] {
                let (a, b) = range(c);
                let n = (b - a) as usize;
                out.push(records[at..at + n].iter().map(write_of).collect());
                at += n;
            }
            i = j;
        }
        Ok(out)
    }

    /// Chunks needed and not claimed yet.
    pub fn left(&self) -> usize {
        self.pending.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The id of a chunk needed and not claimed, if one is left.
    pub fn first_left(&self, t: &dyn Tables) -> Result<Option<DataId>, SpillError> {
        let first = self
            .by_id
            .iter()
            .map(|e| e.1)
            .find(|&c| self.pending[c as usize / 64] & (1 << (c % 64)) != 0);
        first
            .map(|c| Ok(t.chunk_key(c)?.storage_index()))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use serde_bytes::ByteBuf;

    use super::*;
    use crate::pipeline::manifest::{ChunkRef, Entry};

    fn manifest(keys: &[u8], files: &[Vec<(u32, u32, u32)>]) -> Manifest {
        let entries = files
            .iter()
            .enumerate()
            .map(|(i, xs)| Entry {
                path: ByteBuf::from(format!("f{i}").into_bytes()),
                mode: 0o644,
                mtime_s: 0,
                mtime_ns: 0,
                kind: EntryKind::File {
                    size: xs.iter().map(|x| u64::from(x.2)).sum(),
                    data_id: DataId([0; 32]),
                    extents: xs
                        .iter()
                        .map(|&(chunk, offset, len)| Extent { chunk, offset, len })
                        .collect(),
                },
            })
            .collect();
        let chunks = keys
            .iter()
            .map(|k| ChunkRef {
                key: ChunkKey([*k; 32]),
                len: 100,
            })
            .collect();
        Manifest::for_tests(chunks, entries)
    }

    /// The map the restore kept before: id → writes in entry order.
    fn naive(m: &Manifest) -> HashMap<DataId, Vec<Write>> {
        let mut out: HashMap<DataId, Vec<Write>> = HashMap::new();
        for (i, e) in m.entries.iter().enumerate() {
            if let EntryKind::File { extents, .. } = &e.kind {
                let mut at = 0;
                for x in extents {
                    out.entry(m.chunks[x.chunk as usize].data_id())
                        .or_default()
                        .push(Write {
                            file: i as u32,
                            off: x.offset,
                            len: x.len,
                            at,
                        });
                    at += u64::from(x.len);
                }
            }
        }
        out
    }

    #[test]
    fn duplicate_chunks_gather_under_one_index_and_are_claimed_once() {
        // Chunks 0 and 2 hold the same key; chunk 3 no file needs.
        let m = manifest(
            &[1, 2, 1, 4],
            &[vec![(0, 0, 10), (1, 0, 5)], vec![(2, 3, 4)]],
        );
        let mut w = ChunkWrites::build(&m).unwrap();
        assert_eq!(w.left(), 2);
        let one = m.chunks[0].data_id();
        let (c, key) = w.claim(&m, &one).unwrap().unwrap();
        assert_eq!(key, m.chunks[0].key);
        assert_eq!(c, 0);
        assert_eq!(
            w.writes(c).unwrap(),
            [
                Write {
                    file: 0,
                    off: 0,
                    len: 10,
                    at: 0
                },
                Write {
                    file: 1,
                    off: 3,
                    len: 4,
                    at: 0
                }
            ]
        );
        assert_eq!(w.claim(&m, &one).unwrap(), None, "claimed once");
        assert_eq!(
            w.claim(&m, &m.chunks[3].data_id()).unwrap(),
            None,
            "not needed"
        );
        assert_eq!(
            w.claim(&m, &DataId([9; 32])).unwrap(),
            None,
            "not in the table"
        );
        assert_eq!(w.first_left(&m).unwrap(), Some(m.chunks[1].data_id()));
        let (two, _) = w.claim(&m, &m.chunks[1].data_id()).unwrap().unwrap();
        assert_eq!(w.writes(two).unwrap()[0].at, 10);
        assert_eq!((w.left(), w.first_left(&m).unwrap()), (0, None));
    }

    proptest! {
        #[test]
        fn the_index_holds_what_a_map_of_vectors_held(
            keys in prop::collection::vec(0u8..6, 1..12),
            files in prop::collection::vec(
                prop::collection::vec((0u32..12, 0u32..50, 1u32..50), 0..6), 0..6),
        ) {
            let files: Vec<Vec<(u32, u32, u32)>> = files
                .into_iter()
                .map(|xs| xs.into_iter().map(|(c, o, l)| (c % keys.len() as u32, o, l)).collect())
                .collect();
            let m = manifest(&keys, &files);
            let want = naive(&m);
            let mut w = ChunkWrites::build(&m).unwrap();
            prop_assert_eq!(w.left(), want.len());
            let mut claimed = Vec::new();
            for (id, writes) in &want {
                let (c, _) = w.claim(&m, id).unwrap().expect("needed chunk found");
                prop_assert_eq!(w.writes(c).unwrap(), writes.clone());
                prop_assert_eq!(w.claim(&m, id).unwrap(), None);
                claimed.push(c);
            }
            prop_assert_eq!(w.left(), 0);
            // Read together (adjacent ones in one run), in any order.
            for order in [claimed.clone(), { claimed.sort_unstable(); claimed }] {
                let one_by_one: Vec<Vec<Write>> =
                    order.iter().map(|c| w.writes(*c).unwrap()).collect();
                prop_assert_eq!(w.writes_of(&order).unwrap(), one_by_one);
            }
        }
    }
}
