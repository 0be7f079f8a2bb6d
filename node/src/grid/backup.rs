//! A backup onto the grid, streamed: the pipeline encodes into the local
//! outbox on a blocking thread and hands finished parts over (see
//! [`super::stream`]); each part is planned into one pending backup
//! (`PlanRequest::extend`), uploaded to its targets under their tickets, its
//! receipts handed in and its packets dropped from the outbox, while the
//! pipeline encodes the next part. The snapshot is committed once, after the
//! last part: a half-done backup is never a snapshot.
//!
//! The outbox holds at most about `staging_limit` bytes of packets not yet
//! receipted. A target that keeps failing mid-upload is excluded from later
//! parts, and the packets of the current part it did not receipt are moved
//! to other targets by the manager (`ManagerApi::retarget`; at most
//! [`MAX_MOVES`] times a part); the rest of the backup stays as planned.
//! What earlier parts put on it stays there: if it stays away, repair
//! rebuilds those packets after the commit, and the report names it.
//!
//! Nothing the backup holds in memory grows with its size: the stripes'
//! order waits in a scratch file ([`super::spill`]), read back at the
//! commit; what it keeps per part is that part's. What a backup leaves to
//! tidy up is [`super::cleanup`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde::Serialize;
use strew_coordinator::manager::{
    CommitRequest, MAX_RETARGET_AVOID, MAX_RETARGET_SLOTS, PlanDecision, PlanRequest,
    RetargetRequest, order_page_len,
};
use strew_coordinator::records::{BackupParams, StoredPacket};
use strew_coordinator::{CommitOrderRequest, DataId, NodeId, PacketId, SnapshotId, StoreReceipt};

use super::cleanup::{Cleanup, cancelled};
use super::journal::{self, Journal, Record, Resume};
use super::stream::{PART_QUEUE, Part, PartSink, Staging};
use super::{GridError, KnownIndex, ManagerApi, PacketTransport, SourceIdentity};
use crate::claim_set::claim;
use crate::pipeline::{
    self, BackupOptions, BackupStats, ChunkSizes, Codec, ConvergenceSecret, Progress,
};
use crate::spill::{Spill, SpillError};
use crate::store::PacketStore;

/// Receipts journaled at once while a part uploads.
const JOURNAL_BATCH: usize = 256;
/// ... or after this long, whichever comes first.
const JOURNAL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// A pause before every upload, for process tests that interrupt a backup
/// halfway (`STREW_UPLOAD_DELAY_MS`, environment only; none by default).
fn upload_delay() -> Option<std::time::Duration> {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    *DELAY.get_or_init(|| {
        std::env::var("STREW_UPLOAD_DELAY_MS")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map(std::time::Duration::from_millis)
    })
}

/// Times a part's packets are moved off failing targets before the
/// backup gives up (re-running it resumes).
pub const MAX_MOVES: usize = 3;

/// Pauses before a failed target's uploads are tried again (then its
/// packets of the part are moved).
const UPLOAD_RETRIES: [std::time::Duration; 2] = [
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(3),
];

#[derive(Debug, Clone)]
pub struct GridBackupOptions {
    pub set: String,
    pub paths: Vec<PathBuf>,
    pub params: BackupParams,
    pub sizes: ChunkSizes,
    /// The data's convergence secret (the grid's or the private one).
    pub secret: ConvergenceSecret,
    /// The owner's private secret: keys the manifest and the snapshot root.
    pub owner: ConvergenceSecret,
    pub now_ms: u64,
    /// Packets in flight at once (per-target limits apply below this).
    pub parallel_uploads: usize,
    /// The set's previous snapshot and its tree digest: when the tree is
    /// unchanged, no new snapshot is made and that one is answered.
    pub previous: Option<(SnapshotId, [u8; 32])>,
    /// What the walk leaves out.
    pub excludes: crate::pipeline::ExcludeRules,
    /// The outbox holds at most about this many bytes of packets not yet
    /// receipted: the pipeline waits for uploads beyond it.
    pub staging_limit: u64,
    /// Where the backup keeps its journal (see [`super::journal`]): a rerun
    /// with the same set and paths resumes from it. `None`: no journal.
    pub journal_dir: Option<PathBuf>,
}

/// What the grid backup keeps of the pipeline's report once the pipeline
/// is done: not the manifest (stored by then, and as large as the backup),
/// only its tree digest.
struct Pipelined {
    sequence: pipeline::Sequence,
    tree: Option<[u8; 32]>,
    stats: pipeline::BackupStats,
    warnings: Vec<crate::pipeline::backup::Warning>,
}

impl From<pipeline::BackupReport> for Pipelined {
    fn from(r: pipeline::BackupReport) -> Self {
        Pipelined {
            tree: r.manifest.tree_digest(),
            sequence: r.sequence,
            stats: r.stats,
            warnings: r.warnings,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GridBackupReport {
    pub snapshot: SnapshotId,
    /// The tree did not change since `previous`: `snapshot` is that one.
    pub unchanged: bool,
    /// Digest of the snapshot's tree (see `Manifest::tree_digest`).
    #[serde(skip)]
    pub tree: Option<[u8; 32]>,
    pub stats: BackupStats,
    /// Packets and bytes sent to targets by this backup.
    pub uploaded_packets: u64,
    pub uploaded_bytes: u64,
    /// New chunks the manager already held (another source stored them).
    pub deduplicated_chunks: u64,
    pub plans: usize,
    pub targets: Vec<NodeId>,
    /// Packets moved to other targets because uploads to theirs kept failing.
    pub moved_packets: u64,
    /// Targets whose uploads kept failing, with the packets of parts handed
    /// in before that they hold: repair rebuilds those if they stay away.
    pub failed_targets: Vec<FailedTarget>,
    /// The most bytes of unreceipted packets the outbox held at once.
    pub staging_high_water: u64,
    /// Uploads (packet to target) an interrupted earlier run of this backup
    /// had done and this one did not repeat.
    pub skipped_packets: u64,
    /// Targets whose uploads were paced to the rate cap the plan gave
    /// (their advertised bandwidth or their subscription's, the lower).
    pub paced_targets: Vec<NodeId>,
    pub warnings: Vec<crate::pipeline::backup::Warning>,
    /// Left for [`clean_up`], after the answer.
    #[serde(skip)]
    pub cleanup: Cleanup,
}

/// A target whose uploads kept failing during a backup.
#[derive(Debug, Clone, Serialize)]
pub struct FailedTarget {
    /// JSON: the NodeId's text, as everywhere else in the answers.
    #[serde(serialize_with = "node_text")]
    pub target: NodeId,
    /// Packets of this backup it receipted before it failed.
    pub held_packets: u64,
}

fn node_text<S: serde::Serializer>(id: &NodeId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// One upload's outcome: the bytes sent and the target's receipt, or why not.
type Uploaded = Result<(u64, StoreReceipt), UploadError>;

/// Runs one backup of `opts.paths` onto the grid.
pub async fn grid_backup<M: ManagerApi, T: PacketTransport>(
    me: &SourceIdentity,
    manager: &M,
    transport: &T,
    outbox: &PacketStore,
    known: &KnownIndex,
    opts: &GridBackupOptions,
    progress: Arc<Progress>,
) -> Result<GridBackupReport, GridError> {
    let zstd_level = match opts.params.compression {
        strew_coordinator::records::Compression::Zstd { level } => level,
        strew_coordinator::records::Compression::None => 1,
    };
    let backup_opts = BackupOptions {
        name: opts.set.clone(),
        time_ms: opts.now_ms,
        sizes: opts.sizes,
        codec: Codec {
            secret: opts.secret.clone(),
            zstd_level,
            redundancy: opts.params.redundancy,
        },
        owner: opts.owner.clone(),
        excludes: opts.excludes.clone(),
    };
    let staging = Staging::new(opts.staging_limit);
    let journal_path = opts
        .journal_dir
        .as_ref()
        .map(|dir| journal::journal_path(dir, &opts.set, &opts.paths));
    let mut resume = resumable(manager, journal_path.as_deref()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Part>(PART_QUEUE);
    let (paths, box_, idx, prog, stage) = (
        opts.paths.clone(),
        outbox.clone(),
        known.clone(),
        progress.clone(),
        staging.clone(),
    );
    // The pipeline on a blocking thread, handing finished parts over while
    // it encodes the next ones.
    let mut skip = std::mem::take(&mut resume.done);
    if let Some((d, _)) = &resume.in_flight {
        for id in d.uploads.iter().map(|c| &c.data_id).chain(&d.reused) {
            skip.insert(claim(id)).map_err(spill_error)?;
        }
    }
    let mut pipeline_task = Some(tokio::task::spawn_blocking(move || {
        let mut sink = PartSink::new(box_, tx, stage)
            .map_err(spill_error)?
            .skipping(skip);
        let report = pipeline::backup(&paths, &backup_opts, &idx, &mut sink, &prog)?;
        Ok::<_, GridError>((Pipelined::from(report), sink.into_order()))
    }));
    let mut run = Run {
        me,
        manager,
        transport,
        outbox,
        opts,
        progress: &progress,
        staging: &staging,
        pending: None,
        exclude: Vec::new(),
        done: BTreeSet::new(),
        receipts: BTreeMap::new(),
        targets: BTreeSet::new(),
        held: BTreeMap::new(),
        uploaded_packets: 0,
        uploaded_bytes: 0,
        deduplicated: 0,
        plans: 0,
        moved_packets: 0,
        abandoned: Vec::new(),
        last_failure: None,
        journal_path: journal_path.clone(),
        journal: None,
        skipped_packets: resume.done_packets,
        pace: BTreeMap::new(),
    };
    if let Some(pending_id) = resume.pending_id
        && let Some(path) = &journal_path
    {
        run.pending = Some(pending_id);
        run.plans = 1;
        run.journal = Some(Journal::reopen(path, resume.valid_bytes).map_err(journal_error)?);
        if let Some((decision, receipts)) = resume.in_flight {
            tracing::info!(pending_id, "resuming an interrupted backup");
            if let Err(err) = run.resume_part(decision, receipts).await {
                staging.close();
                drop(rx);
                if let Some(task) = pipeline_task.take() {
                    let _ = task.await;
                }
                return Err(err);
            }
        }
    }
    let mut report = None;
    let mut failure = None;
    while let Some(part) = rx.recv().await {
        if part.last {
            // The pipeline is done but for returning: its report decides
            // whether the last part is needed at all.
            let task = pipeline_task
                .take()
                .ok_or_else(|| GridError::Other("the pipeline sent two last parts".into()))?;
            let done = task
                .await
                .map_err(|e| GridError::Other(format!("backup task failed: {e}")))
                .and_then(|r| r);
            match done {
                Ok((r, order)) => {
                    if let Some((previous, digest)) = opts.previous
                        && r.tree == Some(digest)
                    {
                        staging.close();
                        return run.unchanged(previous, part, r).await;
                    }
                    report = Some((r, order));
                }
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        if let Err(err) = run.part(part).await {
            failure = Some(err);
            break;
        }
    }
    staging.close();
    drop(rx);
    let report = match (report, failure) {
        (_, Some(err)) => {
            // Stop the pipeline (it fails on its next part) and wait for it.
            if let Some(task) = pipeline_task {
                let _ = task.await;
            }
            if let Some(pending) = run.pending.take() {
                run.abandoned.push(pending);
            }
            if matches!(err, GridError::Cancelled(_)) || progress.is_cancelled() {
                return Err(cancelled(manager, transport, run.abandoned, &run.exclude).await);
            }
            return Err(err);
        }
        (Some(report), None) => report,
        (None, None) => {
            // The pipeline failed before its last part.
            let result = match pipeline_task {
                Some(task) => task
                    .await
                    .map_err(|e| GridError::Other(format!("backup task failed: {e}")))?,
                None => return Err(GridError::Other("the pipeline's report was lost".into())),
            };
            let err = match result {
                Ok(_) => GridError::Other("the pipeline ended without its last part".into()),
                Err(e) => e,
            };
            if let Some(pending) = run.pending.take() {
                run.abandoned.push(pending);
            }
            if progress.is_cancelled() {
                return Err(cancelled(manager, transport, run.abandoned, &run.exclude).await);
            }
            return Err(err);
        }
    };
    // A cancel that arrived after the last upload still wins over the commit.
    if progress.is_cancelled() {
        if let Some(pending) = run.pending.take() {
            run.abandoned.push(pending);
        }
        return Err(cancelled(manager, transport, run.abandoned, &run.exclude).await);
    }
    let (report, mut order) = report;
    let tree = report.tree;
    let pending_id = run
        .pending
        .ok_or_else(|| GridError::Other("a backup planned no part".into()))?;
    let mut all_chunks = chunk_order(&mut order, &report.sequence.manifest)?;
    let page_len = order_page_len(opts.params.redundancy.width());
    // A large snapshot hands its chunk order in pages first: no message
    // or raft entry grows with the backup.
    let chunks = if all_chunks.items() > page_len as u64 {
        send_order(manager, pending_id, me.node_id, &mut all_chunks, page_len).await?;
        Vec::new()
    } else {
        all_chunks
            .read()
            .map_err(spill_error)?
            .collect::<Result<_, _>>()
            .map_err(spill_error)?
    };
    drop(all_chunks);
    let response = manager
        .commit(CommitRequest {
            pending_id,
            source: me.node_id,
            receipts: Vec::new(),
            manifest: report.sequence.snapshot,
            manifest_chunks: report.sequence.manifest.iter().map(|s| s.data_id).collect(),
            chunks,
            bytes: report.stats.bytes_in,
        })
        .await?;
    if let Some(path) = &journal_path {
        Journal::remove(path).map_err(journal_error)?;
    }
    // Committed: remember the stripes; the outbox holds nothing of this
    // backup any more (each part's packets left it with their receipts).
    let manifest = report.sequence.manifest.clone();
    let (idx, box_) = (known.clone(), outbox.clone());
    tokio::task::spawn_blocking(move || {
        remember(&idx, &mut order, manifest)?;
        // Give the space back now: an outbox holds only uncommitted backups.
        if box_.used_bytes()? == 0 {
            box_.compact()?;
        } else {
            box_.maybe_compact(&crate::store::CompactionPolicy::default())?;
        }
        Ok::<_, GridError>(())
    })
    .await
    .map_err(|e| GridError::Other(format!("outbox cleanup task failed: {e}")))??;
    // Packets this backup sent that nothing references any more (those of
    // plans it replaced, and any the manager found redundant at commit) are
    // deleted by the caller in the background: the backup is done.
    let failed_targets = run
        .left_on_failed_targets()
        .into_iter()
        .map(|(target, held_packets)| FailedTarget {
            target,
            held_packets,
        })
        .collect();
    let cleanup = Cleanup {
        abandoned: run.abandoned,
        tickets: response.delete_tickets.clone(),
        skip: run.exclude.iter().copied().collect(),
    };
    Ok(GridBackupReport {
        snapshot: response.snapshot,
        unchanged: false,
        tree,
        stats: report.stats,
        uploaded_packets: run.uploaded_packets,
        uploaded_bytes: run.uploaded_bytes,
        deduplicated_chunks: run.deduplicated,
        plans: run.plans,
        failed_targets,
        moved_packets: run.moved_packets,
        targets: run.targets.into_iter().collect(),
        staging_high_water: staging.high_water(),
        skipped_packets: run.skipped_packets,
        paced_targets: run.pace.keys().copied().collect(),
        warnings: report.warnings,
        cleanup,
    })
}

/// The snapshot's chunks in sequence order, each once, in a scratch file:
/// the data stripes (the pipeline hands each distinct chunk once), then
/// the manifest's (a paged order names each chunk once).
fn chunk_order(
    order: &mut Spill<pipeline::StripeRecord>,
    manifest: &[pipeline::StripeRecord],
) -> Result<Spill<DataId>, GridError> {
    let mut in_manifest: std::collections::HashSet<DataId> =
        manifest.iter().map(|s| s.data_id).collect();
    let mut ids = Spill::new().map_err(spill_error)?;
    for record in order.read().map_err(spill_error)? {
        let id = record.map_err(spill_error)?.data_id;
        // Named by the data already: not again at the manifest's place.
        in_manifest.remove(&id);
        ids.push(&id).map_err(spill_error)?;
    }
    for s in manifest {
        if in_manifest.remove(&s.data_id) {
            ids.push(&s.data_id).map_err(spill_error)?;
        }
    }
    Ok(ids)
}

/// Stripes written to the known-chunk index at once after a commit.
const KNOWN_BATCH: usize = 4096;

/// Records a committed snapshot's stripes in the known-chunk index, a
/// batch at a time, read from the order's scratch file.
fn remember(
    idx: &KnownIndex,
    order: &mut Spill<pipeline::StripeRecord>,
    manifest: Vec<pipeline::StripeRecord>,
) -> Result<(), GridError> {
    let known = |e: redb::Error| GridError::Other(format!("known-chunk index: {e}"));
    let mut batch = Vec::with_capacity(KNOWN_BATCH);
    for record in order.read().map_err(spill_error)? {
        batch.push(record.map_err(spill_error)?);
        if batch.len() >= KNOWN_BATCH {
            idx.insert(&batch).map_err(known)?;
            batch.clear();
        }
    }
    batch.extend(manifest);
    idx.insert(&batch).map_err(known)
}

fn spill_error(e: SpillError) -> GridError {
    GridError::Other(e.to_string())
}

/// Hands pending backup `pending_id`'s chunk order to the manager in pages
/// of `page_len`, from the start (a page at 0 replaces whatever an
/// interrupted run handed in), each page where the manager says the order
/// ends. The order is read from its scratch file a page at a time.
async fn send_order<M: ManagerApi>(
    manager: &M,
    pending_id: u64,
    source: NodeId,
    order: &mut Spill<DataId>,
    page_len: usize,
) -> Result<(), GridError> {
    let len = usize::try_from(order.items()).unwrap_or(usize::MAX);
    order.flush().map_err(spill_error)?;
    let mut reader = order.reader();
    // Where `reader` is in the order.
    let mut at = 0usize;
    let mut first = 0usize;
    while first < len {
        if first < at {
            // The manager holds less than was sent: read again from there.
            reader = order.reader();
            at = 0;
        }
        for skipped in reader.by_ref().take(first - at) {
            skipped.map_err(spill_error)?;
        }
        let end = first.saturating_add(page_len).min(len);
        let chunks: Vec<DataId> = reader
            .by_ref()
            .take(end - first)
            .collect::<Result<_, _>>()
            .map_err(spill_error)?;
        at = first + chunks.len();
        let next = manager
            .commit_order(CommitOrderRequest {
                pending_id,
                source,
                first: first as u64,
                chunks,
            })
            .await?
            .next;
        let next = usize::try_from(next).unwrap_or(usize::MAX);
        if next <= first || next > len {
            return Err(GridError::Other(format!(
                "the manager holds {next} chunks of backup {pending_id}'s order after a page from {first}"
            )));
        }
        first = next;
    }
    Ok(())
}

fn journal_error(e: journal::JournalError) -> GridError {
    GridError::Other(e.to_string())
}

/// What the journal at `path` lets this backup resume: nothing when there
/// is none, or when the manager no longer holds its pending backup (it
/// expired or was abandoned; the journal is dropped then).
async fn resumable<M: ManagerApi>(
    manager: &M,
    path: Option<&std::path::Path>,
) -> Result<Resume, GridError> {
    let Some(path) = path else {
        return Ok(Resume::default());
    };
    let resume = Journal::read(path).map_err(journal_error)?;
    let Some(pending_id) = resume.pending_id else {
        return Ok(resume);
    };
    // An empty page of receipts: answered only while the pending backup lives.
    match manager.record_receipts(pending_id, Vec::new()).await {
        Ok(()) => Ok(resume),
        Err(GridError::Refused(why)) => {
            tracing::info!(pending_id, %why, "the interrupted backup's plan is gone; starting over");
            Journal::remove(path).map_err(journal_error)?;
            Ok(Resume::default())
        }
        Err(err) => Err(err),
    }
}

/// The async side of one streaming backup: the pending backup its parts
/// extend, the receipts so far, and the targets that failed.
struct Run<'a, M, T> {
    me: &'a SourceIdentity,
    manager: &'a M,
    transport: &'a T,
    outbox: &'a PacketStore,
    opts: &'a GridBackupOptions,
    progress: &'a Arc<Progress>,
    staging: &'a Arc<Staging>,
    /// The pending backup the parts so far are planned into.
    pending: Option<u64>,
    /// Targets whose uploads failed: later parts are planned without them.
    exclude: Vec<NodeId>,
    /// Uploads (packet to target) done, of this part.
    done: BTreeSet<(PacketId, NodeId)>,
    /// Their targets' signed receipts.
    receipts: BTreeMap<(PacketId, NodeId), StoreReceipt>,
    targets: BTreeSet<NodeId>,
    /// Packets handed in per target: what a target that fails later holds.
    held: BTreeMap<NodeId, u64>,
    uploaded_packets: u64,
    uploaded_bytes: u64,
    deduplicated: u64,
    plans: usize,
    /// Packets moved off failed targets before any receipted them.
    moved_packets: u64,
    abandoned: Vec<u64>,
    last_failure: Option<String>,
    journal_path: Option<PathBuf>,
    journal: Option<Journal>,
    skipped_packets: u64,
    /// One token bucket per capped target, kept across parts: every upload
    /// to it waits for its bytes.
    pace: BTreeMap<NodeId, strew_overlay::BandwidthLimiter>,
}

impl<M: ManagerApi, T: PacketTransport> Run<'_, M, T> {
    /// Plans one part into the pending backup, uploads it, hands its
    /// receipts in and drops its packets from the outbox.
    async fn part(&mut self, part: Part) -> Result<(), GridError> {
        if self.progress.is_cancelled() {
            return Err(GridError::Cancelled("cancelled".into()));
        }
        if self.pending.is_none() {
            self.plans += 1;
        }
        let decision = super::parts::plan_in_parts(
            self.manager,
            PlanRequest {
                extend: self.pending,
                source: self.me.node_id,
                set: self.opts.set.clone(),
                location: self.me.location,
                params: self.opts.params.clone(),
                chunks: part.chunks,
                exclude: self.exclude.clone(),
            },
        )
        .await
        .map_err(|err| self.explained(err))?;
        if self.pending.is_none()
            && let Some(path) = &self.journal_path
        {
            self.journal = Some(Journal::begin(path, decision.pending_id).map_err(journal_error)?);
        }
        self.pending = Some(decision.pending_id);
        self.journal(&Record::Planned {
            decision: decision.clone(),
        })?;
        self.finish_part(decision, part.packets).await?;
        self.staging.release(part.bytes);
        Ok(())
    }

    /// Uploads a planned part and hands its receipts in. A target that
    /// still fails after [`UPLOAD_RETRIES`] is excluded from later parts,
    /// and the packets of this part it did not receipt are moved to other
    /// targets (at most [`MAX_MOVES`] times a part); packets of earlier
    /// parts it holds stay, for repair to rebuild if it stays away.
    async fn finish_part(
        &mut self,
        mut decision: PlanDecision,
        packets: Vec<PacketId>,
    ) -> Result<(), GridError> {
        let mut moves = 0;
        loop {
            let mut failed = self.upload(&decision).await?;
            // A target that failed may only have been slow or briefly gone:
            // its uploads are tried again before its packets move.
            for wait in UPLOAD_RETRIES {
                if failed.is_empty() || self.progress.is_cancelled() {
                    break;
                }
                tracing::info!(
                    targets = failed.len(),
                    ?wait,
                    "uploads failed; trying them again before moving their packets"
                );
                tokio::time::sleep(wait).await;
                failed = self.upload(&decision).await?;
            }
            if failed.is_empty() {
                break;
            }
            if moves >= MAX_MOVES {
                return Err(GridError::Other(format!(
                    "uploads to {} target(s) failed after their packets moved {moves} times ({}); \
                     re-run the backup to continue (receipted packets are not sent again)",
                    failed.len(),
                    failed
                        .iter()
                        .map(|t| t.short())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            moves += 1;
            for target in &failed {
                if !self.exclude.contains(target) {
                    self.exclude.push(*target);
                }
            }
            self.move_off(&mut decision, &failed).await?;
        }
        self.deduplicated += decision.reused.len() as u64;
        let stored: Vec<&StoredPacket> = decision
            .uploads
            .iter()
            .flat_map(|c| c.packets.iter())
            .collect();
        let mut receipts = Vec::with_capacity(stored.len());
        for p in stored {
            self.targets.insert(p.target);
            *self.held.entry(p.target).or_default() += 1;
            if let Some(r) = self.receipts.get(&(p.packet_id, p.target)) {
                receipts.push(r.clone());
            }
        }
        self.hand_in(decision.pending_id, &receipts, packets)
            .await?;
        self.done.clear();
        self.receipts.clear();
        Ok(())
    }

    /// Asks the manager to move the packets of `decision` no target
    /// receipted that sit on a `failed` target, page by page, and merges
    /// the moved chunks and their tickets into `decision` (and the journal).
    async fn move_off(
        &mut self,
        decision: &mut PlanDecision,
        failed: &BTreeSet<NodeId>,
    ) -> Result<(), GridError> {
        let slots: Vec<(DataId, u32)> = decision
            .uploads
            .iter()
            .flat_map(|c| {
                c.packets
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        failed.contains(&p.target) && !self.done.contains(&(p.packet_id, p.target))
                    })
                    .map(|(j, _)| (c.data_id, j as u32))
            })
            .collect();
        let avoid: Vec<NodeId> = self
            .exclude
            .iter()
            .rev()
            .take(MAX_RETARGET_AVOID)
            .copied()
            .collect();
        tracing::info!(
            packets = slots.len(),
            targets = failed.len(),
            "moving the packets of targets that keep failing"
        );
        for page in slots.chunks(MAX_RETARGET_SLOTS) {
            let moved = self
                .manager
                .retarget(RetargetRequest {
                    pending_id: decision.pending_id,
                    source: self.me.node_id,
                    slots: page.to_vec(),
                    avoid: avoid.clone(),
                })
                .await
                .map_err(|err| self.explained(err))?;
            self.journal(&Record::Moved {
                decision: moved.clone(),
            })?;
            journal::merge_moved(decision, moved);
            self.moved_packets += page.len() as u64;
        }
        Ok(())
    }

    /// A refusal to place this backup's packets says why targets were
    /// left out, not only that too few remain.
    fn explained(&self, err: GridError) -> GridError {
        match (&err, &self.last_failure) {
            (GridError::Refused(why), Some(first)) => {
                GridError::Refused(strew_overlay::manager::Refusal::new(
                    why.code,
                    format!(
                        "uploads to {} target(s) failed (first error: {first}); placing packets without them: {why}",
                        self.exclude.len()
                    ),
                ))
            }
            _ => err,
        }
    }

    /// Appends to the journal, if this backup keeps one.
    fn journal(&mut self, record: &Record) -> Result<(), GridError> {
        match self.journal.as_mut() {
            Some(j) => j.append(record).map_err(journal_error),
            None => Ok(()),
        }
    }

    /// Hands a part's receipts in page by page (no message
    /// grows with the backup), notes that in the journal, and drops the
    /// part's packets from the outbox.
    async fn hand_in(
        &mut self,
        pending_id: u64,
        receipts: &[StoreReceipt],
        packets: Vec<PacketId>,
    ) -> Result<(), GridError> {
        for page in receipts.chunks(strew_coordinator::manager::MAX_RECEIPTS_PER_CALL) {
            self.manager
                .record_receipts(pending_id, page.to_vec())
                .await?;
        }
        self.journal(&Record::Done)?;
        let box_ = self.outbox.clone();
        tokio::task::spawn_blocking(move || box_.delete_many(&packets))
            .await
            .map_err(|e| GridError::Other(format!("outbox cleanup task failed: {e}")))??;
        Ok(())
    }

    /// Finishes the part an interrupted run had planned: uploads what no
    /// target receipted yet (its packets are still in the outbox), hands
    /// the receipts in.
    async fn resume_part(
        &mut self,
        decision: PlanDecision,
        receipts: Vec<StoreReceipt>,
    ) -> Result<(), GridError> {
        for r in receipts {
            let key = (r.packet_id, r.target);
            if self.done.insert(key) {
                self.skipped_packets += 1;
            }
            self.receipts.insert(key, r);
        }
        let packets: Vec<PacketId> = decision
            .uploads
            .iter()
            .flat_map(|c| c.packets.iter().map(|p| p.packet_id))
            .collect();
        self.finish_part(decision, packets).await
    }

    /// The targets that failed, each with the packets of parts handed in
    /// before it failed: repair rebuilds those once the snapshot is
    /// committed, if it stays away.
    fn left_on_failed_targets(&self) -> Vec<(NodeId, u64)> {
        self.exclude
            .iter()
            .map(|t| (*t, self.held.get(t).copied().unwrap_or(0)))
            .collect()
    }

    /// Uploads the plan's packets not yet on their target; the targets that
    /// failed.
    async fn upload(&mut self, decision: &PlanDecision) -> Result<BTreeSet<NodeId>, GridError> {
        let tickets = super::ticket_index(&decision.tickets);
        for (target, cap) in &decision.target_caps {
            if self.pace.get(target).is_none_or(|p| p.rate() != *cap) {
                self.pace
                    .insert(*target, strew_overlay::BandwidthLimiter::new(*cap));
            }
        }
        let pace = self.pace.clone();
        let live = self.progress;
        let transport = self.transport;
        let outbox = self.outbox;
        let jobs: Vec<(PacketId, NodeId)> = decision
            .uploads
            .iter()
            .flat_map(|c| c.packets.iter().map(|p| (p.packet_id, p.target)))
            .filter(|job| !self.done.contains(job))
            .collect();
        let mut results = futures::stream::iter(jobs)
            .map(|(id, target)| {
                let ticket = tickets.get(&(target, id)).copied();
                let outbox = outbox.clone();
                let pace = pace.get(&target).cloned();
                async move {
                    let result = async {
                        if live.is_cancelled() {
                            return Err(UploadError::Failed("cancelled".to_string()));
                        }
                        let ticket = ticket.ok_or(UploadError::Failed(
                            "the plan has no ticket for this target".into(),
                        ))?;
                        let bytes = tokio::task::spawn_blocking(move || outbox.get(&id))
                            .await
                            .map_err(|e| UploadError::Failed(e.to_string()))?
                            .map_err(|e| UploadError::Failed(e.to_string()))?
                            .ok_or(UploadError::Missing)?;
                        let len = bytes.len() as u64;
                        if let Some(delay) = upload_delay() {
                            tokio::time::sleep(delay).await;
                        }
                        if let Some(pace) = &pace {
                            pace.acquire(bytes.len()).await;
                        }
                        let receipt = transport
                            .put(target, ticket, id, bytes)
                            .await
                            .map_err(|e| UploadError::Failed(e.detail))?;
                        live.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
                        Ok::<(u64, StoreReceipt), UploadError>((len, receipt))
                    }
                    .await;
                    ((id, target), result)
                }
            })
            .buffer_unordered(self.opts.parallel_uploads.max(1));
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        let mut missing = 0usize;
        // Receipts reach the journal in batches as they arrive: a crash
        // loses at most one batch of uploads.
        let mut batch: Vec<StoreReceipt> = Vec::new();
        let mut flushed = std::time::Instant::now();
        while let Some(((id, target), result)) = results.next().await {
            let result: Uploaded = result;
            match result {
                Ok((len, receipt)) => {
                    self.done.insert((id, target));
                    if self.journal.is_some() {
                        batch.push(receipt.clone());
                        if batch.len() >= JOURNAL_BATCH || flushed.elapsed() >= JOURNAL_EVERY {
                            flushed = std::time::Instant::now();
                            self.journal(&Record::Receipted {
                                receipts: std::mem::take(&mut batch),
                            })?;
                        }
                    }
                    self.receipts.insert((id, target), receipt);
                    self.uploaded_packets += 1;
                    self.uploaded_bytes += len;
                }
                Err(UploadError::Missing) => missing += 1,
                Err(UploadError::Failed(detail)) => {
                    tracing::warn!(%target, packet = %id, %detail, "upload failed");
                    failed.insert(target);
                    self.last_failure
                        .get_or_insert_with(|| format!("{}: {detail}", target.short()));
                }
            }
        }
        if !batch.is_empty() {
            self.journal(&Record::Receipted { receipts: batch })?;
        }
        if self.progress.is_cancelled() {
            return Err(GridError::Cancelled("cancelled".into()));
        }
        if missing > 0 {
            return Err(GridError::Other(format!(
                "{missing} packet(s) of this part are no longer in the outbox; \
                 re-run the backup to continue"
            )));
        }
        Ok(failed)
    }

    /// The tree did not change: abandon what was planned, drop what the
    /// pipeline staged, and answer the previous snapshot.
    async fn unchanged(
        mut self,
        previous: SnapshotId,
        last: Part,
        report: Pipelined,
    ) -> Result<GridBackupReport, GridError> {
        let box_ = self.outbox.clone();
        let staged = last.packets;
        tokio::task::spawn_blocking(move || {
            box_.delete_many(&staged)?;
            box_.compact()?;
            Ok::<_, GridError>(())
        })
        .await
        .map_err(|e| GridError::Other(format!("outbox cleanup task failed: {e}")))??;
        if let Some(pending) = self.pending.take() {
            self.abandoned.push(pending);
        }
        Ok(GridBackupReport {
            snapshot: previous,
            unchanged: true,
            tree: report.tree,
            stats: report.stats,
            uploaded_packets: self.uploaded_packets,
            uploaded_bytes: self.uploaded_bytes,
            deduplicated_chunks: 0,
            plans: self.plans,
            targets: Vec::new(),
            moved_packets: self.moved_packets,
            failed_targets: Vec::new(),
            staging_high_water: self.staging.high_water(),
            skipped_packets: self.skipped_packets,
            paced_targets: Vec::new(),
            warnings: report.warnings,
            cleanup: Cleanup {
                abandoned: self.abandoned,
                tickets: Vec::new(),
                skip: self.exclude.iter().copied().collect(),
            },
        })
    }
}

/// Why one upload did not happen.
enum UploadError {
    /// The packet is not in the outbox (it should be: a part's packets
    /// leave it with their receipts).
    Missing,
    Failed(String),
}
