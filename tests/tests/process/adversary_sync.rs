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
    MAX_PAGE, MAX_SYNC_PAGES, SYNC_PROTOCOL, SignedBytes, SyncCodec, SyncRequest, SyncResponse,
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

/// The victim's peer id and its listening address without it.
fn dial_info(victim: &Node) -> Result<(PeerId, Multiaddr)> {
    let addr: Multiaddr = victim.bootstrap_addr()?.parse()?;
    let addr = addr
        .iter()
        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
        .collect();
    Ok((victim.node_id()?.parse()?, addr))
}

/// An in-test libp2p client that speaks only grid sync, dialling `victim`.
fn attacker_swarm(
    victim: PeerId,
    addr: Multiaddr,
) -> Result<libp2p::Swarm<request_response::Behaviour<SyncCodec>>> {
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
    Ok(swarm)
}

/// A full page of fake announcements from `pool`, starting at `from`.
fn fake_page(pool: &[Vec<u8>], from: usize) -> Vec<SignedBytes> {
    (0..MAX_PAGE as usize)
        .map(|j| SignedBytes(pool[(from + j) % pool.len()].clone()))
        .collect()
}

/// Answers the victim's grid-sync requests until `until`: `answer` gets
/// each request and how many announcements were served so far, and gives
/// the page to send back. Returns the requests answered and the
/// announcements served.
async fn serve_sync(
    victim: PeerId,
    addr: Multiaddr,
    until: Instant,
    mut answer: impl FnMut(&SyncRequest, usize) -> SyncResponse,
) -> Result<(Vec<SyncRequest>, usize)> {
    let mut swarm = attacker_swarm(victim, addr)?;
    let (mut asked, mut served) = (Vec::new(), 0usize);
    while Instant::now() < until {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(500), swarm.next()).await
        else {
            continue;
        };
        if let SwarmEvent::Behaviour(request_response::Event::Message {
            message:
                request_response::Message::Request {
                    request, channel, ..
                },
            ..
        }) = event
        {
            let page = answer(&request, served);
            served += page.announcements.len();
            asked.push(request);
            let _ = swarm.behaviour_mut().send_response(channel, page);
        }
    }
    Ok((asked, served))
}

/// Connects to the victim and answers its grid-sync requests with pages of
/// fake announcements (each page names a `next`), until `until`. Returns
/// the pages it answered to full syncs (a refresh, a page of one asked of
/// a peer missing from the view, is not one) and the announcements served.
async fn attack(victim: PeerId, addr: Multiaddr, until: Instant) -> Result<(usize, usize)> {
    let now = strew_overlay::now_ms();
    let pool: Vec<Vec<u8>> = (0..FAKES).map(|i| fake(now, i)).collect::<Result<_>>()?;
    // Page after page, never the last one.
    let (asked, served) = serve_sync(victim, addr, until, |_, served| SyncResponse {
        announcements: fake_page(&pool, served),
        next: strew_overlay::peer::node_id_of_key(&Keypair::generate_ed25519().public()),
    })
    .await?;
    Ok((asked.iter().filter(|r| r.limit > 1).count(), served))
}

#[test]
fn a_fake_node_flood_through_grid_sync_stays_under_the_view_cap() -> Result<()> {
    let place = cities(1)?.remove(0);
    let mut options = NodeOptions::at(place.location());
    options.extra = vec!["--max-grid-nodes".into(), CAP.to_string()];
    let victim = Node::start(options)?;
    let (peer, addr) = dial_info(&victim)?;

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
    let (pages, served) = runtime.block_on(attacker)??;
    eprintln!(
        "FIGURE grid-sync flood: {served} fake announcements served ({pages} full-sync pages), victim's view at most {largest} nodes (cap {CAP})"
    );
    ensure!(
        served > CAP,
        "the attack offered only {served} announcements"
    );
    ensure!(
        largest <= CAP,
        "the view grew to {largest} nodes past its cap of {CAP}"
    );
    // The refreshes (a page of one, every 2 s, asked of this silent peer)
    // are answered with full pages too, but are not pages of a sync.
    ensure!(
        pages <= MAX_SYNC_PAGES as usize,
        "the victim followed {pages} pages of one sync, past its limit of {MAX_SYNC_PAGES}"
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
    let (peer, addr) = dial_info(&victim)?;

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
    let (_, served) = runtime.block_on(attacker)??;
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

/// A refresh answered by a liar. A victim that already synced its view from
/// two honest nodes is connected by an in-test client that never gossips,
/// so the victim asks it for its own announcement (a grid-sync page of one).
/// The client answers every such refresh with a full page of validly signed
/// announcements of nodes that do not exist, and a full sync with nothing.
/// None of them enters the victim's view: of a refresh answer only the
/// refreshed node's own announcement counts.
#[test]
fn a_refresh_answered_with_a_page_of_strangers_adds_none_of_them() -> Result<()> {
    let places = cities(3)?;
    let first = Node::start(NodeOptions::at(places[0].location()))?;
    let boot = first.bootstrap_addr()?;
    let second = Node::start(NodeOptions::at(places[1].location()).bootstrap(boot.clone()))?;
    let victim = Node::start(NodeOptions::at(places[2].location()).bootstrap(boot))?;
    let view = |node: &Node| node.daemon_status().ok()?["peers"].as_u64();
    // Every honest node sees all three (whether or not a view counts its
    // own node, the three views are then the same size): the victim's
    // honest view cannot grow past that.
    let honest = wait_for(
        "the three honest views to agree",
        Duration::from_secs(30),
        || {
            let sizes = [view(&first)?, view(&second)?, view(&victim)?];
            (sizes[0] >= 2 && sizes.iter().all(|n| *n == sizes[0])).then_some(sizes[0])
        },
    )?;
    let (peer, addr) = dial_info(&victim)?;

    let now = strew_overlay::now_ms();
    let pool: Vec<Vec<u8>> = (0..MAX_PAGE as usize)
        .map(|i| fake(now, i))
        .collect::<Result<_>>()?;
    let runtime = tokio::runtime::Runtime::new()?;
    // Refreshes come every half of the victim's peer TTL (2 s here).
    let liar = runtime.spawn(serve_sync(
        peer,
        addr,
        Instant::now() + Duration::from_secs(15),
        move |request, _| SyncResponse {
            announcements: if request.limit == 1 {
                fake_page(&pool, 0)
            } else {
                Vec::new()
            },
            next: None,
        },
    ));
    let mut largest = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(500));
        largest = largest.max(view(&victim).unwrap_or(0));
    }
    let (asked, served) = runtime.block_on(liar)??;
    let refreshes = asked.iter().filter(|r| r.limit == 1).count();
    eprintln!(
        "FIGURE hostile refresh: {refreshes} refreshes answered with {served} strangers; the victim's view at most {largest} nodes (honest: {honest})"
    );
    ensure!(
        refreshes >= 2,
        "the victim asked the silent client for its announcement {refreshes} times: {asked:?}"
    );
    ensure!(
        served >= 2 * MAX_PAGE as usize,
        "only {served} strangers were offered"
    );
    ensure!(
        largest <= honest,
        "the victim's view grew from {honest} to {largest} nodes on a liar's refresh answers"
    );
    ensure!(victim.daemon_status().is_ok(), "the victim stopped serving");
    drop(first);
    Ok(())
}
