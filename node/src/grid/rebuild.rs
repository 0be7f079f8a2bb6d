//! Re-registering a source's snapshots with a rebuilt coordinator group
//! (issue 18, SPEC R15): when the whole group was lost and a new one was
//! founded with the grid key and marked rebuilt (`strew grid rebuild`), the
//! source hands it every snapshot its local roots describe that the new
//! group does not list, one attested page at a time: the page, the old
//! group's attestation of the sequence,
//! the signer's certificate and the set's parameters. The group checks the
//! attestation and records the snapshot, so restore, forget, repair and
//! dedup work on it again.
//!
//! Owns that pass only; the root format is [`super::roots`]', the checks
//! and records the coordinator's.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Serialize;
use strew_coordinator::attest::page_digest;
use strew_coordinator::{BackupParams, MemberCert, SnapshotAttestation};
use strew_overlay::manager::ReregisterRequest;

use super::overlay::OverlayManager;
use super::roots::{Root, RootError, local};
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

/// One pass (see the module doc), one local root at a time.
pub async fn reregister_roots(
    manager: &OverlayManager,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
) -> Result<Reregistration, RebuildError> {
    let names = local::names(data_dir).await?;
    let mut report = Reregistration::default();
    if names.is_empty() {
        return Ok(report);
    }
    let listed: BTreeSet<_> = manager
        .list(None)
        .await?
        .into_iter()
        .map(|s| s.snapshot)
        .collect();
    for (snapshot, ids) in names {
        if listed.contains(&snapshot) {
            report.roots += 1;
            report.listed += 1;
            continue;
        }
        let Some(root) = local::open(data_dir, owner, me, ids).await? else {
            continue;
        };
        report.roots += 1;
        let doc = &root.doc;
        let (Some(attestation), Some(cert), Some(params)) = (
            doc.attestation.clone(),
            doc.cert.clone(),
            doc.params.clone(),
        ) else {
            report.unattested += 1;
            continue;
        };
        match reregister_one(manager, &root, attestation, cert, params).await {
            Ok(()) => report.registered += 1,
            Err(err) => {
                report.refused += 1;
                tracing::warn!(snapshot = %doc.snapshot, %err, "a snapshot was not re-registered");
            }
        }
    }
    Ok(report)
}

/// Hands a rebuilt group one root's pages, in order, from the first page
/// the group does not have.
async fn reregister_one(
    manager: &OverlayManager,
    root: &Root,
    attestation: SnapshotAttestation,
    cert: MemberCert,
    params: BackupParams,
) -> Result<(), GridError> {
    let mut digests = Vec::with_capacity(root.parts.len() * 32);
    for part in &root.parts {
        let digest = page_digest(&part.page).map_err(|e| GridError::Other(e.to_string()))?;
        digests.extend_from_slice(&digest);
    }
    let pages = root.parts.len() as u32;
    let mut page = 0u32;
    // Each answer moves on by at least one page, or the group is done.
    for _ in 0..=2 * pages {
        let part = root.parts.get(page as usize).ok_or_else(|| {
            GridError::Other(format!("the group asked for page {page} of {pages}"))
        })?;
        let request = ReregisterRequest {
            attestation: attestation.clone(),
            cert: cert.clone(),
            pages: serde_bytes::ByteBuf::from(digests.clone()),
            page,
            sequence: part.page.clone(),
            params: params.to_wire(),
        };
        let (done, all) = manager.reregister(request).await?;
        if done >= all {
            return Ok(());
        }
        page = done;
    }
    Err(GridError::Other(
        "the group did not take the root's pages in order".into(),
    ))
}
