//! The messages of `/strew/manager/6` (2 made them this protocol's own, 3
//! frames them, 4 carries receipts in commits, 6 encodes ids as
//! byte strings), owned by this protocol.
//!
//! Every type a manager call or answer carries is defined here, field by
//! field, rather than borrowed from the coordinator's records: a refactor of
//! the coordinator cannot change the protocol without a change here, and the
//! encoding of each message is pinned by a test. The node converts these to
//! and from the coordinator's own types. Only ids, tickets, sealed boxes and
//! unit values (locations, distance ranges, redundancy) are shared with the
//! coordinator crate. Refusals carry a [`RefusalCode`] a program can act on
//! and a detail a person can read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strew_coordinator::{
    DataId, DistanceRange, GeoPoint, GridId, MemberCert, NodeId, PacketId, Redundancy,
    SealedForRecipient, SnapshotId, StorageTicket, StoreReceipt,
};

/// One packet a source wants to store: its id and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketSpec {
    pub packet_id: PacketId,
    pub size: u64,
}

/// One chunk of a backup: its DataId and its stripe's packets in share order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkPlan {
    pub data_id: DataId,
    pub packets: Vec<PacketSpec>,
}

/// How chunks are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

/// Who shares the convergence secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvergenceScope {
    Grid,
    Private,
}

/// The parameters a source chooses for one backup set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupParams {
    pub backup_distance: DistanceRange,
    pub spread: DistanceRange,
    pub redundancy: Redundancy,
    pub compression: Compression,
    pub cipher: String,
    pub convergence: ConvergenceScope,
    pub sync_interval_secs: Option<u64>,
}

/// "Where do these chunks go?" (also the dry run's question).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanRequest {
    pub set: String,
    pub location: GeoPoint,
    pub params: BackupParams,
    pub chunks: Vec<ChunkPlan>,
    /// Targets the source could not reach in an earlier plan of this backup.
    pub exclude: Vec<NodeId>,
    /// The source's pending backup of the same set this plan adds a part
    /// to (renewing its deadline); `None` starts a new pending backup.
    #[serde(default)]
    pub extend: Option<u64>,
}

/// One packet and the target it goes to (or is on).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub packet_id: PacketId,
    pub size: u64,
    pub target: NodeId,
}

/// A new chunk and where each of its packets goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChunk {
    pub data_id: DataId,
    pub packets: Vec<Placed>,
}

/// The manager's plan: what to upload where, with tickets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanDecision {
    pub pending_id: u64,
    pub uploads: Vec<PlannedChunk>,
    /// Chunks already stored: nothing to upload.
    pub reused: Vec<DataId>,
    pub tickets: Vec<StorageTicket>,
    pub expires_at: u64,
    /// Upload rate caps (bytes per second) of the plan's capped targets:
    /// the source paces its uploads to each.
    #[serde(default)]
    pub target_caps: Vec<(NodeId, u64)>,
}

/// A dry-run placement: where new chunks would go, and which are stored already.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DryRunAnswer {
    pub uploads: Vec<PlannedChunk>,
    pub reused: Vec<DataId>,
}

/// "The upload is done": the targets' receipts and the snapshot's chunks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitRequest {
    pub pending_id: u64,
    /// One signed receipt per planned (packet, target); the manager
    /// verifies each and records only receipted packets.
    pub receipts: Vec<StoreReceipt>,
    /// DataId of the snapshot manifest and of its own chunks, in order.
    pub manifest: DataId,
    pub manifest_chunks: Vec<DataId>,
    /// Every chunk of the snapshot, in sequence order.
    pub chunks: Vec<DataId>,
    /// Plaintext bytes backed up.
    pub bytes: u64,
}

/// The committed snapshot, and delete tickets for packets someone stored first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitResponse {
    pub snapshot: SnapshotId,
    pub delete_tickets: Vec<StorageTicket>,
}

/// One line of a snapshot listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSummary {
    pub snapshot: SnapshotId,
    pub set: String,
    pub source: NodeId,
    pub time: u64,
    pub bytes: u64,
    pub chunks: u64,
}

/// What forgetting freed: packets to delete, per target, with delete tickets.
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

/// How a restore went.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreOutcome {
    Started,
    Succeeded { bytes: u64 },
    Failed { reason: String },
}

/// What the manager says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManagerInfo {
    /// The leader of the coordinator group: the node serving the manager.
    pub manager: NodeId,
    /// The coordinator group's members (voters and learners): any of them
    /// may lead after a failover, so targets honour tickets from all.
    pub members: Vec<NodeId>,
    /// The raft term the leader was elected in.
    pub term: u64,
    /// Nodes the manager's placement view holds, and how many are online.
    pub nodes: u64,
    pub online: u64,
    pub snapshots: u64,
    pub stored_bytes: u64,
    /// Stripes the leader's repair checker found to need rebuilding (absent
    /// from older managers' answers: 0).
    #[serde(default)]
    pub repairs_pending: u64,
    /// The grid the group belongs to (none until its founder founded it).
    pub grid_id: Option<GridId>,
    /// The grid key's certificate of every member: a node believes a member
    /// list only for the members whose certificate chains to its pinned grid.
    pub certificates: Vec<MemberCert>,
    /// Since when (unix ms) the group is a rebuilt one (`strew grid
    /// rebuild`): sources then re-register the snapshots their roots hold.
    #[serde(default)]
    pub rebuilt_since: Option<u64>,
}

/// One page of a snapshot of a lost coordinator group as its source's root
/// keeps it: the old group's attestation, the signer's grid-key
/// certificate, the digests of all the sequence's pages (32 bytes each,
/// concatenated), which page this is, the page, and the set's backup
/// parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReregisterRequest {
    pub attestation: strew_coordinator::SnapshotAttestation,
    pub cert: MemberCert,
    pub pages: serde_bytes::ByteBuf,
    pub page: u32,
    pub sequence: strew_coordinator::Sequence,
    pub params: BackupParams,
}

impl ReregisterRequest {
    /// The page digests, or `None` when `pages` is not a whole number of them.
    pub fn page_digests(&self) -> Option<Vec<[u8; 32]>> {
        if !self.pages.len().is_multiple_of(32) {
            return None;
        }
        self.pages
            .chunks_exact(32)
            .map(|d| <[u8; 32]>::try_from(d).ok())
            .collect()
    }
}

/// A node's contract as `strew grid members` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInfo {
    pub plan: String,
    pub source_storage: Option<u64>,
    pub target_storage: Option<u64>,
    pub network_bytes_per_day: u64,
    pub bandwidth: u64,
    pub processor_millicores: u32,
    pub expires_at: Option<u64>,
}

/// One node of the grid as the manager records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    pub node_id: NodeId,
    /// `coordinator` (certified member of the group) or `node`.
    pub role: String,
    pub subscription: SubscriptionInfo,
    /// Stored bytes (redundancy included) charged to it as a source.
    pub source_stored_bytes: u64,
    /// Bytes it stores for others as a target.
    pub target_stored_bytes: u64,
    pub online: bool,
    /// Bytes it moved through the grid today (UTC): its plans' uploads and
    /// its metered reads (what `network_bytes_per_day` limits).
    #[serde(default)]
    pub network_bytes_today: u64,
}

/// The grid's secrets an admitted node is given.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GridSecret {
    pub grid_id: GridId,
    /// Whether the grid is open (any node of the grid view gets the secret).
    pub open: bool,
    /// The grid-scope convergence secret.
    pub convergence: [u8; 32],
}

impl std::fmt::Debug for GridSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GridSecret")
            .field("grid_id", &self.grid_id)
            .field("open", &self.open)
            .finish_non_exhaustive()
    }
}

/// Why a call was refused or could not be served: what a program acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RefusalCode {
    /// The request is malformed or inconsistent.
    Invalid,
    /// The request exceeds a protocol bound (a plan's chunks or packets, a
    /// raft entry): split it.
    TooLarge,
    /// The requester acted for another node, or for another source's snapshot or plan.
    NotOwner,
    /// The requester has not joined the grid (its announcement may still be travelling).
    NotJoined,
    /// The source's subscription does not allow it (quota, closed grid).
    Quota,
    /// No placement meets the constraints; the detail says which bound to relax.
    Infeasible,
    /// Targets are too full for the backup.
    TargetFull,
    /// The snapshot does not exist.
    UnknownSnapshot,
    /// The planned backup does not exist (expired, aborted or committed).
    UnknownPlan,
    /// Some planned packets have no verified receipt yet: upload them and commit again.
    MissingUploads,
    /// A certificate, revocation or member list does not chain to the grid key.
    Untrusted,
    /// This coordinator belongs to no group yet.
    NoGroup,
    /// The coordinator group has no quorum; retry later.
    NoQuorum,
    /// The manager is busy or still starting; retry later.
    Busy,
    /// The manager failed (sealing, signing, storage); retry later.
    Internal,
    /// A code this build does not know (a newer manager).
    #[serde(other)]
    Unknown,
}

impl RefusalCode {
    /// Whether retrying the same call later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            RefusalCode::NotJoined
                | RefusalCode::NoQuorum
                | RefusalCode::Busy
                | RefusalCode::Internal
        )
    }

    /// A stable short name (for JSON output and logs).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::Invalid => "invalid",
            RefusalCode::TooLarge => "too_large",
            RefusalCode::NotOwner => "not_owner",
            RefusalCode::NotJoined => "not_joined",
            RefusalCode::Quota => "quota",
            RefusalCode::Infeasible => "infeasible",
            RefusalCode::TargetFull => "target_full",
            RefusalCode::UnknownSnapshot => "unknown_snapshot",
            RefusalCode::UnknownPlan => "unknown_plan",
            RefusalCode::MissingUploads => "missing_uploads",
            RefusalCode::Untrusted => "untrusted",
            RefusalCode::NoGroup => "no_group",
            RefusalCode::NoQuorum => "no_quorum",
            RefusalCode::Busy => "busy",
            RefusalCode::Internal => "internal",
            RefusalCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: its code and the words for the user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub code: RefusalCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: RefusalCode, detail: impl Into<String>) -> Self {
        Refusal {
            code,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

/// Most RTT samples one [`RttReport`] may carry.
pub const MAX_RTT_SAMPLES: usize = 64;
/// Most entries an evidence answer carries (nodes with any evidence, by id).
pub const MAX_EVIDENCE_ENTRIES: usize = 10_000;

/// One round-trip time the reporting node measured (libp2p ping) to `peer`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttSample {
    pub peer: NodeId,
    /// The smallest RTT seen since the last report, in microseconds.
    pub rtt_micros: u32,
}

/// A batch of RTT samples (at most [`MAX_RTT_SAMPLES`]); the observer is
/// the authenticated requester.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RttReport {
    pub samples: Vec<RttSample>,
}

/// What the measured RTTs say about a node's claimed location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EvidenceVerdict {
    Unchecked,
    Consistent,
    Suspect,
    Refuted,
    /// A verdict this build does not know (a newer manager).
    #[serde(other)]
    Unknown,
}

impl EvidenceVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            EvidenceVerdict::Unchecked => "unchecked",
            EvidenceVerdict::Consistent => "consistent",
            EvidenceVerdict::Suspect => "suspect",
            EvidenceVerdict::Refuted => "refuted",
            EvidenceVerdict::Unknown => "unknown",
        }
    }
}

/// One node's location evidence: trusted observers whose RTT fits its
/// claimed location, those whose RTT refutes it, and the verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEvidence {
    pub node: NodeId,
    pub consistent: u32,
    pub refuted: u32,
    pub verdict: EvidenceVerdict,
}

/// The sealed sequence of a snapshot (re-exported so callers name it here).
pub type SealedSequence = SealedForRecipient;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::{ManagerRequest, ManagerResponse};

    fn params() -> BackupParams {
        BackupParams {
            backup_distance: "100km..2000km".parse().expect("range"),
            spread: "50km..".parse().expect("range"),
            redundancy: Redundancy::Erasure { k: 4, m: 2 },
            compression: Compression::Zstd { level: 3 },
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
            sync_interval_secs: Some(3600),
        }
    }

    fn fingerprint<T: Serialize>(value: &T) -> String {
        let bytes = crate::cbor::encode(value).expect("encodes");
        blake3::hash(&bytes).to_hex()[..16].to_string()
    }

    /// The encoding of `/strew/manager/6` is pinned: a change of any
    /// message's shape fails here, so it is made on purpose (with a new
    /// protocol version), never by a refactor elsewhere.
    #[test]
    fn the_encoding_of_every_message_kind_is_pinned() {
        let placed = Placed {
            packet_id: PacketId([3; 32]),
            size: 10,
            target: NodeId([4; 32]),
        };
        let plan = ManagerRequest::Plan(PlanRequest {
            extend: None,
            set: "home".into(),
            location: GeoPoint::new(48.85, 2.35).expect("location"),
            params: params(),
            chunks: vec![ChunkPlan {
                data_id: DataId([2; 32]),
                packets: vec![PacketSpec {
                    packet_id: PacketId([3; 32]),
                    size: 10,
                }],
            }],
            exclude: vec![NodeId([4; 32])],
        });
        let commit = ManagerRequest::Commit(CommitRequest {
            pending_id: 5,
            receipts: vec![StoreReceipt::unsigned(
                NodeId([4; 32]),
                NodeId([1; 32]),
                PacketId([3; 32]),
                10,
                11,
                12,
            )],
            manifest: DataId([6; 32]),
            manifest_chunks: vec![DataId([6; 32])],
            chunks: vec![DataId([2; 32])],
            bytes: 99,
        });
        let decision = ManagerResponse::Planned(PlanDecision {
            pending_id: 5,
            uploads: vec![PlannedChunk {
                data_id: DataId([2; 32]),
                packets: vec![placed],
            }],
            reused: vec![DataId([7; 32])],
            tickets: Vec::new(),
            expires_at: 1_000,
            target_caps: vec![(NodeId([3; 32]), 1 << 20)],
        });
        let listing = ManagerResponse::Snapshots(vec![SnapshotSummary {
            snapshot: SnapshotId([8; 32]),
            set: "home".into(),
            source: NodeId([1; 32]),
            time: 12,
            bytes: 99,
            chunks: 2,
        }]);
        let refused = ManagerResponse::Refused(Refusal::new(RefusalCode::Infeasible, "too few"));
        let restore = ManagerRequest::RecordRestore {
            snapshot: SnapshotId([8; 32]),
            outcome: RestoreOutcome::Succeeded { bytes: 3 },
        };
        let got = [
            fingerprint(&plan),
            fingerprint(&commit),
            fingerprint(&decision),
            fingerprint(&listing),
            fingerprint(&refused),
            fingerprint(&restore),
        ];
        let pinned = [
            "0f6cb25471bf08be",
            "6b36c9818dd4611b",
            "2b066e16e61317f1",
            "447dbeac4c8d1d87",
            "e43073ce641fc146",
            "0a9dbd67cbaf8e8d",
        ];
        assert_eq!(got, pinned, "the manager protocol's encoding changed");
    }

    #[test]
    fn an_unknown_refusal_code_from_a_newer_manager_still_decodes() {
        #[derive(Serialize)]
        enum Future {
            Overloaded,
        }
        #[derive(Serialize)]
        struct FutureRefusal {
            code: Future,
            detail: String,
        }
        let bytes = crate::cbor::encode(&FutureRefusal {
            code: Future::Overloaded,
            detail: "later".into(),
        })
        .expect("encodes");
        let refusal: Refusal = crate::cbor::decode(&bytes, 1 << 10).expect("decodes");
        assert_eq!(refusal.code, RefusalCode::Unknown);
        assert_eq!(refusal.detail, "later");
    }
}

/// How one packet of a snapshot audit page answered the leader's challenge.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuditVerdict {
    /// The chunk and its BLAKE3 proof verified against the PacketId.
    Passed,
    /// A wrong proof, "not found", a corrupt copy, or no answer after retries.
    Failed,
    /// The target could not be reached.
    Unreachable,
    /// The target did not take the challenge (it does not know this leader
    /// yet) or the leader ran out of time: nothing is known.
    NoAnswer,
}

/// One packet copy's audit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PacketAudited {
    pub packet: PacketId,
    pub target: NodeId,
    pub verdict: AuditVerdict,
}

/// One stripe's audits, and how many distinct packets it needs (K).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StripeAudited {
    pub stripe: u64,
    pub data_id: strew_coordinator::DataId,
    pub needed: u8,
    pub packets: Vec<PacketAudited>,
}
