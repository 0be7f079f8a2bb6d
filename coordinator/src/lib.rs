//! strew's sequence manager as a sans-IO library.
//!
//! Placement under geographic distance constraints, sequences and their
//! sealing, metadata records, dedup, quotas and subscriptions, repair policy.
//! No networking, no async runtime, no wall clock: time and randomness are
//! passed in, so the node and the simulator drive identical code.

pub mod attest;
pub mod audit;
pub mod cbor;
pub mod cities;
pub mod grid;
pub mod ids;
pub mod joins;
pub mod location;
pub mod manager;
pub mod network;
pub mod placement;
pub mod quota;
pub mod receipt;
pub mod records;
pub mod repair;
pub mod seal;
pub mod state;
pub mod ticket;
pub mod trust;
pub mod units;
pub mod work;

pub use attest::{AttestError, Registration, SnapshotAttestation};
pub use cbor::CborError;
pub use grid::{GridView, NodeProfile};
pub use ids::{DataId, GridId, IdError, NodeId, PacketId, SnapshotId};
pub use location::{EvidencePolicy, LocationBook, LocationCheck, RttObservation, Verdict};
pub use manager::audits::AuditRound;
pub use manager::exit::LeaveStatus;
pub use manager::{
    ChunkPlan, CommitOrderRequest, CommitOrderResponse, CommitRequest, CommitResponse, CommitStep,
    DedupAnswer, Effects, ForgetResponse, KnownChunk, LogRetention, Manager, ManagerConfig,
    ManagerError, PacketSpec, PlanDecision, PlanDraft, PlanRequest, ReservationLimits,
    RetargetRequest, SnapshotSummary,
};
pub use network::NetworkDomain;
pub use placement::{
    Placement, PlacementPolicy, PlacementRefusal, PlacementRequest, RefusalReason, place,
    place_excluding, place_replacements, place_replacements_reusing, place_replacements_with,
    place_with,
};
pub use quota::{EARNED_ALLOWANCE, GridMode, JoinToken, QuotaError, Subscription};
pub use receipt::{ReceiptError, StoreReceipt};
pub use records::{
    AssemblyRecord, BackupParams, ChunkRecord, ClientRecord, Compression, ConvergenceScope,
    Encryption, LogEvent, LogKind, PendingBackup, PlannedChunk, Receipted, RestoreOutcome,
    SnapshotRecord, SourceProfile, StoredPacket, TargetRecord,
};
pub use seal::{
    GroupKey, SealError, SealedAtRest, SealedForRecipient, Sequence, SequenceEntry, SequenceStripe,
    open_as_recipient, open_at_rest, seal_at_rest, seal_to_recipient,
};
pub use state::{
    Applied, ApplyError, COLLECT_HOLD, Command, Deletion, DueGarbage, Garbage, MAX_COLLECT_BATCH,
    MAX_DELETIONS_ANSWERED, MAX_ENTRY_BYTES, MAX_PACKET_BYTES, MAX_PENDING_PER_SOURCE,
    ManagerState, PendingList, REREGISTERED, Reregistered, Touched, Unreferenced,
};
pub use ticket::{StorageTicket, TICKET_VERSION, TicketEntry, TicketError, TicketKind};
pub use trust::{
    GridRoot, Invite, MemberCert, Renewal, Revocation, TrustCommand, TrustError, TrustState,
};
pub use units::{
    DistanceRange, GeoPoint, Millis, Redundancy, UnitError, format_duration, format_km,
    format_size, format_unix_ms, haversine_km, parse_distance_km, parse_duration, parse_size,
};
