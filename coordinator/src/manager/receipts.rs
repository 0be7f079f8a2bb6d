//! Receipts before the commit (SPEC R12): a source hands in its targets'
//! receipts page by page (at most [`MAX_RECEIPTS_PER_CALL`] a call) while
//! its backup is pending; the manager verifies each page and records what
//! it verified with the pending backup (`Command::RecordReceipts`), so the
//! commit carries only what is left and no message grows with the backup.
//! This module decides; it must not change the state or do I/O.

use super::*;
use crate::records::Receipted;

/// Most receipts one call hands in: about 1.3 MB of CBOR (a receipt is at
/// most some 320 bytes) and a raft entry of about 0.4 MB.
pub const MAX_RECEIPTS_PER_CALL: usize = 4096;

impl Manager {
    /// The `RecordReceipts` command for one page of `source`'s receipts of
    /// pending backup `pending_id`: each verified as a commit would.
    pub fn decide_receipts(
        &self,
        source: NodeId,
        pending_id: u64,
        receipts: &[StoreReceipt],
    ) -> Result<Command, ManagerError> {
        if receipts.len() > MAX_RECEIPTS_PER_CALL {
            return Err(ManagerError::Invalid(format!(
                "{} receipts in one call (at most {MAX_RECEIPTS_PER_CALL})",
                receipts.len()
            )));
        }
        let pending = self
            .state
            .pending
            .get(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        if pending.source != source {
            return Err(ManagerError::Invalid(format!(
                "backup {pending_id} belongs to {}, not {source}",
                pending.source
            )));
        }
        let receipted = self
            .verify_receipts(pending, receipts)?
            .into_iter()
            .map(|((packet_id, target), generation)| Receipted {
                packet_id,
                target,
                generation,
            })
            .collect();
        let command = Command::RecordReceipts {
            pending_id,
            receipted,
        };
        check_entry(&command)?;
        Ok(command)
    }

    /// [`decide_receipts`](Self::decide_receipts) and [`execute`](Self::execute) in one call.
    pub fn record_receipts(
        &mut self,
        source: NodeId,
        pending_id: u64,
        receipts: &[StoreReceipt],
    ) -> Result<(), ManagerError> {
        let command = self.decide_receipts(source, pending_id, receipts)?;
        self.execute(command).map(|_| ())
    }
}
