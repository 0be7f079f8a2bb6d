//! A closed grid on real processes: nodes join only with a join token of
//! the grid key (`strew grid invite`, `strew init --join`), and the manager
//! enforces the token's subscription — its source storage quota and its
//! expiry (`strew grid renew`) — and lists members with their subscription
//! and usage (`strew grid members --json`).
//!
//! Before it, closed grids existed only in the coordinator library: every
//! node got the default plan from its self-declared `--storage`.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{Node, NodeOptions, cities, noise, wait_for};

fn backup(node: &Node, tree: &str) -> Result<std::process::Output> {
    node.cli(&["backup", tree, "--redundancy", "replicas:2", "--json"])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn members(founder: &Node) -> Result<Vec<Value>> {
    match founder.cli_json(&["grid", "members", "--json"])? {
        Value::Array(list) => Ok(list),
        other => anyhow::bail!("grid members --json is not a list: {other}"),
    }
}

fn member<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|m| m["node_id"] == id)
}

/// Starts the founder of a closed grid (with `extra` flags) and waits
/// until it leads; returns it and its bootstrap address.
fn closed_founder(location: String, extra: &[&str]) -> Result<(Node, String)> {
    let mut first = NodeOptions::at(location).founder();
    first.closed = true;
    first.extra.extend(extra.iter().map(|s| s.to_string()));
    let founder = Node::start(first)?;
    let boot = founder.bootstrap_addr()?;
    let founder_id = founder.node_id()?;
    wait_for("the founder to lead", Duration::from_secs(30), || {
        (founder.daemon_status().ok()?["manager"].as_str() == Some(founder_id.as_str()))
            .then_some(())
    })?;
    Ok((founder, boot))
}

/// A join token from the founder (`strew grid invite` with `extra`).
fn invite(founder: &Node, extra: &[&str]) -> Result<String> {
    let mut args = vec!["grid", "invite", "--json"];
    args.extend_from_slice(extra);
    let v = founder.cli_json(&args)?;
    ensure!(v["expires"].as_u64().is_some(), "no expiry in {v}");
    Ok(v["token"].as_str().context("token")?.to_string())
}

/// A node at `location` that joins with `token`.
fn joined(location: String, boot: &str, token: String) -> Result<Node> {
    let mut o = NodeOptions::at(location).bootstrap(boot.to_string());
    o.join_token = Some(token);
    Node::start(o)
}

#[test]
fn a_closed_grid_admits_only_invited_nodes_and_enforces_their_subscription() -> Result<()> {
    let places = cities(5)?;
    // A lapsed subscriber's snapshots are kept this long, then deleted.
    let (founder, boot) = closed_founder(places[0].location(), &["--subscription-grace", "8s"])?;
    let founder_id = founder.node_id()?;
    let invite = |extra: &[&str]| invite(&founder, extra);
    let joined = |i: usize, token: String| joined(places[i].location(), &boot, token);
    let source = joined(
        1,
        invite(&[
            "--source-storage",
            "1MiB",
            "--network-per-day",
            "700KiB",
            "--expires",
            "1h",
        ])?,
    )?;
    let target_b = joined(2, invite(&[])?)?;
    let target_c = joined(3, invite(&["--target-storage", "32MiB"])?)?;
    let stranger = Node::start(NodeOptions::at(places[4].location()).bootstrap(boot.clone()))?;
    let ids: Vec<String> = [&source, &target_b, &target_c]
        .iter()
        .map(|n| n.node_id())
        .collect::<Result<_>>()?;
    let stranger_id = stranger.node_id()?;

    // The invited nodes are admitted; the stranger is not, though in view.
    let list = wait_for(
        "the invited nodes to be members",
        Duration::from_secs(60),
        || {
            let list = members(&founder).ok()?;
            ids.iter()
                .all(|id| member(&list, id).is_some())
                .then_some(list)
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; source log:\n{}", source.log()))?;
    ensure!(
        founder.peer_ids()?.contains(&stranger_id),
        "the founder never saw the stranger"
    );
    ensure!(
        member(&list, &stranger_id).is_none(),
        "a node without a token joined the closed grid: {list:?}"
    );
    let founder_entry = member(&list, &founder_id).context("the founder is a member")?;
    ensure!(founder_entry["role"] == "coordinator", "{founder_entry}");
    let s = member(&list, &ids[0]).context("source")?;
    ensure!(s["role"] == "node", "{s}");
    ensure!(s["subscription"]["source_storage"] == 1u64 << 20, "{s}");
    ensure!(s["subscription"]["expires_at"].as_u64().is_some(), "{s}");
    let c = member(&list, &ids[2]).context("target c")?;
    ensure!(c["subscription"]["target_storage"] == 32u64 << 20, "{c}");

    // The token carried the grid's convergence secret; a node without one
    // is never given it.
    let secret = |n: &Node| fs::read_to_string(n.data_dir().join("grid-convergence.key")).ok();
    let founders = secret(&founder).context("the founder's convergence secret")?;
    for node in [&source, &target_b, &target_c] {
        ensure!(
            secret(node) == Some(founders.clone()),
            "an invited node lacks the secret"
        );
    }
    ensure!(
        secret(&stranger).is_none(),
        "a node without a token was given the grid's convergence secret"
    );

    let work = tempfile::tempdir()?;
    let small = work.path().join("small");
    fs::create_dir_all(&small)?;
    fs::write(small.join("a.bin"), noise(200_000, 1))?;
    let small_s = small.to_str().context("utf-8")?;
    let big = work.path().join("big");
    fs::create_dir_all(&big)?;
    fs::write(big.join("b.bin"), noise(2_000_000, 2))?;
    let big_s = big.to_str().context("utf-8")?;

    // A node without a token can neither back up nor be a target.
    let out = backup(&stranger, small_s)?;
    ensure!(!out.status.success(), "the stranger backed up");
    ensure!(
        stderr(&out).contains("closed grid") && stderr(&out).contains("join token"),
        "unclear refusal: {}",
        stderr(&out)
    );

    // The invited source backs up within its quota...
    let out = backup(&source, small_s)?;
    ensure!(
        out.status.success(),
        "an invited source's small backup failed: {}",
        stderr(&out)
    );
    let list = members(&founder)?;
    let used = member(&list, &ids[0]).context("source")?["usage"]["source_stored_bytes"]
        .as_u64()
        .context("usage")?;
    ensure!(used >= 400_000, "two replicas of 200 kB charged as {used}");
    let stored: u64 = list
        .iter()
        .filter_map(|m| m["usage"]["target_stored_bytes"].as_u64())
        .sum();
    ensure!(stored >= used, "targets store {stored} of {used}");
    // ...and not beyond it.
    let out = backup(&source, big_s)?;
    ensure!(
        !out.status.success(),
        "a backup beyond the quota went through"
    );
    ensure!(
        stderr(&out).contains("source quota exceeded"),
        "unclear refusal: {}",
        stderr(&out)
    );

    // An expired subscription: new backups are refused with a clear message.
    founder.cli_json(&["grid", "renew", &ids[0], "--expires", "1s", "--json"])?;
    let refusal = wait_for(
        "the subscription to expire",
        Duration::from_secs(20),
        || {
            let out = backup(&source, small_s).ok()?;
            let text = stderr(&out);
            (!out.status.success() && text.contains("expired")).then_some(text)
        },
    )?;
    ensure!(refusal.contains("renew"), "unclear refusal: {refusal}");
    // Renewed, it backs up again.
    founder.cli_json(&["grid", "renew", &ids[0], "--expires", "1h", "--json"])?;
    let out = backup(&source, small_s)?;
    ensure!(
        out.status.success(),
        "a renewed source's backup failed: {}",
        stderr(&out)
    );

    // The network quota: the small backup's ~400 kB of uploads count today,
    // so a new 300 kB tree (~600 kB at two replicas) would pass 700 KiB.
    let list = members(&founder)?;
    let moved = member(&list, &ids[0]).context("source")?["usage"]["network_bytes_today"]
        .as_u64()
        .context("network usage")?;
    ensure!(moved >= 400_000, "today's traffic counted as {moved}");
    let other = work.path().join("other");
    fs::create_dir_all(&other)?;
    fs::write(other.join("c.bin"), noise(300_000, 3))?;
    let out = backup(&source, other.to_str().context("utf-8")?)?;
    ensure!(
        !out.status.success() && stderr(&out).contains("network quota exceeded"),
        "a backup past the day's network quota: {}",
        stderr(&out)
    );

    // Lapsed past the grace: the leader forgets the source's snapshots and
    // every target deletes their packets (snapshot roots, which the source
    // keeps with no manager, stay).
    let data_packets = |nodes: &[&Node]| -> Option<u64> {
        let mut sum = 0;
        for n in nodes {
            let s = n.daemon_status().ok()?;
            sum += s["storage"]["packets"].as_u64()? - s["storage"]["root_packets"].as_u64()?;
        }
        Some(sum)
    };
    let holders = [&founder, &target_b, &target_c];
    ensure!(
        data_packets(&holders).is_some_and(|n| n > 0),
        "the targets hold the source's packets"
    );
    founder.cli_json(&["grid", "renew", &ids[0], "--expires", "1s", "--json"])?;
    wait_for(
        "the lapsed source's snapshots to be forgotten and their packets deleted",
        Duration::from_secs(90),
        || {
            let snapshots = source.cli_json(&["snapshots", "--json"]).ok()?;
            (snapshots.as_array()?.is_empty() && data_packets(&holders)? == 0).then_some(())
        },
    )
    .with_context(|| {
        format!(
            "{:?} data packets left; founder log tail:\n{}",
            data_packets(&holders),
            founder.log_tail(20)
        )
    })?;
    ensure!(
        founder
            .log()
            .contains("forgot snapshots of sources whose subscription expired"),
        "the leader forgot them"
    );
    Ok(())
}

/// A token's bandwidth (claim 24): the invited target limits its own packet
/// transfers to it (`init --join` writes it into its config) and the
/// manager gives it as the target's cap in every plan, so the source paces
/// its uploads to that target. Replicas:2 over the founder and the capped
/// target put a full copy of 1.5 MB of noise on the capped one: at 256 KiB/s
/// that upload cannot finish in under about 5 s (a lower bound, so the
/// check cannot flake on a slow machine).
#[test]
fn a_tokens_bandwidth_caps_the_uploads_to_its_target() -> Result<()> {
    const CAP: u64 = 256 * 1024;
    let places = cities(3)?;
    let (founder, boot) = closed_founder(places[0].location(), &[])?;
    let invite = |extra: &[&str]| invite(&founder, extra);
    let joined = |i: usize, token: String| joined(places[i].location(), &boot, token);
    let source = joined(1, invite(&[])?)?;
    let capped = joined(2, invite(&["--bandwidth", "256KiB"])?)?;
    ensure!(
        capped.daemon_status()?["bandwidth_limit"].as_u64() == Some(CAP),
        "the invited target limits itself to its subscription's bandwidth"
    );
    founder.wait_for_manager_view(3, Duration::from_secs(60))?;
    let capped_id = capped.node_id()?;
    wait_for(
        "the capped target's subscription in the member list",
        Duration::from_secs(60),
        || {
            let list = members(&founder).ok()?;
            let m = member(&list, &capped_id)?;
            (m["subscription"]["bandwidth"].as_u64() == Some(CAP)).then_some(())
        },
    )?;

    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    let size = 1_500_000u64;
    fs::write(tree.join("noise.bin"), noise(size as usize, 24))?;
    let started = std::time::Instant::now();
    let out = backup(&source, tree.to_str().context("utf-8 path")?)?;
    let took = started.elapsed();
    ensure!(out.status.success(), "backup: {}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let paced = v["paced_targets"].as_array().cloned().unwrap_or_default();
    ensure!(paced.len() == 1, "exactly the capped target is paced: {v}");
    // Everything but a quarter second's burst moves at the cap.
    let floor = Duration::from_secs_f64((size - CAP / 4) as f64 / CAP as f64 * 0.9);
    ensure!(
        took >= floor,
        "{size} bytes reached a {CAP} B/s target in {took:?} (at least {floor:?} expected)"
    );
    // The copy is whole: it restores.
    let snapshot = v["snapshot"].as_str().context("snapshot id")?;
    source.restore_identical(
        snapshot,
        &work.path().join("restored"),
        &tree,
        &["noise.bin"],
    )?;
    Ok(())
}
