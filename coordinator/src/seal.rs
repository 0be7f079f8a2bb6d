//! Sealing: sequences encrypted at rest under the coordinator group's key,
//! and delivered to a source sealed to that source's X25519 key.
//!
//! Owns [`Sequence`] (the ordered (PacketId, targets) list of a backup), the
//! group key ([`GroupKey`]), the at-rest box ([`SealedAtRest`]:
//! ChaCha20-Poly1305 with a random nonce and caller-supplied associated data
//! that binds the box to what it belongs to) and the recipient box
//! ([`SealedForRecipient`]: ephemeral X25519 → HKDF-SHA256 → ChaCha20-Poly1305).
//! Randomness comes from the caller's cryptographic RNG. This module must not
//! invent cryptography: it only composes the RustCrypto/dalek primitives, and
//! it never decides what is sealed (the manager does).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::CryptoRng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{EphemeralSecret, PublicKey, StaticSecret};

use crate::ids::{DataId, NodeId, PacketId, SnapshotId};

/// Version byte of both sealed formats.
const SEAL_VERSION: u8 = 1;
const HKDF_INFO: &[u8] = b"strew/sequence-to-source/v1";
/// Largest plaintext accepted when opening (a sequence of ~4M packets); bounds decoding work.
pub const MAX_SEQUENCE_BYTES: usize = 512 << 20;

/// Errors sealing or opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed box has format version {0}, this node understands version {SEAL_VERSION}")]
    UnknownVersion(u8),
    #[error("sealed box does not open: wrong key, wrong recipient, or tampered bytes")]
    Unauthentic,
    #[error("the recipient's X25519 key is a low-order point; refusing to seal to it")]
    WeakRecipientKey,
    #[error("encryption failed (message too long)")]
    EncryptFailed,
    #[error("sequence does not decode: {0}")]
    BadSequence(String),
    #[error("sequence is {0} bytes, more than the {MAX_SEQUENCE_BYTES} allowed")]
    TooLarge(usize),
}

/// One stored packet in sequence order, and the target(s) holding it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceEntry {
    pub packet_id: PacketId,
    /// Stored bytes of the packet.
    pub size: u64,
    /// Targets holding this packet (one for an erasure share; a replica's
    /// copies are separate entries of the same stripe).
    pub targets: Vec<NodeId>,
    /// The storage generation its target recorded (delete tickets name it;
    /// a rebuilt group learns it from here). 0: unknown (older sequences).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One chunk's stripe: its packets in share order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceStripe {
    pub data_id: DataId,
    pub packets: Vec<SequenceEntry>,
}

/// The ordered list of a snapshot's packets and their targets, stripe after
/// stripe in the order the source stored them. Stripes may differ in width
/// (a deduplicated chunk keeps the redundancy it was first stored with).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    pub snapshot: SnapshotId,
    /// DataId of the snapshot's manifest.
    pub manifest: DataId,
    /// DataIds of the manifest's own chunks, in order (also among
    /// `stripes`): a restore decodes these first to learn the rest.
    #[serde(default)]
    pub manifest_chunks: Vec<DataId>,
    pub stripes: Vec<SequenceStripe>,
}

impl Sequence {
    /// Deterministic CBOR bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, SealError> {
        crate::cbor::encode(self).map_err(|e| SealError::BadSequence(e.to_string()))
    }

    /// Decodes CBOR bytes; never panics on garbage.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() > MAX_SEQUENCE_BYTES {
            return Err(SealError::TooLarge(bytes.len()));
        }
        ciborium::from_reader(bytes).map_err(|e| SealError::BadSequence(e.to_string()))
    }
}

/// The coordinator group's symmetric key for sequences at rest.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupKey(pub [u8; 32]);

impl GroupKey {
    /// A fresh random key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        GroupKey(key)
    }
}

impl std::fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupKey(..)")
    }
}

/// A sequence (or any bytes) encrypted under the group key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedAtRest {
    pub version: u8,
    pub nonce: [u8; 12],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

/// Bytes sealed to one recipient's X25519 public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedForRecipient {
    pub version: u8,
    pub ephemeral_public: [u8; 32],
    pub nonce: [u8; 12],
    #[serde(with = "serde_bytes")]
    pub ciphertext: Vec<u8>,
}

fn random_nonce<R: CryptoRng + ?Sized>(rng: &mut R) -> [u8; 12] {
    let mut nonce = [0u8; 12];
    rng.fill_bytes(&mut nonce);
    nonce
}

fn aead_seal(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    msg: &[u8],
) -> Result<Vec<u8>, SealError> {
    ChaCha20Poly1305::new(&Key::from(*key))
        .encrypt(&Nonce::from(*nonce), Payload { msg, aad })
        .map_err(|_| SealError::EncryptFailed)
}

fn aead_open(
    key: &[u8; 32],
    nonce: &[u8; 12],
    aad: &[u8],
    msg: &[u8],
) -> Result<Vec<u8>, SealError> {
    if msg.len() > MAX_SEQUENCE_BYTES + 16 {
        return Err(SealError::TooLarge(msg.len()));
    }
    ChaCha20Poly1305::new(&Key::from(*key))
        .decrypt(&Nonce::from(*nonce), Payload { msg, aad })
        .map_err(|_| SealError::Unauthentic)
}

/// Seals `plaintext` under the group key; `aad` (e.g. the snapshot id) must be
/// given again to open it, so a box cannot be passed off as another's.
pub fn seal_at_rest<R: CryptoRng + ?Sized>(
    key: &GroupKey,
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<SealedAtRest, SealError> {
    let nonce = random_nonce(rng);
    Ok(SealedAtRest {
        version: SEAL_VERSION,
        nonce,
        ciphertext: aead_seal(&key.0, &nonce, aad, plaintext)?,
    })
}

/// Opens a box sealed with [`seal_at_rest`].
pub fn open_at_rest(
    key: &GroupKey,
    aad: &[u8],
    sealed: &SealedAtRest,
) -> Result<Vec<u8>, SealError> {
    if sealed.version != SEAL_VERSION {
        return Err(SealError::UnknownVersion(sealed.version));
    }
    aead_open(&key.0, &sealed.nonce, aad, &sealed.ciphertext)
}

fn recipient_key(shared: &[u8; 32], ephemeral: &[u8; 32], recipient: &[u8; 32]) -> [u8; 32] {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    let mut key = [0u8; 32];
    // 32 bytes is always a valid HKDF-SHA256 output length.
    if Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(HKDF_INFO, &mut key)
        .is_err()
    {
        key = [0u8; 32];
    }
    key
}

/// Seals `plaintext` to the holder of the X25519 secret for `recipient_public`:
/// a fresh ephemeral key, X25519, HKDF-SHA256 (salt = ephemeral ‖ recipient
/// public keys), ChaCha20-Poly1305 with `aad`.
pub fn seal_to_recipient<R: CryptoRng + ?Sized>(
    recipient_public: &[u8; 32],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<SealedForRecipient, SealError> {
    let ephemeral = EphemeralSecret::random_from_rng(rng);
    let ephemeral_public = PublicKey::from(&ephemeral).to_bytes();
    let shared = ephemeral.diffie_hellman(&PublicKey::from(*recipient_public));
    if !shared.was_contributory() {
        return Err(SealError::WeakRecipientKey);
    }
    let key = recipient_key(shared.as_bytes(), &ephemeral_public, recipient_public);
    let nonce = random_nonce(rng);
    Ok(SealedForRecipient {
        version: SEAL_VERSION,
        ephemeral_public,
        nonce,
        ciphertext: aead_seal(&key, &nonce, aad, plaintext)?,
    })
}

/// Opens a box sealed with [`seal_to_recipient`] using the recipient's secret.
pub fn open_as_recipient(
    secret: &StaticSecret,
    aad: &[u8],
    sealed: &SealedForRecipient,
) -> Result<Vec<u8>, SealError> {
    if sealed.version != SEAL_VERSION {
        return Err(SealError::UnknownVersion(sealed.version));
    }
    let shared = secret.diffie_hellman(&PublicKey::from(sealed.ephemeral_public));
    if !shared.was_contributory() {
        return Err(SealError::Unauthentic);
    }
    let own_public = PublicKey::from(secret).to_bytes();
    let key = recipient_key(shared.as_bytes(), &sealed.ephemeral_public, &own_public);
    aead_open(&key, &sealed.nonce, aad, &sealed.ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn sequence() -> Sequence {
        Sequence {
            snapshot: SnapshotId([1; 32]),
            manifest: DataId([2; 32]),
            manifest_chunks: vec![DataId([1; 32])],
            stripes: (0..2u8)
                .map(|s| SequenceStripe {
                    data_id: DataId([s; 32]),
                    packets: (0..3u8)
                        .map(|i| SequenceEntry {
                            packet_id: PacketId::of(&[s, i]),
                            size: 1000 + i as u64,
                            targets: vec![NodeId([i; 32])],
                            generation: 0,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    #[test]
    fn at_rest_round_trips_and_rejects_tamper_wrong_key_and_wrong_context() {
        let mut rng = StdRng::seed_from_u64(1);
        let key = GroupKey::generate(&mut rng);
        let bytes = sequence().to_bytes().unwrap();
        let sealed = seal_at_rest(&key, b"snapshot-1", &bytes, &mut rng).unwrap();
        let opened = open_at_rest(&key, b"snapshot-1", &sealed).unwrap();
        assert_eq!(Sequence::from_bytes(&opened).unwrap(), sequence());

        let other = GroupKey::generate(&mut rng);
        assert_eq!(
            open_at_rest(&other, b"snapshot-1", &sealed),
            Err(SealError::Unauthentic)
        );
        assert_eq!(
            open_at_rest(&key, b"snapshot-2", &sealed),
            Err(SealError::Unauthentic)
        );
        let mut tampered = sealed.clone();
        tampered.ciphertext[3] ^= 1;
        assert_eq!(
            open_at_rest(&key, b"snapshot-1", &tampered),
            Err(SealError::Unauthentic)
        );
        let mut future = sealed;
        future.version = 9;
        assert_eq!(
            open_at_rest(&key, b"snapshot-1", &future),
            Err(SealError::UnknownVersion(9))
        );
    }

    #[test]
    fn recipient_box_opens_only_for_the_recipient() {
        let mut rng = StdRng::seed_from_u64(2);
        let alice = StaticSecret::random_from_rng(&mut rng);
        let bob = StaticSecret::random_from_rng(&mut rng);
        let alice_pub = PublicKey::from(&alice).to_bytes();
        let sealed = seal_to_recipient(&alice_pub, b"snap", b"the sequence", &mut rng).unwrap();
        assert_eq!(
            open_as_recipient(&alice, b"snap", &sealed).unwrap(),
            b"the sequence"
        );
        assert_eq!(
            open_as_recipient(&bob, b"snap", &sealed),
            Err(SealError::Unauthentic)
        );
        assert_eq!(
            open_as_recipient(&alice, b"other", &sealed),
            Err(SealError::Unauthentic)
        );
        let mut tampered = sealed.clone();
        tampered.ephemeral_public[0] ^= 1;
        assert!(open_as_recipient(&alice, b"snap", &tampered).is_err());
        // Two seals of the same message differ (fresh ephemeral key and nonce).
        let again = seal_to_recipient(&alice_pub, b"snap", b"the sequence", &mut rng).unwrap();
        assert_ne!(again.ciphertext, sealed.ciphertext);
        // A low-order recipient key is refused.
        assert_eq!(
            seal_to_recipient(&[0u8; 32], b"snap", b"x", &mut rng),
            Err(SealError::WeakRecipientKey)
        );
    }

    #[test]
    fn garbage_never_decodes_as_a_sequence() {
        for bytes in [&b""[..], b"\xff\xff", b"\xa1\x61x\x01", &[0x9f; 40]] {
            assert!(matches!(
                Sequence::from_bytes(bytes),
                Err(SealError::BadSequence(_))
            ));
        }
    }
}
