//! A backup onto the grid: pipeline into the local outbox → plan with the
//! sequence manager → direct uploads to targets under their tickets →
//! commit with the verified receipts.
//!
//! The outbox (a packet store in the data dir) holds the backup's new
//! packets until the commit, so an interrupted backup re-runs cheaply:
//! chunks already committed are known and skipped, packets already encoded
//! are found in the outbox. A target that fails mid-upload is excluded and
//! the backup re-planned around it (at most [`MAX_PLANS`] times); packets
//! already on a target the new plan keeps are not sent again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use serde::Serialize;
use strew_coordinator::manager::{ChunkPlan, CommitRequest, PacketSpec, PlanRequest};
use strew_coordinator::records::{BackupParams, StoredPacket};
use strew_coordinator::{DataId, NodeId, PacketId, SnapshotId, StoreReceipt};

use super::{GridError, KnownIndex, ManagerApi, PacketTransport, SourceIdentity};
use crate::pipeline::local::StoreSink;
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
    pub warnings: Vec<crate::pipeline::backup::Warning>,
    /// Left for [`clean_up`], after the answer.
    #[serde(skip)]
    pub cleanup: Cleanup,
}

/// One upload's outcome: the bytes sent and the target's receipt, or why not.
type Uploaded = Result<(u64, StoreReceipt), String>;

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
    let (paths, box_, idx, prog) = (
        opts.paths.clone(),
        outbox.clone(),
        known.clone(),
        progress.clone(),
    );
    // The pipeline, then the stripes it encoded that earlier commits do not
    // know, with their packets' sizes: all disk work, off the async workers.
    let (report, new, chunks) = tokio::task::spawn_blocking(move || {
        let mut sink = StoreSink::new(box_.clone());
        let report = pipeline::backup(&paths, &backup_opts, &idx, &mut sink, &prog)?;
        let (new, chunks) = new_stripes(&report.sequence, &idx, &box_)?;
        Ok::<_, GridError>((report, new, chunks))
    })
    .await
    .map_err(|e| GridError::Other(format!("backup task failed: {e}")))??;
    let tree = report.manifest.tree_digest();
    if let Some((previous, digest)) = opts.previous
        && tree == Some(digest)
    {
        // Nothing changed: drop what the pipeline staged (the new manifest's
        // packets) and answer the previous snapshot.
        let staged: Vec<PacketId> = new.iter().flat_map(|s| s.distinct_packets()).collect();
        let box_ = outbox.clone();
        tokio::task::spawn_blocking(move || {
            box_.delete_many(&staged)?;
            box_.compact()?;
            Ok::<_, GridError>(())
        })
        .await
        .map_err(|e| GridError::Other(format!("outbox cleanup task failed: {e}")))??;
        return Ok(GridBackupReport {
            snapshot: previous,
            unchanged: true,
            tree,
            stats: report.stats,
            uploaded_packets: 0,
            uploaded_bytes: 0,
            deduplicated_chunks: 0,
            plans: 0,
            targets: Vec::new(),
            warnings: report.warnings,
            cleanup: Cleanup::default(),
        });
    }

    let mut exclude: Vec<NodeId> = Vec::new();
    let mut done: BTreeSet<(PacketId, NodeId)> = BTreeSet::new();
    // Each target's signed receipt, kept across re-plans: the commit carries them.
    let mut receipts: BTreeMap<(PacketId, NodeId), StoreReceipt> = BTreeMap::new();
    let uploaded_packets = AtomicU64::new(0);
    let uploaded_bytes = AtomicU64::new(0);
    let mut plans = 0;
    let mut abandoned: Vec<u64> = Vec::new();
    let mut last_failure: Option<String> = None;
    let (decision, deduplicated) = loop {
        if progress.is_cancelled() {
            return Err(cancelled(manager, transport, abandoned, &exclude).await);
        }
        plans += 1;
        // In parts of bounded size, all into one pending backup.
        let decision = super::parts::plan_in_parts(
            manager,
            PlanRequest {
                extend: None,
                source: me.node_id,
                set: opts.set.clone(),
                location: me.location,
                params: opts.params.clone(),
                chunks: chunks.clone(),
                exclude: exclude.clone(),
            },
        )
        .await
            .map_err(|err| match (&err, &last_failure) {
                // Say why targets were left out, not only that too few remain.
                (GridError::Refused(why), Some(first)) => {
                    GridError::Refused(strew_overlay::manager::Refusal::new(
                        why.code,
                        format!(
                            "uploads to {} target(s) failed (first error: {first}); planning without them: {why}",
                            exclude.len()
                        ),
                    ))
                }
                _ => err,
            })?;
        let tickets = super::ticket_index(&decision.tickets);
        let live = &progress;
        let jobs: Vec<(PacketId, NodeId)> = decision
            .uploads
            .iter()
            .flat_map(|c| c.packets.iter().map(|p| (p.packet_id, p.target)))
            .filter(|job| !done.contains(job))
            .collect();
        let results: Vec<((PacketId, NodeId), Uploaded)> = futures::stream::iter(jobs)
            .map(|(id, target)| {
                let ticket = tickets.get(&(target, id)).copied();
                let outbox = outbox.clone();
                async move {
                    let result = async {
                        if live.is_cancelled() {
                            return Err("cancelled".to_string());
                        }
                        let ticket = ticket.ok_or("the plan has no ticket for this target")?;
                        let bytes = tokio::task::spawn_blocking(move || outbox.get(&id))
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| e.to_string())?
                            .ok_or("packet missing from the outbox")?;
                        let len = bytes.len() as u64;
                        let receipt = transport
                            .put(target, ticket, id, bytes)
                            .await
                            .map_err(|e| e.detail)?;
                        live.uploaded_bytes.fetch_add(len, Ordering::Relaxed);
                        Ok::<(u64, StoreReceipt), String>((len, receipt))
                    }
                    .await;
                    ((id, target), result)
                }
            })
            .buffer_unordered(opts.parallel_uploads.max(1))
            .collect()
            .await;
        if progress.is_cancelled() {
            abandoned.push(decision.pending_id);
            return Err(cancelled(manager, transport, abandoned, &exclude).await);
        }
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        for ((id, target), result) in results {
            match result {
                Ok((len, receipt)) => {
                    done.insert((id, target));
                    receipts.insert((id, target), receipt);
                    uploaded_packets.fetch_add(1, Ordering::Relaxed);
                    uploaded_bytes.fetch_add(len, Ordering::Relaxed);
                }
                Err(detail) => {
                    tracing::warn!(%target, packet = %id, %detail, "upload failed");
                    failed.insert(target);
                    last_failure.get_or_insert_with(|| format!("{}: {detail}", target.short()));
                }
            }
        }
        if failed.is_empty() {
            let reused = decision.reused.len() as u64;
            break (decision, reused);
        }
        if plans >= MAX_PLANS {
            return Err(GridError::Other(format!(
                "uploads to {} target(s) failed in {plans} plans ({}); re-run the backup to continue \
                 (committed chunks are not sent again)",
                failed.len(),
                failed
                    .iter()
                    .map(|t| t.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        exclude.extend(failed);
        abandoned.push(decision.pending_id);
    };

    let stored: Vec<StoredPacket> = decision
        .uploads
        .iter()
        .flat_map(|c| c.packets.iter().cloned())
        .collect();
    let targets: BTreeSet<NodeId> = stored.iter().map(|p| p.target).collect();
    let receipts: Vec<StoreReceipt> = stored
        .iter()
        .filter_map(|p| receipts.remove(&(p.packet_id, p.target)))
        .collect();
    // Handed in page by page before the commit: no message grows with the
    // number of packets.
    for page in receipts.chunks(strew_coordinator::manager::MAX_RECEIPTS_PER_CALL) {
        manager
            .record_receipts(decision.pending_id, page.to_vec())
            .await?;
    }
    let all_chunks: Vec<DataId> = report.sequence.stripes().map(|s| s.data_id).collect();
    let response = manager
        .commit(CommitRequest {
            pending_id: decision.pending_id,
            source: me.node_id,
            receipts: Vec::new(),
            manifest: report.sequence.snapshot,
            manifest_chunks: report.sequence.manifest.iter().map(|s| s.data_id).collect(),
            chunks: all_chunks,
            bytes: report.stats.bytes_in,
        })
        .await?;
    // Committed: remember the stripes, empty the outbox of this backup's
    // packets (one index transaction for all of them).
    let stripes: Vec<pipeline::StripeRecord> = report.sequence.stripes().cloned().collect();
    let sent: Vec<PacketId> = new.iter().flat_map(|s| s.distinct_packets()).collect();
    let (idx, box_) = (known.clone(), outbox.clone());
    tokio::task::spawn_blocking(move || {
        idx.insert(&stripes)
            .map_err(|e| GridError::Other(format!("known-chunk index: {e}")))?;
        box_.delete_many(&sent)?;
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
        abandoned,
        tickets: response.delete_tickets.clone(),
        skip: exclude.iter().copied().collect(),
    };
    Ok(GridBackupReport {
        snapshot: response.snapshot,
        unchanged: false,
        tree,
        stats: report.stats,
        uploaded_packets: uploaded_packets.into_inner(),
        uploaded_bytes: uploaded_bytes.into_inner(),
        deduplicated_chunks: deduplicated,
        plans,
        targets: targets.into_iter().collect(),
        warnings: report.warnings,
        cleanup,
    })
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

/// The stripes of `sequence` the known-chunk index does not hold (each once),
/// and the plan request's chunks for them, with packet sizes from the outbox.
/// Blocking: reads redb.
fn new_stripes(
    sequence: &pipeline::Sequence,
    known: &KnownIndex,
    outbox: &PacketStore,
) -> Result<(Vec<pipeline::StripeRecord>, Vec<ChunkPlan>), GridError> {
    use crate::pipeline::KnownChunks;
    let mut new: Vec<pipeline::StripeRecord> = Vec::new();
    let mut seen = BTreeSet::new();
    for s in sequence.stripes() {
        if seen.insert(s.data_id) && known.known(&s.data_id).is_none() {
            new.push(s.clone());
        }
    }
    let mut chunks = Vec::with_capacity(new.len());
    let mut sizes: HashMap<PacketId, u64> = HashMap::new();
    for s in &new {
        let mut packets = Vec::with_capacity(s.packets.len());
        for id in &s.packets {
            let size = match sizes.get(id) {
                Some(size) => *size,
                None => {
                    let size = outbox.size_of(id)?.ok_or_else(|| {
                        GridError::Other(format!("packet {id} vanished from the outbox"))
                    })?;
                    sizes.insert(*id, size);
                    size
                }
            };
            packets.push(PacketSpec {
                packet_id: *id,
                size,
            });
        }
        chunks.push(ChunkPlan {
            data_id: s.data_id,
            packets,
        });
    }
    Ok((new, chunks))
}
