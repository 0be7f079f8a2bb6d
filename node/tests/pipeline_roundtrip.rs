//! Round trips through the whole packet pipeline into a local packet store:
//! trees with every kind of entry restore byte-identical (contents, modes,
//! mtimes, symlinks, empty dirs, sparse files), identical data is stored
//! once, incremental backups upload only what changed, packets lost up to
//! the redundancy are tolerated and one more is a clear error, tampering
//! and a wrong secret are caught, and manifests cannot write outside DEST.

mod pipeline_common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use pipeline_common::restore_sequence;
use proptest::prelude::*;
use strew_coordinator::{DataId, PacketId, Redundancy};
use strew_node::pipeline::codec::StripeError;
use strew_node::pipeline::restore::RestoreError;
use strew_node::pipeline::{
    self, BackupOptions, BackupReport, ChunkSizes, Codec, ConvergenceSecret, KnownChunks,
    NothingKnown, Progress, RestoreOptions, RestoreProgress, StripeRecord, local::StoreSink,
};
use strew_node::store::PacketStore;
use strew_node::verify::diff_trees;

/// Small chunks so that modest files span many chunks.
fn sizes() -> ChunkSizes {
    ChunkSizes {
        min: 4096,
        avg: 16384,
        max: 65536,
    }
}

fn codec(secret: u8, redundancy: Redundancy) -> Codec {
    Codec {
        secret: ConvergenceSecret::from_bytes([secret; 32]),
        zstd_level: 3,
        redundancy,
    }
}

fn opts(codec: &Codec) -> BackupOptions {
    BackupOptions {
        name: "test".into(),
        time_ms: 1_700_000_000_000,
        sizes: sizes(),
        codec: codec.clone(),
        owner: codec.secret.clone(),
        excludes: Default::default(),
    }
}

fn run_backup(
    root: &Path,
    codec: &Codec,
    store: &PacketStore,
    known: &dyn KnownChunks,
) -> BackupReport {
    let mut sink = StoreSink::new(store.clone());
    pipeline::backup(
        &[root.to_path_buf()],
        &opts(codec),
        known,
        &mut sink,
        &Progress::default(),
    )
    .expect("backup")
}

/// A rich tree in a temporary dir (`src` in it), backed up into a local
/// store: the dir, the tree, the store, the codec and the backup's report.
fn backed_up(
    secret: u8,
    redundancy: Redundancy,
) -> (tempfile::TempDir, PathBuf, PacketStore, Codec, BackupReport) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    rich_tree(&src);
    let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
    let codec = codec(secret, redundancy);
    let report = run_backup(&src, &codec, &store, &NothingKnown);
    (work, src, store, codec, report)
}

fn run_restore(
    report: &BackupReport,
    codec: &Codec,
    store: &PacketStore,
    dest: &Path,
) -> Result<pipeline::RestoreReport, RestoreError> {
    restore_sequence(&report.sequence, codec, store, dest)
}

fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tree with every kind of entry the pipeline must preserve.
fn rich_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/empty-dir")).unwrap();
    fs::create_dir_all(root.join("données/日本語/🦀")).unwrap();
    fs::write(root.join("docs/empty-file"), b"").unwrap();
    fs::write(root.join("docs/small.txt"), b"hello grid\n").unwrap();
    fs::write(root.join("données/日本語/🦀/ünïcödé.bin"), noise(70_000, 1)).unwrap();
    // Far larger than a chunk (max 64 KiB): many chunks.
    fs::write(root.join("large.bin"), noise(3_000_000, 2)).unwrap();
    // Identical files: stored once.
    fs::write(root.join("copy-a.bin"), noise(400_000, 3)).unwrap();
    fs::write(root.join("docs/copy-b.bin"), noise(400_000, 3)).unwrap();
    fs::write(root.join("docs/dup-small-1"), b"same small").unwrap();
    fs::write(root.join("docs/dup-small-2"), b"same small").unwrap();
    // Sparse: a hole between two written regions, and a trailing hole.
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(8 * 1024 * 1024).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(b"start", 0).unwrap();
    sparse.write_all_at(b"middle", 3 * 1024 * 1024).unwrap();
    drop(sparse);
    std::os::unix::fs::symlink("large.bin", root.join("link-to-large")).unwrap();
    std::os::unix::fs::symlink("../nowhere/dangling", root.join("docs/dangling")).unwrap();
    fs::set_permissions(
        root.join("docs/small.txt"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    fs::set_permissions(root.join("large.bin"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        root.join("docs/empty-dir"),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let old = filetime::FileTime::from_unix_time(1_000_000_000, 123_456_789);
    filetime::set_file_mtime(root.join("docs/small.txt"), old).unwrap();
    filetime::set_symlink_file_times(root.join("link-to-large"), old, old).unwrap();
    filetime::set_file_mtime(root.join("docs"), old).unwrap();
}

#[test]
fn a_rich_tree_restores_byte_identical() {
    let (work, src, store, c, report) = backed_up(1, Redundancy::Erasure { k: 4, m: 2 });
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let dest = work.path().join("dest");
    let restored = run_restore(&report, &c, &store, &dest).unwrap();
    assert_eq!(
        diff_trees(&src, &dest.join("src"), 50),
        Vec::<String>::new()
    );
    assert_eq!(restored.degraded_stripes, 0);
    // The sparse file came back with its holes (far fewer blocks than its length).
    let meta = fs::metadata(dest.join("src/sparse.img")).unwrap();
    assert_eq!(meta.len(), 8 * 1024 * 1024);
    assert!(
        meta.blocks() * 512 < 1024 * 1024,
        "{} blocks",
        meta.blocks()
    );
}

#[test]
fn identical_files_are_stored_once() {
    let work = tempfile::tempdir().unwrap();
    let one = work.path().join("one");
    let two = work.path().join("two");
    fs::create_dir_all(&one).unwrap();
    fs::create_dir_all(&two).unwrap();
    fs::write(one.join("a"), noise(500_000, 9)).unwrap();
    fs::write(two.join("a"), noise(500_000, 9)).unwrap();
    fs::write(two.join("b"), noise(500_000, 9)).unwrap();
    let c = codec(1, Redundancy::Erasure { k: 4, m: 2 });
    let s1 = PacketStore::open(&work.path().join("s1"), u64::MAX).unwrap();
    let s2 = PacketStore::open(&work.path().join("s2"), u64::MAX).unwrap();
    let r1 = run_backup(&one, &c, &s1, &NothingKnown);
    let r2 = run_backup(&two, &c, &s2, &NothingKnown);
    // Twice the data, the same chunks: only the manifest differs.
    assert_eq!(r1.stats.chunks * 2, r2.stats.chunks);
    let data1: u64 = r1.sequence.data.len() as u64;
    let data2: u64 = r2.sequence.data.len() as u64;
    assert_eq!(data1, data2);
    let bytes = |s: &PacketStore, r: &BackupReport| {
        let manifest: u64 = r
            .sequence
            .manifest
            .iter()
            .flat_map(|m| m.distinct_packets())
            .map(|id| s.get(&id).unwrap().map_or(0, |b| b.len() as u64))
            .sum();
        s.used_bytes().unwrap() - manifest
    };
    assert_eq!(bytes(&s1, &r1), bytes(&s2, &r2));
}

#[test]
fn an_incremental_backup_uploads_only_what_changed() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    rich_tree(&src);
    let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
    let c = codec(1, Redundancy::Erasure { k: 4, m: 2 });
    let first = run_backup(&src, &c, &store, &NothingKnown);
    let known: HashMap<DataId, StripeRecord> = first
        .sequence
        .stripes()
        .map(|s| (s.data_id, s.clone()))
        .collect();
    // Unchanged: nothing but (at most) a new manifest is stored.
    let again = run_backup(&src, &c, &store, &known);
    assert_eq!(again.stats.new_chunks, 0, "no new data chunk");
    assert_eq!(
        again.stats.manifest_chunks,
        again.sequence.manifest.len() as u64
    );
    // One file appended to: only its last chunks are new.
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join("large.bin"))
        .unwrap();
    f.write_all(&noise(1000, 77)).unwrap();
    drop(f);
    let third = run_backup(&src, &c, &store, &known);
    let data_new = third.stats.new_chunks;
    assert!((1..=3).contains(&data_new), "{data_new} new data chunks");
    let dest = work.path().join("dest");
    run_restore(&third, &c, &store, &dest).unwrap();
    assert_eq!(
        diff_trees(&src, &dest.join("src"), 50),
        Vec::<String>::new()
    );
}

#[test]
fn losing_up_to_m_packets_per_stripe_restores_and_one_more_fails_clearly() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    rich_tree(&src);
    let c = codec(1, Redundancy::Erasure { k: 3, m: 2 });
    for (lost, should_restore) in [(2usize, true), (3usize, false)] {
        let store =
            PacketStore::open(&work.path().join(format!("store-{lost}")), u64::MAX).unwrap();
        let report = run_backup(&src, &c, &store, &NothingKnown);
        for (n, stripe) in report.sequence.stripes().enumerate() {
            // Vary which packets go: data shares, parity shares, a mix.
            for j in 0..lost {
                let pos = (n + j * 2) % stripe.packets.len();
                let pos = if (0..j).any(|p| (n + p * 2) % stripe.packets.len() == pos) {
                    (pos + 1) % stripe.packets.len()
                } else {
                    pos
                };
                store.delete(&stripe.packets[pos]).unwrap();
            }
        }
        let dest = work.path().join(format!("dest-{lost}"));
        let result = run_restore(&report, &c, &store, &dest);
        if should_restore {
            let r = result.unwrap();
            assert!(r.degraded_stripes > 0);
            assert_eq!(
                diff_trees(&src, &dest.join("src"), 50),
                Vec::<String>::new()
            );
        } else {
            let err = result.unwrap_err();
            assert!(
                matches!(
                    err,
                    RestoreError::Stripe(StripeError::NotEnoughPackets {
                        need: 3,
                        width: 5,
                        ..
                    })
                ),
                "{err}"
            );
        }
    }
}

#[test]
fn tampered_packets_are_detected_named_and_worked_around() {
    let (work, src, store, c, report) = backed_up(1, Redundancy::Erasure { k: 4, m: 2 });
    // One packet of every stripe is served with a flipped bit (a lying target).
    let mut victims: Vec<PacketId> = Vec::new();
    let mut bad: HashMap<PacketId, Vec<u8>> = HashMap::new();
    for (n, stripe) in report.sequence.stripes().enumerate() {
        let id = stripe.packets[n % stripe.packets.len()];
        let mut bytes = store.get(&id).unwrap().unwrap();
        let at = (n * 7919) % bytes.len();
        bytes[at] ^= 0x01;
        victims.push(id);
        bad.insert(id, bytes);
    }
    let source = Tampered { store: &store, bad };
    let dest = work.path().join("dest");
    let r = pipeline::restore(
        &report.sequence,
        &pipeline::RestoreKeys {
            owner: c.secret.clone(),
            data: Vec::new(),
        },
        &source,
        &dest,
        &RestoreOptions::default(),
        &RestoreProgress::default(),
    )
    .unwrap();
    assert_eq!(
        diff_trees(&src, &dest.join("src"), 50),
        Vec::<String>::new()
    );
    let mut named = r.corrupt_packets.clone();
    named.sort();
    victims.sort();
    // Every corrupt packet that restore needed to look at is named.
    assert!(!named.is_empty());
    assert!(named.iter().all(|id| victims.contains(id)));
}

/// A packet source that serves altered bytes for some packets.
struct Tampered<'a> {
    store: &'a PacketStore,
    bad: HashMap<PacketId, Vec<u8>>,
}

impl pipeline::PacketSource for Tampered<'_> {
    fn fetch(&self, id: &PacketId) -> Option<Vec<u8>> {
        if let Some(bad) = self.bad.get(id) {
            return Some(bad.clone());
        }
        self.store.get(id).unwrap()
    }
}

#[test]
fn a_wrong_convergence_secret_fails_with_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    rich_tree(&src);
    let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
    let report = run_backup(
        &src,
        &codec(1, Redundancy::Erasure { k: 4, m: 2 }),
        &store,
        &NothingKnown,
    );
    let err = run_restore(
        &report,
        &codec(2, Redundancy::Erasure { k: 4, m: 2 }),
        &store,
        &work.path().join("d"),
    )
    .unwrap_err();
    // Another owner's secret does not open the snapshot root.
    assert!(matches!(err, RestoreError::NotOwner), "{err}");
    assert!(err.to_string().contains("strew key import"), "{err}");
    assert!(
        !work.path().join("d").exists(),
        "nothing written on failure"
    );
}

#[test]
fn replicas_round_trip() {
    let (work, src, store, c, report) = backed_up(3, Redundancy::Replicas { n: 3 });
    assert!(report.sequence.stripes().all(|s| s.packets.len() == 3));
    let dest = work.path().join("dest");
    run_restore(&report, &c, &store, &dest).unwrap();
    assert_eq!(
        diff_trees(&src, &dest.join("src"), 50),
        Vec::<String>::new()
    );
}

#[test]
fn restore_refuses_a_non_empty_destination() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
    let c = codec(1, Redundancy::Erasure { k: 4, m: 2 });
    let report = run_backup(&src, &c, &store, &NothingKnown);
    let dest = work.path().join("dest");
    fs::create_dir_all(&dest).unwrap();
    fs::write(dest.join("precious"), b"keep me").unwrap();
    let err = run_restore(&report, &c, &store, &dest).unwrap_err();
    assert!(matches!(err, RestoreError::DestNotEmpty(_)), "{err}");
    assert_eq!(fs::read(dest.join("precious")).unwrap(), b"keep me");
}

#[test]
fn an_unreadable_file_is_reported_and_the_rest_backed_up() {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("good"), b"fine").unwrap();
    // A FIFO cannot be backed up; a file we cannot open is skipped too
    // (mode 000 does not stop root, so that part runs only as a user).
    nix_mkfifo(&src.join("pipe"));
    let unreadable = src.join("secret");
    fs::write(&unreadable, b"nope").unwrap();
    fs::set_permissions(&unreadable, fs::Permissions::from_mode(0o000)).unwrap();
    let as_root = unsafe { libc_geteuid() } == 0;
    let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
    let c = codec(1, Redundancy::Erasure { k: 2, m: 1 });
    let report = run_backup(&src, &c, &store, &NothingKnown);
    let warned: Vec<PathBuf> = report.warnings.iter().map(|w| w.path.clone()).collect();
    assert!(warned.contains(&src.join("pipe")), "{warned:?}");
    assert_eq!(warned.contains(&unreadable), !as_root, "{warned:?}");
    let dest = work.path().join("dest");
    run_restore(&report, &c, &store, &dest).unwrap();
    assert_eq!(fs::read(dest.join("src/good")).unwrap(), b"fine");
    assert!(!dest.join("src/pipe").exists());
}

fn nix_mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { mkfifo(c.as_ptr(), 0o644) }, 0);
}

unsafe extern "C" {
    fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn a_missing_root_is_an_error_naming_it() {
    let work = tempfile::tempdir().unwrap();
    let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
    let c = codec(1, Redundancy::Erasure { k: 2, m: 1 });
    let mut sink = StoreSink::new(store);
    let missing = work.path().join("does-not-exist");
    let err = pipeline::backup(
        std::slice::from_ref(&missing),
        &opts(&c),
        &NothingKnown,
        &mut sink,
        &Progress::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

/// A random tree: names from a mixed alphabet (unicode included), file
/// sizes from empty to several chunks, some duplicates, some symlinks.
fn arb_tree() -> impl Strategy<Value = Vec<(String, Option<(usize, u64)>)>> {
    let name = "[a-zé日🦀 ._-]{1,12}".prop_filter("not . or ..", |n| n != "." && n != "..");
    let file = (0usize..200_000, 0u64..5).prop_map(Some);
    proptest::collection::vec(
        (
            proptest::collection::vec(name, 1..4).prop_map(|parts| parts.join("/")),
            prop_oneof![3 => file, 1 => Just(None)],
        ),
        1..25,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn random_trees_round_trip(tree in arb_tree(), k in 1u8..5, m in 1u8..3) {
        let work = tempfile::tempdir().unwrap();
        let src = work.path().join("src");
        fs::create_dir_all(&src).unwrap();
        for (path, file) in &tree {
            let p = src.join(path);
            // Later entries may collide with earlier ones: skip what cannot be made.
            match file {
                Some((len, seed)) => {
                    if let Some(parent) = p.parent()
                        && fs::create_dir_all(parent).is_err() { continue; }
                    if p.is_dir() { continue; }
                    let _ = fs::write(&p, noise(*len, *seed));
                }
                None => { let _ = fs::create_dir_all(&p); }
            }
        }
        let store = PacketStore::open(&work.path().join("store"), u64::MAX).unwrap();
        let c = codec(4, Redundancy::Erasure { k, m });
        let report = run_backup(&src, &c, &store, &NothingKnown);
        prop_assert!(report.warnings.is_empty());
        let dest = work.path().join("dest");
        run_restore(&report, &c, &store, &dest).unwrap();
        prop_assert_eq!(diff_trees(&src, &dest.join("src"), 20), Vec::<String>::new());
    }
}

/// The packet store's inventory (what `Inventory` answers a manager): every
/// packet once, in id order, with its size and generation, page by page.
#[test]
fn the_inventory_pages_through_every_packet_with_size_and_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = strew_node::store::PacketStore::open(dir.path(), 1 << 20).expect("store");
    let packets: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    let with: Vec<(strew_coordinator::PacketId, &[u8], u64)> = packets
        .iter()
        .enumerate()
        .map(|(i, b)| {
            (
                strew_coordinator::PacketId::of(b),
                b.as_slice(),
                i as u64 + 100,
            )
        })
        .collect();
    store.put_many_with_generations(&with).expect("put");
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.inventory(after.as_ref(), 3).expect("inventory");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        after = page.last().map(|(id, _, _)| *id);
        seen.extend(page);
    }
    let mut want: Vec<(strew_coordinator::PacketId, u64, u64)> = with
        .iter()
        .map(|(id, b, g)| (*id, b.len() as u64, *g))
        .collect();
    want.sort();
    assert_eq!(seen, want);
}

/// A sequence is read from the manager: one that lies about the manifest's
/// id, drops a data stripe, repeats one or lists them out of order is
/// restored where it can be (any order, each chunk once) and refused with
/// a typed error where it cannot.
#[test]
fn a_sequence_out_of_order_repeated_or_short_is_restored_or_refused_clearly() {
    let (work, src, store, c, report) = backed_up(1, Redundancy::Erasure { k: 2, m: 1 });
    assert!(report.sequence.data.len() > 4, "a tree of several chunks");
    let restore = |sequence: &pipeline::Sequence, name: &str| {
        let dest = work.path().join(name);
        (restore_sequence(sequence, &c, &store, &dest), dest)
    };

    // Reversed, and every stripe twice: each chunk is decoded and written once.
    let mut shuffled = report.sequence.clone();
    shuffled.data.reverse();
    shuffled.data.extend(report.sequence.data.clone());
    let (result, dest) = restore(&shuffled, "shuffled");
    let restored = result.expect("an out-of-order sequence restores");
    assert_eq!(restored.stripes as usize, report.sequence.data.len());
    assert_eq!(
        diff_trees(&src, &dest.join("src"), 50),
        Vec::<String>::new()
    );

    // A data stripe missing: named.
    let mut short = report.sequence.clone();
    let dropped = short.data.remove(2).data_id;
    let (result, _) = restore(&short, "short");
    match result {
        Err(RestoreError::MissingStripe(id)) => assert_eq!(id, dropped),
        other => panic!("expected MissingStripe, got {other:?}"),
    }

    // Another manifest's id: the decoded manifest does not match it.
    let mut lying = report.sequence.clone();
    lying.snapshot = DataId([7; 32]);
    let (result, _) = restore(&lying, "lying");
    match result {
        Err(RestoreError::ManifestMismatch { expected, actual }) => {
            assert_eq!(expected, DataId([7; 32]));
            assert_eq!(actual, report.sequence.snapshot);
        }
        other => panic!("expected ManifestMismatch, got {other:?}"),
    }

    // A manifest stripe's packets gone: the stripe's error, not a decode error.
    let mut gone = report.sequence.clone();
    let manifest_stripe = gone.manifest.last().unwrap().clone();
    for id in manifest_stripe.distinct_packets() {
        store.delete(&id).unwrap();
    }
    gone.manifest.last_mut().unwrap().packets = manifest_stripe.packets;
    let (result, _) = restore(&gone, "gone");
    assert!(
        matches!(
            result,
            Err(RestoreError::Stripe(StripeError::NotEnoughPackets { .. }))
        ),
        "{result:?}"
    );
}

/// A writer that takes `room` bytes, then fails (a full disk).
struct Full {
    room: usize,
}

impl std::io::Write for Full {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::other("no space left"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_manifest_copied_as_it_streams_reads_back_the_same_and_a_failed_copy_loses_nothing() {
    use strew_node::pipeline::manifest_disk::DiskManifest;
    use strew_node::pipeline::restore::{open_manifest, open_manifest_copying};
    // The temporary dir lives as long as its store.
    let (_work, _, store, c, report) = backed_up(5, Redundancy::Erasure { k: 2, m: 1 });
    let keys = pipeline::RestoreKeys {
        owner: c.secret.clone(),
        data: Vec::new(),
    };
    let (plain, _) = open_manifest(&report.sequence, &keys, &store).unwrap();
    let plain = plain.to_manifest().unwrap();
    assert!(plain.entries.len() > 5, "{} entries", plain.entries.len());

    let mut copy = Vec::new();
    let (read, _, whole) =
        open_manifest_copying(&report.sequence, &keys, &store, &mut copy).unwrap();
    assert!(whole);
    assert_eq!(read.to_manifest().unwrap(), plain);
    let again = DiskManifest::decode_from(&copy[..]).unwrap();
    assert_eq!(
        again.to_manifest().unwrap(),
        plain,
        "the copy is the manifest"
    );

    // A copy that fails half-way: the manifest still reads whole, and the
    // answer says the copy is not.
    let mut full = Full {
        room: copy.len() / 2,
    };
    let (read, _, whole) =
        open_manifest_copying(&report.sequence, &keys, &store, &mut full).unwrap();
    assert!(!whole);
    assert_eq!(read.to_manifest().unwrap(), plain);
}
