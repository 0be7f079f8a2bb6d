//! Keeping a source's snapshot roots alive (issue 18): targets holding a
//! root copy leave or die like any other, and a root nobody holds cannot be
//! found by `--from-grid` recovery. The manager does not know the roots (a
//! root is the owner's), so their source repairs them: for each local root,
//! one at a time, it asks the snapshot's targets which of its roots they
//! hold (`ListRoots`, every page, once per target and pass) and puts each
//! part again on the next of its targets until [`ROOT_COPIES`] hold it.
//! Owns that pass only; the root format and placement order are
//! [`super::roots`]'.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;
use strew_coordinator::{NodeId, PacketId};

use super::SourceIdentity;
use super::roots::{MAX_ASKS_PER_PART, ROOT_COPIES, RootError, held_by, local, part_targets};
use crate::pipeline::secret::ConvergenceSecret;

/// `ListRoots` pages read from one target (256 ids each).
const MAX_LIST_PAGES: usize = 64;

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RootUpkeep {
    /// Local roots looked at.
    pub roots: usize,
    /// Copies of parts put again on a target.
    pub copies_added: usize,
    /// Roots with a part still held by fewer than [`ROOT_COPIES`] targets
    /// after the pass.
    pub short: usize,
}

/// One pass over this node's local roots (see the module doc).
pub async fn keep_roots_alive(
    overlay: &strew_overlay::OverlayHandle,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
) -> Result<RootUpkeep, RootError> {
    let names = local::names(data_dir).await?;
    let mut report = RootUpkeep::default();
    // Which of our roots each target holds (`None`: it did not answer).
    let mut held: BTreeMap<NodeId, Option<BTreeSet<PacketId>>> = BTreeMap::new();
    for (_, ids) in names {
        // A root that does not open (another owner's, or damaged) is not
        // ours to keep.
        let Some(root) = local::open(data_dir, owner, me, ids).await? else {
            continue;
        };
        report.roots += 1;
        let targets = root.targets();
        let mut short = false;
        for part in &root.parts {
            let asked = part_targets(&targets, part.part.part, MAX_ASKS_PER_PART);
            for target in &asked {
                if !held.contains_key(target) {
                    let ids = match held_by(overlay, *target, MAX_LIST_PAGES).await {
                        Ok(ids) => Some(ids.into_iter().collect()),
                        Err(err) => {
                            tracing::debug!(%target, %err, "root upkeep: a target did not list");
                            None
                        }
                    };
                    held.insert(*target, ids);
                }
            }
            let holds = |t: &NodeId| {
                held.get(t)
                    .and_then(|h| h.as_ref())
                    .is_some_and(|ids| ids.contains(&part.id))
            };
            let mut copies = asked.iter().filter(|t| holds(t)).count();
            // Only targets that answered are asked to take a copy.
            let answered: Vec<NodeId> = asked
                .iter()
                .filter(|t| held.get(t).is_some_and(|h| h.is_some()) && !holds(t))
                .copied()
                .collect();
            for target in answered {
                if copies >= usize::from(ROOT_COPIES) {
                    break;
                }
                match overlay.put_root(target, part.bytes.clone()).await {
                    Ok(()) => {
                        copies += 1;
                        report.copies_added += 1;
                        if let Some(Some(ids)) = held.get_mut(&target) {
                            ids.insert(part.id);
                        }
                    }
                    Err(err) => tracing::debug!(%target, %err, "root upkeep: a copy was refused"),
                }
            }
            short |= copies < usize::from(ROOT_COPIES);
        }
        if short {
            report.short += 1;
        }
    }
    Ok(report)
}
