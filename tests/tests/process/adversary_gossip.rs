//! Adversary: many identities from one IP address gossip themselves into a
//! victim's grid view. A real `strew` node with a small budget of new node
//! ids per delivering IP (`STREW_NEW_NODES_PER_IP`) is connected to by
//! [`IDENTITIES`] in-test gossipsub clients, all from 127.0.0.1, each
//! announcing itself (validly signed) every second. Identities are free, so
//! only the per-IP budget holds them back: the victim's view grows by no
//! more than that budget plus its refill over the attack, and it keeps
//! serving.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::StreamExt;
use libp2p::gossipsub::{self, MessageAuthenticity};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId, noise, tcp, yamux};
use strew_overlay::announcement::{Announcement, PROTOCOL_VERSION};
use strew_tests::{Node, NodeOptions, cities, wait_for};

/// New node ids a minute the victim takes in from one IP in this test.
const PER_IP: u64 = 5;
/// Identities the attacker runs, all from 127.0.0.1.
const IDENTITIES: usize = 40;
/// How long the attack lasts.
const ATTACK: Duration = Duration::from_secs(25);

/// `key`'s signed announcement, issued now.
fn announcement(key: &Keypair, i: usize) -> Result<Vec<u8>> {
    let node = strew_overlay::peer::node_id_of_key(&key.public())
        .ok_or_else(|| anyhow::anyhow!("not an ed25519 key"))?;
    let ann = Announcement {
        protocol_version: PROTOCOL_VERSION,
        node_id: node.0,
        issued_at: strew_overlay::now_ms(),
        valid_for_secs: 3600,
        lat: -60.0 + i as f64,
        lon: -170.0 + i as f64,
        storage_allocated: 100 << 30,
        storage_free: 100 << 30,
        bandwidth_limit: 0,
        load: 0.0,
        uptime_secs: 1,
        coordinator_eligible: false,
        x25519_public: [7; 32],
        listen_addrs: Vec::new(),
        external_addrs: Vec::new(),
        behind_nat: false,
        work_nonce: None,
    };
    Ok(ann.sign(key)?)
}

/// One fake identity: connects to the victim and publishes its own
/// announcement every second until `until`. Returns how many it published.
async fn identity(i: usize, victim: Multiaddr, until: Instant) -> Result<usize> {
    let key = Keypair::generate_ed25519();
    let config = strew_overlay::gossip::config(Duration::from_millis(500))?;
    let gossip: gossipsub::Behaviour =
        gossipsub::Behaviour::new(MessageAuthenticity::Signed(key.clone()), config)
            .map_err(anyhow::Error::msg)?;
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| gossip)?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm
        .behaviour_mut()
        .subscribe(&strew_overlay::gossip::topic())?;
    swarm.dial(victim)?;
    let mut published = 0usize;
    let mut next = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let wait = next.saturating_duration_since(Instant::now());
        if let Ok(Some(_event)) = tokio::time::timeout(wait, swarm.next()).await {
            continue;
        }
        next = Instant::now() + Duration::from_secs(1);
        let bytes = announcement(&key, i)?;
        if swarm
            .behaviour_mut()
            .publish(strew_overlay::gossip::topic(), bytes)
            .is_ok()
        {
            published += 1;
        }
    }
    Ok(published)
}

#[test]
fn many_identities_from_one_ip_gossip_no_more_than_its_budget() -> Result<()> {
    let place = cities(1)?.remove(0);
    let mut options = NodeOptions::at(place.location());
    options
        .env
        .push(("STREW_NEW_NODES_PER_IP".into(), PER_IP.to_string()));
    let victim = Node::start(options)?;
    let addr: Multiaddr = victim.bootstrap_addr()?.parse()?;
    let _peer: PeerId = victim.node_id()?.parse()?;

    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let until = started + ATTACK;
    let attackers: Vec<_> = (0..IDENTITIES)
        .map(|i| runtime.spawn(identity(i, addr.clone(), until)))
        .collect();
    // Gossip does deliver: the victim takes in its budget of them...
    wait_for("the first fake nodes in the view", ATTACK, || {
        let peers = victim.daemon_status().ok()?["peers"].as_u64()?;
        (peers >= PER_IP).then_some(())
    })?;
    // ...and no more than the budget plus what it regains over the attack.
    let mut largest = 0u64;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(500));
        largest = largest.max(victim.daemon_status()?["peers"].as_u64().unwrap_or(0));
    }
    let mut published = 0usize;
    for attacker in attackers {
        published += runtime.block_on(attacker)??;
    }
    let elapsed = started.elapsed().as_secs().saturating_add(1);
    let bound = PER_IP + (PER_IP * elapsed).div_ceil(60);
    eprintln!(
        "FIGURE gossip flood: {IDENTITIES} identities from one IP published {published} announcements in {elapsed} s; victim's view at most {largest} nodes (budget {PER_IP}/min, bound {bound})"
    );
    ensure!(
        published >= IDENTITIES,
        "the attack published only {published} announcements"
    );
    ensure!(
        largest <= bound,
        "{largest} fake nodes entered the view from one IP, past the bound of {bound}"
    );
    ensure!(victim.daemon_status().is_ok(), "the victim stopped serving");
    Ok(())
}
