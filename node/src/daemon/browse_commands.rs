//! The client side of `strew ls`, `strew find`, `strew diff` and `strew
//! forget --keep-*`: parse flags, ask the daemon, print JSON or a table.
//! Must not reach into daemon state directly.

use std::io::Write;
use std::path::Path;

use clap::Args;
use serde_json::{Value, json};
use strew_coordinator::format_size;

use super::commands::{num, print_json};
use super::source_commands::{ForgetCmd, format_time, short_call};
use crate::grid::KeepPolicy;

#[derive(Args, Debug, Clone)]
pub struct LsCmd {
    /// Snapshot id (or a unique prefix of at least 4 hex digits).
    pub snapshot: String,
    /// Only this path inside the snapshot and what it holds (e.g. `home/docs`).
    pub path: Option<String>,
    /// Print machine-readable JSON: a list of `{path, type, mode, size, mtime}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct FindCmd {
    /// A path inside the snapshots or a gitignore-style pattern (`*.pdf`, `home/**/notes`).
    pub pattern: String,
    /// Only the snapshots of this backup set.
    #[arg(long)]
    pub name: Option<String>,
    /// Print machine-readable JSON: a list of `{snapshot, path, ...}`.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct DiffCmd {
    /// The older snapshot (id or unique prefix).
    pub snapshot_a: String,
    /// The newer snapshot (id or unique prefix).
    pub snapshot_b: String,
    /// Print machine-readable JSON: `{added, removed, changed}`.
    #[arg(long)]
    pub json: bool,
}

/// `rwxr-xr-x` for permission bits, with the entry's type letter first.
fn mode_text(kind: &str, mode: u64) -> String {
    let mut out = String::from(match kind {
        "dir" => "d",
        "symlink" => "l",
        _ => "-",
    });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        out.push(if bits & 4 != 0 { 'r' } else { '-' });
        out.push(if bits & 2 != 0 { 'w' } else { '-' });
        out.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    out
}

fn entry_line(e: &Value) -> String {
    let kind = e["type"].as_str().unwrap_or("?");
    let link = e["target"]
        .as_str()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    format!(
        "{} {:>10} {}  {}{}",
        mode_text(kind, num(e, "mode")),
        format_size(num(e, "size")),
        format_time(e["mtime"].as_i64().unwrap_or(0).max(0) as u64 * 1000),
        e["path"].as_str().unwrap_or("?"),
        link
    )
}

/// `strew ls SNAPSHOT [PATH]`.
pub async fn ls(data_dir: &Path, cmd: &LsCmd) -> anyhow::Result<()> {
    let v = short_call(
        data_dir,
        "ls",
        json!({"snapshot": cmd.snapshot, "path": cmd.path}),
    )
    .await?;
    if cmd.json {
        return print_json(&v["entries"]);
    }
    let mut out = std::io::stdout().lock();
    for e in v["entries"].as_array().into_iter().flatten() {
        writeln!(out, "{}", entry_line(e))?;
    }
    Ok(())
}

/// `strew find PATTERN`.
pub async fn find(data_dir: &Path, cmd: &FindCmd) -> anyhow::Result<()> {
    let v = short_call(
        data_dir,
        "find",
        json!({"pattern": cmd.pattern, "name": cmd.name}),
    )
    .await?;
    if cmd.json {
        return print_json(&v["matches"]);
    }
    let mut out = std::io::stdout().lock();
    for m in v["matches"].as_array().into_iter().flatten() {
        let snapshot = m["snapshot"].as_str().unwrap_or("-");
        writeln!(
            out,
            "{}  {:<12} {}",
            &snapshot[..snapshot.len().min(12)],
            m["name"].as_str().unwrap_or("-"),
            entry_line(m)
        )?;
    }
    Ok(())
}

/// `strew diff A B`.
pub async fn diff(data_dir: &Path, cmd: &DiffCmd) -> anyhow::Result<()> {
    let v = short_call(
        data_dir,
        "diff",
        json!({"snapshot_a": cmd.snapshot_a, "snapshot_b": cmd.snapshot_b}),
    )
    .await?;
    if cmd.json {
        return print_json(&json!({
            "snapshot_a": v["snapshot_a"],
            "snapshot_b": v["snapshot_b"],
            "added": v["added"],
            "removed": v["removed"],
            "changed": v["changed"],
        }));
    }
    let mut out = std::io::stdout().lock();
    for (mark, field) in [("+", "added"), ("-", "removed"), ("M", "changed")] {
        for p in v[field].as_array().into_iter().flatten() {
            writeln!(out, "{mark}    {}", p.as_str().unwrap_or("?"))?;
        }
    }
    let count = |f: &str| v[f].as_array().map_or(0, Vec::len);
    writeln!(
        out,
        "{} added, {} removed, {} changed",
        count("added"),
        count("removed"),
        count("changed")
    )?;
    Ok(())
}

/// `strew forget --keep-* [--name SET] [--dry-run]`.
pub async fn forget_by_policy(
    data_dir: &Path,
    cmd: &ForgetCmd,
    policy: &KeepPolicy,
) -> anyhow::Result<()> {
    let v = short_call(
        data_dir,
        "forget",
        json!({"keep": policy, "name": cmd.name, "dry_run": cmd.dry_run}),
    )
    .await?;
    if cmd.json {
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    for (verb, field) in [("keep  ", "keep"), ("forget", "remove")] {
        for d in v[field].as_array().into_iter().flatten() {
            let reasons: Vec<&str> = d["reasons"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            writeln!(
                out,
                "{verb} {}  {:<12} {}  {}",
                d["snapshot"].as_str().unwrap_or("-"),
                d["name"].as_str().unwrap_or("-"),
                format_time(num(d, "time")),
                reasons.join(",")
            )?;
        }
    }
    if cmd.dry_run {
        writeln!(out, "dry run: nothing was forgotten")?;
    } else {
        writeln!(
            out,
            "forgot {} snapshots; {} packets no snapshot needs were deleted from their targets{}",
            v["remove"].as_array().map_or(0, Vec::len),
            num(&v, "deleted"),
            match num(&v, "undeleted") {
                0 => String::new(),
                n => format!(" ({n} could not be reached now)"),
            }
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_text("dir", 0o755), "drwxr-xr-x");
        assert_eq!(mode_text("file", 0o640), "-rw-r-----");
        assert_eq!(mode_text("symlink", 0o777), "lrwxrwxrwx");
    }
}
