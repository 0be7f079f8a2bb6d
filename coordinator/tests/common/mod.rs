//! Test helpers shared by the coordinator's integration tests: targets'
//! signed store receipts for a plan's uploads (test targets' keys are
//! `SigningKey::from_bytes(&[n; 32])`).

#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use strew_coordinator::{NodeId, PlannedChunk, StoreReceipt, StoredPacket};

/// The signing key of a test node: seeds `[n; 32]` are tried in turn.
pub fn key_of(id: &NodeId) -> SigningKey {
    (0..=255u8)
        .map(|n| SigningKey::from_bytes(&[n; 32]))
        .find(|k| &NodeId(k.verifying_key().to_bytes()) == id)
        .expect("a test node's key is [n; 32]")
}

/// The receipt `p.target` signs for `source` after storing `p`.
pub fn receipt(p: &StoredPacket, source: NodeId) -> StoreReceipt {
    StoreReceipt::unsigned(p.target, source, p.packet_id, p.size, p.generation, 0)
        .sign_with(&key_of(&p.target))
        .expect("signs")
}

/// Every upload's receipt, as honest targets return them.
pub fn receipts(uploads: &[PlannedChunk], source: NodeId) -> Vec<StoreReceipt> {
    uploads
        .iter()
        .flat_map(|c| &c.packets)
        .map(|p| receipt(p, source))
        .collect()
}
