//! The client side of recovery without coordinators (issue 18):
//! `strew snapshots --from-grid` and `strew recover` (what was found and how
//! to restore it). Owns their printing only; the search is the daemon's
//! (`recover_commands`).

use std::io::Write;
use std::path::Path;

use clap::Args;
use serde_json::{Value, json};

use super::source_commands::{SnapshotsCmd, format_time, short_call};
use strew_coordinator::format_size;

#[derive(Args, Debug, Clone)]
pub struct RecoverCmd {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

async fn found(data_dir: &Path, set: Option<&str>) -> anyhow::Result<Vec<Value>> {
    let v = short_call(data_dir, "snapshots_from_grid", json!({})).await?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .filter(|s| set.is_none_or(|n| s["set"].as_str() == Some(n)))
        .cloned()
        .collect())
}

fn num(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// `strew snapshots --from-grid`.
pub async fn snapshots_from_grid(data_dir: &Path, cmd: &SnapshotsCmd) -> anyhow::Result<()> {
    let list = found(data_dir, cmd.name.as_deref()).await?;
    if cmd.json {
        writeln!(std::io::stdout().lock(), "{}", Value::Array(list))?;
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<64}  {:<16} {:>24}  size  roots",
        "snapshot", "name", "time"
    )?;
    for s in &list {
        writeln!(
            out,
            "{:<64}  {:<16} {:>24}  {}  {}",
            s["snapshot"].as_str().unwrap_or("-"),
            s["set"].as_str().unwrap_or("-"),
            format_time(num(s, "time_ms")),
            format_size(num(s, "bytes")),
            s["roots_at"].as_array().map_or(0, Vec::len),
        )?;
    }
    Ok(())
}

/// `strew recover`: the snapshots this key can still restore without a coordinator.
pub async fn recover(data_dir: &Path, cmd: &RecoverCmd) -> anyhow::Result<()> {
    let list = found(data_dir, None).await?;
    if cmd.json {
        writeln!(std::io::stdout().lock(), "{}", Value::Array(list))?;
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    if list.is_empty() {
        writeln!(
            out,
            "no snapshot root found: is this the imported key (`strew key import`) and is the daemon connected to the grid?"
        )?;
        return Ok(());
    }
    writeln!(out, "{} snapshots found from their roots:", list.len())?;
    for s in &list {
        writeln!(
            out,
            "  {}  {}  {}  {}",
            s["snapshot"].as_str().unwrap_or("-"),
            s["set"].as_str().unwrap_or("-"),
            format_time(num(s, "time_ms")),
            format_size(num(s, "bytes")),
        )?;
    }
    writeln!(
        out,
        "restore one with: strew restore SNAPSHOT DEST --from-grid"
    )?;
    Ok(())
}
