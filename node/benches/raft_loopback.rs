//! The coordinator group over the real overlay on 127.0.0.1: three members
//! (libp2p TCP + Noise + Yamux, `/strew/raft/4`, redb logs and manager
//! databases in temp dirs, default group timings) in one process.
//! Measures commit latency (one `Join` command proposed at a time on the
//! leader, acknowledged once on a majority's disks and applied) and the time
//! from stopping the leader to the next commit on a new leader.
//!
//! `cargo bench -p strew-node --bench raft_loopback` (prints a table;
//! `ROUNDS=n` changes the number of commits, default 300).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use strew_coordinator::{Command, GeoPoint, ManagerConfig, NodeId, NodeProfile};
use strew_node::consensus::overlay::{OverlayRaft, RaftService};
use strew_node::consensus::replica::ManagerReplica;
use strew_node::consensus::{ConsensusMember, GroupConfig, Member, Role, WriteError};
use strew_overlay::config::LocalProfile;
use strew_overlay::{Keypair, MemoryStorage, OverlayConfig, OverlayHandle};

struct Peer {
    overlay: OverlayHandle,
    member: Arc<ConsensusMember>,
    node: NodeId,
    _dir: tempfile::TempDir,
}

async fn start_peer(n: usize, bootstrap: Option<String>) -> Result<Peer> {
    let key = Keypair::generate_ed25519();
    let profile = LocalProfile {
        lat: 45.0 + n as f64,
        lon: 5.0,
        storage_allocated: 1 << 30,
        bandwidth_limit: 0,
        coordinator_eligible: true,
        x25519_public: [n as u8; 32],
    };
    let mut config = OverlayConfig::new(profile);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse()?];
    config.bootstrap = bootstrap
        .into_iter()
        .map(|b| b.parse())
        .collect::<Result<_, _>>()?;
    let (overlay, _task) = strew_overlay::start(
        key.clone(),
        config,
        Arc::new(MemoryStorage::new(1 << 30)),
        None,
    )?;
    let dir = tempfile::tempdir()?;
    let signing = strew_overlay::packet::ticket::signing_key(&key).context("ed25519")?;
    let replica = ManagerReplica::open(
        &dir.path().join("manager.redb"),
        signing,
        strew_coordinator::GroupKey([7; 32]),
        ManagerConfig::default(),
    )
    .await?;
    let transport = Arc::new(OverlayRaft::new(overlay.clone()));
    let endpoint = Arc::new(RaftService::new(transport.clone()));
    overlay.set_raft_endpoint(Some(endpoint.clone()));
    let node = overlay.node_id();
    let member = Arc::new(
        ConsensusMember::start(
            &node,
            &dir.path().join("raft.redb"),
            Arc::new(replica),
            transport,
            GroupConfig::default(),
        )
        .await?,
    );
    endpoint.install(member.clone());
    Ok(Peer {
        overlay,
        member,
        node,
        _dir: dir,
    })
}

async fn listen_addr(overlay: &OverlayHandle) -> Result<String> {
    for _ in 0..100 {
        if let Some(a) = overlay.listen_addrs().first() {
            return Ok(a.to_string());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no listen address")
}

fn command(k: u32) -> Result<Command> {
    let mut id = [0u8; 32];
    id[..4].copy_from_slice(&k.to_be_bytes());
    id[31] = 0x5A;
    let profile = NodeProfile::new(
        NodeId(id),
        GeoPoint::new(f64::from(k % 80), f64::from(k % 170))
            .ok()
            .context("location")?,
        1 << 30,
        0,
    );
    Ok(Command::Join {
        profile,
        token: None,
        at: u64::from(k),
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn run() -> Result<()> {
    let rounds: u32 = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(300);
    let first = start_peer(0, None).await?;
    let boot = listen_addr(&first.overlay).await?;
    let mut peers = vec![first];
    for n in 1..3 {
        peers.push(start_peer(n, Some(boot.clone())).await?);
    }
    let addr0 = listen_addr(&peers[0].overlay).await?;
    peers[0]
        .member
        .form_alone(Member::new(&peers[0].node, addr0))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut voters = 0;
        for p in &peers[1..] {
            let addr = listen_addr(&p.overlay).await?;
            if peers[0].member.admit(&p.node, addr).await.ok() == Some(Role::Voter) {
                voters += 1;
            }
        }
        if voters == 2 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the group did not grow to three voters");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Warm-up.
    for k in 0..20 {
        peers[0].member.execute(command(k)?).await?;
    }
    let mut latencies = Vec::with_capacity(rounds as usize);
    for k in 0..rounds {
        let started = Instant::now();
        peers[0].member.execute(command(1000 + k)?).await?;
        latencies.push(started.elapsed());
    }
    latencies.sort();
    println!("| commit latency, 3 voters on 127.0.0.1, {rounds} commits | value |");
    println!("|---|---|");
    for (name, p) in [("median", 0.5), ("p90", 0.9), ("p99", 0.99)] {
        println!(
            "| {name} | {:.1} ms |",
            percentile(&latencies, p).as_secs_f64() * 1e3
        );
    }
    let total: Duration = latencies.iter().sum();
    println!(
        "| commits per second, one at a time | {:.0} |",
        f64::from(rounds) / total.as_secs_f64()
    );

    // Stop the leader (its raft and its overlay), then commit on whoever leads next.
    let stopped = Instant::now();
    peers[0].member.shutdown().await?;
    peers[0].overlay.shutdown();
    let mut k = 100_000;
    let new_leader = 'outer: loop {
        if stopped.elapsed() > Duration::from_secs(60) {
            bail!("no new leader committed within 60 s");
        }
        for (i, p) in peers.iter().enumerate().skip(1) {
            if !p.member.is_leader() {
                continue;
            }
            k += 1;
            match p.member.execute(command(k)?).await {
                Ok(_) => break 'outer i,
                Err(WriteError::NotLeader { .. } | WriteError::NoQuorum(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!(
        "| leader stopped to first commit on the new leader (member {new_leader}) | {:.2} s |",
        stopped.elapsed().as_secs_f64()
    );
    Ok(())
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}
