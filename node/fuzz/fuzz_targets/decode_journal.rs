//! A backup journal of arbitrary bytes (a torn write, a damaged disk)
//! replays to what it says up to the first bad record, never a panic:
//! lengths, records and their order are all chosen by the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_node::grid::journal::Journal;

fuzz_target!(|data: &[u8]| {
    if let Ok(resume) = Journal::decode(data) {
        // What was replayed is consistent with itself.
        if resume.pending_id.is_none() {
            assert!(resume.done.is_empty());
            assert!(resume.in_flight.is_none());
        }
    }
});
