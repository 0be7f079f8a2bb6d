//! A backup onto the grid, streamed: the pipeline encodes into the local
//! outbox on a blocking thread and hands finished parts over (see
//! [`super::stream`]); each part is planned into one pending backup
//! (`PlanRequest::extend`), uploaded to its targets under their tickets, its
//! receipts handed in and its packets dropped from the outbox, while the
//! pipeline encodes the next part. The snapshot is committed once, after the
//! last part: a half-done backup is never a snapshot.
//!
//! The outbox holds at most about `staging_limit` bytes of packets not yet
//! receipted. A target that fails mid-upload is excluded and everything
//! planned so far re-planned around it into a new pending backup (at most
//! [`MAX_PLANS`] plans per part); packets already on a target the new plan
//! keeps are not sent again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::StreamExt;
use serde::Serialize;
use strew_coordinator::manager::{ChunkPlan, CommitRequest, PlanDecision, PlanRequest};
use strew_coordinator::records::{BackupParams, StoredPacket};
use strew_coordinator::{DataId, NodeId, PacketId, SnapshotId, StoreReceipt};

use super::stream::{PART_QUEUE, Part, PartSink, Staging};
use super::{GridError, KnownIndex, ManagerApi, PacketTransport, SourceIdentity};
use crate::pipeline::{
    self, BackupOptions, BackupStats, ChunkSizes, Codec, ConvergenceSecret, Progress,
};
use crate::store::PacketStore;

/// Plans tried before a backup gives up on unreachable targets.
pub const MAX_PLANS: usize = 3;

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
    /// The most bytes of unreceipted packets the outbox held at once.
    pub staging_high_water: u64,
    pub warnings: Vec<crate::pipeline::backup::Warning>,
    /// Left for [`clean_up`], after the answer.
    #[serde(skip)]
    pub cleanup: Cleanup,
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
    let mut pipeline_task = Some(tokio::task::spawn_blocking(move || {
        let mut sink = PartSink::new(box_, tx, stage);
        pipeline::backup(&paths, &backup_opts, &idx, &mut sink, &prog)
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
        all_chunks: Vec::new(),
        exclude: Vec::new(),
        done: BTreeSet::new(),
        receipts: BTreeMap::new(),
        targets: BTreeSet::new(),
        uploaded_packets: 0,
        uploaded_bytes: 0,
        deduplicated: 0,
        plans: 0,
        abandoned: Vec::new(),
        last_failure: None,
    };
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
                .and_then(|r| r.map_err(GridError::from));
            match done {
                Ok(r) => {
                    if let Some((previous, digest)) = opts.previous
                        && r.manifest.tree_digest() == Some(digest)
                    {
                        staging.close();
                        return run.unchanged(previous, part, r).await;
                    }
                    report = Some(r);
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
                Err(e) => GridError::from(e),
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
    let tree = report.manifest.tree_digest();
    let pending_id = run
        .pending
        .ok_or_else(|| GridError::Other("a backup planned no part".into()))?;
    let all_chunks: Vec<DataId> = report.sequence.stripes().map(|s| s.data_id).collect();
    let response = manager
        .commit(CommitRequest {
            pending_id,
            source: me.node_id,
            receipts: Vec::new(),
            manifest: report.sequence.snapshot,
            manifest_chunks: report.sequence.manifest.iter().map(|s| s.data_id).collect(),
            chunks: all_chunks,
            bytes: report.stats.bytes_in,
        })
        .await?;
    // Committed: remember the stripes; the outbox holds nothing of this
    // backup any more (each part's packets left it with their receipts).
    let stripes: Vec<pipeline::StripeRecord> = report.sequence.stripes().cloned().collect();
    let (idx, box_) = (known.clone(), outbox.clone());
    tokio::task::spawn_blocking(move || {
        idx.insert(&stripes)
            .map_err(|e| GridError::Other(format!("known-chunk index: {e}")))?;
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
        targets: run.targets.into_iter().collect(),
        staging_high_water: staging.high_water(),
        warnings: report.warnings,
        cleanup,
    })
}

/// The async side of one streaming backup: the pending backup its parts
/// extend, the receipts so far, and what a re-plan needs.
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
    /// Every part's chunks so far: a re-plan around a failed target plans
    /// them all again into a new pending backup.
    all_chunks: Vec<ChunkPlan>,
    exclude: Vec<NodeId>,
    done: BTreeSet<(PacketId, NodeId)>,
    /// Each target's signed receipt, kept across re-plans.
    receipts: BTreeMap<(PacketId, NodeId), StoreReceipt>,
    targets: BTreeSet<NodeId>,
    uploaded_packets: u64,
    uploaded_bytes: u64,
    deduplicated: u64,
    plans: usize,
    abandoned: Vec<u64>,
    last_failure: Option<String>,
}

impl<M: ManagerApi, T: PacketTransport> Run<'_, M, T> {
    /// Plans one part into the pending backup, uploads it, hands its
    /// receipts in and drops its packets from the outbox. Upload failures
    /// re-plan everything so far around the failed targets (at most
    /// [`MAX_PLANS`] plans per part).
    async fn part(&mut self, part: Part) -> Result<(), GridError> {
        self.all_chunks.extend(part.chunks.iter().cloned());
        let mut chunks = part.chunks;
        let mut tries = 0;
        loop {
            if self.progress.is_cancelled() {
                return Err(GridError::Cancelled("cancelled".into()));
            }
            tries += 1;
            if self.pending.is_none() {
                // A new pending backup (the first, or a re-plan).
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
                    chunks: std::mem::take(&mut chunks),
                    exclude: self.exclude.clone(),
                },
            )
            .await
            .map_err(|err| match (&err, &self.last_failure) {
                // Say why targets were left out, not only that too few remain.
                (GridError::Refused(why), Some(first)) => {
                    GridError::Refused(strew_overlay::manager::Refusal::new(
                        why.code,
                        format!(
                            "uploads to {} target(s) failed (first error: {first}); planning without them: {why}",
                            self.exclude.len()
                        ),
                    ))
                }
                _ => err,
            })?;
            self.pending = Some(decision.pending_id);
            let failed = self.upload(&decision).await?;
            if failed.is_empty() {
                self.deduplicated += decision.reused.len() as u64;
                let stored: Vec<StoredPacket> = decision
                    .uploads
                    .iter()
                    .flat_map(|c| c.packets.iter().cloned())
                    .collect();
                self.targets.extend(stored.iter().map(|p| p.target));
                let receipts: Vec<StoreReceipt> = stored
                    .iter()
                    .filter_map(|p| self.receipts.get(&(p.packet_id, p.target)).cloned())
                    .collect();
                // Handed in page by page: no message grows with the backup.
                for page in receipts.chunks(strew_coordinator::manager::MAX_RECEIPTS_PER_CALL) {
                    self.manager
                        .record_receipts(decision.pending_id, page.to_vec())
                        .await?;
                }
                // Receipted: the part's packets leave the outbox.
                let box_ = self.outbox.clone();
                let ids = part.packets;
                tokio::task::spawn_blocking(move || box_.delete_many(&ids))
                    .await
                    .map_err(|e| GridError::Other(format!("outbox cleanup task failed: {e}")))??;
                self.staging.release(part.bytes);
                return Ok(());
            }
            if tries >= MAX_PLANS {
                return Err(GridError::Other(format!(
                    "uploads to {} target(s) failed in {tries} plans ({}); re-run the backup to continue \
                     (committed chunks are not sent again)",
                    failed.len(),
                    failed
                        .iter()
                        .map(|t| t.short())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            // Everything so far again, into a new pending backup without
            // the failed targets; the old one is abandoned after the commit.
            self.exclude.extend(failed);
            self.abandoned.push(decision.pending_id);
            self.pending = None;
            chunks = self.all_chunks.clone();
        }
    }

    /// Uploads the plan's packets not yet on their target; the targets that
    /// failed.
    async fn upload(&mut self, decision: &PlanDecision) -> Result<BTreeSet<NodeId>, GridError> {
        let tickets = super::ticket_index(&decision.tickets);
        let live = self.progress;
        let transport = self.transport;
        let jobs: Vec<(PacketId, NodeId)> = decision
            .uploads
            .iter()
            .flat_map(|c| c.packets.iter().map(|p| (p.packet_id, p.target)))
            .filter(|job| !self.done.contains(job))
            .collect();
        let results: Vec<((PacketId, NodeId), Uploaded)> = futures::stream::iter(jobs)
            .map(|(id, target)| {
                let ticket = tickets.get(&(target, id)).copied();
                let outbox = self.outbox.clone();
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
            .buffer_unordered(self.opts.parallel_uploads.max(1))
            .collect()
            .await;
        if self.progress.is_cancelled() {
            return Err(GridError::Cancelled("cancelled".into()));
        }
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        let mut missing = 0usize;
        for ((id, target), result) in results {
            match result {
                Ok((len, receipt)) => {
                    self.done.insert((id, target));
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
        if missing > 0 {
            return Err(GridError::Other(format!(
                "{missing} packet(s) a re-plan moved to other targets already left the outbox; \
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
        report: pipeline::BackupReport,
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
            tree: report.manifest.tree_digest(),
            stats: report.stats,
            uploaded_packets: self.uploaded_packets,
            uploaded_bytes: self.uploaded_bytes,
            deduplicated_chunks: 0,
            plans: self.plans,
            targets: Vec::new(),
            staging_high_water: self.staging.high_water(),
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
    /// The packet is not in the outbox (an earlier part's, already receipted).
    Missing,
    Failed(String),
}

/// Aborts the plans of a cancelled backup (their reservations are released
/// at once) and deletes what it had uploaded; the error says so.
async fn cancelled<M: ManagerApi, T: PacketTransport>(
    manager: &M,
    transport: &T,
    abandoned: Vec<u64>,
    exclude: &[NodeId],
) -> GridError {
    let plans = abandoned.len();
    let report = clean_up(
        manager,
        transport,
        Cleanup {
            abandoned,
            tickets: Vec::new(),
            skip: exclude.iter().copied().collect(),
        },
    )
    .await;
    GridError::Cancelled(format!(
        "{plans} plan(s) aborted and their reservations released; {} uploaded packet(s) deleted, {} left to the manager's expiry",
        report.deleted,
        report.failed + report.skipped
    ))
}

/// What a committed backup leaves to tidy up: the plans it replaced (their
/// reservations) and packets nothing references. Not part of the backup's
/// answer: it runs after it, in the background.
#[derive(Debug, Clone, Default)]
pub struct Cleanup {
    pub abandoned: Vec<u64>,
    pub tickets: Vec<strew_coordinator::StorageTicket>,
    /// Targets whose uploads failed: not contacted (the manager's expiry of
    /// the abandoned plans covers them).
    pub skip: BTreeSet<NodeId>,
}

/// What [`clean_up`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub deleted: usize,
    pub skipped: usize,
    pub failed: usize,
}

/// Deletes at most this many leftover packets at once.
const CLEANUP_PARALLEL: usize = 16;
/// A leftover delete that takes longer is given up (the target may be gone).
const CLEANUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Abandons replaced plans and deletes leftover packets, in parallel, each
/// delete bounded in time, skipping targets that failed during the backup.
pub async fn clean_up<M: ManagerApi, T: PacketTransport>(
    manager: &M,
    transport: &T,
    cleanup: Cleanup,
) -> CleanupReport {
    let mut tickets = cleanup.tickets;
    for pending_id in cleanup.abandoned {
        match manager.abandon(pending_id).await {
            Ok(more) => tickets.extend(more),
            Err(err) => {
                tracing::warn!(pending_id, %err, "could not abandon a replaced plan; the manager will expire it")
            }
        }
    }
    let mut report = CleanupReport::default();
    let mut jobs: Vec<(Arc<strew_coordinator::StorageTicket>, PacketId)> = Vec::new();
    for ticket in tickets {
        if cleanup.skip.contains(&ticket.target) {
            report.skipped += ticket.entries.len();
            continue;
        }
        let ticket = Arc::new(ticket);
        for entry in &ticket.entries {
            jobs.push((ticket.clone(), entry.packet_id));
        }
    }
    let outcomes: Vec<bool> = futures::stream::iter(jobs)
        .map(|(ticket, id)| async move {
            match tokio::time::timeout(
                CLEANUP_DEADLINE,
                transport.delete(ticket.target, &ticket, id),
            )
            .await
            {
                Ok(Ok(_)) => true,
                Ok(Err(err)) => {
                    tracing::debug!(%err, "leftover packet not deleted now");
                    false
                }
                Err(_) => false,
            }
        })
        .buffer_unordered(CLEANUP_PARALLEL)
        .collect()
        .await;
    report.deleted = outcomes.iter().filter(|ok| **ok).count();
    report.failed = outcomes.len() - report.deleted;
    if report.failed + report.skipped > 0 {
        tracing::info!(
            deleted = report.deleted,
            failed = report.failed,
            skipped = report.skipped,
            "leftover packets not deleted now; the manager's expiry covers them"
        );
    }
    report
}
