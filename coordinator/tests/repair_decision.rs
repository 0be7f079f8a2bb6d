//! `Manager::decide_repair`: where a stripe's rebuilt packets go, decided
//! without changing anything, under the backup's own distance rules, and
//! applied as `MovePacket` commands.

mod common;

use std::collections::BTreeSet;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::repair::{RepairPolicy, RepairRequest};
use strew_coordinator::{
    ApplyError, ChunkPlan, Command, CommitRequest, CommitStep, DataId, GeoPoint, GroupKey, Manager,
    ManagerConfig, ManagerError, NodeId, PacketId, PlanRequest, SnapshotId, haversine_km,
};

use common::{backed_up, chunk, node, params};

fn location(m: &Manager, id: &NodeId) -> GeoPoint {
    m.state().clients[id].profile.location
}

#[test]
fn a_lost_packet_moves_to_a_new_target_that_keeps_the_backups_distance_rules() {
    let (mut m, paris, snapshot) = backed_up();
    let data_id = DataId([1; 32]);
    let lost = m.state().chunks[&data_id].packets[0].target;
    m.apply(&Command::SetOnline {
        node: lost,
        online: false,
        at: 30,
    })
    .expect("offline");
    let given_up = BTreeSet::from([lost]);
    let request = RepairRequest {
        snapshot,
        data_id,
        rebuild: &[0],
        given_up: &given_up,
    };
    let before = m.state().clone();
    let commands = m
        .decide_repair(&request, 40, &mut StdRng::seed_from_u64(2))
        .expect("a replacement exists");
    assert_eq!(m.state(), &before, "deciding changes nothing");
    let [
        Command::MovePacket {
            data_id: moved,
            index: 0,
            new_target,
            at: 40,
            ..
        },
    ] = commands.as_slice()
    else {
        panic!("one MovePacket for packet 0: {commands:?}");
    };
    assert_eq!(moved, &data_id);
    let p = params();
    let d = haversine_km(&paris.location, &location(&m, new_target));
    assert!(p.backup_distance.contains(d), "{d:.0} km from the source");
    // Within the spread of every other target of the snapshot (both chunks).
    let others: BTreeSet<NodeId> = m
        .state()
        .chunks
        .values()
        .flat_map(|c| c.packets.iter().map(|p| p.target))
        .filter(|t| t != &lost)
        .collect();
    assert!(!others.contains(new_target));
    for other in &others {
        let d = haversine_km(&location(&m, new_target), &location(&m, other));
        assert!(p.spread.contains(d), "{d:.0} km from another target");
    }
    m.apply(&commands[0]).expect("the move applies");
    let packet = m.state().chunks[&data_id].packets[0];
    assert_eq!(&packet.target, new_target);
    assert!(
        m.state().targets[new_target]
            .packets
            .contains_key(&packet.packet_id)
    );
    assert!(
        !m.state().targets[&lost]
            .packets
            .contains_key(&packet.packet_id)
    );
    // The stale copy on the lost target is queued for collection at once:
    // the leader deletes it whenever that target is back online.
    let due = m.state().due_garbage(40, usize::MAX, |_| false);
    assert_eq!(
        due.deliver.get(&lost).map(|d| d[0].packet_id),
        Some(packet.packet_id)
    );
    assert!(!due.deliver.contains_key(new_target));
    let offline = m.state().due_garbage(40, usize::MAX, |t| t == &lost);
    assert!(
        offline.deliver.is_empty(),
        "an offline target's entries wait"
    );
}

#[test]
fn no_compatible_target_is_a_placement_refusal_and_bad_requests_are_errors() {
    let (mut m, _, snapshot) = backed_up();
    let data_id = DataId([1; 32]);
    let mut rng = StdRng::seed_from_u64(3);
    let none = BTreeSet::new();
    let ask = |m: &Manager, snapshot, data_id, rebuild: &[usize], rng: &mut StdRng| {
        let request = RepairRequest {
            snapshot,
            data_id,
            rebuild,
            given_up: &none,
        };
        m.decide_repair(&request, 50, rng)
    };
    assert!(matches!(
        ask(&m, SnapshotId([9; 32]), data_id, &[0], &mut rng),
        Err(ManagerError::Apply(ApplyError::UnknownSnapshot(_)))
    ));
    assert!(matches!(
        ask(&m, snapshot, DataId([3; 32]), &[0], &mut rng),
        Err(ManagerError::Invalid(_))
    ));
    assert!(matches!(
        ask(&m, snapshot, data_id, &[3], &mut rng),
        Err(ManagerError::Invalid(_))
    ));
    assert!(matches!(
        ask(&m, snapshot, data_id, &[0, 0], &mut rng),
        Err(ManagerError::Invalid(_))
    ));
    assert!(matches!(ask(&m, snapshot, data_id, &[], &mut rng), Ok(c) if c.is_empty()));
    // Every node offline: nowhere to go.
    let ids: Vec<NodeId> = m.state().clients.keys().copied().collect();
    for id in ids {
        m.apply(&Command::SetOnline {
            node: id,
            online: false,
            at: 45,
        })
        .expect("offline");
    }
    assert!(matches!(
        ask(&m, snapshot, data_id, &[0], &mut rng),
        Err(ManagerError::Placement(_))
    ));
}

#[test]
fn the_checker_queues_stripes_only_past_the_grace_and_a_move_settles_them() {
    let (mut m, _, snapshot) = backed_up();
    let policy = RepairPolicy {
        grace: 1_000,
        threshold: 1,
    };
    let data_id = DataId([1; 32]);
    let lost = m.state().chunks[&data_id].packets[0].target;
    // Every stripe the lost target holds a packet of, and which slot.
    let holding: Vec<(DataId, usize)> = m
        .state()
        .chunks
        .values()
        .filter_map(|c| {
            let slot = c.packets.iter().position(|p| p.target == lost)?;
            Some((c.data_id, slot))
        })
        .collect();
    let healthy = m.check_repairs(&policy, 100);
    assert_eq!((healthy.stripes, healthy.pending()), (2, 0));
    m.apply(&Command::SetOnline {
        node: lost,
        online: false,
        at: 30,
    })
    .expect("offline");
    assert_eq!(m.state().clients[&lost].offline_since, Some(30));
    // A later offline mark does not restart the clock.
    m.apply(&Command::SetOnline {
        node: lost,
        online: false,
        at: 500,
    })
    .expect("offline again");
    let early = m.check_repairs(&policy, 1_029);
    assert!(early.tasks.is_empty(), "{early:?}");
    assert_eq!(early.next_deadline, Some(1_030));
    let due = m.check_repairs(&policy, 1_030);
    assert_eq!(due.given_up, BTreeSet::from([lost]));
    let queued: Vec<(DataId, Vec<usize>)> = due
        .tasks
        .iter()
        .map(|t| (t.data_id, t.rebuild.clone()))
        .collect();
    let expected: Vec<(DataId, Vec<usize>)> =
        holding.iter().map(|(d, slot)| (*d, vec![*slot])).collect();
    assert_eq!(queued, expected);
    for task in &due.tasks {
        assert_eq!(task.snapshot, snapshot);
        assert_eq!(task.read.len(), 2, "the two other slots are reachable");
        assert!(!task.read.iter().any(|j| task.rebuild.contains(j)));
    }
    // The repairer's tickets name the new target and the packet's size.
    let mut rng = StdRng::seed_from_u64(4);
    for task in &due.tasks {
        let request = RepairRequest {
            snapshot: task.snapshot,
            data_id: task.data_id,
            rebuild: &task.rebuild,
            given_up: &due.given_up,
        };
        let commands = m.decide_repair(&request, 1_040, &mut rng).expect("placed");
        let [Command::MovePacket { new_target, .. }] = commands.as_slice() else {
            panic!("one move: {commands:?}");
        };
        let packet = m.state().chunks[&task.data_id].packets[task.rebuild[0]];
        let tickets = m
            .repair_tickets(&[(*new_target, packet.packet_id, packet.size, 1)], 1_040)
            .expect("signed");
        assert_eq!(tickets.len(), 1);
        assert_eq!(tickets[0].target, *new_target);
        assert_eq!(tickets[0].entries[0].packet_id, packet.packet_id);
        assert_eq!(tickets[0].entries[0].size, packet.size);
        m.apply(&commands[0]).expect("the move applies");
    }
    let after = m.check_repairs(&policy, 2_000);
    assert_eq!(after.pending(), 0, "{after:?}");
    assert!(after.tasks.is_empty());
}

#[test]
fn a_target_back_within_the_grace_needs_no_repair_and_too_few_reachable_waits() {
    let (mut m, _, _) = backed_up();
    let policy = RepairPolicy {
        grace: 1_000,
        threshold: 1,
    };
    let data_id = DataId([1; 32]);
    let targets: Vec<NodeId> = m.state().chunks[&data_id]
        .packets
        .iter()
        .map(|p| p.target)
        .collect();
    m.apply(&Command::SetOnline {
        node: targets[0],
        online: false,
        at: 30,
    })
    .expect("offline");
    m.apply(&Command::SetOnline {
        node: targets[0],
        online: true,
        at: 600,
    })
    .expect("back");
    assert_eq!(m.state().clients[&targets[0]].offline_since, None);
    assert_eq!(m.check_repairs(&policy, 5_000).pending(), 0);
    // Two of the three (k = 2) gone past the grace: only one packet left.
    for t in &targets[..2] {
        m.apply(&Command::SetOnline {
            node: *t,
            online: false,
            at: 6_000,
        })
        .expect("offline");
    }
    let check = m.check_repairs(&policy, 6_500);
    assert!(
        check.tasks.iter().all(|t| t.data_id != data_id),
        "within the grace: {check:?}"
    );
    let check = m.check_repairs(&policy, 7_000);
    assert!(
        check.tasks.iter().all(|t| t.data_id != data_id),
        "one reachable packet cannot rebuild a 2+1 stripe: {check:?}"
    );
    assert!(check.waiting >= 1, "{check:?}");
}

#[test]
fn a_backup_on_every_eligible_node_repairs_onto_its_other_targets() {
    let mut m = Manager::new(
        SigningKey::from_bytes(&[201; 32]),
        GroupKey([8; 32]),
        ManagerConfig::default(),
    );
    // Four targets 400–1500 km from Paris, far apart from each other.
    let places = [(52.52, 13.40), (41.39, 2.17), (45.46, 9.19), (51.51, -0.13)];
    for (i, (lat, lon)) in places.iter().enumerate() {
        m.apply(&Command::Join {
            profile: node(30 + i as u8, *lat, *lon),
            token: None,
            at: 1,
        })
        .expect("join");
    }
    let paris = node(2, 48.85, 2.35);
    m.apply(&Command::Join {
        profile: paris.clone(),
        token: None,
        at: 1,
    })
    .expect("join");
    let mut rng = StdRng::seed_from_u64(5);
    let chunks: Vec<ChunkPlan> = (1..=4).map(chunk).collect();
    let request = PlanRequest {
        extend: None,
        source: paris.node_id,
        set: "all".into(),
        location: paris.location,
        params: params(),
        chunks,
        exclude: Vec::new(),
    };
    let (command, draft) = m.decide_plan(&request, 10, &mut rng).expect("plan");
    m.apply(&command).expect("begin");
    let commit = CommitRequest {
        pending_id: draft.pending_id,
        source: paris.node_id,
        receipts: common::receipts(&draft.uploads, paris.node_id),
        manifest: DataId([1; 32]),
        manifest_chunks: Vec::new(),
        chunks: (1..=4).map(|n| DataId([n; 32])).collect(),
        bytes: 8 << 20,
    };
    let CommitStep::Propose { command, snapshot } =
        m.decide_commit(&commit, 20, &mut rng).expect("commit")
    else {
        panic!("a first commit proposes a command");
    };
    m.apply(&command).expect("commit applies");
    let used: BTreeSet<NodeId> = m
        .state()
        .chunks
        .values()
        .flat_map(|c| c.packets.iter().map(|p| p.target))
        .collect();
    assert_eq!(used.len(), 4, "the backup uses every eligible node");
    let data_id = DataId([1; 32]);
    let stripe: Vec<NodeId> = m.state().chunks[&data_id]
        .packets
        .iter()
        .map(|p| p.target)
        .collect();
    let lost = stripe[0];
    m.apply(&Command::SetOnline {
        node: lost,
        online: false,
        at: 30,
    })
    .expect("offline");
    let given_up = BTreeSet::from([lost]);
    let commands = m
        .decide_repair(
            &RepairRequest {
                snapshot,
                data_id,
                rebuild: &[0],
                given_up: &given_up,
            },
            40,
            &mut rng,
        )
        .expect("another target of the backup takes the packet");
    let [Command::MovePacket { new_target, .. }] = commands.as_slice() else {
        panic!("one move: {commands:?}");
    };
    assert!(used.contains(new_target), "no other node exists");
    assert!(
        !stripe.contains(new_target),
        "never two packets of a stripe on one node"
    );
    let d = haversine_km(&paris.location, &location(&m, new_target));
    assert!(params().backup_distance.contains(d), "{d:.0} km");
    m.apply(&commands[0]).expect("the move applies");
}

#[test]
fn a_failed_audit_queues_its_stripe_and_disqualification_gives_up_the_target() {
    use strew_coordinator::audit::{AuditOutcome, AuditPolicy, AuditResult};
    let (mut m, _, _) = backed_up();
    let policy = RepairPolicy {
        grace: 1_000_000,
        threshold: 1,
    };
    let audits = AuditPolicy {
        interval: 100,
        ..AuditPolicy::default()
    };
    let mut rng = StdRng::seed_from_u64(9);
    // Every target holding a packet is due once, with a challenge on a packet it holds.
    let round = m.audit_round(&audits, 1_000, 100, &mut rng);
    let holders: BTreeSet<NodeId> = m
        .state()
        .targets
        .iter()
        .filter(|(_, r)| !r.packets.is_empty())
        .map(|(id, _)| *id)
        .collect();
    let challenged: BTreeSet<NodeId> = round.challenges.iter().map(|c| c.target).collect();
    assert_eq!(challenged, holders);
    for c in &round.challenges {
        assert_eq!(
            m.state().targets[&c.target].packets.get(&c.packet),
            Some(&c.size)
        );
        assert!(c.chunk < strew_coordinator::audit::chunk_count(c.size));
    }
    let limited = m.audit_round(&audits, 1_000, 2, &mut rng);
    assert_eq!(limited.challenges.len(), 2);
    assert_eq!(limited.deferred, holders.len() - 2);

    // One wrong answer on one packet: that stripe is rebuilt at once, the
    // target keeps its other packets and stays in placement.
    let data_id = DataId([1; 32]);
    let bad = m.state().chunks[&data_id].packets[0];
    let results = [AuditResult {
        target: bad.target,
        packet: bad.packet_id,
        outcome: AuditOutcome::Failed,
    }];
    for command in Manager::audit_commands(&results, &audits, 1_000) {
        m.apply(&command).expect("audits apply");
    }
    // Not due again within the interval.
    let again = m.audit_round(&audits, 1_050, 100, &mut rng);
    assert!(!again.challenges.iter().any(|c| c.target == bad.target));
    let check = m.check_repairs(&policy, 1_001);
    assert_eq!(check.tasks.len(), 1, "{check:?}");
    assert_eq!(check.tasks[0].data_id, data_id);
    assert_eq!(check.tasks[0].rebuild, vec![0]);
    assert!(m.view().get(&bad.target).is_some());

    // A run of failures disqualifies it: every stripe it holds is queued and
    // it leaves the placement view.
    let mut at = 2_000;
    while !m.state().targets[&bad.target].audit.is_disqualified() {
        at += 100;
        let fail = [AuditResult {
            target: bad.target,
            packet: bad.packet_id,
            outcome: AuditOutcome::Failed,
        }];
        for command in Manager::audit_commands(&fail, &audits, at) {
            m.apply(&command).expect("audits apply");
        }
        assert!(at < 100_000, "never disqualified");
    }
    assert!(m.view().get(&bad.target).is_none());
    let holding = m
        .state()
        .chunks
        .values()
        .filter(|c| c.packets.iter().any(|p| p.target == bad.target))
        .count();
    let check = m.check_repairs(&policy, at);
    assert_eq!(check.tasks.len(), holding);
    assert!(check.given_up.contains(&bad.target));
    // A disqualified target is never challenged again.
    let later = m.audit_round(&audits, at + 1_000_000, 100, &mut rng);
    assert!(!later.challenges.iter().any(|c| c.target == bad.target));
    // Outcomes for unknown targets or packets they do not hold change nothing.
    let before = m.state().clone();
    let stranger = AuditResult {
        target: NodeId([99; 32]),
        packet: bad.packet_id,
        outcome: AuditOutcome::Failed,
    };
    // A packet the target no longer holds (moved away while its challenge
    // was in flight) says nothing about the target either.
    let honest = m.state().chunks[&DataId([2; 32])].packets[1];
    let moved_away = AuditResult {
        target: honest.target,
        packet: PacketId::of(b"a packet it does not hold"),
        outcome: AuditOutcome::Failed,
    };
    for command in Manager::audit_commands(&[stranger, moved_away], &audits, at) {
        m.apply(&command).expect("applies");
    }
    assert_eq!(m.state().targets, before.targets);
}

#[test]
fn a_leaving_target_gets_nothing_new_and_its_stripes_move_until_it_may_stop() {
    let (mut m, _, _) = backed_up();
    let policy = RepairPolicy {
        grace: 1_000_000,
        threshold: 1,
    };
    let leaver = m.state().chunks[&DataId([1; 32])].packets[0].target;
    let held = m.state().targets[&leaver].packets.len() as u64;
    assert!(held > 0);
    assert_eq!(m.leave_status(&leaver).exiting_since, None);
    m.apply(&Command::SetExiting {
        node: leaver,
        exiting: true,
        at: 50,
    })
    .expect("leave");
    let status = m.leave_status(&leaver);
    assert_eq!(
        (status.exiting_since, status.packets_remaining),
        (Some(50), held)
    );
    assert!(!status.done());
    assert!(
        m.view().get(&leaver).is_none(),
        "no new packets for a leaving node"
    );
    let check = m.check_repairs(&policy, 60);
    assert_eq!(check.tasks.len() as u64, held, "{check:?}");
    let mut rng = StdRng::seed_from_u64(5);
    for task in &check.tasks {
        let request = RepairRequest {
            snapshot: task.snapshot,
            data_id: task.data_id,
            rebuild: &task.rebuild,
            given_up: &check.given_up,
        };
        for command in m.decide_repair(&request, 70, &mut rng).expect("placed") {
            if let Command::MovePacket { new_target, .. } = &command {
                assert_ne!(*new_target, leaver);
            }
            m.apply(&command).expect("move");
        }
    }
    let status = m.leave_status(&leaver);
    assert_eq!((status.packets_remaining, status.bytes_remaining), (0, 0));
    assert!(status.done());
    assert_eq!(m.check_repairs(&policy, 80).pending(), 0);
    // Leaving is for known nodes only.
    let unknown = Command::SetExiting {
        node: NodeId([77; 32]),
        exiting: true,
        at: 90,
    };
    assert!(matches!(m.apply(&unknown), Err(ApplyError::UnknownNode(_))));
}

#[test]
fn a_repair_never_chooses_a_node_to_avoid() {
    let (mut m, _paris, snapshot) = backed_up();
    let data_id = DataId([1; 32]);
    let lost = m.state().chunks[&data_id].packets[0].target;
    m.apply(&Command::SetOnline {
        node: lost,
        online: false,
        at: 30,
    })
    .expect("offline");
    let given_up = BTreeSet::from([lost]);
    let request = RepairRequest {
        snapshot,
        data_id,
        rebuild: &[0],
        given_up: &given_up,
    };
    // Whatever target a plain repair picks with this seed, avoiding it
    // (a refuted location claim under `enforce`) picks another.
    let pick = |avoid: &BTreeSet<NodeId>| {
        let commands = m
            .decide_repair_avoiding(&request, avoid, 40, &mut StdRng::seed_from_u64(2))
            .expect("a replacement exists");
        match commands.as_slice() {
            [Command::MovePacket { new_target, .. }] => *new_target,
            other => panic!("one MovePacket: {other:?}"),
        }
    };
    let mut avoid = BTreeSet::new();
    for _ in 0..5 {
        let chosen = pick(&avoid);
        assert!(!avoid.contains(&chosen), "an avoided node was chosen");
        avoid.insert(chosen);
    }
}
