//! The source side of a grid: backup, restore and forget against a sequence
//! manager and direct packet transfers to targets.
//!
//! Written against two small traits so the same code runs over the overlay
//! (the daemon) and in-process (tests, with the real coordinator `Manager`
//! and in-memory targets): [`ManagerApi`] — the calls a source makes to the
//! sequence manager — and [`PacketTransport`] — putting, getting and
//! deleting packets on one target. A leader change on the manager side only
//! means a retry of the same call against the new leader: every call here is
//! idempotent or carries the id that makes it so.

pub mod backup;
pub mod check;
pub mod cleanup;
pub mod deletes;
pub mod fetch_order;
pub mod forget;
pub mod health;
pub mod journal;
pub mod known;
pub mod overlay;
pub mod parts;
pub mod reads;
pub mod rebuild;
pub mod recover;
pub mod restore;
pub mod retention;
pub mod root_upkeep;
pub mod roots;
pub mod sequence;
pub mod stream;
pub mod testkit;

use std::future::Future;

use strew_coordinator::manager::{
    CommitOrderRequest, CommitOrderResponse, CommitRequest, CommitResponse, ForgetResponse,
    PlanDecision, PlanRequest, RetargetRequest, SnapshotSummary,
};
use strew_coordinator::records::RestoreOutcome;
use strew_coordinator::seal::SealedForRecipient;
use strew_coordinator::ticket::StorageTicket;
use strew_coordinator::{DataId, GeoPoint, NodeId, PacketId, SnapshotId, StoreReceipt};

pub use backup::{GridBackupOptions, GridBackupReport, grid_backup};
pub use check::{CheckReport, MissingPacket, grid_check};
pub use cleanup::{Cleanup, CleanupReport, clean_up};
pub use forget::{ForgetReport, grid_forget};
pub use health::{Health, health};
pub use known::KnownIndex;
pub use overlay::{OverlayManager, OverlayTransport};
pub use reads::ReadTickets;
pub use restore::{
    GridRestoreReport, ManifestRead, grid_manifest, grid_restore, open_sequence, snapshot_targets,
};
pub use retention::{KeepPolicy, RetentionReport, apply_retention};

/// Errors of grid operations, sorted by what the user can do about them.
#[derive(Debug, thiserror::Error)]
pub enum GridError {
    /// The manager refused (constraints, quota, unknown snapshot, …): its
    /// code and its words.
    #[error("the sequence manager refused: {0}")]
    Refused(strew_overlay::manager::Refusal),
    /// The manager answered a call with a message of another call.
    #[error("the manager answered {call} with an unexpected message ({answer})")]
    Unexpected {
        call: &'static str,
        answer: &'static str,
    },
    /// No manager could be reached, or it is not serving (no quorum).
    #[error("no sequence manager is reachable: {0}")]
    NoManager(String),
    #[error("{0}")]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Backup(#[from] crate::pipeline::backup::BackupError),
    #[error(transparent)]
    Restore(#[from] crate::pipeline::restore::RestoreError),
    #[error("local packet outbox")]
    Outbox(#[from] crate::store::StoreError),
    #[error("the sealed sequence of snapshot {snapshot} cannot be opened with this node's key")]
    Seal {
        snapshot: SnapshotId,
        #[source]
        source: strew_coordinator::seal::SealError,
    },
    /// The backup was cancelled; its plans were aborted (reservations released).
    #[error("the backup was cancelled: {0}")]
    Cancelled(String),
    #[error("{0}")]
    Other(String),
}

/// A failed transfer with one target.
#[derive(Debug, Clone, thiserror::Error)]
#[error("target {target}: {detail}")]
pub struct TransportError {
    pub target: NodeId,
    /// How it failed: what a caller decides on (skip the target, retry, report).
    pub kind: TransportFailure,
    pub detail: String,
}

/// How a transfer with one target failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportFailure {
    /// No connection could be made: the target is down or unreachable from here.
    Unreachable,
    /// Connected, but the target would not carry the request (protocol
    /// refused, connection closed before an answer).
    Refused,
    /// No answer in time; the target may have acted on the request.
    TimedOut,
    /// The stream broke, or the answer did not decode or verify.
    Io,
    /// The target answered and said no (bad ticket, full, wrong id).
    Rejected,
    /// The target does not hold the packet.
    Missing,
    /// A delete found the packet under another storage generation: a copy
    /// stored again since the ticket, live, which stays.
    LiveCopy,
    /// Nothing was sent: this node could not prepare the request, or is shutting down.
    Local,
}

impl TransportError {
    pub fn new(target: NodeId, kind: TransportFailure, detail: impl Into<String>) -> Self {
        TransportError {
            target,
            kind,
            detail: detail.into(),
        }
    }
}

/// The manager's attestation of a snapshot's sequence (in its attested
/// pages) and the signer's grid-key certificate (none from a manager
/// without a grid): what a root keeps for a rebuilt group to believe.
#[derive(Debug, Clone)]
pub struct Attestation {
    pub attestation: strew_coordinator::SnapshotAttestation,
    pub cert: Option<strew_coordinator::MemberCert>,
}

/// The calls a source makes to the sequence manager.
pub trait ManagerApi: Send + Sync {
    fn plan(
        &self,
        request: PlanRequest,
    ) -> impl Future<Output = Result<PlanDecision, GridError>> + Send;
    fn commit(
        &self,
        request: CommitRequest,
    ) -> impl Future<Output = Result<CommitResponse, GridError>> + Send;
    /// The manager's attestation of the snapshot's sequence and its
    /// certificate (what its root keeps with the sequence's pages).
    fn fetch_attestation(
        &self,
        snapshot: SnapshotId,
    ) -> impl Future<Output = Result<Attestation, GridError>> + Send;
    /// The snapshot's sequence, sealed to the requesting node's X25519 key.
    fn fetch_sequence(
        &self,
        snapshot: SnapshotId,
    ) -> impl Future<Output = Result<SealedForRecipient, GridError>> + Send;
    /// Stripes `from..from+count` of the snapshot's sequence (with its
    /// manifest fields), sealed to the requesting node, and the stripes in all.
    fn fetch_sequence_page(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> impl Future<Output = Result<(SealedForRecipient, u64), GridError>> + Send;
    fn list(
        &self,
        set: Option<String>,
    ) -> impl Future<Output = Result<Vec<SnapshotSummary>, GridError>> + Send;
    fn forget(
        &self,
        snapshot: SnapshotId,
    ) -> impl Future<Output = Result<ForgetResponse, GridError>> + Send;
    /// Drops a plan the source replaced; returns delete tickets for the
    /// packets it left on targets that nothing else holds.
    fn abandon(
        &self,
        pending_id: u64,
    ) -> impl Future<Output = Result<Vec<StorageTicket>, GridError>> + Send;
    /// Hands in receipts of a pending backup's packets before its commit
    /// (at most `MAX_RECEIPTS_PER_CALL`).
    fn record_receipts(
        &self,
        pending_id: u64,
        receipts: Vec<StoreReceipt>,
    ) -> impl Future<Output = Result<(), GridError>> + Send;
    /// Moves packets of a pending backup whose uploads failed (at most
    /// `MAX_RETARGET_SLOTS`, none receipted) to new targets; answers the
    /// moved chunks whole with store tickets.
    fn retarget(
        &self,
        request: RetargetRequest,
    ) -> impl Future<Output = Result<PlanDecision, GridError>> + Send;
    /// Hands in one page of a pending backup's chunk order, for a commit
    /// too large for one message; returns how many chunks the manager holds.
    fn commit_order(
        &self,
        request: CommitOrderRequest,
    ) -> impl Future<Output = Result<CommitOrderResponse, GridError>> + Send;
    fn record_restore(
        &self,
        snapshot: SnapshotId,
        outcome: RestoreOutcome,
    ) -> impl Future<Output = Result<(), GridError>> + Send;
    /// Read tickets (naming this node as holder) for `count` chunks of one
    /// of its snapshots, from chunk `from` of the sequence.
    fn read_tickets(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> impl Future<Output = Result<Vec<StorageTicket>, GridError>> + Send;
    /// The packets of chunk `data_id` failed to decode: the manager must not
    /// reuse that copy for new backups.
    fn report_bad(
        &self,
        data_id: DataId,
        packets: Vec<PacketId>,
    ) -> impl Future<Output = Result<(), GridError>> + Send;
}

/// Direct packet exchange with one target.
pub trait PacketTransport: Send + Sync {
    /// Stores a packet under a ticket; returns the target's receipt once it
    /// is verified (signed by the target, for this node, naming the packet).
    fn put(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
        bytes: Vec<u8>,
    ) -> impl Future<Output = Result<StoreReceipt, TransportError>> + Send;
    /// Fetches a packet's bytes under a read ticket naming it (the caller
    /// verifies them against the id).
    fn get(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
    ) -> impl Future<Output = Result<Vec<u8>, TransportError>> + Send;
    fn delete(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Deletes packets on one target, each under its ticket: one result
    /// each, in order. One by one unless the transport sends them in
    /// batches (the overlay's `DeleteMany`).
    fn delete_many(
        &self,
        target: NodeId,
        deletes: &[(PacketId, &StorageTicket)],
    ) -> impl Future<Output = Vec<Result<(), TransportError>>> + Send {
        async move {
            let mut out = Vec::with_capacity(deletes.len());
            for (id, ticket) in deletes {
                out.push(self.delete(target, ticket, *id).await);
            }
            out
        }
    }
}

/// An error and its causes in one line (causes whose text the message
/// already contains are not repeated), for a user or a peer to read.
pub fn error_text(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// The ticket naming each (target, packet) of a plan or a deletion: a large
/// backup has several tickets per target.
pub fn ticket_index(
    tickets: &[StorageTicket],
) -> std::collections::HashMap<(NodeId, PacketId), &StorageTicket> {
    tickets
        .iter()
        .flat_map(|t| t.entries.iter().map(move |e| ((t.target, e.packet_id), t)))
        .collect()
}

/// Who the source is: its node id, where it is, and the X25519 secret that
/// opens sequences sealed to it.
#[derive(Clone)]
pub struct SourceIdentity {
    pub node_id: NodeId,
    pub location: GeoPoint,
    pub x25519_secret: [u8; 32],
}

impl std::fmt::Debug for SourceIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceIdentity")
            .field("node_id", &self.node_id)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}
