//! Recovery without coordinators (issue 18, SPEC R15): finds this owner's
//! snapshot roots — its own `roots/` folder and the root packets targets hold
//! for its node id (`ListRoots`, then holder reads) — opens them with the
//! owner's secrets, and restores a snapshot by reading every packet as its
//! holder, so no manager ticket and no coordinator is needed.
//!
//! Owns the search (bounded concurrency and time) and the holder-read packet
//! source; the root format is `roots`', the restore itself the pipeline's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use strew_coordinator::seal::Sequence as SealedSequence;
use strew_coordinator::{NodeId, PacketId};
use strew_overlay::OverlayHandle;

use super::roots::{self, RootDocument};
use super::{GridError, SourceIdentity};
use crate::pipeline::secret::ConvergenceSecret;
use crate::pipeline::{
    self, PacketSource, RestoreKeys, RestoreOptions, RestoreProgress, RestoreReport,
};

/// Peers asked for roots at once.
pub const ASK_AT_ONCE: usize = 8;
/// Pages of `ListRoots` read from one peer (at most 256 root packets each).
pub const MAX_PAGES: usize = 64;
/// How long asking the peers which roots they hold may take.
pub const SEARCH_TIME: Duration = Duration::from_secs(30);
/// How long reading the root packets found may take (a large snapshot's
/// root is thousands of packets).
pub const FETCH_TIME: Duration = Duration::from_secs(300);
/// Root packets read at once.
pub const FETCH_AT_ONCE: usize = 16;

/// One snapshot found from its root.
#[derive(Debug, Clone)]
pub struct Found {
    pub doc: RootDocument,
    pub sequence: SealedSequence,
    /// Where its root was found: `None` for the local `roots/` folder.
    pub from: Vec<Option<NodeId>>,
}

/// A found snapshot as `strew snapshots --from-grid --json` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct FoundSummary {
    pub snapshot: String,
    pub set: String,
    pub time_ms: u64,
    pub bytes: u64,
    pub packets: u64,
    /// Nodes holding a copy of its root (and "local" for this data dir).
    pub roots_at: Vec<String>,
}

impl Found {
    pub fn summary(&self) -> FoundSummary {
        FoundSummary {
            snapshot: self.doc.snapshot.to_string(),
            set: self.doc.set.clone(),
            time_ms: self.doc.time_ms,
            bytes: self.doc.bytes,
            packets: self
                .sequence
                .stripes
                .iter()
                .map(|s| s.packets.len() as u64)
                .sum(),
            roots_at: self
                .from
                .iter()
                .map(|f| f.map_or_else(|| "local".to_string(), |n| n.to_string()))
                .collect(),
        }
    }
}

/// The root packet ids `peer` holds for this node (every page, bounded).
async fn roots_on(overlay: &OverlayHandle, peer: NodeId) -> (NodeId, Vec<PacketId>) {
    match roots::held_by(overlay, peer, MAX_PAGES).await {
        Ok(ids) => (peer, ids),
        Err(err) => {
            tracing::debug!(%peer, %err, "no roots from this peer");
            (peer, Vec::new())
        }
    }
}

/// Reads root packet `id` from the first of `peers` that serves it.
async fn fetch_once(overlay: &OverlayHandle, id: PacketId, peers: Vec<NodeId>) -> Option<Vec<u8>> {
    for peer in peers {
        match overlay.get_held_packet(peer, id).await {
            Ok(Some(bytes)) => return Some(bytes),
            Ok(None) => {}
            Err(err) => tracing::debug!(%peer, packet = %id, %err, "root packet not read"),
        }
    }
    None
}

/// Every snapshot whose root this owner can find: in `data_dir/roots/` and
/// on `peers` (asked [`ASK_AT_ONCE`] at a time, for at most [`SEARCH_TIME`]).
/// Each root packet is read once, from one of the peers listing it, unless
/// it is kept locally. Root packets that do not open with this owner's keys
/// are skipped, and so are roots with a part missing everywhere. Newest
/// first.
pub async fn find_roots(
    overlay: &OverlayHandle,
    peers: Vec<NodeId>,
    data_dir: &Path,
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
) -> Result<Vec<Found>, GridError> {
    let dir = data_dir.to_path_buf();
    let local = tokio::task::spawn_blocking(move || roots::load_local(&dir))
        .await
        .map_err(|e| GridError::Other(format!("roots task failed: {e}")))?
        .map_err(|e| GridError::Other(e.to_string()))?;
    // Where each packet is: `None` for this data dir.
    let mut holders: HashMap<PacketId, Vec<Option<NodeId>>> = HashMap::new();
    for (id, _) in &local {
        holders.entry(*id).or_default().push(None);
    }
    let mut packets: Vec<Vec<u8>> = local.into_iter().map(|(_, b)| b).collect();
    // Which peer holds which root packet (collected as they answer, so a
    // search that runs out of time keeps what it heard).
    let mut on_peers: BTreeMap<PacketId, Vec<NodeId>> = BTreeMap::new();
    let mut asked = futures::stream::iter(peers.into_iter().filter(|p| *p != me.node_id))
        .map(|peer| roots_on(overlay, peer))
        .buffer_unordered(ASK_AT_ONCE);
    let listing = async {
        while let Some((peer, ids)) = asked.next().await {
            for id in ids {
                on_peers.entry(id).or_default().push(peer);
            }
        }
    };
    if tokio::time::timeout(SEARCH_TIME, listing).await.is_err() {
        tracing::warn!("the root search ran out of time; reading what was found");
    }
    for (id, peers) in &on_peers {
        holders
            .entry(*id)
            .or_default()
            .extend(peers.iter().map(|p| Some(*p)));
    }
    let wanted: Vec<(PacketId, Vec<NodeId>)> = on_peers
        .into_iter()
        .filter(|(id, _)| !holders.get(id).is_some_and(|h| h.contains(&None)))
        .collect();
    let mut fetching = futures::stream::iter(wanted)
        .map(|(id, peers)| fetch_once(overlay, id, peers))
        .buffer_unordered(FETCH_AT_ONCE);
    let reading = async {
        while let Some(bytes) = fetching.next().await {
            packets.extend(bytes);
        }
    };
    if tokio::time::timeout(FETCH_TIME, reading).await.is_err() {
        tracing::warn!("reading the roots found ran out of time; listing what was read");
    }
    let mut parts: BTreeMap<PacketId, roots::OpenedPart> = BTreeMap::new();
    for bytes in packets {
        let id = PacketId::of(&bytes);
        if parts.contains_key(&id) {
            continue;
        }
        match roots::open_part(bytes, owner, me) {
            Ok(part) => {
                parts.insert(id, part);
            }
            Err(err) => tracing::debug!(%err, "a root packet that is not this owner's"),
        }
    }
    let (whole, partial) = roots::assemble(parts.into_values());
    if partial > 0 {
        tracing::warn!(partial, "roots with a part found nowhere are not listed");
    }
    let mut found = Vec::with_capacity(whole.len());
    let mut to_keep = Vec::new();
    for root in whole {
        let mut from: Vec<Option<NodeId>> = root
            .ids()
            .iter()
            .flat_map(|id| holders.get(id).cloned().unwrap_or_default())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        from.sort_by_key(|f| f.is_some());
        let all_local = root
            .ids()
            .iter()
            .all(|id| holders.get(id).is_some_and(|h| h.contains(&None)));
        found.push(Found {
            doc: root.doc.clone(),
            sequence: root.sequence(),
            from,
        });
        // A root only the grid held is kept locally from now on.
        if !all_local {
            to_keep.push(root);
        }
    }
    let dir = data_dir.to_path_buf();
    let kept = tokio::task::spawn_blocking(move || {
        for root in &to_keep {
            roots::keep_found(&dir, root)?;
        }
        Ok::<_, roots::RootError>(())
    })
    .await
    .map_err(|e| GridError::Other(format!("roots task failed: {e}")))?;
    if let Err(err) = kept {
        tracing::warn!(%err, "roots found on the grid were not kept locally");
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.doc.time_ms));
    Ok(found)
}

/// A restore's outcome, read as this packet's holder.
#[derive(Debug, Clone, Serialize)]
pub struct RecoverReport {
    pub snapshot: String,
    pub dest: PathBuf,
    pub restore: RestoreReport,
    pub fetched: u64,
    pub failed_fetches: u64,
}

/// Restores a found snapshot into `dest`, reading every packet as its holder.
pub async fn restore_found(
    overlay: &OverlayHandle,
    found: &Found,
    dest: PathBuf,
    keys: RestoreKeys,
    opts: RestoreOptions,
    progress: Arc<RestoreProgress>,
) -> Result<RecoverReport, GridError> {
    let (sequence, targets) = super::restore::to_pipeline_sequence(&found.sequence);
    let source = HolderSource {
        overlay: overlay.clone(),
        targets,
        handle: tokio::runtime::Handle::current(),
        fetched: AtomicU64::new(0),
        failed: AtomicU64::new(0),
        avoid: Default::default(),
    };
    let dest2 = dest.clone();
    let (result, source) = tokio::task::spawn_blocking(move || {
        let result = pipeline::restore(&sequence, &keys, &source, &dest2, &opts, &progress);
        (result, source)
    })
    .await
    .map_err(|e| GridError::Other(format!("restore task failed: {e}")))?;
    Ok(RecoverReport {
        snapshot: found.doc.snapshot.to_string(),
        dest,
        restore: result?,
        fetched: source.fetched.load(Ordering::Relaxed),
        failed_fetches: source.failed.load(Ordering::Relaxed),
    })
}

/// Packets read as their holder (no ticket) for the blocking pipeline
/// restore; a target that fails once is not asked again.
struct HolderSource {
    overlay: OverlayHandle,
    targets: HashMap<PacketId, Vec<NodeId>>,
    handle: tokio::runtime::Handle,
    fetched: AtomicU64,
    failed: AtomicU64,
    avoid: std::sync::Mutex<HashSet<NodeId>>,
}

impl HolderSource {
    fn avoided(&self, target: &NodeId) -> bool {
        self.avoid
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(target)
    }
}

impl PacketSource for HolderSource {
    fn fetch(&self, id: &PacketId) -> Option<Vec<u8>> {
        for target in self.targets.get(id)? {
            if self.avoided(target) {
                continue;
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            let (overlay, target_, id_) = (self.overlay.clone(), *target, *id);
            self.handle.spawn(async move {
                let _ = tx.send(overlay.get_held_packet(target_, id_).await);
            });
            match rx.blocking_recv() {
                Ok(Ok(Some(bytes))) => {
                    self.fetched.fetch_add(1, Ordering::Relaxed);
                    return Some(bytes);
                }
                Ok(Ok(None)) => {
                    self.failed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(err)) => {
                    tracing::warn!(packet = %id, %target, %err, "holder read failed");
                    self.failed.fetch_add(1, Ordering::Relaxed);
                    self.avoid
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(*target);
                }
                Err(_) => return None,
            }
        }
        None
    }
}
