//! Nodes behind NAT (SPEC R13), in network namespaces: two public hosts on
//! a bridge (10.77.0.1: coordinator and relay, Paris; 10.77.0.2: the
//! source, Paris too) and two home routers (10.77.0.3, 10.77.0.4), each
//! masquerading (nftables) its own private network with one node behind it
//! (192.168.3.2 claiming Berlin, 192.168.4.2 claiming Madrid). Nothing on
//! the bridge can open a connection to the private nodes.
//!
//! The NATed nodes learn from AutoNAT that they are private, reserve a
//! relay slot on the coordinator and announce the relayed address. They
//! reach the public source directly (connections out of a NAT work), so a
//! backup from Paris that must land 500+ km away (only the two NATed nodes
//! qualify) stores its packets on them directly and restores byte-identical.
//! The two NATed nodes can only reach each other through the relay; DCUtR
//! punches a direct connection between them, and a backup from Madrid that
//! must land 1500+ km away (only Berlin, behind the other NAT) travels over
//! it and restores byte-identical. A packet request over a relayed
//! connection would be refused, and none is sent (checked in the logs). Location check stays at the default `warn`:
//! a LAN claiming far-apart cities is refuted, correctly, and only flagged.
//!
//! Needs root, iproute2 and nftables; without them the test says so and is
//! skipped, not faked.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use strew_tests::netns::{self, Lan};
use strew_tests::{Node, NodeOptions, noise, wait_for};

fn options(ns: String, location: &str, listen_ip: &str) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.netns = Some(ns);
    o.listen = vec![format!("/ip4/{listen_ip}/tcp/4001")];
    o.announce_interval = "1s".into();
    o.peer_ttl = "60s".into();
    o.storage = "64MiB".into();
    o
}

fn reachability(node: &Node) -> Option<(String, Vec<String>)> {
    let s = node.daemon_status().ok()?;
    Some((
        s["reachability"].as_str()?.to_string(),
        s["reachable_addrs"]
            .as_array()?
            .iter()
            .filter_map(|a| a.as_str().map(str::to_string))
            .collect(),
    ))
}

#[test]
fn nodes_behind_nat_are_reached_through_a_relay_and_store_packets_directly() -> Result<()> {
    if !netns::available() || !netns::nft_available() {
        eprintln!(
            "skipped: the NAT test needs root, iproute2 and nftables (apt-get install nftables)"
        );
        return Ok(());
    }
    let mut lan = Lan::new(4)?;
    let behind3 = lan.nat(3)?;
    let behind4 = lan.nat(4)?;

    // The grid's founder coordinates (and relays).
    let mut a = options(lan.host(1), "48.8566,2.3522", &Lan::addr(1));
    a.found_grid = true;
    a.extra.push("--coordinator".into());
    let a = Node::start(a)?;
    let boot = format!("/ip4/{}/tcp/4001/p2p/{}", Lan::addr(1), a.node_id()?);
    let b = Node::start(options(lan.host(2), "48.80,2.13", &Lan::addr(2)).bootstrap(boot.clone()))?;
    let c = Node::start(
        options(behind3, "52.52,13.405", &Lan::private_addr(3)).bootstrap(boot.clone()),
    )?;
    let d = Node::start(
        options(behind4, "40.4168,-3.7038", &Lan::private_addr(4)).bootstrap(boot.clone()),
    )?;
    let nodes = [&a, &b, &c, &d];
    let ids: Vec<String> = nodes.iter().map(|n| n.node_id()).collect::<Result<_>>()?;

    // The NATed nodes learn they are private and listen through the relay.
    for (name, node) in [("Berlin", &c), ("Madrid", &d)] {
        let (_, addrs) = wait_for(
            &format!("{name} (behind NAT) to be private and reachable through the relay"),
            Duration::from_secs(30),
            || {
                let (r, addrs) = reachability(node)?;
                (r == "private" && addrs.iter().any(|a| a.contains("/p2p-circuit")))
                    .then_some((r, addrs))
            },
        )
        .with_context(|| format!("log:\n{}\nlog of the coordinator:\n{}", node.log(), a.log()))?;
        ensure!(
            addrs.iter().all(|a| a.contains(&ids[0])),
            "{name} is reachable only through the coordinator's relay: {addrs:?}"
        );
    }
    let (public, _) = wait_for("the source to be public", Duration::from_secs(20), || {
        reachability(&b).filter(|(r, _)| r == "public")
    })
    .with_context(|| format!("log:\n{}", b.log()))?;
    ensure!(public == "public");

    // Everyone knows the manager and the three others (the manager's own
    // view follows within a grid sync; the backup below retries until then).
    wait_for("the grid to form", Duration::from_secs(30), || {
        nodes
            .iter()
            .all(|n| {
                n.daemon_status().ok().is_some_and(|s| {
                    s["manager"].as_str() == Some(ids[0].as_str())
                        && s["peers"].as_u64().unwrap_or(0) >= 3
                })
            })
            .then_some(())
    })?;

    // A backup only the NATed nodes can hold (500+ km from Paris, two replicas).
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("data.bin"), noise(3 << 20, 15))?;
    std::fs::write(tree.join("note.txt"), "behind two NATs\n".repeat(50))?;
    // The source's tree must be readable inside its namespace: the same
    // file system, so the path works as is.
    let out = wait_for(
        "the backup onto the NATed nodes",
        Duration::from_secs(40),
        || {
            b.cli_json(&[
                "backup",
                tree.to_str()?,
                "--backup-distance",
                "500km..",
                "--redundancy",
                "replicas:2",
                "--json",
            ])
            .ok()
        },
    )
    .with_context(|| format!("log of the source:\n{}", b.log()))?;
    let snapshot = out["snapshot"].as_str().context("snapshot id")?.to_string();
    for (name, node) in [("Berlin", &c), ("Madrid", &d)] {
        ensure!(
            node.stored_packets()? > 0,
            "{name} (behind NAT) holds no packets"
        );
    }
    for (name, node) in [("coordinator", &a), ("source", &b)] {
        ensure!(node.stored_packets()? == 0, "the {name} got packets");
    }
    let log = b.log();
    ensure!(
        !log.contains("packet request over a relayed connection refused"),
        "no packet went over a relay"
    );
    let dest = work.path().join("restored");
    restore_and_compare(&b, &snapshot, &tree, &dest, &["data.bin", "note.txt"])?;

    // The two NATed nodes reach each other only through the relay; DCUtR
    // then punches a direct connection between them. Each dials the other
    // once its relayed address is announced; a dial that fails (under load,
    // before the other's reservation is live) is retried after liveness's
    // `OFFLINE_RETRY` (60 s), so the wait covers one retry.
    wait_for(
        "a hole punch between the two NATed nodes",
        strew_overlay::liveness::OFFLINE_RETRY + Duration::from_secs(30),
        || {
            [&c, &d]
                .iter()
                .any(|n| n.log().contains("hole punch succeeded"))
                .then_some(())
        },
    )
    .with_context(|| format!("log of Berlin:\n{}\nlog of Madrid:\n{}", c.log(), d.log()))?;

    // Madrid (behind NAT) backs up 1500+ km away: only Berlin, behind the
    // other NAT, qualifies (Paris is 1050 km away). The packets travel over
    // the hole-punched connection.
    let before = c.stored_packets()?;
    let small = work.path().join("small");
    std::fs::create_dir_all(&small)?;
    std::fs::write(
        small.join("madrid.txt"),
        "from one NAT to another\n".repeat(200),
    )?;
    let out = wait_for(
        "the backup from Madrid onto Berlin",
        Duration::from_secs(20),
        || {
            d.cli_json(&[
                "backup",
                small.to_str()?,
                "--backup-distance",
                "1500km..",
                "--redundancy",
                "replicas:1",
                "--json",
            ])
            .ok()
        },
    )
    .with_context(|| format!("log of Madrid:\n{}", d.log()))?;
    let second = out["snapshot"].as_str().context("snapshot id")?.to_string();
    ensure!(
        c.stored_packets()? > before,
        "Berlin got no packets from Madrid"
    );
    for node in [&b, &c, &d] {
        ensure!(
            !node
                .log()
                .contains("packet request over a relayed connection refused"),
            "a packet request went over a relay"
        );
    }
    restore_and_compare(
        &d,
        &second,
        &small,
        &work.path().join("restored2"),
        &["madrid.txt"],
    )?;
    drop((a, b, c, d));
    drop(lan);
    Ok(())
}

/// Restores `snapshot` on `node` into `dest` and compares `names` with the originals in `tree`.
fn restore_and_compare(
    node: &Node,
    snapshot: &str,
    tree: &Path,
    dest: &Path,
    names: &[&str],
) -> Result<()> {
    let out = node.cli(&["restore", snapshot, dest.to_str().context("utf-8")?])?;
    ensure!(
        out.status.success(),
        "restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in names {
        let direct = dest.join(name);
        let nested = dest.join(tree.file_name().context("tree name")?).join(name);
        let restored = if direct.exists() { direct } else { nested };
        ensure!(
            std::fs::read(&restored)? == std::fs::read(tree.join(name))?,
            "{name} differs after restore"
        );
    }
    Ok(())
}
