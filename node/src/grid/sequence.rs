//! Fetching a snapshot's sequence in pages (`FetchSequencePage`, at most
//! [`MAX_SEQUENCE_PAGE`] stripes each): every page is sealed to this node
//! and opened here, checked to belong to the same snapshot and manifest as
//! the first, and appended; no manager answer grows with the snapshot.
//! This module owns the paging loop only; restore decides what to read.

use strew_coordinator::SnapshotId;
use strew_coordinator::manager::MAX_SEQUENCE_PAGE;
use strew_coordinator::seal::{Sequence, open_as_recipient};

use super::{GridError, ManagerApi, SourceIdentity};

/// The whole sequence of `snapshot`, fetched page by page.
pub async fn fetch_paged<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
) -> Result<Sequence, GridError> {
    fetch_in_pages_of(me, manager, snapshot, MAX_SEQUENCE_PAGE as u32).await
}

/// [`fetch_paged`] with pages of `page` stripes (1 to [`MAX_SEQUENCE_PAGE`]).
pub async fn fetch_in_pages_of<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
    page: u32,
) -> Result<Sequence, GridError> {
    let mut whole: Option<Sequence> = None;
    for_each_page_of(me, manager, snapshot, page, |page| {
        match whole.as_mut() {
            None => whole = Some(page),
            Some(seq) => seq.stripes.extend(page.stripes),
        }
        Ok(())
    })
    .await?;
    whole.ok_or_else(|| GridError::Other(format!("snapshot {snapshot}: no sequence page")))
}

/// Hands `snapshot`'s sequence to `visit` a page at a time, holding one
/// page: for whoever only counts or scans (the placements `status` shows,
/// the health metrics), so no memory grows with the snapshot.
pub async fn for_each_page<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
    visit: impl FnMut(Sequence) -> Result<(), GridError>,
) -> Result<(), GridError> {
    for_each_page_of(me, manager, snapshot, MAX_SEQUENCE_PAGE as u32, visit).await
}

async fn for_each_page_of<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
    page: u32,
    mut visit: impl FnMut(Sequence) -> Result<(), GridError>,
) -> Result<(), GridError> {
    let secret_key = x25519_dalek::StaticSecret::from(me.x25519_secret);
    let open = |sealed| -> Result<Sequence, GridError> {
        let plain = open_as_recipient(&secret_key, snapshot.as_bytes(), &sealed)
            .map_err(|source| GridError::Seal { snapshot, source })?;
        Sequence::from_bytes(&plain).map_err(|source| GridError::Seal { snapshot, source })
    };
    // What every page must agree on with the first.
    let mut first: Option<(
        SnapshotId,
        strew_coordinator::DataId,
        Vec<strew_coordinator::DataId>,
    )> = None;
    let mut total = u64::MAX;
    let mut from = 0u64;
    while from < total {
        let (sealed, all) = manager.fetch_sequence_page(snapshot, from, page).await?;
        let page = open(sealed)?;
        let fetched = page.stripes.len() as u64;
        let header = (page.snapshot, page.manifest, page.manifest_chunks.clone());
        match &first {
            None => {
                total = all;
                first = Some(header);
            }
            Some(seen) => {
                if all != total || *seen != header {
                    return Err(GridError::Other(format!(
                        "the pages of snapshot {snapshot}'s sequence disagree (the snapshot changed while it was read?)"
                    )));
                }
            }
        }
        if fetched == 0 && from < total {
            return Err(GridError::Other(format!(
                "the manager answered an empty page at stripe {from} of {total} of snapshot {snapshot}"
            )));
        }
        visit(page)?;
        from += fetched;
    }
    if first.is_none() {
        return Err(GridError::Other(format!(
            "snapshot {snapshot}: no sequence page"
        )));
    }
    Ok(())
}
