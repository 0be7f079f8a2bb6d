//! Adversary: a node that keeps its manager busy with heavy reads. A
//! hostile node joins a small open grid and backs up a snapshot of many
//! small chunks (about 16,000 stripes); then an in-test client holding its
//! identity asks for that snapshot's standing (each call sums up to 16
//! sequence pages of records on the manager), as many calls at once as a
//! connection carries, round after round. Nothing limited how many heavy
//! reads one caller had running: such a node could keep every core of the
//! manager busy.
//!
//! Now heavy reads take the manager's lane: at most two of one caller's
//! wait or run at once, and the others are answered `Unavailable(Busy)` at
//! once. The test counts those answers (none came before the lane), and
//! checks that an honest node's backup commits meanwhile.

use std::collections::HashSet;
use std::fs;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use strew_coordinator::SnapshotId;
use strew_overlay::{ManagerRequest, ManagerResponse, RefusalCode};
use strew_tests::{NodeOptions, cities, noise as random_bytes};

use crate::manager_client::{SmallGrid, honest_backup, manager_client, next_answer, take_identity};

const HONEST_TARGETS: usize = 3;
/// Calls the client has in flight at once: what one connection carries
/// (the manager protocol's streams per connection).
const AT_ONCE: usize = 4;
const ROUNDS: usize = 6;

fn options(location: String) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.storage = "1GiB".into();
    o.announce_interval = "1s".into();
    o.peer_ttl = "6s".into();
    o
}

/// What the hostile client was answered.
#[derive(Default, Debug)]
struct Answers {
    standings: usize,
    busy: usize,
    other: Vec<String>,
}

/// Sends `ROUNDS` rounds of `AT_ONCE` standings of `snapshot` at once.
async fn flood(
    key: Keypair,
    coordinator: PeerId,
    addr: Multiaddr,
    snapshot: SnapshotId,
    until: Instant,
) -> Result<Answers> {
    let mut swarm = manager_client(key, Duration::from_secs(60))?;
    swarm.dial(addr.with(libp2p::multiaddr::Protocol::P2p(coordinator)))?;
    let mut out = Answers::default();
    let request = ManagerRequest::Standing {
        snapshot,
        down: Vec::new(),
        from: 0,
    };
    for _ in 0..ROUNDS {
        let mut waiting: HashSet<_> = (0..AT_ONCE)
            .map(|_| {
                swarm
                    .behaviour_mut()
                    .send_request(&coordinator, request.clone())
            })
            .collect();
        while !waiting.is_empty() {
            let (id, answer) = next_answer(&mut swarm, until).await?;
            if !waiting.remove(&id) {
                continue;
            }
            match answer {
                Ok(ManagerResponse::Standing { .. }) => out.standings += 1,
                Ok(ManagerResponse::Unavailable(why)) if why.code == RefusalCode::Busy => {
                    out.busy += 1
                }
                Ok(other) => out
                    .other
                    .push(format!("{other:?}").chars().take(300).collect()),
                Err(e) => out.other.push(e),
            }
        }
    }
    Ok(out)
}

#[test]
fn a_node_gets_two_heavy_reads_at_once_and_an_honest_backup_still_commits() -> Result<()> {
    let places = cities(2 + HONEST_TARGETS)?;
    let mut grid = SmallGrid::start(
        options(places[0].location()),
        places[1..].iter().map(|c| options(c.location())).collect(),
    )?;
    // The hostile node backs up a snapshot of many small chunks; then its
    // identity goes to the hostile client (the node stops: the client is
    // that node now).
    let work = tempfile::tempdir()?;
    let many = work.path().join("many");
    fs::create_dir_all(&many)?;
    fs::write(many.join("noise.bin"), random_bytes(4_000_000, 3))?;
    let hostile_node = grid.nodes.last_mut().context("a hostile node")?;
    let made = hostile_node.cli_json(&[
        "backup",
        many.to_str().context("utf-8 path")?,
        "--chunk-sizes",
        "64/256/1024",
        "--redundancy",
        "replicas:1",
        "--json",
    ])?;
    let snapshot: SnapshotId = made["snapshot"]
        .as_str()
        .context("the hostile node's snapshot")?
        .parse()?;
    let stripes = made["stats"]["chunks"].as_u64().unwrap_or(0);
    let key = take_identity(hostile_node)?;
    let addr = grid.manager_addr()?;
    let peer: PeerId = grid.manager_id.parse()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(150);
    let hostile = runtime.spawn(flood(key, peer, addr, snapshot, until));

    // Meanwhile an honest backup from another node commits.
    honest_backup(&grid.nodes[0], &grid.coordinator, 7)?;
    let honest_took = started.elapsed();
    let seen = runtime.block_on(hostile)??;
    runtime.shutdown_background();
    eprintln!(
        "FIGURE heavy reads: {ROUNDS} rounds of {AT_ONCE} standings of a snapshot of {stripes} chunks at once: {} answered, {} busy, in {:?}; the honest backup committed {honest_took:?} after the flood began",
        seen.standings,
        seen.busy,
        started.elapsed()
    );
    ensure!(seen.other.is_empty(), "other answers: {:?}", seen.other);
    ensure!(seen.standings + seen.busy == ROUNDS * AT_ONCE, "{seen:?}");
    // At most two of a round run or wait at once: the others are turned
    // away, unless an earlier one was answered before they arrived (in
    // runs, about half of all were turned away; with no lane, none).
    ensure!(seen.standings >= ROUNDS, "{seen:?}");
    ensure!(
        seen.busy >= ROUNDS,
        "the manager took more than two of one node's heavy reads at once: {seen:?}"
    );
    Ok(())
}
