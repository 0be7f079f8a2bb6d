//! Moving packets of a pending backup to new targets
//! (`Command::RetargetBackup`): a target that stops answering while a
//! backup uploads to it gets the packets no target receipted yet taken
//! away, one by one, and the rest of the backup stays as planned. Packets
//! of earlier parts it did receipt stay on it: if it stays away, repair
//! rebuilds them once the snapshot is committed.

use super::*;

/// Most packets one `RetargetBackup` moves (about 100 bytes each in its
/// raft entry, far under [`MAX_ENTRY_BYTES`]).
pub const MAX_RETARGET_MOVES: usize = 4096;

impl ManagerState {
    pub(super) fn retarget(
        &mut self,
        pending_id: u64,
        moves: &[Retarget],
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let positions = self.check_retarget(pending_id, moves)?;
        let pending = self
            .pending
            .get_mut(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        let source = pending.source;
        let mut old: Vec<(usize, StoredPacket, NodeId)> = Vec::with_capacity(moves.len());
        for (m, &at) in moves.iter().zip(&positions) {
            let slot = pending
                .new_chunks
                .get_mut(at)
                .and_then(|c| c.packets.get_mut(m.index as usize))
                .ok_or(ApplyError::UnknownChunk(m.data_id))?;
            old.push((at, *slot, m.target));
            slot.target = m.target;
            slot.generation = m.generation;
        }
        let mut deletions: BTreeMap<NodeId, Vec<Deletion>> = BTreeMap::new();
        for (at, packet, target) in &old {
            self.index_retargeted(pending_id, *at, packet, *target);
            if let Some(record) = self.targets.get_mut(&packet.target) {
                record.reserved = record.reserved.saturating_sub(packet.size);
                touched.targets.insert(packet.target);
            }
            // check_retarget bounded it by the target's free space.
            let record = self.targets.entry(*target).or_default();
            record.reserved = record.reserved.saturating_add(packet.size);
            touched.targets.insert(*target);
        }
        // The old target may hold a part of an upload: collected, unless
        // a record or another plan still puts the packet there.
        for (_, packet, _) in &old {
            let live = self
                .targets
                .get(&packet.target)
                .is_some_and(|t| t.packets.contains_key(&packet.packet_id))
                || self.pending_puts(&packet.packet_id, &packet.target, None);
            let list = deletions.entry(packet.target).or_default();
            let deletion = Deletion {
                packet_id: packet.packet_id,
                generation: packet.generation,
            };
            if !live && !list.contains(&deletion) {
                list.push(deletion);
            }
        }
        deletions.retain(|_, list| !list.is_empty());
        if let Some(first) = positions.iter().min() {
            touched.touch_list(pending_id, PendingList::NewChunks, *first);
        }
        let from: BTreeSet<NodeId> = old.iter().map(|(_, p, _)| p.target).collect();
        self.log(
            touched,
            at,
            LogKind::BackupPlanned,
            source,
            format!(
                "backup {pending_id}: {} packet(s) moved off {} (their uploads failed)",
                old.len(),
                from.iter()
                    .map(|t| t.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        Ok(Applied::Deletions(deletions))
    }

    /// Checks every move before any applies: the packet is planned and not
    /// receipted, named once, its new target a known node other than the
    /// source holding no other packet of the stripe, with room for all the
    /// command gives it. Answers each move's chunk position.
    fn check_retarget(
        &self,
        pending_id: u64,
        moves: &[Retarget],
    ) -> Result<Vec<usize>, ApplyError> {
        let pending = self
            .pending
            .get(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        if moves.is_empty() || moves.len() > MAX_RETARGET_MOVES {
            return Err(ApplyError::Invalid(format!(
                "{} packets moved in one command (1 to {MAX_RETARGET_MOVES})",
                moves.len()
            )));
        }
        if !pending.order.is_empty() {
            return Err(ApplyError::Invalid(format!(
                "backup {pending_id} is being committed: its packets stay where they are"
            )));
        }
        let mut positions = Vec::with_capacity(moves.len());
        // Each moved chunk's targets as the moves so far leave them.
        let mut stripes: BTreeMap<usize, Vec<NodeId>> = BTreeMap::new();
        let mut extra: BTreeMap<NodeId, u64> = BTreeMap::new();
        for m in moves {
            let at = self
                .planned_position(pending_id, &m.data_id)
                .ok_or(ApplyError::UnknownChunk(m.data_id))?;
            let chunk = &pending.new_chunks[at];
            let packet = chunk.packets.get(m.index as usize).ok_or_else(|| {
                ApplyError::Invalid(format!(
                    "chunk {} has {} packets: there is no packet {}",
                    m.data_id,
                    chunk.packets.len(),
                    m.index
                ))
            })?;
            if self.is_receipted(pending_id, &packet.packet_id, &packet.target) {
                return Err(ApplyError::Invalid(format!(
                    "packet {} of chunk {} is receipted on {}: it stays there",
                    packet.packet_id, m.data_id, packet.target
                )));
            }
            if m.target == pending.source || !self.clients.contains_key(&m.target) {
                return Err(ApplyError::UnknownNode(m.target));
            }
            let stripe = stripes
                .entry(at)
                .or_insert_with(|| chunk.packets.iter().map(|p| p.target).collect());
            let index = m.index as usize;
            if stripe[index] != packet.target {
                return Err(ApplyError::Invalid(format!(
                    "packet {} of chunk {} is moved twice in one command",
                    m.index, m.data_id
                )));
            }
            if stripe.contains(&m.target) {
                return Err(ApplyError::Invalid(format!(
                    "{} already holds a packet of chunk {}",
                    m.target, m.data_id
                )));
            }
            stripe[index] = m.target;
            let sum = extra.entry(m.target).or_default();
            *sum = sum.saturating_add(packet.size);
            positions.push(at);
        }
        for (target, extra) in &extra {
            if self.target_free(target) < *extra {
                let record = self.targets.get(target).cloned().unwrap_or_default();
                return Err(ApplyError::TargetFull {
                    target: *target,
                    extra: *extra,
                    donated: self.clients.get(target).map_or(0, |c| c.donated()),
                    held: record.bytes,
                    reserved: record.reserved,
                });
            }
        }
        Ok(positions)
    }
}
