//! Recovery without coordinators (issue 18, SPEC R15): a source backs up two
//! snapshots (beta's root in several parts, one per 512 stripes) and a
//! third it forgets (its root copies leave their targets)
//! and exports its key; the whole coordinator group is killed and
//! its data dir deleted, and the source machine is lost too. A fresh data
//! dir with only the imported key, bootstrapped from a surviving plain node,
//! lists both snapshots from the roots the targets hold
//! (`strew snapshots --from-grid`) and restores them byte-identical
//! (`strew restore --from-grid`), reading every packet as the node that
//! stored it. Another node finds no roots, and no target's stored bytes
//! name a set or a snapshot. Bounded: one coordinator, four plain nodes,
//! small trees. A root copy lost with its target is put back by its source.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{Node, NodeOptions, cities, noise, wait_for};

fn options(location: String) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.announce_interval = "1s".into();
    o.peer_ttl = "30s".into();
    o
}

fn listed(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["snapshot"].as_str().unwrap_or_default().to_string(),
                s["set"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn snapshots_list_and_restore_from_their_roots_with_every_coordinator_gone() -> Result<()> {
    let places = cities(5)?;
    let founder = Node::start(options(places[0].location()).founder())?;
    let boot = founder.bootstrap_addr()?;
    let manager = founder.node_id()?;
    let mut nodes = vec![founder];
    for city in &places[1..] {
        nodes.push(Node::start(
            options(city.location()).bootstrap(boot.clone()),
        )?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    // The source's default (grid-scope) sets are keyed under the grid's
    // convergence secret once the founder hands it over: wait for it, so the
    // key export must carry it for the fresh machine to read them.
    nodes[1].wait_for_grid_secret(Duration::from_secs(60))?;

    let work = tempfile::tempdir()?;
    // Backs up a small tree as set `set`; returns the snapshot id and the
    // tree. `small` cuts it into about 700 chunks: a root of several parts.
    let backup = |n: u64, set: &str, small: bool| -> Result<(String, std::path::PathBuf)> {
        let tree = work.path().join(set);
        fs::create_dir_all(&tree)?;
        fs::write(
            tree.join("data.bin"),
            noise(if small { 200_000 } else { 300_000 }, n),
        )?;
        fs::write(
            tree.join("note.txt"),
            format!("snapshot {set}\n").repeat(200),
        )?;
        let id = nodes[1].backup_with_root(&tree, set, "erasure:2+1", small)?;
        Ok((id, tree))
    };
    let mut snapshots = Vec::new();
    for (n, set) in ["alpha-set", "beta-set"].into_iter().enumerate() {
        // beta's root has several parts, all found on the grid below.
        let (id, tree) = backup(n as u64 + 1, set, n == 1)?;
        snapshots.push((id, set.to_string(), tree));
    }

    // A third snapshot, forgotten: its root copies leave their targets (and
    // so it is not listed from the grid below).
    let roots_held = |nodes: &[Node]| -> u64 {
        nodes
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .filter_map(|(_, n)| n.daemon_status().ok())
            .filter_map(|s| s["storage"]["root_packets"].as_u64())
            .sum()
    };
    let (gamma, _) = backup(9, "gamma-set", false)?;
    let before = roots_held(&nodes);
    let out = nodes[1].cli_json(&["forget", &gamma, "--json"])?;
    let dropped = out["root_copies_dropped"].as_u64().unwrap_or(0);
    ensure!(
        dropped >= 1,
        "the forgotten snapshot's root copies are dropped: {out}"
    );
    ensure!(
        roots_held(&nodes) + dropped == before,
        "targets hold {} roots after dropping {dropped} of {before}",
        roots_held(&nodes)
    );

    let source_id = nodes[1].node_id()?;
    let key = work.path().join("owner.key");
    let out = nodes[1].cli(&["key", "export", key.to_str().context("utf-8 path")?])?;
    ensure!(out.status.success(), "key export: {out:?}");

    // The whole coordinator group is gone, with its state; so is the source.
    nodes[0].kill();
    fs::remove_dir_all(nodes[0].data_dir())?;
    nodes[1].kill();

    // A fresh machine: only the imported key and a surviving plain node.
    let mut fresh = options(places[1].location()).bootstrap(nodes[2].bootstrap_addr()?);
    fresh.import_key = Some(key);
    let fresh = Node::start(fresh)?;
    ensure!(fresh.node_id()? == source_id, "same node id");
    wait_for(
        "the fresh machine to see the grid",
        Duration::from_secs(60),
        || (fresh.peers().ok()?.len() >= 3).then_some(()),
    )?;

    let found = fresh.cli_json(&["snapshots", "--from-grid", "--json"])?;
    let mut want: Vec<(String, String)> = snapshots
        .iter()
        .map(|(id, set, _)| (id.clone(), set.clone()))
        .collect();
    let mut got = listed(&found);
    want.sort();
    got.sort();
    ensure!(
        got == want,
        "both snapshots listed from their roots, the forgotten one not: {found}"
    );

    for (id, set, tree) in &snapshots {
        let dest = work.path().join(format!("restored-{set}"));
        let out = fresh.cli_json(&[
            "restore",
            id,
            dest.to_str().context("utf-8 path")?,
            "--from-grid",
            "--json",
        ])?;
        ensure!(
            out["fetched"].as_u64() > Some(0),
            "read from targets: {out}"
        );
        for name in ["data.bin", "note.txt"] {
            ensure!(
                fs::read(tree.join(name))? == fs::read(dest.join(set).join(name))?,
                "{set}/{name} restores byte-identical"
            );
        }
    }

    // A node without the owner's key lists nothing: targets answer ListRoots
    // only for what the requester stored itself.
    let other = nodes[2].cli_json(&["snapshots", "--from-grid", "--json"])?;
    ensure!(
        listed(&other).is_empty(),
        "no roots for another node: {other}"
    );

    // What targets keep names no set and no snapshot (roots included).
    for node in &nodes[2..] {
        let mut stored = Vec::new();
        collect(&node.data_dir().join("packets"), &mut stored)?;
        ensure!(!stored.is_empty(), "the target keeps packets");
        for (id, set, _) in &snapshots {
            for needle in [set.as_bytes(), id.as_bytes()] {
                ensure!(
                    !stored.windows(needle.len()).any(|w| w == needle),
                    "a target's stored bytes name {}",
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
    Ok(())
}

/// A root copy lost with its target is put back by its source on another of
/// the snapshot's targets (the source's root upkeep, every 2 s here), so
/// the snapshot stays findable from the grid with three copies.
#[test]
fn a_lost_root_copy_is_put_back_on_another_target() -> Result<()> {
    let places = cities(6)?;
    let founder = Node::start(options(places[0].location()).founder())?;
    let boot = founder.bootstrap_addr()?;
    let manager = founder.node_id()?;
    let mut nodes = vec![founder];
    for (i, city) in places[1..].iter().enumerate() {
        let mut o = options(city.location()).bootstrap(boot.clone());
        if i == 0 {
            o.env.push(("STREW_ROOT_UPKEEP".into(), "2s".into()));
        }
        nodes.push(Node::start(o)?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    let source = 1;
    nodes[source].wait_for_grid_secret(Duration::from_secs(60))?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("data.bin"), noise(3_000_000, 5))?;
    let out = nodes[source].cli_json(&[
        "backup",
        tree.to_str().context("utf-8 path")?,
        "--redundancy",
        "erasure:2+1",
        "--json",
    ])?;
    ensure!(out["root_copies"] == 3, "three root copies: {out}");
    let roots_on = |n: &Node| -> u64 {
        n.daemon_status()
            .ok()
            .and_then(|s| s["storage"]["root_packets"].as_u64())
            .unwrap_or(0)
    };
    let holders: Vec<usize> = (0..nodes.len())
        .filter(|&i| i != source && roots_on(&nodes[i]) > 0)
        .collect();
    ensure!(holders.len() == 3, "root copies on {holders:?}");
    // A plain holder dies (the coordinator stays: the backup is not its).
    let lost = *holders
        .iter()
        .find(|&&i| i != 0)
        .context("a plain holder")?;
    nodes[lost].kill();
    wait_for(
        "the source to put the lost root copy on another target",
        Duration::from_secs(90),
        || {
            let held = (0..nodes.len())
                .filter(|&i| i != source && i != lost)
                .filter(|&i| roots_on(&nodes[i]) > 0)
                .count();
            (held == 3).then_some(())
        },
    )
    .with_context(|| format!("source log tail:\n{}", nodes[source].log_tail(20)))?;
    ensure!(
        nodes[source].log().contains("snapshot roots kept"),
        "the source logged the repair"
    );
    Ok(())
}

/// Every file's bytes under `dir`, concatenated.
fn collect(dir: &std::path::Path, out: &mut Vec<u8>) -> Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else {
            out.extend(fs::read(&path)?);
        }
    }
    Ok(())
}
