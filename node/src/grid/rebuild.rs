//! Re-registering a source's snapshots with a rebuilt coordinator group
//! (issue 18, SPEC R15): when the whole group was lost and a new one was
//! founded with the grid key and marked rebuilt (`strew grid rebuild`), the
//! source hands it every snapshot its local roots describe that the new
//! group does not list: the sequence, the old group's attestation of it,
//! the signer's certificate and the set's parameters. The group checks the
//! attestation and records the snapshot, so restore, forget, repair and
//! dedup work on it again.
//!
//! Owns that pass only; the root format is [`super::roots`]', the checks
//! and records the coordinator's.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use strew_overlay::manager::ReregisterRequest;

use super::overlay::OverlayManager;
use super::roots::{RootError, load_local, open_root};
use super::{GridError, ManagerApi, SourceIdentity};
use crate::pipeline::secret::ConvergenceSecret;
use crate::wire::ToWire;

/// Why a re-registration pass stopped.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Roots(#[from] RootError),
    #[error("the sequence manager: {0}")]
    Manager(#[from] GridError),
}

/// What one pass did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Reregistration {
    /// Local roots that opened with this node's keys.
    pub roots: usize,
    /// Snapshots the group listed already.
    pub listed: usize,
    /// Snapshots the group recorded now (or had recorded meanwhile).
    pub registered: usize,
    /// Roots made before attestations (or without parameters): they still
    /// restore with `--from-grid`, but a rebuilt group cannot believe them.
    pub unattested: usize,
    /// Re-registrations the group refused (logged).
    pub refused: usize,
}

/// One pass (see the module doc).
pub async fn reregister_roots(
    manager: &OverlayManager,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
) -> Result<Reregistration, RebuildError> {
    let (dir, owner_, me_) = (data_dir.to_path_buf(), owner.clone(), me.clone());
    let roots = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for (_, bytes) in load_local(&dir)? {
            if let Ok(opened) = open_root(&bytes, &owner_, &me_) {
                out.push(opened);
            }
        }
        Ok::<_, RootError>(out)
    })
    .await
    .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    let mut report = Reregistration {
        roots: roots.len(),
        ..Reregistration::default()
    };
    if roots.is_empty() {
        return Ok(report);
    }
    let listed: BTreeSet<_> = manager
        .list(None)
        .await?
        .into_iter()
        .map(|s| s.snapshot)
        .collect();
    for (doc, sequence) in roots {
        if listed.contains(&doc.snapshot) {
            report.listed += 1;
            continue;
        }
        let (Some(attestation), Some(cert), Some(params)) = (doc.attestation, doc.cert, doc.params)
        else {
            report.unattested += 1;
            continue;
        };
        let request = ReregisterRequest {
            attestation,
            cert,
            sequence,
            params: params.to_wire(),
        };
        match manager.reregister(request).await {
            Ok(_) => report.registered += 1,
            Err(err) => {
                report.refused += 1;
                tracing::warn!(snapshot = %doc.snapshot, %err, "a snapshot was not re-registered");
            }
        }
    }
    Ok(report)
}
