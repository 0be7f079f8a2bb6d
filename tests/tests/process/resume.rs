//! A backup interrupted by SIGKILL of the source daemon resumes: once about
//! half of its packets are on their targets the source is killed and
//! restarted, the same backup is run again, and it sends less than 60 % of
//! the packets again (the rest it reports as skipped, from its journal);
//! the snapshot restores byte-identical. Uploads are slowed down
//! (`STREW_UPLOAD_DELAY_MS`) so that "halfway" lasts long enough to hit.
//!
//! A source killed for good: its pending plan expires on the manager and the
//! leader's collection deletes what the plan had uploaded from every target,
//! with nobody asking it to.
//!
//! A target killed for good mid-backup: the backup completes, its packets
//! of the part in flight moved to the other targets.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use strew_tests::{Node, NodeOptions, cities, noise, poll};

fn options(location: String) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.announce_interval = "2s".into();
    o.peer_ttl = "30s".into();
    o.storage = "512MiB".into();
    o
}

const BACKUP: [&str; 8] = [
    "--backup-distance",
    "..",
    "--spread",
    "..",
    "--redundancy",
    "replicas:2",
    "--name",
    "tree",
];

/// A founder (with `founder_extra` flags) and three nodes at four cities;
/// node 1, the source, waits a second before every upload (16 in flight).
fn start_grid(founder_extra: &[&str]) -> Result<Vec<Node>> {
    let places = cities(4)?;
    let mut founder = options(places[0].location()).founder();
    founder
        .extra
        .extend(founder_extra.iter().map(|e| e.to_string()));
    let first = Node::start(founder)?;
    let boot = first.bootstrap_addr()?;
    let manager = first.node_id()?;
    let mut nodes = vec![first];
    for (i, city) in places[1..].iter().enumerate() {
        let mut o = options(city.location()).bootstrap(boot.clone());
        if i == 0 {
            o.env.push(("STREW_UPLOAD_DELAY_MS".into(), "1000".into()));
        }
        nodes.push(Node::start(o)?);
    }
    if let Err(e) = strew_tests::wait_for_grid(&nodes, &manager) {
        anyhow::bail!(
            "the grid forms: {e}; manager answers {}; founder log tail:\n{}",
            nodes[0].control("manager", serde_json::Value::Null)?,
            nodes[0].log_tail(40)
        );
    }
    Ok(nodes)
}

/// Packets every node but `source` stores.
fn stored_off(nodes: &[Node], source: usize) -> u64 {
    nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != source)
        .filter_map(|(_, n)| n.stored_packets().ok())
        .sum()
}

/// Restores the snapshot `report` names on `node` under `work` and checks
/// `tree/a.bin` came back byte-identical.
fn restores_identical(
    node: &Node,
    report: &serde_json::Value,
    tree: &std::path::Path,
    work: &std::path::Path,
) -> Result<()> {
    let snapshot = report["snapshot"].as_str().context("snapshot id")?;
    node.restore_identical(snapshot, &work.join("restored"), tree, &["a.bin"])?;
    Ok(())
}

/// Runs `args` on node `source` until at least `least` of its packets are on
/// their targets, then SIGKILLs the source's daemon and the client; returns
/// the packets stored at the kill.
fn kill_mid_backup(nodes: &mut [Node], source: usize, args: &[&str], least: u64) -> Result<u64> {
    let mut client = nodes[source].cli_spawn(args)?;
    poll(
        "the backup's packets on their targets",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (stored_off(nodes, source) >= least).then_some(()),
    )?;
    nodes[source].kill();
    let _ = client.kill();
    let _ = client.wait();
    Ok(stored_off(nodes, source))
}

#[test]
fn a_killed_source_resumes_its_backup_without_sending_receipted_packets_again() -> Result<()> {
    let mut nodes = start_grid(&[])?;

    // Grid-scope chunks are keyed under the grid's convergence secret once
    // the founder hands it over: a backup started before and rerun after
    // would name other chunks (nothing to resume). Wait for it.
    nodes[1].wait_for_grid_secret(Duration::from_secs(60))?;

    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    // About 48 chunks of 1 MiB, two replicas each: ~96 uploads, ~6 s.
    fs::write(tree.join("a.bin"), noise(48_000_000, 21))?;
    let path = tree.to_str().context("utf-8 path")?;
    let mut args = vec!["backup", path];
    args.extend(BACKUP);
    args.push("--json");
    let source = 1;
    // Half of the backup's packets.
    let before = kill_mid_backup(&mut nodes, source, &args, 48)?;
    nodes[source].restart()?;
    poll(
        "the restarted source to reach its peers",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || (nodes[source].peer_ids().ok()?.len() >= 3).then_some(()),
    )?;
    let report = nodes[source].cli_json(&args)?;
    let uploaded = report["uploaded_packets"]
        .as_u64()
        .context("uploaded_packets")?;
    let skipped = report["skipped_packets"]
        .as_u64()
        .context("skipped_packets")?;
    eprintln!(
        "{before} packets stored at the kill; the rerun sent {uploaded} and skipped {skipped}"
    );
    ensure!(
        skipped > 0 && uploaded * 10 < (uploaded + skipped) * 6,
        "{before} packets stored at the kill; the rerun sent {uploaded} and skipped {skipped}: {report}"
    );
    restores_identical(&nodes[source], &report, &tree, work.path())
}

#[test]
fn an_abandoned_backups_uploads_are_deleted_by_the_leaders_collection() -> Result<()> {
    // Plans the source stops renewing expire soon.
    let mut nodes = start_grid(&["--pending-ttl", "8s", "--plan-upload-rate", "64MiB"])?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("a.bin"), noise(24_000_000, 22))?;
    let path = tree.to_str().context("utf-8 path")?;
    let mut args = vec!["backup", path];
    args.extend(BACKUP);
    let source = 1;
    let at_kill = kill_mid_backup(&mut nodes, source, &args, 12)?;
    poll(
        "the leader to delete every packet of the expired plan",
        Duration::from_secs(90),
        Duration::from_millis(500),
        || (stored_off(&nodes, source) == 0).then_some(()),
    )
    .with_context(|| {
        format!(
            "{at_kill} packets stored at the kill, {} now; founder log tail:\n{}",
            stored_off(&nodes, source),
            nodes[0].log_tail(30)
        )
    })?;
    // The leader records what the targets confirmed right after they
    // deleted it (`Collected`): the queue empties a moment later.
    poll(
        "the leader's collection queue to be empty once every target deleted",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || (nodes[0].daemon_status().ok()?["collection_queue"].as_u64() == Some(0)).then_some(()),
    )
    .with_context(|| {
        format!(
            "queue {:?}",
            nodes[0]
                .daemon_status()
                .map(|s| s["collection_queue"].clone())
        )
    })?;
    ensure!(
        nodes[0].log().contains("collected unreferenced packets"),
        "the leader delivered the deletes"
    );
    eprintln!("{at_kill} packets stored at the kill; all deleted by the leader's collection");
    Ok(())
}

/// A volunteer that leaves mid-backup: once a target holds a few of the
/// backup's packets it is killed for good. The backup goes on: the packets
/// it had not receipted move to the other targets, the report names it and
/// how many it holds, and the snapshot restores without it (two replicas).
#[test]
fn a_target_killed_mid_backup_has_its_packets_moved_and_the_backup_completes() -> Result<()> {
    let mut nodes = start_grid(&[])?;
    nodes[1].wait_for_grid_secret(Duration::from_secs(60))?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("a.bin"), noise(48_000_000, 23))?;
    let path = tree.to_str().context("utf-8 path")?;
    let mut args = vec!["backup", path];
    args.extend(BACKUP);
    args.push("--json");
    let (source, lost) = (1, 3);
    let lost_id = nodes[lost].node_id()?;
    let mut client = nodes[source].cli_spawn(&args)?;
    poll(
        "the doomed target to store a few of the backup's packets",
        Duration::from_secs(60),
        Duration::from_millis(100),
        || (nodes[lost].stored_packets().ok()? >= 3).then_some(()),
    )?;
    nodes[lost].kill();
    let status = poll(
        "the backup to finish without the killed target",
        Duration::from_secs(180),
        Duration::from_millis(200),
        || client.try_wait().ok().flatten(),
    );
    if status.is_err() {
        let _ = client.kill();
    }
    let out = client.wait_with_output()?;
    ensure!(
        status?.success(),
        "the backup failed: {}\nsource log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        nodes[source].log_tail(30)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("JSON report")?;
    let moved = report["moved_packets"].as_u64().context("moved_packets")?;
    let failed = report["failed_targets"]
        .as_array()
        .context("failed_targets")?;
    eprintln!("moved {moved} packets; failed targets {failed:?}");
    ensure!(moved > 0, "packets moved off the killed target: {report}");
    ensure!(
        failed.len() == 1
            && failed[0]["target"].as_str() == Some(lost_id.as_str())
            // What it receipted before the kill (one stored as it died
            // may never have been receipted).
            && failed[0]["held_packets"].as_u64() >= Some(1),
        "the report names the killed target and what it holds: {report}"
    );
    ensure!(
        report["plans"].as_u64() == Some(1),
        "one pending backup: {report}"
    );
    restores_identical(&nodes[source], &report, &tree, work.path())
}
