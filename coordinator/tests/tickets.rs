//! Issue 11's rules for tickets, receipts and dedup, against the pure
//! manager: delete tickets only for orphans and bound to the generation the
//! target recorded, plans naming another chunk's stored PacketIds refused,
//! commits only with valid receipts, dedup only of copies that suit the new
//! backup (never of garbage registered under a known DataId, never of a
//! copy marked bad), read tickets only to a snapshot's owner.

mod common;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::{MAX_READ_CHUNKS, ReadTicketRequest};
use strew_coordinator::{
    BackupParams, ChunkPlan, CommitRequest, CommitResponse, Compression, ConvergenceScope, DataId,
    Encryption, GeoPoint, Manager, ManagerError, NodeId, NodeProfile, PacketId, PacketSpec,
    PlanDecision, PlanRequest, Redundancy, StorageTicket, StoreReceipt, TicketKind,
};

const GIB: u64 = 1 << 30;
const PACKET: u64 = 1 << 20;

fn id(n: u8) -> NodeId {
    NodeId(SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes())
}

fn profile(n: u8, lat: f64, lon: f64) -> NodeProfile {
    NodeProfile::new(id(n), GeoPoint::new(lat, lon).unwrap(), 10 * GIB, 0)
}

/// 24 targets over Europe, and sources 1 (Paris) and 2 (Lyon).
fn grid() -> Manager {
    let mut m = common::europe(profile);
    m.join(profile(1, 48.85, 2.35), None, 1).unwrap();
    m.join(profile(2, 45.76, 4.84), None, 1).unwrap();
    m
}

fn location(n: u8) -> GeoPoint {
    match n {
        1 => GeoPoint::new(48.85, 2.35).unwrap(),
        _ => GeoPoint::new(45.76, 4.84).unwrap(),
    }
}

fn params(distance: &str) -> BackupParams {
    BackupParams {
        backup_distance: distance.parse().unwrap(),
        spread: "300km..".parse().unwrap(),
        redundancy: Redundancy::Erasure { k: 2, m: 1 },
        compression: Compression::None,
        encryption: Encryption {
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
        },
        sync_interval_secs: None,
    }
}

/// A chunk whose packets are derived from its name, as convergent encryption would.
fn chunk(name: &str) -> ChunkPlan {
    ChunkPlan {
        data_id: DataId(*blake3::hash(name.as_bytes()).as_bytes()),
        packets: (0..3u8)
            .map(|j| PacketSpec {
                packet_id: PacketId::of(&[name.as_bytes(), &[j]].concat()),
                size: PACKET,
            })
            .collect(),
    }
}

fn plan_chunks(
    m: &mut Manager,
    source: u8,
    chunks: Vec<ChunkPlan>,
    distance: &str,
    now: u64,
) -> Result<PlanDecision, ManagerError> {
    m.plan_backup(
        PlanRequest {
            extend: None,
            source: id(source),
            set: "docs".into(),
            location: location(source),
            params: params(distance),
            chunks,
            exclude: Vec::new(),
        },
        now,
        &mut StdRng::seed_from_u64(now),
    )
}

fn plan(m: &mut Manager, source: u8, names: &[&str], now: u64) -> PlanDecision {
    plan_chunks(
        m,
        source,
        names.iter().map(|n| chunk(n)).collect(),
        "0km..",
        now,
    )
    .unwrap()
}

fn commit_with(
    m: &mut Manager,
    source: u8,
    decision: &PlanDecision,
    chunks: Vec<DataId>,
    receipts: Vec<StoreReceipt>,
    now: u64,
) -> Result<CommitResponse, ManagerError> {
    m.commit_backup(
        CommitRequest {
            pending_id: decision.pending_id,
            source: id(source),
            receipts,
            manifest: DataId([9; 32]),
            manifest_chunks: Vec::new(),
            chunks,
            bytes: 1000,
        },
        now,
        &mut StdRng::seed_from_u64(now),
    )
}

fn commit(m: &mut Manager, source: u8, decision: &PlanDecision, names: &[&str], now: u64) {
    let receipts = common::receipts(&decision.uploads, id(source));
    let chunks = names.iter().map(|n| chunk(n).data_id).collect();
    commit_with(m, source, decision, chunks, receipts, now).unwrap();
}

fn deleted(tickets: &[StorageTicket]) -> Vec<(NodeId, PacketId, u64)> {
    tickets
        .iter()
        .inspect(|t| assert_eq!(t.kind, TicketKind::Delete))
        .flat_map(|t| {
            t.entries
                .iter()
                .map(move |e| (t.target, e.packet_id, e.generation))
        })
        .collect()
}

#[test]
fn a_plan_naming_another_chunks_stored_packets_is_refused() {
    let mut m = grid();
    let victim = plan(&mut m, 1, &["a"], 10);
    commit(&mut m, 1, &victim, &["a"], 11);
    let mut evil = chunk("evil");
    evil.packets = chunk("a").packets;
    let refused = plan_chunks(&mut m, 2, vec![evil], "0km..", 12);
    assert!(
        matches!(&refused, Err(ManagerError::Apply(e)) if e.to_string().contains("already stored")),
        "{refused:?}"
    );
}

#[test]
fn an_orphan_commit_gets_no_delete_ticket_for_a_packet_another_plan_references() {
    let mut m = grid();
    // The victim plans "a" (uploading, not yet committed).
    let victim = plan(&mut m, 1, &["a"], 10);
    let victim_packets: Vec<(NodeId, PacketId)> = victim.uploads[0]
        .packets
        .iter()
        .map(|p| (p.target, p.packet_id))
        .collect();
    // The attacker plans the victim's PacketIds under another DataId, then
    // commits a snapshot that uses none of them.
    let mut evil = chunk("evil");
    evil.packets = chunk("a").packets;
    let attacker = plan_chunks(&mut m, 2, vec![evil], "0km..", 11).unwrap();
    let receipts = common::receipts(&attacker.uploads, id(2));
    let answer = commit_with(&mut m, 2, &attacker, Vec::new(), receipts, 12).unwrap();
    for (target, packet, generation) in deleted(&answer.delete_tickets) {
        assert!(
            !victim_packets.contains(&(target, packet)),
            "a delete ticket names the victim's packet {packet} on {target}"
        );
        let planned = attacker.uploads[0]
            .packets
            .iter()
            .find(|p| p.target == target && p.packet_id == packet)
            .expect("only the attacker's own uploads are orphans");
        assert_eq!(generation, planned.generation);
    }
    // The victim commits and its copy is whole.
    commit(&mut m, 1, &victim, &["a"], 13);
    let recorded = m.state().chunk_packets(&chunk("a").data_id).unwrap();
    assert_eq!(recorded.len(), 3);
}

#[test]
fn abort_and_commit_compute_orphans_alike_and_bind_them_to_the_planned_generation() {
    let mut m = grid();
    let first = plan(&mut m, 1, &["a"], 10);
    // The same source re-plans the same chunk; the first plan is abandoned.
    let second = plan(&mut m, 1, &["a"], 11);
    let tickets = m.abandon(id(1), first.pending_id, 12).unwrap();
    let live: Vec<(NodeId, PacketId)> = second.uploads[0]
        .packets
        .iter()
        .map(|p| (p.target, p.packet_id))
        .collect();
    for (target, packet, generation) in deleted(&tickets) {
        assert!(!live.contains(&(target, packet)));
        assert!(
            first.uploads[0]
                .packets
                .iter()
                .any(|p| p.packet_id == packet && p.generation == generation)
        );
    }
}

#[test]
fn forget_binds_delete_tickets_to_the_receipted_generation_and_a_new_upload_gets_a_new_one() {
    let mut m = grid();
    let first = plan(&mut m, 1, &["a"], 10);
    commit(&mut m, 1, &first, &["a"], 11);
    let snapshot = m.list_snapshots(&id(1), None)[0].snapshot;
    let forgot = m.forget(id(1), snapshot, 12).unwrap();
    let old = deleted(&forgot.delete_tickets);
    assert_eq!(old.len(), 3);
    for (target, packet, generation) in &old {
        assert!(first.uploads[0].packets.iter().any(|p| {
            &p.target == target && &p.packet_id == packet && &p.generation == generation
        }));
    }
    // Stored again after the forget: every packet has a new generation, so
    // the old tickets cannot delete the new copy.
    let again = plan(&mut m, 1, &["a"], 13);
    for p in &again.uploads[0].packets {
        assert!(
            !old.iter()
                .any(|(_, packet, g)| packet == &p.packet_id && g == &p.generation)
        );
    }
    for t in &again.tickets {
        assert_eq!(t.holder, Some(id(1)), "store tickets name the source");
        assert!(t.entries.iter().all(|e| e.generation != 0));
    }
}

#[test]
fn a_commit_without_valid_receipts_is_refused() {
    let mut m = grid();
    let decision = plan(&mut m, 1, &["a"], 10);
    let chunks = vec![chunk("a").data_id];
    let none = commit_with(&mut m, 1, &decision, chunks.clone(), Vec::new(), 11);
    assert!(
        matches!(none, Err(ManagerError::MissingUploads { missing: 3, .. })),
        "{none:?}"
    );
    let honest = common::receipts(&decision.uploads, id(1));
    // Signed by someone else than the target.
    let mut forged = honest.clone();
    let p = decision.uploads[0].packets[0];
    forged[0] = StoreReceipt::unsigned(p.target, id(1), p.packet_id, p.size, p.generation, 0)
        .sign_with(&SigningKey::from_bytes(&[99; 32]))
        .unwrap();
    forged[0].target = p.target;
    // Stored for another source.
    let mut theirs = honest.clone();
    theirs[0] = common::receipt(&p, id(2));
    // A generation no store ticket gave.
    let mut stale = honest.clone();
    let mut old = p;
    old.generation ^= 1;
    stale[0] = common::receipt(&old, id(1));
    for receipts in [forged, theirs, stale] {
        let refused = commit_with(&mut m, 1, &decision, chunks.clone(), receipts, 11);
        assert!(
            matches!(refused, Err(ManagerError::BadReceipt { .. })),
            "{refused:?}"
        );
    }
    assert!(
        m.state().chunks.is_empty(),
        "nothing recorded without receipts"
    );
    commit_with(&mut m, 1, &decision, chunks, honest, 12).unwrap();
    assert_eq!(m.state().chunks.len(), 1);
}

#[test]
fn garbage_registered_under_a_known_data_id_is_never_reused() {
    let mut m = grid();
    // The poisoner registers "a"'s DataId with packets of its own (garbage).
    let mut poison = chunk("a");
    poison.packets = chunk("garbage").packets;
    let poisoner = plan_chunks(&mut m, 2, vec![poison], "0km..", 10).unwrap();
    commit(&mut m, 2, &poisoner, &["a"], 11);
    // An honest source with the real "a" uploads its own copy.
    let honest = plan(&mut m, 1, &["a"], 12);
    assert!(honest.reused.is_empty());
    assert_eq!(honest.uploads.len(), 1);
    let key = honest.uploads[0].key.expect("a second copy key");
    assert_ne!(key, chunk("a").data_id);
    commit(&mut m, 1, &honest, &["a"], 13);
    let copy = &m.state().chunks[&key];
    let ids: Vec<PacketId> = copy.packets.iter().map(|p| p.packet_id).collect();
    let real: Vec<PacketId> = chunk("a").packets.iter().map(|p| p.packet_id).collect();
    assert_eq!(ids, real);
    // Its snapshot points at its own copy; a later source reuses that one.
    let snapshot = m.list_snapshots(&id(1), None)[0].snapshot;
    assert_eq!(m.state().snapshots[&snapshot].chunks, vec![key]);
    let later = plan(&mut m, 2, &["a"], 14);
    assert_eq!(later.reused, vec![key]);
}

#[test]
fn a_copy_reported_bad_is_not_reused_and_only_its_users_may_report_it() {
    let mut m = grid();
    let first = plan(&mut m, 1, &["a"], 10);
    commit(&mut m, 1, &first, &["a"], 11);
    let a = chunk("a");
    let packets: Vec<PacketId> = a.packets.iter().map(|p| p.packet_id).collect();
    // A node that does not use the chunk cannot condemn it.
    assert!(m.decide_mark_bad(id(2), a.data_id, &packets, 12).is_err());
    for command in m.decide_mark_bad(id(1), a.data_id, &packets, 12).unwrap() {
        m.execute(command).unwrap();
    }
    assert!(m.state().chunks[&a.data_id].bad);
    let next = plan(&mut m, 2, &["a"], 13);
    assert!(next.reused.is_empty(), "a bad copy is uploaded again");
    assert_eq!(next.uploads.len(), 1);
}

#[test]
fn dedup_reuses_a_copy_only_within_the_new_backups_distance() {
    let mut m = grid();
    let first = plan(&mut m, 1, &["a"], 10);
    commit(&mut m, 1, &first, &["a"], 11);
    // Lyon wants its packets 1500 km away or more: Paris's copy (placed
    // anywhere) does not all qualify, so Lyon uploads its own.
    let far = plan_chunks(&mut m, 2, vec![chunk("a")], "1500km..", 12).unwrap();
    let paris_copy = &m.state().chunks[&chunk("a").data_id];
    let lyon = location(2);
    let all_far = paris_copy.packets.iter().all(|p| {
        let loc = m.state().clients[&p.target].profile.location;
        strew_coordinator::haversine_km(&lyon, &loc) >= 1500.0
    });
    assert_eq!(far.reused.is_empty(), !all_far);
    // With no distance bound, the copy suits and is reused.
    let near = plan(&mut m, 2, &["a"], 13);
    assert_eq!(near.reused, vec![chunk("a").data_id]);
}

#[test]
fn read_tickets_go_only_to_the_snapshots_owner_and_name_it_as_holder() {
    let mut m = grid();
    let decision = plan(&mut m, 1, &["a", "b"], 10);
    commit(&mut m, 1, &decision, &["a", "b"], 11);
    let snapshot = m.list_snapshots(&id(1), None)[0].snapshot;
    let request = |requester: NodeId, count: u32| ReadTicketRequest {
        requester,
        snapshot,
        from: 0,
        count,
    };
    let tickets = m.read_tickets(&request(id(1), 2), 12).unwrap();
    let named: usize = tickets.iter().map(|t| t.entries.len()).sum();
    assert_eq!(named, 6);
    for t in &tickets {
        assert_eq!(t.kind, TicketKind::Read);
        assert_eq!(t.holder, Some(id(1)));
        assert!(t.verify(&m.node_id(), &t.target, 12).is_ok());
        assert!(t.check_holder(&id(2)).is_err());
    }
    let page = m.read_tickets(&request(id(1), 1), 12).unwrap();
    assert_eq!(page.iter().map(|t| t.entries.len()).sum::<usize>(), 3);
    assert!(matches!(
        m.read_tickets(&request(id(2), 2), 12),
        Err(ManagerError::NotYours { .. })
    ));
    assert!(matches!(
        m.read_tickets(&request(id(1), MAX_READ_CHUNKS as u32 + 1), 12),
        Err(ManagerError::Invalid(_))
    ));
}

#[test]
fn a_commit_logged_before_receipts_still_replays_as_planned() {
    let mut m = grid();
    let decision = plan(&mut m, 1, &["a"], 10);
    let request = CommitRequest {
        pending_id: decision.pending_id,
        source: id(1),
        receipts: common::receipts(&decision.uploads, id(1)),
        manifest: DataId([9; 32]),
        manifest_chunks: Vec::new(),
        chunks: vec![chunk("a").data_id],
        bytes: 1000,
    };
    let step = m
        .decide_commit(&request, 11, &mut StdRng::seed_from_u64(11))
        .unwrap();
    let strew_coordinator::CommitStep::Propose {
        command: strew_coordinator::Command::CommitBackup { snapshot, .. },
        ..
    } = step
    else {
        panic!("a first commit proposes a CommitBackup");
    };
    // The same command as an older log holds it: no `stored` field.
    let legacy = strew_coordinator::Command::CommitBackup {
        snapshot,
        stored: None,
        paged: false,
    };
    let bytes = legacy.to_bytes().unwrap();
    m.execute(strew_coordinator::Command::from_bytes(&bytes).unwrap())
        .unwrap();
    let recorded = m.state().chunk_packets(&chunk("a").data_id).unwrap();
    let planned: Vec<PacketId> = decision.uploads[0]
        .packets
        .iter()
        .map(|p| p.packet_id)
        .collect();
    assert_eq!(
        recorded.iter().map(|p| p.packet_id).collect::<Vec<_>>(),
        planned
    );
}
