//! Adversary: a reservation flood. Three hostile `strew` nodes announce
//! 100 GiB each (a source quota of 100 GiB) and join a small grid; then an
//! in-test client holding their identities asks the coordinator for as
//! many huge backups as it will plan (eight plans each, halving the plan
//! when refused), uploading nothing. The coordinator believes only proven
//! room plus a small allowance per target and caps each source's pending
//! bytes, so an honest backup afterwards still fits. Without those bounds
//! the hostile plans reserve every honest target and the honest backup is
//! refused ("0 of them with room").

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use strew_coordinator::{DataId, GeoPoint, PacketId, Redundancy};
use strew_overlay::manager::wire::{
    BackupParams, ChunkPlan, Compression, ConvergenceScope, PacketSpec, PlanRequest,
};
use strew_overlay::{ManagerRequest, ManagerResponse};
use strew_tests::{NodeOptions, cities, wait_for};

use crate::manager_client::{SmallGrid, honest_backup, manager_client, next_answer, take_identity};

/// Room the coordinator grants a target beyond what it has proven.
const ALLOWANCE: &str = "8MiB";
/// Stored bytes one source may hold in plans not yet committed.
const PER_SOURCE: u64 = 6 << 20;
const HOSTILE: usize = 3;
const HONEST_TARGETS: usize = 5;
/// Each hostile packet: 1 MiB; a chunk is three (erasure 2+1).
const PACKET: u64 = 1 << 20;

fn options(location: String, storage: &str) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.storage = storage.into();
    o.announce_interval = "1s".into();
    o.peer_ttl = "6s".into();
    o.extra = vec![
        "--unproven-allowance".into(),
        ALLOWANCE.into(),
        "--pending-per-source".into(),
        format!("{PER_SOURCE}"),
    ];
    o
}

/// A plan of `chunks` fake chunks (3 × 1 MiB packets each) near `location`.
fn hostile_plan(tag: &str, chunks: usize, location: GeoPoint) -> Result<PlanRequest> {
    Ok(PlanRequest {
        set: tag.into(),
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
        chunks: (0..chunks)
            .map(|i| {
                let name = format!("{tag}/{i}");
                ChunkPlan {
                    data_id: DataId(*blake3::hash(name.as_bytes()).as_bytes()),
                    packets: (0..3u8)
                        .map(|j| PacketSpec {
                            packet_id: PacketId::of(&[name.as_bytes(), &[j]].concat()),
                            size: PACKET,
                        })
                        .collect(),
                }
            })
            .collect(),
        exclude: Vec::new(),
        extend: None,
    })
}

/// What one hostile identity reserved: bytes planned, plans accepted, refusals.
#[derive(Default, Debug)]
struct Flood {
    reserved: u64,
    plans: usize,
    refused: usize,
}

/// Connects as `key` to the coordinator and plans as much as it will take:
/// up to eight plans, each as large as the coordinator accepts (halving a
/// refused plan down to one chunk).
async fn flood(
    key: Keypair,
    coordinator: PeerId,
    addr: Multiaddr,
    location: GeoPoint,
    until: Instant,
) -> Result<Flood> {
    let tag = key.public().to_peer_id().to_string();
    let mut swarm = manager_client(key, Duration::from_secs(30))?;
    swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(coordinator)))?;
    let mut out = Flood::default();
    let mut size = 64usize;
    let mut n = 0usize;
    while out.plans < 8 && size > 0 && Instant::now() < until {
        let request = hostile_plan(&format!("{tag}/{n}"), size, location)?;
        n += 1;
        swarm
            .behaviour_mut()
            .send_request(&coordinator, ManagerRequest::Plan(request));
        let answer = match next_answer(&mut swarm, until).await? {
            (_, Ok(response)) => Some(response),
            (_, Err(error)) => {
                eprintln!("hostile plan failed on the wire: {error}");
                None
            }
        };
        match answer {
            Some(ManagerResponse::Planned(decision)) => {
                out.plans += 1;
                out.reserved += decision
                    .uploads
                    .iter()
                    .flat_map(|c| &c.packets)
                    .map(|p| p.size)
                    .sum::<u64>();
            }
            Some(ManagerResponse::Refused(_)) => {
                out.refused += 1;
                size /= 2;
            }
            Some(other) => {
                eprintln!("hostile plan answered {other:?}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            None => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    Ok(out)
}

#[test]
fn a_reservation_flood_leaves_room_for_an_honest_backup() -> Result<()> {
    let places = cities(1 + HONEST_TARGETS + HOSTILE)?;
    let others = places[1..]
        .iter()
        .enumerate()
        .map(|(i, city)| {
            let storage = if i < HONEST_TARGETS {
                "64MiB"
            } else {
                "100GiB"
            };
            options(city.location(), storage)
        })
        .collect();
    let mut grid = SmallGrid::start(options(places[0].location(), "64MiB"), others)?;

    // The hostile nodes joined announcing 100 GiB; their identities now
    // belong to the in-test client (one connection per identity, the
    // nodes themselves stopped).
    let keys = grid
        .nodes
        .iter_mut()
        .skip(HONEST_TARGETS)
        .map(take_identity)
        .collect::<Result<Vec<_>>>()?;
    let addr = grid.manager_addr()?;
    let peer: PeerId = grid.manager_id.parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let until = Instant::now() + Duration::from_secs(120);
    let started = Instant::now();
    let floods: Vec<Flood> = runtime.block_on(async {
        let tasks: Vec<_> = keys
            .into_iter()
            .zip(&places[1 + HONEST_TARGETS..])
            .map(|(key, city)| {
                let location = GeoPoint::new(city.lat, city.lon)?;
                Ok(tokio::spawn(flood(
                    key,
                    peer,
                    addr.clone(),
                    location,
                    until,
                )))
            })
            .collect::<Result<_>>()?;
        let mut out = Vec::new();
        for task in tasks {
            out.push(task.await??);
        }
        Ok::<_, anyhow::Error>(out)
    })?;
    runtime.shutdown_background();
    let reserved: u64 = floods.iter().map(|f| f.reserved).sum();
    eprintln!(
        "FIGURE reservation flood: {HOSTILE} hostile sources announcing 100 GiB reserved {} MiB in {} plans ({} refused) in {:?}",
        reserved >> 20,
        floods.iter().map(|f| f.plans).sum::<usize>(),
        floods.iter().map(|f| f.refused).sum::<usize>(),
        started.elapsed()
    );
    for f in &floods {
        ensure!(f.plans > 0, "a hostile source got no plan at all: {f:?}");
        ensure!(
            f.refused > 0,
            "the coordinator never refused a hostile plan: {f:?}"
        );
        ensure!(
            f.reserved <= PER_SOURCE,
            "a hostile source reserved {} bytes, over the {PER_SOURCE} cap",
            f.reserved
        );
    }

    // The manager sees the hostile nodes offline (they are no targets for
    // the honest backup), then an honest backup from the coordinator's
    // node still fits.
    let honest_nodes = HONEST_TARGETS as u64 + 1;
    wait_for(
        "the manager to see the hostile nodes offline",
        Duration::from_secs(60),
        || {
            let who = grid
                .coordinator
                .control("manager", serde_json::Value::Null)
                .ok()?;
            (who["online"].as_u64()? <= honest_nodes).then_some(())
        },
    )?;
    let honest = Instant::now();
    honest_backup(&grid.coordinator, &grid.coordinator, 5)?;
    eprintln!(
        "FIGURE honest 1 MB backup committed in {:?} after the flood",
        honest.elapsed()
    );
    Ok(())
}
