//! A node that sleeps (SIGSTOP, as a closed laptop lid does) longer than its
//! peers' TTL comes back on its own when it wakes. While it sleeps its
//! connections close, its announcements expire from every view, and it
//! expires every peer from its own; the first node of a grid has no
//! bootstrap address to dial. It reconnects through the peers its
//! Kademlia routing table still remembers.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Context;
use strew_tests::{Node, NodeOptions, cities, signal, wait_for};

fn connected(node: &Node) -> Option<u64> {
    node.daemon_status().ok()?["connected_peers"].as_u64()
}

#[test]
fn a_node_that_slept_past_its_peers_ttl_reconnects_when_it_wakes() -> anyhow::Result<()> {
    let places = cities(3)?;
    // The first node is given no bootstrap address, like a grid's founder.
    let first = Node::start(NodeOptions::at(places[0].location()))?;
    let bootstrap = first.bootstrap_addr()?;
    let others = [
        Node::start(NodeOptions::at(places[1].location()).bootstrap(bootstrap.clone()))?,
        Node::start(NodeOptions::at(places[2].location()).bootstrap(bootstrap))?,
    ];
    let sleeper = first.node_id()?;
    let all: Vec<String> = std::iter::once(Ok(sleeper.clone()))
        .chain(others.iter().map(Node::node_id))
        .collect::<Result<_, _>>()?;
    // Each node's view holds the other two.
    let views_whole = || {
        for (node, me) in std::iter::once(&first).chain(&others).zip(&all) {
            let seen: BTreeSet<String> = node.peer_ids().ok()?.into_iter().collect();
            let want: BTreeSet<String> = all.iter().filter(|id| *id != me).cloned().collect();
            (seen == want).then_some(())?;
        }
        Some(())
    };
    wait_for(
        "the three nodes to see each other",
        Duration::from_secs(60),
        &views_whole,
    )?;

    // Sleep until the others have closed its connections and dropped it
    // from their views (TTL 4 s).
    let pid = first.pid().context("the first node runs")?;
    signal(pid, "STOP")?;
    let dropped = wait_for(
        "the others to drop the sleeping node",
        Duration::from_secs(180),
        || {
            others
                .iter()
                .all(|node| {
                    connected(node) == Some(1)
                        && node.peer_ids().is_ok_and(|ids| !ids.contains(&sleeper))
                })
                .then_some(())
        },
    );
    // Asleep for longer than a TTL more: whatever announcement of the others
    // still waits in its sockets is stale when it wakes.
    std::thread::sleep(Duration::from_secs(10));
    signal(pid, "CONT")?;
    dropped?;

    // Awake: connected again and in every view, within a minute.
    wait_for(
        "the node that slept to be back in every view",
        Duration::from_secs(60),
        || {
            views_whole()?;
            (connected(&first)? == 2).then_some(())
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; log of the node that slept:\n{}", first.log_tail(40)))?;
    Ok(())
}
