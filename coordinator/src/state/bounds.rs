//! The raft entry bound (SPEC R10/R12): [`MAX_ENTRY_BYTES`], and each
//! command's name for the refusals and metrics that mention it.

use super::Command;

/// Largest encoded command the manager proposes as one raft entry. Larger
/// work is split (plans into parts of at most
/// [`MAX_PLAN_CHUNKS`](crate::manager::MAX_PLAN_CHUNKS) chunks) or refused.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

impl Command {
    /// The variant's name, for logs, refusals and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::SetGridMode { .. } => "SetGridMode",
            Command::Join { .. } => "Join",
            Command::SetOnline { .. } => "SetOnline",
            Command::Admit { .. } => "Admit",
            Command::BeginBackup { .. } => "BeginBackup",
            Command::ExtendBackup { .. } => "ExtendBackup",
            Command::RecordReceipts { .. } => "RecordReceipts",
            Command::CommitBackup { .. } => "CommitBackup",
            Command::CommitOrder { .. } => "CommitOrder",
            Command::AbortBackup { .. } => "AbortBackup",
            Command::Forget { .. } => "Forget",
            Command::RecordRestore { .. } => "RecordRestore",
            Command::MovePacket { .. } => "MovePacket",
            Command::RetargetBackup { .. } => "RetargetBackup",
            Command::MarkBad { .. } => "MarkBad",
            Command::TrimLog { .. } => "TrimLog",
            Command::RecordAudits { .. } => "RecordAudits",
            Command::SetExiting { .. } => "SetExiting",
            Command::Collected { .. } => "Collected",
            Command::RecordTraffic { .. } => "RecordTraffic",
            Command::BeginRebuild { .. } => "BeginRebuild",
            Command::Reregister { .. } => "Reregister",
            Command::QueueUnreferenced { .. } => "QueueUnreferenced",
        }
    }
}
