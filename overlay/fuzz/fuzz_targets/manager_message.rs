//! Any bytes arriving on a sequence-manager stream (`/strew/manager/1`)
//! decode to a request or response, or to a typed error — never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_overlay::manager::{decode_request, decode_response};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request(data);
    let _ = decode_response(data);
});
