//! Any bytes given to the announcement decoder and the gossip gate yield a
//! verdict, never a panic.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strew_coordinator::NodeId;
use strew_overlay::announcement::{Announcement, FreshnessLimits};
use strew_overlay::gossip::AnnouncementGate;

fuzz_target!(|data: &[u8]| {
    let now = 1_800_000_000_000;
    let _ = Announcement::verify(data, now, &FreshnessLimits::default());
    let mut gate = AnnouncementGate::new(FreshnessLimits::default(), 2, Duration::from_secs(1));
    let _ = gate.judge(Some(NodeId([1; 32])), data, now);
    let _ = gate.judge(None, data, now);
});
