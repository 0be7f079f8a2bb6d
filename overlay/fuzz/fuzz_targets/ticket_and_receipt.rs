//! Any bytes presented as a storage ticket or a receipt are refused or
//! accepted with a typed result, never a panic.
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use strew_coordinator::{NodeId, PacketId, TicketKind};
use strew_overlay::cbor;
use strew_overlay::packet::{Receipt, ticket};

fuzz_target!(|data: &[u8]| {
    let me = NodeId([2; 32]);
    let managers = BTreeSet::from([NodeId([1; 32])]);
    let _ = ticket::check(
        data,
        TicketKind::Store,
        &managers,
        &me,
        0,
        &PacketId([3; 32]),
    );
    if let Ok(r) = cbor::decode::<Receipt>(data, 4096) {
        let _ = r.verify();
    }
});
