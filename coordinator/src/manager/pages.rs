//! A snapshot's sequence and a source's listing in pages (SPEC R12):
//! `FetchSequencePage` answers at most [`MAX_SEQUENCE_PAGE`] stripes from a
//! cursor, sealed to the snapshot's source like a whole sequence, and
//! `ListPage` at most [`MAX_LIST_PAGE`] snapshots, each with the total
//! count, so no answer grows with the snapshot or the number of snapshots.
//! This module reads; no I/O, no clock.

use super::*;

/// Most stripes one sequence page carries: about 1.2 MB at width 6 and
/// 3.3 MB at width 16, under the manager protocol's 4 MiB goal.
pub const MAX_SEQUENCE_PAGE: usize = 2048;

/// Most snapshots one listing page carries: a summary is about 120 bytes
/// plus its set name, so a page stays well under the 4 MiB message bound.
pub const MAX_LIST_PAGE: usize = 2048;

/// One page of a sequence: its stripes `from..from+n` (with the snapshot,
/// manifest and manifest chunks of the whole sequence), sealed to the
/// source, and how many stripes the whole sequence has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SequencePage {
    pub sealed: SealedForRecipient,
    pub total: u64,
}

impl Manager {
    /// (d) Stripes `from..from+count` (`count` at most
    /// [`MAX_SEQUENCE_PAGE`]) of one of `requester`'s snapshots, sealed to it.
    pub fn fetch_sequence_page<R: CryptoRng + ?Sized>(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
        rng: &mut R,
    ) -> Result<SequencePage, ManagerError> {
        let count = count as usize;
        if count == 0 || count > MAX_SEQUENCE_PAGE {
            return Err(ManagerError::Invalid(format!(
                "a sequence page holds 1 to {MAX_SEQUENCE_PAGE} stripes, not {count}"
            )));
        }
        // Only this page's stripes are built: fetching a whole sequence in
        // pages costs the manager no more than fetching it at once.
        let (record, mut sequence) = self.sequence_header(requester, snapshot)?;
        let total = record.chunks.len();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(total);
        let end = start.saturating_add(count).min(total);
        sequence.stripes = self.current_stripes(record, &sequence, start..end)?;
        let sealed = self.seal_for(requester, snapshot, &sequence, rng)?;
        Ok(SequencePage {
            sealed,
            total: total as u64,
        })
    }

    /// (e) Snapshots `from..from+count` (`count` at most [`MAX_LIST_PAGE`])
    /// of [`list_snapshots`](Self::list_snapshots), and how many there are.
    pub fn list_snapshots_page(
        &self,
        source: &NodeId,
        set: Option<&str>,
        from: u64,
        count: u32,
    ) -> Result<(Vec<SnapshotSummary>, u64), ManagerError> {
        let count = count as usize;
        if count == 0 || count > MAX_LIST_PAGE {
            return Err(ManagerError::Invalid(format!(
                "a listing page holds 1 to {MAX_LIST_PAGE} snapshots, not {count}"
            )));
        }
        let mut all = self.list_snapshots(source, set);
        let total = all.len() as u64;
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(all.len());
        let end = start.saturating_add(count).min(all.len());
        all.truncate(end);
        Ok((all.split_off(start), total))
    }
}
