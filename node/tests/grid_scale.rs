//! The source side of the grid at scale, in-process (see `grid_flow.rs`):
//! a backup larger than one plan, planned in parts and committed in pages;
//! a backup streaming through an outbox bounded by the staging limit; and
//! an interrupted backup that resumes without sending receipted packets
//! again.

mod common;

use common::*;

/// A backup of more chunks than one plan may name is planned in parts into
/// one pending backup (the manager's log says so), never shows a snapshot
/// before its commit, commits in pages of its chunk order, and restores
/// byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_larger_than_one_plan_is_planned_in_parts_and_restores() {
    use strew_coordinator::manager::MAX_PLAN_CHUNKS;
    let g = grid(1 << 30);
    let src = source(&g, 2, PARIS);
    let data = tempfile::tempdir().unwrap();
    let root = data.path().join("many");
    fs::create_dir_all(&root).unwrap();
    for i in 0..3u64 {
        fs::write(root.join(format!("f{i}.raw")), noise(520_000, 10 + i)).unwrap();
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
    // Its commit came in pages of the chunk order (none over one page).
    let pages = g
        .manager
        .order_pages
        .load(std::sync::atomic::Ordering::Relaxed) as usize;
    let page_len = strew_coordinator::manager::order_page_len(opts.params.redundancy.width());
    assert!(
        pages >= chunks.div_ceil(page_len),
        "{pages} pages for {chunks} chunks"
    );
    let dest = data.path().join("restored");
    g.manager.sequence_reads.lock().unwrap().clear();
    restore(&g, &src, &report, &dest).await;
    assert_eq!(
        diff_trees(&root, &dest.join("many"), 20),
        Vec::<String>::new()
    );
    // The restore read its sequence a page at a time: the first page, the
    // tail (the manifest's stripes), then every page once, in order; never
    // the whole sequence before starting.
    let reads = g.manager.sequence_reads.lock().unwrap().clone();
    let page = strew_coordinator::manager::MAX_SEQUENCE_PAGE as u64;
    let stripes = (report.stats.new_chunks + report.stats.manifest_chunks) as u64;
    let pages: Vec<u64> = (0..stripes.div_ceil(page)).map(|i| i * page).collect();
    assert!(pages.len() >= 3, "{stripes} stripes");
    let tail = stripes - report.stats.manifest_chunks;
    assert_eq!(reads[0], 0, "{reads:?}");
    assert_eq!(reads[1], tail, "the manifest's stripes next: {reads:?}");
    assert_eq!(&reads[2..], &pages[1..], "then each page once: {reads:?}");
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
    // ...which never held more than the limit and one stripe: a data
    // stripe (at most 16 KiB of chunk as 4+2 shares, plus framing) or the
    // manifest's (cut at the default sizes however small the data's: here
    // one chunk of about 30 KB, 46 KB as 4+2 shares).
    let bound = LIMIT + 64 * 1024;
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
