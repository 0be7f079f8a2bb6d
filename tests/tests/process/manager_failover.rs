//! The elected sequence manager on real processes: three coordinators and
//! five plain nodes on 127.0.0.1. (a) The leader is killed right after a
//! backup commits: a new leader serves and the snapshot restores byte for
//! byte (its sequence, sealed by the old leader, opens under the replicated
//! group key). (c) The killed member restarts and catches up. (b) The leader
//! is killed during a backup: the backup completes after retries or fails
//! clearly and a re-run succeeds; nothing committed is lost. (d) Two of three
//! coordinators are killed: a backup fails with a no-quorum message and
//! nothing is placed; one returns and service resumes.
//!
//! Each scenario runs on its own grid (OS-picked ports, own temp dirs), so
//! the test runner runs them in parallel.

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
    let g = node.daemon_status().ok()?["group"].clone();
    g.is_object().then_some(g)
}

fn voters(g: &Value) -> usize {
    g["members"]
        .as_array()
        .map_or(0, |m| m.iter().filter(|m| m["role"] == "voter").count())
}

/// The index of the coordinator that leads (as it says itself), among the
/// running ones. A restarted former leader comes back as leader of its old
/// term (openraft restores a node whose last vote was its own committed one)
/// until the first message of the current term reaches it, so of two
/// claimants the one with the highest term leads.
fn leader(coordinators: &mut [Node]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, node) in coordinators.iter_mut().enumerate() {
        if !node.is_running() {
            continue;
        }
        if let Some(g) = group(node)
            && g["state"] == "Leader"
        {
            let term = g["term"].as_u64().unwrap_or(0);
            if best.is_none_or(|(t, _)| term > t) {
                best = Some((term, i));
            }
        }
    }
    best.map(|(_, i)| i)
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
        .map(|n| n.stored_packets().unwrap_or(0))
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

/// Three coordinators and five plain nodes, the group formed (three voters,
/// every node knows the leader, the leader's placement view holds every node),
/// and a tree to back up.
struct Grid {
    coordinators: Vec<Node>,
    plain: Vec<Node>,
    leader: usize,
    work: tempfile::TempDir,
    tree: std::path::PathBuf,
    tree_s: String,
}

impl Grid {
    fn start() -> Result<Grid> {
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
            // The first founds the grid (`strew grid create`); it admits the others.
            o.found_grid = i == 0;
            coordinators.push(Node::start(o)?);
        }
        for i in 1..coordinators.len() {
            coordinators[0].admit(&coordinators[i])?;
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

        let leader = wait_for_leader(&mut coordinators, None)?;
        for node in plain.iter().chain(coordinators.iter()) {
            wait_for("the manager to be known", Duration::from_secs(30), || {
                let s = node.daemon_status().ok()?;
                (s["manager"].as_str() == Some(ids[leader].as_str())).then_some(())
            })?;
        }
        // The leader's placement view holds every node.
        plain[0].wait_for_manager_view((COORDINATORS + PLAIN) as u64, Duration::from_secs(60))?;

        let work = tempfile::tempdir()?;
        let tree = work.path().join("tree");
        fs::create_dir_all(&tree)?;
        fs::write(tree.join("a.bin"), noise(3_000_000, 1))?;
        fs::write(tree.join("notes.txt"), "kept through a failover\n")?;
        let tree_s = tree.to_str().context("utf-8 path")?.to_string();

        // The scenarios kill leaders: every node must honour the tickets of
        // every member that may lead next (plain nodes relearn the members
        // within seconds while the group they know is unsettled).
        for node in coordinators.iter().chain(&plain) {
            wait_for(
                "every node to trust all coordinators' tickets",
                Duration::from_secs(60),
                || {
                    let status = node.daemon_status().ok()?;
                    let trusted = status["trusted_managers"].as_array()?.len();
                    (trusted >= COORDINATORS).then_some(())
                },
            )?;
        }
        Ok(Grid {
            coordinators,
            plain,
            leader,
            work,
            tree,
            tree_s,
        })
    }

    /// The node that backs up and restores.
    fn source(&self) -> &Node {
        &self.plain[0]
    }

    /// Backs the tree up as `name`; the committed snapshot's id.
    fn backup(&self, name: &str) -> Result<String> {
        let v = self.source().cli_json(&backup_args(&self.tree_s, name))?;
        Ok(v["snapshot"].as_str().context("snapshot id")?.to_string())
    }

    fn snapshots(&self) -> Result<String> {
        Ok(self
            .source()
            .cli_json(&["snapshots", "--json"])?
            .to_string())
    }
}

#[test]
fn a_leader_killed_after_a_commit_is_replaced_the_snapshot_restores_and_it_catches_up() -> Result<()>
{
    let mut grid = Grid::start()?;
    let l1 = grid.leader;

    // (a) Kill the leader right after a backup commits. Small chunks make
    // it ~700 chunks: its commit comes in pages of its chunk order, each a
    // raft entry the new leader must hold to serve the restore.
    let mut args = backup_args(&grid.tree_s, "first");
    args.extend(["--chunk-sizes", "2048/4096/8192"]);
    let first = grid.source().cli_json(&args)?;
    let s1 = first["snapshot"]
        .as_str()
        .context("snapshot id")?
        .to_string();
    let chunks = first["stats"]["chunks"].as_u64().unwrap_or(0);
    ensure!(
        chunks > 512,
        "{chunks} chunks: not enough for a paged commit: {first}"
    );
    grid.coordinators[l1].kill();
    let killed = Instant::now();
    let listed = grid.source().cli_json(&["snapshots", "--json"])?;
    let failover = killed.elapsed();
    eprintln!("FIGURE leader kill to a new manager serving: {failover:?}");
    ensure!(listed.to_string().contains(&s1), "{s1} lost: {listed}");
    let l2 = wait_for_leader(&mut grid.coordinators, Some(l1))?;
    ensure!(l2 != l1);
    let dest = grid.work.path().join("restored");
    grid.source().cli_json(&[
        "restore",
        &s1,
        dest.to_str().context("utf-8 path")?,
        "--json",
    ])?;
    same_files(&grid.tree, &dest.join("tree"))?;

    // (c) The killed member restarts and catches up with the leader.
    grid.coordinators[l1].restart()?;
    let target = group(&grid.coordinators[l2])
        .and_then(|g| g["last_log"].as_u64())
        .context("leader's last log index")?;
    let coordinators = &grid.coordinators;
    wait_for(
        "the restarted member to catch up",
        Duration::from_secs(60),
        || {
            let g = group(&coordinators[l1])?;
            (g["last_applied"].as_u64()? >= target && g["leader"].is_u64()).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", coordinators[l1].log()))?;
    Ok(())
}

#[test]
fn a_leader_killed_during_a_backup_loses_nothing_committed() -> Result<()> {
    let mut grid = Grid::start()?;
    let s1 = grid.backup("first")?;

    // (b) Kill the leader during a backup: once its packets start arriving
    // at targets, it has been placed and is not committed yet.
    fs::write(grid.tree.join("b.bin"), noise(20_000_000, 2))?;
    let everyone: Vec<&Node> = grid.plain.iter().chain(&grid.coordinators).collect();
    let stored = |nodes: &[&Node]| packets(nodes).iter().sum::<u64>();
    let before = stored(&everyone);
    let mut args = vec![
        "--data-dir".to_string(),
        grid.source().data_dir().display().to_string(),
    ];
    args.extend(
        backup_args(&grid.tree_s, "second")
            .iter()
            .map(|s| s.to_string()),
    );
    let mut running = Command::new(strew_bin()?)
        .args(&args)
        .env_remove("STREW_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    wait_for(
        "the backup's first packets at targets",
        Duration::from_secs(60),
        || {
            let done = running.try_wait().ok()?.is_some();
            (done || stored(&everyone) > before).then_some(())
        },
    )?;
    drop(everyone);
    let l2 = leader(&mut grid.coordinators).unwrap_or(grid.leader);
    grid.coordinators[l2].kill();
    let out = running.wait_with_output()?;
    let s2 = if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout)?;
        v["snapshot"].as_str().context("snapshot id")?.to_string()
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(!err.trim().is_empty(), "a failed backup says why");
        eprintln!("backup during the failover failed clearly: {err}");
        grid.backup("second")?
    };
    let listed = grid.snapshots()?;
    ensure!(listed.contains(&s1) && listed.contains(&s2), "{listed}");
    grid.coordinators[l2].restart()?;
    // The restarted member was the leader: it comes back claiming to lead
    // its old term for the moment until the current leader's first append
    // reaches it. The group, not a member picked once right after the
    // restart, must end with three voters and no lag, under whoever leads.
    let coordinators = &mut grid.coordinators;
    wait_for("three voters again", Duration::from_secs(120), || {
        let now = leader(coordinators)?;
        let g = group(&coordinators[now])?;
        let lags_ok = g["members"]
            .as_array()?
            .iter()
            .all(|m| m["lag"].as_u64().is_some_and(|l| l == 0));
        (voters(&g) == COORDINATORS && lags_ok).then_some(())
    })?;
    Ok(())
}

#[test]
fn without_quorum_nothing_is_placed_and_service_resumes_when_one_returns() -> Result<()> {
    let mut grid = Grid::start()?;
    let s1 = grid.backup("first")?;
    let s2 = grid.backup("second")?;

    // (d) Kill two of three: no placement, a no-quorum message.
    let l3 = wait_for_leader(&mut grid.coordinators, None)?;
    let survivor = (l3 + 1) % COORDINATORS;
    for (i, node) in grid.coordinators.iter_mut().enumerate() {
        if i != survivor {
            node.kill();
        }
    }
    fs::write(grid.tree.join("c.bin"), noise(2_000_000, 3))?;
    let living: Vec<&Node> = grid
        .plain
        .iter()
        .chain([&grid.coordinators[survivor]])
        .collect();
    let before = packets(&living);
    let out = grid.source().cli(&backup_args(&grid.tree_s, "third"))?;
    ensure!(!out.status.success(), "a backup without quorum succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("no quorum"), "unclear error: {err}");
    ensure!(
        packets(&living) == before,
        "packets were placed without quorum"
    );
    drop(living);
    let back = (survivor + 1) % COORDINATORS;
    grid.coordinators[back].restart()?;
    let third = grid
        .source()
        .cli_json(&backup_args(&grid.tree_s, "third"))?;
    ensure!(third["snapshot"].is_string(), "{third}");
    let listed = grid.snapshots()?;
    ensure!(listed.contains(&s1) && listed.contains(&s2), "{listed}");
    Ok(())
}
