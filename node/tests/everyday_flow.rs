//! The everyday habits (R14) in-process, with the real coordinator
//! `Manager` and in-memory targets that count every packet they serve:
//! retention with restic's rules over ten snapshots at controlled times,
//! freeing exactly the packets no survivor references; manifests read
//! without a single data packet; a partial restore fetching only the
//! stripes of the file it restores; excludes leaving paths out of the
//! snapshot.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ed25519_dalek::SigningKey;
use strew_coordinator::manager::{Manager, ManagerConfig};
use strew_coordinator::records::{BackupParams, Compression, ConvergenceScope, Encryption};
use strew_coordinator::seal::GroupKey;
use strew_coordinator::{
    DataId, DistanceRange, GeoPoint, NodeId, NodeProfile, PacketId, Redundancy,
};
use strew_node::grid::testkit::{LocalManager, MemoryTargets};
use strew_node::grid::{
    GridBackupOptions, GridBackupReport, KeepPolicy, KnownIndex, SourceIdentity, apply_retention,
    grid_backup, grid_manifest, grid_restore, open_sequence,
};
use strew_node::pipeline::manifest::EntryKind;
use strew_node::pipeline::select;
use strew_node::pipeline::{
    ChunkSizes, ConvergenceSecret, ExcludeRules, Progress, RestoreKeys, RestoreOptions,
    RestoreProgress,
};
use strew_node::store::PacketStore;

const NOW: u64 = 1_780_000_000_000;
const PARIS: GeoPoint = GeoPoint {
    lat: 48.8566,
    lon: 2.3522,
};
const TARGETS: &[(f64, f64)] = &[
    (51.5074, -0.1278),
    (52.52, 13.405),
    (40.4168, -3.7038),
    (41.9028, 12.4964),
    (52.3676, 4.9041),
    (48.2082, 16.3738),
    (52.2297, 21.0122),
];

struct Grid {
    manager: LocalManager,
    targets: Arc<MemoryTargets>,
    me: SourceIdentity,
    dir: tempfile::TempDir,
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn node_id(seed: u8) -> NodeId {
    NodeId(key(seed).verifying_key().to_bytes())
}

/// Seven targets around Europe and a source in Paris.
fn grid() -> Grid {
    let capacity = 1u64 << 30;
    let mut manager = Manager::new(key(1), GroupKey([9; 32]), ManagerConfig::default());
    let mut ids = Vec::new();
    for (i, (lat, lon)) in TARGETS.iter().enumerate() {
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
        ids.push((key(10 + i as u8), capacity));
    }
    let x25519_secret = [77; 32];
    let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(x25519_secret));
    let me = node_id(2);
    let mut profile = NodeProfile::new(me, PARIS, capacity, NOW);
    profile.x25519_public = public.to_bytes();
    manager.join(profile, None, NOW).unwrap();
    let targets = Arc::new(MemoryTargets::new(manager.node_id(), NOW, ids));
    targets.add(key(2), capacity);
    Grid {
        manager: LocalManager::new(manager, NOW, 7),
        targets,
        me: SourceIdentity {
            node_id: me,
            location: PARIS,
            x25519_secret,
        },
        dir: tempfile::tempdir().unwrap(),
    }
}

/// The grid's convergence secret (`grid-convergence.key` in a daemon).
fn secret() -> ConvergenceSecret {
    ConvergenceSecret::from_bytes([42; 32])
}

/// The source's private secret: keys its manifests and snapshot roots.
fn owner() -> ConvergenceSecret {
    ConvergenceSecret::from_bytes([78; 32])
}

fn keys() -> RestoreKeys {
    RestoreKeys {
        owner: owner(),
        data: vec![secret()],
    }
}

fn options(paths: Vec<PathBuf>, now_ms: u64) -> GridBackupOptions {
    GridBackupOptions {
        set: "home".into(),
        paths,
        params: BackupParams {
            backup_distance: DistanceRange::default(),
            spread: DistanceRange::default(),
            redundancy: Redundancy::Erasure { k: 4, m: 2 },
            compression: Compression::Zstd { level: 1 },
            encryption: Encryption {
                cipher: "chacha20poly1305".into(),
                convergence: ConvergenceScope::Grid,
            },
            sync_interval_secs: None,
        },
        sizes: ChunkSizes {
            min: 16 * 1024,
            avg: 64 * 1024,
            max: 256 * 1024,
        },
        secret: secret(),
        owner: owner(),
        now_ms,
        parallel_uploads: 8,
        excludes: ExcludeRules::default(),
        staging_limit: strew_node::grid::stream::DEFAULT_STAGING_LIMIT,
        journal_dir: None,
        previous: None,
    }
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

async fn backup(g: &Grid, opts: &GridBackupOptions) -> GridBackupReport {
    let client = g.manager.client(g.me.node_id);
    let mut report = grid_backup(
        &g.me,
        &client,
        g.targets.as_ref(),
        &PacketStore::open(&g.dir.path().join("outbox"), u64::MAX).unwrap(),
        &known(g),
        opts,
        Arc::new(Progress::default()),
    )
    .await
    .unwrap();
    // What the daemon runs in the background once the backup answered.
    let cleanup = std::mem::take(&mut report.cleanup);
    strew_node::grid::clean_up(&client, g.targets.as_ref(), cleanup).await;
    report
}

fn known(g: &Grid) -> KnownIndex {
    KnownIndex::open(&g.dir.path().join("known.redb")).unwrap()
}

/// Every packet a snapshot references, and those of its manifest's stripes.
async fn packets_of(
    g: &Grid,
    snapshot: strew_coordinator::SnapshotId,
) -> (
    BTreeSet<PacketId>,
    BTreeSet<PacketId>,
    Vec<(DataId, Vec<PacketId>)>,
) {
    let seq = open_sequence(&g.me, &g.manager.client(g.me.node_id), snapshot)
        .await
        .unwrap();
    let all = seq
        .stripes
        .iter()
        .flat_map(|s| s.packets.iter().map(|p| p.packet_id))
        .collect();
    let manifest = seq
        .stripes
        .iter()
        .filter(|s| seq.manifest_chunks.contains(&s.data_id))
        .flat_map(|s| s.packets.iter().map(|p| p.packet_id))
        .collect();
    let stripes = seq
        .stripes
        .iter()
        .map(|s| (s.data_id, s.packets.iter().map(|p| p.packet_id).collect()))
        .collect();
    (all, manifest, stripes)
}

/// Unix ms of a UTC date and hour.
fn at(y: i64, m: i64, d: i64, h: i64) -> u64 {
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (((era * 146_097 + doe - 719_468) * 24 + h) * 3_600_000) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_restics_survivors_and_frees_exactly_what_they_do_not_reference() {
    let g = grid();
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("shared.bin"), noise(200_000, 1)).unwrap();
    // Ten snapshots at controlled times (restic's documented rules decide):
    // Tue wk43, Tue wk44, Thu wk44, Mon wk45, Tue wk45 x2, Thu wk45, Fri wk45 x2, Mon wk46.
    let times = [
        at(2026, 10, 20, 9),
        at(2026, 10, 27, 9),
        at(2026, 10, 29, 9),
        at(2026, 11, 2, 9),
        at(2026, 11, 3, 9),
        at(2026, 11, 3, 18),
        at(2026, 11, 5, 9),
        at(2026, 11, 6, 8),
        at(2026, 11, 6, 20),
        at(2026, 11, 9, 7),
    ];
    let mut snapshots = Vec::new();
    for (i, t) in times.iter().enumerate() {
        // Each run changes one file: every snapshot has packets of its own.
        fs::write(root.join("changing.bin"), noise(100_000, 100 + i as u64)).unwrap();
        // The manager's clock (a test clock) dates the snapshot; targets check tickets by theirs.
        g.manager.now.store(*t, Ordering::Relaxed);
        g.targets.now.store(*t, Ordering::Relaxed);
        let report = backup(&g, &options(vec![root.clone()], *t)).await;
        snapshots.push(report.snapshot);
    }
    let before = g.targets.all_packets();
    let policy = KeepPolicy {
        daily: 3,
        weekly: 2,
        ..KeepPolicy::default()
    };
    let client = g.manager.client(g.me.node_id);
    let dry = apply_retention(&client, g.targets.as_ref(), &known(&g), &policy, None, true)
        .await
        .unwrap();
    // restic keeps: the newest of each of the 3 latest days (11-09, 11-06
    // 20h, 11-05) and of the 2 latest weeks (46 and 45: the same two).
    let kept: Vec<String> = dry.keep.iter().map(|d| d.snapshot.clone()).collect();
    let expected: Vec<String> = [9, 8, 6]
        .iter()
        .map(|i| snapshots[*i].to_string())
        .collect();
    assert_eq!(kept, expected);
    assert_eq!(dry.remove.len(), 7);
    assert_eq!(g.targets.all_packets(), before, "a dry run deletes nothing");

    let mut survivors = BTreeSet::new();
    for i in [9, 8, 6] {
        survivors.extend(packets_of(&g, snapshots[i]).await.0);
    }
    assert!(survivors.len() < before.len());
    let real = apply_retention(
        &client,
        g.targets.as_ref(),
        &known(&g),
        &policy,
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(real.undeleted, 0);
    assert_eq!(
        g.targets.all_packets(),
        survivors,
        "exactly the packets no survivor references are gone"
    );
    assert_eq!(real.deleted as usize, before.len() - survivors.len());
    // The survivors are all that is listed now, and a second run changes nothing.
    let again = apply_retention(
        &client,
        g.targets.as_ref(),
        &known(&g),
        &policy,
        None,
        false,
    )
    .await
    .unwrap();
    assert_eq!(again.keep.len(), 3);
    assert!(again.remove.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_answer_ls_find_and_diff_without_a_data_packet() {
    let g = grid();
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    fs::create_dir_all(root.join("docs")).unwrap();
    fs::write(root.join("docs/a.txt"), b"first\n".repeat(1000)).unwrap();
    fs::write(root.join("big.bin"), noise(2_000_000, 3)).unwrap();
    let a = backup(&g, &options(vec![root.clone()], NOW)).await;
    fs::write(root.join("docs/a.txt"), b"second\n".repeat(1000)).unwrap();
    fs::write(root.join("docs/new.pdf"), b"%PDF").unwrap();
    fs::remove_file(root.join("big.bin")).unwrap();
    let b = backup(&g, &options(vec![root.clone()], NOW + 60_000)).await;
    g.targets.take_gets();

    let client = g.manager.client(g.me.node_id);
    let read = |snapshot| {
        grid_manifest(
            &g.me,
            &client,
            g.targets.clone(),
            snapshot,
            keys(),
            Box::new(std::io::sink()),
        )
    };
    let a_read = read(a.snapshot).await.unwrap();
    let b_read = read(b.snapshot).await.unwrap();
    assert!(a_read.copied && b_read.copied);
    let (ma, fetched_a) = (a_read.manifest, a_read.fetched);
    let (mb, fetched_b) = (b_read.manifest, b_read.fetched);
    let gets = g.targets.take_gets();
    let (_, manifest_a, _) = packets_of(&g, a.snapshot).await;
    let (_, manifest_b, _) = packets_of(&g, b.snapshot).await;
    assert_eq!(gets.len() as u64, fetched_a + fetched_b);
    assert!(!gets.is_empty());
    for id in &gets {
        assert!(
            manifest_a.contains(id) || manifest_b.contains(id),
            "packet {id} fetched is not a manifest packet"
        );
    }
    let mut listed: Vec<String> = select::list(ma.heads(), None)
        .unwrap()
        .into_iter()
        .map(|l| l.path)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["home", "home/big.bin", "home/docs", "home/docs/a.txt"]
    );
    let found = select::Finder::new("*.pdf")
        .unwrap()
        .find(mb.heads())
        .unwrap();
    assert_eq!(found[0].path, "home/docs/new.pdf");
    let d = select::diff(|| ma.heads(), mb.heads()).unwrap();
    assert_eq!(d.added, ["home/docs/new.pdf"]);
    assert_eq!(d.removed, ["home/big.bin"]);
    assert_eq!(d.changed, ["home/docs/a.txt"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_include_fetches_only_the_stripes_of_the_file_it_restores() {
    let g = grid();
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    fs::create_dir_all(root.join("docs")).unwrap();
    // 50 MB of other files, and the one to restore.
    for i in 0..25 {
        fs::write(
            root.join(format!("bulk-{i:02}.bin")),
            noise(2_000_000, 10 + i),
        )
        .unwrap();
    }
    let wanted = root.join("docs/report.pdf");
    fs::write(&wanted, noise(300_000, 5)).unwrap();
    fs::set_permissions(&wanted, fs::Permissions::from_mode(0o604)).unwrap();
    let mtime = filetime::FileTime::from_unix_time(1_700_000_123, 456_000_000);
    filetime::set_file_mtime(&wanted, mtime).unwrap();
    let report = backup(&g, &options(vec![root.clone()], NOW)).await;
    let (all, manifest_packets, stripes) = packets_of(&g, report.snapshot).await;
    g.targets.take_gets();

    let dest = data.path().join("restored");
    let r = grid_restore(
        &g.me,
        &g.manager.client(g.me.node_id),
        g.targets.clone(),
        report.snapshot,
        dest.clone(),
        keys(),
        RestoreOptions {
            include: vec!["home/docs/report.pdf".into()],
            ..RestoreOptions::default()
        },
        Arc::new(RestoreProgress::default()),
    )
    .await
    .unwrap();
    let gets = g.targets.take_gets();

    // The file's own chunks, from the manifest.
    let manifest = grid_manifest(
        &g.me,
        &g.manager.client(g.me.node_id),
        g.targets.clone(),
        report.snapshot,
        keys(),
        Box::new(std::io::sink()),
    )
    .await
    .unwrap()
    .manifest
    .to_manifest()
    .unwrap();
    g.targets.take_gets();
    let file_chunks: BTreeSet<DataId> = manifest
        .entries
        .iter()
        .filter(|e| &e.path[..] == b"home/docs/report.pdf")
        .flat_map(|e| match &e.kind {
            EntryKind::File { extents, .. } => extents
                .iter()
                .map(|x| manifest.chunks[x.chunk as usize].data_id())
                .collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(!file_chunks.is_empty());
    let allowed: BTreeSet<PacketId> = stripes
        .iter()
        .filter(|(id, _)| file_chunks.contains(id))
        .flat_map(|(_, p)| p.iter().copied())
        .chain(manifest_packets.iter().copied())
        .collect();
    for id in &gets {
        assert!(
            allowed.contains(id),
            "packet {id} is not the file's nor the manifest's"
        );
    }
    assert_eq!(gets.len() as u64, r.fetched);
    // K = 4 packets per stripe read, for the manifest's and the file's stripes only.
    let manifest_stripes = manifest_packets.len() / 6;
    assert_eq!(gets.len(), 4 * (manifest_stripes + file_chunks.len()));
    assert!(
        gets.len() * 20 < all.len(),
        "{} of {} packets fetched",
        gets.len(),
        all.len()
    );

    let restored = dest.join("home/docs/report.pdf");
    assert_eq!(fs::read(&restored).unwrap(), fs::read(&wanted).unwrap());
    let meta = fs::metadata(&restored).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o604);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_700_000_123, 456_000_000)
    );
    let names: Vec<String> = fs::read_dir(dest.join("home"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["docs"], "nothing else was restored");
    assert_eq!(r.restore.files, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn excluded_paths_are_not_in_the_snapshot() {
    let g = grid();
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    for d in ["src/node_modules/pkg", "cache", "notes/drafts"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::write(root.join("src/main.rs"), b"fn main() {}\n").unwrap();
    fs::write(root.join("src/node_modules/pkg/index.js"), b"x").unwrap();
    fs::write(root.join("build.log"), b"log").unwrap();
    fs::write(
        root.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n",
    )
    .unwrap();
    fs::write(root.join("cache/blob"), b"cached").unwrap();
    fs::write(root.join("notes/.strewignore"), b"drafts/\nsecret.txt\n").unwrap();
    fs::write(root.join("notes/secret.txt"), b"s").unwrap();
    fs::write(root.join("notes/todo.txt"), b"t").unwrap();
    fs::write(root.join("notes/drafts/d.txt"), b"d").unwrap();
    let mut opts = options(vec![root.clone()], NOW);
    opts.excludes = ExcludeRules {
        patterns: vec!["node_modules".into(), "*.log".into()],
        files: Vec::new(),
        exclude_caches: true,
        one_file_system: true,
    };
    let report = backup(&g, &opts).await;
    assert_eq!(
        report.stats.excluded, 5,
        "node_modules, build.log, cache, drafts, secret.txt"
    );
    let manifest = grid_manifest(
        &g.me,
        &g.manager.client(g.me.node_id),
        g.targets.clone(),
        report.snapshot,
        keys(),
        Box::new(std::io::sink()),
    )
    .await
    .unwrap()
    .manifest
    .to_manifest()
    .unwrap();
    let entries = manifest.entries.iter().cloned();
    let mut paths: Vec<String> = select::list(entries.map(Ok::<_, std::io::Error>), None)
        .unwrap()
        .into_iter()
        .map(|l| l.path)
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "home",
            "home/notes",
            "home/notes/.strewignore",
            "home/notes/todo.txt",
            "home/src",
            "home/src/main.rs"
        ]
    );
}
