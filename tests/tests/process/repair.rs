//! Automatic repair on real processes: a 9-node grid on 127.0.0.1 at real
//! city locations backs up with erasure 4+2 under a backup-distance bound;
//! the source stops; a target is SIGKILLed and its data dir deleted; with a
//! repair grace of a few seconds the coordinator group's leader rebuilds
//! every lost packet onto other targets (while the source is still offline),
//! every stripe is back to 6 packets on live targets within the bound
//! (checked with an independent haversine) and the snapshot is healthy;
//! then two more original targets die, `strew check` names the missing
//! packets with no stripe lost, and the snapshot still restores
//! byte-identical, which three dead original targets would forbid without
//! the repair. Before those two die, every packet on a fourth target is
//! silently corrupted on disk: the leader's audits (every 200 ms per target
//! here) find it, the target's audit score drops, and its packets are
//! rebuilt elsewhere, so that target's rotten copies do not count against
//! the final restore either.

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{City, Node, NodeOptions, cities, haversine_km, noise, wait_for};

/// Test repair grace: a dead target's packets are rebuilt 3 s after it is marked offline.
const GRACE: &str = "3s";
/// Test audit interval: each target is challenged this often.
const AUDIT_INTERVAL: &str = "200ms";

fn options(city: &City) -> NodeOptions {
    let mut o = NodeOptions::at(city.location());
    o.announce_interval = "2s".into();
    o.peer_ttl = "30s".into();
    o.storage = "256MiB".into();
    o.extra = vec!["--repair-grace".into(), GRACE.into()];
    o
}

/// A coordinator at `places[0]`, plain nodes at the rest; every node knows
/// the manager and the manager sees every node.
fn start_grid(places: &[City]) -> Result<Vec<Node>> {
    let mut first = options(&places[0]);
    // The grid's founder: `strew grid create --open` before it starts.
    first.found_grid = true;
    first.extra.push("--coordinator".into());
    first
        .env
        .push(("STREW_AUDIT_INTERVAL".into(), AUDIT_INTERVAL.into()));
    let first = Node::start(first)?;
    let boot = first.bootstrap_addr()?;
    let manager = first.node_id()?;
    let mut nodes = vec![first];
    for city in &places[1..] {
        nodes.push(Node::start(options(city).bootstrap(boot.clone()))?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    Ok(nodes)
}

/// The snapshot's entry in `strew status --json`.
fn snapshot_status(node: &Node, snapshot: &str) -> Result<Value> {
    let status = node.status()?;
    status["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["snapshot"].as_str() == Some(snapshot))
        .cloned()
        .with_context(|| format!("snapshot {snapshot} not in status: {status}"))
}

/// Target node id → (lat, lon, packets, up) of a snapshot's status entry.
fn targets(snap: &Value) -> BTreeMap<String, (f64, f64, u64, bool)> {
    snap["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["node_id"].as_str().unwrap_or_default().to_string(),
                (
                    t["location"]["lat"].as_f64().unwrap_or(f64::NAN),
                    t["location"]["lon"].as_f64().unwrap_or(f64::NAN),
                    t["packets"].as_u64().unwrap_or(0),
                    t["up"] == Value::Bool(true),
                ),
            )
        })
        .collect()
}

fn stored(nodes: &[Node], which: &[usize]) -> Result<u64> {
    which.iter().map(|&i| nodes[i].stored_packets()).sum()
}

#[test]
fn a_dead_target_is_repaired_while_the_source_is_offline_and_three_losses_still_restore()
-> Result<()> {
    let places = cities(9)?;
    let mut nodes = start_grid(&places)?;
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect::<Result<_>>()?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("a.bin"), noise(9_000_000, 3))?;
    fs::write(tree.join("b.txt"), "repair me\n".repeat(5000))?;

    // The source is node 1 (not the coordinator: it must be able to stop).
    let (min_km, max_km) = (1000.0, 13000.0);
    let source = 1;
    let out = nodes[source].cli_json(&[
        "backup",
        tree.to_str().context("utf-8 path")?,
        "--backup-distance",
        "1000km..13000km",
        "--spread",
        "50km..",
        "--redundancy",
        "erasure:4+2",
        "--name",
        "tree",
        "--json",
    ])?;
    let snapshot = out["snapshot"].as_str().context("snapshot id")?.to_string();
    let snap = snapshot_status(&nodes[source], &snapshot)?;
    let stripes = snap["health"]["stripes"].as_u64().context("stripes")?;
    ensure!(stripes >= 8, "enough stripes to spread: {snap}");
    let before = targets(&snap);
    let total: u64 = before.values().map(|t| t.2).sum();
    ensure!(total == 6 * stripes, "6 packets per stripe: {snap}");

    // The source stops; the original target holding the most packets (not
    // the coordinator) is killed and its data dir deleted.
    ensure!(
        nodes[source].terminate(Duration::from_secs(20))?,
        "the source stops cleanly"
    );
    let mut holders: Vec<usize> = (2..nodes.len())
        .filter(|&i| before.contains_key(&ids[i]))
        .collect();
    holders.sort_by_key(|&i| std::cmp::Reverse(before[&ids[i]].2));
    ensure!(
        holders.len() >= 4,
        "three original targets to kill and one to corrupt: {before:?}"
    );
    let dead = holders[0];
    let live: Vec<usize> = (0..nodes.len())
        .filter(|&i| i != source && i != dead)
        .collect();
    let live_before = stored(&nodes, &live)?;
    nodes[dead].kill();
    fs::remove_dir_all(nodes[dead].data_dir())?;
    let lost = before[&ids[dead]].2;
    ensure!(lost > 0);

    // The leader rebuilds the lost packets on the live targets: they hold
    // exactly `lost` packets more, and nothing is left to repair.
    let started = Instant::now();
    wait_for(
        "the dead target's packets to be rebuilt on live targets",
        Duration::from_secs(120),
        || {
            let now = stored(&nodes, &live).ok()?;
            let pending = nodes[0].daemon_status().ok()?["repairs_pending"].as_u64()?;
            (now == live_before + lost && pending == 0).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; leader log:\n{}", nodes[0].log()))?;
    let repair_secs = started.elapsed().as_secs_f64();
    ensure!(
        nodes[0].log().contains("repaired a stripe"),
        "the leader logged its repairs"
    );

    // Back online, the source sees every stripe healthy again: 6 packets per
    // stripe, all on live targets within the backup distance, none on the dead one.
    nodes[source].restart()?;
    let src = (places[source].lat, places[source].lon);
    let after = wait_for(
        "the source to see its snapshot healthy on live targets",
        Duration::from_secs(90),
        || {
            let snap = snapshot_status(&nodes[source], &snapshot).ok()?;
            let healthy = snap["health"]["healthy"].as_u64()? == stripes;
            let t = targets(&snap);
            (healthy && t.values().all(|x| x.3)).then_some((snap, t))
        },
    )?;
    let (snap, after) = after;
    ensure!(
        snap["health"]["degraded"] == 0 && snap["health"]["lost"] == 0,
        "{snap}"
    );
    ensure!(
        !after.contains_key(&ids[dead]),
        "nothing left on the dead target: {snap}"
    );
    ensure!(
        after.values().map(|t| t.2).sum::<u64>() == 6 * stripes,
        "6 packets per stripe again: {snap}"
    );
    for (id, (lat, lon, _, _)) in &after {
        let d = haversine_km(src, (*lat, *lon));
        ensure!(
            d >= min_km - 1.0 && d <= max_km + 1.0,
            "target {id} is {d:.0} km from the source"
        );
    }
    let status = nodes[source].status()?;
    ensure!(status["repairs_pending"] == 0, "{status}");
    // `strew check` reads every packet back: all there.
    let check = nodes[source].cli_json(&["check", &snapshot, "--read-data", "--json"])?;
    ensure!(
        check["healthy"].as_u64() == Some(stripes) && check["missing"] == Value::Array(vec![]),
        "{check}"
    );
    // And through the leader's audits (nothing downloaded): all there too.
    let out = nodes[source].cli(&["check", &snapshot, "--json"])?;
    let check: Value =
        serde_json::from_slice(&out.stdout).with_context(|| format!("check --json: {out:?}"))?;
    ensure!(
        out.status.success()
            && check["method"] == "audit"
            && check["healthy"].as_u64() == Some(stripes)
            && check["verified"].as_u64() == Some(6 * stripes)
            && check["missing"] == Value::Array(vec![]),
        "{check}; nodes {ids:?}, source {source}, first dead {dead}"
    );

    // Silent corruption: every packet on a fourth original target is
    // overwritten on disk while it runs. Audits find it and its packets are
    // rebuilt elsewhere; honest targets keep passing.
    let rotten = holders[3];
    let segments = nodes[rotten].data_dir().join("packets").join("segments");
    let mut overwritten = 0u64;
    for entry in fs::read_dir(&segments)? {
        let path = entry?.path();
        let len = fs::metadata(&path)?.len();
        fs::write(&path, vec![0x5a; usize::try_from(len)?])?;
        overwritten += len;
    }
    ensure!(
        overwritten > 0,
        "the target stores its packets in {segments:?}"
    );
    wait_for(
        "the corrupted target's packets to be rebuilt elsewhere",
        Duration::from_secs(120),
        || {
            let snap = snapshot_status(&nodes[source], &snapshot).ok()?;
            let t = targets(&snap);
            let healthy = snap["health"]["healthy"].as_u64()? == stripes;
            (healthy && !t.contains_key(&ids[rotten])).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; leader log:\n{}", nodes[0].log()))?;
    let peers = nodes[0].cli_json(&["peers", "--json"])?;
    let audit_of = |id: &str| {
        peers
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["node_id"] == id)
            .map(|p| p["audit"].clone())
            .unwrap_or(Value::Null)
    };
    let bad = audit_of(&ids[rotten]);
    ensure!(
        bad["failed"].as_u64() > Some(0) && bad["score"].as_f64() < Some(1.0),
        "the corrupted target's audit record: {bad}"
    );
    let honest = holders[1];
    let good = audit_of(&ids[honest]);
    ensure!(
        good["passed"].as_u64() > Some(0) && good["failed"] == 0 && good["score"] == 1.0,
        "an honest target's audit record: {good}"
    );
    ensure!(
        nodes[0].log().contains("audit failed"),
        "the leader logged the failed audits"
    );

    // Two more original targets die: three of the original targets are
    // gone, yet every stripe keeps at least four packets.
    for &i in &holders[1..3] {
        nodes[i].kill();
    }
    // `strew check` (the leader's audits) names the now missing packets by
    // stripe and target and fails, but no stripe is lost.
    let out = nodes[source].cli(&["check", &snapshot, "--json"])?;
    ensure!(!out.status.success(), "a damaged snapshot fails the check");
    let check: Value = serde_json::from_slice(&out.stdout)?;
    let gone: Vec<&String> = holders[1..3].iter().map(|&i| &ids[i]).collect();
    let missing = check["missing"].as_array().cloned().unwrap_or_default();
    ensure!(
        check["method"] == "audit"
            && check["lost"] == 0
            && check["degraded"].as_u64() > Some(0)
            && !missing.is_empty()
            && missing.iter().all(|m| {
                m["stripe"].as_u64().is_some_and(|s| s < stripes)
                    && gone.iter().any(|d| m["target"] == d.as_str())
            }),
        "{check}"
    );
    // `--read-data` downloads every packet and finds the same damage.
    let out = nodes[source].cli(&["check", &snapshot, "--read-data", "--json"])?;
    ensure!(!out.status.success(), "a damaged snapshot fails the check");
    let read: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        read["method"] == "read"
            && read["lost"] == 0
            && read["degraded"] == check["degraded"]
            && read["missing"].as_array().map(Vec::len) == Some(missing.len()),
        "{read} against the audits' {check}"
    );
    nodes[source].restore_identical(
        &snapshot,
        &work.path().join("restored"),
        &tree,
        &["a.bin", "b.txt"],
    )?;
    eprintln!(
        "repair: {lost} packets of {stripes} stripes rebuilt within {repair_secs:.1} s of the kill; \
         corrupted target's audit record {bad}"
    );
    Ok(())
}
