//! Ten real `strew run` processes on 127.0.0.1 joined through one node: every
//! grid view converges, a killed node expires, a restarted node keeps its id.

use std::collections::BTreeSet;
use std::time::Duration;

use strew_tests::{Node, NodeOptions, cities, wait_for};

#[test]
fn ten_nodes_join_through_one_and_see_each_other_then_expire_and_return() -> anyhow::Result<()> {
    let places = cities(10)?;
    let first = Node::start(NodeOptions::at(places[0].location()))?;
    let bootstrap = first.bootstrap_addr()?;
    let mut nodes = vec![first];
    for city in &places[1..] {
        nodes.push(Node::start(
            NodeOptions::at(city.location()).bootstrap(bootstrap.clone()),
        )?);
    }
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect::<Result<_, _>>()?;
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>().len(),
        10,
        "ids are distinct"
    );

    // Every node lists all nine others.
    for (i, node) in nodes.iter().enumerate() {
        let expected: BTreeSet<String> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.clone())
            .collect();
        wait_for(
            &format!("node {i} to see the other nine"),
            Duration::from_secs(60),
            || {
                let seen: BTreeSet<String> = node.peer_ids().ok()?.into_iter().collect();
                (seen == expected).then_some(())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}; log of node {i}:\n{}", node.log()))?;
    }
    // The views carry the declared locations.
    let peers = nodes[1].peers()?;
    let first_entry = peers
        .iter()
        .find(|p| p["node_id"] == ids[0].as_str())
        .expect("node 0 listed");
    assert!((first_entry["location"]["lat"].as_f64().unwrap() - places[0].lat).abs() < 1e-9);
    assert!(first_entry["free_bytes"].as_u64().unwrap() > 0);

    // Kill node 5: everyone else drops it after its TTL (4 s) has passed.
    let gone = ids[5].clone();
    nodes[5].kill();
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != 5) {
        wait_for(
            &format!("node {i} to forget the killed node"),
            Duration::from_secs(30),
            || (!node.peer_ids().ok()?.contains(&gone)).then_some(()),
        )?;
    }

    // Restart it on the same data dir: same NodeId, and it comes back in the views.
    nodes[5].restart()?;
    assert_eq!(
        nodes[5].node_id()?,
        gone,
        "a restarted node keeps its NodeId"
    );
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != 5) {
        wait_for(
            &format!("node {i} to see the restarted node"),
            Duration::from_secs(30),
            || node.peer_ids().ok()?.contains(&gone).then_some(()),
        )?;
    }

    // Graceful shutdown on SIGTERM exits 0.
    let mut last = nodes.pop().expect("ten nodes");
    assert!(
        last.terminate(Duration::from_secs(10))?,
        "SIGTERM exits cleanly"
    );
    assert!(last.log().contains("shutting down"));
    Ok(())
}
