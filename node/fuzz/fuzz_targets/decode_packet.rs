//! Any bytes given to the packet, blob and manifest decoders yield a value
//! or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_node::pipeline::manifest::Manifest;
use strew_node::pipeline::packet::{BlobHeader, decode_packet};

fuzz_target!(|data: &[u8]| {
    let _ = decode_packet(data);
    let _ = BlobHeader::decode(data);
    let _ = Manifest::decode(data);
});
