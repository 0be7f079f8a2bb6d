//! Keeping a source's snapshot roots alive (issue 18): targets holding a
//! root copy leave or die like any other, and a root nobody holds cannot be
//! found by `--from-grid` recovery. The manager does not know the roots (a
//! root is the owner's), so their source repairs them: for each local root,
//! it asks the snapshot's targets which of its roots they hold (`ListRoots`,
//! one page per target covers a holder's at most 64 roots) and puts the
//! root again on the next of those targets until [`ROOT_COPIES`] hold it.
//! Owns that pass only; the root format and placement order are
//! [`super::roots`]'.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use strew_coordinator::{NodeId, PacketId};

use super::SourceIdentity;
use super::roots::{ROOT_COPIES, RootError, load_local, open_root, root_targets};
use crate::pipeline::secret::ConvergenceSecret;

/// Targets of one root asked at most (its copies went to the first of the
/// snapshot's targets that took one).
const MAX_ASKS_PER_ROOT: usize = 16;

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RootUpkeep {
    /// Local roots looked at.
    pub roots: usize,
    /// Copies put again on a target.
    pub copies_added: usize,
    /// Roots still held by fewer than [`ROOT_COPIES`] targets after the pass.
    pub short: usize,
}

/// One pass over this node's local roots (see the module doc).
pub async fn keep_roots_alive(
    overlay: &strew_overlay::OverlayHandle,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
) -> Result<RootUpkeep, RootError> {
    let (dir, owner_, me_) = (data_dir.to_path_buf(), owner.clone(), me.clone());
    let roots: Vec<(PacketId, Vec<u8>, Vec<NodeId>)> = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (id, bytes) in load_local(&dir)? {
            // A root that does not open (another owner's, or damaged) is
            // not ours to keep.
            if let Ok((_, seq)) = open_root(&bytes, &owner_, &me_) {
                let mut targets = root_targets(&seq);
                targets.truncate(MAX_ASKS_PER_ROOT);
                out.push((id, bytes, targets));
            }
        }
        Ok::<_, RootError>(out)
    })
    .await
    .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    // Which of our roots each target holds: one ListRoots page per target.
    let asked: BTreeSet<NodeId> = roots.iter().flat_map(|(_, _, t)| t.clone()).collect();
    let mut held: BTreeMap<NodeId, BTreeSet<PacketId>> = BTreeMap::new();
    for target in asked {
        match overlay.list_roots(target, None).await {
            Ok(ids) => {
                held.insert(target, ids.into_iter().collect());
            }
            Err(err) => tracing::debug!(%target, %err, "root upkeep: a target did not list"),
        }
    }
    let mut report = RootUpkeep {
        roots: roots.len(),
        ..RootUpkeep::default()
    };
    for (id, bytes, targets) in roots {
        let mut copies = targets
            .iter()
            .filter(|t| held.get(t).is_some_and(|ids| ids.contains(&id)))
            .count();
        // Only targets that answered are asked to take a copy.
        for target in targets.iter().filter(|t| held.contains_key(t)) {
            if copies >= usize::from(ROOT_COPIES) {
                break;
            }
            if held.get(target).is_some_and(|ids| ids.contains(&id)) {
                continue;
            }
            match overlay.put_root(*target, bytes.clone()).await {
                Ok(()) => {
                    copies += 1;
                    report.copies_added += 1;
                }
                Err(err) => tracing::debug!(%target, %err, "root upkeep: a copy was refused"),
            }
        }
        if copies < usize::from(ROOT_COPIES) {
            report.short += 1;
        }
    }
    Ok(report)
}
