//! Convergent cryptography of chunks, Tahoe-style: the convergence secret,
//! chunk keys, storage indices, and sealing/opening a chunk into an
//! encrypted blob.
//!
//! - The chunk key is `K = BLAKE3-keyed(derive_key("strew chunk key v2", secret), plaintext)`:
//!   only a holder of both the plaintext and the secret can compute it, and
//!   identical chunks under one secret get identical keys (convergent
//!   encryption, so identical chunks give identical packets and dedup works).
//! - The storage index, which the sequence manager, the targets and the
//!   sequences see as the chunk's DataId, is `derive_key("strew storage index v2", K)`:
//!   a one-way function of the key, so no metadata yields a key.
//! - The AEAD key is `derive_key("strew chunk aead v2", K)`, and the nonce is
//!   synthetic (SIV-style): the first 12 bytes of
//!   `BLAKE3-keyed(derive_key("strew chunk nonce v2", K), header ‖ payload)`.
//!   Deterministic for identical inputs, yet a key is never used with one
//!   nonce for two different payloads (e.g. the same chunk compressed at two
//!   levels).
//! - The key of a snapshot's root (the list of its manifest's chunk keys) is
//!   derived from the owner's private secret and the manifest's storage
//!   indices ([`ConvergenceSecret::root_key`]): only the owner can open it.
//!
//! The chunk keys themselves are written only into the encrypted manifest.
//! This module owns key derivation and the AEAD call; the byte layout of a
//! blob is `packet::Blob`'s.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde::{Deserialize, Serialize};
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

/// The key of one chunk. It appears only inside encrypted manifests (and
/// snapshot roots); everything outside sees its [`ChunkKey::storage_index`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ChunkKey(#[serde(with = "strew_coordinator::cbor::bytes32")] pub [u8; 32]);

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

impl ChunkKey {
    /// The chunk's storage index: its DataId as the grid knows it.
    pub fn storage_index(&self) -> DataId {
        DataId(blake3::derive_key("strew storage index v2", &self.0))
    }

    /// The synthetic nonce for `payload`; `header` is the blob header (it
    /// carries the flags), bound into the nonce.
    pub fn nonce(&self, header: &[u8], payload: &[u8]) -> [u8; 12] {
        let mut h = blake3::Hasher::new_keyed(&blake3::derive_key("strew chunk nonce v2", &self.0));
        h.update(header);
        h.update(payload);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(&h.finalize().as_bytes()[..12]);
        nonce
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&Key::from(blake3::derive_key(
            "strew chunk aead v2",
            &self.0,
        )))
    }

    /// Encrypts `payload` with associated data `aad` (the blob header).
    pub fn encrypt(&self, nonce: &[u8; 12], aad: &[u8], payload: &[u8]) -> Vec<u8> {
        // Encryption with a valid key and nonce cannot fail for inputs under
        // ChaCha20's 256 GiB limit; chunks are at most a few MiB.
        self.cipher()
            .encrypt(&Nonce::from(*nonce), Payload { msg: payload, aad })
            .unwrap_or_default()
    }

    /// Decrypts and authenticates; `None` when the key is wrong or the bytes
    /// were altered.
    pub fn decrypt(&self, nonce: &[u8; 12], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.cipher()
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

impl ConvergenceSecret {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        ConvergenceSecret(bytes)
    }

    /// A fresh random secret (a `private` scope, or a new grid's).
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        ConvergenceSecret(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Names the secret without revealing it (recorded in manifests, so a
    /// restore knows which of its secrets verifies the data).
    pub fn fingerprint(&self) -> [u8; 32] {
        blake3::derive_key("strew secret fingerprint v2", &self.0)
    }

    fn key_key(&self) -> [u8; 32] {
        blake3::derive_key("strew chunk key v2", &self.0)
    }

    /// The key of a chunk: needs its plaintext.
    pub fn chunk_key(&self, plaintext: &[u8]) -> ChunkKey {
        ChunkKey(*blake3::keyed_hash(&self.key_key(), plaintext).as_bytes())
    }

    /// A hasher giving [`ConvergenceSecret::chunk_key`] of whatever it is
    /// fed, for plaintext read a piece at a time.
    pub fn chunk_key_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.key_key())
    }

    /// A hasher naming whole files inside a manifest (never seen outside it).
    pub fn file_id_hasher(&self) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&blake3::derive_key("strew file id v2", &self.0))
    }

    /// The id of a whole file's contents (see [`Self::file_id_hasher`]).
    pub fn file_id(&self, plaintext: &[u8]) -> DataId {
        let mut h = self.file_id_hasher();
        h.update(plaintext);
        DataId(*h.finalize().as_bytes())
    }

    /// The key of a snapshot root listing the keys of the manifest chunks
    /// whose storage indices are `manifest`: the owner recomputes it from
    /// its private secret and its (sealed) sequence, nobody else can.
    pub fn root_key(&self, manifest: &[DataId]) -> ChunkKey {
        let mut h =
            blake3::Hasher::new_keyed(&blake3::derive_key("strew snapshot root key v2", &self.0));
        for id in manifest {
            h.update(&id.0);
        }
        ChunkKey(*h.finalize().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_the_secret_and_the_bytes_and_indices_on_the_key_alone() {
        let a = ConvergenceSecret::from_bytes([1; 32]);
        let b = ConvergenceSecret::from_bytes([2; 32]);
        assert_eq!(a.chunk_key(b"x"), a.chunk_key(b"x"));
        assert_ne!(a.chunk_key(b"x"), b.chunk_key(b"x"));
        assert_ne!(a.chunk_key(b"x"), a.chunk_key(b"y"));
        let key = a.chunk_key(b"x");
        assert_eq!(key.storage_index(), a.chunk_key(b"x").storage_index());
        assert_ne!(key.storage_index().0, key.0);
        let mut h = a.file_id_hasher();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(DataId(*h.finalize().as_bytes()), a.file_id(b"hello world"));
        assert_ne!(
            a.root_key(&[DataId([1; 32])]),
            b.root_key(&[DataId([1; 32])])
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn encryption_round_trips_and_rejects_wrong_key_or_aad() {
        let s = ConvergenceSecret::from_bytes([9; 32]);
        let key = s.chunk_key(b"chunk");
        let nonce = key.nonce(b"hdr", b"chunk");
        let ct = key.encrypt(&nonce, b"hdr", b"chunk");
        assert_eq!(
            key.decrypt(&nonce, b"hdr", &ct).as_deref(),
            Some(&b"chunk"[..])
        );
        assert!(key.decrypt(&nonce, b"hdX", &ct).is_none());
        let other = ConvergenceSecret::from_bytes([8; 32]).chunk_key(b"chunk");
        assert!(other.decrypt(&nonce, b"hdr", &ct).is_none());
        // The storage index is not a key that opens the chunk.
        assert!(
            ChunkKey(key.storage_index().0)
                .decrypt(&nonce, b"hdr", &ct)
                .is_none()
        );
        assert_ne!(nonce, key.nonce(b"hdr", b"chunk, compressed differently"));
    }
}
