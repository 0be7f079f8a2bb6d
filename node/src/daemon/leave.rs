//! `strew leave [--cancel] [--json]`: graceful exit from the grid.
//!
//! The daemon side asks the sequence manager to mark this node leaving
//! (replicated `SetExiting`): it gets no new packets and the leader's
//! repairer rebuilds everything it holds on other targets under each
//! stripe's own rules, then deletes the copies here. Asked again, the
//! manager reports how many packets are still to move. The client side
//! shows that progress until nothing is left and says the node may stop;
//! with `--json` it prints the status once. A node that stops early is
//! simply repaired like any other lost target.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use clap::Args;
use serde_json::{Value, json};
use strew_coordinator::{LeaveStatus, format_size};

use super::commands::{num, print_json};
use super::{CommandError, DaemonContext};
use crate::control;
use crate::grid::overlay::OverlayManager;

/// How long one status call may take (the manager may be re-elected).
const LEAVE_CALL: Duration = Duration::from_secs(90);
/// How often the client asks for progress.
const POLL: Duration = Duration::from_secs(2);
/// How long without progress before the client says what may be wrong.
const STALLED: Duration = Duration::from_secs(10 * 60);

#[derive(Args, Debug, Clone)]
pub struct LeaveCmd {
    /// Stay in the grid after all: take new packets again.
    #[arg(long)]
    pub cancel: bool,
    /// Print the status once as JSON (`{leaving, packets_remaining,
    /// bytes_remaining, done}`) instead of following the progress.
    #[arg(long)]
    pub json: bool,
}

/// The daemon's side: one `Leave` call to the manager.
pub async fn leave_here(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
    let cancel = args["cancel"].as_bool().unwrap_or(false);
    let status = OverlayManager::new(ctx.overlay.clone())
        .leave(cancel)
        .await?;
    Ok(status_json(&status))
}

fn status_json(status: &LeaveStatus) -> Value {
    json!({
        "leaving": status.exiting_since.is_some(),
        "since": status.exiting_since,
        "packets_remaining": status.packets_remaining,
        "bytes_remaining": status.bytes_remaining,
        "done": status.done(),
    })
}

/// `strew leave`.
pub async fn leave(data_dir: &Path, cmd: &LeaveCmd) -> anyhow::Result<()> {
    let args = json!({"cancel": cmd.cancel});
    let mut v = control::call(data_dir, "leave", args.clone(), LEAVE_CALL).await?;
    if cmd.json {
        return print_json(&v);
    }
    let mut out = std::io::stdout();
    if cmd.cancel {
        writeln!(
            out,
            "this node stays in the grid and takes new packets again"
        )?;
        return Ok(());
    }
    let mut last = u64::MAX;
    let mut progressed = std::time::Instant::now();
    let mut warned = false;
    while v["done"] != true {
        let remaining = num(&v, "packets_remaining");
        if remaining != last {
            writeln!(
                out,
                "leaving: {remaining} packet(s) ({}) still to be rebuilt on other targets…",
                format_size(num(&v, "bytes_remaining"))
            )?;
            last = remaining;
            progressed = std::time::Instant::now();
            warned = false;
        } else if !warned && progressed.elapsed() >= STALLED {
            writeln!(
                out,
                "no packet has moved for {} min: the coordinators may find no other target \
                 that meets these stripes' rules (`strew status` shows repairs pending). \
                 Stopping now loses nothing: the grid rebuilds them after its repair grace.",
                STALLED.as_secs() / 60
            )?;
            warned = true;
        }
        tokio::time::sleep(POLL).await;
        v = control::call(data_dir, "leave", args.clone(), LEAVE_CALL).await?;
    }
    writeln!(
        out,
        "every packet this node held is now on other targets: it may stop \
         (e.g. `systemctl stop strew`); the packets it kept for others (`packets/`) are gone \
         from the grid's records (keep your key: `strew key export`)"
    )?;
    Ok(())
}
