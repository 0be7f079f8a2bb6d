//! Any bytes given to the grid-sync decoders yield a message or a typed error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_overlay::sync::{decode_request, decode_response};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    let _ = decode_response(data);
});
