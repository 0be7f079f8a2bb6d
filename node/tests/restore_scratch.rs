//! A restore keeps the snapshot's manifest in scratch files in the system's
//! temporary directory. When they cannot be made there, the restore fails
//! with a typed error that says so, before it writes anything into DEST,
//! and the same restore succeeds byte-identical once they can.
//!
//! Alone in its test binary: it changes `TMPDIR` for the whole process.

mod pipeline_common;

use std::fs;

use pipeline_common::restore_sequence;
use strew_coordinator::Redundancy;
use strew_node::pipeline::manifest::ManifestError;
use strew_node::pipeline::restore::RestoreError;
use strew_node::pipeline::{
    self, BackupOptions, ChunkSizes, Codec, ConvergenceSecret, NothingKnown, Progress,
    local::StoreSink,
};
use strew_node::store::PacketStore;
use strew_node::verify::diff_trees;

#[test]
fn a_restore_without_room_for_its_scratch_files_fails_clearly_and_writes_nothing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let src = tmp.path().join("src");
    fs::create_dir_all(src.join("a/b")).expect("tree");
    for i in 0..200u32 {
        fs::write(src.join(format!("a/b/f{i}")), i.to_le_bytes().repeat(50)).expect("file");
    }
    fs::write(
        src.join("big"),
        (0..300_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .expect("file");
    let store = PacketStore::open(&tmp.path().join("store"), 1 << 30).expect("store");
    let codec = Codec {
        secret: ConvergenceSecret::from_bytes([4; 32]),
        zstd_level: 3,
        redundancy: Redundancy::Erasure { k: 2, m: 1 },
    };
    let options = BackupOptions {
        name: "scratch".into(),
        time_ms: 1_700_000_000_000,
        sizes: ChunkSizes {
            min: 4096,
            avg: 16384,
            max: 65536,
        },
        codec: codec.clone(),
        owner: codec.secret.clone(),
        excludes: Default::default(),
    };
    let report = pipeline::backup(
        std::slice::from_ref(&src),
        &options,
        &NothingKnown,
        &mut StoreSink::new(store.clone()),
        &Progress::default(),
    )
    .expect("backup");

    // No temporary directory: the scratch files cannot be made.
    let saved = std::env::var_os("TMPDIR");
    let missing = tmp.path().join("no-such-dir");
    // SAFETY: this test binary runs this one test, on this one thread.
    unsafe { std::env::set_var("TMPDIR", &missing) };
    let dest = tmp.path().join("dest");
    let failed = restore_sequence(&report.sequence, &codec, &store, &dest);
    match &saved {
        // SAFETY: as above.
        Some(v) => unsafe { std::env::set_var("TMPDIR", v) },
        None => unsafe { std::env::remove_var("TMPDIR") },
    }
    let err = failed.expect_err("a restore without scratch files");
    assert!(
        matches!(err, RestoreError::Manifest(ManifestError::Scratch(_))),
        "{err:?}"
    );
    let why = std::error::Error::source(&err).map(|e| e.to_string());
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("could not be kept on disk")),
        "{why:?}"
    );
    assert!(
        !dest.exists(),
        "nothing is written before the manifest is read"
    );

    // With room again the same snapshot restores byte-identical.
    restore_sequence(&report.sequence, &codec, &store, &dest).expect("restore");
    let differences = diff_trees(&src, &dest.join("src"), 5);
    assert!(differences.is_empty(), "{differences:?}");
}
