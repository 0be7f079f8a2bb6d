//! The README's first Quick-start command, `strew demo`, run as a user would
//! (8 real nodes on 127.0.0.1, this repository's docs as the folder): it
//! must verify the restore, kill exactly two targets that held packets, and
//! leave no process behind.

use std::fs;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use strew_tests::{strew_bin, wait_exit, workspace_root};

#[test]
fn demo_backs_up_kills_two_targets_restores_and_verifies() -> Result<()> {
    let work = tempfile::tempdir()?;
    let out_path = work.path().join("demo.json");
    let docs = workspace_root().join("docs");
    let mut child = Command::new(strew_bin()?)
        .args(["demo", "--json", "--path"])
        .arg(&docs)
        .arg("--dir")
        .arg(work.path().join("grid"))
        .env_remove("STREW_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::from(fs::File::create(&out_path)?))
        .stderr(Stdio::from(fs::File::create(work.path().join("demo.log"))?))
        .spawn()?;
    let Some(status) = wait_exit(&mut child, Duration::from_secs(300))? else {
        bail!("strew demo did not finish within 5 minutes");
    };
    let log = fs::read_to_string(work.path().join("demo.log")).unwrap_or_default();
    ensure!(status.success(), "strew demo failed: {log}");
    let report: Value = serde_json::from_slice(&fs::read(&out_path)?).context("demo JSON")?;
    ensure!(report["verified"] == true, "{report}");
    let nodes = report["nodes"].as_array().context("nodes")?;
    ensure!(nodes.len() == 8);
    let killed: Vec<&Value> = nodes.iter().filter(|n| n["killed"] == true).collect();
    ensure!(killed.len() == 2, "{report}");
    ensure!(killed.iter().all(|n| n["packets"].as_u64() > Some(0)));
    ensure!(report["failed_fetches"].as_u64() > Some(0), "{report}");
    let map = fs::read_to_string(report["map"].as_str().context("map path")?)?;
    ensure!(
        map.starts_with("<?xml") || map.starts_with("<svg"),
        "an SVG map"
    );
    // Every node of the demo was stopped: their data dirs hold no live control endpoint.
    for n in 0..8 {
        let control = work.path().join(format!("grid/node-{n}/control.json"));
        if let Ok(text) = fs::read_to_string(&control) {
            let port = serde_json::from_str::<Value>(&text)?["port"]
                .as_u64()
                .unwrap_or(0);
            ensure!(
                std::net::TcpStream::connect(("127.0.0.1", port as u16)).is_err(),
                "node {n} still answers after the demo"
            );
        }
    }
    Ok(())
}
