//! An open grid's join gate end to end: the founder (the leader) asks for a
//! 16-bit proof-of-work stamp. A node that computed one enters replicated
//! state; a node whose stamp is too weak (it computed one of 0 bits) stays in
//! the leader's grid view but never becomes a client, so it is offered no
//! packets. (Its nonce 0 passes 16 bits only with probability 2^-16.)

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use serde_json::Value;
use strew_tests::{Node, NodeOptions, cities, wait_for};

fn with_bits(mut options: NodeOptions, bits: &str) -> NodeOptions {
    options
        .env
        .push(("STREW_JOIN_WORK_BITS".into(), bits.into()));
    options
}

#[test]
fn only_a_node_with_a_strong_enough_stamp_enters_replicated_state() -> Result<()> {
    let places = cities(3)?;
    let founder = Node::start(with_bits(
        NodeOptions::at(places[0].location()).founder(),
        "16",
    ))?;
    founder.wait_for_manager_view(1, Duration::from_secs(60))?;
    let boot = founder.bootstrap_addr()?;
    let stamped = Node::start(with_bits(
        NodeOptions::at(places[1].location()).bootstrap(boot.clone()),
        "16",
    ))?;
    let weak = Node::start(with_bits(
        NodeOptions::at(places[2].location()).bootstrap(boot),
        "0",
    ))?;
    let weak_id = weak.node_id()?;
    // The founder hears of both...
    wait_for(
        "both nodes in the founder's view",
        Duration::from_secs(30),
        || {
            founder
                .peer_ids()
                .ok()?
                .contains(&weak_id)
                .then_some(())
                .filter(|_| founder.peer_ids().is_ok_and(|p| p.len() >= 2))
        },
    )?;
    // ...takes the stamped one in...
    founder.wait_for_manager_view(2, Duration::from_secs(30))?;
    // ...and over several grid-sync ticks never the weak one.
    let online =
        || -> Option<u64> { founder.control("manager", Value::Null).ok()?["online"].as_u64() };
    let mut most = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        std::thread::sleep(Duration::from_millis(500));
        most = most.max(online().unwrap_or(0));
    }
    ensure!(
        most == 2,
        "{most} nodes in replicated state: the weak stamp got its node in (or the stamped one left)"
    );
    ensure!(stamped.daemon_status().is_ok() && weak.daemon_status().is_ok());
    Ok(())
}
