//! Audit proofs: one 1 KiB chunk of a stored packet with its BLAKE3 tree
//! proof, checked against the PacketId alone.
//!
//! A PacketId is the plain BLAKE3 hash of the packet's bytes, which is the
//! root of BLAKE3's own chunk tree. A target proves it holds chunk `c` by
//! sending bao-tree's encoding of that chunk range (the sibling hashes from
//! the root down, then the chunk's bytes); the auditor decodes it against the
//! PacketId and the packet size the manager recorded, so it needs no other
//! metadata and never the whole packet. bao-tree does the tree work; this
//! module only fixes the geometry (block size zero: 1 KiB leaves, so the
//! root is exactly `blake3::hash`) and turns failures into [`ProofError`].
//! No I/O.

use std::io::Cursor;

use bao_tree::io::BaoContentItem;
use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use strew_coordinator::PacketId;
use strew_coordinator::audit::{CHUNK_BYTES, chunk_count};

/// Largest encoded proof of one chunk of a packet of at most
/// [`super::MAX_PACKET_BYTES`]: the chunk plus two hashes per tree level.
pub const MAX_PROOF_BYTES: usize = CHUNK_BYTES as usize + 64 * 64;

/// Why a proof does not hold.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    #[error("chunk {chunk} is outside a packet of {size} bytes")]
    NoSuchChunk { chunk: u64, size: u64 },
    #[error("the held bytes do not hash to the packet id (corrupt)")]
    Corrupt,
    #[error("proof of {0} bytes exceeds the {MAX_PROOF_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("proof does not verify against the packet id: {0}")]
    Invalid(String),
    #[error("proof is missing the challenged chunk")]
    Incomplete,
}

fn ranges(chunk: u64) -> ChunkRanges {
    ChunkRanges::from(ChunkNum(chunk)..ChunkNum(chunk + 1))
}

/// The target's side: the proof for chunk `chunk` of `bytes`, which must
/// hash to `packet_id` (a target that finds its copy corrupt says so instead
/// of sending a proof that cannot verify).
pub fn prove(packet_id: &PacketId, bytes: &[u8], chunk: u64) -> Result<Vec<u8>, ProofError> {
    let size = bytes.len() as u64;
    if chunk >= chunk_count(size) {
        return Err(ProofError::NoSuchChunk { chunk, size });
    }
    let outboard = PreOrderMemOutboard::create(bytes, BlockSize::ZERO);
    if outboard.root.as_bytes() != &packet_id.0 {
        return Err(ProofError::Corrupt);
    }
    let mut encoded = Vec::new();
    encode_ranges_validated(bytes, &outboard, &ranges(chunk), &mut encoded)
        .map_err(|e| ProofError::Invalid(e.to_string()))?;
    Ok(encoded)
}

/// The auditor's side: checks `proof` for chunk `chunk` of the packet
/// `packet_id` of `size` bytes and returns the chunk's bytes.
pub fn verify(
    packet_id: &PacketId,
    size: u64,
    chunk: u64,
    proof: &[u8],
) -> Result<Vec<u8>, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge(proof.len()));
    }
    if chunk >= chunk_count(size) {
        return Err(ProofError::NoSuchChunk { chunk, size });
    }
    let tree = BaoTree::new(size, BlockSize::ZERO);
    let root = blake3::Hash::from_bytes(packet_id.0);
    let wanted = ranges(chunk);
    let mut data = None;
    for item in DecodeResponseIter::new(root, tree, Cursor::new(proof), &wanted) {
        match item.map_err(|e| ProofError::Invalid(e.to_string()))? {
            BaoContentItem::Parent(_) => {}
            BaoContentItem::Leaf(leaf) => {
                if leaf.offset == chunk * CHUNK_BYTES {
                    data = Some(leaf.data.to_vec());
                }
            }
        }
    }
    data.ok_or(ProofError::Incomplete)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn every_chunk_of_honest_bytes_proves_and_returns_its_bytes() {
        for len in [1usize, 1024, 1025, 5000, 64 * 1024 + 3] {
            let bytes = packet(len);
            let id = PacketId::of(&bytes);
            for chunk in 0..chunk_count(len as u64) {
                let proof = prove(&id, &bytes, chunk).expect("proof");
                assert!(proof.len() <= MAX_PROOF_BYTES);
                let got = verify(&id, len as u64, chunk, &proof).expect("verifies");
                let start = (chunk * CHUNK_BYTES) as usize;
                let end = (start + CHUNK_BYTES as usize).min(len);
                assert_eq!(got, bytes[start..end]);
            }
        }
    }

    #[test]
    fn a_proof_of_the_largest_packet_fits_the_bound() {
        let bytes = vec![3u8; super::super::MAX_PACKET_BYTES];
        let id = PacketId::of(&bytes);
        let last = chunk_count(bytes.len() as u64) - 1;
        let proof = prove(&id, &bytes, last).expect("proof");
        assert!(proof.len() <= MAX_PROOF_BYTES, "{}", proof.len());
        verify(&id, bytes.len() as u64, last, &proof).expect("verifies");
    }

    #[test]
    fn corrupt_bytes_forged_proofs_and_wrong_chunks_fail() {
        let bytes = packet(10_000);
        let id = PacketId::of(&bytes);
        let size = bytes.len() as u64;
        // The target notices its own copy is corrupt.
        let mut rotten = bytes.clone();
        rotten[5000] ^= 1;
        assert_eq!(prove(&id, &rotten, 4), Err(ProofError::Corrupt));
        // A cheat that proves its rotten copy against that copy's own root fails.
        let forged = prove(&PacketId::of(&rotten), &rotten, 4).expect("self-consistent");
        assert!(matches!(
            verify(&id, size, 4, &forged),
            Err(ProofError::Invalid(_))
        ));
        // Flipping any byte of an honest proof fails.
        let proof = prove(&id, &bytes, 4).expect("proof");
        for i in (0..proof.len()).step_by(97) {
            let mut bad = proof.clone();
            bad[i] ^= 0x40;
            assert!(verify(&id, size, 4, &bad).is_err(), "byte {i}");
        }
        // A proof of another chunk, a truncated proof, garbage, and chunks past the end.
        let other = prove(&id, &bytes, 3).expect("proof");
        assert!(verify(&id, size, 4, &other).is_err());
        assert!(verify(&id, size, 4, &proof[..proof.len() - 1]).is_err());
        assert!(verify(&id, size, 4, b"garbage").is_err());
        assert!(verify(&id, size, 4, &[]).is_err());
        assert_eq!(
            verify(&id, size, 10, &proof),
            Err(ProofError::NoSuchChunk { chunk: 10, size })
        );
        assert_eq!(
            prove(&id, &bytes, 10),
            Err(ProofError::NoSuchChunk { chunk: 10, size })
        );
        // The size is the manager's record, not the target's word: a chunk
        // past the real end cannot be proven.
        let past_end = prove(&id, &bytes, 9).expect("last chunk");
        assert!(verify(&id, size + 1024, 10, &past_end).is_err());
    }
}
