//! The signed receipt a target returns after storing a packet.
//!
//! Owns the receipt's fields, its signature (the target's Ed25519 identity
//! over `DOMAIN || CBOR(body)`) and verification. It must not decide whether
//! to store anything.

use libp2p::identity::Keypair;
use serde::{Deserialize, Serialize};
use strew_coordinator::{NodeId, PacketId};

use crate::cbor;
use crate::peer;

const DOMAIN: &[u8] = b"strew/receipt/v1";

/// Proof that `target` stored `packet_id` (`size` bytes) at `stored_at` (unix ms).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub target: NodeId,
    pub packet_id: PacketId,
    pub size: u64,
    pub stored_at: u64,
    #[serde(with = "cbor::bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct Body<'a> {
    target: &'a NodeId,
    packet_id: &'a PacketId,
    size: u64,
    stored_at: u64,
}

impl Receipt {
    /// The signed message; `None` if it does not encode (never signed or
    /// verified as an empty body).
    fn message(
        target: &NodeId,
        packet_id: &PacketId,
        size: u64,
        stored_at: u64,
    ) -> Option<Vec<u8>> {
        let mut msg = DOMAIN.to_vec();
        msg.extend(
            cbor::encode(&Body {
                target,
                packet_id,
                size,
                stored_at,
            })
            .ok()?,
        );
        Some(msg)
    }

    /// Signs a receipt with the target's identity; `None` if the key cannot sign
    /// or is not the Ed25519 key of a strew node.
    pub fn sign(key: &Keypair, packet_id: PacketId, size: u64, stored_at: u64) -> Option<Self> {
        let target = peer::node_id_of_key(&key.public())?;
        let signature = key
            .sign(&Self::message(&target, &packet_id, size, stored_at)?)
            .ok()?;
        Some(Receipt {
            target,
            packet_id,
            size,
            stored_at,
            signature,
        })
    }

    /// True when the signature is the target's over these fields.
    pub fn verify(&self) -> bool {
        let Some(key) = peer::public_key_of(&self.target) else {
            return false;
        };
        let Some(message) = Self::message(&self.target, &self.packet_id, self.size, self.stored_at)
        else {
            return false;
        };
        key.verify(&message, &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_verifies_and_detects_tampering() {
        let key = Keypair::generate_ed25519();
        let id = PacketId::of(b"packet");
        let receipt = Receipt::sign(&key, id, 6, 1000).unwrap();
        assert!(receipt.verify());
        let mut tampered = receipt.clone();
        tampered.size = 7;
        assert!(!tampered.verify());
        let mut other_target = receipt;
        other_target.target = peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap();
        assert!(!other_target.verify());
    }
}
