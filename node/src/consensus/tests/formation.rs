//! A group of one forms, members are admitted up to three voters (a fourth
//! stays a learner), commands and the group key apply identically everywhere.

use std::collections::BTreeMap;
use std::time::Duration;

use strew_coordinator::{Applied, Command, GroupKey};

use super::{Cluster, fast_config, join, joiner, member, node_id};
use crate::consensus::types::{Member, check_no_collision};
use crate::consensus::{Outcome, Proposal, Role, raft_id};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_forms_grows_to_three_voters_and_applies_identically() {
    let mut cluster = Cluster::new(fast_config());
    for n in 1..=4 {
        cluster.start(n).await;
    }
    let first = cluster.member(1);
    first
        .form_alone(member(1))
        .await
        .expect("group of one forms");
    // Forming again is a no-op.
    first
        .form_alone(member(1))
        .await
        .expect("second form is a no-op");
    assert_eq!(cluster.await_leader(Duration::from_secs(10)).await, Some(1));

    // A group of one commits on its own.
    let c = cluster
        .write(join(1), Duration::from_secs(5))
        .await
        .expect("a group of one commits");
    assert_eq!(c.outcome, Outcome::Applied(Applied::Done));
    first
        .ensure_group_key(GroupKey([0xAA; 32]))
        .await
        .expect("group key committed");

    assert_eq!(
        first.admit(&node_id(2), member(2).addr).await.unwrap(),
        Role::Voter
    );
    assert_eq!(
        first.admit(&node_id(3), member(3).addr).await.unwrap(),
        Role::Voter
    );
    assert_eq!(
        first.admit(&node_id(4), member(4).addr).await.unwrap(),
        Role::Learner
    );
    // Admitting a voter again changes nothing.
    assert_eq!(
        first.admit(&node_id(2), member(2).addr).await.unwrap(),
        Role::Voter
    );

    for k in 2..12 {
        cluster
            .write(join(k), Duration::from_secs(5))
            .await
            .expect("join commits");
    }
    let offline = Command::SetOnline {
        node: joiner(3).node_id,
        online: false,
        at: 99,
    };
    cluster
        .write(offline, Duration::from_secs(5))
        .await
        .expect("set online commits");
    // A command the state refuses is answered on every member alike.
    let unknown = Command::SetOnline {
        node: node_id(77),
        online: true,
        at: 100,
    };
    let refused = cluster
        .write(unknown, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(
        matches!(refused.outcome, Outcome::Rejected(ref why) if why.to_string().contains("has not joined"))
    );
    // A second key is refused: the first committed key stays.
    let second = first
        .propose(Proposal::SetGroupKey(GroupKey([0xBB; 32])))
        .await
        .unwrap();
    assert!(matches!(second.outcome, Outcome::Rejected(_)));
    first.ensure_group_key(GroupKey([0xCC; 32])).await.unwrap();

    assert!(cluster.await_converged(Duration::from_secs(10)).await);
    let reference = cluster.state(1);
    assert_eq!(reference.clients.len(), 11);
    assert!(!reference.clients[&joiner(3).node_id].profile.online);
    for n in 2..=4 {
        assert_eq!(cluster.state(n), reference, "member {n} diverged");
        let position = cluster.position(n);
        assert_eq!(position.group_key, Some(GroupKey([0xAA; 32])));
        assert_eq!(position.membership, cluster.position(1).membership);
    }

    let status = first.status();
    assert_eq!(status.state, "Leader");
    assert_eq!(status.leader, Some(raft_id(&node_id(1))));
    let roles: BTreeMap<u64, Role> = status.members.iter().map(|m| (m.raft_id, m.role)).collect();
    assert_eq!(roles.len(), 4);
    assert_eq!(roles.values().filter(|r| **r == Role::Voter).count(), 3);
    assert_eq!(roles[&raft_id(&node_id(4))], Role::Learner);
    assert!(status.members.iter().all(|m| m.lag == Some(0)));

    // Followers refuse writes and name the leader.
    let err = cluster.member(2).execute(join(50)).await.unwrap_err();
    assert!(
        matches!(&err, crate::consensus::WriteError::NotLeader { leader: Some(m) } if *m == member(1)),
        "{err}"
    );
    // Raft requests are accepted only from members, under their own id.
    let vote = |from: u64| crate::consensus::RaftRequest {
        from,
        to: raft_id(&node_id(2)),
        rpc: crate::consensus::wire::RaftRpc::Vote(openraft::raft::VoteRequest {
            vote: openraft::Vote::new(1000, from),
            last_log_id: None,
        }),
    };
    let follower = cluster.member(2);
    let outsider = node_id(9);
    assert!(!follower.accepts(&outsider, &vote(raft_id(&outsider))));
    assert!(!follower.accepts(&outsider, &vote(raft_id(&node_id(3)))));
    assert!(follower.accepts(&node_id(3), &vote(raft_id(&node_id(3)))));
    let refused = follower
        .serve_from(&outsider, vote(raft_id(&outsider)))
        .await;
    assert!(matches!(refused, crate::consensus::RaftReply::Refused(_)));
    assert_eq!(
        cluster.member(1).status().term,
        status.term,
        "the outsider forced no election"
    );

    cluster.shutdown().await;
}

#[test]
fn a_raft_id_collision_is_refused() {
    let id = raft_id(&node_id(1));
    let impostor = BTreeMap::from([(
        id,
        Member {
            node_id: "someone-else".into(),
            addr: String::new(),
        },
    )]);
    let err = check_no_collision(impostor.iter(), &node_id(1)).unwrap_err();
    assert_eq!(err.id, id);
    let same = BTreeMap::from([(id, member(1))]);
    assert!(check_no_collision(same.iter(), &node_id(1)).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_node_stays_a_learner_until_it_catches_up() {
    let mut config = fast_config();
    config.write_timeout = Duration::from_millis(500);
    let mut cluster = Cluster::new(config);
    let first = cluster.start(1).await;
    first.form_alone(member(1)).await.unwrap();
    assert_eq!(cluster.await_leader(Duration::from_secs(10)).await, Some(1));
    cluster
        .write(join(0), Duration::from_secs(5))
        .await
        .unwrap();

    // Node 2 is not running: admitting it neither hangs nor makes it a voter
    // (a voter that cannot answer would cost the group its quorum).
    assert_eq!(
        first.admit(&node_id(2), member(2).addr).await.unwrap(),
        Role::Learner
    );
    cluster
        .write(join(1), Duration::from_secs(5))
        .await
        .expect("one voter still commits");

    cluster.start(2).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match first.admit(&node_id(2), member(2).addr).await.unwrap() {
            Role::Voter => break,
            Role::Learner if std::time::Instant::now() < deadline => {}
            Role::Learner => panic!("the learner was never promoted"),
        }
    }
    assert!(cluster.await_converged(Duration::from_secs(10)).await);
    assert_eq!(cluster.state(2), cluster.state(1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_voter_is_replaced_by_a_learner() {
    let mut cluster = Cluster::new(fast_config());
    for n in 1..=4 {
        cluster.start(n).await;
    }
    let first = cluster.member(1);
    first.form_alone(member(1)).await.unwrap();
    assert_eq!(cluster.await_leader(Duration::from_secs(10)).await, Some(1));
    for n in 2..=4 {
        first.admit(&node_id(n), member(n).addr).await.unwrap();
    }
    cluster
        .write(join(0), Duration::from_secs(5))
        .await
        .unwrap();

    // Voter 3 dies and stays gone: the leader removes it and promotes the learner.
    cluster.kill(3).await;
    first.remove(&node_id(3)).await.expect("voter removed");
    assert_eq!(
        first.admit(&node_id(4), member(4).addr).await.unwrap(),
        Role::Voter
    );
    let status = first.status();
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .map(|m| m.raft_id)
        .collect();
    let mut expected = vec![
        raft_id(&node_id(1)),
        raft_id(&node_id(2)),
        raft_id(&node_id(4)),
    ];
    expected.sort();
    assert_eq!(voters, expected);
    assert!(
        status
            .members
            .iter()
            .all(|m| m.raft_id != raft_id(&node_id(3)))
    );

    // The new three survive the loss of one more.
    cluster.kill(2).await;
    cluster
        .write(join(1), Duration::from_secs(10))
        .await
        .expect("1 and 4 form a quorum");
    // Removing a learner takes it out of the membership.
    cluster.start(5).await;
    assert_eq!(
        first.admit(&node_id(5), member(5).addr).await.unwrap(),
        Role::Learner
    );
    first.remove(&node_id(5)).await.expect("learner removed");
    assert!(
        first
            .status()
            .members
            .iter()
            .all(|m| m.raft_id != raft_id(&node_id(5)))
    );
    // (A removed member no longer follows the log.)
    cluster.kill(5).await;
    assert!(cluster.await_converged(Duration::from_secs(10)).await);
    assert_eq!(cluster.state(4), cluster.state(1));
    cluster.shutdown().await;
}
