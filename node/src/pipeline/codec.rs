//! One chunk ⇄ one stripe of packets: compress (zstd, raw when it does not
//! shrink), encrypt (convergent, see `secret`), then make redundant
//! (Reed–Solomon `erasure:K+M` or `replicas:N`); and the way back, which
//! verifies each packet against its PacketId, uses any K good packets of
//! the stripe, authenticates with the chunk's key, decompresses and checks
//! that the plaintext gives that key again under the codec's secret.
//!
//! The codec is pure computation over byte slices: no I/O, no threads. It is
//! called from the parallel stages of `backup` and `restore`.

use std::cell::RefCell;

use serde::{Deserialize, Serialize};
use strew_coordinator::{DataId, PacketId, Redundancy};

use super::packet::{
    self, BlobHeader, FLAG_COMPRESSED, FormatError, PacketHeader, Scheme, encode_packet,
};
use super::secret::{ChunkKey, ConvergenceSecret};

/// One entry of a sequence, without targets: a chunk (by its storage index,
/// never its key) and the packets of its stripe. `packets[i]` is share `i`; with replicas every entry is the same
/// PacketId (one packet stored on N targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeRecord {
    pub data_id: DataId,
    pub plain_len: u32,
    pub packets: Vec<PacketId>,
}

impl StripeRecord {
    /// Distinct PacketIds of the stripe, in share order.
    pub fn distinct_packets(&self) -> Vec<PacketId> {
        let mut out: Vec<PacketId> = Vec::with_capacity(self.packets.len());
        for id in &self.packets {
            if !out.contains(id) {
                out.push(*id);
            }
        }
        out
    }
}

/// A stripe ready to store: its record and the distinct packets' bytes.
#[derive(Debug, Clone)]
pub struct EncodedStripe {
    pub record: StripeRecord,
    pub packets: Vec<(PacketId, Vec<u8>)>,
    /// Whether the payload was stored compressed.
    pub compressed: bool,
}

impl EncodedStripe {
    pub fn stored_bytes(&self) -> u64 {
        let distinct: u64 = self.packets.iter().map(|(_, b)| b.len() as u64).sum();
        // Replicas: one packet, stored once per copy.
        let copies = (self.record.packets.len() / self.packets.len().max(1)) as u64;
        distinct * copies
    }
}

/// Why a stripe could not be turned back into its chunk.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error(
        "chunk {data_id}: only {usable} of the {need} packets needed could be used ({width} in the stripe); \
         missing: [{}], corrupt: [{}]",
        list(missing),
        list(corrupt)
    )]
    NotEnoughPackets {
        data_id: DataId,
        usable: usize,
        need: usize,
        width: usize,
        missing: Vec<PacketId>,
        corrupt: Vec<PacketId>,
    },
    #[error(
        "chunk {data_id}: packets are intact but do not decrypt: wrong key \
         (restore with the key this snapshot was made with: `strew key import`)"
    )]
    WrongSecret { data_id: DataId },
    #[error(
        "chunk {data_id}: decrypted content does not give its key back under this convergence secret \
         (a different secret, or packets stored by someone who encrypted other bytes under this key)"
    )]
    WrongContent { data_id: DataId },
    #[error("chunk {data_id}: the key given is not this chunk's (its storage index is {actual})")]
    WrongKey { data_id: DataId, actual: DataId },
    #[error("chunk {data_id}: malformed packet {packet}")]
    Format {
        data_id: DataId,
        packet: PacketId,
        #[source]
        source: FormatError,
    },
    #[error("chunk {data_id}: erasure decoding failed: {reason}")]
    Erasure { data_id: DataId, reason: String },
    #[error("chunk {data_id}: decompression failed")]
    Decompress {
        data_id: DataId,
        #[source]
        source: std::io::Error,
    },
}

fn list(ids: &[PacketId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a stripe's packets come from during decoding.
pub trait PacketSource: Sync {
    /// The stored bytes of a packet, or `None` when it cannot be had (gone,
    /// unreachable). Bytes are verified by the caller.
    fn fetch(&self, id: &PacketId) -> Option<Vec<u8>>;

    /// Positions of a stripe's `packets` in the order to try them (every
    /// position once). By default stripe order: data shares first.
    fn order(&self, packets: &[PacketId]) -> Vec<usize> {
        (0..packets.len()).collect()
    }
}

/// What a decode observed besides the chunk (for logs and reports).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DecodeNotes {
    pub missing: Vec<PacketId>,
    pub corrupt: Vec<PacketId>,
    pub used_parity: bool,
}

/// Compression, encryption and redundancy settings of a backup.
#[derive(Debug, Clone)]
pub struct Codec {
    pub secret: ConvergenceSecret,
    pub zstd_level: i32,
    pub redundancy: Redundancy,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn compress(level: i32, plain: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.as_ref().is_none_or(|(l, _)| *l != level) {
            *slot = Some((level, zstd::bulk::Compressor::new(level).ok()?));
        }
        let (_, c) = slot.as_mut()?;
        c.compress(plain).ok()
    })
}

fn decompress(compressed: &[u8], plain_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(compressed, plain_len),
            None => Err(std::io::Error::other("no zstd decompressor")),
        }
    })
}

impl Codec {
    /// The key of a chunk under this codec's secret.
    pub fn key(&self, plain: &[u8]) -> ChunkKey {
        self.secret.chunk_key(plain)
    }

    /// Encodes a chunk under `key` (the caller computed it with
    /// [`Codec::key`], or it is a snapshot root's key).
    pub fn encode(&self, key: &ChunkKey, plain: &[u8]) -> EncodedStripe {
        let data_id = key.storage_index();
        let compressed = compress(self.zstd_level, plain).filter(|c| c.len() < plain.len());
        let (flags, payload) = match &compressed {
            Some(c) => (FLAG_COMPRESSED, c.as_slice()),
            None => (0, plain),
        };
        let plain_len = plain.len() as u32;
        // The nonce binds the flags and length: derive it over a header with
        // a zero nonce, then write the real nonce into the header (the AAD).
        let provisional = BlobHeader {
            flags,
            nonce: [0; 12],
            plain_len,
        }
        .encode();
        let nonce = key.nonce(&provisional, payload);
        let header = BlobHeader {
            flags,
            nonce,
            plain_len,
        }
        .encode();
        let ct = key.encrypt(&nonce, &header, payload);
        let mut blob = Vec::with_capacity(header.len() + ct.len());
        blob.extend_from_slice(&header);
        blob.extend_from_slice(&ct);
        let (record_packets, packets) = match self.redundancy {
            Redundancy::Replicas { n } => {
                let h = PacketHeader {
                    scheme: Scheme::Replica,
                    k: 1,
                    m: n.saturating_sub(1),
                    index: 0,
                    blob_len: blob.len() as u32,
                    shard_len: blob.len() as u32,
                };
                let p = encode_packet(&h, &blob);
                let id = PacketId::of(&p);
                (vec![id; usize::from(n.max(1))], vec![(id, p)])
            }
            Redundancy::Erasure { k, m } => erasure_packets(&blob, k, m),
        };
        EncodedStripe {
            record: StripeRecord {
                data_id,
                plain_len,
                packets: record_packets,
            },
            packets,
            compressed: compressed.is_some(),
        }
    }

    /// Rebuilds a chunk from any K usable packets of its stripe, opens it
    /// with `key` and verifies that its plaintext gives `key` again under
    /// the codec's secret.
    pub fn decode(
        &self,
        stripe: &StripeRecord,
        key: &ChunkKey,
        source: &dyn PacketSource,
    ) -> Result<(Vec<u8>, DecodeNotes), StripeError> {
        self.decode_with(stripe, key, true, source)
    }

    /// As [`Codec::decode`], for a chunk whose key is not convergent (a
    /// snapshot root): authenticated by the AEAD alone.
    pub fn decode_unverified(
        &self,
        stripe: &StripeRecord,
        key: &ChunkKey,
        source: &dyn PacketSource,
    ) -> Result<(Vec<u8>, DecodeNotes), StripeError> {
        self.decode_with(stripe, key, false, source)
    }

    fn decode_with(
        &self,
        stripe: &StripeRecord,
        key: &ChunkKey,
        verify: bool,
        source: &dyn PacketSource,
    ) -> Result<(Vec<u8>, DecodeNotes), StripeError> {
        let data_id = stripe.data_id;
        let actual = key.storage_index();
        if actual != data_id {
            return Err(StripeError::WrongKey { data_id, actual });
        }
        let mut notes = DecodeNotes::default();
        let width = stripe.packets.len();
        // Shares in the source's order (by default data shares first: no
        // decoding needed when they are all good; a grid restore puts the
        // fastest targets first), then any position the order left out.
        let mut shares: Vec<(PacketHeader, Vec<u8>, usize)> = Vec::new();
        let mut need = None::<usize>;
        let mut tried: Vec<PacketId> = Vec::new();
        // The order is asked again before every fetch: what the fetches
        // of other stripes showed meanwhile counts.
        let mut asked = vec![false; width];
        loop {
            if need.is_some_and(|k| shares.len() >= k) {
                break;
            }
            let next = source
                .order(&stripe.packets)
                .into_iter()
                .chain(0..width)
                .find(|p| asked.get(*p) == Some(&false));
            let Some(pos) = next else {
                break;
            };
            asked[pos] = true;
            let id = &stripe.packets[pos];
            if tried.contains(id) {
                continue;
            }
            tried.push(*id);
            let Some(bytes) = source.fetch(id) else {
                notes.missing.push(*id);
                continue;
            };
            if PacketId::of(&bytes) != *id {
                notes.corrupt.push(*id);
                continue;
            }
            let header = match packet::decode_packet(&bytes) {
                Ok((h, _)) => h,
                Err(source) => {
                    return Err(StripeError::Format {
                        data_id,
                        packet: *id,
                        source,
                    });
                }
            };
            need = Some(usize::from(header.k));
            if pos >= usize::from(header.k) {
                notes.used_parity = true;
            }
            shares.push((header, bytes, pos));
        }
        let k = need.unwrap_or(1);
        if shares.len() < k {
            return Err(StripeError::NotEnoughPackets {
                data_id,
                usable: shares.len(),
                need: k,
                width,
                missing: notes.missing,
                corrupt: notes.corrupt,
            });
        }
        let blob = assemble_blob(data_id, &shares)?;
        let plain = self.open_blob(key, &blob, verify)?;
        Ok((plain, notes))
    }

    /// Authenticates, decrypts, decompresses and (if `verify`) checks a blob.
    pub fn open_blob(
        &self,
        key: &ChunkKey,
        blob: &[u8],
        verify: bool,
    ) -> Result<Vec<u8>, StripeError> {
        let data_id = key.storage_index();
        let (header, head, ct) =
            BlobHeader::decode(blob).map_err(|source| StripeError::Format {
                data_id,
                packet: PacketId::of(blob),
                source,
            })?;
        let payload = key
            .decrypt(&header.nonce, head, ct)
            .ok_or(StripeError::WrongSecret { data_id })?;
        let plain = if header.flags & FLAG_COMPRESSED != 0 {
            decompress(&payload, header.plain_len as usize)
                .map_err(|source| StripeError::Decompress { data_id, source })?
        } else {
            payload
        };
        if verify && self.secret.chunk_key(&plain) != *key {
            return Err(StripeError::WrongContent { data_id });
        }
        Ok(plain)
    }
}

fn erasure_packets(blob: &[u8], k: u8, m: u8) -> (Vec<PacketId>, Vec<(PacketId, Vec<u8>)>) {
    let kk = usize::from(k.max(1));
    // Shards are equal, even-sized (reed-solomon-simd's rule), zero-padded.
    let mut shard_len = blob.len().div_ceil(kk).max(2);
    shard_len += shard_len % 2;
    let mut padded = blob.to_vec();
    padded.resize(shard_len * kk, 0);
    let originals: Vec<&[u8]> = padded.chunks(shard_len).collect();
    // Supported geometries are validated when the redundancy is parsed
    // (k + m ≤ 255, m ≥ 1); for those encoding cannot fail.
    let recovery = reed_solomon_simd::encode(kk, usize::from(m), &originals).unwrap_or_default();
    let mut ids = Vec::with_capacity(kk + usize::from(m));
    let mut packets = Vec::with_capacity(kk + usize::from(m));
    for (index, shard) in originals
        .iter()
        .copied()
        .chain(recovery.iter().map(Vec::as_slice))
        .enumerate()
    {
        let h = PacketHeader {
            scheme: Scheme::Erasure,
            k,
            m,
            index: index as u8,
            blob_len: blob.len() as u32,
            shard_len: shard_len as u32,
        };
        let p = encode_packet(&h, shard);
        let id = PacketId::of(&p);
        ids.push(id);
        packets.push((id, p));
    }
    (ids, packets)
}

fn assemble_blob(
    data_id: DataId,
    shares: &[(PacketHeader, Vec<u8>, usize)],
) -> Result<Vec<u8>, StripeError> {
    let Some((first, _, _)) = shares.first() else {
        return Err(StripeError::Erasure {
            data_id,
            reason: "no shares".into(),
        });
    };
    // Every share must agree on the geometry, or a lying packet could make
    // us read garbage (their PacketIds are right, so this is a bad writer).
    if shares.iter().any(|(h, _, _)| {
        h.k != first.k
            || h.m != first.m
            || h.blob_len != first.blob_len
            || h.shard_len != first.shard_len
            || h.scheme != first.scheme
    }) {
        return Err(StripeError::Erasure {
            data_id,
            reason: "packets of one stripe disagree on its geometry".into(),
        });
    }
    let shard_of = |bytes: &[u8]| bytes[packet::PACKET_HEADER_LEN..].to_vec();
    if first.scheme == Scheme::Replica {
        return Ok(shard_of(&shares[0].1));
    }
    let k = usize::from(first.k);
    let m = usize::from(first.m);
    let mut originals: Vec<Option<Vec<u8>>> = vec![None; k];
    let mut recovery: Vec<(usize, Vec<u8>)> = Vec::new();
    for (h, bytes, _) in shares {
        let index = usize::from(h.index);
        if index < k {
            originals[index] = Some(shard_of(bytes));
        } else {
            recovery.push((index - k, shard_of(bytes)));
        }
    }
    if originals.iter().any(Option::is_none) {
        let given: Vec<(usize, Vec<u8>)> = originals
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.clone().map(|s| (i, s)))
            .collect();
        let restored =
            reed_solomon_simd::decode(k, m, given, recovery).map_err(|e| StripeError::Erasure {
                data_id,
                reason: e.to_string(),
            })?;
        for (i, shard) in restored {
            if let Some(slot) = originals.get_mut(i) {
                *slot = Some(shard);
            }
        }
    }
    let mut blob = Vec::with_capacity(k * first.shard_len as usize);
    for shard in originals {
        match shard {
            Some(s) => blob.extend_from_slice(&s),
            None => {
                return Err(StripeError::Erasure {
                    data_id,
                    reason: "decoder did not restore every data shard".into(),
                });
            }
        }
    }
    blob.truncate(first.blob_len as usize);
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Map(BTreeMap<PacketId, Vec<u8>>);
    impl PacketSource for Map {
        fn fetch(&self, id: &PacketId) -> Option<Vec<u8>> {
            self.0.get(id).cloned()
        }
    }

    fn codec(redundancy: Redundancy) -> Codec {
        Codec {
            secret: ConvergenceSecret::from_bytes([5; 32]),
            zstd_level: 3,
            redundancy,
        }
    }

    fn stored(stripe: &EncodedStripe) -> Map {
        Map(stripe.packets.iter().cloned().collect())
    }

    fn subsets(n: usize, size: usize) -> Vec<Vec<usize>> {
        (0u32..(1 << n))
            .filter(|mask| mask.count_ones() as usize == size)
            .map(|mask| (0..n).filter(|i| mask & (1 << i) != 0).collect())
            .collect()
    }

    #[test]
    fn every_loss_of_up_to_m_packets_restores_and_m_plus_one_fails_clearly() {
        let c = codec(Redundancy::Erasure { k: 4, m: 2 });
        let plain: Vec<u8> = (0..50_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let key = c.key(&plain);
        let stripe = c.encode(&key, &plain);
        assert_eq!(stripe.record.packets.len(), 6);
        for lost in 0..=2 {
            for gone in subsets(6, lost) {
                let mut map = stored(&stripe);
                for i in &gone {
                    map.0.remove(&stripe.record.packets[*i]);
                }
                let (back, notes) = c.decode(&stripe.record, &key, &map).unwrap();
                assert_eq!(back, plain, "lost {gone:?}");
                let gone_ids: Vec<PacketId> =
                    gone.iter().map(|i| stripe.record.packets[*i]).collect();
                assert!(notes.missing.iter().all(|id| gone_ids.contains(id)));
                assert_eq!(notes.used_parity, gone.iter().any(|i| *i < 4));
            }
        }
        for gone in subsets(6, 3) {
            let mut map = stored(&stripe);
            for i in &gone {
                map.0.remove(&stripe.record.packets[*i]);
            }
            let err = c.decode(&stripe.record, &key, &map).unwrap_err();
            assert!(
                matches!(
                    err,
                    StripeError::NotEnoughPackets {
                        usable: 3,
                        need: 4,
                        width: 6,
                        ..
                    }
                ),
                "{err}"
            );
        }
    }

    #[test]
    fn identical_chunks_give_identical_packets() {
        let c = codec(Redundancy::Erasure { k: 4, m: 2 });
        let plain = b"same bytes, same packets".repeat(100);
        let key = c.key(&plain);
        assert_eq!(c.encode(&key, &plain).record, c.encode(&key, &plain).record);
    }

    #[test]
    fn incompressible_chunks_are_stored_raw() {
        let c = codec(Redundancy::Replicas { n: 3 });
        let mut noise = vec![0u8; 10_000];
        rand::fill(&mut noise[..]);
        let key = c.key(&noise);
        let s = c.encode(&key, &noise);
        assert!(!s.compressed);
        assert_eq!(s.record.packets.len(), 3);
        assert_eq!(s.packets.len(), 1);
        assert_eq!(c.decode(&s.record, &key, &stored(&s)).unwrap().0, noise);
        let text = b"abc".repeat(10_000);
        assert!(c.encode(&c.key(&text), &text).compressed);
    }

    #[test]
    fn any_flipped_byte_is_detected_and_named() {
        let c = codec(Redundancy::Erasure { k: 2, m: 1 });
        let plain = b"tamper with me".repeat(50);
        let key = c.key(&plain);
        let s = c.encode(&key, &plain);
        let (victim, bytes) = s.packets[0].clone();
        for pos in 0..bytes.len() {
            let mut map = stored(&s);
            let mut bad = bytes.clone();
            bad[pos] ^= 0x40;
            map.0.insert(victim, bad);
            // One corrupt packet is tolerated and reported...
            let (back, notes) = c.decode(&s.record, &key, &map).unwrap();
            assert_eq!(back, plain);
            assert_eq!(notes.corrupt, vec![victim]);
        }
        // ...two are not, and the error names them.
        let mut map = stored(&s);
        for (id, b) in s.packets.iter().take(2) {
            let mut bad = b.clone();
            bad[0] ^= 1;
            map.0.insert(*id, bad);
        }
        let err = c.decode(&s.record, &key, &map).unwrap_err().to_string();
        assert!(err.contains(&s.packets[0].0.to_string()), "{err}");
    }

    #[test]
    fn wrong_secret_fails_with_a_clear_error() {
        let c = codec(Redundancy::Erasure { k: 4, m: 2 });
        let plain = b"secret stuff".repeat(30);
        let key = c.key(&plain);
        let s = c.encode(&key, &plain);
        let other = Codec {
            secret: ConvergenceSecret::from_bytes([6; 32]),
            ..c.clone()
        };
        // The key opens the chunk, but another secret does not give it back.
        let err = other.decode(&s.record, &key, &stored(&s)).unwrap_err();
        assert!(matches!(err, StripeError::WrongContent { .. }), "{err}");
        // A key that is not the chunk's is refused before anything is fetched...
        let wrong = other.key(&plain);
        let err = c.decode(&s.record, &wrong, &stored(&s)).unwrap_err();
        assert!(matches!(err, StripeError::WrongKey { .. }), "{err}");
        // ...and packets made under another key for this index do not open.
        let forged = Codec {
            secret: ConvergenceSecret::from_bytes([6; 32]),
            ..c.clone()
        }
        .encode(&wrong, &plain);
        let mut record = forged.record.clone();
        record.data_id = s.record.data_id;
        let err = c.decode(&record, &key, &stored(&forged)).unwrap_err();
        assert!(matches!(err, StripeError::WrongSecret { .. }), "{err}");
        assert!(err.to_string().contains("wrong key"));
    }

    #[test]
    fn tiny_and_empty_chunks_round_trip() {
        for plain in [&b""[..], b"x", b"xy"] {
            for r in [
                Redundancy::Erasure { k: 4, m: 2 },
                Redundancy::Erasure { k: 1, m: 1 },
                Redundancy::Replicas { n: 1 },
            ] {
                let c = codec(r);
                let key = c.key(plain);
                let s = c.encode(&key, plain);
                assert_eq!(c.decode(&s.record, &key, &stored(&s)).unwrap().0, plain);
            }
        }
    }
}
