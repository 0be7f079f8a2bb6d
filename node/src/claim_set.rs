//! A set of 128-bit claims whose memory does not grow with it. A claim is
//! the first 128 bits of a keyed BLAKE3 output: a chunk's DataId (which
//! chunks a backup has already seen), a path's hash (which paths a
//! manifest has already listed). Such sets grow with a backup's size, and
//! a source's memory must not.
//!
//! The first claims (up to a bound, [`MEMORY_CLAIMS`] by default) live in a
//! hash set in memory, so an ordinary backup pays nothing. The claims past
//! the bound go to an open-addressing table of 16-byte slots in an
//! anonymous temporary file, read and written a few slots at a time: the
//! kernel's page cache holds it, not the process, and gives it back under
//! pressure. The table doubles when half full (a sequential read of the
//! old file into the new one). A claim on disk costs a `pread` and a
//! `pwrite` (about 25 µs on this project's ext4 test machine, measured in
//! `docs/benchmarks.md`): little at the default chunk sizes, where a
//! million chunks are a terabyte. Owns the set and its table file; the
//! scratch files' errors are [`crate::spill`]'s.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use strew_coordinator::DataId;

use crate::spill::SpillError;

/// A chunk's claim: the first 128 bits of its DataId. DataIds are keyed
/// BLAKE3 outputs, so two distinct chunks share a claim with probability
/// about n²/2¹²⁹: 10⁻²¹ for a billion chunks.
pub fn claim(id: &DataId) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&id.0[..16]);
    u128::from_le_bytes(first)
}

/// Claims a set keeps in memory, the later ones going to disk: a hash set
/// of 2²⁰ claims takes about 36 MB.
pub const MEMORY_CLAIMS: usize = 1 << 20;

/// Bytes of one slot: the claim, little-endian; all zeros is empty.
const SLOT: usize = 16;
/// Slots read at once while probing.
const PROBE_SLOTS: usize = 16;
/// Bytes read at once while doubling the table.
const GROW_READ: usize = 1 << 20;
/// The smallest table on disk, in slots (a power of two).
const MIN_SLOTS: u64 = 1 << 16;

/// A set of claims, in memory up to a bound and on disk past it.
#[derive(Debug)]
pub struct ClaimSet {
    memory: HashSet<u128>,
    bound: usize,
    disk: Option<DiskTable>,
}

impl Default for ClaimSet {
    fn default() -> Self {
        ClaimSet::new()
    }
}

impl ClaimSet {
    /// An empty set that keeps up to [`MEMORY_CLAIMS`] claims in memory.
    pub fn new() -> Self {
        ClaimSet::with_memory(MEMORY_CLAIMS)
    }

    /// An empty set that keeps up to `bound` claims in memory.
    pub fn with_memory(bound: usize) -> Self {
        ClaimSet {
            memory: HashSet::new(),
            bound,
            disk: None,
        }
    }

    /// Adds `claim`; true when it was not in the set yet.
    pub fn insert(&mut self, claim: u128) -> Result<bool, SpillError> {
        if self.memory.contains(&claim) {
            return Ok(false);
        }
        if self.disk.is_none() && self.memory.len() < self.bound {
            return Ok(self.memory.insert(claim));
        }
        // The claims in memory stay there; the later ones go to disk.
        let disk = match &mut self.disk {
            Some(disk) => disk,
            None => self.disk.insert(DiskTable::with_slots(MIN_SLOTS)?),
        };
        disk.insert(claim)
    }

    /// Whether `claim` is in the set.
    pub fn contains(&self, claim: u128) -> Result<bool, SpillError> {
        if self.memory.contains(&claim) {
            return Ok(true);
        }
        match &self.disk {
            Some(disk) => disk.probe(claim).map(|(found, _)| found),
            None => Ok(false),
        }
    }

    /// Claims in the set.
    pub fn len(&self) -> u64 {
        self.memory.len() as u64 + self.disk.as_ref().map_or(0, |d| d.len)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether some of its claims are on disk.
    pub fn on_disk(&self) -> bool {
        self.disk.is_some()
    }
}

/// The open-addressing table in a file: `slots` slots (a power of two),
/// linear probing from the claim's low bits, at most half of them full.
#[derive(Debug)]
struct DiskTable {
    file: File,
    slots: u64,
    len: u64,
    /// The claim 0, which an empty slot cannot hold.
    zero: bool,
}

impl DiskTable {
    /// An empty table of `slots` slots (a power of two).
    fn with_slots(slots: u64) -> Result<Self, SpillError> {
        let file = tempfile::tempfile()?;
        file.set_len(slots * SLOT as u64)?;
        Ok(DiskTable {
            file,
            slots,
            len: 0,
            zero: false,
        })
    }

    /// Whether `claim` is in the table, and the slot it is in or would go to.
    fn probe(&self, claim: u128) -> Result<(bool, u64), SpillError> {
        if claim == 0 {
            return Ok((self.zero, 0));
        }
        let mut at = (claim as u64) & (self.slots - 1);
        let mut buf = [0u8; SLOT * PROBE_SLOTS];
        // At most half the slots are full: an empty one comes.
        loop {
            let n = PROBE_SLOTS.min((self.slots - at) as usize);
            let bytes = &mut buf[..n * SLOT];
            self.file.read_exact_at(bytes, at * SLOT as u64)?;
            for (i, slot) in bytes.chunks_exact(SLOT).enumerate() {
                let mut b = [0u8; SLOT];
                b.copy_from_slice(slot);
                match u128::from_le_bytes(b) {
                    0 => return Ok((false, at + i as u64)),
                    c if c == claim => return Ok((true, at + i as u64)),
                    _ => {}
                }
            }
            at = (at + n as u64) & (self.slots - 1);
        }
    }

    fn insert(&mut self, claim: u128) -> Result<bool, SpillError> {
        if claim == 0 {
            let first = !self.zero;
            self.zero = true;
            self.len += u64::from(first);
            return Ok(first);
        }
        let (found, slot) = self.probe(claim)?;
        if found {
            return Ok(false);
        }
        self.file
            .write_all_at(&claim.to_le_bytes(), slot * SLOT as u64)?;
        self.len += 1;
        if self.len * 2 > self.slots {
            self.grow()?;
        }
        Ok(true)
    }

    /// Moves every claim into a table twice the size.
    fn grow(&mut self) -> Result<(), SpillError> {
        let mut bigger = DiskTable::with_slots(self.slots * 2)?;
        bigger.zero = self.zero;
        bigger.len = u64::from(self.zero);
        let total = self.slots * SLOT as u64;
        let mut buf = vec![0u8; GROW_READ];
        let mut at = 0u64;
        while at < total {
            let n = (total - at).min(GROW_READ as u64) as usize;
            self.file.read_exact_at(&mut buf[..n], at)?;
            for slot in buf[..n].chunks_exact(SLOT) {
                let mut b = [0u8; SLOT];
                b.copy_from_slice(slot);
                let c = u128::from_le_bytes(b);
                if c != 0 {
                    bigger.insert(c)?;
                }
            }
            at += n as u64;
        }
        *self = bigger;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn goes_to_disk_past_its_bound_and_keeps_every_claim() {
        let mut set = ClaimSet::with_memory(100);
        for c in 1..=100u128 {
            assert!(set.insert(c * 7919).expect("insert"));
        }
        assert!(!set.on_disk());
        // A claim in memory again is no new claim and needs no disk.
        assert!(!set.insert(7919).expect("again"));
        assert!(!set.on_disk());
        assert!(set.insert(101 * 7919).expect("insert"));
        assert!(set.on_disk());
        // Enough to double the table twice.
        for c in 102..=(MIN_SLOTS as u128 * 2) {
            assert!(set.insert(c * 7919).expect("insert"));
        }
        assert_eq!(set.len(), MIN_SLOTS * 2);
        assert_eq!(set.disk.as_ref().map(|d| d.slots), Some(MIN_SLOTS * 4));
        for c in 1..=(MIN_SLOTS as u128 * 2) {
            assert!(set.contains(c * 7919).expect("contains"));
            assert!(!set.insert(c * 7919).expect("again"));
        }
        assert!(!set.contains(3).expect("contains"));
    }

    #[test]
    fn zero_and_the_tables_last_slot_are_claims_like_any_other() {
        let mut set = ClaimSet::with_memory(0);
        assert!(set.insert(0).expect("zero"));
        assert!(!set.insert(0).expect("zero again"));
        assert!(set.contains(0).expect("zero"));
        // Claims whose low bits point at the last slot wrap to the first.
        let last = MIN_SLOTS as u128 - 1;
        for k in 1..=40u128 {
            assert!(set.insert((k << 64) | last).expect("insert"));
        }
        for k in 1..=40u128 {
            assert!(set.contains((k << 64) | last).expect("contains"));
        }
        assert!(!set.contains((41 << 64) | last).expect("absent"));
        assert_eq!(set.len(), 41);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Against a plain hash set, with colliding low bits and a bound
        /// small enough to move to disk mid-way.
        #[test]
        fn behaves_as_a_set(
            claims in proptest::collection::vec((0u128..4, 0u64..512), 0..2000),
            bound in 0usize..64,
        ) {
            let mut set = ClaimSet::with_memory(bound);
            let mut plain = HashSet::new();
            for (high, low) in claims {
                let c = (high << 64) | u128::from(low);
                prop_assert_eq!(set.insert(c).expect("insert"), plain.insert(c));
                prop_assert_eq!(set.len(), plain.len() as u64);
            }
            for high in 0..4u128 {
                for low in 0..512u128 {
                    let c = (high << 64) | low;
                    prop_assert_eq!(set.contains(c).expect("contains"), plain.contains(&c));
                }
            }
        }
    }
}
