//! Convergent cryptography of chunks: the convergence secret, DataIds, and
//! sealing/opening a chunk into an encrypted blob.
//!
//! - `DataId = BLAKE3-keyed(derive_key("strew data-id v1", secret), plaintext)`.
//! - The chunk key is `derive_key("strew chunk key v1", secret ‖ DataId)`, so
//!   identical chunks under one secret get identical keys (convergent
//!   encryption: identical chunks give identical packets, and dedup works on
//!   packets).
//! - The nonce is synthetic (SIV-style): the first 12 bytes of
//!   `BLAKE3-keyed(derive_key("strew chunk nonce v1", secret ‖ DataId), flags ‖ payload)`.
//!   Deterministic for identical inputs, yet a key is never used with one
//!   nonce for two different payloads (e.g. the same chunk compressed at two
//!   levels), which a nonce derived from the DataId alone would allow.
//!
//! This module owns key derivation and the AEAD call; the byte layout of a
//! blob is `packet::Blob`'s.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use strew_coordinator::DataId;

/// A 32-byte convergence secret. Its scope (grid-wide or private to a user)
/// decides who can dedup against whom; see docs/packet-format.md.
#[derive(Clone, PartialEq, Eq)]
pub struct ConvergenceSecret([u8; 32]);

impl std::fmt::Debug for ConvergenceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConvergenceSecret(..)")
    }
}

impl ConvergenceSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ConvergenceSecret(bytes)
    }

    /// A fresh random secret (a `private` scope).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        ConvergenceSecret(bytes)
    }

    /// The secret shared by a whole grid (`grid` scope): derived from a grid
    /// name, so every member computes the same one and identical data from
    /// different sources dedups. Members can then confirm whether a known
    /// file is stored; that is the documented price of grid-wide dedup.
    pub fn for_grid(grid_name: &str) -> Self {
        ConvergenceSecret(blake3::derive_key(
            "strew grid convergence secret v1",
            grid_name.as_bytes(),
        ))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn id_key(&self) -> [u8; 32] {
        blake3::derive_key("strew data-id v1", &self.0)
    }

    /// A hasher computing DataIds incrementally (for whole files).
    pub fn data_id_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.id_key())
    }

    /// The DataId of a piece of plaintext.
    pub fn data_id(&self, plaintext: &[u8]) -> DataId {
        DataId(*blake3::keyed_hash(&self.id_key(), plaintext).as_bytes())
    }

    fn derive(&self, context: &str, data_id: &DataId) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(context);
        h.update(&self.0);
        h.update(&data_id.0);
        *h.finalize().as_bytes()
    }

    /// The synthetic nonce for `payload` of the chunk `data_id`; `header` is
    /// the blob header (it carries the flags), bound into the nonce.
    pub fn nonce(&self, data_id: &DataId, header: &[u8], payload: &[u8]) -> [u8; 12] {
        let key = self.derive("strew chunk nonce v1", data_id);
        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(header);
        h.update(payload);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&h.finalize().as_bytes()[..12]);
        nonce
    }

    fn cipher(&self, data_id: &DataId) -> ChaCha20Poly1305 {
        let key = self.derive("strew chunk key v1", data_id);
        ChaCha20Poly1305::new(&Key::from(key))
    }

    /// Encrypts `payload` with associated data `aad` (the blob header).
    pub fn encrypt(
        &self,
        data_id: &DataId,
        nonce: &[u8; 12],
        aad: &[u8],
        payload: &[u8],
    ) -> Vec<u8> {
        // Encryption with a valid key and nonce cannot fail for inputs under
        // ChaCha20's 256 GiB limit; chunks are at most a few MiB.
        self.cipher(data_id)
            .encrypt(&Nonce::from(*nonce), Payload { msg: payload, aad })
            .unwrap_or_default()
    }

    /// Decrypts and authenticates; `None` when the key (secret or DataId) is
    /// wrong or the bytes were altered.
    pub fn decrypt(
        &self,
        data_id: &DataId,
        nonce: &[u8; 12],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Option<Vec<u8>> {
        self.cipher(data_id)
            .decrypt(
                &Nonce::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ids_depend_on_the_secret_and_the_bytes() {
        let a = ConvergenceSecret::from_bytes([1; 32]);
        let b = ConvergenceSecret::from_bytes([2; 32]);
        assert_eq!(a.data_id(b"x"), a.data_id(b"x"));
        assert_ne!(a.data_id(b"x"), b.data_id(b"x"));
        assert_ne!(a.data_id(b"x"), a.data_id(b"y"));
        let mut h = a.data_id_hasher();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(DataId(*h.finalize().as_bytes()), a.data_id(b"hello world"));
    }

    #[test]
    fn encryption_round_trips_and_rejects_wrong_key_or_aad() {
        let s = ConvergenceSecret::from_bytes([9; 32]);
        let id = s.data_id(b"chunk");
        let nonce = s.nonce(&id, b"hdr", b"chunk");
        let ct = s.encrypt(&id, &nonce, b"hdr", b"chunk");
        assert_eq!(
            s.decrypt(&id, &nonce, b"hdr", &ct).as_deref(),
            Some(&b"chunk"[..])
        );
        assert!(s.decrypt(&id, &nonce, b"hdX", &ct).is_none());
        let other = ConvergenceSecret::from_bytes([8; 32]);
        assert!(other.decrypt(&id, &nonce, b"hdr", &ct).is_none());
        assert_ne!(
            nonce,
            s.nonce(&id, b"hdr", b"chunk, compressed differently")
        );
    }
}
