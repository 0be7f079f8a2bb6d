//! `strew check SNAPSHOT [--read-data] [--json]`: the client side. Asks the
//! daemon to have the coordinator group's leader audit every packet of the
//! snapshot (or, with `--read-data`, to fetch and verify every packet),
//! prints the stripes' health and every missing packet, and exits non-zero
//! when any stripe is degraded or lost (so scripts and cron notice).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use serde_json::{Value, json};
use strew_coordinator::format_size;

use super::commands::{num, print_json};
use crate::control;

/// How long a check may take: it reads every packet of the snapshot.
const CHECK_CALL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Args, Debug, Clone)]
pub struct CheckCmd {
    /// Snapshot id (or a unique prefix of at least 4 hex digits).
    pub snapshot: String,
    /// Download every packet and verify it against its id. Without it the
    /// coordinator group's leader audits every packet (a random 1 KiB chunk
    /// and its BLAKE3 proof against the packet id): nothing is downloaded.
    #[arg(long)]
    pub read_data: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `strew check`.
pub async fn check(data_dir: &Path, cmd: &CheckCmd) -> anyhow::Result<()> {
    let args = json!({"snapshot": cmd.snapshot, "read_data": cmd.read_data});
    let v = control::call(data_dir, "check", args, CHECK_CALL).await?;
    if cmd.json {
        print_json(&v)?;
    } else {
        print_report(&v)?;
    }
    let (degraded, lost) = (num(&v, "degraded"), num(&v, "lost"));
    if degraded > 0 || lost > 0 {
        bail!(
            "snapshot {}: {degraded} degraded and {lost} lost stripe(s)",
            cmd.snapshot
        );
    }
    Ok(())
}

fn print_report(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "snapshot {}: {} stripes, {} healthy, {} degraded, {} lost; {} of {} packets verified by {} ({})",
        v["snapshot"].as_str().unwrap_or("-"),
        num(v, "stripes"),
        num(v, "healthy"),
        num(v, "degraded"),
        num(v, "lost"),
        num(v, "verified"),
        num(v, "packets"),
        if v["method"].as_str() == Some("audit") {
            "the leader's audits"
        } else {
            "reading them"
        },
        format_size(num(v, "bytes")),
    )?;
    for m in v["missing"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  stripe {:>5} packet {} on {}: {}",
            num(m, "stripe"),
            m["packet"].as_str().unwrap_or("-"),
            m["target"].as_str().unwrap_or("-"),
            m["reason"].as_str().unwrap_or("-"),
        )?;
    }
    Ok(())
}
