//! A manifest's encoding cut into pieces as it is produced, never held
//! whole: one thread writes the CBOR into a bounded channel of blocks, and
//! content-defined chunking reads it on the caller's thread. A backup passes
//! over it twice (see `backup`): first to learn the pieces' keys and the
//! whole manifest's, then to encode and store the pieces a batch at a time.
//! Encoding is deterministic, so both passes cut the same pieces.

use std::io::{self, Read, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::chunking::ChunkSizes;
use super::manifest::Manifest;
use super::manifest_spill::SpilledManifest;

/// A manifest that can write its encoding out, as often as asked, the same
/// bytes each time.
pub trait EncodeManifest: Sync {
    fn encode_into(&self, out: &mut dyn Write) -> Result<(), String>;
}

impl EncodeManifest for Manifest {
    fn encode_into(&self, out: &mut dyn Write) -> Result<(), String> {
        ciborium::into_writer(self, out).map_err(|e| e.to_string())
    }
}

impl EncodeManifest for SpilledManifest {
    fn encode_into(&self, out: &mut dyn Write) -> Result<(), String> {
        SpilledManifest::encode_into(self, out)
    }
}

/// Bytes of encoding handed over at a time, and blocks in the channel.
const BLOCK: usize = 1 << 20;
const BLOCKS_IN_FLIGHT: usize = 2;

/// Why the pieces stopped: the caller's own error, or the chunker's.
#[derive(Debug)]
pub enum PiecesError<E> {
    Caller(E),
    /// The encoding could not be read back (the encoder stopped early).
    Stream(String),
}

/// Calls `each` with every piece of `manifest`'s encoding, in order, cut
/// with `sizes`; `whole` sees every byte of the encoding as it passes.
/// Memory: a few blocks and one piece (at most `sizes.max`).
pub fn for_each_piece<E>(
    manifest: &dyn EncodeManifest,
    sizes: ChunkSizes,
    whole: &mut blake3::Hasher,
    mut each: impl FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<(), PiecesError<E>> {
    let (tx, rx) = sync_channel::<Vec<u8>>(BLOCKS_IN_FLIGHT);
    std::thread::scope(|scope| {
        let encoder = scope.spawn(move || {
            let mut out = BlockWriter {
                tx,
                block: Vec::with_capacity(BLOCK),
            };
            manifest
                .encode_into(&mut out)
                .and_then(|()| out.flush().map_err(|e| e.to_string()))
        });
        let reader = BlockReader {
            rx,
            block: Vec::new(),
            at: 0,
            whole,
        };
        let cut = fastcdc::v2020::StreamCDC::new(
            reader,
            sizes.min as usize,
            sizes.avg as usize,
            sizes.max as usize,
        );
        // Returning early drops the chunker and its receiver: the encoder's
        // next send fails and it stops, so the scope's join cannot hang.
        for piece in cut {
            let piece = piece.map_err(|e| PiecesError::Stream(e.to_string()))?;
            each(piece.data).map_err(PiecesError::Caller)?;
        }
        match encoder.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(PiecesError::Stream(format!("encoding the manifest: {e}"))),
            Err(_) => Err(PiecesError::Stream("the manifest encoder panicked".into())),
        }
    })
}

struct BlockWriter {
    tx: SyncSender<Vec<u8>>,
    block: Vec<u8>,
}

impl Write for BlockWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BLOCK - self.block.len();
        let n = buf.len().min(room);
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == BLOCK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let full = std::mem::replace(&mut self.block, Vec::with_capacity(BLOCK));
        self.tx
            .send(full)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the chunker stopped"))
    }
}

struct BlockReader<'h> {
    rx: Receiver<Vec<u8>>,
    block: Vec<u8>,
    at: usize,
    whole: &'h mut blake3::Hasher,
}

impl Read for BlockReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            match self.rx.recv() {
                Ok(block) => {
                    self.whole.update(&block);
                    self.block = block;
                    self.at = 0;
                }
                // The encoder is done (or stopped: its join says which).
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::{ChunkRef, Entry, EntryKind};
    use crate::pipeline::secret::ChunkKey;
    use serde_bytes::ByteBuf;

    fn large_manifest(chunks: u32) -> Manifest {
        let table = (0..chunks)
            .map(|i| ChunkRef {
                key: ChunkKey(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                len: 1000 + i,
            })
            .collect();
        let entries = (0..chunks / 10)
            .map(|i| Entry {
                path: ByteBuf::from(format!("dir-{i}").into_bytes()),
                mode: 0o755,
                mtime_s: i64::from(i),
                mtime_ns: 0,
                kind: EntryKind::Dir,
            })
            .collect();
        Manifest::for_tests(table, entries)
    }

    #[test]
    fn the_pieces_are_the_encodings_cut_and_the_whole_is_hashed_as_it_passes() {
        // Several blocks of encoding, several pieces.
        let manifest = large_manifest(60_000);
        let bytes = manifest.encode();
        assert!(bytes.len() > 2 * BLOCK, "{}", bytes.len());
        let sizes = ChunkSizes::default().for_manifest();
        let expected: Vec<Vec<u8>> = fastcdc::v2020::FastCDC::new(
            &bytes,
            sizes.min as usize,
            sizes.avg as usize,
            sizes.max as usize,
        )
        .map(|c| bytes[c.offset..c.offset + c.length].to_vec())
        .collect();
        assert!(expected.len() > 1);
        let mut whole = blake3::Hasher::new();
        let mut got = Vec::new();
        for_each_piece(&manifest, sizes, &mut whole, |p| {
            got.push(p);
            Ok::<_, ()>(())
        })
        .unwrap();
        assert_eq!(got, expected);
        assert_eq!(whole.finalize(), blake3::hash(&bytes));
    }

    #[test]
    fn a_caller_that_stops_stops_the_encoder() {
        let manifest = large_manifest(60_000);
        let mut seen = 0;
        let out = for_each_piece(
            &manifest,
            ChunkSizes::default().for_manifest(),
            &mut blake3::Hasher::new(),
            |_| {
                seen += 1;
                Err("enough")
            },
        );
        assert!(matches!(out, Err(PiecesError::Caller("enough"))));
        assert_eq!(seen, 1);
    }
}
