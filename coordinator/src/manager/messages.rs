//! The requests and answers of the sequence manager's operations (plan,
//! commit, dedup, list, forget): plain data, serialisable, no behaviour.

use super::*;

/// One packet a source wants to store: its id and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketSpec {
    pub packet_id: PacketId,
    pub size: u64,
}

/// One chunk of a backup: its DataId and its stripe's packets in share order
/// (`width` entries; with replicas the same PacketId repeated).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlan {
    pub data_id: DataId,
    pub packets: Vec<PacketSpec>,
}

/// Most chunks one plan (or one part of a backup) may name: a backup of
/// more chunks is planned part by part into one pending backup (see
/// [`PlanRequest::extend`]). With [`MAX_PLAN_PACKETS`] this keeps the raft
/// entry a plan becomes under [`MAX_ENTRY_BYTES`](crate::MAX_ENTRY_BYTES).
pub const MAX_PLAN_CHUNKS: usize = 1024;
/// Most packets (chunks × stripe width) one plan may name.
pub const MAX_PLAN_PACKETS: usize = 4096;

/// (b) "Where do these chunks go?"
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub source: NodeId,
    pub set: String,
    pub location: GeoPoint,
    pub params: BackupParams,
    pub chunks: Vec<ChunkPlan>,
    /// Targets the source could not reach in an earlier plan of this backup:
    /// never chosen by this one.
    #[serde(default)]
    pub exclude: Vec<NodeId>,
    /// A pending backup of the same source and set this plan adds a part
    /// to (its deadline renewed); `None` starts a new pending backup.
    #[serde(default)]
    pub extend: Option<u64>,
}

/// The leader's answer to a plan: what to upload where, with tickets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanDecision {
    pub pending_id: u64,
    /// New chunks and the target of each packet.
    pub uploads: Vec<PlannedChunk>,
    /// Chunks already stored: nothing to upload.
    pub reused: Vec<DataId>,
    /// One store ticket per target, to hand over with the packets.
    pub tickets: Vec<StorageTicket>,
    pub expires_at: Millis,
    /// The upload rate (bytes per second) each capped target of the plan
    /// takes: the lower of what it advertises and its subscription's
    /// bandwidth. The source paces its uploads to each; absent: no cap.
    #[serde(default)]
    pub target_caps: BTreeMap<NodeId, u64>,
}

/// "These packets of my pending backup could not reach their targets:
/// place them elsewhere." Answered with a [`PlanDecision`] naming each
/// moved chunk with all its packets and store tickets for them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetargetRequest {
    pub pending_id: u64,
    pub source: NodeId,
    /// The packets to move: a planned chunk, and the packet's index in it
    /// (at most [`MAX_RETARGET_SLOTS`](crate::manager::MAX_RETARGET_SLOTS)).
    pub slots: Vec<(DataId, u32)>,
    /// Nodes never to choose: the targets whose uploads failed (at most
    /// [`MAX_RETARGET_AVOID`](crate::manager::MAX_RETARGET_AVOID)).
    pub avoid: Vec<NodeId>,
}

/// A plan decided but not yet applied: what [`Manager::finish_plan`] needs
/// to answer once its `BeginBackup` command applied.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanDraft {
    pub pending_id: u64,
    /// The source: the holder of the plan's store tickets.
    pub source: NodeId,
    pub uploads: Vec<PlannedChunk>,
    pub reused: Vec<DataId>,
    pub expires_at: Millis,
}

/// What deciding a commit gives.
// The command is large (a sealed sequence); it is built once and moved.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum CommitStep {
    /// The backup was committed before (a retry): the answer, nothing to apply.
    Done(CommitResponse),
    /// Apply `command`, then answer with [`Manager::finish_commit`] for `snapshot`.
    Propose {
        command: Command,
        snapshot: SnapshotId,
    },
}

/// (a) Dedup answer: which chunks are stored, and as which packets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DedupAnswer {
    pub known: Vec<KnownChunk>,
    pub unknown: Vec<DataId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownChunk {
    pub data_id: DataId,
    /// The stripe's PacketIds in share order (targets stay secret until a restore).
    pub packets: Vec<PacketId>,
}

/// (c) "The upload is done."
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub pending_id: u64,
    pub source: NodeId,
    /// The targets' signed receipts, one per planned (packet, target): the
    /// manager verifies each and records only receipted packets.
    pub receipts: Vec<StoreReceipt>,
    /// DataId of the snapshot manifest.
    pub manifest: DataId,
    /// DataIds of the manifest's own chunks, in order (they are also in `chunks`).
    #[serde(default)]
    pub manifest_chunks: Vec<DataId>,
    /// Every chunk of the snapshot, in sequence order.
    pub chunks: Vec<DataId>,
    /// Plaintext bytes backed up.
    pub bytes: u64,
}

/// (c) One page of a large commit's chunk order (at most
/// [`MAX_ORDER_PAGE`](crate::manager::MAX_ORDER_PAGE) chunks from position
/// `first`), handed in before a commit whose `chunks` is then empty.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOrderRequest {
    pub pending_id: u64,
    pub source: NodeId,
    /// Position of the page's first chunk in the snapshot's order.
    pub first: u64,
    /// The page's chunks, in sequence order.
    pub chunks: Vec<DataId>,
}

/// How many chunks of the order the manager holds after a page: the next
/// page starts there (a retried page that applied already answers the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitOrderResponse {
    pub next: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResponse {
    pub snapshot: SnapshotId,
    /// Delete tickets for packets that turned out redundant (someone stored the chunk first).
    pub delete_tickets: Vec<StorageTicket>,
}

/// (e) One line of a snapshot listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub snapshot: SnapshotId,
    pub set: String,
    pub source: NodeId,
    pub time: Millis,
    pub bytes: u64,
    pub chunks: usize,
}

/// (f) What forgetting freed: packets to delete, per target, with delete tickets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetResponse {
    pub deletions: BTreeMap<NodeId, Vec<PacketId>>,
    pub delete_tickets: Vec<StorageTicket>,
    /// More packets were freed than one answer carries (it holds the
    /// first `MAX_DELETIONS_ANSWERED`): the leader's collection deletes the
    /// rest from their targets.
    #[serde(default)]
    pub more_collected_by_leader: bool,
}

/// Most chunks one read-ticket request may name: the answer (tickets for
/// every packet of these chunks, 32 packets a ticket) stays far below the
/// manager protocol's 4 MiB message limit (about 0.6 MB at width 6).
pub const MAX_READ_CHUNKS: usize = 2048;

/// (i) "Let me read these stripes of my snapshot": `count` chunks of
/// `snapshot`'s sequence from index `from` (at most [`MAX_READ_CHUNKS`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadTicketRequest {
    pub requester: NodeId,
    pub snapshot: SnapshotId,
    pub from: u64,
    pub count: u32,
}
