//! Randomised leader kills, partitions, heals and restarts with writes in
//! between: every acknowledged write ends up on every member, in the order
//! it was acknowledged, and the members end identical. (Several leaders in
//! one term are legal in openraft's default leader-id mode: see `Cluster`.)

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use strew_coordinator::{LogKind, NodeId};

use super::{Cluster, GroupConfig, fast_config, formed, join, joiner};

const ROUNDS: u32 = 200;
/// Acknowledged writes the test wants before it judges their order: a
/// starved machine (elections of 150–300 ms time out when the test shares
/// two cores with grids of processes) gets more rounds to reach them.
const WANTED_ACKS: usize = 50;
const MAX_ROUNDS: u32 = 3 * ROUNDS;

fn chaos_config() -> GroupConfig {
    GroupConfig {
        write_timeout: Duration::from_millis(200),
        ..fast_config()
    }
}

async fn round(cluster: &mut Cluster, rng: &mut StdRng, voters: u8) {
    let down: Vec<u8> = (1..=voters).filter(|n| !cluster.is_running(*n)).collect();
    match rng.random_range(0..10u32) {
        // Kill the leader (keeping at most one member down).
        0..=2 if down.is_empty() => {
            if let Some(leader) = cluster.leader() {
                cluster.kill(leader).await;
            }
        }
        // Restart whoever is down.
        0..=3 => {
            for n in down {
                cluster.start(n).await;
            }
        }
        // Cut one member off from the rest.
        4 => {
            let target = rng.random_range(1..=voters);
            cluster
                .router
                .isolate(crate::consensus::raft_id(&super::node_id(target)));
        }
        // Put the leader in a minority of one.
        5 => {
            if let Some(leader) = cluster.leader() {
                let id = |n: u8| crate::consensus::raft_id(&super::node_id(n));
                let rest = (1..=voters).filter(|&n| n != leader).map(id).collect();
                cluster.router.partition(&[vec![id(leader)], rest]);
            }
        }
        // Heal every link.
        _ => cluster.router.heal(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_random_failures_in_order_on_every_member() {
    let seed: u64 = std::env::var("STREW_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut rng = StdRng::seed_from_u64(seed);
    let voters = 3;
    let mut cluster = formed(chaos_config(), voters).await;
    cluster
        .router
        .set_delay(Duration::ZERO, Duration::from_millis(3));
    cluster.router.set_drop_rate(0.02);

    let mut acknowledged: Vec<(u64, NodeId)> = Vec::new();
    let mut failed = 0u32;
    let mut k = 0;
    while k < ROUNDS || (acknowledged.len() < WANTED_ACKS && k < MAX_ROUNDS) {
        k += 1;
        round(&mut cluster, &mut rng, voters).await;
        match cluster.write(join(k), Duration::from_millis(300)).await {
            Ok(c) => acknowledged.push((c.log_id.index, joiner(k).node_id)),
            Err(_) => failed += 1,
        }
    }

    // Heal everything and let the group settle.
    cluster.router.heal();
    cluster.router.set_drop_rate(0.0);
    for n in 1..=voters {
        if !cluster.is_running(n) {
            cluster.start(n).await;
        }
    }
    assert!(
        cluster
            .await_leader(Duration::from_secs(10))
            .await
            .is_some()
    );
    // A final write commits in the current term, so everything before it is applied.
    cluster
        .write(join(k + 1), Duration::from_secs(10))
        .await
        .expect("the healed group commits");
    assert!(cluster.await_converged(Duration::from_secs(20)).await);

    assert!(
        acknowledged.len() >= WANTED_ACKS,
        "only {} of {k} writes were acknowledged ({failed} failed)",
        acknowledged.len()
    );
    assert!(
        acknowledged.windows(2).all(|w| w[0].0 < w[1].0),
        "acknowledged log indices go backwards"
    );
    let reference = cluster.state(1);
    for n in 2..=voters {
        assert_eq!(cluster.state(n), reference, "member {n} diverged");
    }
    // The order joins were applied in, from the state's own event log.
    let applied: Vec<NodeId> = reference
        .log
        .iter()
        .filter(|e| e.kind == LogKind::Joined)
        .map(|e| e.node)
        .collect();
    let mut next = 0;
    for (index, node) in &acknowledged {
        let found = applied[next..].iter().position(|a| a == node);
        let Some(offset) = found else {
            panic!("acknowledged write at index {index} ({node}) is missing or out of order");
        };
        next += offset + 1;
    }
    eprintln!(
        "chaos seed {seed:#x}: {} acknowledged, {failed} failed, {} terms",
        acknowledged.len(),
        cluster.leaders.lock().map(|l| l.len()).unwrap_or(0)
    );
    let terms = cluster.leaders.lock().map(|l| l.len()).unwrap_or(0);
    assert!(
        terms > 3,
        "only {terms} terms: the test did not force elections"
    );
    cluster.shutdown().await;
}
