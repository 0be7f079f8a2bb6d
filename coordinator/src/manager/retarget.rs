//! Uploads that failed mid-backup (SPEC R12): a source that could not
//! reach a target after retrying asks for new targets for exactly the
//! packets no target receipted yet, and the rest of its pending backup
//! stays planned. New targets are chosen as a repair chooses them (within
//! the backup distance, the spread of the backup's other targets, never a
//! node holding a packet of the stripe or one the source names as
//! failed). This module decides; it must not change the state or do I/O.

use super::*;
use crate::records::Retarget;
use crate::state::MAX_RETARGET_MOVES;

/// Most packets one retarget call moves: the answer names each moved chunk
/// whole with its tickets (well under a megabyte at 1,024 chunks of 16
/// packets), and its raft entry stays far under the entry bound.
pub const MAX_RETARGET_SLOTS: usize = 1024;
/// Most nodes a retarget call may name as failed.
pub const MAX_RETARGET_AVOID: usize = 256;

const _: () = assert!(MAX_RETARGET_SLOTS <= MAX_RETARGET_MOVES);

impl Manager {
    /// The `RetargetBackup` command that moves `request.slots`, and the
    /// draft of its answer ([`finish_plan`](Self::finish_plan) once the
    /// command applied, with [`retargeted_chunks`](Self::retargeted_chunks)).
    pub fn decide_retarget<R: Rng + ?Sized>(
        &self,
        request: &RetargetRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<(Command, PlanDraft), ManagerError> {
        if request.slots.is_empty() || request.slots.len() > MAX_RETARGET_SLOTS {
            return Err(ManagerError::Invalid(format!(
                "{} packets to move in one call (1 to {MAX_RETARGET_SLOTS})",
                request.slots.len()
            )));
        }
        if request.avoid.len() > MAX_RETARGET_AVOID {
            return Err(ManagerError::Invalid(format!(
                "{} failed targets named in one call (at most {MAX_RETARGET_AVOID})",
                request.avoid.len()
            )));
        }
        let state = self.state();
        let pending = state
            .pending
            .get(&request.pending_id)
            .ok_or(ApplyError::UnknownPending(request.pending_id))?;
        if pending.source != request.source {
            return Err(ManagerError::Invalid(format!(
                "backup {} belongs to {}, not {}",
                pending.id, pending.source, request.source
            )));
        }
        // The slots by chunk, each index once.
        let mut by_chunk: BTreeMap<DataId, BTreeSet<u32>> = BTreeMap::new();
        for (data_id, index) in &request.slots {
            by_chunk.entry(*data_id).or_default().insert(*index);
        }
        // The backup's targets so far (the spread holds against them),
        // the failed ones included: a new target is never one of them
        // unless no other fits.
        let anchors = state.pending_targets(pending);
        let mut moves = Vec::with_capacity(request.slots.len());
        for (data_id, indices) in &by_chunk {
            let chunk = state
                .planned_chunk(pending.id, data_id)
                .ok_or(ApplyError::UnknownChunk(*data_id))?;
            let mut size = 1;
            for &index in indices {
                let packet = chunk.packets.get(index as usize).ok_or_else(|| {
                    ManagerError::Invalid(format!(
                        "chunk {data_id} has {} packets: there is no packet {index}",
                        chunk.packets.len()
                    ))
                })?;
                size = size.max(packet.size);
            }
            let stripe: Vec<NodeId> = chunk
                .packets
                .iter()
                .map(|p| p.target)
                .chain(request.avoid.iter().copied())
                .collect();
            let placement = PlacementRequest {
                source: pending.location,
                source_node: Some(pending.source),
                backup_distance: pending.params.backup_distance,
                spread: pending.params.spread,
                redundancy: pending.params.redundancy,
                stripes: 1,
                packet_size: size,
            };
            let targets = self.replacements(&placement, &anchors, &stripe, indices.len(), rng)?;
            for (&index, target) in indices.iter().zip(targets) {
                moves.push(Retarget {
                    data_id: *data_id,
                    index,
                    target,
                    generation: rng.next_u64().max(1),
                });
            }
        }
        let command = Command::RetargetBackup {
            pending_id: pending.id,
            moves,
            at: now,
        };
        check_entry(&command)?;
        let draft = PlanDraft {
            pending_id: pending.id,
            source: pending.source,
            uploads: Vec::new(),
            reused: Vec::new(),
            expires_at: pending.expires_at,
        };
        Ok((command, draft))
    }

    /// The chunks a retarget moved packets of, as the applied state plans
    /// them now (the answer's `uploads`).
    pub fn retargeted_chunks(&self, command: &Command) -> Vec<PlannedChunk> {
        let Command::RetargetBackup {
            pending_id, moves, ..
        } = command
        else {
            return Vec::new();
        };
        let chunks: BTreeSet<DataId> = moves.iter().map(|m| m.data_id).collect();
        chunks
            .iter()
            .filter_map(|d| self.state().planned_chunk(*pending_id, d).cloned())
            .collect()
    }

    /// [`decide_retarget`](Self::decide_retarget), applied, and its answer.
    pub fn retarget<R: Rng + ?Sized>(
        &mut self,
        request: &RetargetRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<PlanDecision, ManagerError> {
        let (command, mut draft) = self.decide_retarget(request, now, rng)?;
        self.execute(command.clone())?;
        draft.uploads = self.retargeted_chunks(&command);
        self.finish_plan(draft, now)
    }
}
