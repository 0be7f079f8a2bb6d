//! Identifiers shared by every crate: [`NodeId`], [`PacketId`], [`DataId`].
//!
//! A `NodeId` is a node's Ed25519 public key. Its text form is exactly the
//! libp2p `PeerId` of that key (base58btc of the identity multihash of the
//! protobuf-encoded key), so ids printed by the coordinator, the overlay and
//! the CLI are the same strings, and a `/p2p/<node_id>` multiaddr works.
//! This module owns only the ids and their encodings; it knows nothing of
//! libp2p.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Prefix of a libp2p PeerId for an Ed25519 key: identity multihash (0x00),
/// length 36, then the protobuf `PublicKey { Type = Ed25519, Data = 32 bytes }`.
const PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Errors parsing ids from text.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("not base58: {0:?}")]
    NotBase58(String),
    #[error("not an Ed25519 peer id (strew node ids are Ed25519 libp2p peer ids): {0:?}")]
    NotEd25519PeerId(String),
    #[error("expected 64 hex digits, got {0:?}")]
    NotHex(String),
}

/// A node: its Ed25519 public key. `Display`/`FromStr` use the libp2p PeerId text form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub [u8; 32]);

/// Reads a 32-byte id from a CBOR byte string (or, for records written
/// before ids were byte strings, an array of 32 integers); anything else,
/// or any other length, is a serde error naming `what`.
pub(crate) struct Bytes32Visitor(pub(crate) &'static str);

impl<'de> Visitor<'de> for Bytes32Visitor {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} as a byte string of exactly 32 bytes", self.0)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        <[u8; 32]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&v)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(33, &self));
        }
        Ok(out)
    }
}

/// Implements `Serialize`/`Deserialize` for a `pub [u8; 32]` newtype as a
/// byte string (34 bytes of CBOR instead of up to 66 for an array).
macro_rules! bytes_serde {
    ($name:ident) => {
        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_bytes(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer
                    .deserialize_bytes(Bytes32Visitor(stringify!($name)))
                    .map($name)
            }
        }
    };
}

bytes_serde!(NodeId);

impl NodeId {
    /// The raw Ed25519 public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The multihash bytes of the equivalent libp2p PeerId.
    pub fn to_peer_id_bytes(&self) -> [u8; 38] {
        let mut out = [0u8; 38];
        out[..6].copy_from_slice(&PEER_ID_PREFIX);
        out[6..].copy_from_slice(&self.0);
        out
    }

    /// Parses the multihash bytes of a libp2p PeerId (only Ed25519 keys qualify).
    pub fn from_peer_id_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 38 || bytes[..6] != PEER_ID_PREFIX {
            return None;
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes[6..]);
        Some(NodeId(key))
    }

    /// A short form for logs and tables (last 8 characters of the PeerId text).
    pub fn short(&self) -> String {
        let s = self.to_string();
        s[s.len().saturating_sub(8)..].to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&bs58::encode(self.to_peer_id_bytes()).into_string())
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = bs58::decode(s)
            .into_vec()
            .map_err(|_| IdError::NotBase58(s.to_string()))?;
        NodeId::from_peer_id_bytes(&bytes).ok_or_else(|| IdError::NotEd25519PeerId(s.to_string()))
    }
}

macro_rules! hash_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; 32]);

        bytes_serde!($name);

        impl $name {
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
            /// First 12 hex digits, for logs and tables.
            pub fn short(&self) -> String {
                self.to_string()[..12].to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bad = || IdError::NotHex(s.to_string());
                if s.len() != 64 || !s.is_ascii() {
                    return Err(bad());
                }
                let mut out = [0u8; 32];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
                }
                Ok($name(out))
            }
        }
    };
}

hash_id!(
    /// BLAKE3 hash of a packet's stored (encrypted) bytes.
    PacketId
);
hash_id!(
    /// Keyed BLAKE3 (keyed by the convergence secret) of original plaintext:
    /// a chunk, a file or a snapshot.
    DataId
);

hash_id!(
    /// A grid: the public half of its Ed25519 grid key (the trust root
    /// every node pins; see `crate::trust`).
    GridId
);

hash_id!(
    /// A snapshot, as the sequence manager names it: BLAKE3 over the source,
    /// the backup set and the manager's pending-backup number.
    SnapshotId
);

impl PacketId {
    /// The PacketId of stored bytes.
    pub fn of(bytes: &[u8]) -> Self {
        PacketId(*blake3::hash(bytes).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_text_round_trips_and_looks_like_a_peer_id() {
        let id = NodeId([7u8; 32]);
        let text = id.to_string();
        assert!(text.starts_with("12D3KooW"), "{text}");
        assert_eq!(text.parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn node_id_rejects_other_peer_ids_and_garbage() {
        // An RSA/secp-style peer id (sha256 multihash) is not an Ed25519 node id.
        assert!(matches!(
            "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N".parse::<NodeId>(),
            Err(IdError::NotEd25519PeerId(_))
        ));
        assert!(matches!(
            "0OIl".parse::<NodeId>(),
            Err(IdError::NotBase58(_))
        ));
    }

    #[test]
    fn hash_ids_round_trip_hex_and_reject_bad_text() {
        let id = PacketId::of(b"hello");
        assert_eq!(id.to_string().parse::<PacketId>(), Ok(id));
        assert!("zz".parse::<PacketId>().is_err());
        assert!("é".repeat(32).parse::<DataId>().is_err());
    }

    #[test]
    fn ids_encode_as_32_byte_strings() {
        let id = DataId([9u8; 32]);
        let bytes = crate::cbor::encode(&id).expect("encode");
        // Major type 2 (byte string), one-byte length 32, then the bytes.
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0x58, 32]);
        assert_eq!(crate::cbor::decode::<DataId>(&bytes), Ok(id));
        let node = NodeId([3u8; 32]);
        let back: NodeId =
            crate::cbor::decode(&crate::cbor::encode(&node).expect("encode")).expect("decode");
        assert_eq!(back, node);
    }

    #[test]
    fn ids_of_the_wrong_length_or_type_are_refused() {
        let short = crate::cbor::encode(&serde_bytes::Bytes::new(&[1u8; 31])).expect("encode");
        assert!(crate::cbor::decode::<PacketId>(&short).is_err());
        let long = crate::cbor::encode(&serde_bytes::Bytes::new(&[1u8; 33])).expect("encode");
        assert!(crate::cbor::decode::<SnapshotId>(&long).is_err());
        let text = crate::cbor::encode("not an id").expect("encode");
        assert!(crate::cbor::decode::<NodeId>(&text).is_err());
        let array33 = crate::cbor::encode(&vec![1u8; 33]).expect("encode");
        assert!(crate::cbor::decode::<GridId>(&array33).is_err());
    }

    #[test]
    fn ids_written_as_integer_arrays_still_decode() {
        let legacy = crate::cbor::encode(&[5u8; 32]).expect("encode");
        assert_eq!(legacy[0], 0x98, "an array of 32 items");
        assert_eq!(
            crate::cbor::decode::<DataId>(&legacy),
            Ok(DataId([5u8; 32]))
        );
    }
}
