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
use crate::spill_table::{MEMORY_ELEMENTS, PrefixMap, Words};

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
    /// 8-byte prefix of a needed chunk's storage index → its canonical
    /// index in the chunk table: found by prefix, confirmed on the whole id.
    by_id: PrefixMap,
    /// The writes of canonical chunk `c` are records `start[c]..start[c + 1]`
    /// of `writes`.
    start: Words,
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

/// Keeps the first error of a callback that cannot return one.
fn keep(first: &mut Option<SpillError>, r: Result<(), SpillError>) {
    if let Err(e) = r {
        first.get_or_insert(e);
    }
}

fn kept(first: Option<SpillError>) -> Result<(), SpillError> {
    first.map_or(Ok(()), Err)
}

impl ChunkWrites {
    /// Inverts the extents of the files `t` lists (a checked manifest:
    /// every extent's chunk is in the table). A file's writes into one
    /// chunk are listed in the order of its extents, one after the other.
    /// Its tables stay in memory up to [`MEMORY_ELEMENTS`] chunks.
    pub fn build(t: &dyn Tables) -> Result<ChunkWrites, ChunkWritesError> {
        Self::build_within(t, MEMORY_ELEMENTS)
    }

    /// [`build`](Self::build), its tables in scratch files beyond `memory`
    /// chunks.
    pub fn build_within(t: &dyn Tables, memory: usize) -> Result<ChunkWrites, ChunkWritesError> {
        let table = t.chunk_count();
        if table >= u32::MAX as usize || t.entry_count() > u32::MAX as usize {
            return Err(ChunkWritesError::TooMany);
        }
        // The chunks some file needs (`canon[c] == c`; u32::MAX for a chunk
        // no file needs), then equal keys share the first index.
        let mut canon = Words::new(table, u32::MAX, memory)?;
        let (mut needed, mut outside, mut failed) = (0usize, false, None);
        t.each_file(&mut |_, xs| {
            for x in xs {
                let c = x.chunk as usize;
                if c >= table {
                    outside = true;
                    continue;
                }
                keep(
                    &mut failed,
                    canon.get(c).and_then(|was| {
                        if was == u32::MAX {
                            needed += 1;
                            canon.set(c, x.chunk)?;
                        }
                        Ok(())
                    }),
                );
            }
        })?;
        if outside {
            // A checked manifest never names a chunk past its table.
            return Err(ChunkWritesError::TooMany);
        }
        kept(failed)?;
        // In table order, so the first index of each key is canonical.
        let mut by_id = PrefixMap::new(needed, memory)?;
        let mut failed = None;
        t.each_chunk(&mut |i, key| {
            let r = (|| {
                if canon.get(i as usize)? == u32::MAX {
                    return Ok(());
                }
                let p = prefix(&key.storage_index());
                let probe = by_id.probe(&p)?;
                for &c in &probe.found {
                    if t.chunk_key(c)? == *key {
                        return canon.set(i as usize, c);
                    }
                }
                by_id.put(&probe, &p, i)
            })();
            keep(&mut failed, r);
        })?;
        kept(failed)?;

        // Counts, then offsets, then the writes in entry and extent order.
        let mut start = Words::new(table + 1, 0, memory)?;
        let (mut total, mut failed) = (0u64, None);
        t.each_file(&mut |_, xs| {
            for x in xs {
                let r = canon.get(x.chunk as usize).and_then(|c| {
                    let at = c as usize + 1;
                    start.set(at, start.get(at)?.wrapping_add(1))
                });
                keep(&mut failed, r);
                total += 1;
            }
        })?;
        kept(failed)?;
        if total >= u64::from(u32::MAX) {
            return Err(ChunkWritesError::TooMany);
        }
        start.accumulate()?;
        let mut fill = start.copy()?;
        // Written in entry order, the writes of one chunk land one after
        // the other, so the file is written in runs, not a record at a time.
        let mut writes = FixedSlots::new()?;
        let mut failed = None;
        t.each_file(&mut |i, xs| {
            let mut at = 0u64;
            for x in xs {
                let r = canon.get(x.chunk as usize).and_then(|c| {
                    let slot = fill.get(c as usize)?;
                    let record = write_record(&Write {
                        file: i,
                        off: x.offset,
                        len: x.len,
                        at,
                    });
                    writes.put(u64::from(slot), &record)?;
                    fill.set(c as usize, slot + 1)
                });
                keep(&mut failed, r);
                at += u64::from(x.len);
            }
        })?;
        kept(failed)?;
        writes.flush()?;
        let mut pending = vec![0u64; table.div_ceil(64)];
        canon.each(|i, c| {
            if c as usize == i {
                pending[i / 64] |= 1 << (i % 64);
            }
        })?;
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
        let mut found = None;
        for c in self.by_id.probe(&prefix(id))?.found {
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

    /// Records `start[c]..start[c + 1]`: chunk `c`'s writes.
    fn range(&self, c: u32) -> Result<(u64, u64), SpillError> {
        let c = c as usize;
        if c + 1 >= self.start.len() {
            return Ok((0, 0));
        }
        Ok((
            u64::from(self.start.get(c)?),
            u64::from(self.start.get(c + 1)?),
        ))
    }

    /// Where each of the canonical chunks `cs` goes, in their order. The
    /// writes of chunks claimed one after the other lie one after the
    /// other: each run of them is one read.
    pub fn writes_of(&self, cs: &[u32]) -> Result<Vec<Vec<Write>>, SpillError> {
        let ranges: Vec<(u64, u64)> = cs
            .iter()
            .map(|c| self.range(*c))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(cs.len());
        let mut i = 0;
        while i < cs.len() {
            let (from, mut to) = ranges[i];
            let mut j = i + 1;
            while j < cs.len() && ranges[j].0 == to {
                to = ranges[j].1;
                j += 1;
            }
            let records = self.writes.get_run(from, to)?;
            let mut at = 0usize;
            for &(a, b) in &ranges[i..j] {
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

    /// The id of the first chunk (in table order) needed and not claimed,
    /// if one is left.
    pub fn first_left(&self, t: &dyn Tables) -> Result<Option<DataId>, SpillError> {
        let first = self
            .pending
            .iter()
            .enumerate()
            .find(|(_, w)| **w != 0)
            .map(|(i, w)| (i * 64) as u32 + w.trailing_zeros());
        first
            .map(|c| Ok(t.chunk_key(c)?.storage_index()))
            .transpose()
    }

    /// Whether the index is in scratch files (a table of more than
    /// [`MEMORY_ELEMENTS`] chunks, or the bound it was built within).
    pub fn on_disk(&self) -> bool {
        self.start.on_disk() || self.by_id.on_disk()
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
        for memory in [0, MEMORY_ELEMENTS] {
            duplicates_within(m.clone(), memory);
        }
    }

    fn duplicates_within(m: Manifest, memory: usize) {
        let mut w = ChunkWrites::build_within(&m, memory).unwrap();
        assert_eq!(w.on_disk(), memory == 0);
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
            on_disk in any::<bool>(),
        ) {
            let files: Vec<Vec<(u32, u32, u32)>> = files
                .into_iter()
                .map(|xs| xs.into_iter().map(|(c, o, l)| (c % keys.len() as u32, o, l)).collect())
                .collect();
            let m = manifest(&keys, &files);
            let want = naive(&m);
            let memory = if on_disk { 0 } else { MEMORY_ELEMENTS };
            let mut w = ChunkWrites::build_within(&m, memory).unwrap();
            prop_assert_eq!(w.on_disk(), on_disk);
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
