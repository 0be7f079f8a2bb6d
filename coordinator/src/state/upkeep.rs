//! The commands that keep stored data alive after it was committed:
//! moving a rebuilt packet (`MovePacket`), recording audit outcomes
//! (`RecordAudits`), marking a chunk copy unusable (`MarkBad`) and a node's
//! graceful exit (`SetExiting`). Same rules as the parent module: apply
//! only checks and moves integers, all or nothing, no I/O.

use std::collections::BTreeMap;

use super::{Applied, ApplyError, Deletion, ManagerState, Touched};
use crate::audit::{AuditPolicy, AuditResult, MAX_RESULTS_PER_COMMAND};
use crate::ids::{DataId, NodeId};
use crate::records::LogKind;
use crate::units::Millis;

impl ManagerState {
    /// A source that uses chunk copy `key` found its packets unusable.
    pub(super) fn mark_bad(
        &mut self,
        key: &DataId,
        reporter: &NodeId,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let chunk = self
            .chunks
            .get_mut(key)
            .ok_or(ApplyError::UnknownChunk(*key))?;
        if !chunk.sources.contains(reporter) && chunk.owner != *reporter {
            return Err(ApplyError::Invalid(format!(
                "{reporter} does not reference chunk {key}"
            )));
        }
        chunk.bad = true;
        touched.chunks.insert(*key);
        self.log(
            touched,
            at,
            LogKind::Failure,
            *reporter,
            format!("chunk copy {key} reported unusable"),
        );
        Ok(Applied::Done)
    }

    /// A node starts (or stops) leaving the grid.
    pub(super) fn set_exiting(
        &mut self,
        node: &NodeId,
        exiting: bool,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        if !self.clients.contains_key(node) {
            return Err(ApplyError::UnknownNode(*node));
        }
        let record = self.targets.entry(*node).or_default();
        record.exiting_since = if exiting {
            record.exiting_since.or(Some(at))
        } else {
            None
        };
        touched.targets.insert(*node);
        Ok(Applied::Done)
    }

    pub(super) fn record_audits(
        &mut self,
        results: &[AuditResult],
        policy: &AuditPolicy,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        if results.len() > MAX_RESULTS_PER_COMMAND {
            return Err(ApplyError::Invalid(format!(
                "{} audit results in one command, at most {MAX_RESULTS_PER_COMMAND}",
                results.len()
            )));
        }
        for result in results {
            // Only targets the manager knows, and only packets they still
            // hold: a packet moved away (and deleted) while its challenge was
            // in flight says nothing about the target.
            let Some(record) = self.targets.get_mut(&result.target) else {
                continue;
            };
            if !record.packets.contains_key(&result.packet) {
                continue;
            }
            record
                .audit
                .record(policy, Some(result.packet), result.outcome, at);
            touched.targets.insert(result.target);
        }
        Ok(Applied::Done)
    }

    pub(super) fn move_packet(
        &mut self,
        data_id: &DataId,
        index: usize,
        new_target: NodeId,
        generation: u64,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        if !self.clients.contains_key(&new_target) {
            return Err(ApplyError::UnknownNode(new_target));
        }
        let chunk = self
            .chunks
            .get(data_id)
            .ok_or(ApplyError::UnknownChunk(*data_id))?;
        let packet = *chunk
            .packets
            .get(index)
            .ok_or_else(|| ApplyError::Invalid(format!("chunk {data_id} has no packet {index}")))?;
        if chunk.packets.iter().any(|p| p.target == new_target) {
            return Err(ApplyError::Invalid(format!(
                "{new_target} already holds a packet of chunk {data_id}"
            )));
        }
        let mut deletions: BTreeMap<NodeId, Vec<Deletion>> = BTreeMap::new();
        let shared = self.other_copy_holds(
            &chunk.data_id.clone(),
            data_id,
            &packet.packet_id,
            &packet.target,
        );
        if !shared
            && let Some(record) = self.targets.get_mut(&packet.target)
            && let Some(size) = record.packets.remove(&packet.packet_id)
        {
            // It no longer counts against the old target's packets.
            record.audit.failed_packets.remove(&packet.packet_id);
            record.bytes = record.bytes.saturating_sub(size);
            touched
                .target_packets
                .insert((packet.target, packet.packet_id));
            deletions.entry(packet.target).or_default().push(Deletion {
                packet_id: packet.packet_id,
                generation: packet.generation,
            });
        }
        touched.targets.insert(packet.target);
        let record = self.targets.entry(new_target).or_default();
        if record
            .packets
            .insert(packet.packet_id, packet.size)
            .is_none()
        {
            record.bytes = record.bytes.saturating_add(packet.size);
        }
        touched.targets.insert(new_target);
        touched
            .target_packets
            .insert((new_target, packet.packet_id));
        if let Some(chunk) = self.chunks.get_mut(data_id)
            && let Some(p) = chunk.packets.get_mut(index)
        {
            p.target = new_target;
            p.generation = generation;
        }
        touched.chunks.insert(*data_id);
        self.log(
            touched,
            at,
            LogKind::Repair,
            new_target,
            format!(
                "packet {} of chunk {} moved from {}",
                packet.packet_id, data_id, packet.target
            ),
        );
        Ok(Applied::Deletions(deletions))
    }
}
