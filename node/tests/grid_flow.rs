//! The source side of the grid, end to end but in-process: the real
//! coordinator `Manager` and in-memory targets at real city locations.
//! Backup under a distance bound, restore after losing two targets, restore
//! with only the key (fresh data dir), dedup across sources, forget freeing
//! exactly the unshared packets, re-planning around a target that fails
//! mid-upload, lying targets, a slow target avoided by the restore, a
//! constraint no grid can meet, and what the manager's database reveals.
//! The same at scale is in `grid_scale.rs`; the shared grid in `common/`.

mod common;

use common::*;

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
    // ... and the packets are their hex ids, not arrays of 32 numbers.
    assert_eq!(
        json["undeleted"][down.to_string()][0].as_str(),
        Some(forgot.undeleted[&down][0].to_string().as_str())
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
    // One pending backup: only the dead target's packets moved.
    assert_eq!(report.plans, 1);
    assert!(report.moved_packets > 0);
    assert!(!report.targets.contains(&dead));
    assert_eq!(report.failed_targets.len(), 1);
    assert_eq!(report.failed_targets[0].target, dead);
    assert_eq!(report.failed_targets[0].held_packets, 0);
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

/// A volunteer leaves mid-backup, after parts were handed in: the packets it
/// receipted stay recorded on it (repair's to rebuild after the commit),
/// the ones of the part in flight move, later parts avoid it, and the
/// snapshot restores without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_lost_after_earlier_parts_keeps_their_packets_and_the_rest_moves() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    let lost = g.target_ids[1];
    g.targets.go_down_after(&lost, 3);
    // A small outbox: the backup goes in many parts.
    let opts = GridBackupOptions {
        staging_limit: 300_000,
        ..options(vec![root.clone()], "..")
    };
    let report = backup(&g, &src, &opts).await.unwrap();
    assert_eq!(report.plans, 1, "one pending backup throughout");
    assert!(report.moved_packets > 0, "{report:?}");
    let [failed] = report.failed_targets.as_slice() else {
        panic!("one failed target: {:?}", report.failed_targets);
    };
    assert_eq!(failed.target, lost);
    assert_eq!(
        failed.held_packets, 3,
        "the packets it stored before it left"
    );
    // The manager records those three where they are, and nothing else on it.
    let on_lost = {
        let m = g.manager.manager.lock().unwrap();
        m.state()
            .chunks
            .values()
            .flat_map(|c| &c.packets)
            .filter(|p| p.target == lost)
            .count()
    };
    assert_eq!(on_lost, 3);
    assert_eq!(g.targets.targets.lock().unwrap()[&lost].packets.len(), 3);
    let dest = data.path().join("restored");
    restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("home"), 20),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_failing_briefly_is_tried_again_not_planned_around() {
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("home");
    tree(&root);
    // Its first puts are refused (a restart, a timeout), then it is back.
    let flaky = g.target_ids[1];
    g.targets.fail_puts(&flaky, 3);
    let report = backup(&g, &src, &options(vec![root.clone()], ".."))
        .await
        .unwrap();
    assert_eq!(report.plans, 1, "no re-plan around a target that came back");
    assert!(report.targets.contains(&flaky), "{:?}", report.targets);
    assert_eq!(
        g.targets.targets.lock().unwrap()[&flaky].failing_puts,
        0,
        "its refusals were met"
    );
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
        let mut sequence = strew_coordinator::seal::Sequence::from_bytes(&plain).unwrap();
        // The sealed part is the header; the stripes are the snapshot's
        // chunk records, which the attacker reads too.
        if sequence.stripes.is_empty() {
            sequence.stripes = snapshot
                .chunks
                .iter()
                .map(|key| {
                    let copy = &state.chunks[key];
                    strew_coordinator::seal::SequenceStripe {
                        data_id: copy.data_id,
                        packets: copy
                            .packets
                            .iter()
                            .map(|p| strew_coordinator::seal::SequenceEntry {
                                packet_id: p.packet_id,
                                size: p.size,
                                targets: vec![p.target],
                                generation: p.generation,
                            })
                            .collect(),
                    }
                })
                .collect();
        }
        sequences.push(sequence);
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
    for chunk in guess.manifest.chunks() {
        let chunk = chunk.unwrap();
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
