//! The cost of entering an open grid's replicated state: a proof-of-work
//! stamp bound to the node id (SPEC R10).
//!
//! A stamp is a nonce such that BLAKE3(`DOMAIN` ‖ node id ‖ nonce as 8
//! little-endian bytes) starts with at least `bits` zero bits. A node finds
//! one once (about 2^bits hashes) and announces it; checking one is one
//! hash. Owns the stamp's definition, its check and its search; it must not
//! decide who enters (the join gate in `joins` does) nor do any I/O.

use crate::ids::NodeId;

/// Zero bits a stamp needs by default: about a million hashes (a second or
/// two on one core, once per identity).
pub const DEFAULT_WORK_BITS: u32 = 20;
/// More bits than this is refused as a setting (no honest node could
/// afford it).
pub const MAX_WORK_BITS: u32 = 40;
/// Domain separation of the stamp's hash.
const DOMAIN: &[u8] = b"strew/join-work/v1";

/// Leading zero bits of the stamp hash of (`node`, `nonce`).
pub fn zero_bits(node: &NodeId, nonce: u64) -> u32 {
    let mut hasher = blake3::Hasher::new();
    hasher.update(DOMAIN);
    hasher.update(&node.0);
    hasher.update(&nonce.to_le_bytes());
    let hash = hasher.finalize();
    let mut bits = 0;
    for byte in hash.as_bytes() {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

/// Whether `nonce` is a stamp of at least `bits` zero bits for `node`.
pub fn check(node: &NodeId, nonce: u64, bits: u32) -> bool {
    zero_bits(node, nonce) >= bits
}

/// Finds the first stamp of at least `bits` zero bits for `node`, trying
/// nonces from `start` on; `None` when `bits` is over [`MAX_WORK_BITS`] or
/// `u64` runs out (neither happens with sane settings).
pub fn find(node: &NodeId, bits: u32, start: u64) -> Option<u64> {
    if bits > MAX_WORK_BITS {
        return None;
    }
    (start..=u64::MAX).find(|nonce| check(node, *nonce, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_stamp_checks_and_binds_to_its_node() {
        let node = NodeId([7; 32]);
        let other = NodeId([8; 32]);
        let nonce = find(&node, 12, 0).unwrap();
        assert!(check(&node, nonce, 12));
        assert!(zero_bits(&node, nonce) >= 12);
        // Someone else's stamp is (almost surely) not this node's: count how
        // many of 64 stamps of `node` also pass for `other`.
        let mut start = 0;
        let mut shared = 0;
        for _ in 0..64 {
            let nonce = find(&node, 12, start).unwrap();
            start = nonce + 1;
            shared += usize::from(check(&other, nonce, 12));
        }
        assert!(shared <= 2, "{shared} of 64 stamps pass for another node");
    }

    #[test]
    fn zero_bits_asks_nothing_and_too_many_bits_are_refused() {
        let node = NodeId([1; 32]);
        assert!(check(&node, 0, 0));
        assert_eq!(find(&node, 0, 5), Some(5));
        assert_eq!(find(&node, MAX_WORK_BITS + 1, 0), None);
    }

    #[test]
    fn an_arbitrary_nonce_rarely_passes() {
        let node = NodeId([3; 32]);
        let passing = (0..4096u64).filter(|n| check(&node, *n, 16)).count();
        // Expected 4096 / 65536 ≈ 0.06.
        assert!(passing <= 2, "{passing} of 4096 nonces passed 16 bits");
    }
}
