//! Scratch files of a running backup or restore: append-only lists of CBOR
//! or fixed-size records in anonymous temporary files (gone when the work
//! ends, however it ends), read back from the start without disturbing the
//! appends or by position, and tables of fixed-size records filled out of
//! order. A backup keeps what grows with its size here instead of in
//! memory: the manifest's chunk table and entries (read when the manifest
//! is encoded), the stripes in sequence order (read at the commit) and
//! each handed-in part's chunks and receipts (read only by a re-plan around
//! a failed target). A restore keeps the decoded manifest and where each
//! chunk's bytes go.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A record longer than this is damage, not a record.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Bytes a reader buffers.
const READ_BUFFER: usize = 256 * 1024;

/// Errors of a scratch file.
#[derive(Debug, thiserror::Error)]
pub enum SpillError {
    #[error("scratch file in the temporary directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("scratch file in the temporary directory: {0}")]
    Cbor(#[from] strew_coordinator::CborError),
    /// A record, position or length a scratch file cannot hold or did not
    /// give back (the number says which): nothing outside made it.
    #[error(
        "scratch file in the temporary directory damaged (record, position or length {0}); run it again"
    )]
    Damaged(usize),
}

/// An append-only file of `T`s.
#[derive(Debug)]
pub struct Spill<T> {
    out: BufWriter<File>,
    len: u64,
    items: u64,
    _items: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> Spill<T> {
    /// A new, empty scratch file in the system's temporary directory.
    pub fn new() -> Result<Self, SpillError> {
        Ok(Spill {
            out: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            len: 0,
            items: 0,
            _items: PhantomData,
        })
    }

    /// Appends one record.
    pub fn push(&mut self, item: &T) -> Result<(), SpillError> {
        let bytes = strew_coordinator::cbor::encode(item)?;
        let n = u32::try_from(bytes.len()).map_err(|_| SpillError::Damaged(bytes.len()))?;
        self.out.write_all(&n.to_le_bytes())?;
        self.out.write_all(&bytes)?;
        self.len += 4 + bytes.len() as u64;
        self.items += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Drops every record.
    pub fn clear(&mut self) -> Result<(), SpillError> {
        self.out.flush()?;
        let file = self.out.get_mut();
        file.set_len(0)?;
        std::io::Seek::rewind(file)?;
        self.len = 0;
        self.items = 0;
        Ok(())
    }

    /// The records from the first, in order.
    pub fn read(&mut self) -> Result<SpillReader<'_, T>, SpillError> {
        self.flush()?;
        Ok(self.reader())
    }

    /// Writes out the appends still buffered, so that [`Spill::reader`]
    /// sees them.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        Ok(self.out.flush()?)
    }

    /// Where the next record will start: pass it to [`Spill::get`] to read
    /// that record back.
    pub fn next_offset(&self) -> u64 {
        self.len
    }

    /// The record that starts at `offset` (a [`Spill::next_offset`] taken
    /// before it was pushed), if flushed since; one positional read, so
    /// several threads may read at once.
    pub fn get(&self, offset: u64) -> Result<T, SpillError> {
        let file = self.out.get_ref();
        let mut len = [0u8; 4];
        file.read_exact_at(&mut len, offset)?;
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_RECORD {
            return Err(SpillError::Damaged(n));
        }
        let mut bytes = vec![0u8; n];
        file.read_exact_at(&mut bytes, offset + 4)?;
        Ok(strew_coordinator::cbor::decode(&bytes)?)
    }

    /// The records up to the last [`Spill::flush`], from the first, in
    /// order; several readers may run at once.
    pub fn reader(&self) -> SpillReader<'_, T> {
        let flushed = self.len - self.out.buffer().len() as u64;
        SpillReader {
            input: At::buffered(self.out.get_ref(), flushed),
            _items: PhantomData,
        }
    }
}

/// An append-only file of records of `N` bytes each, for tables with a
/// record per chunk: no length prefix and no CBOR to write and read back.
#[derive(Debug)]
pub struct FixedSpill<const N: usize> {
    out: BufWriter<File>,
    items: u64,
}

impl<const N: usize> FixedSpill<N> {
    /// A new, empty scratch file in the system's temporary directory.
    pub fn new() -> Result<Self, SpillError> {
        Ok(FixedSpill {
            out: BufWriter::with_capacity(1 << 20, tempfile::tempfile()?),
            items: 0,
        })
    }

    /// Appends one record.
    pub fn push(&mut self, record: &[u8; N]) -> Result<(), SpillError> {
        self.out.write_all(record)?;
        self.items += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Writes out the appends still buffered, so that
    /// [`FixedSpill::reader`] sees them.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        Ok(self.out.flush()?)
    }

    /// Record `i`, if flushed since it was pushed; one positional read, so
    /// several threads may read at once.
    pub fn get(&self, i: u64) -> Result<[u8; N], SpillError> {
        let mut record = [0u8; N];
        let at = i
            .checked_mul(N as u64)
            .ok_or(SpillError::Damaged(usize::MAX))?;
        self.out.get_ref().read_exact_at(&mut record, at)?;
        Ok(record)
    }

    /// Up to `n` records from record `i` on (fewer at the end), read at
    /// once into `out`.
    pub fn get_run(&self, i: u64, n: usize, out: &mut Vec<[u8; N]>) -> Result<(), SpillError> {
        out.clear();
        let n = (n as u64).min(self.items.saturating_sub(i)) as usize;
        let mut bytes = vec![0u8; n * N];
        let at = i
            .checked_mul(N as u64)
            .ok_or(SpillError::Damaged(usize::MAX))?;
        self.out.get_ref().read_exact_at(&mut bytes, at)?;
        out.extend(bytes.chunks_exact(N).map(|r| {
            let mut record = [0u8; N];
            record.copy_from_slice(r);
            record
        }));
        Ok(())
    }

    /// The records up to the last [`FixedSpill::flush`], in order; several
    /// readers may run at once.
    pub fn reader(&self) -> FixedReader<'_, N> {
        let flushed = (self.items * N as u64).saturating_sub(self.out.buffer().len() as u64);
        let flushed = flushed - flushed % N as u64;
        FixedReader {
            input: At::buffered(self.out.get_ref(), flushed),
        }
    }
}

/// A scratch file of `N`-byte records filled out of order, at positions
/// known in advance (a table sorted by counting), and read back in runs.
/// Writes to consecutive positions are gathered into one.
#[derive(Debug)]
pub struct FixedSlots<const N: usize> {
    file: File,
    /// Records gathered, and the position of the first.
    pending: (u64, Vec<u8>),
}

/// Bytes gathered before they are written.
const GATHER: usize = 1 << 20;

impl<const N: usize> FixedSlots<N> {
    /// A new, empty scratch file in the system's temporary directory.
    pub fn new() -> Result<Self, SpillError> {
        Ok(FixedSlots {
            file: tempfile::tempfile()?,
            pending: (0, Vec::new()),
        })
    }

    /// Writes `record` at position `i`.
    pub fn put(&mut self, i: u64, record: &[u8; N]) -> Result<(), SpillError> {
        let (first, gathered) = &self.pending;
        let next = first + (gathered.len() / N) as u64;
        if gathered.is_empty() || i != next || gathered.len() >= GATHER {
            self.flush()?;
            self.pending.0 = i;
        }
        self.pending.1.extend_from_slice(record);
        Ok(())
    }

    /// Writes out what is gathered, so that reads see it.
    pub fn flush(&mut self) -> Result<(), SpillError> {
        let (first, gathered) = &mut self.pending;
        if !gathered.is_empty() {
            let at = first
                .checked_mul(N as u64)
                .ok_or(SpillError::Damaged(usize::MAX))?;
            self.file.write_all_at(gathered, at)?;
            gathered.clear();
        }
        Ok(())
    }

    /// Records `from..to` (written and flushed before), read at once.
    pub fn get_run(&self, from: u64, to: u64) -> Result<Vec<[u8; N]>, SpillError> {
        let n = usize::try_from(to.saturating_sub(from)).map_err(|_| SpillError::Damaged(0))?;
        let mut bytes = vec![0u8; n.checked_mul(N).ok_or(SpillError::Damaged(n))?];
        let at = from
            .checked_mul(N as u64)
            .ok_or(SpillError::Damaged(usize::MAX))?;
        self.file.read_exact_at(&mut bytes, at)?;
        Ok(bytes
            .chunks_exact(N)
            .map(|r| {
                let mut record = [0u8; N];
                record.copy_from_slice(r);
                record
            })
            .collect())
    }
}

/// Reads a [`FixedSpill`]'s records back.
pub struct FixedReader<'a, const N: usize> {
    input: std::io::BufReader<At<'a>>,
}

impl<const N: usize> Iterator for FixedReader<'_, N> {
    type Item = Result<[u8; N], SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut record = [0u8; N];
        let mut got = 0;
        while got < N {
            match self.input.read(&mut record[got..]) {
                Ok(0) if got == 0 => return None,
                // A file cut inside a record is damage.
                Ok(0) => return Some(Err(SpillError::Damaged(got))),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Some(Err(e.into())),
            }
        }
        Some(Ok(record))
    }
}

/// Positional reads of the file (the appends keep their own offset).
struct At<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> At<'a> {
    /// The first `end` bytes of `file`, read through a buffer.
    fn buffered(file: &'a File, end: u64) -> std::io::BufReader<At<'a>> {
        std::io::BufReader::with_capacity(READ_BUFFER, At { file, pos: 0, end })
    }
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.pos)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Reads a [`Spill`]'s records back.
pub struct SpillReader<'a, T> {
    input: std::io::BufReader<At<'a>>,
    _items: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for SpillReader<'_, T> {
    type Item = Result<T, SpillError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut len = [0u8; 4];
        match self.input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return None,
            Err(e) => return Some(Err(e.into())),
        }
        let n = u32::from_le_bytes(len) as usize;
        if n > MAX_RECORD {
            return Some(Err(SpillError::Damaged(n)));
        }
        let mut bytes = vec![0u8; n];
        if let Err(e) = self.input.read_exact(&mut bytes) {
            return Some(Err(e.into()));
        }
        Some(strew_coordinator::cbor::decode(&bytes).map_err(SpillError::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_records_read_back_up_to_the_last_flush() {
        let mut spill: FixedSpill<5> = FixedSpill::new().expect("temp file");
        for i in 0..300_000u32 {
            let b = i.to_le_bytes();
            spill.push(&[b[0], b[1], b[2], b[3], 7]).expect("push");
        }
        // Before the flush a reader sees whole records only, fewer than all.
        let before: Vec<[u8; 5]> = spill.reader().collect::<Result<_, _>>().expect("read");
        assert!(
            !before.is_empty() && before.len() < 300_000,
            "{}",
            before.len()
        );
        spill.flush().expect("flush");
        let back: Vec<[u8; 5]> = spill.reader().collect::<Result<_, _>>().expect("read");
        assert_eq!(back.len(), 300_000);
        assert!(back.iter().enumerate().all(|(i, r)| {
            u32::from_le_bytes([r[0], r[1], r[2], r[3]]) == i as u32 && r[4] == 7
        }));
        assert_eq!(spill.items(), 300_000);
        assert_eq!(
            spill.get(299_999).expect("get")[..4],
            299_999u32.to_le_bytes()
        );
        assert!(spill.get(300_000).is_err(), "past the end");
        let mut run = Vec::new();
        spill.get_run(299_990, 100, &mut run).expect("run");
        assert_eq!(run.len(), 10, "cut at the end");
        assert_eq!(run[3][..4], 299_993u32.to_le_bytes());
        // Two readers at once, each from the start.
        let (mut a, mut b) = (spill.reader(), spill.reader());
        assert_eq!(a.next().map(|r| r.ok()), b.next().map(|r| r.ok()));
    }

    #[test]
    fn slots_filled_out_of_order_read_back_in_place() {
        let mut slots: FixedSlots<4> = FixedSlots::new().expect("temp file");
        // Two interleaved runs, each in order, and a few stragglers.
        for i in 0..50_000u32 {
            slots.put(u64::from(i), &i.to_le_bytes()).expect("put");
            slots
                .put(u64::from(100_000 - i), &(100_000 - i).to_le_bytes())
                .expect("put");
        }
        for i in 50_000..=50_001u32 {
            slots.put(u64::from(i), &i.to_le_bytes()).expect("put");
        }
        slots.flush().expect("flush");
        let all = slots.get_run(0, 100_001).expect("read");
        assert!(
            all.iter()
                .enumerate()
                .all(|(i, r)| u32::from_le_bytes(*r) == i as u32)
        );
        assert_eq!(slots.get_run(7, 9).expect("read").len(), 2);
        assert!(slots.get_run(100_000, 100_002).is_err(), "past the end");
    }

    #[test]
    fn records_read_back_in_order_while_appends_go_on_and_clear_empties() {
        let mut spill: Spill<(u32, Vec<u8>)> = Spill::new().expect("temp file");
        let mut offsets = Vec::new();
        for i in 0..1000u32 {
            offsets.push(spill.next_offset());
            spill
                .push(&(i, vec![i as u8; (i % 50) as usize]))
                .expect("push");
        }
        spill.flush().expect("flush");
        assert_eq!(spill.get(offsets[777]).expect("get"), (777, vec![9; 27]));
        let back: Vec<(u32, Vec<u8>)> = spill
            .read()
            .expect("read")
            .collect::<Result<_, _>>()
            .expect("decode");
        assert_eq!(back.len(), 1000);
        assert!(back.iter().all(|(i, b)| b.len() == (i % 50) as usize));
        assert_eq!(back[999].0, 999);
        // Appends after a read land after the earlier records.
        spill.push(&(5000, Vec::new())).expect("push");
        let again: Vec<u32> = spill
            .read()
            .expect("read")
            .map(|r| r.expect("decode").0)
            .collect();
        assert_eq!(again.len(), 1001);
        assert_eq!(again[1000], 5000);
        assert_eq!(spill.items(), 1001);
        spill.clear().expect("clear");
        assert_eq!(spill.read().expect("read").count(), 0);
        spill.push(&(7, vec![1])).expect("push");
        let after: Vec<(u32, Vec<u8>)> = spill
            .read()
            .expect("read")
            .collect::<Result<_, _>>()
            .expect("decode");
        assert_eq!(after, vec![(7, vec![1])]);
    }
}
