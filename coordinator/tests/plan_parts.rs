//! Bounded plans (SPEC R10/R12): a plan names at most `MAX_PLAN_CHUNKS`
//! chunks and `MAX_PLAN_PACKETS` packets, the largest one allowed becomes
//! a raft entry under `MAX_ENTRY_BYTES`, and a larger backup is planned
//! part by part into one pending backup that only its commit makes a
//! snapshot.

mod common;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::{MAX_PLAN_CHUNKS, MAX_PLAN_PACKETS, check_entry};
use strew_coordinator::{
    ApplyError, BackupParams, ChunkPlan, CommitRequest, Compression, ConvergenceScope, DataId,
    Encryption, GeoPoint, GroupKey, MAX_ENTRY_BYTES, Manager, ManagerConfig, ManagerError, NodeId,
    NodeProfile, PacketId, PacketSpec, PlanRequest, Redundancy, StoreReceipt,
};

const GIB: u64 = 1 << 30;

fn secret(n: u8) -> x25519_dalek::StaticSecret {
    x25519_dalek::StaticSecret::from([n.wrapping_add(100); 32])
}

fn profile(n: u8, lat: f64, lon: f64) -> NodeProfile {
    let id = NodeId(SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes());
    let mut p = NodeProfile::new(id, GeoPoint::new(lat, lon).expect("location"), 50 * GIB, 0);
    p.x25519_public = x25519_dalek::PublicKey::from(&secret(n)).to_bytes();
    p
}

/// 24 targets over Europe and two sources; any distance suits the plans.
fn manager() -> (Manager, NodeProfile, NodeProfile) {
    let mut m = common::europe(profile);
    let (paris, lyon) = (profile(1, 48.85, 2.35), profile(2, 45.76, 4.84));
    m.join(paris.clone(), None, 1).expect("join");
    m.join(lyon.clone(), None, 1).expect("join");
    (m, paris, lyon)
}

fn params(k: u8, m: u8) -> BackupParams {
    BackupParams {
        backup_distance: "..".parse().expect("range"),
        spread: "..".parse().expect("range"),
        redundancy: Redundancy::Erasure { k, m },
        compression: Compression::Zstd { level: 3 },
        encryption: Encryption {
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
        },
        sync_interval_secs: None,
    }
}

fn chunk(name: &str, width: u8, size: u64) -> ChunkPlan {
    ChunkPlan {
        data_id: DataId(*blake3::hash(name.as_bytes()).as_bytes()),
        packets: (0..width)
            .map(|j| PacketSpec {
                packet_id: PacketId::of(&[name.as_bytes(), &[j]].concat()),
                size,
            })
            .collect(),
    }
}

fn request(source: &NodeProfile, names: &[String], p: &BackupParams) -> PlanRequest {
    let width = p.redundancy.width() as u8;
    PlanRequest {
        source: source.node_id,
        set: "home".into(),
        location: source.location,
        params: p.clone(),
        chunks: names.iter().map(|n| chunk(n, width, 4096)).collect(),
        exclude: Vec::new(),
        extend: None,
    }
}

/// A commit of `chunks` naming no receipts (they were handed in before).
fn commit_of(pending_id: u64, source: &NodeProfile, chunks: Vec<DataId>) -> CommitRequest {
    CommitRequest {
        pending_id,
        source: source.node_id,
        receipts: Vec::new(),
        manifest: DataId([9; 32]),
        manifest_chunks: Vec::new(),
        chunks,
        bytes: 1000,
    }
}

fn names(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}/{i}")).collect()
}

#[test]
fn an_oversized_plan_is_refused_before_anything_is_proposed() {
    let (m, paris, _) = manager();
    let mut rng = StdRng::seed_from_u64(1);
    let next = m.state().next_pending;
    let too_many = request(&paris, &names("a", MAX_PLAN_CHUNKS + 1), &params(2, 1));
    assert!(matches!(
        m.decide_plan(&too_many, 10, &mut rng),
        Err(ManagerError::PlanTooLarge { chunks, .. }) if chunks == MAX_PLAN_CHUNKS + 1
    ));
    // Few chunks, but more packets than a plan may name (width 12 × 400).
    let wide = request(
        &paris,
        &names("b", MAX_PLAN_PACKETS / 12 + 60),
        &params(8, 4),
    );
    assert!(matches!(
        m.decide_plan(&wide, 10, &mut rng),
        Err(ManagerError::PlanTooLarge { packets, .. }) if packets > MAX_PLAN_PACKETS
    ));
    assert_eq!(m.state().next_pending, next, "nothing was proposed");
}

#[test]
fn the_largest_plan_allowed_is_one_raft_entry_under_the_bound() {
    let (m, paris, _) = manager();
    let mut rng = StdRng::seed_from_u64(2);
    // As many packets as a plan may name, in as many chunks as it may name.
    for (k, extra) in [(2u8, 2u8), (6, 2), (10, 6)] {
        let p = params(k, extra);
        let width = p.redundancy.width();
        let count = MAX_PLAN_CHUNKS.min(MAX_PLAN_PACKETS / width);
        let req = request(&paris, &names(&format!("max{k}"), count), &p);
        let (command, _) = m.decide_plan(&req, 10, &mut rng).expect("plans");
        let bytes = check_entry(&command).expect("under the bound");
        assert!(bytes <= MAX_ENTRY_BYTES, "{bytes}");
        eprintln!(
            "width {width}: {count} chunks, entry {bytes} bytes, {} bytes a chunk, request {} bytes",
            bytes / count,
            strew_coordinator::cbor::encode(&req)
                .expect("encodes")
                .len()
        );
    }
}

#[test]
fn a_backup_planned_in_parts_is_one_pending_backup_until_its_commit() {
    let (mut m, paris, lyon) = manager();
    let mut rng = StdRng::seed_from_u64(3);
    let p = params(2, 1);
    let first = names("part1", 40);
    let second = names("part2", 30);
    let one = m
        .plan_backup(request(&paris, &first, &p), 10, &mut rng)
        .expect("first part");
    let mut extend = request(&paris, &second, &p);
    extend.extend = Some(one.pending_id);
    // Another source may not extend Paris's backup, nor anyone an unknown one.
    let mut foreign = request(&lyon, &names("lyon", 2), &p);
    foreign.extend = Some(one.pending_id);
    assert!(m.plan_backup(foreign, 11, &mut rng).is_err());
    let mut unknown = extend.clone();
    unknown.extend = Some(one.pending_id + 100);
    assert!(matches!(
        m.plan_backup(unknown, 11, &mut rng),
        Err(ManagerError::Apply(ApplyError::UnknownPending(_)))
    ));
    let two = m
        .plan_backup(extend.clone(), 5_000, &mut rng)
        .expect("second part");
    assert_eq!(two.pending_id, one.pending_id, "the same pending backup");
    assert!(two.expires_at >= one.expires_at, "the deadline is renewed");
    // Naming a chunk a part already planned is refused.
    assert!(m.plan_backup(extend, 5_001, &mut rng).is_err());
    let pending = &m.state().pending[&one.pending_id];
    assert_eq!(pending.new_chunks.len(), 70);
    // The pending bytes kept by the index are the parts' packets, and the
    // same once the index is rebuilt from the state (loaded, installed).
    assert_eq!(pending.stored_bytes(), 70 * 3 * 4096);
    assert_eq!(
        m.state().pending_stored_bytes(pending),
        pending.stored_bytes()
    );
    let mut reloaded = m.state().clone();
    reloaded.reindex();
    assert_eq!(
        reloaded.pending_stored_bytes(&reloaded.pending[&one.pending_id]),
        pending.stored_bytes()
    );
    assert_eq!(
        m.state().source_commitment(&paris.node_id),
        m.state().clients[&paris.node_id].source_stored_bytes + pending.stored_bytes()
    );
    assert!(
        m.state().snapshots.is_empty(),
        "a half-done backup is no snapshot"
    );
    let receipts: Vec<StoreReceipt> = [&one, &two]
        .iter()
        .flat_map(|d| common::receipts(&d.uploads, paris.node_id))
        .collect();
    let chunks: Vec<DataId> = first
        .iter()
        .chain(&second)
        .map(|n| chunk(n, 3, 4096).data_id)
        .collect();
    let committed = m
        .commit_backup(
            CommitRequest {
                pending_id: one.pending_id,
                source: paris.node_id,
                receipts,
                manifest: DataId([9; 32]),
                manifest_chunks: Vec::new(),
                chunks: chunks.clone(),
                bytes: 1000,
            },
            6_000,
            &mut rng,
        )
        .expect("commit");
    let snapshot = &m.state().snapshots[&committed.snapshot];
    assert_eq!(snapshot.chunks.len(), chunks.len());
    assert!(m.state().pending.is_empty());
}

#[test]
fn an_expired_backup_in_parts_releases_every_parts_reservations() {
    let (mut m, paris, _) = manager();
    let mut rng = StdRng::seed_from_u64(4);
    let p = params(2, 1);
    let one = m
        .plan_backup(request(&paris, &names("x", 20), &p), 10, &mut rng)
        .expect("first part");
    let mut extend = request(&paris, &names("y", 20), &p);
    extend.extend = Some(one.pending_id);
    let two = m.plan_backup(extend, 20, &mut rng).expect("second part");
    let reserved = |m: &Manager| -> u64 { m.state().targets.values().map(|t| t.reserved).sum() };
    assert_eq!(reserved(&m), 40 * 3 * 4096);
    m.expire_pending(two.expires_at + 1).expect("expires");
    assert_eq!(reserved(&m), 0);
    assert!(m.state().pending.is_empty());
}

#[test]
fn receipts_handed_in_page_by_page_let_a_commit_carry_none() {
    use strew_coordinator::manager::MAX_RECEIPTS_PER_CALL;
    let (mut m, paris, lyon) = manager();
    let mut rng = StdRng::seed_from_u64(5);
    let p = params(2, 1);
    let all = names("paged", 30);
    let plan = m
        .plan_backup(request(&paris, &all, &p), 10, &mut rng)
        .expect("plans");
    let receipts = common::receipts(&plan.uploads, paris.node_id);
    assert_eq!(receipts.len(), 90);
    let commit = |receipts: Vec<StoreReceipt>| CommitRequest {
        pending_id: plan.pending_id,
        source: paris.node_id,
        receipts,
        manifest: DataId([9; 32]),
        manifest_chunks: Vec::new(),
        chunks: all.iter().map(|n| chunk(n, 3, 4096).data_id).collect(),
        bytes: 1000,
    };
    // Another source may not hand in Paris's receipts; a page over the
    // bound and a forged receipt are refused; nothing is recorded.
    assert!(
        m.record_receipts(lyon.node_id, plan.pending_id, &receipts[..10])
            .is_err()
    );
    let too_many = vec![receipts[0].clone(); MAX_RECEIPTS_PER_CALL + 1];
    assert!(
        m.record_receipts(paris.node_id, plan.pending_id, &too_many)
            .is_err()
    );
    let mut forged = receipts[0].clone();
    forged.size += 1;
    assert!(matches!(
        m.record_receipts(paris.node_id, plan.pending_id, &[forged]),
        Err(ManagerError::BadReceipt { .. })
    ));
    assert!(m.state().pending[&plan.pending_id].receipted.is_empty());
    // Two pages of 60 (a repeat is harmless), then a commit with only the rest.
    m.record_receipts(paris.node_id, plan.pending_id, &receipts[..40])
        .expect("page");
    m.record_receipts(paris.node_id, plan.pending_id, &receipts[30..60])
        .expect("page");
    assert_eq!(m.state().pending[&plan.pending_id].receipted.len(), 60);
    assert!(matches!(
        m.commit_backup(commit(Vec::new()), 20, &mut rng),
        Err(ManagerError::MissingUploads { missing: 30, .. })
    ));
    m.record_receipts(paris.node_id, plan.pending_id, &receipts[60..])
        .expect("page");
    // What the commit's one raft entry costs per chunk (the part not paged
    // yet): the sealed sequence and the stored copies, width 3.
    let request = commit(Vec::new());
    let request_bytes = strew_coordinator::cbor::encode(&request)
        .expect("encodes")
        .len();
    let Ok(strew_coordinator::CommitStep::Propose { command, .. }) =
        m.decide_commit(&request, 30, &mut rng)
    else {
        panic!("the commit is proposed");
    };
    let entry = check_entry(&command).expect("a small commit fits");
    eprintln!(
        "commit of {} chunks at width 3: request {request_bytes} bytes ({} a chunk), entry {entry} bytes ({} a chunk)",
        all.len(),
        request_bytes / all.len(),
        entry / all.len()
    );
    assert!(
        entry / all.len() < 2048,
        "{entry} bytes for {} chunks",
        all.len()
    );
    let done = m
        .commit_backup(commit(Vec::new()), 30, &mut rng)
        .expect("commits with every receipt recorded");
    assert_eq!(m.state().snapshots[&done.snapshot].chunks.len(), all.len());
}

#[test]
fn a_sequence_is_fetched_in_pages_that_add_up_to_the_whole() {
    use strew_coordinator::manager::MAX_SEQUENCE_PAGE;
    use strew_coordinator::{Sequence, open_as_recipient};
    let (mut m, paris, lyon) = manager();
    let mut rng = StdRng::seed_from_u64(6);
    let p = params(2, 1);
    let all = names("seq", 50);
    let plan = m
        .plan_backup(request(&paris, &all, &p), 10, &mut rng)
        .expect("plans");
    let done = m
        .commit_backup(
            CommitRequest {
                pending_id: plan.pending_id,
                source: paris.node_id,
                receipts: common::receipts(&plan.uploads, paris.node_id),
                manifest: DataId([9; 32]),
                manifest_chunks: Vec::new(),
                chunks: all.iter().map(|n| chunk(n, 3, 4096).data_id).collect(),
                bytes: 1000,
            },
            20,
            &mut rng,
        )
        .expect("commits");
    let open = |sealed| -> Sequence {
        let plain = open_as_recipient(&secret(1), done.snapshot.as_bytes(), &sealed)
            .expect("sealed to paris");
        Sequence::from_bytes(&plain).expect("a sequence")
    };
    let whole = open(
        m.fetch_sequence(paris.node_id, done.snapshot, &mut rng)
            .expect("whole"),
    );
    let mut stripes = Vec::new();
    let mut from = 0u64;
    loop {
        let page = m
            .fetch_sequence_page(paris.node_id, done.snapshot, from, 16, &mut rng)
            .expect("page");
        assert_eq!(page.total, 50);
        let seq = open(page.sealed);
        assert_eq!(
            (seq.snapshot, seq.manifest, &seq.manifest_chunks),
            (whole.snapshot, whole.manifest, &whole.manifest_chunks)
        );
        assert!(seq.stripes.len() <= 16);
        if seq.stripes.is_empty() {
            break;
        }
        from += seq.stripes.len() as u64;
        stripes.extend(seq.stripes);
    }
    assert_eq!(stripes, whole.stripes);
    // Past the end: an empty page; over the bound, none, or another's: refused.
    let past = m
        .fetch_sequence_page(paris.node_id, done.snapshot, 1_000, 16, &mut rng)
        .expect("past the end");
    assert!(open(past.sealed).stripes.is_empty());
    for count in [0, MAX_SEQUENCE_PAGE as u32 + 1] {
        assert!(
            m.fetch_sequence_page(paris.node_id, done.snapshot, 0, count, &mut rng)
                .is_err()
        );
    }
    assert!(matches!(
        m.fetch_sequence_page(lyon.node_id, done.snapshot, 0, 16, &mut rng),
        Err(ManagerError::NotYours { .. })
    ));
}

#[test]
fn a_whole_sequence_over_one_page_is_refused_and_its_pages_serve_it() {
    use strew_coordinator::manager::MAX_SEQUENCE_PAGE;
    let (mut m, paris, _) = manager();
    let mut rng = StdRng::seed_from_u64(7);
    let p = params(2, 1);
    let all = names("big", MAX_SEQUENCE_PAGE + 1);
    let pending_id = planned_in_parts(&mut m, &paris, &all, &p);
    let done = m
        .commit_backup(
            commit_of(
                pending_id,
                &paris,
                all.iter().map(|n| chunk(n, 3, 4096).data_id).collect(),
            ),
            20,
            &mut rng,
        )
        .expect("commits");
    assert!(matches!(
        m.fetch_sequence(paris.node_id, done.snapshot, &mut rng),
        Err(ManagerError::Invalid(_))
    ));
    let last = m
        .fetch_sequence_page(
            paris.node_id,
            done.snapshot,
            MAX_SEQUENCE_PAGE as u64,
            MAX_SEQUENCE_PAGE as u32,
            &mut rng,
        )
        .expect("the last page");
    assert_eq!(last.total, MAX_SEQUENCE_PAGE as u64 + 1);
}

/// Plans `all` in parts for Paris and records every receipt; the pending id.
fn planned_in_parts(m: &mut Manager, paris: &NodeProfile, all: &[String], p: &BackupParams) -> u64 {
    let mut rng = StdRng::seed_from_u64(8);
    let mut pending = None;
    let mut receipts = Vec::new();
    let width = p.redundancy.width();
    for part in all.chunks((MAX_PLAN_PACKETS / width).min(MAX_PLAN_CHUNKS)) {
        let mut req = request(paris, part, p);
        req.extend = pending;
        let plan = m.plan_backup(req, 10, &mut rng).expect("plans a part");
        pending = Some(plan.pending_id);
        receipts.extend(common::receipts(&plan.uploads, paris.node_id));
    }
    let pending_id = pending.expect("planned");
    for page in receipts.chunks(4096) {
        m.record_receipts(paris.node_id, pending_id, page)
            .expect("a receipts page");
    }
    pending_id
}

#[test]
fn a_commit_in_pages_keeps_every_entry_bounded_and_records_what_one_commit_would() {
    use strew_coordinator::manager::{MAX_ORDER_PAGE, OrderStep};
    use strew_coordinator::{CommitOrderRequest, Sequence, open_as_recipient};
    let p = params(2, 1);
    let all = names("order", 3 * MAX_ORDER_PAGE + 7);
    let ids: Vec<DataId> = all.iter().map(|n| chunk(n, 3, 4096).data_id).collect();
    let commit = |pending_id, paris: &NodeProfile, chunks: Vec<DataId>| CommitRequest {
        pending_id,
        source: paris.node_id,
        receipts: Vec::new(),
        manifest: DataId([9; 32]),
        manifest_chunks: vec![ids[0]],
        chunks,
        bytes: 1000,
    };
    // The same backup committed at once by one manager, in pages by another.
    let (mut one, paris, _) = manager();
    let whole_id = planned_in_parts(&mut one, &paris, &all, &p);
    let whole = one
        .commit_backup(
            commit(whole_id, &paris, ids.clone()),
            20,
            &mut StdRng::seed_from_u64(9),
        )
        .expect("commits at once");

    let (mut m, paris, lyon) = manager();
    let pending_id = planned_in_parts(&mut m, &paris, &all, &p);
    let page = |first: usize, chunks: &[DataId]| CommitOrderRequest {
        pending_id,
        source: paris.node_id,
        first: first as u64,
        chunks: chunks.to_vec(),
    };
    // Refused, recording nothing: another source's page, a page that does
    // not start where the order ends, an over-long or empty page, a chunk
    // twice, a chunk the backup never planned.
    let mut lyons = page(0, &ids[..4]);
    lyons.source = lyon.node_id;
    assert!(m.commit_order(&lyons).is_err());
    assert!(m.commit_order(&page(1, &ids[1..5])).is_err());
    assert!(
        m.commit_order(&page(0, &ids[..MAX_ORDER_PAGE + 1]))
            .is_err()
    );
    assert!(m.commit_order(&page(0, &[])).is_err());
    assert!(m.commit_order(&page(0, &[ids[0], ids[1], ids[0]])).is_err());
    assert!(m.commit_order(&page(0, &[DataId([1; 32])])).is_err());
    assert!(m.state().pending[&pending_id].order.is_empty());

    // A first page, then the order started afresh (a resumed commit): only
    // the second start counts.
    m.commit_order(&page(0, &ids[MAX_ORDER_PAGE..2 * MAX_ORDER_PAGE]))
        .expect("a stale first page");
    let mut largest = 0;
    for (n, chunks) in ids.chunks(MAX_ORDER_PAGE).enumerate() {
        let request = page(n * MAX_ORDER_PAGE, chunks);
        let Ok(OrderStep::Propose(command)) = m.decide_commit_order(&request) else {
            panic!("page {n} is proposed");
        };
        largest = largest.max(check_entry(&command).expect("a page fits one entry"));
        let next = m.commit_order(&request).expect("a page").next;
        assert_eq!(next as usize, n * MAX_ORDER_PAGE + chunks.len());
        // A retried page is answered, not applied again.
        assert_eq!(m.commit_order(&request).expect("a retry").next, next);
    }
    // Once the order is in pages, the commit names no chunks and carries no receipts.
    let mut rng = StdRng::seed_from_u64(9);
    assert!(
        m.commit_backup(commit(pending_id, &paris, ids[..1].to_vec()), 20, &mut rng)
            .is_err()
    );
    let request = commit(pending_id, &paris, Vec::new());
    let Ok(strew_coordinator::CommitStep::Propose { command, .. }) =
        m.decide_commit(&request, 20, &mut rng)
    else {
        panic!("the paged commit is proposed");
    };
    let entry = check_entry(&command).expect("the commit fits");
    eprintln!(
        "{} chunks in {} pages: largest page entry {largest} bytes, commit entry {entry} bytes",
        ids.len(),
        ids.len().div_ceil(MAX_ORDER_PAGE)
    );
    assert!(entry < 4096, "a paged commit's entry is {entry} bytes");
    let paged = m
        .commit_backup(request, 20, &mut rng)
        .expect("commits in pages");

    // The same snapshot, chunk records and sequence as the one-shot commit.
    let (a, b) = (
        &one.state().snapshots[&whole.snapshot],
        &m.state().snapshots[&paged.snapshot],
    );
    assert_eq!(a.chunks, b.chunks);
    assert_eq!(b.chunks.len(), ids.len());
    for key in &a.chunks {
        assert_eq!(one.state().chunks[key], m.state().chunks[key]);
    }
    assert!(m.state().pending.is_empty());
    let open = |m: &Manager, snapshot: strew_coordinator::SnapshotId, from: u64| -> Sequence {
        let page = m
            .fetch_sequence_page(
                paris.node_id,
                snapshot,
                from,
                1024,
                &mut StdRng::seed_from_u64(1),
            )
            .expect("a sequence page");
        let plain =
            open_as_recipient(&secret(1), snapshot.as_bytes(), &page.sealed).expect("opens");
        Sequence::from_bytes(&plain).expect("a sequence")
    };
    for from in [0, 1024] {
        let (x, y) = (
            open(&one, whole.snapshot, from),
            open(&m, paged.snapshot, from),
        );
        assert_eq!(
            (x.manifest, &x.manifest_chunks, &x.stripes),
            (y.manifest, &y.manifest_chunks, &y.stripes)
        );
        assert!(!x.stripes.is_empty());
    }
}

#[test]
fn the_largest_page_of_a_commits_order_at_width_sixteen_fits_one_entry() {
    use strew_coordinator::CommitOrderRequest;
    use strew_coordinator::manager::{MAX_ORDER_PAGE, OrderStep};
    let (mut m, paris, _) = manager();
    let p = params(10, 6);
    let page_len = strew_coordinator::manager::order_page_len(16);
    assert!(page_len < MAX_ORDER_PAGE);
    let all = names("wide", page_len + 1);
    let pending_id = planned_in_parts(&mut m, &paris, &all, &p);
    let request = CommitOrderRequest {
        pending_id,
        source: paris.node_id,
        first: 0,
        chunks: all.iter().map(|n| chunk(n, 16, 4096).data_id).collect(),
    };
    assert!(
        m.decide_commit_order(&request).is_err(),
        "one chunk too many"
    );
    let mut request = request;
    request.chunks.pop();
    let Ok(OrderStep::Propose(command)) = m.decide_commit_order(&request) else {
        panic!("the page is proposed");
    };
    let bytes = check_entry(&command).expect("fits one entry");
    eprintln!("a page of {page_len} new chunks at width 16: {bytes} bytes");
    assert!(bytes <= MAX_ENTRY_BYTES);
}

#[test]
fn a_listing_comes_in_pages_that_add_up_to_the_whole() {
    use strew_coordinator::manager::MAX_LIST_PAGE;
    let (mut m, paris, lyon) = manager();
    let mut rng = StdRng::seed_from_u64(10);
    let p = params(2, 1);
    for n in 0..5u64 {
        let all = names(&format!("list{n}"), 3);
        let plan = m
            .plan_backup(request(&paris, &all, &p), 10 + n, &mut rng)
            .expect("plans");
        m.commit_backup(
            CommitRequest {
                pending_id: plan.pending_id,
                source: paris.node_id,
                receipts: common::receipts(&plan.uploads, paris.node_id),
                manifest: DataId([n as u8; 32]),
                manifest_chunks: Vec::new(),
                chunks: all.iter().map(|c| chunk(c, 3, 4096).data_id).collect(),
                bytes: 1000,
            },
            20 + n,
            &mut rng,
        )
        .expect("commits");
    }
    let whole = m.list_snapshots(&paris.node_id, None);
    assert_eq!(whole.len(), 5);
    let mut paged = Vec::new();
    loop {
        let (page, total) = m
            .list_snapshots_page(&paris.node_id, None, paged.len() as u64, 2)
            .expect("a page");
        assert_eq!(total, 5);
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        paged.extend(page);
    }
    assert_eq!(paged, whole);
    // Another source sees none; a page of 0 or over the bound is refused.
    assert_eq!(
        m.list_snapshots_page(&lyon.node_id, None, 0, 2)
            .expect("empty"),
        (Vec::new(), 0)
    );
    for count in [0, MAX_LIST_PAGE as u32 + 1] {
        assert!(
            m.list_snapshots_page(&paris.node_id, None, 0, count)
                .is_err()
        );
    }
}

/// The pending index is derived: a state read back from its encoding (no
/// index) answers every lookup as the live one does, applies receipts on
/// its own (indexing itself first), and a manager built over it (indexed
/// at once) takes the backup's next part and commits it.
#[test]
fn a_pending_backup_read_back_without_its_index_answers_as_the_live_one() {
    use strew_coordinator::{ManagerState, cbor};
    let (mut m, paris, _) = manager();
    let p = params(2, 1);
    let all = names("index", 2 * MAX_PLAN_CHUNKS + 10);
    let pending_id = planned_in_parts(&mut m, &paris, &all[..MAX_PLAN_CHUNKS + 5], &p);
    let live = m.state();
    let bytes = cbor::encode(live).expect("encodes");
    let read: ManagerState = cbor::decode(&bytes).expect("decodes");
    assert_eq!(&read, live);
    let pending = &live.pending[&pending_id];
    for c in &pending.new_chunks {
        assert_eq!(
            read.planned_chunk(pending_id, &c.data_id),
            live.planned_chunk(pending_id, &c.data_id)
        );
        assert!(live.planned_chunk(pending_id, &c.data_id).is_some());
        assert_eq!(
            read.key_pending(&c.record_key()),
            live.key_pending(&c.record_key())
        );
        for q in &c.packets {
            assert_eq!(
                read.planned_packet(pending_id, &q.packet_id, &q.target),
                live.planned_packet(pending_id, &q.packet_id, &q.target)
            );
        }
    }
    let other = chunk("not planned", 3, 4096);
    assert!(live.planned_chunk(pending_id, &other.data_id).is_none());
    assert!(!live.key_pending(&other.data_id));

    // A receipt page applied straight to the state read back.
    let mut state = read.clone();
    let page = m
        .decide_receipts(
            paris.node_id,
            pending_id,
            &common::receipts(&pending.new_chunks[..1], paris.node_id),
        )
        .expect("a receipts page");
    state.apply(&page).expect("applies without an index");

    // A manager over the state read back takes the next part and commits.
    let mut back = Manager::from_state(
        read,
        SigningKey::from_bytes(&[200; 32]),
        GroupKey([7; 32]),
        ManagerConfig::default(),
    );
    let mut rng = StdRng::seed_from_u64(4);
    let mut rest = request(&paris, &all[MAX_PLAN_CHUNKS + 5..2 * MAX_PLAN_CHUNKS], &p);
    rest.extend = Some(pending_id);
    let part = back.plan_backup(rest, 12, &mut rng).expect("the next part");
    let mut again = request(&paris, &all[..1], &p);
    again.extend = Some(pending_id);
    assert!(
        back.plan_backup(again, 13, &mut rng).is_err(),
        "a chunk planned before the state was read back is still known"
    );
    back.record_receipts(
        paris.node_id,
        pending_id,
        &common::receipts(&part.uploads, paris.node_id),
    )
    .expect("the new part's receipts");
    let ids: Vec<DataId> = all[..2 * MAX_PLAN_CHUNKS]
        .iter()
        .map(|n| chunk(n, 3, 4096).data_id)
        .collect();
    // The order in pages of 512; a state read back halfway answers every
    // lookup of the order so far as the live one does.
    let page = |first: usize, chunks: &[DataId]| strew_coordinator::CommitOrderRequest {
        pending_id,
        source: paris.node_id,
        first: first as u64,
        chunks: chunks.to_vec(),
    };
    let half = ids.len() / 2;
    for first in (0..half).step_by(512) {
        back.commit_order(&page(first, &ids[first..first + 512]))
            .expect("an order page");
    }
    let live = back.state();
    let mid: ManagerState = cbor::decode(&cbor::encode(live).expect("encodes")).expect("decodes");
    let pending = &live.pending[&pending_id];
    assert_eq!(pending.order.len(), half);
    for id in &ids {
        assert_eq!(
            mid.ordered_copy(pending_id, id),
            live.ordered_copy(pending_id, id)
        );
        let key = live.ordered_copy(pending_id, id).unwrap_or(*id);
        assert_eq!(
            mid.in_order(pending_id, &key),
            live.in_order(pending_id, &key)
        );
        assert_eq!(
            mid.ordered_copy_key(pending_id, &key),
            live.ordered_copy_key(pending_id, &key)
        );
    }
    assert!(pending.order.iter().all(|k| live.in_order(pending_id, k)));
    assert!(!live.in_order(pending_id, &ids[half]));
    // A later page naming a chunk an earlier page holds is refused.
    assert!(back.commit_order(&page(half, &ids[..1])).is_err());
    for first in (half..ids.len()).step_by(512) {
        back.commit_order(&page(first, &ids[first..first + 512]))
            .expect("an order page");
    }
    let committed = back
        .commit_backup(commit_of(pending_id, &paris, Vec::new()), 20, &mut rng)
        .expect("commits in pages");
    assert_eq!(
        back.state().snapshots[&committed.snapshot].chunks.len(),
        ids.len()
    );
    assert!(back.state().pending.is_empty());
}

/// A forget freeing more packets than one answer carries: the answer holds
/// the first `MAX_DELETIONS_ANSWERED` (with their tickets), every freed
/// packet is queued for the leader's collection (the overflow due at once,
/// the answered ones after `COLLECT_HOLD`), a `Collected` command removes
/// entries, and a packet stored again on its target leaves the queue, so a
/// collection never deletes a live copy.
#[test]
fn a_forget_larger_than_one_answer_queues_the_rest_for_collection() {
    use strew_coordinator::{COLLECT_HOLD, Command, MAX_COLLECT_BATCH, MAX_DELETIONS_ANSWERED};
    let (mut m, paris, _) = manager();
    let p = params(2, 1);
    let all = names("big", MAX_DELETIONS_ANSWERED / 3 + 600);
    let packets = all.len() * 3;
    let ids: Vec<DataId> = all.iter().map(|n| chunk(n, 3, 4096).data_id).collect();
    let pending_id = planned_in_parts(&mut m, &paris, &all, &p);
    let mut rng = StdRng::seed_from_u64(21);
    let committed = m
        .commit_backup(commit_of(pending_id, &paris, ids), 20, &mut rng)
        .expect("commits");
    assert!(m.state().garbage.is_empty(), "a clean commit frees nothing");

    let at = 1_000;
    let answer = m
        .forget(paris.node_id, committed.snapshot, at)
        .expect("forgets");
    let answered: usize = answer.deletions.values().map(Vec::len).sum();
    assert_eq!(answered, MAX_DELETIONS_ANSWERED);
    assert!(answer.more_collected_by_leader);
    let ticketed: usize = answer.delete_tickets.iter().map(|t| t.entries.len()).sum();
    assert_eq!(ticketed, answered, "one ticket entry per answered deletion");
    // The answer was lost and the source retries: done already, the leader
    // collects; a node that never had the snapshot is still refused.
    let retried = m
        .forget(paris.node_id, committed.snapshot, at + 1)
        .expect("a retried forget is done");
    assert!(retried.deletions.is_empty() && retried.more_collected_by_leader);
    let lyon = m
        .state()
        .clients
        .keys()
        .copied()
        .find(|n| *n != paris.node_id);
    if let Some(other) = lyon {
        assert!(m.forget(other, committed.snapshot, at + 2).is_err());
    }
    // The largest answer fits the manager protocol's 4 MiB message bound.
    let bytes = strew_coordinator::cbor::encode(&answer)
        .expect("encodes")
        .len();
    assert!(bytes < 3 << 20, "a full forget answer takes {bytes} bytes");
    eprintln!("a forget answer of {answered} deletions: {bytes} bytes");
    assert_eq!(
        m.state().garbage.len(),
        packets,
        "every freed packet is queued"
    );

    // Due now: only what the answer could not carry; after the hold, all.
    let now = m.state().due_garbage(at, usize::MAX, |_| false);
    let count =
        |d: &strew_coordinator::DueGarbage| -> usize { d.deliver.values().map(Vec::len).sum() };
    assert_eq!(count(&now), packets - MAX_DELETIONS_ANSWERED);
    assert!(now.stale.is_empty());
    let later = m
        .state()
        .due_garbage(at + COLLECT_HOLD, usize::MAX, |_| false);
    assert_eq!(count(&later), packets);
    // A skipped target's entries wait; a limit bounds a pass.
    let skipped = *now.deliver.keys().next().expect("a target");
    let without = m.state().due_garbage(at, usize::MAX, |t| *t == skipped);
    assert!(!without.deliver.contains_key(&skipped));
    assert_eq!(count(&m.state().due_garbage(at, 100, |_| false)), 100);

    // A command collecting too much at once is refused; batches apply.
    let overflow: Vec<_> = now
        .deliver
        .iter()
        .flat_map(|(t, list)| list.iter().map(move |d| (*t, d.packet_id)))
        .collect();
    let too_many = vec![overflow[0]; MAX_COLLECT_BATCH + 1];
    assert!(m.apply(&Command::Collected { entries: too_many }).is_err());
    for batch in overflow.chunks(MAX_COLLECT_BATCH) {
        m.apply(&Command::Collected {
            entries: batch.to_vec(),
        })
        .expect("collected");
    }
    assert_eq!(m.state().garbage.len(), MAX_DELETIONS_ANSWERED);
    assert_eq!(count(&m.state().due_garbage(at, usize::MAX, |_| false)), 0);

    // The same data backed up again: packets planned onto a target whose old
    // copy is still queued wait for the plan; once it commits, whatever it
    // stored again left the queue, and nothing queued is live.
    let queued_before = m.state().garbage.len();
    let again = planned_in_parts(&mut m, &paris, &all, &p);
    let waiting = m
        .state()
        .due_garbage(at + COLLECT_HOLD, usize::MAX, |_| false);
    assert!(
        count(&waiting) < queued_before,
        "some packets were planned onto the target still queued to delete them"
    );
    let ids: Vec<DataId> = all.iter().map(|n| chunk(n, 3, 4096).data_id).collect();
    m.commit_backup(commit_of(again, &paris, ids), 2_000, &mut rng)
        .expect("commits again");
    let state = m.state();
    assert!(state.garbage.len() < queued_before);
    for (target, packet) in state.garbage.keys() {
        assert!(
            !state.targets[target].packets.contains_key(packet),
            "a live packet is queued for deletion"
        );
    }
}

/// `strew check` through audits: a page of a snapshot's stripes becomes one
/// challenge per packet copy on the targets its chunk records name, each on
/// a chunk inside the packet, with the stripe's K; only the source may ask,
/// and a page is bounded.
#[test]
fn a_snapshot_audit_page_challenges_every_packet_of_its_stripes() {
    use strew_coordinator::audit::chunk_count;
    use strew_coordinator::manager::MAX_AUDIT_PAGE;
    let (mut m, paris, lyon) = manager();
    let p = params(2, 1);
    let all = names("audited", MAX_AUDIT_PAGE + 10);
    let ids: Vec<DataId> = all.iter().map(|n| chunk(n, 3, 4096).data_id).collect();
    let pending_id = planned_in_parts(&mut m, &paris, &all, &p);
    let mut rng = StdRng::seed_from_u64(31);
    let snapshot = m
        .commit_backup(commit_of(pending_id, &paris, ids.clone()), 20, &mut rng)
        .expect("commits")
        .snapshot;
    assert!(
        m.audit_snapshot_page(lyon.node_id, snapshot, 0, 8, &mut rng)
            .is_err(),
        "another node's snapshot"
    );
    for count in [0, MAX_AUDIT_PAGE as u32 + 1] {
        assert!(
            m.audit_snapshot_page(paris.node_id, snapshot, 0, count, &mut rng)
                .is_err()
        );
    }
    let mut seen = 0;
    let mut from = 0;
    loop {
        let (page, total) = m
            .audit_snapshot_page(
                paris.node_id,
                snapshot,
                from,
                MAX_AUDIT_PAGE as u32,
                &mut rng,
            )
            .expect("a page");
        assert_eq!(total as usize, all.len());
        if page.is_empty() {
            break;
        }
        for stripe in &page {
            assert_eq!(stripe.stripe, seen as u64, "stripes in order, none twice");
            assert_eq!(stripe.data_id, ids[stripe.stripe as usize]);
            assert_eq!(stripe.needed, 2);
            let record = m
                .state()
                .chunk_packets(&stripe.data_id)
                .expect("recorded")
                .to_vec();
            assert_eq!(stripe.challenges.len(), record.len());
            for (c, p) in stripe.challenges.iter().zip(&record) {
                assert_eq!(
                    (c.target, c.packet, c.size),
                    (p.target, p.packet_id, p.size)
                );
                assert!(c.chunk < chunk_count(p.size));
            }
            seen += 1;
        }
        from += page.len() as u64;
    }
    assert_eq!(seen, all.len(), "the pages cover every stripe once");
}
