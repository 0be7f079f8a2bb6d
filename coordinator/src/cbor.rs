//! The project's one way to write and read CBOR (ciborium) for records,
//! commands, signed bodies and wire messages: encoding failures are errors,
//! never an empty or truncated byte string that would then be stored or
//! signed; decoding never panics on garbage.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A value that did not encode, or bytes that did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("cannot encode as CBOR: {0}")]
    Encode(String),
    #[error("does not decode as CBOR: {0}")]
    Decode(String),
}

/// CBOR bytes of `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CborError> {
    let mut out = Vec::new();
    encode_into(value, &mut out)?;
    Ok(out)
}

/// Appends the CBOR bytes of `value` to `out` (a signing context prefix,
/// say); on error `out` is left as it was.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<(), CborError> {
    let len = out.len();
    ciborium::into_writer(value, &mut *out).map_err(|e| {
        out.truncate(len);
        CborError::Encode(e.to_string())
    })
}

/// Decodes `bytes`; never panics on garbage.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CborError> {
    ciborium::from_reader(bytes).map_err(|e| CborError::Decode(e.to_string()))
}

/// `#[serde(with = "strew_coordinator::cbor::bytes32")]` for a `[u8; 32]`
/// field that is a key or a digest: written as a CBOR byte string (34
/// bytes); read from a byte string or, as records written before keys were
/// byte strings hold them, from an array of 32 integers. (Wire messages use
/// the overlay's strict `cbor::bytes32`, which reads only byte strings.)
pub mod bytes32 {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(value)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        d.deserialize_bytes(crate::ids::Bytes32Visitor("32-byte key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let bytes = encode(&(1u8, "two")).expect("encode");
        let back: (u8, String) = decode(&bytes).expect("decode");
        assert_eq!(back, (1, "two".to_string()));
        assert!(decode::<(u8, String)>(&[0xff, 0x00, 0x13]).is_err());
        let mut prefixed = b"ctx".to_vec();
        encode_into(&7u32, &mut prefixed).expect("encode");
        assert!(prefixed.starts_with(b"ctx") && prefixed.len() > 3);
    }

    #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Keyed(#[serde(with = "bytes32")] [u8; 32]);

    #[test]
    fn a_32_byte_key_is_a_byte_string_and_reads_the_old_integer_array() {
        let key = [200u8; 32];
        let bytes = encode(&Keyed(key)).expect("encode");
        assert_eq!(
            bytes.len(),
            34,
            "a byte string: 2 bytes of header and the key"
        );
        assert_eq!(decode::<Keyed>(&bytes).expect("decode"), Keyed(key));
        let old = encode(&key).expect("encode");
        assert!(old.len() > 60, "an array of integers: {}", old.len());
        assert_eq!(decode::<Keyed>(&old).expect("decode"), Keyed(key));
        for wrong in [
            encode(&[1u8; 31]),
            encode(&serde_bytes::Bytes::new(&[1; 33])),
        ] {
            assert!(decode::<Keyed>(&wrong.expect("encode")).is_err());
        }
    }
}
