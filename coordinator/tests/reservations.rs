//! Reservations are bounded (SPEC R10): a plan's deadline is minutes plus
//! the upload time its size needs, one source may hold only so many bytes
//! reserved, and placement believes a target's proven room plus a small
//! allowance, not its announcement. A flood of plans from sources that
//! announce huge donations leaves room for an honest backup.

mod common;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::{
    ApplyError, BackupParams, ChunkPlan, CommitRequest, Compression, ConvergenceScope, DataId,
    Encryption, GeoPoint, GroupKey, Manager, ManagerConfig, ManagerError, NodeId, NodeProfile,
    PacketId, PacketSpec, PlanDecision, PlanRequest, QuotaError, Redundancy, ReservationLimits,
    StoreReceipt,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Each test packet: 1 MiB; a chunk is 3 packets (2+1 erasure).
const PACKET: u64 = MIB;

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn node(n: u8, lat: f64, lon: f64, donate: u64) -> NodeProfile {
    let id = NodeId(key(n).verifying_key().to_bytes());
    NodeProfile::new(id, GeoPoint::new(lat, lon).unwrap(), donate, 0)
}

/// 24 targets over Europe donating `donate` each.
fn targets(donate: u64) -> Vec<NodeProfile> {
    let mut out = Vec::new();
    let mut n = 10u8;
    for lat in [38.0, 42.0, 46.0, 50.0, 54.0, 58.0] {
        for lon in [-6.0, 4.0, 14.0, 24.0] {
            out.push(node(n, lat, lon, donate));
            n += 1;
        }
    }
    out
}

fn params() -> BackupParams {
    BackupParams {
        backup_distance: "200km..2500km".parse().unwrap(),
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

fn request(source: &NodeProfile, prefix: &str, chunks: usize) -> PlanRequest {
    PlanRequest {
        source: source.node_id,
        set: prefix.into(),
        location: source.location,
        params: params(),
        chunks: (0..chunks)
            .map(|i| chunk(&format!("{prefix}-{i}")))
            .collect(),
        exclude: Vec::new(),
        extend: None,
    }
}

fn manager(limits: ReservationLimits, pending_ttl: u64) -> Manager {
    Manager::new(
        key(200),
        GroupKey([7; 32]),
        ManagerConfig {
            pending_ttl,
            reservations: limits,
            ..ManagerConfig::default()
        },
    )
}

fn plan(
    m: &mut Manager,
    source: &NodeProfile,
    prefix: &str,
    chunks: usize,
    now: u64,
) -> Result<PlanDecision, ManagerError> {
    let mut rng = StdRng::seed_from_u64(now);
    m.plan_backup(request(source, prefix, chunks), now, &mut rng)
}

fn commit(m: &mut Manager, source: &NodeProfile, decision: &PlanDecision, now: u64) {
    let stored: Vec<StoreReceipt> = common::receipts(&decision.uploads, source.node_id);
    let mut rng = StdRng::seed_from_u64(now);
    m.commit_backup(
        CommitRequest {
            pending_id: decision.pending_id,
            source: source.node_id,
            receipts: stored,
            manifest: DataId([9; 32]),
            manifest_chunks: Vec::new(),
            chunks: decision.uploads.iter().map(|c| c.data_id).collect(),
            bytes: 1000,
        },
        now,
        &mut rng,
    )
    .unwrap();
}

#[test]
fn a_plan_expires_after_the_grace_plus_its_upload_time() {
    let limits = ReservationLimits {
        upload_rate: MIB,
        ..ReservationLimits::default()
    };
    let mut m = manager(limits, 1000);
    let paris = node(1, 48.85, 2.35, GIB);
    for t in targets(10 * GIB) {
        m.join(t, None, 0).unwrap();
    }
    m.join(paris.clone(), None, 0).unwrap();
    // 2 chunks × 3 packets × 1 MiB = 6 MiB at 1 MiB/s: six seconds more.
    let decision = plan(&mut m, &paris, "docs", 2, 10).unwrap();
    assert_eq!(decision.expires_at, 10 + 1000 + 6000);
    // Still pending just before the deadline, gone after it.
    assert!(m.expire_pending(7009).unwrap().is_empty());
    assert_eq!(m.state().pending.len(), 1);
    let deletes = m.expire_pending(7011).unwrap();
    assert!(!deletes.is_empty());
    assert!(m.state().pending.is_empty());
    assert!(m.state().targets.values().all(|t| t.reserved == 0));
}

#[test]
fn the_default_deadline_is_minutes_not_a_day() {
    let config = ManagerConfig::default();
    assert!(config.pending_ttl <= 15 * 60 * 1000);
    // Even the largest plan expires within the grace plus the ticket lifetime.
    let worst = config
        .reservations
        .deadline(0, u64::MAX, config.pending_ttl, config.ticket_ttl);
    assert!(worst <= config.pending_ttl + config.ticket_ttl);
    assert!(worst < 2 * 60 * 60 * 1000);
}

#[test]
fn one_source_may_hold_only_its_share_of_pending_bytes() {
    let limits = ReservationLimits {
        pending_bytes_per_source: 10 * MIB,
        ..ReservationLimits::default()
    };
    let mut m = manager(limits, 60_000);
    let paris = node(1, 48.85, 2.35, GIB);
    let lyon = node(2, 45.76, 4.84, GIB);
    for t in targets(10 * GIB) {
        m.join(t, None, 0).unwrap();
    }
    m.join(paris.clone(), None, 0).unwrap();
    m.join(lyon.clone(), None, 0).unwrap();
    // 9 MiB pending fits; 3 MiB more does not.
    let first = plan(&mut m, &paris, "a", 3, 10).unwrap();
    let refused = plan(&mut m, &paris, "b", 1, 11);
    assert!(
        matches!(
            refused,
            Err(ManagerError::Apply(ApplyError::Quota(
                QuotaError::PendingBytes {
                    pending,
                    extra,
                    limit,
                    ..
                }
            ))) if pending == 9 * MIB && extra == 3 * MIB && limit == 10 * MIB
        ),
        "{refused:?}"
    );
    assert_eq!(m.state().pending.len(), 1);
    // Another source is not held back by Paris's plans.
    plan(&mut m, &lyon, "c", 3, 12).unwrap();
    // Committing frees Paris's share: its next plan fits.
    commit(&mut m, &paris, &first, 13);
    plan(&mut m, &paris, "b", 3, 14).unwrap();
}

#[test]
fn placement_believes_proven_room_plus_the_allowance() {
    let limits = ReservationLimits {
        unproven_allowance: 4 * MIB,
        ..ReservationLimits::default()
    };
    let mut m = manager(limits, 60_000);
    let paris = node(1, 48.85, 2.35, GIB);
    // Targets announce 100 GiB each; nothing is proven yet.
    let grid = targets(100 * GIB);
    for t in &grid {
        m.join(t.clone(), None, 0).unwrap();
    }
    m.join(paris.clone(), None, 0).unwrap();
    for t in &grid {
        assert_eq!(m.view().get(&t.node_id).unwrap().storage_free, 4 * MIB);
    }
    let decision = plan(&mut m, &paris, "a", 4, 10).unwrap();
    commit(&mut m, &paris, &decision, 11);
    // A target that now holds bytes is offered as much again plus the allowance.
    for t in &grid {
        let held = m.state().targets.get(&t.node_id).map_or(0, |r| r.bytes);
        assert_eq!(
            m.view().get(&t.node_id).unwrap().storage_free,
            held + 4 * MIB,
            "target {}",
            t.node_id
        );
    }
    assert!(m.state().targets.values().any(|r| r.bytes > 0));
    // No target is ever reserved past its proven room plus the allowance.
    let mut i = 0;
    while plan(&mut m, &paris, &format!("more-{i}"), 4, 20 + i).is_ok() {
        i += 1;
        assert!(i < 200, "plans never stopped");
    }
    for (id, record) in &m.state().targets {
        let committed_before = decision
            .uploads
            .iter()
            .flat_map(|c| &c.packets)
            .filter(|p| &p.target == id)
            .fold(0, |sum, p| sum + p.size);
        assert!(
            record.reserved <= committed_before + 4 * MIB,
            "{id} reserved {} with {} proven",
            record.reserved,
            committed_before
        );
    }
}

#[test]
fn a_reservation_flood_from_huge_announcements_leaves_room_for_an_honest_backup() {
    let limits = ReservationLimits {
        unproven_allowance: 64 * MIB,
        pending_bytes_per_source: 96 * MIB,
        ..ReservationLimits::default()
    };
    let mut m = manager(limits, 60_000);
    for t in targets(100 * GIB) {
        m.join(t, None, 0).unwrap();
    }
    // Five hostile sources near Paris announce 100 GiB each (a source quota
    // of 100 GiB) and plan as much as they can: eight plans each.
    let hostile: Vec<NodeProfile> = (0..5u8)
        .map(|i| node(100 + i, 48.0 + f64::from(i) * 0.2, 2.0, 100 * GIB))
        .collect();
    for h in &hostile {
        m.join(h.clone(), None, 0).unwrap();
    }
    let mut refused = 0;
    for (n, h) in hostile.iter().enumerate() {
        for p in 0..8u64 {
            let now = 10 + n as u64 * 10 + p;
            if plan(&mut m, h, &format!("flood-{n}-{p}"), 12, now).is_err() {
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "the caps never refused a hostile plan");
    for h in &hostile {
        let pending: u64 = m
            .state()
            .pending
            .values()
            .filter(|p| p.source == h.node_id)
            .map(|p| p.stored_bytes())
            .sum();
        assert!(pending <= 96 * MIB, "{} holds {pending} bytes", h.node_id);
    }
    // An honest source still gets a 30 MiB backup placed.
    let honest = node(1, 48.85, 2.35, GIB);
    m.join(honest.clone(), None, 100).unwrap();
    let decision = plan(&mut m, &honest, "home", 10, 200).unwrap();
    assert_eq!(decision.uploads.len(), 10);
}
