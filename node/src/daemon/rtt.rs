//! Reporting measured round-trip times to the sequence manager (location
//! evidence, SPEC R13): every [`REPORT_EVERY`] the ping RTTs the overlay
//! collected since the last report go to the manager in batches of at most
//! [`MAX_RTT_SAMPLES`]. Best effort: a failed report is dropped (the next
//! pings measure again). Owns only the schedule; judging is the manager's.

use std::time::Duration;

use strew_coordinator::LocationCheck;
use strew_overlay::manager::wire::MAX_RTT_SAMPLES;
use strew_overlay::manager::{RttReport, RttSample};
use tracing::debug;

use super::DaemonContext;
use crate::grid::overlay::OverlayManager;

/// How often samples are reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// Batches sent per round (the rest waits: bounded work per round).
const BATCHES_PER_ROUND: usize = 4;
/// How long one report waits for a manager.
const PATIENCE: Duration = Duration::from_secs(3);

/// Runs until aborted.
pub async fn run(ctx: DaemonContext) {
    if ctx.settings.location_check == LocationCheck::Off {
        return;
    }
    let manager = OverlayManager::new(ctx.overlay.clone()).with_patience(PATIENCE);
    let mut every = tokio::time::interval(REPORT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        for _ in 0..BATCHES_PER_ROUND {
            let samples = ctx.overlay.take_rtt_samples(MAX_RTT_SAMPLES);
            if samples.is_empty() {
                break;
            }
            let report = RttReport {
                samples: samples
                    .into_iter()
                    .map(|(peer, rtt_micros)| RttSample { peer, rtt_micros })
                    .collect(),
            };
            if let Err(err) = manager.report_rtt(report).await {
                debug!(%err, "RTT report not delivered; the next pings measure again");
                break;
            }
        }
    }
}
