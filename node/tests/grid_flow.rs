//! The source side of the grid, end to end but in-process: the real
//! coordinator `Manager` and in-memory targets at real city locations.
//! Backup under a distance bound, restore after losing two targets, restore
//! with only the key (fresh data dir), dedup across sources, forget freeing
//! exactly the unshared packets, re-planning around a target that fails
//! mid-upload, lying targets, a slow target avoided by the restore, and a
//! constraint no grid can meet.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use strew_coordinator::manager::{Manager, ManagerConfig};
use strew_coordinator::records::{BackupParams, Compression, ConvergenceScope, Encryption};
use strew_coordinator::seal::GroupKey;
use strew_coordinator::{DistanceRange, GeoPoint, NodeId, NodeProfile, Redundancy, haversine_km};
use strew_node::grid::testkit::{LocalManager, MemoryTargets};
use strew_node::grid::{
    GridBackupOptions, GridBackupReport, KnownIndex, ManagerApi, SourceIdentity, clean_up,
    grid_backup, grid_forget, grid_restore,
};
use strew_node::pipeline::{
    ChunkSizes, ConvergenceSecret, Progress, RestoreKeys, RestoreOptions, RestoreProgress,
};
use strew_node::store::PacketStore;
use strew_node::verify::diff_trees;

const NOW: u64 = 1_780_000_000_000;

/// Targets around Europe; sources in Paris and Lyon.
const TARGETS: &[(&str, f64, f64)] = &[
    ("London", 51.5074, -0.1278),
    ("Berlin", 52.52, 13.405),
    ("Madrid", 40.4168, -3.7038),
    ("Rome", 41.9028, 12.4964),
    ("Amsterdam", 52.3676, 4.9041),
    ("Vienna", 48.2082, 16.3738),
    ("Warsaw", 52.2297, 21.0122),
    ("Stockholm", 59.3293, 18.0686),
];
const PARIS: GeoPoint = GeoPoint {
    lat: 48.8566,
    lon: 2.3522,
};
const LYON: GeoPoint = GeoPoint {
    lat: 45.764,
    lon: 4.8357,
};

struct Grid {
    manager: LocalManager,
    targets: Arc<MemoryTargets>,
    target_ids: Vec<NodeId>,
}

struct Source {
    me: SourceIdentity,
    dir: tempfile::TempDir,
}

impl Source {
    fn owner(&self) -> ConvergenceSecret {
        ConvergenceSecret::from_bytes([self.me.x25519_secret[0] ^ 0x55; 32])
    }
    fn outbox(&self) -> PacketStore {
        PacketStore::open(&self.dir.path().join("outbox"), u64::MAX).unwrap()
    }
    fn known(&self) -> KnownIndex {
        KnownIndex::open(&self.dir.path().join("known.redb")).unwrap()
    }
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn node_id(seed: u8) -> NodeId {
    NodeId(key(seed).verifying_key().to_bytes())
}

fn grid(capacity: u64) -> Grid {
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

fn source(grid: &Grid, seed: u8, location: GeoPoint) -> Source {
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

fn params(distance: &str) -> BackupParams {
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

fn range(text: &str) -> DistanceRange {
    if text == ".." {
        return DistanceRange {
            min_km: None,
            max_km: None,
        };
    }
    text.parse().unwrap()
}

fn options(paths: Vec<PathBuf>, distance: &str) -> GridBackupOptions {
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
fn grid_secret() -> ConvergenceSecret {
    ConvergenceSecret::from_bytes([42; 32])
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
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

fn tree(root: &Path) {
    fs::create_dir_all(root.join("photos/été 2026")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("photos/été 2026/plage.raw"), noise(900_000, 1)).unwrap();
    fs::write(root.join("notes.txt"), b"remember the milk\n".repeat(500)).unwrap();
    fs::write(root.join("copy.raw"), noise(900_000, 1)).unwrap();
    std::os::unix::fs::symlink("notes.txt", root.join("link")).unwrap();
    let sparse = fs::File::create(root.join("disk.img")).unwrap();
    sparse.set_len(5_000_000).unwrap();
}

async fn backup(
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

async fn restore(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_a_distance_bound_survives_two_lost_targets() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let report = backup(&g, &src, &options(vec![root.clone()], "300km..1600km"))
        .await
        .unwrap();
    assert!(report.uploaded_packets > 0);
    // Every target used lies within the backup distance of the source.
    for t in &report.targets {
        let (_, lat, lon) = TARGETS[g.target_ids.iter().position(|x| x == t).unwrap()];
        let d = haversine_km(&PARIS, &GeoPoint { lat, lon });
        assert!((300.0..=1600.0).contains(&d), "target at {d} km");
    }
    // Stockholm (1540 km) is in; Warsaw (1366) in; nothing under 300 km (London is 344).
    // Kill the two targets holding the most packets.
    let holders = g.targets.holders();
    assert!(holders.len() >= 6, "{holders:?}");
    g.targets.set_up(&holders[0].0, false);
    g.targets.set_up(&holders[1].0, false);
    let dest = data.path().join("restored");
    let r = restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("home"), 20),
        Vec::<String>::new()
    );
    assert!(r.failed_fetches > 0 || r.restore.degraded_stripes > 0);

    // A fresh machine with only the key: new data dir, no outbox, no index.
    let fresh = Source {
        me: src.me.clone(),
        dir: tempfile::tempdir().unwrap(),
    };
    let dest2 = data.path().join("fresh");
    restore(&g, &fresh, &report, &dest2).await;
    assert_eq!(
        diff_trees(&root, &dest2.join("home"), 20),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_rerun_uploads_only_a_manifest() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let opts = options(vec![root.clone()], "..");
    let first = backup(&g, &src, &opts).await.unwrap();
    let second = backup(&g, &src, &opts).await.unwrap();
    assert!(
        second.uploaded_packets <= 6,
        "{} packets re-sent",
        second.uploaded_packets
    );
    assert!(second.uploaded_bytes * 20 < first.uploaded_bytes);
    assert!(
        src.outbox().list().unwrap().is_empty(),
        "outbox emptied after commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_tree_reuses_the_previous_snapshot_and_a_change_makes_a_new_one() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let first = backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    assert!(!first.unchanged);
    let digest = first.tree.expect("a tree digest");
    let mut opts = options(vec![root.clone()], "..");
    opts.now_ms += 60_000;
    opts.previous = Some((first.snapshot, digest));
    let again = backup(&g, &src, &opts).await.unwrap();
    assert!(again.unchanged);
    assert_eq!(again.snapshot, first.snapshot);
    assert_eq!(again.uploaded_packets, 0);
    let listed = g.manager.client(src.me.node_id).list(None).await.unwrap();
    assert_eq!(listed.len(), 1, "no new snapshot");
    assert_eq!(src.outbox().disk_usage().unwrap().disk_bytes, 0);
    // A touched file (same bytes, new mtime) is a change.
    let f = root.join("notes.txt");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, [bytes.as_slice(), b"!"].concat()).unwrap();
    opts.now_ms += 60_000;
    let changed = backup(&g, &src, &opts).await.unwrap();
    assert!(!changed.unchanged);
    assert_ne!(changed.snapshot, first.snapshot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_source_backing_up_the_same_data_sends_no_data_packets() {
    let g = grid(1 << 30);
    let a = source(&g, 2, PARIS);
    let b = source(&g, 3, LYON);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let ra = backup(&g, &a, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    let before = g.targets.bytes_received();
    let mut opts = options(vec![root.clone()], "..");
    opts.now_ms += 1000; // a different snapshot time: only the manifest differs
    let rb = backup(&g, &b, &opts).await.unwrap();
    assert!(rb.deduplicated_chunks > 0);
    // b sent nothing but its manifest's stripes (small: a few KiB).
    let sent = g.targets.bytes_received() - before;
    assert!(sent < 64 * 1024, "second source sent {sent} bytes");
    assert!(ra.uploaded_bytes > 1_000_000);
    let dest = data.path().join("b-restored");
    restore(&g, &b, &rb, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("home"), 20),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_frees_exactly_the_unshared_packets() {
    let g = grid(1 << 30);
    let a = source(&g, 2, PARIS);
    let b = source(&g, 3, LYON);
    let data = tempfile::tempdir().unwrap();
    let shared = data.path().join("shared");
    tree(&shared);
    let only_b = data.path().join("only-b");
    fs::create_dir_all(&only_b).unwrap();
    fs::write(only_b.join("b.bin"), noise(600_000, 42)).unwrap();
    let ra = backup(&g, &a, &options(vec![shared.clone()], ".."))
        .await
        .unwrap();
    let after_a = g.targets.all_packets();
    let rb = backup(&g, &b, &options(vec![shared.clone(), only_b.clone()], ".."))
        .await
        .unwrap();
    let after_b = g.targets.all_packets();
    let b_only: std::collections::BTreeSet<_> = after_b.difference(&after_a).copied().collect();
    assert!(!b_only.is_empty());
    let report = grid_forget(
        &g.manager.client(b.me.node_id),
        g.targets.as_ref(),
        &b.known(),
        rb.snapshot,
    )
    .await
    .unwrap();
    assert!(report.undeleted.is_empty());
    assert_eq!(
        g.targets.all_packets(),
        after_a,
        "exactly b's unshared packets are gone"
    );
    assert_eq!(report.deleted as usize, b_only.len());
    // a's snapshot still restores.
    let dest = data.path().join("a-restored");
    restore(&g, &a, &ra, &dest).await;
    assert_eq!(
        diff_trees(&shared, &dest.join("shared"), 20),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_with_a_target_down_reports_it_in_json_and_the_retry_deletes_later() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let report = backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    let down = report.targets[0];
    g.targets.set_up(&down, false);
    let client = g.manager.client(src.me.node_id);
    let mut forgot = grid_forget(&client, g.targets.as_ref(), &src.known(), report.snapshot)
        .await
        .unwrap();
    assert!(forgot.deleted > 0);
    let left = forgot.undeleted.get(&down).map_or(0, Vec::len);
    assert!(left > 0, "the down target's packets are reported");
    // The JSON the CLI reads: keys are NodeId texts (this used to fail).
    let json = serde_json::to_value(&forgot).expect("the report serialises");
    assert_eq!(
        json["undeleted"][down.to_string()].as_array().map(Vec::len),
        Some(left)
    );
    assert!(json["retry_until"].as_u64().is_some());
    // The target returns: the retry deletes what it still holds.
    g.targets.set_up(&down, true);
    let retry = std::mem::take(&mut forgot.retry);
    let done = clean_up(&client, g.targets.as_ref(), retry).await;
    assert_eq!(done.failed, 0);
    assert!(
        g.targets.holders().iter().all(|(_, n)| *n == 0),
        "nothing left anywhere: {:?}",
        g.targets.holders()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_mid_upload_gets_its_packets_replaced() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    // The manager believes every target is up; one refuses connections.
    let dead = g.target_ids[1];
    g.targets.set_up(&dead, false);
    let report = backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    assert!(report.plans >= 2, "re-planned");
    assert!(!report.targets.contains(&dead));
    // The outbox gave its space back at the commit.
    let outbox = src.outbox().disk_usage().unwrap();
    assert_eq!(outbox.live_bytes, 0, "{outbox:?}");
    assert_eq!(outbox.disk_bytes, 0, "{outbox:?}");
    // The replaced plan left nothing behind on reachable targets, and its
    // cleanup deleted nothing the committed plan uses.
    let committed: std::collections::BTreeSet<_> = {
        let m = g.manager.manager.lock().unwrap();
        m.state()
            .chunks
            .values()
            .flat_map(|c| c.packets.iter().map(|p| p.packet_id))
            .collect()
    };
    assert_eq!(g.targets.all_packets(), committed);
    let dest = data.path().join("restored");
    restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("home"), 20),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_target_is_detected_and_worked_around() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let report = backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    let liar = g.targets.holders()[0].0;
    g.targets.set_corrupt(&liar, true);
    let dest = data.path().join("restored");
    let r = restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("home"), 20),
        Vec::<String>::new()
    );
    assert!(
        !r.restore.corrupt_packets.is_empty(),
        "corrupt packets are named"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_target_is_avoided_once_measured() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    // Many more stripes than a restore starts before any answer is measured
    // (16 in flight), so the order, not the first blind wave, decides.
    fs::write(root.join("more.raw"), noise(6_000_000, 7)).unwrap();
    let report = backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    // The target holding the most packets answers every get 1 s late.
    let (slow, held) = g.targets.holders()[0];
    let slow_packets: std::collections::BTreeSet<_> = g.targets.targets.lock().unwrap()[&slow]
        .packets
        .keys()
        .copied()
        .collect();
    g.targets
        .set_get_delay(&slow, std::time::Duration::from_secs(1));
    g.targets.take_gets();
    let dest = data.path().join("restored");
    let r = restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("home"), 20),
        Vec::<String>::new()
    );
    let gets = g.targets.take_gets();
    let from_slow = gets.iter().filter(|id| slow_packets.contains(id)).count();
    // Stripe order alone would read every data packet it holds; once its
    // first answers are measured, the other targets serve those stripes.
    assert!(
        from_slow * 2 < held,
        "{from_slow} of the slow target's {held} packets were fetched ({} fetches in all)",
        gets.len()
    );
    assert_eq!(r.failed_fetches, 0);
    assert_eq!(r.restore.degraded_stripes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constraint_no_grid_can_meet_is_refused_and_stores_nothing() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let err = backup(&g, &src, &options(vec![root], "5000km.."))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("refused"), "{text}");
    assert!(
        !text.contains("quota"),
        "refused for distance, not quota: {text}"
    );
    assert!(
        text.contains("km"),
        "the explanation names distances: {text}"
    );
    assert_eq!(g.targets.bytes_received(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_verifies_every_packet_and_names_the_missing_and_corrupt_ones() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let report = backup(&g, &src, &options(vec![root], "300km..1600km"))
        .await
        .unwrap();
    let client = g.manager.client(src.me.node_id);
    let check = |targets| strew_node::grid::grid_check(&src.me, &client, targets, report.snapshot);
    let healthy = check(g.targets.clone()).await.unwrap();
    assert!(healthy.stripes > 3, "{healthy:?}");
    assert_eq!(healthy.healthy, healthy.stripes);
    assert_eq!(healthy.verified, healthy.packets);
    assert!(healthy.missing.is_empty());
    // One target down and another serving corrupt bytes: every stripe keeps
    // at least four of its six packets, and the check names both.
    let holders = g.targets.holders();
    let (down, liar) = (holders[0].0, holders[1].0);
    g.targets.set_up(&down, false);
    g.targets.set_corrupt(&liar, true);
    let damaged = check(g.targets.clone()).await.unwrap();
    assert_eq!(damaged.stripes, healthy.stripes);
    assert!(damaged.degraded > 0, "{damaged:?}");
    assert_eq!(damaged.lost, 0, "{damaged:?}");
    assert_eq!(damaged.healthy + damaged.degraded, damaged.stripes);
    let named: std::collections::BTreeSet<String> =
        damaged.missing.iter().map(|m| m.target.clone()).collect();
    assert_eq!(
        named,
        [down.to_string(), liar.to_string()].into_iter().collect()
    );
    assert!(
        damaged
            .missing
            .iter()
            .any(|m| m.target == liar.to_string() && m.reason.contains("corrupt")),
        "{damaged:?}"
    );
    assert_eq!(
        damaged.verified + damaged.missing.len() as u64,
        damaged.packets
    );
}

/// The stripes of every committed snapshot, as the manager can read them:
/// it holds the group key that seals sequences at rest.
fn sequences_the_manager_reads(g: &Grid) -> (Vec<u8>, Vec<strew_coordinator::seal::Sequence>) {
    let manager = g.manager.manager.lock().unwrap();
    let state = manager.state();
    let mut database = Vec::new();
    ciborium::into_writer(state, &mut database).unwrap();
    let mut sequences = Vec::new();
    for (id, snapshot) in &state.snapshots {
        let plain = strew_coordinator::seal::open_at_rest(
            &GroupKey([9; 32]),
            id.as_bytes(),
            &snapshot.sealed_sequence,
        )
        .unwrap();
        database.extend_from_slice(&plain);
        sequences.push(strew_coordinator::seal::Sequence::from_bytes(&plain).unwrap());
    }
    (database, sequences)
}

/// An encrypted blob reassembled from the data shares of a stripe (what any
/// holder of the packets can do without a key).
fn blob_of(g: &Grid, stripe: &strew_coordinator::seal::SequenceStripe) -> Vec<u8> {
    use strew_node::pipeline::packet::decode_packet;
    let targets = g.targets.targets.lock().unwrap();
    let mut shares: Vec<(u8, Vec<u8>, usize)> = Vec::new();
    for entry in &stripe.packets {
        let bytes = targets
            .values()
            .find_map(|t| t.packets.get(&entry.packet_id))
            .unwrap();
        let (h, shard) = decode_packet(bytes).unwrap();
        if h.index < h.k {
            shares.push((h.index, shard.to_vec(), h.blob_len as usize));
        }
    }
    shares.sort();
    let len = shares[0].2;
    let mut blob: Vec<u8> = shares.into_iter().flat_map(|(_, s, _)| s).collect();
    blob.truncate(len);
    blob
}

/// Whether `key` opens `blob` (an AEAD check: any wrong key fails).
fn opens(blob: &[u8], key: &strew_node::pipeline::ChunkKey) -> bool {
    let (header, head, ct) = strew_node::pipeline::packet::BlobHeader::decode(blob).unwrap();
    key.decrypt(&header.nonce, head, ct).is_some()
}

/// Whether `raw`, used directly as the ChaCha20-Poly1305 key, opens `blob`.
fn opens_raw(blob: &[u8], raw: &[u8; 32]) -> bool {
    use chacha20poly1305::aead::{Aead, KeyInit, Payload};
    let (header, head, ct) = strew_node::pipeline::packet::BlobHeader::decode(blob).unwrap();
    chacha20poly1305::ChaCha20Poly1305::new(&(*raw).into())
        .decrypt(&header.nonce.into(), Payload { msg: ct, aad: head })
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_managers_database_and_every_packet_decrypt_no_chunk_without_its_plaintext() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();

    // The attacker: the manager's whole state, every sealed sequence opened
    // with the group key, every target's packets, and (as a grid member)
    // the grid's convergence secret. It tries every 32-byte string of the
    // database as a chunk key, as a raw AEAD key and through the old
    // (v1) derivation `derive_key(secret ‖ DataId)`.
    let (database, sequences) = sequences_the_manager_reads(&g);
    let stripes: Vec<_> = sequences.iter().flat_map(|s| s.stripes.iter()).collect();
    let mut blobs: Vec<Vec<u8>> = stripes.iter().map(|s| blob_of(&g, s)).collect();
    blobs.sort_by_key(Vec::len);
    blobs.dedup();
    assert!(blobs.len() > 10, "{} blobs", blobs.len());
    let mut ids: std::collections::BTreeSet<[u8; 32]> = std::collections::BTreeSet::new();
    for s in &sequences {
        ids.insert(s.snapshot.0);
        ids.insert(s.manifest.0);
        ids.extend(s.manifest_chunks.iter().map(|d| d.0));
        for stripe in &s.stripes {
            ids.insert(stripe.data_id.0);
            ids.extend(stripe.packets.iter().map(|p| p.packet_id.0));
        }
    }
    let windows: std::collections::BTreeSet<[u8; 32]> = database
        .windows(32)
        .map(|w| w.try_into().unwrap())
        .collect();
    let v1 = |c: &[u8; 32]| {
        let mut h = blake3::Hasher::new_derive_key("strew chunk key v1");
        h.update(grid_secret().as_bytes());
        h.update(c);
        *h.finalize().as_bytes()
    };
    let attempts = |c: &[u8; 32], blob: &[u8]| {
        opens(blob, &strew_node::pipeline::ChunkKey(*c))
            || opens_raw(blob, c)
            || opens(blob, &strew_node::pipeline::ChunkKey(v1(c)))
            || opens_raw(blob, &v1(c))
    };
    // Every id against every blob; every window of the database against
    // the smallest blob, where a tried key is cheap.
    for blob in &blobs {
        assert!(!ids.iter().any(|c| attempts(c, blob)));
    }
    let smallest = &blobs[0];
    assert!(!windows.iter().any(|c| {
        opens(smallest, &strew_node::pipeline::ChunkKey(*c)) || opens_raw(smallest, c)
    }));

    // The documented price of grid scope: a member holding the plaintext
    // computes the same keys, so it can confirm the chunks are stored (and
    // dedups against them), and those keys do open the packets.
    let store = PacketStore::open(&data.path().join("local"), u64::MAX).unwrap();
    let opts = strew_node::pipeline::BackupOptions {
        name: "guess".into(),
        time_ms: 0,
        sizes: options(vec![], "..").sizes,
        codec: strew_node::pipeline::Codec {
            secret: grid_secret(),
            zstd_level: 3,
            redundancy: Redundancy::Erasure { k: 4, m: 2 },
        },
        owner: ConvergenceSecret::from_bytes([1; 32]),
        excludes: Default::default(),
    };
    let guess = strew_node::pipeline::backup(
        &[root],
        &opts,
        &strew_node::pipeline::NothingKnown,
        &mut strew_node::pipeline::local::StoreSink::new(store),
        &Progress::default(),
    )
    .unwrap();
    let stored: std::collections::BTreeSet<_> = stripes.iter().map(|s| s.data_id).collect();
    let mut confirmed = 0;
    for chunk in &guess.manifest.chunks {
        assert!(stored.contains(&chunk.data_id()));
        let stripe = stripes
            .iter()
            .find(|s| s.data_id == chunk.data_id())
            .unwrap();
        assert!(opens(&blob_of(&g, stripe), &chunk.key));
        confirmed += 1;
    }
    assert!(confirmed >= 10, "{confirmed} chunks confirmed");
    // Windows tried: every one the database holds.
    assert!(windows.len() > 1000, "{} windows", windows.len());
}

/// A backup of more chunks than one plan may name is planned in parts into
/// one pending backup (the manager's log says so), never shows a snapshot
/// before its commit, and restores byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_larger_than_one_plan_is_planned_in_parts_and_restores() {
    use strew_coordinator::manager::MAX_PLAN_CHUNKS;
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("many");
    fs::create_dir_all(&root).unwrap();
    for i in 0..3u64 {
        fs::write(root.join(format!("f{i}.raw")), noise(110_000, 10 + i)).unwrap();
    }
    let mut opts = options(vec![root.clone()], "..");
    opts.sizes = ChunkSizes {
        min: 64,
        avg: 256,
        max: 1024,
    };
    let report = backup(&g, &src, &opts).await.unwrap();
    let chunks = report.stats.new_chunks as usize;
    assert!(chunks > MAX_PLAN_CHUNKS, "{chunks} chunks");
    assert_eq!(report.plans, 1, "one pending backup, planned in parts");
    let extended = g
        .manager
        .manager
        .lock()
        .unwrap()
        .state()
        .log
        .iter()
        .filter(|e| e.detail.contains("extended"))
        .count();
    // One part per MAX_PLAN_CHUNKS new chunks (the manifest's chunks too).
    assert!(
        extended >= chunks / MAX_PLAN_CHUNKS,
        "{extended} parts after the first for {chunks} chunks"
    );
    let dest = data.path().join("restored");
    restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("many"), 20),
        Vec::<String>::new()
    );
    // The sequence in small pages is the sequence in large ones.
    let client = g.manager.client(src.me.node_id);
    let small =
        strew_node::grid::sequence::fetch_in_pages_of(&src.me, &client, report.snapshot, 100)
            .await
            .unwrap();
    let large = strew_node::grid::sequence::fetch_paged(&src.me, &client, report.snapshot)
        .await
        .unwrap();
    assert!(small.stripes.len() > 1000);
    assert_eq!(small, large);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_streams_through_an_outbox_bounded_by_the_staging_limit() {
    let g = grid(1 << 30);
    let src = source(&g, 3, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("big");
    fs::create_dir_all(&root).unwrap();
    for i in 0..4u64 {
        fs::write(root.join(format!("f{i}.raw")), noise(1_000_000, 40 + i)).unwrap();
    }
    const LIMIT: u64 = 256 * 1024;
    let mut opts = options(vec![root.clone()], "..");
    opts.sizes = ChunkSizes {
        min: 1024,
        avg: 4096,
        max: 16384,
    };
    opts.staging_limit = LIMIT;
    opts.owner = src.owner();
    // The outbox's size, watched from outside while the backup runs.
    let outbox = src.outbox();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (outbox, stop) = (outbox.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut most = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                most = most.max(outbox.used_bytes().unwrap());
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            most
        })
    };
    let client = g.manager.client(src.me.node_id);
    let report = grid_backup(
        &src.me,
        &client,
        g.targets.as_ref(),
        &outbox,
        &src.known(),
        &opts,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let watched = watcher.join().unwrap();
    // Far more than the limit went through the outbox...
    assert!(
        report.stats.bytes_stored > 8 * LIMIT,
        "{} bytes stored",
        report.stats.bytes_stored
    );
    // ...which never held more than the limit and one stripe (at most
    // 16 KiB of chunk as 4+2 shares, plus framing).
    let bound = LIMIT + 32 * 1024;
    assert!(
        report.staging_high_water > LIMIT / 2 && report.staging_high_water <= bound,
        "staged at most {} bytes",
        report.staging_high_water
    );
    assert!(watched <= bound, "the outbox held {watched} bytes");
    assert_eq!(outbox.used_bytes().unwrap(), 0);
    let dest = data.path().join("restored");
    restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("big"), 20),
        Vec::<String>::new()
    );
}

use strew_coordinator::{PacketId, StorageTicket as Ticket};
use strew_node::grid::TransportError;

/// Targets that stop answering once `left` puts went through (a source
/// killed mid-upload, as seen from the grid), waking `stalled`.
struct Stalling<'a> {
    inner: &'a MemoryTargets,
    left: std::sync::atomic::AtomicI64,
    stalled: tokio::sync::Notify,
}

impl strew_node::grid::PacketTransport for Stalling<'_> {
    async fn put(
        &self,
        target: NodeId,
        ticket: &Ticket,
        id: PacketId,
        bytes: Vec<u8>,
    ) -> Result<strew_coordinator::StoreReceipt, TransportError> {
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) <= 0 {
            self.stalled.notify_one();
            std::future::pending::<()>().await;
        }
        self.inner.put(target, ticket, id, bytes).await
    }
    async fn get(&self, to: NodeId, t: &Ticket, id: PacketId) -> Result<Vec<u8>, TransportError> {
        self.inner.get(to, t, id).await
    }
    async fn delete(&self, to: NodeId, t: &Ticket, id: PacketId) -> Result<(), TransportError> {
        self.inner.delete(to, t, id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_backup_resumes_without_sending_receipted_packets_again() {
    let g = grid(1 << 30);
    let src = source(&g, 4, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("half");
    fs::create_dir_all(&root).unwrap();
    for i in 0..3u64 {
        fs::write(root.join(format!("f{i}.raw")), noise(400_000, 70 + i)).unwrap();
    }
    let mut opts = options(vec![root.clone()], "..");
    opts.sizes = ChunkSizes {
        min: 256,
        avg: 1024,
        max: 4096,
    };
    opts.owner = src.owner();
    opts.journal_dir = Some(src.dir.path().join("journal"));
    let client = g.manager.client(src.me.node_id);
    let (outbox, known) = (src.outbox(), src.known());
    // About half of the ~1,100 chunks' 6 packets each, then the source "dies".
    let stalling = Stalling {
        inner: g.targets.as_ref(),
        left: std::sync::atomic::AtomicI64::new(3_500),
        stalled: tokio::sync::Notify::new(),
    };
    let run = grid_backup(
        &src.me,
        &client,
        &stalling,
        &outbox,
        &known,
        &opts,
        Arc::new(Progress::default()),
    );
    tokio::select! {
        result = run => panic!("the backup finished before the stall: {:?}", result.map(|r| r.uploaded_packets)),
        _ = stalling.stalled.notified() => {}
    }
    let report = grid_backup(
        &src.me,
        &client,
        g.targets.as_ref(),
        &outbox,
        &known,
        &opts,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    let total = report.uploaded_packets + report.skipped_packets;
    assert!(
        report.skipped_packets >= 2_000,
        "{} skipped",
        report.skipped_packets
    );
    assert!(
        report.uploaded_packets * 10 < total * 6,
        "{} of {total} sent again",
        report.uploaded_packets
    );
    assert_eq!(
        report.plans, 1,
        "the interrupted pending backup was resumed"
    );
    assert!(
        !opts
            .journal_dir
            .as_ref()
            .unwrap()
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    let dest = data.path().join("restored");
    restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("half"), 20),
        Vec::<String>::new()
    );
}
