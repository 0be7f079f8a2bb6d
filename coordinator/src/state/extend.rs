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
        // One pass over the pending backup (it may hold many parts).
        let named: BTreeSet<DataId> = part.new_chunks.iter().map(|c| c.data_id).collect();
        if let Some(chunk) = pending
            .new_chunks
            .iter()
            .find(|c| named.contains(&c.data_id))
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
        pending.new_chunks.extend(part.new_chunks.iter().cloned());
        pending.reused.extend(part.reused.iter().copied());
        pending.expires_at = pending.expires_at.max(part.expires_at);
        let (chunks, reused, bytes) = (
            part.new_chunks.len(),
            part.reused.len(),
            part.stored_bytes(),
        );
        let total = pending.new_chunks.len();
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
        let pending = self
            .pending
            .get_mut(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        let named: BTreeSet<(PacketId, NodeId)> =
            receipted.iter().map(|r| (r.packet_id, r.target)).collect();
        let planned: BTreeSet<(PacketId, NodeId)> = pending
            .new_chunks
            .iter()
            .flat_map(|c| &c.packets)
            .map(|p| (p.packet_id, p.target))
            .filter(|k| named.contains(k))
            .collect();
        if let Some(r) = receipted
            .iter()
            .find(|r| !planned.contains(&(r.packet_id, r.target)))
        {
            return Err(ApplyError::Invalid(format!(
                "backup {pending_id} planned no packet {} on {}",
                r.packet_id, r.target
            )));
        }
        let mut known: BTreeSet<(PacketId, NodeId)> = pending
            .receipted
            .iter()
            .map(|r| (r.packet_id, r.target))
            .collect();
        for r in receipted {
            if known.insert((r.packet_id, r.target)) {
                pending.receipted.push(*r);
            }
        }
        touched.pending.insert(pending_id);
        Ok(Applied::Done)
    }
}
