//! One more part of a pending backup (`Command::ExtendBackup`): a backup
//! too large for one bounded plan is planned part by part into the same
//! pending backup, which stays pending (never a snapshot) until its commit;
//! and its receipts recorded page by page before that commit
//! (`Command::RecordReceipts`).

use super::*;

impl ManagerState {
    pub(super) fn extend(
        &mut self,
        part: &PendingBackup,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let pending = self
            .pending
            .get(&part.id)
            .ok_or(ApplyError::UnknownPending(part.id))?;
        if pending.source != part.source || pending.set != part.set {
            return Err(ApplyError::Invalid(format!(
                "pending backup {} is {}'s backup of set {:?}, not {}'s of {:?}",
                part.id, pending.source, pending.set, part.source, part.set
            )));
        }
        if pending.params != part.params {
            return Err(ApplyError::Invalid(format!(
                "a part of pending backup {} must keep its parameters",
                part.id
            )));
        }
        // Looked up in the index: a backup may hold many parts.
        if let Some(chunk) = part
            .new_chunks
            .iter()
            .find(|c| self.planned_chunk(part.id, &c.data_id).is_some())
        {
            return Err(ApplyError::Invalid(format!(
                "chunk {} is already planned in pending backup {}",
                chunk.data_id, part.id
            )));
        }
        self.check_and_reserve(part, touched)?;
        let pending = self
            .pending
            .get_mut(&part.id)
            .ok_or(ApplyError::UnknownPending(part.id))?;
        let from = pending.new_chunks.len();
        touched.touch_list(part.id, PendingList::NewChunks, from);
        touched.touch_list(part.id, PendingList::Reused, pending.reused.len());
        pending.new_chunks.extend(part.new_chunks.iter().cloned());
        pending.reused.extend(part.reused.iter().copied());
        pending.expires_at = pending.expires_at.max(part.expires_at);
        let (chunks, reused, bytes) = (
            part.new_chunks.len(),
            part.reused.len(),
            part.stored_bytes(),
        );
        let total = pending.new_chunks.len();
        self.index_extended(part.id, from, &part.new_chunks, &part.reused);
        touched.pending.insert(part.id);
        self.log(
            touched,
            part.created_at,
            LogKind::BackupPlanned,
            part.source,
            format!(
                "backup {} of set {:?} extended: {chunks} new chunk(s) ({total} in all), {reused} deduplicated, {} to upload",
                part.id,
                part.set,
                format_size(bytes)
            ),
        );
        Ok(Applied::Done)
    }

    pub(super) fn record_receipts(
        &mut self,
        pending_id: u64,
        receipted: &[Receipted],
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        if !self.pending.contains_key(&pending_id) {
            return Err(ApplyError::UnknownPending(pending_id));
        }
        if let Some(r) = receipted.iter().find(|r| {
            self.planned_packet(pending_id, &r.packet_id, &r.target)
                .is_none()
        }) {
            return Err(ApplyError::Invalid(format!(
                "backup {pending_id} planned no packet {} on {}",
                r.packet_id, r.target
            )));
        }
        // Each (packet, target) once: neither recorded before nor twice here.
        let mut fresh: Vec<Receipted> = Vec::new();
        let mut named: BTreeSet<(PacketId, NodeId)> = BTreeSet::new();
        for r in receipted {
            if !self.is_receipted(pending_id, &r.packet_id, &r.target)
                && named.insert((r.packet_id, r.target))
            {
                fresh.push(*r);
            }
        }
        let pending = self
            .pending
            .get_mut(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        touched.touch_list(pending_id, PendingList::Receipted, pending.receipted.len());
        pending.receipted.extend_from_slice(&fresh);
        self.index_receipted(pending_id, &fresh);
        touched.pending.insert(pending_id);
        Ok(Applied::Done)
    }
}
