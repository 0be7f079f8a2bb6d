//! A stripe whose packets are arbitrary bytes (a lying target that also
//! forged matching PacketIds) decodes to a chunk or a typed error, never a
//! panic: geometry fields, lengths and shard counts are all attacker-chosen.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use strew_coordinator::{PacketId, Redundancy};
use strew_node::pipeline::codec::{Codec, PacketSource, StripeRecord};
use strew_node::pipeline::secret::{ChunkKey, ConvergenceSecret};

struct Map(BTreeMap<PacketId, Vec<u8>>);
impl PacketSource for Map {
    fn fetch(&self, id: &PacketId) -> Option<Vec<u8>> {
        self.0.get(id).cloned()
    }
}

fuzz_target!(|data: &[u8]| {
    // Split the input into up to 6 packets at 0xff 0x00 separators.
    let mut packets: Vec<Vec<u8>> = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if i + 1 < data.len() && data[i] == 0xff && data[i + 1] == 0x00 {
            packets.push(std::mem::take(&mut cur));
            i += 2;
        } else {
            cur.push(data[i]);
            i += 1;
        }
    }
    packets.push(cur);
    packets.truncate(6);
    let ids: Vec<PacketId> = packets.iter().map(|p| PacketId::of(p)).collect();
    let source = Map(ids.iter().copied().zip(packets).collect());
    let codec = Codec {
        secret: ConvergenceSecret::from_bytes([1; 32]),
        zstd_level: 1,
        redundancy: Redundancy::Erasure { k: 4, m: 2 },
    };
    let key = ChunkKey([2; 32]);
    let record = StripeRecord {
        data_id: key.storage_index(),
        plain_len: 0,
        packets: ids,
    };
    let _ = codec.decode(&record, &key, &source);
});
