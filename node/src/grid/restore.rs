//! A restore from the grid: fetch the snapshot's sequence sealed to this
//! node, open it with the node's X25519 secret, then let the pipeline's
//! restore open the snapshot root with the private convergence secret and
//! pull any K packets of each stripe directly from their targets
//! (a packet that is missing, unreachable or corrupt is replaced by another
//! of its stripe), verify every chunk and rebuild the tree. Works from a
//! fresh machine holding only the exported key: everything else comes from
//! the manager and the targets. Packets are read under the read tickets
//! the manager gives the snapshot's owner; a chunk whose packets turn out
//! unusable (corrupt, undecodable) is reported to the manager, which then
//! never reuses that copy for a new backup.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use strew_coordinator::records::RestoreOutcome;
use strew_coordinator::seal::Sequence as SealedSequence;
use strew_coordinator::{NodeId, PacketId, SnapshotId};

use super::{GridError, ManagerApi, PacketTransport, SourceIdentity, TransportError};

pub mod feed;
use crate::pipeline::codec::StripeError;
use crate::pipeline::manifest_disk::DiskManifest;
use crate::pipeline::restore::RestoreError;
use crate::pipeline::{
    self, PacketSource, RestoreKeys, RestoreOptions, RestoreProgress, RestoreReport, Sequence,
    StripeRecord,
};

#[derive(Debug, Clone, Serialize)]
pub struct GridRestoreReport {
    pub snapshot: SnapshotId,
    pub dest: PathBuf,
    pub restore: RestoreReport,
    /// Packets fetched, and fetch attempts that failed (target down or lying).
    pub fetched: u64,
    pub failed_fetches: u64,
}

/// Restores `snapshot` into `dest`, reading its sequence a page at a
/// time ([`feed`]): the manifest first, then the data from the first page
/// on while the next page is fetched.
#[allow(clippy::too_many_arguments)]
pub async fn grid_restore<M: ManagerApi, T: PacketTransport + 'static>(
    me: &SourceIdentity,
    manager: &M,
    transport: Arc<T>,
    snapshot: SnapshotId,
    dest: PathBuf,
    keys: RestoreKeys,
    opts: RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<GridRestoreReport, GridError> {
    let feed::Opened {
        head,
        head_page,
        rest,
    } = feed::open(me, manager, snapshot).await?;
    let source = GridSource::with_page(transport, head_page);
    let (pages, fetch) = rest.feed(me, manager);
    let current = source.page.clone();
    let mut pages = pages.installing(move |page| {
        *current.write().unwrap_or_else(|p| p.into_inner()) = page;
    });
    let dest2 = dest.clone();
    let restoring = tokio::task::spawn_blocking(move || {
        // The root opens with the owner's secret; the manifest names the
        // secret that verifies the data. Nothing is written before both hold.
        let result = pipeline::restore::restore_paged(
            &head, &mut pages, &keys, &source, &dest2, &opts, &progress,
        );
        // The feed goes first: a fetch still running stops.
        drop(pages);
        (result, source, head)
    });
    let ((), joined) = tokio::join!(fetch, restoring);
    let (result, source, head) =
        joined.map_err(|e| GridError::Other(format!("restore task failed: {e}")))?;
    let outcome = match &result {
        Ok(r) => RestoreOutcome::Succeeded { bytes: r.bytes },
        Err(e) => RestoreOutcome::Failed {
            reason: e.to_string(),
        },
    };
    if let Err(err) = manager.record_restore(snapshot, outcome).await {
        tracing::warn!(%err, "could not record the restore with the manager");
    }
    if let Err(RestoreError::Stripe(e)) = &result {
        // The stripe that failed is the manifest's or the current page's.
        let page: Vec<StripeRecord> = source
            .page
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .records
            .clone();
        let stripes = head.manifest.iter().chain(&page);
        report_unusable(manager, head.snapshot, stripes, e).await;
    }
    let restore = result?;
    Ok(GridRestoreReport {
        snapshot,
        dest,
        restore,
        fetched: source.fetched.load(std::sync::atomic::Ordering::Relaxed),
        failed_fetches: source.failed.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Tells the manager a chunk's packets could not be used (corrupt, or
/// intact but undecodable: garbage registered under the chunk), so its copy
/// is not reused for new backups. Missing packets alone are not reported
/// (the target may only be down), nor the manifest's wrong secret (this
/// node may hold the wrong key). Best effort. `stripes` are those the
/// failed one is among; `manifest` is the snapshot's manifest id.
async fn report_unusable<'a, M: ManagerApi>(
    manager: &M,
    manifest: strew_coordinator::DataId,
    stripes: impl Iterator<Item = &'a StripeRecord>,
    e: &StripeError,
) {
    let data_id = match e {
        StripeError::NotEnoughPackets {
            data_id, corrupt, ..
        } if !corrupt.is_empty() => *data_id,
        StripeError::NotEnoughPackets { .. } => return,
        // The manifest's key does not name this chunk: this node's problem,
        // not the stored copy's.
        StripeError::WrongKey { .. } => return,
        StripeError::WrongSecret { data_id } if *data_id == manifest => return,
        StripeError::WrongSecret { data_id }
        | StripeError::WrongContent { data_id, .. }
        | StripeError::Format { data_id, .. }
        | StripeError::Erasure { data_id, .. }
        | StripeError::Decompress { data_id, .. } => *data_id,
    };
    let packets: Vec<PacketId> = stripes
        .filter(|s| s.data_id == data_id)
        .flat_map(|s| s.packets.iter().copied())
        .collect();
    match manager.report_bad(data_id, packets).await {
        Ok(()) => tracing::warn!(chunk = %data_id, "reported an unusable chunk to the manager"),
        Err(err) => tracing::warn!(chunk = %data_id, %err, "could not report an unusable chunk"),
    }
}

/// Where a snapshot's packets are: packets (and bytes) per target, read
/// from its sealed sequence (only its source can open it).
pub async fn snapshot_targets<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
) -> Result<std::collections::BTreeMap<NodeId, (u64, u64)>, GridError> {
    let mut per_target = std::collections::BTreeMap::new();
    super::sequence::for_each_page(me, manager, snapshot, |page| {
        count_per_target(&mut per_target, &page);
        Ok(())
    })
    .await?;
    Ok(per_target)
}

/// Adds `page`'s packets and bytes to each target's count.
pub fn count_per_target(
    per_target: &mut std::collections::BTreeMap<NodeId, (u64, u64)>,
    page: &SealedSequence,
) {
    for entry in page.stripes.iter().flat_map(|s| &s.packets) {
        for target in &entry.targets {
            let e = per_target.entry(*target).or_default();
            e.0 += 1;
            e.1 += entry.size;
        }
    }
}

/// The snapshot's sequence from the manager, opened with this node's key.
pub async fn open_sequence<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
) -> Result<SealedSequence, GridError> {
    // In pages: no answer grows with the snapshot.
    super::sequence::fetch_paged(me, manager, snapshot).await
}

/// A snapshot's manifest, decoded from its manifest stripes alone (no data
/// packet is fetched) into scratch files, its bytes copied to `copy` as
/// they stream (the daemon's manifest cache), and how many packets that took.
pub async fn grid_manifest<M: ManagerApi, T: PacketTransport + 'static>(
    me: &SourceIdentity,
    manager: &M,
    transport: Arc<T>,
    snapshot: SnapshotId,
    keys: RestoreKeys,
    mut copy: Box<dyn std::io::Write + Send>,
) -> Result<ManifestRead, GridError> {
    // Only the root's and manifest's stripes are read (the sequence's
    // tail): no data page is fetched.
    let feed::Opened {
        head, head_page, ..
    } = feed::open(me, manager, snapshot).await?;
    let source = GridSource::with_page(transport, head_page);
    let (result, source) = tokio::task::spawn_blocking(move || {
        let result = pipeline::restore::open_manifest_copying(&head, &keys, &source, &mut copy);
        (result, source)
    })
    .await
    .map_err(|e| GridError::Other(format!("manifest task failed: {e}")))?;
    let (manifest, _, copied) = result?;
    Ok(ManifestRead {
        manifest,
        copied,
        fetched: source.fetched.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// A snapshot's manifest as [`grid_manifest`] read it.
pub struct ManifestRead {
    /// In scratch files: a few bytes an entry in memory.
    pub manifest: DiskManifest,
    /// Whether the copy was written whole.
    pub copied: bool,
    /// Packets fetched to read it.
    pub fetched: u64,
}

/// The manager's sequence as the pipeline wants it, plus where each packet is.
pub fn to_pipeline_sequence(seq: &SealedSequence) -> (Sequence, HashMap<PacketId, Vec<NodeId>>) {
    let mut targets: HashMap<PacketId, Vec<NodeId>> = HashMap::new();
    let mut data = Vec::new();
    let mut manifest_by_id: HashMap<_, StripeRecord> = HashMap::new();
    for stripe in &seq.stripes {
        for entry in &stripe.packets {
            let list = targets.entry(entry.packet_id).or_default();
            for t in &entry.targets {
                if !list.contains(t) {
                    list.push(*t);
                }
            }
        }
        let record = StripeRecord {
            data_id: stripe.data_id,
            plain_len: 0,
            packets: stripe.packets.iter().map(|e| e.packet_id).collect(),
        };
        if seq.manifest_chunks.contains(&stripe.data_id) {
            manifest_by_id.insert(stripe.data_id, record);
        } else {
            data.push(record);
        }
    }
    let manifest = seq
        .manifest_chunks
        .iter()
        .filter_map(|id| manifest_by_id.get(id).cloned())
        .collect();
    (
        Sequence {
            snapshot: seq.manifest,
            manifest,
            data,
        },
        targets,
    )
}

/// Fetches packets from their targets for the (synchronous, parallel)
/// pipeline restore, bridging into the async transport: each fetch is
/// spawned on the runtime and its answer awaited by the calling (blocking)
/// thread, which must not be a runtime worker.
struct GridSource<T> {
    transport: Arc<T>,
    /// The stripes being read: where their packets are and the tickets to
    /// read them (a paged restore swaps in each page).
    page: Arc<std::sync::RwLock<feed::Page>>,
    handle: tokio::runtime::Handle,
    fetched: std::sync::atomic::AtomicU64,
    failed: std::sync::atomic::AtomicU64,
    /// What each target showed during this restore (speed, failures):
    /// stripes are read from the fastest targets, failed ones are skipped.
    speeds: std::sync::Mutex<super::fetch_order::Observed>,
}

impl<T: PacketTransport + 'static> GridSource<T> {
    fn with_page(transport: Arc<T>, page: feed::Page) -> Self {
        GridSource {
            transport,
            page: Arc::new(std::sync::RwLock::new(page)),
            handle: tokio::runtime::Handle::current(),
            fetched: Default::default(),
            failed: Default::default(),
            speeds: Default::default(),
        }
    }

    /// One fetch, run on the runtime; this (blocking) thread waits for its answer.
    fn get(&self, target: NodeId, id: PacketId) -> Result<Vec<u8>, TransportError> {
        let ticket = self
            .page
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tickets
            .get(&target, &id)
            .cloned();
        let Some(ticket) = ticket else {
            return Err(TransportError::new(
                target,
                super::TransportFailure::Local,
                format!("the manager gave no read ticket for packet {id} there"),
            ));
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let transport = self.transport.clone();
        self.handle.spawn(async move {
            let _ = tx.send(transport.get(target, &ticket, id).await);
        });
        rx.blocking_recv().unwrap_or_else(|_| {
            Err(TransportError::new(
                target,
                super::TransportFailure::Local,
                "the fetch task ended without an answer (runtime shutting down?)",
            ))
        })
    }
}

impl<T: PacketTransport + 'static> PacketSource for GridSource<T> {
    fn order(&self, packets: &[PacketId]) -> Vec<usize> {
        self.speeds.lock().unwrap_or_else(|p| p.into_inner()).order(
            packets,
            &self.page.read().unwrap_or_else(|p| p.into_inner()).targets,
        )
    }

    fn fetch(&self, id: &PacketId) -> Option<Vec<u8>> {
        let ranked = self
            .speeds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .targets_for(
                self.page
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .targets
                    .get(id)?,
            );
        for target in ranked {
            // A target that failed once (down, or serving bad bytes) is not
            // asked again during this restore: the stripe's other packets
            // are used at once instead of waiting on it for every stripe.
            let Some(started) = self
                .speeds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .start(target)
            else {
                self.failed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                continue;
            };
            let result = self.get(target, *id);
            let mut speeds = self.speeds.lock().unwrap_or_else(|p| p.into_inner());
            match result {
                Ok(bytes) => {
                    speeds.finish(target, started, Some(&bytes));
                    self.fetched
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Some(bytes);
                }
                Err(err) => {
                    speeds.finish(target, started, None);
                    self.failed
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(packet = %id, %err, "fetch failed; trying the stripe's other packets");
                }
            }
        }
        None
    }
}
