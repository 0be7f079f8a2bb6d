//! Location evidence on a real loopback grid (SPEC R13): every node runs on
//! 127.0.0.1, so round trips take a fraction of a millisecond and any claim
//! of a city hundreds of kilometres from the coordinators is refuted by
//! physics. With `--location-check enforce` a backup that needs targets
//! 500+ km away is refused, and the refusal names the refuted claims; the
//! two coordinators (trusted observers, claiming Paris and a suburb) are
//! consistent. Other process tests run with the default `warn`.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{Node, NodeOptions, wait_for};

fn options(location: &str) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.announce_interval = "1s".into();
    o.peer_ttl = "20s".into();
    o.extra
        .extend(["--location-check".into(), "enforce".into()]);
    o
}

fn evidence(peers: &[Value], id: &str) -> Option<(String, u64, u64)> {
    let p = peers.iter().find(|p| p["node_id"].as_str() == Some(id))?;
    let e = &p["location_evidence"];
    Some((
        e["verdict"].as_str()?.to_string(),
        e["consistent"].as_u64()?,
        e["refuted"].as_u64()?,
    ))
}

#[test]
fn enforce_refuses_a_backup_whose_far_targets_are_refuted_by_loopback_rtts() -> Result<()> {
    // Paris founds the grid; Versailles is admitted as the second coordinator.
    let a = Node::start(options("48.8566,2.3522").founder())?;
    let boot = a.bootstrap_addr()?;
    let mut b = options("48.80,2.13").bootstrap(boot.clone()); // Versailles, ~17 km
    b.extra.push("--coordinator".into());
    let b = Node::start(b)?;
    a.admit(&b)?;
    let mut far = Vec::new();
    for city in ["52.52,13.405", "40.4168,-3.7038", "41.9028,12.4964"] {
        far.push(Node::start(options(city).bootstrap(boot.clone()))?);
    }
    let far_ids: Vec<String> = far.iter().map(Node::node_id).collect::<Result<_>>()?;
    let b_id = b.node_id()?;

    // Both coordinators are trusted observers: once both have reported,
    // every far claim is refuted twice and the suburb is consistent.
    let peers = wait_for(
        "two coordinators' RTTs to refute the far claims",
        Duration::from_secs(60),
        || {
            let peers = a.peers().ok()?;
            let all_far = far_ids.iter().all(|id| {
                evidence(&peers, id).is_some_and(|(v, _, refuted)| v == "refuted" && refuted >= 2)
            });
            let near = evidence(&peers, &b_id)
                .is_some_and(|(v, c, r)| v == "consistent" && c >= 1 && r == 0);
            (all_far && near).then_some(peers)
        },
    )
    .with_context(|| format!("log of a:\n{}", a.log()))?;
    ensure!(
        peers.iter().all(|p| p["location_evidence"].is_object()),
        "every peers entry carries location_evidence: {peers:?}"
    );

    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("file"), b"far away, or so they say\n".repeat(100))?;
    let out = a.cli(&[
        "backup",
        tree.to_str().context("utf-8 path")?,
        "--backup-distance",
        "500km..",
        "--redundancy",
        "replicas:2",
        "--json",
    ])?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(!out.status.success(), "the backup must be refused: {text}");
    ensure!(
        text.contains("location_check = enforce") && text.contains("claims"),
        "the refusal names the refuted claims: {text}"
    );
    ensure!(
        far_ids.iter().any(|id| text.contains(id.as_str())),
        "a refuted node is named: {text}"
    );
    for node in &far {
        ensure!(
            node.stored_packets()? == 0,
            "a refuted node received packets"
        );
    }
    Ok(())
}
