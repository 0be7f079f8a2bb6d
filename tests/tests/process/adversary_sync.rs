//! Adversary: a fake-node flood through grid sync. A real `strew` node with
//! a small grid-view cap is joined by an in-test libp2p client that is its
//! first peer, so the victim pulls the grid view from it; the client answers
//! every page with validly signed announcements of nodes that do not exist
//! (three times the cap), with no end. The victim's view stays under its
//! cap, it stops following the attacker's pages at its page limit, and it
//! keeps serving.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, request_response, tcp, yamux};
use strew_overlay::announcement::{Announcement, PROTOCOL_VERSION};
use strew_overlay::budget::InboundBudget;
use strew_overlay::sync::{
    MAX_PAGE, MAX_SYNC_PAGES, SYNC_PROTOCOL, SignedBytes, SyncCodec, SyncResponse,
};
use strew_tests::{Node, NodeOptions, cities, wait_for};

/// The victim's grid-view cap in this test.
const CAP: usize = 1000;
/// Fake nodes the attacker offers (three times the cap).
const FAKES: usize = 3 * CAP;

/// A signed announcement of a node that does not exist.
fn fake(now_ms: u64, i: usize) -> Result<Vec<u8>> {
    let key = Keypair::generate_ed25519();
    let node = strew_overlay::peer::node_id_of_key(&key.public())
        .ok_or_else(|| anyhow::anyhow!("not an ed25519 key"))?;
    let ann = Announcement {
        protocol_version: PROTOCOL_VERSION,
        node_id: node.0,
        issued_at: now_ms,
        valid_for_secs: 3600,
        lat: -60.0 + (i % 120) as f64,
        lon: -170.0 + (i % 340) as f64,
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
    Ok(ann.sign(&key)?)
}

/// Connects to the victim and answers its grid-sync requests with pages of
/// fake announcements (each page names a `next`), until `until`. Returns how
/// many announcements it served.
async fn attack(victim: PeerId, addr: Multiaddr, until: Instant) -> Result<usize> {
    let now = strew_overlay::now_ms();
    let pool: Vec<Vec<u8>> = (0..FAKES).map(|i| fake(now, i)).collect::<Result<_>>()?;
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                SyncCodec::new(InboundBudget::new(16 << 20)),
                [(
                    StreamProtocol::new(SYNC_PROTOCOL),
                    request_response::ProtocolSupport::Full,
                )],
                request_response::Config::default(),
            )
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(victim)))?;
    let mut served = 0usize;
    while Instant::now() < until {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), swarm.next()).await
        else {
            continue;
        };
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            message: request_response::Message::Request { channel, .. },
            ..
        }) = event
        {
            // Page after page, never the last one.
            let page: Vec<SignedBytes> = (0..MAX_PAGE as usize)
                .map(|j| SignedBytes(pool[(served + j) % pool.len()].clone()))
                .collect();
            served += page.len();
            let next = Some(strew_overlay::peer::node_id_of_key(
                &Keypair::generate_ed25519().public(),
            ))
            .flatten();
            let _ = swarm.behaviour_mut().send_response(
                channel,
                SyncResponse {
                    announcements: page,
                    next,
                },
            );
        }
    }
    Ok(served)
}

#[test]
fn a_fake_node_flood_through_grid_sync_stays_under_the_view_cap() -> Result<()> {
    let place = cities(1)?.remove(0);
    let mut options = NodeOptions::at(place.location());
    options.extra = vec!["--max-grid-nodes".into(), CAP.to_string()];
    let victim = Node::start(options)?;
    let addr: Multiaddr = victim.bootstrap_addr()?.parse()?;
    let addr: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    let peer: PeerId = victim.node_id()?.parse()?;

    let runtime = tokio::runtime::Runtime::new()?;
    let attacker = runtime.spawn(attack(peer, addr, Instant::now() + Duration::from_secs(40)));
    // The victim takes in the flood up to its cap.
    wait_for("the victim's view to fill", Duration::from_secs(40), || {
        let peers = victim.daemon_status().ok()?["peers"].as_u64()?;
        (peers as usize >= CAP / 2).then_some(())
    })?;
    let mut largest = 0usize;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let status = victim.daemon_status()?;
        largest = largest.max(status["peers"].as_u64().unwrap_or(0) as usize);
    }
    let served = runtime.block_on(attacker)??;
    eprintln!(
        "FIGURE grid-sync flood: {served} fake announcements served, victim's view at most {largest} nodes (cap {CAP})"
    );
    ensure!(
        served > CAP,
        "the attack offered only {served} announcements"
    );
    ensure!(
        largest <= CAP,
        "the view grew to {largest} nodes past its cap of {CAP}"
    );
    ensure!(
        served <= (MAX_SYNC_PAGES * MAX_PAGE) as usize,
        "the victim followed {served} announcements' worth of pages past its page limit"
    );
    ensure!(victim.daemon_status().is_ok(), "the victim stopped serving");
    Ok(())
}

/// The same flood against a grid's founding coordinator (the leader of a
/// one-member group, open grid): the fake nodes enter its grid view, but
/// none announces a proof-of-work stamp, so the leader's join gate keeps
/// every one of them out of replicated state and the raft log barely moves.
#[test]
fn a_fake_node_flood_does_not_reach_the_leaders_replicated_state() -> Result<()> {
    let place = cities(1)?.remove(0);
    let mut options = NodeOptions::at(place.location()).founder();
    options
        .extra
        .extend(["--max-grid-nodes".into(), CAP.to_string()]);
    let victim = Node::start(options)?;
    victim.wait_for_manager_view(1, Duration::from_secs(60))?;
    let commit_index = |node: &Node| -> Option<u64> {
        node.daemon_status().ok()?["group"]["commit_index"].as_u64()
    };
    let online = |node: &Node| -> Option<u64> {
        node.control("manager", serde_json::Value::Null).ok()?["online"].as_u64()
    };
    let before = wait_for("the group's commit index", Duration::from_secs(30), || {
        commit_index(&victim)
    })?;
    let addr: Multiaddr = victim.bootstrap_addr()?.parse()?;
    let addr: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    let peer: PeerId = victim.node_id()?.parse()?;

    let runtime = tokio::runtime::Runtime::new()?;
    let attacker = runtime.spawn(attack(peer, addr, Instant::now() + Duration::from_secs(30)));
    wait_for("the victim's view to fill", Duration::from_secs(30), || {
        let peers = victim.daemon_status().ok()?["peers"].as_u64()?;
        (peers as usize >= CAP / 2).then_some(())
    })?;
    // Several grid-sync ticks with the fake nodes in view.
    let mut most_online = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        most_online = most_online.max(online(&victim).unwrap_or(0));
    }
    let after = commit_index(&victim).unwrap_or(before);
    let served = runtime.block_on(attacker)??;
    eprintln!(
        "FIGURE grid-sync flood on a leader: {served} fake announcements served, at most {most_online} nodes in replicated state, raft log {before} -> {after}"
    );
    ensure!(
        served > CAP,
        "the attack offered only {served} announcements"
    );
    ensure!(
        most_online <= 1,
        "{most_online} nodes entered replicated state: fake nodes without a stamp got in"
    );
    ensure!(
        after.saturating_sub(before) <= 20,
        "the raft log grew by {} entries during the flood",
        after.saturating_sub(before)
    );
    // Once the flood stops, the leader's CPU goes back to idle (a resource
    // measure over a 10 s window after a few seconds' settling).
    std::thread::sleep(Duration::from_secs(5));
    let window = Duration::from_secs(10);
    let cpu_before = victim.cpu_time().context("victim CPU time")?;
    std::thread::sleep(window);
    let busy = victim.cpu_time().context("victim CPU time")? - cpu_before;
    let share = busy.as_secs_f64() / window.as_secs_f64();
    eprintln!(
        "FIGURE after the flood the leader used {:.0} % of a core ({busy:?} in {window:?}) with the fake nodes in its view",
        share * 100.0
    );
    ensure!(
        share < 0.25,
        "the leader stays busy after the flood: {:.0} % of a core",
        share * 100.0
    );
    Ok(())
}
