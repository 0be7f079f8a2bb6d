//! Byte layouts of what the pipeline stores: the encrypted chunk (`Blob`)
//! and the stored unit (`Packet`), each versioned and self-describing.
//!
//! ```text
//! Blob   = "SBLB" | version u8 = 2 | flags u8 | nonce [12] | plain_len u32 LE | ciphertext (payload + 16-byte tag)
//! Packet = "SPKT" | version u8 = 2 | scheme u8 | k u8 | m u8 | index u8 | blob_len u32 LE | shard_len u32 LE | shard
//! ```
//! `flags` bit 0: payload is zstd-compressed (else raw, because it did not
//! shrink). The blob header (first 22 bytes) is the AEAD's associated data,
//! so a flipped flag or length fails authentication. A packet carries no
//! DataId, no path, no source: a target learns only sizes and the
//! redundancy scheme. Version 2 (Tahoe-style keys: the key is a function of
//! secret and plaintext, the DataId a one-way function of the key) replaced
//! version 1, whose keys derived from the DataId; version 1 is not read. Decoding any byte string returns a typed error, never
//! a panic; this module is the fuzz target.

/// Errors decoding blobs and packets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("{what}: {len} bytes is shorter than its {need}-byte header")]
    Short {
        what: &'static str,
        len: usize,
        need: usize,
    },
    #[error("{what}: bad magic {found:02x?} (not a strew {what})")]
    Magic { what: &'static str, found: [u8; 4] },
    #[error(
        "{what}: format version {found} is not supported (this strew reads version {FORMAT_VERSION})"
    )]
    Version { what: &'static str, found: u8 },
    #[error("{what}: unknown flags {flags:#04x}")]
    Flags { what: &'static str, flags: u8 },
    #[error("packet: unknown redundancy scheme {0}")]
    Scheme(u8),
    #[error("packet: inconsistent geometry: {0}")]
    Geometry(String),
    #[error("{what}: header says {declared} bytes follow, {actual} do")]
    Length {
        what: &'static str,
        declared: usize,
        actual: usize,
    },
}

pub const BLOB_MAGIC: [u8; 4] = *b"SBLB";
pub const PACKET_MAGIC: [u8; 4] = *b"SPKT";
pub const FORMAT_VERSION: u8 = 2;
pub const BLOB_HEADER_LEN: usize = 22;
pub const PACKET_HEADER_LEN: usize = 17;
pub const TAG_LEN: usize = 16;

/// Blob flag: the payload is zstd-compressed.
pub const FLAG_COMPRESSED: u8 = 0b0000_0001;
const KNOWN_BLOB_FLAGS: u8 = FLAG_COMPRESSED;

/// The header of an encrypted chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobHeader {
    pub flags: u8,
    pub nonce: [u8; 12],
    pub plain_len: u32,
}

impl BlobHeader {
    pub fn encode(&self) -> [u8; BLOB_HEADER_LEN] {
        let mut out = [0u8; BLOB_HEADER_LEN];
        out[..4].copy_from_slice(&BLOB_MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = self.flags;
        out[6..18].copy_from_slice(&self.nonce);
        out[18..22].copy_from_slice(&self.plain_len.to_le_bytes());
        out
    }

    /// Splits a blob into its header (raw bytes and parsed) and ciphertext.
    pub fn decode(blob: &[u8]) -> Result<(BlobHeader, &[u8], &[u8]), FormatError> {
        let what = "blob";
        if blob.len() < BLOB_HEADER_LEN + TAG_LEN {
            return Err(FormatError::Short {
                what,
                len: blob.len(),
                need: BLOB_HEADER_LEN + TAG_LEN,
            });
        }
        let (head, ct) = blob.split_at(BLOB_HEADER_LEN);
        check_magic_version(what, head, BLOB_MAGIC)?;
        let flags = head[5];
        if flags & !KNOWN_BLOB_FLAGS != 0 {
            return Err(FormatError::Flags { what, flags });
        }
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&head[6..18]);
        let plain_len = u32::from_le_bytes([head[18], head[19], head[20], head[21]]);
        Ok((
            BlobHeader {
                flags,
                nonce,
                plain_len,
            },
            head,
            ct,
        ))
    }
}

fn check_magic_version(what: &'static str, head: &[u8], magic: [u8; 4]) -> Result<(), FormatError> {
    let mut found = [0u8; 4];
    found.copy_from_slice(&head[..4]);
    if found != magic {
        return Err(FormatError::Magic { what, found });
    }
    if head[4] != FORMAT_VERSION {
        return Err(FormatError::Version {
            what,
            found: head[4],
        });
    }
    Ok(())
}

/// How a packet relates to its stripe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Reed–Solomon share `index` of `k` data + `m` parity shards.
    Erasure,
    /// The whole blob; the stripe is `k = 1` copy stored on `1 + m` targets.
    Replica,
}

/// A decoded packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub scheme: Scheme,
    pub k: u8,
    pub m: u8,
    pub index: u8,
    pub blob_len: u32,
    pub shard_len: u32,
}

impl PacketHeader {
    /// Checks the geometry rules every valid packet satisfies.
    fn validate(&self) -> Result<(), FormatError> {
        let bad = |why: String| Err(FormatError::Geometry(why));
        if self.k == 0 {
            return bad("k is 0".into());
        }
        if u16::from(self.k) + u16::from(self.m) > 255 {
            return bad(format!(
                "k + m = {} exceeds 255",
                u16::from(self.k) + u16::from(self.m)
            ));
        }
        if self.index >= self.k.saturating_add(self.m) && self.scheme == Scheme::Erasure {
            return bad(format!(
                "share index {} outside 0..{}",
                self.index,
                self.k + self.m
            ));
        }
        match self.scheme {
            Scheme::Replica => {
                if self.k != 1 || self.index != 0 || self.blob_len != self.shard_len {
                    return bad(
                        "a replica is one whole blob (k = 1, index 0, blob_len = shard_len)".into(),
                    );
                }
            }
            Scheme::Erasure => {
                if self.shard_len == 0 || !self.shard_len.is_multiple_of(2) {
                    return bad(format!(
                        "shard length {} is not a positive even number",
                        self.shard_len
                    ));
                }
                if u64::from(self.shard_len) * u64::from(self.k) < u64::from(self.blob_len) {
                    return bad(format!(
                        "{} shards of {} bytes cannot hold a {}-byte blob",
                        self.k, self.shard_len, self.blob_len
                    ));
                }
            }
        }
        Ok(())
    }

    pub fn encode(&self) -> [u8; PACKET_HEADER_LEN] {
        let mut out = [0u8; PACKET_HEADER_LEN];
        out[..4].copy_from_slice(&PACKET_MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = match self.scheme {
            Scheme::Erasure => 1,
            Scheme::Replica => 2,
        };
        out[6] = self.k;
        out[7] = self.m;
        out[8] = self.index;
        out[9..13].copy_from_slice(&self.blob_len.to_le_bytes());
        out[13..17].copy_from_slice(&self.shard_len.to_le_bytes());
        out
    }
}

/// Builds a packet from its header and shard bytes.
pub fn encode_packet(header: &PacketHeader, shard: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PACKET_HEADER_LEN + shard.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(shard);
    out
}

/// Parses a packet into its header and shard bytes.
pub fn decode_packet(bytes: &[u8]) -> Result<(PacketHeader, &[u8]), FormatError> {
    let what = "packet";
    if bytes.len() < PACKET_HEADER_LEN {
        return Err(FormatError::Short {
            what,
            len: bytes.len(),
            need: PACKET_HEADER_LEN,
        });
    }
    let (head, shard) = bytes.split_at(PACKET_HEADER_LEN);
    check_magic_version(what, head, PACKET_MAGIC)?;
    let scheme = match head[5] {
        1 => Scheme::Erasure,
        2 => Scheme::Replica,
        other => return Err(FormatError::Scheme(other)),
    };
    let header = PacketHeader {
        scheme,
        k: head[6],
        m: head[7],
        index: head[8],
        blob_len: u32::from_le_bytes([head[9], head[10], head[11], head[12]]),
        shard_len: u32::from_le_bytes([head[13], head[14], head[15], head[16]]),
    };
    header.validate()?;
    if shard.len() != header.shard_len as usize {
        return Err(FormatError::Length {
            what,
            declared: header.shard_len as usize,
            actual: shard.len(),
        });
    }
    Ok((header, shard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn packet_round_trips() {
        let h = PacketHeader {
            scheme: Scheme::Erasure,
            k: 4,
            m: 2,
            index: 5,
            blob_len: 7,
            shard_len: 2,
        };
        let p = encode_packet(&h, &[1, 2]);
        assert_eq!(decode_packet(&p), Ok((h, &[1u8, 2][..])));
    }

    #[test]
    fn garbage_gets_named_errors() {
        assert!(matches!(
            decode_packet(b"SPK"),
            Err(FormatError::Short { .. })
        ));
        assert!(matches!(
            decode_packet(b"XXXX\x02\x01\x04\x02\x00\x00\x00\x00\x00\x02\x00\x00\x00ab"),
            Err(FormatError::Magic { .. })
        ));
        assert!(matches!(
            decode_packet(b"SPKT\x09\x01\x04\x02\x00\x00\x00\x00\x00\x02\x00\x00\x00ab"),
            Err(FormatError::Version { found: 9, .. })
        ));
        assert!(matches!(
            decode_packet(b"SPKT\x02\x01\x04\x02\x07\x00\x00\x00\x00\x02\x00\x00\x00ab"),
            Err(FormatError::Geometry(_))
        ));
        assert!(matches!(
            decode_packet(b"SPKT\x02\x01\x04\x02\x00\x00\x00\x00\x00\x04\x00\x00\x00ab"),
            Err(FormatError::Length { .. })
        ));
        assert!(matches!(
            BlobHeader::decode(&[0u8; 10]),
            Err(FormatError::Short { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_any_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_packet(&bytes);
            let _ = BlobHeader::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_headers_never_panics(
            tail in proptest::collection::vec(any::<u8>(), 0..40),
            head in proptest::collection::vec(any::<u8>(), 13..=13),
        ) {
            let mut bytes = b"SPKT".to_vec();
            bytes.extend_from_slice(&head);
            bytes.extend_from_slice(&tail);
            let _ = decode_packet(&bytes);
        }
    }
}
