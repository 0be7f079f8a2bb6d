//! The manager service's side of collection: reading the due part of the
//! replicated collection queue with delete tickets signed by this leader,
//! and proposing `Collected` for what the targets confirmed. Delivering the
//! deletes is [`crate::daemon::collect`]'s; what is due is the
//! coordinator's (`due_garbage`).

use strew_coordinator::{
    Applied, Command, DueGarbage, MAX_COLLECT_BATCH, ManagerError, NodeId, PacketId, StorageTicket,
};

use super::repair::RepairCommitError;
use super::{ManagerService, heavy};
use crate::consensus::Outcome;

impl ManagerService {
    /// Up to `limit` due queue entries (targets `skip` names left out), and
    /// delete tickets signed by this node for the ones to deliver.
    pub fn due_collection(
        &self,
        now: u64,
        limit: usize,
        skip: impl Fn(&NodeId) -> bool,
    ) -> Result<(DueGarbage, Vec<StorageTicket>), ManagerError> {
        heavy(|| {
            self.replica.read(|m| {
                let due = m.state().due_garbage(now, limit, skip);
                let tickets = m.deletion_tickets(&Applied::Deletions(due.deliver.clone()), now)?;
                Ok((due, tickets))
            })
        })
    }

    /// Entries in the collection queue (what `status --json` shows as
    /// `collection_queue` on coordinators).
    pub fn collection_queue(&self) -> usize {
        self.replica.read(|m| m.state().garbage.len())
    }

    /// Removes collected entries from the queue (leader only), in commands of
    /// at most [`MAX_COLLECT_BATCH`] entries.
    pub async fn commit_collected(
        &self,
        entries: &[(NodeId, PacketId)],
    ) -> Result<(), RepairCommitError> {
        let _turn = self.proposals.lock().await;
        for batch in entries.chunks(MAX_COLLECT_BATCH) {
            if !self.leads() {
                return Err(RepairCommitError::NotLeader);
            }
            let command = Command::Collected {
                entries: batch.to_vec(),
            };
            if let Outcome::Rejected(why) = self.member.execute(command).await?.outcome {
                return Err(RepairCommitError::Rejected(why));
            }
        }
        Ok(())
    }
}
