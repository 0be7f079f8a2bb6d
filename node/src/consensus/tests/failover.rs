//! Restarts and quorum loss: a member restarted from its redb files keeps its
//! state and catches up (from the log, or from a snapshot once the log it
//! missed is purged); with two of three members gone nothing commits, and
//! service resumes when one returns.

use std::time::Duration;

use super::{fast_config, formed, join};
use crate::consensus::WriteError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_members_catch_up_by_log_and_by_snapshot() {
    let mut cluster = formed(fast_config(), 3).await;
    for k in 0..5 {
        cluster
            .write(join(k), Duration::from_secs(5))
            .await
            .unwrap();
    }
    assert!(cluster.await_converged(Duration::from_secs(10)).await);

    // Log path: member 3 misses two entries, well inside the kept log.
    let before = cluster.state(3);
    cluster.kill(3).await;
    for k in 5..7 {
        cluster
            .write(join(k), Duration::from_secs(5))
            .await
            .unwrap();
    }
    cluster.start_offline(3).await;
    assert_eq!(cluster.state(3), before, "state survives the restart");
    cluster.connect(3);
    assert!(cluster.await_converged(Duration::from_secs(10)).await);
    assert_eq!(cluster.state(3), cluster.state(1));

    // Snapshot path: member 2 misses far more than the group keeps in its log.
    let leader = cluster.leader().expect("a leader");
    let victim = if leader == 2 { 3 } else { 2 };
    cluster.kill(victim).await;
    for k in 7..60 {
        cluster
            .write(join(k), Duration::from_secs(5))
            .await
            .unwrap();
    }
    let leader = cluster.leader().expect("a leader");
    let purged = cluster.member(leader).raft().metrics().borrow().purged;
    assert!(
        purged.is_some(),
        "the leader purged its log behind a snapshot"
    );
    cluster.start(victim).await;
    assert!(cluster.await_converged(Duration::from_secs(15)).await);
    let snapshot = cluster.member(victim).raft().metrics().borrow().snapshot;
    assert!(
        snapshot.is_some(),
        "member {victim} caught up from a snapshot"
    );
    let reference = cluster.state(leader);
    assert_eq!(reference.clients.len(), 60);
    for n in cluster.running() {
        assert_eq!(cluster.state(n), reference, "member {n} diverged");
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_nothing_commits_and_service_resumes_with_one_back() {
    let mut config = fast_config();
    config.write_timeout = Duration::from_millis(800);
    let mut cluster = formed(config, 3).await;
    cluster
        .write(join(0), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(cluster.await_converged(Duration::from_secs(10)).await);

    let survivor = 1;
    cluster.kill(2).await;
    cluster.kill(3).await;
    let applied = cluster.last_applied(survivor);
    let err = cluster
        .member(survivor)
        .execute(join(1))
        .await
        .expect_err("one of three cannot commit");
    assert!(
        matches!(err, WriteError::NoQuorum(_) | WriteError::NotLeader { .. }),
        "{err}"
    );
    assert_eq!(cluster.last_applied(survivor), applied, "nothing applied");
    // Reads say why they cannot be trusted.
    let err = cluster.member(survivor).read_barrier().await.unwrap_err();
    assert!(
        matches!(err, WriteError::NoQuorum(_) | WriteError::NotLeader { .. }),
        "{err}"
    );
    assert!(
        !cluster
            .state(survivor)
            .clients
            .contains_key(&super::joiner(1).node_id)
    );

    cluster.start(2).await;
    let c = cluster
        .write(join(2), Duration::from_secs(20))
        .await
        .expect("service resumes with two of three");
    assert!(c.log_id.index > applied.unwrap_or(0));
    assert!(cluster.await_converged(Duration::from_secs(10)).await);
    let leader = cluster.leader().expect("a leader");
    cluster
        .member(leader)
        .read_barrier()
        .await
        .expect("the leader confirms reads");
    let follower = if leader == 1 { 2 } else { 1 };
    assert!(matches!(
        cluster.member(follower).read_barrier().await,
        Err(WriteError::NotLeader { leader: Some(_) })
    ));
    assert_eq!(
        cluster.member(follower).leader().map(|(id, _)| id),
        Some(cluster.member(leader).id())
    );
    assert_eq!(cluster.state(1), cluster.state(2));
    assert!(
        cluster
            .state(1)
            .clients
            .contains_key(&super::joiner(2).node_id)
    );
    cluster.shutdown().await;
}
