//! What the in-process grid tests share: a coordinator `Manager` and
//! in-memory targets at real city locations, sources with their own data
//! dirs, and backup and restore as the daemon runs them.

#![allow(dead_code, unused_imports)]

pub use std::fs;
pub use std::path::{Path, PathBuf};
pub use std::sync::Arc;

pub use ed25519_dalek::SigningKey;
pub use strew_coordinator::manager::{Manager, ManagerConfig};
pub use strew_coordinator::records::{BackupParams, Compression, ConvergenceScope, Encryption};
pub use strew_coordinator::seal::GroupKey;
pub use strew_coordinator::{
    DistanceRange, GeoPoint, NodeId, NodeProfile, Redundancy, haversine_km,
};
pub use strew_node::grid::testkit::{LocalManager, MemoryTargets};
pub use strew_node::grid::{
    GridBackupOptions, GridBackupReport, KnownIndex, ManagerApi, SourceIdentity, clean_up,
    grid_backup, grid_forget, grid_restore,
};
pub use strew_node::pipeline::{
    ChunkSizes, ConvergenceSecret, Progress, RestoreKeys, RestoreOptions, RestoreProgress,
};
pub use strew_node::store::PacketStore;
pub use strew_node::verify::diff_trees;

pub const NOW: u64 = 1_780_000_000_000;

/// Targets around Europe; sources in Paris and Lyon.
pub const TARGETS: &[(&str, f64, f64)] = &[
    ("London", 51.5074, -0.1278),
    ("Berlin", 52.52, 13.405),
    ("Madrid", 40.4168, -3.7038),
    ("Rome", 41.9028, 12.4964),
    ("Amsterdam", 52.3676, 4.9041),
    ("Vienna", 48.2082, 16.3738),
    ("Warsaw", 52.2297, 21.0122),
    ("Stockholm", 59.3293, 18.0686),
];
pub const PARIS: GeoPoint = GeoPoint {
    lat: 48.8566,
    lon: 2.3522,
};
pub const LYON: GeoPoint = GeoPoint {
    lat: 45.764,
    lon: 4.8357,
};

pub struct Grid {
    pub manager: LocalManager,
    pub targets: Arc<MemoryTargets>,
    pub target_ids: Vec<NodeId>,
}

pub struct Source {
    pub me: SourceIdentity,
    pub dir: tempfile::TempDir,
}

impl Source {
    pub fn owner(&self) -> ConvergenceSecret {
        ConvergenceSecret::from_bytes([self.me.x25519_secret[0] ^ 0x55; 32])
    }
    pub fn outbox(&self) -> PacketStore {
        PacketStore::open(&self.dir.path().join("outbox"), u64::MAX).unwrap()
    }
    pub fn known(&self) -> KnownIndex {
        KnownIndex::open(&self.dir.path().join("known.redb")).unwrap()
    }
}

pub fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

pub fn node_id(seed: u8) -> NodeId {
    NodeId(key(seed).verifying_key().to_bytes())
}

pub fn grid(capacity: u64) -> Grid {
    let mut manager = Manager::new(key(1), GroupKey([9; 32]), ManagerConfig::default());
    let mut target_ids = Vec::new();
    for (i, (_, lat, lon)) in TARGETS.iter().enumerate() {
        let id = node_id(10 + i as u8);
        let profile = NodeProfile::new(
            id,
            GeoPoint {
                lat: *lat,
                lon: *lon,
            },
            capacity,
            NOW,
        );
        manager.join(profile, None, NOW).unwrap();
        target_ids.push(id);
    }
    let targets = Arc::new(MemoryTargets::new(
        manager.node_id(),
        NOW,
        (0..target_ids.len()).map(|i| (key(10 + i as u8), capacity)),
    ));
    Grid {
        manager: LocalManager::new(manager, NOW, 7),
        targets,
        target_ids,
    }
}

pub fn source(grid: &Grid, seed: u8, location: GeoPoint) -> Source {
    let x25519_secret = [seed.wrapping_add(100); 32];
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(x25519_secret));
    let id = node_id(seed);
    // Sources donate too: the open grid's default plan lets a node store
    // what it donates divided by the redundancy overhead.
    let mut profile = NodeProfile::new(id, location, 1 << 30, NOW);
    profile.x25519_public = public.to_bytes();
    grid.manager
        .manager
        .lock()
        .unwrap()
        .join(profile, None, NOW)
        .unwrap();
    grid.targets.add(key(seed), 1 << 30);
    Source {
        me: SourceIdentity {
            node_id: id,
            location,
            x25519_secret,
        },
        dir: tempfile::tempdir().unwrap(),
    }
}

pub fn params(distance: &str) -> BackupParams {
    BackupParams {
        backup_distance: range(distance),
        spread: range(".."),
        redundancy: Redundancy::Erasure { k: 4, m: 2 },
        compression: Compression::Zstd { level: 3 },
        encryption: Encryption {
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
        },
        sync_interval_secs: None,
    }
}

pub fn range(text: &str) -> DistanceRange {
    if text == ".." {
        return DistanceRange {
            min_km: None,
            max_km: None,
        };
    }
    text.parse().unwrap()
}

pub fn options(paths: Vec<PathBuf>, distance: &str) -> GridBackupOptions {
    GridBackupOptions {
        set: "home".into(),
        paths,
        params: params(distance),
        sizes: ChunkSizes {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        },
        secret: grid_secret(),
        // Each source's own: `backup` puts it in.
        owner: ConvergenceSecret::from_bytes([0; 32]),
        now_ms: NOW,
        parallel_uploads: 8,
        previous: None,
        excludes: Default::default(),
        staging_limit: strew_node::grid::stream::DEFAULT_STAGING_LIMIT,
        journal_dir: None,
    }
}

/// The grid's convergence secret (`grid-convergence.key` in a daemon).
pub fn grid_secret() -> ConvergenceSecret {
    ConvergenceSecret::from_bytes([42; 32])
}

pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn tree(root: &Path) {
    fs::create_dir_all(root.join("photos/été 2026")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("photos/été 2026/plage.raw"), noise(900_000, 1)).unwrap();
    fs::write(root.join("notes.txt"), b"remember the milk\n".repeat(500)).unwrap();
    fs::write(root.join("copy.raw"), noise(900_000, 1)).unwrap();
    std::os::unix::fs::symlink("notes.txt", root.join("link")).unwrap();
    let sparse = fs::File::create(root.join("disk.img")).unwrap();
    sparse.set_len(5_000_000).unwrap();
}

pub async fn backup(
    grid: &Grid,
    src: &Source,
    opts: &GridBackupOptions,
) -> Result<GridBackupReport, strew_node::grid::GridError> {
    let client = grid.manager.client(src.me.node_id);
    let opts = GridBackupOptions {
        owner: src.owner(),
        ..opts.clone()
    };
    let mut report = grid_backup(
        &src.me,
        &client,
        grid.targets.as_ref(),
        &src.outbox(),
        &src.known(),
        &opts,
        Arc::new(Progress::default()),
    )
    .await?;
    // What the daemon runs in the background once the backup answered.
    let cleanup = std::mem::take(&mut report.cleanup);
    clean_up(&client, grid.targets.as_ref(), cleanup).await;
    Ok(report)
}

pub async fn restore(
    grid: &Grid,
    src: &Source,
    report: &GridBackupReport,
    dest: &Path,
) -> strew_node::grid::GridRestoreReport {
    grid_restore(
        &src.me,
        &grid.manager.client(src.me.node_id),
        grid.targets.clone(),
        report.snapshot,
        dest.to_path_buf(),
        // A wrong secret first: the manifest names the one that verifies.
        RestoreKeys {
            owner: src.owner(),
            data: vec![ConvergenceSecret::from_bytes([43; 32]), grid_secret()],
        },
        RestoreOptions::default(),
        Arc::new(RestoreProgress::default()),
    )
    .await
    .unwrap()
}
