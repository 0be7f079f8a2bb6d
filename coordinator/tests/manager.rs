//! The sequence manager end to end, without a network: dedup across sources,
//! forget with reference counts, quotas, closed grids, sealed sequences,
//! tickets, decide→apply with no disk, and replaying the command log.

mod common;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::{
    ApplyError, BackupParams, ChunkPlan, Command, CommitRequest, Compression, ConvergenceScope,
    DataId, Encryption, GeoPoint, GridMode, GroupKey, JoinToken, Manager, ManagerConfig,
    ManagerError, NodeId, NodeProfile, PacketId, PacketSpec, PlanDecision, PlanRequest, QuotaError,
    Redundancy, Sequence, StoreReceipt, Subscription, TicketKind, haversine_km, open_as_recipient,
};
use x25519_dalek::{PublicKey, StaticSecret};

const GIB: u64 = 1 << 30;
const PACKET: u64 = 1 << 20;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn id_of(key: &SigningKey) -> NodeId {
    NodeId(key.verifying_key().to_bytes())
}

/// A node with a real identity and X25519 key at a location.
struct TestNode {
    id: NodeId,
    secret: StaticSecret,
    profile: NodeProfile,
}

fn test_node(n: u8, lat: f64, lon: f64, donate: u64) -> TestNode {
    let id = id_of(&key(n));
    let secret = StaticSecret::from([n.wrapping_add(100); 32]);
    let mut profile = NodeProfile::new(id, GeoPoint::new(lat, lon).unwrap(), donate, 0);
    profile.x25519_public = PublicKey::from(&secret).to_bytes();
    TestNode {
        id,
        secret,
        profile,
    }
}

/// 24 targets on a grid over Europe, and two sources (Paris, Lyon).
fn grid() -> (Vec<TestNode>, TestNode, TestNode) {
    let mut targets = Vec::new();
    let mut n = 10u8;
    for lat in [38.0, 42.0, 46.0, 50.0, 54.0, 58.0] {
        for lon in [-6.0, 4.0, 14.0, 24.0] {
            targets.push(test_node(n, lat, lon, 10 * GIB));
            n += 1;
        }
    }
    let paris = test_node(1, 48.85, 2.35, GIB);
    let lyon = test_node(2, 45.76, 4.84, GIB);
    (targets, paris, lyon)
}

fn manager(config: ManagerConfig) -> Manager {
    Manager::new(key(200), GroupKey([7; 32]), config)
}

fn join_all(m: &mut Manager, targets: &[TestNode], sources: &[&TestNode]) {
    for t in targets {
        m.join(t.profile.clone(), None, 1).unwrap();
    }
    for s in sources {
        m.join(s.profile.clone(), None, 1).unwrap();
    }
}

fn params() -> BackupParams {
    BackupParams {
        backup_distance: "200km..2500km".parse().unwrap(),
        spread: "300km..".parse().unwrap(),
        redundancy: Redundancy::Erasure { k: 2, m: 1 },
        compression: Compression::Zstd { level: 3 },
        encryption: Encryption {
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
        },
        sync_interval_secs: Some(86_400),
    }
}

/// A chunk whose packets are derived from its name, as convergent encryption would.
fn chunk(name: &str) -> ChunkPlan {
    let data_id = DataId(*blake3::hash(name.as_bytes()).as_bytes());
    ChunkPlan {
        data_id,
        packets: (0..3u8)
            .map(|j| PacketSpec {
                packet_id: PacketId::of(&[name.as_bytes(), &[j]].concat()),
                size: PACKET,
            })
            .collect(),
    }
}

fn plan(m: &mut Manager, source: &TestNode, set: &str, chunks: &[&str], now: u64) -> PlanDecision {
    let mut rng = StdRng::seed_from_u64(now);
    m.plan_backup(
        PlanRequest {
            extend: None,
            source: source.id,
            set: set.into(),
            location: source.profile.location,
            params: params(),
            chunks: chunks.iter().map(|c| chunk(c)).collect(),
            exclude: Vec::new(),
        },
        now,
        &mut rng,
    )
    .unwrap()
}

fn commit(
    m: &mut Manager,
    source: &TestNode,
    decision: &PlanDecision,
    chunks: &[&str],
    now: u64,
) -> strew_coordinator::CommitResponse {
    let stored: Vec<StoreReceipt> = common::receipts(&decision.uploads, source.id);
    let mut rng = StdRng::seed_from_u64(now + 1);
    m.commit_backup(
        CommitRequest {
            pending_id: decision.pending_id,
            source: source.id,
            receipts: stored,
            manifest: DataId([9; 32]),
            chunks: chunks.iter().map(|c| chunk(c).data_id).collect(),
            bytes: 1000,
            manifest_chunks: Vec::new(),
        },
        now,
        &mut rng,
    )
    .unwrap()
}

#[test]
fn plan_places_under_constraints_and_tickets_name_only_each_targets_packets() {
    let (targets, paris, _) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris]);
    let decision = plan(&mut m, &paris, "home", &["a", "b", "c"], 10);
    assert_eq!(decision.uploads.len(), 3);
    let p = params();
    let mut used = std::collections::BTreeSet::new();
    for c in &decision.uploads {
        let distinct: std::collections::BTreeSet<_> = c.packets.iter().map(|p| p.target).collect();
        assert_eq!(distinct.len(), 3);
        for packet in &c.packets {
            let loc = m.state().clients[&packet.target].profile.location;
            assert!(
                p.backup_distance
                    .contains(haversine_km(&paris.profile.location, &loc))
            );
            assert_ne!(packet.target, paris.id);
            used.insert(packet.target);
        }
    }
    let used: Vec<NodeId> = used.into_iter().collect();
    for (i, a) in used.iter().enumerate() {
        for b in &used[i + 1..] {
            let (la, lb) = (
                m.state().clients[a].profile.location,
                m.state().clients[b].profile.location,
            );
            assert!(haversine_km(&la, &lb) >= 300.0);
        }
    }
    // Every target gets one ticket listing exactly its packets, verifiable offline.
    assert_eq!(decision.tickets.len(), used.len());
    for ticket in &decision.tickets {
        ticket.verify(&m.node_id(), &ticket.target, 11).unwrap();
        assert_eq!(ticket.kind, TicketKind::Store);
        let expected: usize = decision
            .uploads
            .iter()
            .flat_map(|c| &c.packets)
            .filter(|p| p.target == ticket.target)
            .count();
        assert_eq!(ticket.entries.len(), expected);
    }
    // Reservations show up as less free space in the placement view.
    let t = decision.tickets[0].target;
    assert!(m.view().get(&t).unwrap().storage_free < 10 * GIB);
}

#[test]
fn second_source_with_identical_data_uploads_nothing_and_forget_keeps_shared_packets() {
    let (targets, paris, lyon) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris, &lyon]);

    let first = plan(
        &mut m,
        &paris,
        "docs",
        &["shared-1", "shared-2", "paris-only"],
        10,
    );
    assert_eq!(first.uploads.len(), 3);
    let snap_paris = commit(
        &mut m,
        &paris,
        &first,
        &["shared-1", "shared-2", "paris-only"],
        20,
    )
    .snapshot;

    let known = m.dedup_query(&[chunk("shared-1").data_id, chunk("new").data_id]);
    assert_eq!(known.known.len(), 1);
    assert_eq!(known.unknown, vec![chunk("new").data_id]);

    let second = plan(&mut m, &lyon, "docs", &["shared-1", "shared-2"], 30);
    assert!(
        second.uploads.is_empty(),
        "identical data must not be uploaded again"
    );
    assert!(second.tickets.is_empty());
    assert_eq!(second.reused.len(), 2);
    let snap_lyon = commit(&mut m, &lyon, &second, &["shared-1", "shared-2"], 40).snapshot;
    assert_eq!(m.state().chunks[&chunk("shared-1").data_id].refs, 2);
    let lyon_charged = m.state().clients[&lyon.id].source_stored_bytes;
    assert_eq!(lyon_charged, 0);

    // Forgetting Paris's snapshot frees only what Lyon does not reference.
    let forgot = m.forget(paris.id, snap_paris, 50).unwrap();
    let freed: Vec<PacketId> = forgot.deletions.values().flatten().copied().collect();
    assert_eq!(freed.len(), 3);
    let only: Vec<PacketId> = chunk("paris-only")
        .packets
        .iter()
        .map(|p| p.packet_id)
        .collect();
    for p in &freed {
        assert!(only.contains(p));
    }
    for t in &forgot.delete_tickets {
        assert_eq!(t.kind, TicketKind::Delete);
        t.verify(&m.node_id(), &t.target, 51).unwrap();
    }
    assert!(m.state().chunks.contains_key(&chunk("shared-1").data_id));

    // Lyon may not forget or read Paris's snapshots; after Lyon forgets its own, all is freed.
    assert!(matches!(
        m.forget(lyon.id, snap_paris, 55),
        Err(ManagerError::Apply(ApplyError::UnknownSnapshot(_)))
    ));
    let forgot = m.forget(lyon.id, snap_lyon, 60).unwrap();
    assert_eq!(forgot.deletions.values().flatten().count(), 6);
    assert!(m.state().chunks.is_empty());
    assert!(
        m.state()
            .targets
            .values()
            .all(|t| t.bytes == 0 && t.packets.is_empty() && t.reserved == 0)
    );
    assert_eq!(m.state().clients[&paris.id].source_stored_bytes, 0);
}

#[test]
fn sequences_are_sealed_to_their_source_only() {
    let (targets, paris, lyon) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris, &lyon]);
    let decision = plan(&mut m, &paris, "docs", &["x", "y"], 10);
    let snap = commit(&mut m, &paris, &decision, &["x", "y"], 20).snapshot;
    let mut rng = StdRng::seed_from_u64(3);
    let sealed = m.fetch_sequence(paris.id, snap, &mut rng).unwrap();
    let plain = open_as_recipient(&paris.secret, snap.as_bytes(), &sealed).unwrap();
    let sequence = Sequence::from_bytes(&plain).unwrap();
    assert_eq!(sequence.snapshot, snap);
    assert_eq!(sequence.stripes.len(), 2);
    assert_eq!(sequence.stripes[0].data_id, chunk("x").data_id);
    for (stripe, planned) in sequence.stripes.iter().zip(&decision.uploads) {
        let targets: Vec<NodeId> = stripe.packets.iter().map(|e| e.targets[0]).collect();
        let want: Vec<NodeId> = planned.packets.iter().map(|p| p.target).collect();
        assert_eq!(targets, want);
    }
    assert!(open_as_recipient(&lyon.secret, snap.as_bytes(), &sealed).is_err());
    assert!(matches!(
        m.fetch_sequence(lyon.id, snap, &mut rng),
        Err(ManagerError::NotYours { .. })
    ));
    assert_eq!(m.list_snapshots(&paris.id, Some("docs")).len(), 1);
    assert!(m.list_snapshots(&lyon.id, None).is_empty());
}

#[test]
fn commit_needs_every_receipt_and_is_idempotent() {
    let (targets, paris, _) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris]);
    let decision = plan(&mut m, &paris, "docs", &["a", "b"], 10);
    let mut stored: Vec<StoreReceipt> = common::receipts(&decision.uploads, paris.id);
    let last = stored.pop().unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let request = |stored: Vec<StoreReceipt>| CommitRequest {
        pending_id: decision.pending_id,
        source: paris.id,
        receipts: stored,
        manifest: DataId([1; 32]),
        chunks: vec![chunk("a").data_id, chunk("b").data_id],
        bytes: 10,
        manifest_chunks: Vec::new(),
    };
    assert!(matches!(
        m.commit_backup(request(stored.clone()), 20, &mut rng),
        Err(ManagerError::MissingUploads { missing: 1, .. })
    ));
    stored.push(last);
    let first = m
        .commit_backup(request(stored.clone()), 20, &mut rng)
        .unwrap();
    let again = m.commit_backup(request(stored), 21, &mut rng).unwrap();
    assert_eq!(first.snapshot, again.snapshot);
    assert_eq!(m.state().snapshots.len(), 1);
}

#[test]
fn quotas_refuse_backups_larger_than_the_subscription() {
    let (targets, _, _) = grid();
    // A source donating 4 MiB may store 4 MiB (stored bytes, redundancy included).
    let small = test_node(3, 48.85, 2.35, 4 * PACKET);
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&small]);
    let mut rng = StdRng::seed_from_u64(1);
    let request = |chunks: &[&str]| PlanRequest {
        extend: None,
        source: small.id,
        set: "big".into(),
        location: small.profile.location,
        params: params(),
        chunks: chunks.iter().map(|c| chunk(c)).collect(),
        exclude: Vec::new(),
    };
    // One chunk = 3 packets = 3 MiB fits; two chunks = 6 MiB does not.
    let err = m
        .plan_backup(request(&["a", "b"]), 10, &mut rng)
        .unwrap_err();
    match err {
        ManagerError::Apply(ApplyError::Quota(QuotaError::SourceQuota {
            used,
            extra,
            limit,
            ..
        })) => {
            assert_eq!((used, extra, limit), (0, 6 * PACKET, 4 * PACKET));
        }
        other => panic!("expected a quota refusal, got {other}"),
    }
    assert!(
        m.state().pending.is_empty(),
        "a refused plan leaves no trace"
    );
    assert!(m.plan_backup(request(&["a"]), 10, &mut rng).is_ok());
    // The pending backup counts against the quota too.
    assert!(m.plan_backup(request(&["c"]), 11, &mut rng).is_err());
}

/// A plan's uploads and a restore's reads count against the source's
/// `network_bytes_per_day`; past it plans and read tickets are refused with
/// a clear message, and the next UTC day starts afresh.
#[test]
fn the_network_quota_counts_uploads_and_reads_per_day() {
    use strew_coordinator::manager::ReadTicketRequest;
    use strew_coordinator::quota::DAY_MS;
    let (targets, paris, _) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris]);
    // 4 MiB a day: one chunk (3 packets of 1 MiB at 2+1) fits, two do not.
    let limited = Subscription {
        plan: "metered".into(),
        network_bytes_per_day: 4 * PACKET,
        ..Subscription::default_plan()
    };
    m.apply(&Command::Admit {
        profile: paris.profile.clone(),
        subscription: limited,
        at: 5,
    })
    .unwrap();
    let day = 10 * DAY_MS;
    let decision = plan(&mut m, &paris, "docs", &["a"], day + 10);
    assert_eq!(
        m.state().clients[&paris.id].network.used(day + 10),
        3 * PACKET
    );
    let mut rng = StdRng::seed_from_u64(4);
    let second = PlanRequest {
        extend: None,
        source: paris.id,
        set: "more".into(),
        location: paris.profile.location,
        params: params(),
        chunks: vec![chunk("b")],
        exclude: Vec::new(),
    };
    match m.plan_backup(second.clone(), day + 20, &mut rng) {
        Err(ManagerError::Apply(ApplyError::Quota(e @ QuotaError::NetworkQuota { .. }))) => {
            assert!(e.to_string().contains("tomorrow"), "{e}");
        }
        other => panic!("expected a network quota refusal, got {other:?}"),
    }
    commit(&mut m, &paris, &decision, &["a"], day + 30);
    let snapshot = m.list_snapshots(&paris.id, Some("docs"))[0].snapshot;
    let reads = ReadTicketRequest {
        requester: paris.id,
        snapshot,
        from: 0,
        count: 1,
    };
    // Reading the chunk back (K = 2 packets of 1 MiB) would pass 4 MiB today.
    assert!(m.decide_read_traffic(&reads, day + 40).is_err());
    // Tomorrow both fit again, and a read is counted.
    let tomorrow = day + DAY_MS;
    let Some(command) = m.decide_read_traffic(&reads, tomorrow).unwrap() else {
        panic!("a metered read is counted");
    };
    m.apply(&command).unwrap();
    assert_eq!(
        m.state().clients[&paris.id].network.used(tomorrow),
        2 * PACKET
    );
    assert!(
        m.plan_backup(second, tomorrow + 1, &mut rng).is_err(),
        "2 + 3 > 4 MiB"
    );
}

#[test]
fn plans_naming_packets_over_the_protocol_maximum_are_refused() {
    let (targets, paris, _) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris]);
    let mut rng = StdRng::seed_from_u64(3);
    let mut huge = chunk("huge");
    huge.packets[1].size = strew_coordinator::MAX_PACKET_BYTES + 1;
    let err = m
        .plan_backup(
            PlanRequest {
                extend: None,
                source: paris.id,
                set: "a".into(),
                location: paris.profile.location,
                params: params(),
                chunks: vec![huge],
                exclude: Vec::new(),
            },
            10,
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(err, ManagerError::Invalid(_)), "{err}");
    // Nothing was reserved: an honest plan still fits.
    assert_eq!(plan(&mut m, &paris, "a", &["one"], 11).uploads.len(), 1);
}

#[test]
fn a_source_holds_a_bounded_number_of_uncommitted_plans() {
    let (targets, paris, _) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris]);
    let limit = strew_coordinator::MAX_PENDING_PER_SOURCE;
    for i in 0..limit {
        plan(
            &mut m,
            &paris,
            &format!("set-{i}"),
            &[&format!("c{i}")],
            10 + i as u64,
        );
    }
    let mut rng = StdRng::seed_from_u64(4);
    let err = m
        .plan_backup(
            PlanRequest {
                extend: None,
                source: paris.id,
                set: "one-more".into(),
                location: paris.profile.location,
                params: params(),
                chunks: vec![chunk("more")],
                exclude: Vec::new(),
            },
            100,
            &mut rng,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("planned and not committed"),
        "{err}"
    );
}

#[test]
fn targets_never_get_more_than_they_donate() {
    let (_, paris, _) = grid();
    // Three tiny targets, each with room for exactly two packets.
    let targets: Vec<TestNode> = [(40.4, -3.7), (52.5, 13.4), (41.9, 12.5)]
        .iter()
        .enumerate()
        .map(|(i, (lat, lon))| test_node(50 + i as u8, *lat, *lon, 2 * PACKET))
        .collect();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris]);
    let mut rng = StdRng::seed_from_u64(2);
    let decision = plan(&mut m, &paris, "a", &["one", "two"], 10);
    assert_eq!(decision.uploads.len(), 2);
    let err = m
        .plan_backup(
            PlanRequest {
                extend: None,
                source: paris.id,
                set: "b".into(),
                location: paris.profile.location,
                params: params(),
                chunks: vec![chunk("three")],
                exclude: Vec::new(),
            },
            11,
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(err, ManagerError::Placement(_)), "{err}");
    assert!(err.to_string().contains("cannot place"), "{err}");
}

#[test]
fn closed_grid_admits_only_token_holders() {
    let (targets, paris, _) = grid();
    let mut m = manager(ManagerConfig::default());
    let manager_id = m.node_id();
    m.set_grid_mode(GridMode::Closed {
        token_issuers: vec![manager_id],
    })
    .unwrap();
    let err = m.join(targets[0].profile.clone(), None, 1).unwrap_err();
    assert!(matches!(
        err,
        ManagerError::Apply(ApplyError::Quota(QuotaError::TokenRequired(_)))
    ));
    let plan = Subscription {
        plan: "gold".into(),
        source_storage: Some(100 * GIB),
        ..Subscription::default_plan()
    };
    let token = JoinToken::issue(&key(200), paris.id, plan.clone(), 100).unwrap();
    assert!(
        m.join(targets[0].profile.clone(), Some(token.clone()), 1)
            .is_err()
    );
    m.join(paris.profile.clone(), Some(token), 1).unwrap();
    assert_eq!(m.state().clients[&paris.id].subscription, plan);
    // A member can update its profile without presenting the token again.
    m.join(paris.profile.clone(), None, 5).unwrap();
}

/// The pure core, with no temp dir: every change is decided (`decide_*`,
/// which changes nothing), then applied (`apply`, which returns the records
/// it touched). The commands, CBOR round-tripped as a log would carry them,
/// bring a second manager to the same state, reference counts included.
#[test]
fn decide_then_apply_drives_plan_commit_forget_and_abort_and_the_commands_replay() {
    let (targets, paris, lyon) = grid();
    let mut m = manager(ManagerConfig::default());
    let mut log: Vec<Command> = Vec::new();
    let mut rng = StdRng::seed_from_u64(3);
    let run = |m: &mut Manager, log: &mut Vec<Command>, command: Command| {
        let before = m.state().clone();
        let effects = m.apply(&command).unwrap();
        assert_ne!(m.state(), &before, "an applied command changes the state");
        log.push(command);
        effects
    };
    for node in targets.iter().chain([&paris, &lyon]) {
        let join = Command::Join {
            profile: node.profile.clone(),
            token: None,
            at: 1,
        };
        let effects = run(&mut m, &mut log, join);
        assert!(effects.touched.clients.contains(&node.id));
    }
    let request = |source: &TestNode, set: &str, chunks: &[&str]| PlanRequest {
        source: source.id,
        set: set.into(),
        location: source.profile.location,
        // Lyon accepts any distance, so Paris's copy of a suits it.
        params: BackupParams {
            backup_distance: if source.id == paris.id {
                params().backup_distance
            } else {
                "0km..".parse().unwrap()
            },
            ..params()
        },
        chunks: chunks.iter().map(|c| chunk(c)).collect(),
        exclude: Vec::new(),
        extend: None,
    };
    let receipts = common::receipts;
    let ids = |names: &[&str]| -> Vec<DataId> { names.iter().map(|c| chunk(c).data_id).collect() };

    // Paris plans and commits a, b, c.
    let (command, draft) = m
        .decide_plan(&request(&paris, "docs", &["a", "b", "c"]), 10, &mut rng)
        .unwrap();
    assert!(m.state().pending.is_empty(), "deciding changes nothing");
    let effects = run(&mut m, &mut log, command);
    assert_eq!(effects.touched.pending.len(), 1);
    let decision = m.finish_plan(draft, 10).unwrap();
    assert!(!decision.tickets.is_empty());
    let commit_request = CommitRequest {
        pending_id: decision.pending_id,
        source: paris.id,
        receipts: receipts(&decision.uploads, paris.id),
        manifest: chunk("a").data_id,
        manifest_chunks: ids(&["a"]),
        chunks: ids(&["a", "b", "c"]),
        bytes: 3000,
    };
    let step = m.decide_commit(&commit_request, 20, &mut rng).unwrap();
    let strew_coordinator::CommitStep::Propose {
        command,
        snapshot: paris_snap,
    } = step
    else {
        panic!("a first commit proposes a command");
    };
    let effects = run(&mut m, &mut log, command);
    assert!(effects.touched.snapshots.contains(&paris_snap));
    assert_eq!(m.state().chunks[&chunk("a").data_id].refs, 1);

    // Lyon backs up a (shared with Paris) and z, then forgets it.
    let (command, draft) = m
        .decide_plan(&request(&lyon, "docs", &["a", "z"]), 30, &mut rng)
        .unwrap();
    run(&mut m, &mut log, command);
    let decision = m.finish_plan(draft, 30).unwrap();
    assert_eq!(
        decision.reused,
        ids(&["a"]),
        "a is stored already: nothing to upload for it"
    );
    let commit_request = CommitRequest {
        pending_id: decision.pending_id,
        source: lyon.id,
        receipts: receipts(&decision.uploads, lyon.id),
        manifest: chunk("z").data_id,
        manifest_chunks: ids(&["z"]),
        chunks: ids(&["a", "z"]),
        bytes: 2000,
    };
    let strew_coordinator::CommitStep::Propose {
        command,
        snapshot: lyon_snap,
    } = m.decide_commit(&commit_request, 40, &mut rng).unwrap()
    else {
        panic!("a first commit proposes a command");
    };
    run(&mut m, &mut log, command);
    assert_eq!(m.state().chunks[&chunk("a").data_id].refs, 2);
    let command = m.decide_forget(lyon.id, lyon_snap, 45).unwrap();
    let effects = run(&mut m, &mut log, command);
    let forgotten = m.finish_forget(&effects.applied, 45).unwrap();
    let freed: Vec<PacketId> = forgotten.deletions.values().flatten().copied().collect();
    assert_eq!(
        freed.len(),
        3,
        "only z's stripe is freed: a is still Paris's"
    );
    assert_eq!(m.state().chunks[&chunk("a").data_id].refs, 1);
    assert!(!m.state().chunks.contains_key(&chunk("z").data_id));

    // A plan that is abandoned releases its reservations.
    let (command, draft) = m
        .decide_plan(&request(&paris, "later", &["p"]), 50, &mut rng)
        .unwrap();
    run(&mut m, &mut log, command);
    assert!(m.state().targets.values().any(|t| t.reserved > 0));
    assert_eq!(m.next_deadline(), Some(draft.expires_at));
    let command = m.decide_abandon(paris.id, draft.pending_id, 55).unwrap();
    run(&mut m, &mut log, command);
    assert!(m.state().targets.values().all(|t| t.reserved == 0));
    assert_eq!(m.next_deadline(), None);

    // The log, as bytes, replays to the same state on another member.
    let mut replica = Manager::new(key(201), GroupKey([7; 32]), ManagerConfig::default());
    for command in &log {
        let bytes = command.to_bytes().unwrap();
        replica
            .apply(&Command::from_bytes(&bytes).unwrap())
            .unwrap();
    }
    assert_eq!(replica.state(), m.state());
    let sealed = replica
        .fetch_sequence(paris.id, paris_snap, &mut rng)
        .unwrap();
    assert!(open_as_recipient(&paris.secret, paris_snap.as_bytes(), &sealed).is_ok());
    // A command that does not apply changes nothing.
    let before = replica.state().clone();
    let again = Command::Forget {
        snapshot: lyon_snap,
        at: 60,
        expired: false,
    };
    assert!(replica.apply(&again).is_err());
    assert_eq!(replica.state(), &before);
}

#[test]
fn expired_plans_release_their_reservations() {
    let (targets, paris, _) = grid();
    let config = ManagerConfig {
        pending_ttl: 100,
        ..ManagerConfig::default()
    };
    let mut m = manager(config);
    join_all(&mut m, &targets, &[&paris]);
    let decision = plan(&mut m, &paris, "docs", &["a"], 10);
    assert!(m.state().targets.values().any(|t| t.reserved > 0));
    assert!(m.expire_pending(50).unwrap().is_empty());
    // The deadline: the grace plus the plan's upload time.
    assert!(decision.expires_at > 110);
    assert!(m.expire_pending(decision.expires_at).unwrap().is_empty());
    let tickets = m.expire_pending(decision.expires_at + 1).unwrap();
    assert_eq!(tickets.len(), 3);
    assert!(m.state().pending.is_empty());
    assert!(m.state().targets.values().all(|t| t.reserved == 0));
    let mut rng = StdRng::seed_from_u64(1);
    let late = m.commit_backup(
        CommitRequest {
            pending_id: decision.pending_id,
            source: paris.id,
            receipts: vec![],
            manifest: DataId([0; 32]),
            chunks: vec![],
            bytes: 0,
            manifest_chunks: Vec::new(),
        },
        decision.expires_at + 100,
        &mut rng,
    );
    assert!(matches!(
        late,
        Err(ManagerError::Apply(ApplyError::UnknownPending(_)))
    ));
}

#[test]
fn replanning_excludes_unreachable_targets_and_abandon_releases_the_old_plan() {
    let (targets, paris, lyon) = grid();
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets, &[&paris, &lyon]);
    let first = plan(&mut m, &paris, "docs", &["a", "b"], 10);
    let unreachable = first.tickets[0].target;

    // Only the owner may abandon; abandoning releases every reservation.
    assert!(m.abandon(lyon.id, first.pending_id, 11).is_err());
    let deletes = m.abandon(paris.id, first.pending_id, 11).unwrap();
    assert_eq!(deletes.len(), first.tickets.len());
    assert!(deletes.iter().all(|t| t.kind == TicketKind::Delete));
    assert!(m.state().pending.is_empty());
    assert!(m.state().targets.values().all(|t| t.reserved == 0));

    let mut rng = StdRng::seed_from_u64(12);
    let second = m
        .plan_backup(
            PlanRequest {
                extend: None,
                source: paris.id,
                set: "docs".into(),
                location: paris.profile.location,
                params: params(),
                chunks: vec![chunk("a"), chunk("b")],
                exclude: vec![unreachable],
            },
            12,
            &mut rng,
        )
        .unwrap();
    assert!(
        second
            .uploads
            .iter()
            .flat_map(|c| &c.packets)
            .all(|p| p.target != unreachable)
    );

    // The manifest's own chunks travel with the sealed sequence to a restore.
    let stored: Vec<StoreReceipt> = common::receipts(&second.uploads, paris.id);
    let snap = m
        .commit_backup(
            CommitRequest {
                pending_id: second.pending_id,
                source: paris.id,
                receipts: stored,
                manifest: DataId([4; 32]),
                manifest_chunks: vec![chunk("b").data_id],
                chunks: vec![chunk("a").data_id, chunk("b").data_id],
                bytes: 5,
            },
            13,
            &mut rng,
        )
        .unwrap()
        .snapshot;
    let sealed = m.fetch_sequence(paris.id, snap, &mut rng).unwrap();
    let sequence =
        Sequence::from_bytes(&open_as_recipient(&paris.secret, snap.as_bytes(), &sealed).unwrap())
            .unwrap();
    assert_eq!(sequence.manifest, DataId([4; 32]));
    assert_eq!(sequence.manifest_chunks, vec![chunk("b").data_id]);
}

#[test]
fn large_plans_get_bounded_tickets_that_together_name_every_packet() {
    let (targets, _, _) = grid();
    // A source whose donation (its default quota) covers 9000 packets.
    let paris = test_node(1, 48.85, 2.35, 20 * GIB);
    let mut m = manager(ManagerConfig::default());
    join_all(&mut m, &targets[..4], &[&paris]);
    // 4 targets, width 3: each target gets about 3/4 of 3000 packets
    // (1000 chunks: one plan's bound is MAX_PLAN_CHUNKS).
    let names: Vec<String> = (0..1000).map(|i| format!("chunk {i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut rng = StdRng::seed_from_u64(3);
    let mut p = params();
    p.backup_distance = "..".parse().unwrap();
    p.spread = "..".parse().unwrap();
    let decision = m
        .plan_backup(
            PlanRequest {
                extend: None,
                source: paris.id,
                set: "big".into(),
                location: paris.profile.location,
                params: p,
                chunks: refs.iter().map(|c| chunk(c)).collect(),
                exclude: Vec::new(),
            },
            1,
            &mut rng,
        )
        .unwrap();
    assert!(
        decision
            .tickets
            .iter()
            .all(|t| t.entries.len() <= strew_coordinator::manager::TICKET_BATCH)
    );
    let per_target: usize = decision.uploads.iter().map(|c| c.packets.len()).sum();
    assert!(decision.tickets.len() > 4, "several tickets per target");
    let mut named = std::collections::BTreeSet::new();
    for t in &decision.tickets {
        assert!(t.verify(&t.manager, &t.target, 2).is_ok());
        for e in &t.entries {
            assert!(
                named.insert((t.target, e.packet_id)),
                "each packet named once"
            );
        }
    }
    let planned: std::collections::BTreeSet<_> = decision
        .uploads
        .iter()
        .flat_map(|c| c.packets.iter().map(|p| (p.target, p.packet_id)))
        .collect();
    assert_eq!(named, planned);
    assert_eq!(per_target, planned.len());
}

#[test]
fn decided_commands_change_nothing_until_applied_and_replicate_to_another_member() {
    let (targets, paris, _) = grid();
    let mut leader = manager(ManagerConfig::default());
    // A follower holds the same state under its own identity.
    let mut follower = Manager::new(key(201), GroupKey([7; 32]), ManagerConfig::default());
    join_all(&mut leader, &targets, &[&paris]);
    join_all(&mut follower, &targets, &[&paris]);
    let request = PlanRequest {
        extend: None,
        source: paris.id,
        set: "home".into(),
        location: paris.profile.location,
        params: params(),
        chunks: ["a", "b"].iter().map(|c| chunk(c)).collect(),
        exclude: Vec::new(),
    };
    let mut rng = StdRng::seed_from_u64(5);
    let before = leader.state().clone();
    let (first, draft) = leader.decide_plan(&request, 10, &mut rng).unwrap();
    let (second, _) = leader.decide_plan(&request, 10, &mut rng).unwrap();
    assert_eq!(leader.state(), &before, "deciding changed the state");
    leader.execute(first.clone()).unwrap();
    follower.execute(first).unwrap();
    // Both were decided on the same state: the second carries a stale pending id.
    assert!(leader.execute(second).is_err());
    let decision = leader.finish_plan(draft, 10).unwrap();
    assert!(!decision.tickets.is_empty());
    for t in &decision.tickets {
        let target = t.target;
        assert!(t.verify(&id_of(&key(200)), &target, 11).is_ok());
        assert!(t.verify(&id_of(&key(201)), &target, 11).is_err());
    }
    let stored: Vec<StoreReceipt> = common::receipts(&decision.uploads, paris.id);
    let commit = CommitRequest {
        pending_id: decision.pending_id,
        source: paris.id,
        receipts: stored,
        manifest: DataId([9; 32]),
        chunks: ["a", "b"].iter().map(|c| chunk(c).data_id).collect(),
        bytes: 1000,
        manifest_chunks: Vec::new(),
    };
    let step = leader.decide_commit(&commit, 20, &mut rng).unwrap();
    let strew_coordinator::CommitStep::Propose { command, snapshot } = step else {
        panic!("a first commit must propose a command");
    };
    let applied = follower.execute(command.clone()).unwrap();
    leader.execute(command).unwrap();
    assert_eq!(leader.state(), follower.state());
    let response = follower.finish_commit(snapshot, &applied, 20).unwrap();
    assert_eq!(response.snapshot, snapshot);
    // The follower, as a new leader, answers a retried commit without a new command.
    match follower.decide_commit(&commit, 30, &mut rng).unwrap() {
        strew_coordinator::CommitStep::Done(r) => assert_eq!(r.snapshot, snapshot),
        other => panic!("a retried commit proposed again: {other:?}"),
    }
    // ... and can open the sequence sealed by the old leader (same group key).
    assert!(
        follower
            .fetch_sequence(paris.id, snapshot, &mut rng)
            .is_ok()
    );
}

#[test]
fn the_backup_log_is_trimmed_by_age_and_count_and_keeps_its_newest_event() {
    let (targets, paris, _) = grid();
    let config = ManagerConfig {
        log_retention: strew_coordinator::LogRetention {
            max_age: 1_000,
            max_events: 5,
        },
        ..ManagerConfig::default()
    };
    let mut m = manager(config);
    join_all(&mut m, &targets, &[&paris]);
    let joined = m.state().log.len() as u64;
    assert!(joined > 5, "every join is logged");
    // By count: only the newest 5 stay.
    let trim = m.decide_trim_log(1).expect("too many events");
    m.execute(trim).unwrap();
    let seqs: Vec<u64> = m.state().log.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (joined - 5..joined).collect::<Vec<_>>());
    assert_eq!(m.decide_trim_log(1), None, "nothing more to trim");
    // New events continue the sequence.
    let late = test_node(99, 50.0, 10.0, GIB);
    m.join(late.profile.clone(), None, 500).unwrap();
    assert_eq!(m.state().log.last().unwrap().seq, joined);
    // By age: events older than the window go, the newest always stays.
    let trim = m.decide_trim_log(10_000).expect("old events");
    m.execute(trim).unwrap();
    assert_eq!(m.state().log.len(), 1);
    assert_eq!(m.state().log[0].seq, joined);
    // A trim that would drop the newest event is refused and changes nothing.
    let before = m.state().clone();
    assert!(
        m.execute(Command::TrimLog {
            before_seq: joined + 1
        })
        .is_err()
    );
    assert_eq!(m.state(), &before);
}
