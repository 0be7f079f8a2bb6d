//! Rebuilding lost packets of a stripe from any K of the others, on
//! ciphertext alone: what a repairer does. No key is needed or seen: the
//! packets carry their share geometry, Reed–Solomon works on the encrypted
//! blob's shards, and the rebuilt packets are byte-identical to the ones
//! the source made (so they keep their PacketIds).
//!
//! Pure computation like [`super::codec`], whose erasure layout (equal,
//! even, zero-padded shards; reed-solomon-simd) this mirrors. It must not
//! fetch or store anything; the caller verifies inputs and outputs against
//! their PacketIds.

use std::collections::BTreeMap;

use super::packet::{FormatError, PacketHeader, Scheme, decode_packet, encode_packet};

/// Why a stripe's packets could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("a packet given to rebuild from is malformed")]
    Format(#[from] FormatError),
    #[error("no packets to rebuild from")]
    Empty,
    #[error("the packets given disagree on their stripe's geometry")]
    Geometry,
    #[error("{have} distinct shares given, {need} needed")]
    TooFew { have: usize, need: usize },
    #[error("share {index} is outside a stripe of {width} packets")]
    BadIndex { index: usize, width: usize },
    #[error("erasure coding failed: {0}")]
    Erasure(String),
}

/// Rebuilds the packets at share indices `wanted` of one stripe from
/// `packets` (verified packet bytes of the same stripe, any order, at least
/// K distinct shares). Returns them in `wanted` order.
pub fn rebuild_packets(
    packets: &[Vec<u8>],
    wanted: &[usize],
) -> Result<Vec<Vec<u8>>, RebuildError> {
    let mut shares: BTreeMap<usize, (PacketHeader, &[u8])> = BTreeMap::new();
    let mut first: Option<PacketHeader> = None;
    for bytes in packets {
        let (header, shard) = decode_packet(bytes)?;
        let same = |f: &PacketHeader| {
            f.scheme == header.scheme
                && f.k == header.k
                && f.m == header.m
                && f.blob_len == header.blob_len
                && f.shard_len == header.shard_len
        };
        match &first {
            Some(f) if !same(f) => return Err(RebuildError::Geometry),
            Some(_) => {}
            None => first = Some(header),
        }
        shares.insert(usize::from(header.index), (header, shard));
    }
    let first = first.ok_or(RebuildError::Empty)?;
    let k = usize::from(first.k);
    let m = usize::from(first.m);
    let width = k + m;
    if let Some(&index) = wanted.iter().find(|&&j| j >= width) {
        return Err(RebuildError::BadIndex { index, width });
    }
    if first.scheme == Scheme::Replica {
        // Every copy is the same packet.
        return Ok(wanted.iter().map(|_| packets[0].clone()).collect());
    }
    if shares.len() < k {
        return Err(RebuildError::TooFew {
            have: shares.len(),
            need: k,
        });
    }
    let mut originals: Vec<Option<Vec<u8>>> = (0..k)
        .map(|i| shares.get(&i).map(|(_, s)| s.to_vec()))
        .collect();
    if originals.iter().any(Option::is_none) {
        let given = originals
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s.clone())));
        let recovery = shares
            .iter()
            .filter(|(i, _)| **i >= k)
            .map(|(i, (_, s))| (i - k, s.to_vec()));
        let restored = reed_solomon_simd::decode(k, m, given, recovery)
            .map_err(|e| RebuildError::Erasure(e.to_string()))?;
        for (i, shard) in restored {
            if let Some(slot) = originals.get_mut(i) {
                *slot = Some(shard);
            }
        }
    }
    let originals: Vec<Vec<u8>> = originals
        .into_iter()
        .map(|s| s.ok_or_else(|| RebuildError::Erasure("a data shard was not restored".into())))
        .collect::<Result<_, _>>()?;
    let recovery = if wanted.iter().any(|&j| j >= k) {
        reed_solomon_simd::encode(k, m, &originals)
            .map_err(|e| RebuildError::Erasure(e.to_string()))?
    } else {
        Vec::new()
    };
    wanted
        .iter()
        .map(|&j| {
            let shard = if j < k {
                originals.get(j)
            } else {
                recovery.get(j - k)
            }
            .ok_or(RebuildError::BadIndex { index: j, width })?;
            let header = PacketHeader {
                index: j as u8,
                ..first
            };
            Ok(encode_packet(&header, shard))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use strew_coordinator::{PacketId, Redundancy};

    use super::*;
    use crate::pipeline::codec::Codec;
    use crate::pipeline::secret::ConvergenceSecret;

    fn stripe(redundancy: Redundancy, len: usize) -> Vec<Vec<u8>> {
        let codec = Codec {
            secret: ConvergenceSecret::from_bytes([3; 32]),
            zstd_level: 3,
            redundancy,
        };
        // Incompressible, so the blob (and the shards) grow with `len`.
        let mut x = len as u64 | 1;
        let plain: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let encoded = codec.encode(&codec.key(&plain), &plain);
        encoded
            .record
            .packets
            .iter()
            .map(|id| {
                encoded
                    .packets
                    .iter()
                    .find(|(p, _)| p == id)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    #[test]
    fn any_k_packets_rebuild_the_others_byte_for_byte() {
        let packets = stripe(Redundancy::Erasure { k: 4, m: 2 }, 40_001);
        assert_eq!(packets.len(), 6);
        // Every pair of lost packets, rebuilt from the four others.
        for a in 0..6 {
            for b in a + 1..6 {
                let kept: Vec<Vec<u8>> = (0..6)
                    .filter(|&i| i != a && i != b)
                    .map(|i| packets[i].clone())
                    .collect();
                let rebuilt = rebuild_packets(&kept, &[a, b]).unwrap();
                assert_eq!(rebuilt[0], packets[a], "share {a} (lost with {b})");
                assert_eq!(rebuilt[1], packets[b], "share {b} (lost with {a})");
                assert_eq!(PacketId::of(&rebuilt[0]), PacketId::of(&packets[a]));
            }
        }
    }

    #[test]
    fn too_few_mixed_or_bad_requests_are_errors() {
        let packets = stripe(Redundancy::Erasure { k: 4, m: 2 }, 9_000);
        let three = packets[..3].to_vec();
        assert!(matches!(
            rebuild_packets(&three, &[5]),
            Err(RebuildError::TooFew { have: 3, need: 4 })
        ));
        // The same share twice counts once.
        let dup = vec![
            packets[0].clone(),
            packets[0].clone(),
            packets[1].clone(),
            packets[2].clone(),
        ];
        assert!(matches!(
            rebuild_packets(&dup, &[5]),
            Err(RebuildError::TooFew { have: 3, .. })
        ));
        assert!(matches!(
            rebuild_packets(&packets[..4], &[6]),
            Err(RebuildError::BadIndex { index: 6, width: 6 })
        ));
        let other = stripe(Redundancy::Erasure { k: 4, m: 2 }, 20_000);
        let mixed = vec![
            packets[0].clone(),
            other[1].clone(),
            packets[2].clone(),
            packets[3].clone(),
        ];
        assert!(matches!(
            rebuild_packets(&mixed, &[4]),
            Err(RebuildError::Geometry)
        ));
        assert!(matches!(
            rebuild_packets(&[], &[0]),
            Err(RebuildError::Empty)
        ));
        let mut bad = packets[0].clone();
        bad.truncate(5);
        assert!(matches!(
            rebuild_packets(&[bad], &[0]),
            Err(RebuildError::Format(_))
        ));
    }

    #[test]
    fn a_replica_is_copied() {
        let packets = stripe(Redundancy::Replicas { n: 3 }, 5_000);
        let rebuilt = rebuild_packets(&packets[1..2], &[0, 2]).unwrap();
        assert_eq!(rebuilt, vec![packets[0].clone(), packets[2].clone()]);
    }
}
