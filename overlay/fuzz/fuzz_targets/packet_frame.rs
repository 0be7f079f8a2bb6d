//! Any bytes arriving on a packet-protocol stream decode to a request or
//! response, or to an I/O error — never a panic, never an allocation beyond
//! the declared limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_overlay::packet::codec::{decode_request_frame, decode_response_frame};
use strew_overlay::packet::wire::{decode_request_header, decode_response_header};

fuzz_target!(|data: &[u8]| {
    let _ = decode_request_frame(data);
    let _ = decode_response_frame(data);
    let _ = decode_request_header(data);
    let _ = decode_response_header(data);
});
