//! Test helpers shared by the coordinator's integration tests: targets'
//! signed store receipts for a plan's uploads (test targets' keys are
//! `SigningKey::from_bytes(&[n; 32])`), and a manager over 24 European
//! targets holding one committed snapshot of a source in Paris.

#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::MAX_PLAN_CHUNKS;
use strew_coordinator::{
    BackupParams, ChunkPlan, Command, CommitRequest, CommitStep, Compression, ConvergenceScope,
    DataId, Encryption, GeoPoint, GroupKey, Manager, ManagerConfig, NodeId, NodeProfile, PacketId,
    PacketSpec, PlanRequest, PlannedChunk, Redundancy, SnapshotId, StoreReceipt, StoredPacket,
};

/// The signing key of a test node: one of the seeds `[n; 32]`.
pub fn key_of(id: &NodeId) -> SigningKey {
    static KEYS: std::sync::OnceLock<std::collections::HashMap<NodeId, SigningKey>> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        (0..=255u8)
            .map(|n| SigningKey::from_bytes(&[n; 32]))
            .map(|k| (NodeId(k.verifying_key().to_bytes()), k))
            .collect()
    })
    .get(id)
    .cloned()
    .expect("a test node's key is [n; 32]")
}

/// The receipt `p.target` signs for `source` after storing `p`.
pub fn receipt(p: &StoredPacket, source: NodeId) -> StoreReceipt {
    StoreReceipt::unsigned(p.target, source, p.packet_id, p.size, p.generation, 0)
        .sign_with(&key_of(&p.target))
        .expect("signs")
}

/// Every upload's receipt, as honest targets return them.
pub fn receipts(uploads: &[PlannedChunk], source: NodeId) -> Vec<StoreReceipt> {
    uploads
        .iter()
        .flat_map(|c| &c.packets)
        .map(|p| receipt(p, source))
        .collect()
}

pub const GIB: u64 = 1 << 30;

pub fn node(n: u8, lat: f64, lon: f64) -> NodeProfile {
    let id = NodeId(SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes());
    NodeProfile::new(id, GeoPoint { lat, lon }, 10 * GIB, 0)
}

pub fn params() -> BackupParams {
    BackupParams {
        backup_distance: "200km..2500km".parse().expect("range"),
        spread: "300km..".parse().expect("range"),
        redundancy: Redundancy::Erasure { k: 2, m: 1 },
        compression: Compression::None,
        encryption: Encryption {
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Private,
        },
        sync_interval_secs: None,
    }
}

pub fn chunk(n: u8) -> ChunkPlan {
    ChunkPlan {
        data_id: DataId([n; 32]),
        packets: (0..3u8)
            .map(|j| PacketSpec {
                packet_id: PacketId::of(&[n, j]),
                size: 1 << 20,
            })
            .collect(),
    }
}

/// A manager (identity `[200; 32]`, group key `[7; 32]`) with 24 targets
/// over Europe joined, nodes 10 to 33 made by `profile(n, lat, lon)`.
pub fn europe(profile: impl Fn(u8, f64, f64) -> NodeProfile) -> Manager {
    let mut m = Manager::new(
        SigningKey::from_bytes(&[200; 32]),
        GroupKey([7; 32]),
        ManagerConfig::default(),
    );
    let mut n = 10u8;
    for lat in [38.0, 42.0, 46.0, 50.0, 54.0, 58.0] {
        for lon in [-6.0, 4.0, 14.0, 24.0] {
            m.join(profile(n, lat, lon), None, 1).expect("join");
            n += 1;
        }
    }
    m
}

/// 24 targets over Europe and a source in Paris that backed up two chunks.
pub fn backed_up() -> (Manager, NodeProfile, SnapshotId) {
    backed_up_chunks(vec![chunk(1), chunk(2)])
}

/// [`backed_up`] with `n` chunks of three 4 KiB packets each.
pub fn backed_up_many(n: u32) -> (Manager, NodeProfile, SnapshotId) {
    let chunks = (0..n)
        .map(|i| {
            let id = *blake3::hash(&i.to_le_bytes()).as_bytes();
            ChunkPlan {
                data_id: DataId(id),
                packets: (0..3u8)
                    .map(|j| PacketSpec {
                        packet_id: PacketId::of(&[&id[..], &[j]].concat()),
                        size: 4096,
                    })
                    .collect(),
            }
        })
        .collect();
    backed_up_chunks(chunks)
}

/// 24 targets over Europe and a source in Paris that backed up `chunks`
/// in one plan.
pub fn backed_up_chunks(chunks: Vec<ChunkPlan>) -> (Manager, NodeProfile, SnapshotId) {
    let mut m = europe(node);
    let mut paris = node(1, 48.85, 2.35);
    paris.x25519_public = x25519_dalek::PublicKey::from(&paris_secret()).to_bytes();
    m.apply(&Command::Join {
        profile: paris.clone(),
        token: None,
        at: 1,
    })
    .expect("join");
    let mut rng = StdRng::seed_from_u64(1);
    // In parts of at most MAX_PLAN_CHUNKS, into one pending backup.
    let (mut pending, mut uploads) = (None, Vec::new());
    for part in chunks.chunks(MAX_PLAN_CHUNKS) {
        let request = PlanRequest {
            extend: pending,
            source: paris.node_id,
            set: "docs".into(),
            location: paris.location,
            params: params(),
            chunks: part.to_vec(),
            exclude: Vec::new(),
        };
        let (command, draft) = m.decide_plan(&request, 10, &mut rng).expect("plan");
        m.apply(&command).expect("begin");
        pending = Some(draft.pending_id);
        uploads.extend(draft.uploads);
    }
    let pending_id = pending.expect("at least one chunk");
    let stored = receipts(&uploads, paris.node_id);
    let commit = CommitRequest {
        pending_id,
        source: paris.node_id,
        receipts: stored,
        manifest: chunks[0].data_id,
        manifest_chunks: Vec::new(),
        chunks: chunks.iter().map(|c| c.data_id).collect(),
        bytes: 4 << 20,
    };
    let CommitStep::Propose { command, snapshot } =
        m.decide_commit(&commit, 20, &mut rng).expect("commit")
    else {
        panic!("a first commit proposes a command");
    };
    m.apply(&command).expect("commit applies");
    (m, paris, snapshot)
}

/// The X25519 secret of the Paris source of [`backed_up`].
pub fn paris_secret() -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from([1u8; 32])
}
