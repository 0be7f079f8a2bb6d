//! Adversary: one huge plan. A hostile node joins a small open grid; then
//! an in-test client holding its identity asks the coordinator, over and
//! over, to plan 60,000 one-byte packets at once (about 3.3 MB of CBOR,
//! just under the manager protocol's 4 MiB message bound; one raft entry of
//! some 7.5 MB had it been proposed). The manager refuses each
//! as `too_large` before placing or proposing anything (a plan names at
//! most `MAX_PLAN_CHUNKS` chunks), so the coordinator group keeps
//! committing: an honest backup from another node commits meanwhile, and
//! the group's raft log gains no entry for the hostile plans. Before the
//! bound, one such plan wedged the group for minutes ("no quorum").

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use strew_coordinator::manager::MAX_PLAN_CHUNKS;
use strew_coordinator::{DataId, GeoPoint, PacketId, Redundancy};
use strew_overlay::manager::wire::{
    BackupParams, ChunkPlan, Compression, ConvergenceScope, PacketSpec, PlanRequest,
};
use strew_overlay::{ManagerRequest, ManagerResponse, RefusalCode};
use strew_tests::{Node, NodeOptions, cities};

use crate::manager_client::{SmallGrid, honest_backup, manager_client, next_answer, take_identity};

const HONEST_TARGETS: usize = 3;
/// Packets in each hostile plan (erasure 2+1: three packets a chunk).
const PACKETS: usize = 60_000;

fn options(location: String) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.storage = "64MiB".into();
    o.announce_interval = "1s".into();
    o.peer_ttl = "6s".into();
    o
}

/// A plan of `PACKETS` one-byte packets.
fn huge_plan(location: GeoPoint) -> Result<PlanRequest> {
    Ok(PlanRequest {
        set: "huge".into(),
        location,
        params: BackupParams {
            backup_distance: "..".parse()?,
            spread: "..".parse()?,
            redundancy: Redundancy::Erasure { k: 2, m: 1 },
            compression: Compression::None,
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
            sync_interval_secs: None,
        },
        chunks: (0..PACKETS / 3)
            .map(|i| {
                let name = (i as u64).to_le_bytes();
                ChunkPlan {
                    data_id: DataId(*blake3::hash(&name).as_bytes()),
                    packets: (0..3u8)
                        .map(|j| PacketSpec {
                            packet_id: PacketId::of(&[&name[..], &[j]].concat()),
                            size: 1,
                        })
                        .collect(),
                }
            })
            .collect(),
        exclude: Vec::new(),
        extend: None,
    })
}

/// What the hostile client saw.
#[derive(Default, Debug)]
struct Outcome {
    refused_too_large: usize,
    other: Vec<String>,
    slowest: Duration,
}

/// Sends huge plans one after the other until `until` or `count` answers.
async fn hostile(
    key: Keypair,
    coordinator: PeerId,
    addr: Multiaddr,
    location: GeoPoint,
    count: usize,
    until: Instant,
) -> Result<Outcome> {
    let mut swarm = manager_client(key, Duration::from_secs(60))?;
    swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(coordinator)))?;
    let plan = huge_plan(location)?;
    let mut out = Outcome::default();
    for _ in 0..count {
        ensure!(Instant::now() < until, "the hostile client ran out of time");
        let sent = Instant::now();
        swarm
            .behaviour_mut()
            .send_request(&coordinator, ManagerRequest::Plan(plan.clone()));
        let (_, answer) = next_answer(&mut swarm, until).await?;
        out.slowest = out.slowest.max(sent.elapsed());
        match answer {
            Ok(ManagerResponse::Refused(r)) if r.code == RefusalCode::TooLarge => {
                out.refused_too_large += 1
            }
            Ok(other) => out
                .other
                .push(format!("{other:?}").chars().take(300).collect()),
            Err(e) => out.other.push(e),
        }
    }
    Ok(out)
}

#[test]
fn a_huge_plan_is_refused_and_an_honest_backup_still_commits() -> Result<()> {
    let places = cities(2 + HONEST_TARGETS)?;
    let mut grid = SmallGrid::start(
        options(places[0].location()),
        places[1..].iter().map(|c| options(c.location())).collect(),
    )?;
    let last_log = |node: &Node| -> Option<u64> {
        let status = node.daemon_status().ok()?;
        status["group"]["last_log"].as_u64()
    };
    let log_before = last_log(&grid.coordinator);

    // The last node's identity goes to the hostile client.
    let key = take_identity(grid.nodes.last_mut().context("a hostile node")?)?;
    let city = places.last().context("a hostile city")?;
    let location = GeoPoint::new(city.lat, city.lon)?;
    let addr = grid.manager_addr()?;
    let peer: PeerId = grid.manager_id.parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let until = Instant::now() + Duration::from_secs(120);
    let flood = runtime.spawn(hostile(key, peer, addr, location, 6, until));

    // Meanwhile an honest backup from another node commits.
    let honest = Instant::now();
    honest_backup(&grid.nodes[0], &grid.coordinator, 7)?;
    let honest_took = honest.elapsed();
    let seen = runtime.block_on(flood)??;
    runtime.shutdown_background();
    eprintln!(
        "FIGURE big plan: {} plans of {PACKETS} packets refused as too large (slowest answer {:?}); honest 1 MB backup committed in {honest_took:?}; raft log {log_before:?} -> {:?}",
        seen.refused_too_large,
        seen.slowest,
        last_log(&grid.coordinator)
    );
    ensure!(
        seen.other.is_empty(),
        "a huge plan was not refused as too large: {:?}",
        seen.other
    );
    ensure!(seen.refused_too_large == 6, "{seen:?}");
    ensure!(
        PACKETS / 3 > MAX_PLAN_CHUNKS,
        "the hostile plan must exceed the bound"
    );
    Ok(())
}
