//! Any bytes given to the raft wire decoders (`/strew/raft/4`) yield a
//! message or a typed error, and a decoded message re-encodes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_node::consensus::wire::{decode_reply, decode_request, encode_reply, encode_request};

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let _ = encode_request(&request);
    }
    if let Ok(reply) = decode_reply(data) {
        let _ = encode_reply(&reply);
    }
});
