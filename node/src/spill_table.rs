//! Tables sized once that a restore's index of chunks needs, kept in
//! memory while small and in an anonymous temporary file beyond a bound
//! (the kernel's page cache holds them then, not the process): an array of
//! 32-bit words ([`Words`]) and a map from 8-byte id prefixes to chunk
//! indices ([`PrefixMap`], open addressing, several indices to a prefix).
//!
//! On disk a table of words keeps the 4 KiB page it touched last (the
//! index's passes go through neighbouring chunks one after the other) and
//! the prefix map reads 16 slots a probe: a system call each, through the
//! kernel's page cache, is what a restore of millions of chunks pays
//! instead of memory that grows with it.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

use crate::spill::SpillError;

/// Elements a table keeps in memory; a larger one lives in a file.
pub const MEMORY_ELEMENTS: usize = 1 << 20;

/// Words read or written at once by the sequential passes (256 KiB).
const BLOCK_WORDS: usize = 1 << 16;

/// Words of the page a table on disk keeps (4 KiB): the index's passes
/// touch the words of neighbouring chunks one after the other, so most
/// accesses are to the page touched last.
const PAGE_WORDS: usize = 1024;

/// An array of `u32`.
pub struct Words {
    len: usize,
    inner: WordsIn,
}

enum WordsIn {
    Memory(Vec<u32>),
    Disk { file: File, page: Mutex<Page> },
}

/// The page of a table on disk read last, written back when another is
/// read or the file is read as a whole.
#[derive(Default)]
struct Page {
    first: usize,
    words: Vec<u32>,
    dirty: bool,
}

fn byte_at(i: usize, width: usize) -> Result<u64, SpillError> {
    (i as u64)
        .checked_mul(width as u64)
        .ok_or(SpillError::Damaged(i))
}

/// A new scratch file of `total` bytes, `pattern` over and over (a sparse
/// file when it is all zeros).
fn filled(total: u64, pattern: &[u8]) -> Result<File, SpillError> {
    let file = tempfile::tempfile()?;
    if pattern.iter().all(|b| *b == 0) {
        file.set_len(total)?;
        return Ok(file);
    }
    let block = pattern.repeat(BLOCK_WORDS);
    let mut at = 0u64;
    while at < total {
        let n = (block.len() as u64).min(total - at) as usize;
        file.write_all_at(&block[..n], at)?;
        at += n as u64;
    }
    Ok(file)
}

fn lock(page: &Mutex<Page>) -> MutexGuard<'_, Page> {
    // A panic while a page was held loses at most that page's writes to a
    // scratch table the panicking restore no longer reads.
    page.lock().unwrap_or_else(|p| p.into_inner())
}

impl Page {
    /// Writes the page back if it changed.
    fn write_back(&mut self, file: &File) -> Result<(), SpillError> {
        if self.dirty {
            let bytes: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
            file.write_all_at(&bytes, byte_at(self.first, 4)?)?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Makes the page the one holding word `i` of a table of `len`.
    fn hold(&mut self, file: &File, i: usize, len: usize) -> Result<(), SpillError> {
        let first = i / PAGE_WORDS * PAGE_WORDS;
        if self.first == first && !self.words.is_empty() {
            return Ok(());
        }
        self.write_back(file)?;
        let n = PAGE_WORDS.min(len - first);
        let mut bytes = vec![0u8; n * 4];
        file.read_exact_at(&mut bytes, byte_at(first, 4)?)?;
        self.words.clear();
        self.words.extend(
            bytes
                .chunks_exact(4)
                .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
        );
        self.first = first;
        Ok(())
    }
}

impl Words {
    /// `len` words of `value`; in memory when `len <= memory`.
    pub fn new(len: usize, value: u32, memory: usize) -> Result<Words, SpillError> {
        if len <= memory {
            return Ok(Words {
                len,
                inner: WordsIn::Memory(vec![value; len]),
            });
        }
        let file = filled(byte_at(len, 4)?, &value.to_le_bytes())?;
        Ok(Words::on(file, len))
    }

    fn on(file: File, len: usize) -> Words {
        Words {
            len,
            inner: WordsIn::Disk {
                file,
                page: Mutex::new(Page::default()),
            },
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the words are in a file.
    pub fn on_disk(&self) -> bool {
        matches!(self.inner, WordsIn::Disk { .. })
    }

    pub fn get(&self, i: usize) -> Result<u32, SpillError> {
        if i >= self.len {
            return Err(SpillError::Damaged(i));
        }
        match &self.inner {
            WordsIn::Memory(words) => Ok(words[i]),
            WordsIn::Disk { file, page } => {
                let mut page = lock(page);
                page.hold(file, i, self.len)?;
                Ok(page.words[i - page.first])
            }
        }
    }

    pub fn set(&mut self, i: usize, value: u32) -> Result<(), SpillError> {
        if i >= self.len {
            return Err(SpillError::Damaged(i));
        }
        match &mut self.inner {
            WordsIn::Memory(words) => words[i] = value,
            WordsIn::Disk { file, page } => {
                let page = page.get_mut().unwrap_or_else(|p| p.into_inner());
                page.hold(file, i, self.len)?;
                let first = page.first;
                page.words[i - first] = value;
                page.dirty = true;
            }
        }
        Ok(())
    }

    /// Calls `f` with each index and word, in order (a block at a time).
    pub fn each(&self, mut f: impl FnMut(usize, u32)) -> Result<(), SpillError> {
        self.blocks(|first, block| {
            for (j, w) in block.iter().enumerate() {
                f(first + j, *w);
            }
            Ok(())
        })
    }

    /// Each word becomes the sum of itself and every word before it (the
    /// caller keeps the sum under 2^32).
    pub fn accumulate(&mut self) -> Result<(), SpillError> {
        let mut sum = 0u32;
        match &mut self.inner {
            WordsIn::Memory(words) => {
                for w in words.iter_mut() {
                    sum = sum.wrapping_add(*w);
                    *w = sum;
                }
            }
            WordsIn::Disk { file, page } => {
                // The file is read and written as a whole: the page goes.
                let page = page.get_mut().unwrap_or_else(|p| p.into_inner());
                page.write_back(file)?;
                *page = Page::default();
                let mut block = vec![0u8; BLOCK_WORDS * 4];
                let mut first = 0usize;
                while first < self.len {
                    let n = BLOCK_WORDS.min(self.len - first);
                    let bytes = &mut block[..n * 4];
                    file.read_exact_at(bytes, byte_at(first, 4)?)?;
                    for w in bytes.chunks_exact_mut(4) {
                        sum = sum.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
                        w.copy_from_slice(&sum.to_le_bytes());
                    }
                    file.write_all_at(bytes, byte_at(first, 4)?)?;
                    first += n;
                }
            }
        }
        Ok(())
    }

    /// A copy (in a new file when on disk).
    pub fn copy(&self) -> Result<Words, SpillError> {
        match &self.inner {
            WordsIn::Memory(words) => Ok(Words {
                len: self.len,
                inner: WordsIn::Memory(words.clone()),
            }),
            WordsIn::Disk { .. } => {
                let file = tempfile::tempfile()?;
                let mut at = 0u64;
                self.blocks(|_, block| {
                    let bytes: Vec<u8> = block.iter().flat_map(|w| w.to_le_bytes()).collect();
                    file.write_all_at(&bytes, at)?;
                    at += bytes.len() as u64;
                    Ok(())
                })?;
                Ok(Words::on(file, self.len))
            }
        }
    }

    /// Calls `f` with each block of words (and its first index), in order.
    fn blocks(
        &self,
        mut f: impl FnMut(usize, &[u32]) -> Result<(), SpillError>,
    ) -> Result<(), SpillError> {
        match &self.inner {
            WordsIn::Memory(words) => {
                for (b, block) in words.chunks(BLOCK_WORDS).enumerate() {
                    f(b * BLOCK_WORDS, block)?;
                }
            }
            WordsIn::Disk { file, page } => {
                // What the page changed is in the file first.
                lock(page).write_back(file)?;
                let mut bytes = vec![0u8; BLOCK_WORDS * 4];
                let mut words = Vec::with_capacity(BLOCK_WORDS);
                let mut first = 0usize;
                while first < self.len {
                    let n = BLOCK_WORDS.min(self.len - first);
                    file.read_exact_at(&mut bytes[..n * 4], byte_at(first, 4)?)?;
                    words.clear();
                    words.extend(
                        bytes[..n * 4]
                            .chunks_exact(4)
                            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]])),
                    );
                    f(first, &words)?;
                    first += n;
                }
            }
        }
        Ok(())
    }
}

/// Bytes of a [`PrefixMap`] slot: the prefix, then the index (little-endian;
/// `u32::MAX` marks an empty slot).
const SLOT: usize = 12;
/// Slots read at once while probing.
const PROBE: usize = 16;
const EMPTY: [u8; SLOT] = [0xff; SLOT];

/// 8-byte prefixes to `u32` indices (no index is `u32::MAX`), sized once
/// for at most `capacity` entries at half load; several indices may share
/// a prefix. The prefixes are hashes' first bytes: they place themselves.
pub struct PrefixMap {
    slots: u64,
    entries: usize,
    capacity: usize,
    inner: SlotsIn,
}

enum SlotsIn {
    Memory(Vec<[u8; SLOT]>),
    Disk(File),
}

/// Where a probe for a prefix ended: the indices stored under it, and the
/// empty slot an insert of it takes.
pub struct Probe {
    pub found: Vec<u32>,
    free: u64,
}

impl PrefixMap {
    /// Room for `capacity` entries; in memory when `capacity <= memory`.
    pub fn new(capacity: usize, memory: usize) -> Result<PrefixMap, SpillError> {
        let slots = (capacity as u64).saturating_mul(2).max(PROBE as u64);
        let inner = if capacity <= memory {
            SlotsIn::Memory(vec![EMPTY; slots as usize])
        } else {
            SlotsIn::Disk(filled(byte_at(slots as usize, SLOT)?, &EMPTY)?)
        };
        Ok(PrefixMap {
            slots,
            entries: 0,
            capacity,
            inner,
        })
    }

    pub fn on_disk(&self) -> bool {
        matches!(self.inner, SlotsIn::Disk(_))
    }

    /// The indices under `prefix`, in the order they were put.
    pub fn probe(&self, prefix: &[u8; 8]) -> Result<Probe, SpillError> {
        let mut at = u64::from_le_bytes(*prefix) % self.slots;
        let mut found = Vec::new();
        let mut run = Vec::with_capacity(PROBE);
        for _ in 0..self.slots.div_ceil(PROBE as u64) + 1 {
            let n = (PROBE as u64).min(self.slots - at) as usize;
            self.read(at, n, &mut run)?;
            for (j, slot) in run.iter().enumerate() {
                if *slot == EMPTY {
                    return Ok(Probe {
                        found,
                        free: at + j as u64,
                    });
                }
                if slot[..8] == prefix[..] {
                    found.push(u32::from_le_bytes([slot[8], slot[9], slot[10], slot[11]]));
                }
            }
            at = (at + n as u64) % self.slots;
        }
        // Never at half load: a table with no empty slot is damage.
        Err(SpillError::Damaged(self.entries))
    }

    /// Puts `index` under `prefix` in the slot `probe` (of this prefix, with
    /// nothing put since) found empty.
    pub fn put(&mut self, probe: &Probe, prefix: &[u8; 8], index: u32) -> Result<(), SpillError> {
        if self.entries >= self.capacity || index == u32::MAX {
            return Err(SpillError::Damaged(self.entries));
        }
        let mut slot = [0u8; SLOT];
        slot[..8].copy_from_slice(prefix);
        slot[8..].copy_from_slice(&index.to_le_bytes());
        match &mut self.inner {
            SlotsIn::Memory(slots) => {
                let s = slots
                    .get_mut(probe.free as usize)
                    .ok_or(SpillError::Damaged(probe.free as usize))?;
                *s = slot;
            }
            SlotsIn::Disk(file) => file.write_all_at(&slot, byte_at(probe.free as usize, SLOT)?)?,
        }
        self.entries += 1;
        Ok(())
    }

    fn read(&self, at: u64, n: usize, out: &mut Vec<[u8; SLOT]>) -> Result<(), SpillError> {
        out.clear();
        match &self.inner {
            SlotsIn::Memory(slots) => {
                let from = at as usize;
                out.extend_from_slice(slots.get(from..from + n).ok_or(SpillError::Damaged(from))?);
            }
            SlotsIn::Disk(file) => {
                let mut bytes = vec![0u8; n * SLOT];
                file.read_exact_at(&mut bytes, byte_at(at as usize, SLOT)?)?;
                out.extend(bytes.chunks_exact(SLOT).map(|s| {
                    let mut slot = [0u8; SLOT];
                    slot.copy_from_slice(s);
                    slot
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn words_on_disk_read_set_accumulate_and_copy_as_in_memory() {
        for memory in [0, 1 << 20] {
            let len = 3 * BLOCK_WORDS + 17;
            let mut w = Words::new(len, 7, memory).unwrap();
            assert_eq!(w.on_disk(), memory == 0);
            assert_eq!(w.get(len - 1).unwrap(), 7);
            w.set(len - 1, 1).unwrap();
            w.set(BLOCK_WORDS, 0).unwrap();
            assert!(w.get(len).is_err() && w.set(len, 0).is_err());
            let before = w.copy().unwrap();
            w.accumulate().unwrap();
            let last = 7 * (len as u32 - 2) + 1;
            assert_eq!(w.get(len - 1).unwrap(), last);
            assert_eq!(w.get(BLOCK_WORDS).unwrap(), 7 * BLOCK_WORDS as u32);
            let mut seen = 0;
            before
                .each(|i, v| {
                    let want = if i == len - 1 {
                        1
                    } else if i == BLOCK_WORDS {
                        0
                    } else {
                        7
                    };
                    assert_eq!(v, want, "word {i}");
                    seen += 1;
                })
                .unwrap();
            assert_eq!(seen, len);
            let zeros = Words::new(len, 0, memory).unwrap();
            assert_eq!(zeros.get(len / 2).unwrap(), 0);
        }
    }

    proptest! {
        #[test]
        fn words_on_disk_hold_what_a_vector_holds(
            ops in prop::collection::vec((0usize..3 * PAGE_WORDS + 5, any::<u32>(), 0u8..8), 1..200),
        ) {
            let len = 3 * PAGE_WORDS + 5;
            let mut disk = Words::new(len, 9, 0).unwrap();
            let mut want = vec![9u32; len];
            for (i, v, op) in ops {
                match op {
                    // Now and then the whole file is read or rewritten.
                    0 => {
                        disk.accumulate().unwrap();
                        let mut sum = 0u32;
                        for w in want.iter_mut() {
                            sum = sum.wrapping_add(*w);
                            *w = sum;
                        }
                    }
                    1 => {
                        let copy = disk.copy().unwrap();
                        let mut all = Vec::new();
                        copy.each(|_, w| all.push(w)).unwrap();
                        prop_assert_eq!(&all, &want);
                    }
                    2..=4 => prop_assert_eq!(disk.get(i).unwrap(), want[i]),
                    _ => {
                        disk.set(i, v).unwrap();
                        want[i] = v;
                    }
                }
            }
            let mut all = Vec::new();
            disk.each(|_, w| all.push(w)).unwrap();
            prop_assert_eq!(all, want);
        }

        #[test]
        fn the_prefix_map_holds_what_a_hash_map_of_vectors_holds(
            puts in prop::collection::vec((0u64..40, 0u32..1000), 0..60),
            on_disk in any::<bool>(),
        ) {
            // Few distinct prefixes whose homes collide: long probes that wrap.
            let mut map = PrefixMap::new(puts.len(), if on_disk { 0 } else { 1 << 20 }).unwrap();
            prop_assert_eq!(map.on_disk(), on_disk && !puts.is_empty());
            let mut want: HashMap<[u8; 8], Vec<u32>> = HashMap::new();
            for (p, index) in &puts {
                let prefix = (p * 7919 % 41).to_le_bytes();
                let probe = map.probe(&prefix).unwrap();
                let before = want.get(&prefix).cloned().unwrap_or_default();
                prop_assert_eq!(&probe.found, &before);
                map.put(&probe, &prefix, *index).unwrap();
                want.entry(prefix).or_default().push(*index);
            }
            for (prefix, indices) in &want {
                prop_assert_eq!(&map.probe(prefix).unwrap().found, indices);
            }
            let full = map.probe(&[0xAA; 8]).unwrap();
            prop_assert!(map.put(&full, &[0xAA; 8], 1).is_err(), "over capacity");
        }
    }
}
