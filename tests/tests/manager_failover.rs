//! The elected sequence manager on real processes: three coordinators and
//! five plain nodes on 127.0.0.1. (a) The leader is killed right after a
//! backup commits: a new leader serves and the snapshot restores byte for
//! byte (its sequence, sealed by the old leader, opens under the replicated
//! group key). (c) The killed member restarts and catches up. (b) The leader
//! is killed during a backup: the backup completes after retries or fails
//! clearly and a re-run succeeds; nothing committed is lost. (d) Two of three
//! coordinators are killed: a backup fails with a no-quorum message and
//! nothing is placed; one returns and service resumes.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{Node, NodeOptions, cities, noise, strew_bin, wait_for};

const COORDINATORS: usize = 3;
const PLAIN: usize = 5;

fn backup_args<'a>(tree: &'a str, name: &'a str) -> Vec<&'a str> {
    vec![
        "backup",
        tree,
        "--backup-distance",
        "1km..",
        "--redundancy",
        "erasure:2+1",
        "--name",
        name,
        "--json",
    ]
}

/// The coordinator group as `node` reports it.
fn group(node: &Node) -> Option<Value> {
    let g = node.status().ok()?["group"].clone();
    g.is_object().then_some(g)
}

fn voters(g: &Value) -> usize {
    g["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count())
}

/// The index of the coordinator that leads (as it says itself), among the running ones.
fn leader(coordinators: &mut [Node]) -> Option<usize> {
    (0..coordinators.len()).find(|&i| {
        coordinators[i].is_running()
            && group(&coordinators[i]).is_some_and(|g| g["state"] == "Leader")
    })
}

fn wait_for_leader(coordinators: &mut [Node], not: Option<usize>) -> Result<usize> {
    wait_for(
        "a leader of the coordinator group",
        Duration::from_secs(60),
        || leader(coordinators).filter(|&i| Some(i) != not),
    )
}

fn packets(nodes: &[&Node]) -> Vec<u64> {
    nodes
        .iter()
        .map(|n| {
            n.status()
                .ok()
                .and_then(|s| s["storage"]["packets"].as_u64())
                .unwrap_or(0)
        })
        .collect()
}

fn same_files(a: &Path, b: &Path) -> Result<()> {
    for entry in fs::read_dir(a)? {
        let entry = entry?;
        let other = b.join(entry.file_name());
        ensure!(
            fs::read(entry.path())?
                == fs::read(&other).with_context(|| format!("{} missing", other.display()))?,
            "{} differs after restore",
            entry.file_name().to_string_lossy()
        );
    }
    Ok(())
}

#[test]
fn the_manager_fails_over_loses_nothing_and_refuses_without_quorum() -> Result<()> {
    let places = cities(COORDINATORS + PLAIN)?;
    let options = |i: usize| {
        let mut o = NodeOptions::at(places[i].location());
        o.announce_interval = "1s".into();
        o.peer_ttl = "6s".into();
        o.storage = "256MiB".into();
        o
    };
    // A plain node that is never killed is everyone's bootstrap, so a
    // restarted coordinator finds the grid whoever else is down.
    let seed = Node::start(options(COORDINATORS))?;
    let boot = seed.bootstrap_addr()?;
    let mut coordinators = Vec::new();
    for i in 0..COORDINATORS {
        let mut o = options(i).bootstrap(boot.clone());
        o.extra.push("--coordinator".into());
        coordinators.push(Node::start(o)?);
    }
    let mut plain = vec![seed];
    for i in 1..PLAIN {
        plain.push(Node::start(
            options(COORDINATORS + i).bootstrap(boot.clone()),
        )?);
    }
    let ids: Vec<String> = coordinators
        .iter()
        .map(Node::node_id)
        .collect::<Result<_>>()?;

    // The group grows to three voters and every node knows its leader.
    wait_for("three voters", Duration::from_secs(90), || {
        coordinators
            .iter()
            .filter_map(group)
            .any(|g| g["state"] == "Leader" && voters(&g) == COORDINATORS)
            .then_some(())
    })
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", coordinators[0].log()))?;
    let l1 = wait_for_leader(&mut coordinators, None)?;
    for node in plain.iter().chain(coordinators.iter()) {
        wait_for("the manager to be known", Duration::from_secs(30), || {
            let s = node.status().ok()?;
            (s["manager"].as_str() == Some(ids[l1].as_str())).then_some(())
        })?;
    }
    // The leader's placement view holds every node (it polls gossip each second).
    std::thread::sleep(Duration::from_secs(3));

    let source = &plain[0];
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("a.bin"), noise(3_000_000, 1))?;
    fs::write(tree.join("notes.txt"), "kept through a failover\n")?;
    let tree_s = tree.to_str().context("utf-8 path")?.to_string();

    // (a) Kill the leader right after a backup commits.
    let first = source.cli_json(&backup_args(&tree_s, "first"))?;
    let s1 = first["snapshot"]
        .as_str()
        .context("snapshot id")?
        .to_string();
    coordinators[l1].kill();
    let killed = Instant::now();
    let listed = source.cli_json(&["snapshots", "--json"])?;
    let failover = killed.elapsed();
    eprintln!("FIGURE leader kill to a new manager serving: {failover:?}");
    ensure!(listed.to_string().contains(&s1), "{s1} lost: {listed}");
    let l2 = wait_for_leader(&mut coordinators, Some(l1))?;
    ensure!(l2 != l1);
    let dest = work.path().join("restored");
    source.cli_json(&[
        "restore",
        &s1,
        dest.to_str().context("utf-8 path")?,
        "--json",
    ])?;
    same_files(&tree, &dest.join("tree"))?;

    // (c) The killed member restarts and catches up with the leader.
    coordinators[l1].restart()?;
    let target = group(&coordinators[l2])
        .and_then(|g| g["last_log"].as_u64())
        .context("leader's last log index")?;
    wait_for(
        "the restarted member to catch up",
        Duration::from_secs(60),
        || {
            let g = group(&coordinators[l1])?;
            (g["last_applied"].as_u64()? >= target && g["leader"].is_u64()).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", coordinators[l1].log()))?;

    // (b) Kill the leader during a backup.
    fs::write(tree.join("b.bin"), noise(20_000_000, 2))?;
    let mut args = vec![
        "--data-dir".to_string(),
        source.data_dir().display().to_string(),
    ];
    args.extend(backup_args(&tree_s, "second").iter().map(|s| s.to_string()));
    let running = Command::new(strew_bin()?)
        .args(&args)
        .env_remove("STREW_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500));
    let l2 = leader(&mut coordinators).unwrap_or(l2);
    coordinators[l2].kill();
    let out = running.wait_with_output()?;
    let s2 = if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v["snapshot"].as_str().context("snapshot id")?.to_string()
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!err.trim().is_empty(), "a failed backup says why");
        eprintln!("backup during the failover failed clearly: {err}");
        let v = source.cli_json(&backup_args(&tree_s, "second"))?;
        v["snapshot"].as_str().context("snapshot id")?.to_string()
    };
    let listed = source.cli_json(&["snapshots", "--json"])?.to_string();
    ensure!(listed.contains(&s1) && listed.contains(&s2), "{listed}");
    coordinators[l2].restart()?;
    let l3 = wait_for_leader(&mut coordinators, None)?;
    wait_for("three voters again", Duration::from_secs(60), || {
        let g = group(&coordinators[l3])?;
        let lags_ok = g["members"]
            .as_array()?
            .iter()
            .all(|m| m["lag"].as_u64().is_some_and(|l| l == 0));
        (voters(&g) == COORDINATORS && lags_ok).then_some(())
    })?;

    // (d) Kill two of three: no placement, a no-quorum message.
    let survivor = (l3 + 1) % COORDINATORS;
    for (i, node) in coordinators.iter_mut().enumerate() {
        if i != survivor {
            node.kill();
        }
    }
    fs::write(tree.join("c.bin"), noise(2_000_000, 3))?;
    let living: Vec<&Node> = plain.iter().chain([&coordinators[survivor]]).collect();
    let before = packets(&living);
    let out = source.cli(&backup_args(&tree_s, "third"))?;
    ensure!(!out.status.success(), "a backup without quorum succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("no quorum"), "unclear error: {err}");
    ensure!(
        packets(&living) == before,
        "packets were placed without quorum"
    );
    let back = (survivor + 1) % COORDINATORS;
    coordinators[back].restart()?;
    let third = source.cli_json(&backup_args(&tree_s, "third"))?;
    ensure!(third["snapshot"].is_string(), "{third}");
    let listed = source.cli_json(&["snapshots", "--json"])?.to_string();
    ensure!(listed.contains(&s1) && listed.contains(&s2), "{listed}");
    Ok(())
}
