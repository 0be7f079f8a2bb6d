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
}
