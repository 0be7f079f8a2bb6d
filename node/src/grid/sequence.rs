//! Fetching a snapshot's sequence in pages (`FetchSequencePage`, at most
//! [`MAX_SEQUENCE_PAGE`] stripes each): every page is sealed to this node
//! and opened here, checked to belong to the same snapshot and manifest as
//! the first, and appended; no manager answer grows with the snapshot.
//! This module owns the paging loop only; restore decides what to read.

use strew_coordinator::manager::MAX_SEQUENCE_PAGE;
use strew_coordinator::seal::{Sequence, open_as_recipient};
use strew_coordinator::{DataId, SnapshotId};

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

/// One page of `snapshot`'s sequence from stripe `from` (at most `count`
/// stripes), opened with this node's key, and the sequence's length.
pub async fn fetch_page<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
    from: u64,
    count: u32,
) -> Result<(Sequence, u64), GridError> {
    let (sealed, total) = manager.fetch_sequence_page(snapshot, from, count).await?;
    let secret = x25519_dalek::StaticSecret::from(me.x25519_secret);
    let plain = open_as_recipient(&secret, snapshot.as_bytes(), &sealed)
        .map_err(|source| GridError::Seal { snapshot, source })?;
    let page =
        Sequence::from_bytes(&plain).map_err(|source| GridError::Seal { snapshot, source })?;
    if page.stripes.is_empty() && from < total {
        return Err(GridError::Other(format!(
            "the manager answered an empty page at stripe {from} of {total} of snapshot {snapshot}"
        )));
    }
    Ok((page, total))
}

/// What every page of one sequence must agree on with the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    snapshot: SnapshotId,
    pub manifest: DataId,
    pub manifest_chunks: Vec<DataId>,
    pub total: u64,
}

impl Header {
    pub fn of(page: &Sequence, total: u64) -> Self {
        Header {
            snapshot: page.snapshot,
            manifest: page.manifest,
            manifest_chunks: page.manifest_chunks.clone(),
            total,
        }
    }

    /// `page` (of a sequence `total` long) belongs with the first.
    pub fn check(&self, page: &Sequence, total: u64) -> Result<(), GridError> {
        if *self != Header::of(page, total) {
            return Err(GridError::Other(format!(
                "the pages of snapshot {}'s sequence disagree (the snapshot changed while it was read?)",
                self.snapshot
            )));
        }
        Ok(())
    }
}

async fn for_each_page_of<M: ManagerApi>(
    me: &SourceIdentity,
    manager: &M,
    snapshot: SnapshotId,
    page: u32,
    mut visit: impl FnMut(Sequence) -> Result<(), GridError>,
) -> Result<(), GridError> {
    let mut first: Option<Header> = None;
    let mut total = u64::MAX;
    let mut from = 0u64;
    while from < total {
        let (page, all) = fetch_page(me, manager, snapshot, from, page).await?;
        match &first {
            None => {
                total = all;
                first = Some(Header::of(&page, all));
            }
            Some(header) => header.check(&page, all)?,
        }
        from += page.stripes.len() as u64;
        visit(page)?;
    }
    if first.is_none() {
        return Err(GridError::Other(format!(
            "snapshot {snapshot}: no sequence page"
        )));
    }
    Ok(())
}
