//! Conversion between strew's [`NodeId`] and libp2p's [`PeerId`] / public keys.
//!
//! Owns only the mapping (through the PeerId multihash bytes, so the texts are
//! identical). It must not hold any state or know about protocols.

use libp2p::PeerId;
use libp2p::identity::{PublicKey, ed25519};
use strew_coordinator::NodeId;

/// The PeerId of a node (`None` only for byte strings no Ed25519 key can have,
/// which the 38-byte identity multihash never is).
pub fn peer_id_of(node: &NodeId) -> Option<PeerId> {
    PeerId::from_bytes(&node.to_peer_id_bytes()).ok()
}

/// The NodeId of a peer, if its key is Ed25519 (every strew node's is).
pub fn node_id_of(peer: &PeerId) -> Option<NodeId> {
    NodeId::from_peer_id_bytes(&peer.to_bytes())
}

/// The NodeId of a libp2p public key, if it is Ed25519.
pub fn node_id_of_key(key: &PublicKey) -> Option<NodeId> {
    key.clone()
        .try_into_ed25519()
        .ok()
        .map(|k| NodeId(k.to_bytes()))
}

/// The Ed25519 verifying key a NodeId stands for (`None` if the bytes are not a curve point).
pub fn public_key_of(node: &NodeId) -> Option<PublicKey> {
    ed25519::PublicKey::try_from_bytes(node.as_bytes())
        .ok()
        .map(PublicKey::from)
}

/// The IP address a multiaddr starts with, unless it goes through a relay
/// (`/p2p-circuit`: the address is the relay's, not the peer's).
pub fn ip_of(addr: &libp2p::Multiaddr) -> Option<std::net::IpAddr> {
    use libp2p::multiaddr::Protocol;
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(std::net::IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(std::net::IpAddr::V6(ip)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::identity::Keypair;

    #[test]
    fn node_id_text_equals_peer_id_text() {
        for _ in 0..16 {
            let key = Keypair::generate_ed25519();
            let peer = key.public().to_peer_id();
            let node = node_id_of(&peer).expect("ed25519 peer id");
            assert_eq!(node.to_string(), peer.to_string());
            assert_eq!(peer_id_of(&node), Some(peer));
            assert_eq!(node_id_of_key(&key.public()), Some(node));
            assert_eq!(public_key_of(&node), Some(key.public()));
        }
    }

    #[test]
    fn non_ed25519_peer_ids_have_no_node_id() {
        assert_eq!(node_id_of(&PeerId::random()), None);
    }
}
