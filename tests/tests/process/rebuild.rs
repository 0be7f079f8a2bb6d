//! Rebuilding the coordinator group (issue 18, SPEC R15): a source backs up
//! two snapshots (alpha cut into enough chunks that its root has several
//! parts and is re-registered in several pages); the whole group (one founder) is SIGKILLed and its data
//! dir deleted, with every packet it held as a target. The founder's key
//! (exported with the grid key) is imported on a fresh machine, which
//! founds a new group of the same grid knowing nothing; `strew grid
//! rebuild` marks it rebuilt and the source's daemon re-registers both
//! snapshots from its roots (the old group's attestations checked). Then
//! `strew status` shows both; the packets of a third snapshot whose root
//! the source lost are collected by `strew grid collect-unreferenced` only
//! (refused within the grace, counted by a dry run, roots kept); alpha
//! restores byte-identical through the
//! new group, a new backup works, forgetting alpha frees its packets on the
//! targets, and the packets lost with the old founder and with a killed
//! target are repaired (the leader's audits find the lost ones) until
//! `strew check` finds the remaining old snapshot whole again.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{City, Node, NodeOptions, cities, noise, wait_for};

fn options(city: &City) -> NodeOptions {
    let mut o = NodeOptions::at(city.location());
    o.announce_interval = "1s".into();
    o.peer_ttl = "30s".into();
    o.storage = "256MiB".into();
    o.extra = vec!["--repair-grace".into(), "3s".into()];
    o
}

fn listed(v: &Value) -> Vec<String> {
    let mut ids: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["snapshot"].as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_new_group_with_the_grid_key_takes_back_the_sources_snapshots_from_their_roots() -> Result<()> {
    let places = cities(7)?;
    let founder = Node::start(options(&places[0]).founder())?;
    let boot = founder.bootstrap_addr()?;
    let manager = founder.node_id()?;
    let mut nodes = vec![founder];
    for (i, city) in places[1..].iter().enumerate() {
        let mut o = options(city).bootstrap(boot.clone());
        if i == 0 {
            o.env.push(("STREW_REREGISTER_EVERY".into(), "1s".into()));
        }
        nodes.push(Node::start(o)?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    let source = 1;
    nodes[source].wait_for_grid_secret(Duration::from_secs(60))?;

    let work = tempfile::tempdir()?;
    // `small` cuts the tree into about 700 chunks: a root of several
    // parts, re-registered in several pages.
    let backup =
        |nodes: &[Node], n: u64, set: &str, small: bool| -> Result<(String, std::path::PathBuf)> {
            let tree = work.path().join(set);
            fs::create_dir_all(&tree)?;
            fs::write(
                tree.join("data.bin"),
                noise(if small { 200_000 } else { 400_000 }, n),
            )?;
            fs::write(tree.join("note.txt"), format!("set {set}\n").repeat(300))?;
            let id = nodes[source].backup_with_root(&tree, set, "erasure:2+2", small)?;
            Ok((id, tree))
        };
    let (alpha, alpha_tree) = backup(&nodes, 1, "alpha", true)?;
    let (beta, _) = backup(&nodes, 2, "beta", false)?;
    let mut both = vec![alpha.clone(), beta.clone()];
    both.sort();
    // A third snapshot whose root the source loses: it is never
    // re-registered, and its packets are what no snapshot references.
    let (delta, _) = backup(&nodes, 4, "delta", false)?;
    let roots = nodes[source].data_dir().join("roots");
    let name = roots.join(format!("{delta}.of"));
    for id in fs::read_to_string(&name)?.lines() {
        fs::remove_file(roots.join(format!("{}.root", id.trim())))?;
    }
    fs::remove_file(name)?;

    // The founder's key, with the grid key, is all that survives of the group.
    let key = work.path().join("founder.key");
    let out = nodes[0].cli(&["key", "export", key.to_str().context("utf-8 path")?])?;
    ensure!(out.status.success(), "key export: {out:?}");
    nodes[0].kill();
    fs::remove_dir_all(nodes[0].data_dir())?;

    // A fresh machine with that key founds a new group of the same grid.
    let mut o = options(&places[0])
        .coordinator()
        .bootstrap(nodes[2].bootstrap_addr()?);
    o.import_key = Some(key);
    o.env.push(("STREW_AUDIT_INTERVAL".into(), "200ms".into()));
    nodes[0] = Node::start(o)?;
    ensure!(nodes[0].node_id()? == manager, "the founder's identity");
    strew_tests::wait_for_grid(&nodes, &manager)?;
    let known = nodes[source].cli_json(&["snapshots", "--json"])?;
    ensure!(
        listed(&known).is_empty(),
        "the new group knows no snapshot before the rebuild: {known}"
    );

    let out = nodes[0].cli_json(&["grid", "rebuild", "--json"])?;
    ensure!(out["rebuilt_since"].as_u64().is_some(), "{out}");
    wait_for(
        "the source to re-register both snapshots",
        Duration::from_secs(60),
        || {
            let v = nodes[source].cli_json(&["snapshots", "--json"]).ok()?;
            (listed(&v) == both).then_some(())
        },
    )
    .with_context(|| format!("source log:\n{}", nodes[source].log_tail(30)))?;
    ensure!(
        nodes[source]
            .log()
            .contains("snapshots re-registered with the rebuilt coordinator group"),
        "the source logged the re-registration"
    );
    let status = nodes[source].status()?;
    ensure!(
        listed(&status["snapshots"]) == both,
        "status shows both old snapshots: {status}"
    );

    // The packets only delta referenced are collected by the operator's
    // command alone, after the grace (refused before it, counted by a dry
    // run); roots are never collected. Repairs of what the old founder
    // held run meanwhile, so the check is the inventories': once the
    // collection queue is delivered, a dry run finds nothing left.
    let roots_held = |nodes: &[Node]| -> u64 {
        nodes
            .iter()
            .filter_map(|n| n.daemon_status().ok())
            .filter_map(|s| s["storage"]["root_packets"].as_u64())
            .sum()
    };
    let roots_before = roots_held(&nodes);
    let out = nodes[0].cli(&["grid", "collect-unreferenced", "--json"])?;
    ensure!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("grace"),
        "refused within the default grace: {out:?}"
    );
    let collect = |dry: bool| -> Result<Value> {
        let mut args = vec!["grid", "collect-unreferenced", "--grace", "0s", "--json"];
        if dry {
            args.push("--dry-run");
        }
        nodes[0].cli_json(&args)
    };
    let dry = collect(true)?;
    let found = dry["found"].as_u64().unwrap_or(0);
    ensure!(found > 0, "delta's packets are unreferenced: {dry}");
    let out = collect(false)?;
    // Targets store and drop packets between the two scans (in one run a
    // target went from 446 packets scanned to 449 and one unreferenced
    // packet of 321 B was gone), so the counts need not match: the real run
    // finds some, and what must hold is the next check, nothing left
    // unreferenced once its queue is delivered.
    ensure!(
        out["dry_run"] == Value::Bool(false) && out["found"].as_u64() > Some(0),
        "{out} after {dry}"
    );
    // The leader delivers the queue a few deletes a pass while repairs of
    // what the old founder held run: on a loaded machine that took more
    // than a minute (still deleting when a 60 s bound ran out).
    wait_for(
        "the unreferenced packets to be deleted",
        Duration::from_secs(150),
        || {
            let queue = nodes[0].daemon_status().ok()?["collection_queue"].as_u64()?;
            let left = collect(true).ok()?["found"].as_u64()?;
            (queue == 0 && left == 0).then_some(())
        },
    )
    .with_context(|| format!("coordinator log:\n{}", nodes[0].log_tail(30)))?;
    ensure!(
        roots_held(&nodes) >= roots_before,
        "no root is collected: {} held, {roots_before} before",
        roots_held(&nodes)
    );

    // Restore through the new group (alpha was re-registered in pages).
    let out = nodes[source].restore_identical(
        &alpha,
        &work.path().join("restored-alpha"),
        &alpha_tree,
        &["data.bin", "note.txt"],
    )?;
    ensure!(out["fetched"].as_u64() > Some(0), "{out}");

    // A new backup works, and a forget (of the snapshot re-registered in
    // pages) frees its packets on the targets.
    backup(&nodes, 3, "gamma", false)?;
    let stored = |nodes: &[Node]| -> u64 {
        nodes[2..]
            .iter()
            .filter_map(|n| n.stored_packets().ok())
            .sum()
    };
    let before = stored(&nodes);
    let out = nodes[source].cli_json(&["forget", &alpha, "--json"])?;
    ensure!(out["deleted"].as_u64() > Some(0), "forget deletes: {out}");
    let after = stored(&nodes);
    ensure!(
        after < before,
        "targets hold {after} packets after the forget, {before} before"
    );

    // Repair: a target of beta dies too; every lost packet (those the old
    // founder held included) is rebuilt until beta checks whole.
    let status = nodes[source].status()?;
    let beta_targets: Vec<String> = status["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["snapshot"].as_str() == Some(beta.as_str()))
        .and_then(|s| s["targets"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|t| t["node_id"].as_str().map(str::to_string))
        .collect();
    let mut victim = None;
    for (i, node) in nodes.iter().enumerate().skip(2) {
        if beta_targets.contains(&node.node_id()?) {
            victim = Some(i);
            break;
        }
    }
    let victim = victim.context("beta has a plain target besides the source")?;
    nodes[victim].kill();
    wait_for(
        "beta to be repaired whole",
        Duration::from_secs(120),
        || {
            let out = nodes[source].cli(&["check", &beta, "--json"]).ok()?;
            let check: Value = serde_json::from_slice(&out.stdout).ok()?;
            (out.status.success()
                && check["stripes"].as_u64() > Some(0)
                && check["healthy"] == check["stripes"])
                .then_some(())
        },
    )
    .with_context(|| format!("coordinator log:\n{}", nodes[0].log_tail(40)))?;
    Ok(())
}
