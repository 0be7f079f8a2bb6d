//! CBOR encoding helpers shared by every strew wire message (ciborium).
//!
//! Owns the size-bounded decode entry point and the serde adapter that writes
//! byte strings as CBOR byte strings (not arrays of integers). It must not know
//! any message type.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a CBOR message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CborError {
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed CBOR")]
    Malformed(#[source] ciborium::de::Error<std::io::Error>),
    #[error("trailing bytes after the CBOR message")]
    Trailing,
}

/// Encodes a value as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    // Writing into a Vec cannot fail, and our types have no fallible Serialize impls.
    if let Err(err) = ciborium::ser::into_writer(value, &mut out) {
        tracing::error!(%err, "CBOR encoding of an in-memory value failed");
    }
    out
}

/// Decodes exactly one CBOR value from `bytes`, refusing inputs over `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CborError> {
    if bytes.len() > limit {
        return Err(CborError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    let mut reader = bytes;
    let value = ciborium::de::from_reader(&mut reader).map_err(CborError::Malformed)?;
    if !reader.is_empty() {
        return Err(CborError::Trailing);
    }
    Ok(value)
}

/// Reads a whole stream direction of at most `limit` bytes (one CBOR
/// message of a request-response protocol), erroring past the limit without
/// buffering more than `limit + 1` bytes.
pub async fn read_limited<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
) -> std::io::Result<Vec<u8>> {
    use futures::AsyncReadExt;
    let mut buf = Vec::new();
    io.take(limit as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message exceeds {limit} bytes"),
        ));
    }
    Ok(buf)
}

/// Writes one CBOR message as a whole stream direction and closes it (the
/// write half of the codecs whose reads use [`read_limited`]).
pub async fn write_message<T: futures::AsyncWrite + Unpin + Send, V: Serialize>(
    io: &mut T,
    value: &V,
) -> std::io::Result<()> {
    use futures::AsyncWriteExt;
    io.write_all(&encode(value)).await?;
    io.close().await
}

/// A decode failure as the I/O error a libp2p codec returns.
pub fn invalid(e: CborError) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())
}

/// Serde adapter: `Vec<u8>` as a CBOR byte string.
pub mod bytes {
    use serde::{Deserializer, Serializer, de};
    use std::fmt;

    pub fn serialize<S: Serializer>(value: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }

    pub(crate) struct BytesVisitor;

    impl<'de> de::Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte string")
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }
    }
}

/// Serde adapter: `[u8; 32]` as a CBOR byte string of exactly 32 bytes.
pub mod bytes32 {
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let v = d.deserialize_byte_buf(super::bytes::BytesVisitor)?;
        <[u8; 32]>::try_from(v.as_slice())
            .map_err(|_| de::Error::invalid_length(v.len(), &"32 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Sample {
        #[serde(with = "bytes32")]
        key: [u8; 32],
        #[serde(with = "bytes")]
        blob: Vec<u8>,
    }

    #[test]
    fn byte_fields_are_byte_strings_and_round_trip() {
        let s = Sample {
            key: [9; 32],
            blob: vec![1, 2, 3],
        };
        let enc = encode(&s);
        // map(2) + "key" + bstr(32) + "blob" + bstr(3): far below an int array's size.
        assert!(enc.len() < 50, "{}", enc.len());
        assert_eq!(decode::<Sample>(&enc, 1024).unwrap(), s);
    }

    #[test]
    fn decode_refuses_oversize_trailing_and_garbage() {
        let enc = encode(&Sample {
            key: [0; 32],
            blob: vec![],
        });
        assert!(matches!(
            decode::<Sample>(&enc, 4),
            Err(CborError::TooLarge { .. })
        ));
        let mut trailing = enc.clone();
        trailing.push(0);
        assert!(matches!(
            decode::<Sample>(&trailing, 1024),
            Err(CborError::Trailing)
        ));
        assert!(matches!(
            decode::<Sample>(&[0xff, 0x00], 1024),
            Err(CborError::Malformed(_))
        ));
    }
}
