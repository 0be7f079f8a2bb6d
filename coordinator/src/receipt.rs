//! Store receipts: a target's signed statement that it holds a packet.
//!
//! Owns [`StoreReceipt`], the bytes a target signs ([`StoreReceipt::signed_bytes`],
//! domain-separated CBOR of every field but the signature) and its offline
//! verification against the target's `NodeId` (its Ed25519 verifying key).
//! A target signs with its libp2p identity (the overlay does, with the same
//! Ed25519 key), a source checks the receipt when the put returns, and the
//! manager checks it again at commit: only receipted packets are recorded.
//! The receipt names the source the target stored the packet for and the
//! storage generation it recorded, so a receipt cannot be claimed by another
//! source nor stand for a copy stored again later. This module must not
//! sign with anything but the key it is handed, decide placement or do I/O.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, PacketId};

/// Domain separation for receipt signatures.
const RECEIPT_CONTEXT: &[u8] = b"strew/receipt/v2\0";
/// Format version of [`StoreReceipt`].
pub const RECEIPT_VERSION: u8 = 2;

/// Why a receipt is not believed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    #[error("receipt has format version {0}, this node understands version {RECEIPT_VERSION}")]
    UnknownVersion(u8),
    #[error("receipt signer {0} is not a valid Ed25519 key")]
    BadTargetKey(NodeId),
    #[error("receipt signature does not verify")]
    BadSignature,
    #[error("receipt does not encode: {0}")]
    Malformed(String),
}

/// Proof that `target` stored `packet_id` (`size` bytes) for `source` under
/// storage generation `generation`, at `stored_at` (unix ms, the target's clock).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoreReceipt {
    pub version: u8,
    pub target: NodeId,
    pub source: NodeId,
    pub packet_id: PacketId,
    pub size: u64,
    pub generation: u64,
    pub stored_at: u64,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct Body<'a> {
    version: u8,
    target: &'a NodeId,
    source: &'a NodeId,
    packet_id: &'a PacketId,
    size: u64,
    generation: u64,
    stored_at: u64,
}

impl StoreReceipt {
    /// An unsigned receipt; sign [`signed_bytes`](Self::signed_bytes) and
    /// put the signature in `signature`.
    pub fn unsigned(
        target: NodeId,
        source: NodeId,
        packet_id: PacketId,
        size: u64,
        generation: u64,
        stored_at: u64,
    ) -> Self {
        StoreReceipt {
            version: RECEIPT_VERSION,
            target,
            source,
            packet_id,
            size,
            generation,
            stored_at,
            signature: Vec::new(),
        }
    }

    /// Signs with an Ed25519 key held as an ed25519-dalek key (tests, tools);
    /// the receipt's `target` becomes that key's node id.
    pub fn sign_with(mut self, key: &SigningKey) -> Result<Self, ReceiptError> {
        self.target = NodeId(key.verifying_key().to_bytes());
        self.signature = key.sign(&self.signed_bytes()?).to_bytes().to_vec();
        Ok(self)
    }

    /// The bytes the target signs: a context string and the CBOR of every field
    /// except the signature.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, ReceiptError> {
        let body = Body {
            version: self.version,
            target: &self.target,
            source: &self.source,
            packet_id: &self.packet_id,
            size: self.size,
            generation: self.generation,
            stored_at: self.stored_at,
        };
        let mut out = RECEIPT_CONTEXT.to_vec();
        crate::cbor::encode_into(&body, &mut out)
            .map_err(|e| ReceiptError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Checks the signature is `target`'s over every field.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        if self.version != RECEIPT_VERSION {
            return Err(ReceiptError::UnknownVersion(self.version));
        }
        let key = VerifyingKey::from_bytes(self.target.as_bytes())
            .map_err(|_| ReceiptError::BadTargetKey(self.target))?;
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| ReceiptError::BadSignature)?;
        key.verify_strict(&self.signed_bytes()?, &Signature::from_bytes(&signature))
            .map_err(|_| ReceiptError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(target: &SigningKey) -> StoreReceipt {
        StoreReceipt::unsigned(
            NodeId([0; 32]),
            NodeId([7; 32]),
            PacketId::of(b"p"),
            1,
            42,
            1_000,
        )
        .sign_with(target)
        .unwrap()
    }

    #[test]
    fn a_receipt_verifies_against_its_target_and_nothing_in_it_can_change() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let good = receipt(&key);
        assert_eq!(good.verify(), Ok(()));
        let mut other_source = good.clone();
        other_source.source = NodeId([8; 32]);
        let mut other_generation = good.clone();
        other_generation.generation = 43;
        let mut bigger = good.clone();
        bigger.size = 2;
        let mut other_target = good.clone();
        other_target.target = NodeId(SigningKey::from_bytes(&[4; 32]).verifying_key().to_bytes());
        let mut short = good.clone();
        short.signature.truncate(3);
        for bad in [other_source, other_generation, bigger, other_target, short] {
            assert_eq!(bad.verify(), Err(ReceiptError::BadSignature));
        }
        let mut old = good;
        old.version = 1;
        assert_eq!(old.verify(), Err(ReceiptError::UnknownVersion(1)));
    }

    #[test]
    fn a_receipt_is_small_on_the_wire() {
        // A commit carries one per packet: docs/protocol.md counts on ~320 bytes.
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut r = receipt(&key);
        r.size = 5 << 20;
        r.generation = u64::MAX;
        r.stored_at = u64::MAX;
        let len = crate::cbor::encode(&r).unwrap().len();
        assert!(len <= 330, "a receipt is {len} bytes of CBOR");
    }
}
