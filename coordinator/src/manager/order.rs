//! A commit in pages (SPEC R10/R12): a source whose snapshot has more
//! than one page ([`order_page_len`]) of chunks hands its chunk order in page by page
//! (`CommitOrderRequest`, each page one `Command::CommitOrder`), records its
//! receipts page by page, and then commits with an empty `chunks` list: the
//! commit's raft entry (`CommitBackup { paged: true }`) and every message
//! stay bounded whatever the snapshot's size. This module decides; it must
//! not change the state or do I/O.

use super::*;

/// Most chunks one page of a commit's order names (fewer for wide
/// redundancy: see [`order_page_len`]).
pub const MAX_ORDER_PAGE: usize = 512;

/// Most packets the new copies of one page may hold: each costs about 120
/// bytes of entry, so a page stays near 0.75 MB, under the 1 MiB raft
/// entry bound with room to spare.
pub const MAX_ORDER_PAGE_PACKETS: usize = 6144;

/// Most chunks one page of a commit's order may name at redundancy
/// `width` (packets per stripe). A commit of at most this many chunks may
/// also be sent at once.
pub fn order_page_len(width: usize) -> usize {
    (MAX_ORDER_PAGE_PACKETS / width.max(1)).clamp(1, MAX_ORDER_PAGE)
}

/// What a page of a commit's order needs: nothing (it applied already) or
/// a command to replicate.
// The command is built once and moved.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum OrderStep {
    Done(CommitOrderResponse),
    Propose(Command),
}

impl Manager {
    /// Decides one page of a commit's order: each chunk resolved to the
    /// record key the snapshot will use (the copy this backup uploaded, a
    /// reused one, or the source's own earlier copy). A paged order names
    /// each chunk once; a page that repeats one is refused.
    pub fn decide_commit_order(
        &self,
        request: &CommitOrderRequest,
    ) -> Result<OrderStep, ManagerError> {
        let pending = self
            .state
            .pending
            .get(&request.pending_id)
            .ok_or(ApplyError::UnknownPending(request.pending_id))?;
        let most = order_page_len(pending.params.redundancy.width());
        if request.chunks.is_empty() || request.chunks.len() > most {
            return Err(ManagerError::Invalid(format!(
                "a page of backup {}'s order holds 1 to {most} chunks, not {}",
                pending.id,
                request.chunks.len()
            )));
        }
        if pending.source != request.source {
            return Err(ManagerError::Invalid(format!(
                "backup {} belongs to {}, not {}",
                pending.id, pending.source, request.source
            )));
        }
        // A page at 0 starts the order afresh (a source that resumes an
        // interrupted commit hands its whole order in again).
        let recorded = pending.order.len() as u64;
        let end = request.first.saturating_add(request.chunks.len() as u64);
        if request.first > 0 && end <= recorded {
            // A retried page that applied before.
            return Ok(OrderStep::Done(CommitOrderResponse { next: recorded }));
        }
        if request.first > 0 && request.first != recorded {
            return Err(ManagerError::Invalid(format!(
                "the next page of backup {}'s order starts at {recorded}, not {}",
                pending.id, request.first
            )));
        }
        // What earlier pages hold is looked up in the pending index: a page
        // costs its own size, not the order's.
        let restart = request.first == 0;
        let state = &self.state;
        let mut seen: BTreeSet<DataId> = BTreeSet::new();
        let mut keys = Vec::with_capacity(request.chunks.len());
        let mut stored = Vec::new();
        for data_id in &request.chunks {
            let earlier = if restart {
                None
            } else {
                state.ordered_copy(pending.id, data_id)
            };
            let key = if let Some(key) = earlier {
                key
            } else if let Some(copy) = state.planned_chunk(pending.id, data_id) {
                stored.push(copy.clone());
                copy.record_key()
            } else if let Some(key) = state.reused_copy(pending.id, data_id) {
                key
            } else {
                // A chunk the source knows it committed before (not planned again).
                self.own_copy(data_id, &pending.source)
                    .ok_or(ApplyError::UnknownChunk(*data_id))?
            };
            if (!restart && state.in_order(pending.id, &key)) || !seen.insert(key) {
                return Err(ManagerError::Invalid(format!(
                    "chunk {data_id} is in backup {}'s order twice (a paged order names each chunk once)",
                    pending.id
                )));
            }
            keys.push(key);
        }
        let command = Command::CommitOrder {
            pending_id: pending.id,
            first: request.first,
            keys,
            stored,
        };
        check_entry(&command)?;
        Ok(OrderStep::Propose(command))
    }

    /// [`decide_commit_order`](Self::decide_commit_order) and
    /// [`execute`](Self::execute) in one call.
    pub fn commit_order(
        &mut self,
        request: &CommitOrderRequest,
    ) -> Result<CommitOrderResponse, ManagerError> {
        match self.decide_commit_order(request)? {
            OrderStep::Done(response) => Ok(response),
            OrderStep::Propose(command) => {
                self.execute(command)?;
                Ok(self.order_recorded(request.pending_id))
            }
        }
    }

    /// How many chunks of pending backup `pending_id`'s order are recorded.
    pub fn order_recorded(&self, pending_id: u64) -> CommitOrderResponse {
        CommitOrderResponse {
            next: self
                .state
                .pending
                .get(&pending_id)
                .map_or(0, |p| p.order.len() as u64),
        }
    }
}
