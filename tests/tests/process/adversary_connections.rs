//! Adversary: a connection flood. An in-test client opens 1,100 connections
//! to a real `strew` node from 550 fresh identities (two each, redialling
//! whatever the victim refuses until it holds them or time is up), more
//! than the victim's inbound limit. An honest newcomer that bootstraps from
//! the victim afterwards still joins: the victim keeps slots free by closing
//! the oldest connections of peers it does not know.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::StreamExt;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{SwarmEvent, dummy};
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use strew_tests::{Node, NodeOptions, cities, wait_for};

const IDENTITIES: usize = 550;
const PER_IDENTITY: usize = 2;

fn dial(victim: PeerId, addr: &Multiaddr) -> DialOpts {
    DialOpts::peer_id(victim)
        .condition(PeerCondition::Always)
        .addresses(vec![addr.clone()])
        .build()
}

/// One identity: holds `PER_IDENTITY` connections to the victim, redialling
/// refused attempts until `until`. Counts its established connections in `held`.
async fn hold(
    victim: PeerId,
    addr: Multiaddr,
    until: Instant,
    held: Arc<AtomicUsize>,
) -> Result<()> {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| dummy::Behaviour)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    for _ in 0..PER_IDENTITY {
        swarm.dial(dial(victim, &addr))?;
    }
    while Instant::now() < until {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), swarm.next()).await
        else {
            continue;
        };
        match event {
            SwarmEvent::ConnectionEstablished { .. } => {
                held.fetch_add(1, Ordering::Relaxed);
            }
            SwarmEvent::ConnectionClosed { .. } => {
                held.fetch_sub(1, Ordering::Relaxed);
            }
            SwarmEvent::OutgoingConnectionError { .. } => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                swarm.dial(dial(victim, &addr))?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[test]
fn a_connection_flood_leaves_room_for_an_honest_newcomer() -> Result<()> {
    let places = cities(2)?;
    let victim = Node::start(NodeOptions::at(places[0].location()))?;
    let boot = victim.bootstrap_addr()?;
    let addr: Multiaddr = boot.parse()?;
    let addr: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    let peer: PeerId = victim.node_id()?.parse()?;

    let runtime = tokio::runtime::Runtime::new()?;
    let held = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(300);
    let attackers: Vec<_> = (0..IDENTITIES)
        .map(|_| runtime.spawn(hold(peer, addr.clone(), until, held.clone())))
        .collect();
    // The flood reaches the victim's inbound limit (1,100 handshakes take
    // a few seconds on an idle machine, a minute or more on a loaded one),
    // and is held there a while.
    let mut most = 0;
    let flood_end = Instant::now() + Duration::from_secs(120);
    let mut flooded: Option<Instant> = None;
    while Instant::now() < flood_end
        && flooded.is_none_or(|t| t.elapsed() < Duration::from_secs(10))
    {
        std::thread::sleep(Duration::from_millis(500));
        most = most.max(held.load(Ordering::Relaxed));
        if most >= 600 && flooded.is_none() {
            flooded = Some(Instant::now());
        }
    }
    eprintln!("FIGURE connection flood: at most {most} connections held at once");
    ensure!(
        most >= 600,
        "the flood held only {most} connections: not a flood"
    );
    ensure!(victim.daemon_status().is_ok(), "the victim stopped serving");

    // An honest newcomer bootstraps from the victim and joins the grid.
    let newcomer = Node::start(NodeOptions::at(places[1].location()).bootstrap(boot))?;
    let id = newcomer.node_id()?;
    let joined = Instant::now();
    wait_for(
        "the newcomer in the victim's view",
        Duration::from_secs(90),
        || victim.peer_ids().ok()?.contains(&id).then_some(()),
    )?;
    eprintln!(
        "FIGURE honest newcomer in the victim's view {:?} after its daemon answered, with {} flood connections held",
        joined.elapsed(),
        held.load(Ordering::Relaxed)
    );
    runtime.shutdown_background();
    drop(attackers);
    Ok(())
}
