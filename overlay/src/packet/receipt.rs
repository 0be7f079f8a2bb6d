//! The signed receipt a target returns after storing a packet.
//!
//! The receipt's fields, the bytes signed and their verification are
//! `strew_coordinator::StoreReceipt`'s (the manager checks receipts again at
//! commit, with the same code); this module only signs one with the node's
//! libp2p identity (the same Ed25519 key as its `NodeId`). It must not
//! decide whether to store anything.

use libp2p::identity::Keypair;
use strew_coordinator::{NodeId, PacketId};

use crate::peer;

pub use strew_coordinator::StoreReceipt as Receipt;

/// Signs a receipt for `source` with the target's identity; `None` if the key
/// cannot sign or is not the Ed25519 key of a strew node.
pub fn sign(
    key: &Keypair,
    source: NodeId,
    packet_id: PacketId,
    size: u64,
    generation: u64,
    stored_at: u64,
) -> Option<Receipt> {
    let target = peer::node_id_of_key(&key.public())?;
    let mut receipt = Receipt::unsigned(target, source, packet_id, size, generation, stored_at);
    receipt.signature = key.sign(&receipt.signed_bytes().ok()?).ok()?;
    Some(receipt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_signed_with_the_libp2p_identity_verifies_and_detects_tampering() {
        let key = Keypair::generate_ed25519();
        let source = peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap();
        let id = PacketId::of(b"packet");
        let receipt = sign(&key, source, id, 6, 9, 1000).unwrap();
        assert!(receipt.verify().is_ok());
        let mut tampered = receipt.clone();
        tampered.size = 7;
        assert!(tampered.verify().is_err());
        let mut other_generation = receipt.clone();
        other_generation.generation = 10;
        assert!(other_generation.verify().is_err());
        let mut other_target = receipt;
        other_target.target = peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap();
        assert!(other_target.verify().is_err());
    }
}
