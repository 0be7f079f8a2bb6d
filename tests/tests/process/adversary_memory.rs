//! Adversary: a memory flood. A real `strew` node (a grid's founder, so it
//! serves the manager and raft protocols) is attacked by two fresh
//! identities (an in-test libp2p client each) that open every raft and
//! manager stream the victim allows and push messages of the largest size
//! each protocol accepts, then hold the streams open for a minute. The
//! victim reserves every message in its inbound budget before reading it,
//! so its resident memory (read from `/proc`, a resource bound, not a
//! timing) stays under its budget plus its own footprint, and it keeps
//! serving: `status` answers, the honest node of its grid stays in its view
//! (gossip), and that node backs up onto it (manager calls and packets).
//! After the flood the honest node is still, or again, in its view.

use std::io;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures::{AsyncRead, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, request_response, tcp, yamux};
use strew_tests::{Node, NodeOptions, cities};

/// The victim's inbound budget for this test.
const BUDGET: &str = "96MiB";
/// The bound the issue sets on the victim's RSS under this attack.
const RSS_BOUND: u64 = 300 * 1024 * 1024;
/// How long the attackers hold their streams open.
const HOLD: Duration = Duration::from_secs(60);

/// Writes a length prefix announcing `len` bytes, sends `len` bytes of
/// junk, then holds the stream open without closing it.
#[derive(Clone)]
struct Flood {
    len: u32,
}

impl request_response::Codec for Flood {
    type Protocol = StreamProtocol;
    type Request = ();
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        Err(io::ErrorKind::Unsupported.into())
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, _: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(())
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&self.len.to_be_bytes()).await?;
        let junk = vec![0xa5u8; 256 * 1024];
        let mut sent = 0usize;
        while sent < self.len as usize {
            let n = junk.len().min(self.len as usize - sent);
            io.write_all(&junk[..n]).await?;
            sent += n;
        }
        // Everything but the last byte the victim waits for: hold it.
        tokio::time::sleep(HOLD).await;
        Ok(())
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, _: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        Ok(())
    }
}

/// One connection of an attacking identity: floods `streams` streams of
/// `protocol` with messages of `len` bytes, and opens a new one for each the
/// victim refuses.
async fn attack(
    key: libp2p::identity::Keypair,
    victim: PeerId,
    addr: Multiaddr,
    protocol: &'static str,
    len: u32,
    streams: usize,
) -> Result<()> {
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                Flood { len },
                [(
                    StreamProtocol::new(protocol),
                    request_response::ProtocolSupport::Outbound,
                )],
                request_response::Config::default()
                    .with_request_timeout(HOLD + Duration::from_secs(30))
                    .with_max_concurrent_streams(4 * streams),
            )
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
        .build();
    swarm.add_peer_address(victim, addr);
    for _ in 0..streams {
        swarm.behaviour_mut().send_request(&victim, ());
    }
    let end = Instant::now() + HOLD + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(1), swarm.next()).await
            && let SwarmEvent::Behaviour(request_response::Event::OutboundFailure { .. }) = event
        {
            // Refused (over the budget): ask again, as an attacker would.
            swarm.behaviour_mut().send_request(&victim, ());
        }
    }
    Ok(())
}

#[test]
fn a_memory_flood_stays_within_the_inbound_budget_and_the_victim_keeps_serving() -> Result<()> {
    let places = cities(2)?;
    let mut options = NodeOptions::at(places[0].location()).founder();
    options
        .extra
        .extend(["--inbound-budget".to_string(), BUDGET.to_string()]);
    let victim = Node::start(options)?;
    let addr: Multiaddr = victim.bootstrap_addr()?.parse()?;
    let victim_id = victim.node_id()?;
    let peer: PeerId = victim_id.parse()?;
    let boot = victim.bootstrap_addr()?;
    let nodes = vec![
        victim,
        Node::start(NodeOptions::at(places[1].location()).bootstrap(boot))?,
    ];
    strew_tests::wait_for_grid(&nodes, &victim_id)?;
    let (victim, honest) = (&nodes[0], &nodes[1]);
    let honest_id = honest.node_id()?;
    let in_view = |v: &Node| -> bool {
        v.peers()
            .map(|p| p.iter().any(|peer| peer["node_id"] == honest_id.as_str()))
            .unwrap_or(false)
    };
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree)?;
    std::fs::write(tree.join("a.bin"), strew_tests::noise(300_000, 3))?;
    let before = victim.rss_bytes().context("victim RSS")?;

    let runtime = tokio::runtime::Runtime::new()?;
    // Two identities, two connections each (one per protocol), every stream
    // the victim allows per connection (8 raft, 4 manager) and more.
    let mut attackers = Vec::new();
    for _ in 0..2 {
        let key = libp2p::identity::Keypair::generate_ed25519();
        for (protocol, streams) in [("/strew/raft/4", 8), ("/strew/manager/6", 4)] {
            attackers.push(runtime.spawn(attack(
                key.clone(),
                peer,
                addr.clone(),
                protocol,
                64 << 20,
                streams,
            )));
        }
    }
    let started = Instant::now();
    let mut peak = before;
    let (mut answered, mut samples, mut seen) = (0, 0, 0);
    let mut backed_up = None;
    while started.elapsed() < HOLD {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(victim.rss_bytes().context("victim alive")?);
        samples += 1;
        if victim.daemon_status().is_ok() {
            answered += 1;
        }
        if in_view(victim) {
            seen += 1;
        }
        // Under the flood, the honest node backs up onto the victim (its
        // manager plans, its packet service stores).
        if backed_up.is_none() && started.elapsed() > Duration::from_secs(10) {
            let t = Instant::now();
            let path = tree.to_str().context("utf-8 path")?;
            let args = ["backup", path, "--redundancy", "replicas:1", "--json"];
            let report = honest.cli_json(&args)?;
            ensure!(report["snapshot"].is_string(), "{report}");
            backed_up = Some(t.elapsed());
        }
    }
    for a in attackers {
        runtime.block_on(a)??;
    }
    let stored = victim.stored_packets()?;
    let after = Instant::now();
    strew_tests::wait_for(
        "the honest node in the victim's view after the flood",
        Duration::from_secs(60),
        || in_view(victim).then_some(()),
    )?;
    eprintln!(
        "FIGURE victim RSS before {} MB, peak under the flood {} MB (budget {BUDGET}, held {HOLD:?}); status answered {answered} of {samples} times; honest node in view {seen} of {samples} samples; honest backup onto the victim took {backed_up:?} ({stored} packets stored); in view {:?} after the flood",
        before >> 20,
        peak >> 20,
        after.elapsed()
    );
    ensure!(
        peak < RSS_BOUND,
        "victim RSS reached {} MB under the flood (bound {} MB)",
        peak >> 20,
        RSS_BOUND >> 20
    );
    ensure!(answered > 0, "the victim stopped answering status");
    ensure!(
        seen > 0,
        "the honest node left the victim's view under the flood"
    );
    ensure!(
        backed_up.is_some() && stored > 0,
        "the honest backup did not reach the victim"
    );
    ensure!(
        victim.daemon_status().is_ok(),
        "the victim does not answer after the flood"
    );
    Ok(())
}
