//! The manager service's side of repair: the checker's pass over the
//! applied state, deciding where a stripe's rebuilt packets go (with store
//! tickets signed by this leader), and committing the moves as replicated
//! `MovePacket` commands once the repairer holds the targets' verified
//! receipts. Moving the bytes is [`crate::daemon::repair`]'s; when and where
//! are the coordinator's (`check_repairs`, `decide_repair`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use strew_coordinator::repair::{RepairCheck, RepairPolicy, RepairRequest, RepairTask};
use strew_coordinator::{
    ApplyError, Command, ManagerError, NodeId, PacketId, StorageTicket, StoredPacket,
};

use super::{ManagerService, heavy};
use crate::consensus::{Outcome, WriteError};
use crate::sync::lock;

/// What a repairer needs to rebuild one stripe.
#[derive(Debug, Clone)]
pub struct RepairPlan {
    /// The chunk's packets as the applied state has them (slot order).
    pub packets: Vec<StoredPacket>,
    /// One `MovePacket` per rebuilt slot, in the task's `rebuild` order.
    pub moves: Vec<Command>,
    /// Store tickets, signed by this node, for the new targets.
    pub tickets: Vec<StorageTicket>,
    /// Read tickets, signed by this node and naming it as holder, for the
    /// surviving packets the repairer reads.
    pub read_tickets: Vec<StorageTicket>,
}

/// What this node rebuilt as the repairer since it started (what `status
/// --json` shows as `repaired` on coordinators).
#[derive(Debug, Default)]
pub struct RepairTotals {
    pub stripes: AtomicU64,
    pub packets: AtomicU64,
    /// Bytes of surviving packets fetched to rebuild from.
    pub bytes_read: AtomicU64,
    /// Bytes of rebuilt packets uploaded (the bytes repaired).
    pub bytes_written: AtomicU64,
    /// When the first repair started and the last one ended (unix ms; 0: never).
    pub first_started_ms: AtomicU64,
    pub last_ended_ms: AtomicU64,
}

impl RepairTotals {
    /// A stripe's repair starts at `now_ms`.
    pub fn start(&self, now_ms: u64) {
        let _ =
            self.first_started_ms
                .compare_exchange(0, now_ms, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// A stripe's repair ended at `now_ms` having moved these.
    pub fn add(&self, packets: u64, bytes_read: u64, bytes_written: u64, now_ms: u64) {
        self.last_ended_ms.fetch_max(now_ms, Ordering::Relaxed);
        self.stripes.fetch_add(1, Ordering::Relaxed);
        self.packets.fetch_add(packets, Ordering::Relaxed);
        self.bytes_read.fetch_add(bytes_read, Ordering::Relaxed);
        self.bytes_written
            .fetch_add(bytes_written, Ordering::Relaxed);
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "stripes": self.stripes.load(Ordering::Relaxed),
            "packets": self.packets.load(Ordering::Relaxed),
            "bytes_read": self.bytes_read.load(Ordering::Relaxed),
            "bytes_written": self.bytes_written.load(Ordering::Relaxed),
            "first_started_ms": self.first_started_ms.load(Ordering::Relaxed),
            "last_ended_ms": self.last_ended_ms.load(Ordering::Relaxed),
        })
    }
}

/// Why rebuilt packets could not be recorded where they now are.
#[derive(Debug, thiserror::Error)]
pub enum RepairCommitError {
    #[error("this node no longer leads the coordinator group")]
    NotLeader,
    #[error("the coordinator group did not commit the move")]
    Write(#[from] WriteError),
    #[error("the move was refused: {0}")]
    Rejected(ApplyError),
}

impl ManagerService {
    /// The repair policy this member's checker applies.
    pub fn repair_policy(&self) -> RepairPolicy {
        self.repair
    }

    /// Whether this member leads the group and can sign and propose.
    pub fn leads(&self) -> bool {
        self.member.is_leader() && self.member.has_group_key()
    }

    /// One checker pass over the applied state at `now`.
    pub fn check_repairs(&self, now: u64) -> RepairCheck {
        heavy(|| self.replica.read(|m| m.check_repairs(&self.repair, now)))
    }

    /// Records how many stripes the last check found to need repair (what
    /// `Who` answers as `repairs_pending`).
    pub fn set_repairs_pending(&self, pending: u64) {
        self.repairs_pending.store(pending, Ordering::Relaxed);
    }

    pub fn repairs_pending(&self) -> u64 {
        self.repairs_pending.load(Ordering::Relaxed)
    }

    /// What this node rebuilt as the repairer.
    pub fn repaired(&self) -> &RepairTotals {
        &self.repaired
    }

    /// Decides where the task's rebuilt packets go (the coordinator's
    /// `decide_repair`, under the stripe's original constraints) and signs
    /// store tickets for them. Changes nothing.
    pub fn plan_repair(
        &self,
        task: &RepairTask,
        given_up: &BTreeSet<NodeId>,
        now: u64,
    ) -> Result<RepairPlan, ManagerError> {
        let avoid = self.location_exclusions();
        heavy(|| {
            self.replica.read(|m| {
                let packets = m
                    .state()
                    .chunk_packets(&task.data_id)
                    .ok_or(ApplyError::UnknownChunk(task.data_id))?
                    .to_vec();
                let request = RepairRequest {
                    snapshot: task.snapshot,
                    data_id: task.data_id,
                    rebuild: &task.rebuild,
                    given_up,
                };
                let moves =
                    m.decide_repair_avoiding(&request, &avoid, now, &mut *lock(&self.rng))?;
                let uploads: Vec<_> = moves
                    .iter()
                    .filter_map(|c| match c {
                        Command::MovePacket {
                            index,
                            new_target,
                            generation,
                            ..
                        } => packets
                            .get(*index as usize)
                            .map(|p| (*new_target, p.packet_id, p.size, *generation)),
                        _ => None,
                    })
                    .collect();
                let tickets = m.repair_tickets(&uploads, now)?;
                let reads: Vec<(NodeId, PacketId)> = task
                    .read
                    .iter()
                    .filter_map(|slot| packets.get(*slot))
                    .map(|p| (p.target, p.packet_id))
                    .collect();
                let read_tickets = m.read_tickets_for(m.node_id(), &reads, now)?;
                Ok(RepairPlan {
                    packets,
                    moves,
                    tickets,
                    read_tickets,
                })
            })
        })
    }

    /// Proposes the moves of a repaired stripe, one at a time (leader only).
    /// Each move queues the copy it superseded for the leader's collection.
    pub async fn commit_moves(&self, moves: Vec<Command>) -> Result<(), RepairCommitError> {
        let _turn = self.proposals.lock().await;
        if !self.member.is_leader() {
            return Err(RepairCommitError::NotLeader);
        }
        for command in moves {
            if let Outcome::Rejected(why) = self.member.execute(command).await?.outcome {
                return Err(RepairCommitError::Rejected(why));
            }
        }
        Ok(())
    }
}
