//! The client side of `strew init`, `strew status` and `strew peers`: ask the
//! daemon through the control endpoint (or, for `init`, write the data dir)
//! and print JSON or a human summary. Must not reach into daemon state directly.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use serde_json::Value;
use strew_coordinator::format_size;

use crate::config::{self, InitArgs};
use crate::control;
use crate::identity;

/// `--json` for listing commands.
#[derive(Args, Debug, Clone, Default)]
pub struct JsonFlag {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

/// `strew init`: creates the identity (if absent) and writes the config.
pub fn init(data_dir: &Path, args: &InitArgs) -> anyhow::Result<()> {
    let (key, created) = identity::load_or_create(data_dir)?;
    if let Some(grid) = args.grid {
        crate::trust::pin(data_dir, grid, None)?;
    }
    let invite = match &args.join {
        Some(token) => Some(crate::trust::join(data_dir, token)?),
        None => None,
    };
    let mut file = config::apply_init(config::read(data_dir)?, args);
    if let Some(invite) = &invite
        && file.bootstrap.as_ref().is_none_or(Vec::is_empty)
        && !invite.bootstrap.is_empty()
    {
        file.bootstrap = Some(invite.bootstrap.clone());
    }
    // The subscription's bandwidth caps what the node moves (its packet
    // bodies, both ways) and what it advertises to sources, unless the
    // node is configured lower.
    if let Some(invite) = &invite
        && invite.subscription.bandwidth > 0
    {
        let own = file
            .bandwidth
            .as_deref()
            .and_then(|t| strew_coordinator::parse_size(t).ok())
            .filter(|b| *b > 0);
        let cap = own.map_or(invite.subscription.bandwidth, |b| {
            b.min(invite.subscription.bandwidth)
        });
        file.bandwidth = Some(cap.to_string());
    }
    config::write(data_dir, &file)?;
    let node_id = identity::node_id(&key).context("the identity is not an Ed25519 key")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} node {node_id} in {}",
        if created { "initialised" } else { "updated" },
        data_dir.display()
    )?;
    if file.location.is_none() {
        writeln!(
            out,
            "note: no location yet; set one with `strew init --location LAT,LON` before `strew run`"
        )?;
    }
    Ok(())
}

/// Prints a JSON answer for scripts (pretty, one value, newline-terminated).
pub fn print_json(value: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// An unsigned field of a JSON answer, 0 when absent.
pub fn num(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// `strew status [--json]`.
pub async fn status(data_dir: &Path, flag: &JsonFlag) -> anyhow::Result<()> {
    let v = control::call(data_dir, "status", Value::Null, control::QUICK_CALL).await?;
    if flag.json {
        return print_json(&v);
    }
    print_status(&v)
}

/// Prints the node part of a `status` answer for people.
pub fn print_status(v: &Value) -> anyhow::Result<()> {
    let v = v.clone();
    let mut out = std::io::stdout().lock();
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    writeln!(out, "node      {}", s("node_id"))?;
    if let Some(loc) = v.get("location") {
        writeln!(out, "location  {},{}", loc["lat"], loc["lon"])?;
    }
    writeln!(
        out,
        "manager   {}",
        v.get("manager")
            .and_then(Value::as_str)
            .unwrap_or("none known")
    )?;
    writeln!(
        out,
        "grid      {} other nodes known ({} reachable), {} connected",
        num(&v, "peers"),
        num(&v, "online_peers"),
        num(&v, "connected_peers")
    )?;
    let st = &v["storage"];
    writeln!(
        out,
        "storage   {} used of {} donated ({} packets)",
        format_size(num(st, "used_bytes")),
        format_size(num(st, "capacity_bytes")),
        num(st, "packets")
    )?;
    for addr in v["listen_addrs"].as_array().into_iter().flatten() {
        writeln!(out, "listen    {}", addr.as_str().unwrap_or("-"))?;
    }
    if let Some(url) = v["dashboard_url"].as_str() {
        writeln!(out, "dashboard {url}")?;
    }
    if let Some(group) = v.get("group").filter(|g| g.is_object()) {
        print_group(&mut out, group)?;
    }
    Ok(())
}

/// The coordinator-group part of a `status` answer, for people.
fn print_group(out: &mut impl Write, g: &Value) -> anyhow::Result<()> {
    let opt = |k: &str| {
        g.get(k)
            .and_then(Value::as_u64)
            .map_or("-".to_string(), |n| n.to_string())
    };
    writeln!(
        out,
        "group     {} in term {}, leader {}, commit index {}, last log {}",
        g["state"].as_str().unwrap_or("-").to_lowercase(),
        num(g, "term"),
        g["leader_node_id"].as_str().unwrap_or("none known"),
        opt("commit_index"),
        opt("last_log")
    )?;
    for m in g["members"].as_array().into_iter().flatten() {
        let lag = m["lag"]
            .as_u64()
            .map_or(String::new(), |l| format!(", {l} behind"));
        writeln!(
            out,
            "  member  {} {}{}",
            m["node_id"].as_str().unwrap_or("-"),
            m["role"].as_str().unwrap_or("-"),
            lag
        )?;
    }
    Ok(())
}

/// A distance for people: `1234 km`, or `? km` when unknown (never `NaN`).
pub fn km_text(v: &Value) -> String {
    v.as_f64()
        .filter(|d| d.is_finite())
        .map_or("      ? km".to_string(), |d| format!("{d:>7.0} km"))
}

/// `strew peers [--json]`.
pub async fn peers(data_dir: &Path, flag: &JsonFlag) -> anyhow::Result<()> {
    let v = control::call(data_dir, "peers", Value::Null, control::QUICK_CALL).await?;
    if flag.json {
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    let list = v.as_array().cloned().unwrap_or_default();
    writeln!(out, "{} nodes in the grid view", list.len())?;
    writeln!(
        out,
        "{:<54} {:<24} {:>8} {:>9} {:>10} {:>5} {:<5} coord",
        "node", "near", "lat", "lon", "free", "load", "state"
    )?;
    for p in list {
        let coord = |k: &str| {
            p["location"][k]
                .as_f64()
                .map_or("?".to_string(), |x| format!("{x:.3}"))
        };
        writeln!(
            out,
            "{:<54} {:<24} {:>8} {:>9} {:>10} {:>5.2} {:<5} {}",
            p["node_id"].as_str().unwrap_or("-"),
            p["city"].as_str().unwrap_or("-"),
            coord("lat"),
            coord("lon"),
            format_size(num(&p, "free_bytes")),
            p["load"].as_f64().unwrap_or(0.0),
            if p["online"].as_bool() == Some(false) {
                "DOWN"
            } else {
                "up"
            },
            if p["coordinator_eligible"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }
        )?;
    }
    Ok(())
}
