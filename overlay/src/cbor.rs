//! CBOR encoding helpers shared by every strew wire message (ciborium).
//!
//! Owns the size-bounded decode entry point, the framing of request-response
//! messages (a 4-byte big-endian length, then exactly that many bytes, read
//! only once the length fits the protocol's limit and the global inbound
//! budget) and the serde adapter that writes byte strings as CBOR byte
//! strings (not arrays of integers). It must not know any message type.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::budget::{InboundBudget, Reserved};

/// Why a CBOR message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum CborError {
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed CBOR")]
    Malformed(#[source] ciborium::de::Error<std::io::Error>),
    #[error("trailing bytes after the CBOR message")]
    Trailing,
    /// A value that does not encode: an error, never an empty or truncated
    /// message that would then be sent or signed.
    #[error("cannot encode as CBOR: {0}")]
    Encode(String),
}

/// Framed messages refused for their size (inbound over the protocol's
/// limit before the body is read, or outbound before anything is written),
/// every protocol together, since the process started. Exported as
/// `strew_oversize_messages` by [`crate::metrics::OverlayMetrics`].
pub static OVERSIZE_MESSAGES: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Encodes a value as CBOR.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::with_capacity(256);
    ciborium::ser::into_writer(value, &mut out).map_err(|e| CborError::Encode(e.to_string()))?;
    Ok(out)
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

/// One framed inbound message and the share of the inbound budget it holds
/// (given back when the message drops).
#[derive(Debug)]
pub struct Framed {
    pub bytes: Vec<u8>,
    pub reserved: Reserved,
}

/// Reads one framed message of at most `limit` bytes: a 4-byte big-endian
/// length, then exactly that many bytes. A length over `limit` is refused
/// before any of the body is read, and so is one that does not fit the
/// `budget` (a [`crate::budget::busy`] error); the buffer is reserved and
/// allocated once, at the announced size, never grown by doubling.
pub async fn read_framed<T: futures::AsyncRead + Unpin + Send>(
    io: &mut T,
    limit: usize,
    budget: &InboundBudget,
) -> std::io::Result<Framed> {
    use futures::AsyncReadExt;
    let mut prefix = [0u8; 4];
    io.read_exact(&mut prefix).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    if len > limit {
        OVERSIZE_MESSAGES.inc();
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message of {len} bytes exceeds the limit of {limit} bytes"),
        ));
    }
    let reserved = budget.reserve(len)?;
    let mut bytes = vec![0u8; len];
    io.read_exact(&mut bytes).await?;
    Ok(Framed { bytes, reserved })
}

/// Writes `bytes` as one framed message (the write half of
/// [`read_framed`]) and closes the stream direction.
pub async fn write_framed<T: futures::AsyncWrite + Unpin + Send>(
    io: &mut T,
    bytes: &[u8],
) -> std::io::Result<()> {
    use futures::AsyncWriteExt;
    let len = u32::try_from(bytes.len()).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("message of {} bytes cannot be framed", bytes.len()),
        )
    })?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

/// Writes one CBOR message framed (see [`write_framed`]), refusing values
/// that do not encode or exceed `limit` (the reader would refuse them).
pub async fn write_message<T: futures::AsyncWrite + Unpin + Send, V: Serialize>(
    io: &mut T,
    value: &V,
    limit: usize,
) -> std::io::Result<()> {
    let bytes =
        encode(value).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if bytes.len() > limit {
        OVERSIZE_MESSAGES.inc();
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes exceeds the limit of {limit} bytes",
                bytes.len()
            ),
        ));
    }
    write_framed(io, &bytes).await
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
/// Strict on purpose: a wire message must carry a byte string. Records on
/// disk use `strew_coordinator::cbor::bytes32` instead, which also reads
/// the integer arrays written before keys were byte strings.
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
        let enc = encode(&s).unwrap();
        // map(2) + "key" + bstr(32) + "blob" + bstr(3): far below an int array's size.
        assert!(enc.len() < 50, "{}", enc.len());
        assert_eq!(decode::<Sample>(&enc, 1024).unwrap(), s);
    }

    #[test]
    fn decode_refuses_oversize_trailing_and_garbage() {
        let enc = encode(&Sample {
            key: [0; 32],
            blob: vec![],
        })
        .unwrap();
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

#[cfg(test)]
mod framing_tests {
    use super::*;

    async fn read(bytes: Vec<u8>, limit: usize, budget: &InboundBudget) -> std::io::Result<Framed> {
        read_framed(&mut futures::io::Cursor::new(bytes), limit, budget).await
    }

    #[tokio::test]
    async fn framed_messages_round_trip_and_bad_prefixes_are_refused_unread() {
        let budget = InboundBudget::new(16);
        let mut wire = futures::io::Cursor::new(Vec::new());
        write_framed(&mut wire, b"hello").await.expect("writes");
        let bytes = wire.into_inner();
        assert_eq!(&bytes[..4], &5u32.to_be_bytes());
        let got = read(bytes.clone(), 5, &budget).await.expect("reads");
        assert_eq!(got.bytes, b"hello");
        assert_eq!(budget.used(), 5, "the message holds its bytes");
        drop(got);
        assert_eq!(budget.used(), 0);
        // An empty message is a message of zero bytes, not a missing one.
        let mut wire = futures::io::Cursor::new(Vec::new());
        write_framed(&mut wire, b"").await.expect("writes");
        let empty = read(wire.into_inner(), 5, &budget).await.expect("reads");
        assert!(empty.bytes.is_empty());
        // Over the limit: refused on the prefix alone.
        let mut huge = u32::MAX.to_be_bytes().to_vec();
        huge.extend_from_slice(b"x");
        let err = read(huge, 1 << 20, &budget).await.expect_err("too large");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // Within the limit but past the budget: busy, nothing reserved.
        let held = budget.try_reserve(12).expect("fits");
        let err = read(bytes.clone(), 5, &budget).await.expect_err("busy");
        assert_eq!(err.kind(), std::io::ErrorKind::OutOfMemory);
        assert_eq!(budget.used(), 12);
        drop(held);
        // A body shorter than its prefix, or no prefix at all, is an error.
        assert!(read(bytes[..7].to_vec(), 5, &budget).await.is_err());
        assert!(read(vec![0u8; 2], 5, &budget).await.is_err());
        assert_eq!(budget.used(), 0, "failed reads give their bytes back");
    }

    #[tokio::test]
    async fn writers_refuse_what_readers_would() {
        let mut sink = futures::io::Cursor::new(Vec::new());
        let err = write_message(&mut sink, &vec![0u8; 64], 8)
            .await
            .expect_err("over the limit");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(sink.into_inner().is_empty(), "nothing written");
    }
}
