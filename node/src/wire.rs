//! Conversions between the manager protocol's own message types
//! (`strew_overlay::manager::wire`) and the coordinator's types, on both
//! sides of a call: the client (`grid::overlay`) and the manager service
//! (`daemon::manager`). Also owns which [`RefusalCode`] each coordinator
//! error is refused with.
//!
//! The source of a plan or commit is never taken from a message: the
//! service fills it in from the authenticated requester.

use strew_coordinator as co;
use strew_coordinator::{ApplyError, ManagerError, NodeId};
use strew_overlay::manager::wire as w;
use strew_overlay::manager::{Refusal, RefusalCode};

/// A coordinator value as it goes on the wire.
pub trait ToWire {
    type Wire;
    fn to_wire(&self) -> Self::Wire;
}

fn compression(c: co::Compression) -> w::Compression {
    match c {
        co::Compression::None => w::Compression::None,
        co::Compression::Zstd { level } => w::Compression::Zstd { level },
    }
}

fn compression_back(c: w::Compression) -> co::Compression {
    match c {
        w::Compression::None => co::Compression::None,
        w::Compression::Zstd { level } => co::Compression::Zstd { level },
    }
}

impl ToWire for co::BackupParams {
    type Wire = w::BackupParams;
    fn to_wire(&self) -> w::BackupParams {
        w::BackupParams {
            backup_distance: self.backup_distance,
            spread: self.spread,
            redundancy: self.redundancy,
            compression: compression(self.compression.clone()),
            cipher: self.encryption.cipher.clone(),
            convergence: match self.encryption.convergence {
                co::ConvergenceScope::Grid => w::ConvergenceScope::Grid,
                co::ConvergenceScope::Private => w::ConvergenceScope::Private,
            },
            sync_interval_secs: self.sync_interval_secs,
        }
    }
}

/// Backup parameters from the wire.
pub fn backup_params(p: w::BackupParams) -> co::BackupParams {
    co::BackupParams {
        backup_distance: p.backup_distance,
        spread: p.spread,
        redundancy: p.redundancy,
        compression: compression_back(p.compression),
        encryption: co::Encryption {
            cipher: p.cipher,
            convergence: match p.convergence {
                w::ConvergenceScope::Grid => co::ConvergenceScope::Grid,
                w::ConvergenceScope::Private => co::ConvergenceScope::Private,
            },
        },
        sync_interval_secs: p.sync_interval_secs,
    }
}

impl ToWire for co::PlanRequest {
    type Wire = w::PlanRequest;
    fn to_wire(&self) -> w::PlanRequest {
        w::PlanRequest {
            set: self.set.clone(),
            location: self.location,
            params: self.params.to_wire(),
            chunks: self
                .chunks
                .iter()
                .map(|c| w::ChunkPlan {
                    data_id: c.data_id,
                    packets: c
                        .packets
                        .iter()
                        .map(|p| w::PacketSpec {
                            packet_id: p.packet_id,
                            size: p.size,
                        })
                        .collect(),
                })
                .collect(),
            exclude: self.exclude.clone(),
            extend: self.extend,
        }
    }
}

/// A plan request from the wire, made by `source`.
pub fn plan_request(source: NodeId, r: w::PlanRequest) -> co::PlanRequest {
    co::PlanRequest {
        source,
        extend: r.extend,
        set: r.set,
        location: r.location,
        params: backup_params(r.params),
        chunks: r
            .chunks
            .into_iter()
            .map(|c| co::ChunkPlan {
                data_id: c.data_id,
                packets: c
                    .packets
                    .into_iter()
                    .map(|p| co::PacketSpec {
                        packet_id: p.packet_id,
                        size: p.size,
                    })
                    .collect(),
            })
            .collect(),
        exclude: r.exclude,
    }
}

impl ToWire for co::StoredPacket {
    type Wire = w::Placed;
    fn to_wire(&self) -> w::Placed {
        w::Placed {
            packet_id: self.packet_id,
            size: self.size,
            target: self.target,
        }
    }
}

fn stored(p: w::Placed) -> co::StoredPacket {
    co::StoredPacket {
        packet_id: p.packet_id,
        size: p.size,
        target: p.target,
        // Sources never see generations: their store tickets carry them.
        generation: 0,
    }
}

impl ToWire for co::PlannedChunk {
    type Wire = w::PlannedChunk;
    fn to_wire(&self) -> w::PlannedChunk {
        w::PlannedChunk {
            data_id: self.data_id,
            packets: self.packets.iter().map(ToWire::to_wire).collect(),
        }
    }
}

/// Planned chunks from the wire.
pub fn planned_chunks(chunks: Vec<w::PlannedChunk>) -> Vec<co::PlannedChunk> {
    chunks
        .into_iter()
        .map(|c| co::PlannedChunk {
            data_id: c.data_id,
            packets: c.packets.into_iter().map(stored).collect(),
            key: None,
        })
        .collect()
}

impl ToWire for co::PlanDecision {
    type Wire = w::PlanDecision;
    fn to_wire(&self) -> w::PlanDecision {
        w::PlanDecision {
            pending_id: self.pending_id,
            uploads: self.uploads.iter().map(ToWire::to_wire).collect(),
            reused: self.reused.clone(),
            tickets: self.tickets.clone(),
            expires_at: self.expires_at,
            target_caps: self.target_caps.iter().map(|(t, c)| (*t, *c)).collect(),
        }
    }
}

/// A plan decision from the wire.
pub fn plan_decision(d: w::PlanDecision) -> co::PlanDecision {
    co::PlanDecision {
        pending_id: d.pending_id,
        uploads: planned_chunks(d.uploads),
        reused: d.reused,
        tickets: d.tickets,
        expires_at: d.expires_at,
        target_caps: d.target_caps.into_iter().collect(),
    }
}

impl ToWire for co::CommitRequest {
    type Wire = w::CommitRequest;
    fn to_wire(&self) -> w::CommitRequest {
        w::CommitRequest {
            pending_id: self.pending_id,
            receipts: self.receipts.clone(),
            manifest: self.manifest,
            manifest_chunks: self.manifest_chunks.clone(),
            chunks: self.chunks.clone(),
            bytes: self.bytes,
        }
    }
}

/// A commit request from the wire, made by `source`.
pub fn commit_request(source: NodeId, r: w::CommitRequest) -> co::CommitRequest {
    co::CommitRequest {
        pending_id: r.pending_id,
        source,
        receipts: r.receipts,
        manifest: r.manifest,
        manifest_chunks: r.manifest_chunks,
        chunks: r.chunks,
        bytes: r.bytes,
    }
}

impl ToWire for co::CommitResponse {
    type Wire = w::CommitResponse;
    fn to_wire(&self) -> w::CommitResponse {
        w::CommitResponse {
            snapshot: self.snapshot,
            delete_tickets: self.delete_tickets.clone(),
        }
    }
}

/// A commit answer from the wire.
pub fn commit_response(r: w::CommitResponse) -> co::CommitResponse {
    co::CommitResponse {
        snapshot: r.snapshot,
        delete_tickets: r.delete_tickets,
    }
}

impl ToWire for co::SnapshotSummary {
    type Wire = w::SnapshotSummary;
    fn to_wire(&self) -> w::SnapshotSummary {
        w::SnapshotSummary {
            snapshot: self.snapshot,
            set: self.set.clone(),
            source: self.source,
            time: self.time,
            bytes: self.bytes,
            chunks: self.chunks as u64,
        }
    }
}

/// A snapshot listing from the wire.
pub fn snapshot_summary(s: w::SnapshotSummary) -> co::SnapshotSummary {
    co::SnapshotSummary {
        snapshot: s.snapshot,
        set: s.set,
        source: s.source,
        time: s.time,
        bytes: s.bytes,
        chunks: usize::try_from(s.chunks).unwrap_or(usize::MAX),
    }
}

impl ToWire for co::ForgetResponse {
    type Wire = w::ForgetResponse;
    fn to_wire(&self) -> w::ForgetResponse {
        w::ForgetResponse {
            deletions: self.deletions.clone(),
            delete_tickets: self.delete_tickets.clone(),
            more_collected_by_leader: self.more_collected_by_leader,
        }
    }
}

/// A forget answer from the wire.
pub fn forget_response(r: w::ForgetResponse) -> co::ForgetResponse {
    co::ForgetResponse {
        deletions: r.deletions,
        delete_tickets: r.delete_tickets,
        more_collected_by_leader: r.more_collected_by_leader,
    }
}

impl ToWire for co::RestoreOutcome {
    type Wire = w::RestoreOutcome;
    fn to_wire(&self) -> w::RestoreOutcome {
        match self {
            co::RestoreOutcome::Started => w::RestoreOutcome::Started,
            co::RestoreOutcome::Succeeded { bytes } => {
                w::RestoreOutcome::Succeeded { bytes: *bytes }
            }
            co::RestoreOutcome::Failed { reason } => w::RestoreOutcome::Failed {
                reason: reason.clone(),
            },
        }
    }
}

/// A restore outcome from the wire.
pub fn restore_outcome(o: w::RestoreOutcome) -> co::RestoreOutcome {
    match o {
        w::RestoreOutcome::Started => co::RestoreOutcome::Started,
        w::RestoreOutcome::Succeeded { bytes } => co::RestoreOutcome::Succeeded { bytes },
        w::RestoreOutcome::Failed { reason } => co::RestoreOutcome::Failed { reason },
    }
}

/// The code a command that did not apply is refused with.
pub fn apply_code(e: &ApplyError) -> RefusalCode {
    match e {
        ApplyError::Quota(_) => RefusalCode::Quota,
        ApplyError::UnknownNode(_) => RefusalCode::NotJoined,
        ApplyError::UnknownPending(_) => RefusalCode::UnknownPlan,
        ApplyError::UnknownSnapshot(_) => RefusalCode::UnknownSnapshot,
        ApplyError::TargetFull { .. } => RefusalCode::TargetFull,
        // Decided on a state another proposal changed first: retry.
        ApplyError::OutOfOrder { .. } => RefusalCode::Busy,
        ApplyError::UnknownChunk(_)
        | ApplyError::DuplicateSnapshot(_)
        | ApplyError::Invalid(_)
        | ApplyError::Malformed(_) => RefusalCode::Invalid,
    }
}

/// The code a manager error is refused with.
pub fn refusal_code(e: &ManagerError) -> RefusalCode {
    match e {
        ManagerError::Apply(e) => apply_code(e),
        ManagerError::Placement(_) => RefusalCode::Infeasible,
        ManagerError::Seal(_) | ManagerError::Ticket(_) => RefusalCode::Internal,
        ManagerError::NotYours { .. } => RefusalCode::NotOwner,
        ManagerError::MissingUploads { .. } => RefusalCode::MissingUploads,
        ManagerError::BadReceipt { .. } | ManagerError::Invalid(_) => RefusalCode::Invalid,
        ManagerError::PlanTooLarge { .. } | ManagerError::EntryTooLarge { .. } => {
            RefusalCode::TooLarge
        }
    }
}

/// A manager error as a refusal: its code and its whole cause chain.
pub fn refusal(e: &ManagerError) -> Refusal {
    Refusal::new(refusal_code(e), crate::grid::error_text(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::{DataId, DistanceRange, GeoPoint, PacketId, Redundancy};

    fn params() -> co::BackupParams {
        co::BackupParams {
            backup_distance: DistanceRange::default(),
            spread: DistanceRange::default(),
            redundancy: Redundancy::Erasure { k: 4, m: 2 },
            compression: co::Compression::Zstd { level: 3 },
            encryption: co::Encryption {
                cipher: "chacha20poly1305".into(),
                convergence: co::ConvergenceScope::Private,
            },
            sync_interval_secs: Some(60),
        }
    }

    #[test]
    fn requests_and_answers_survive_the_wire_with_the_authenticated_source() {
        let source = NodeId([1; 32]);
        let plan = co::PlanRequest {
            extend: Some(3),
            source,
            set: "home".into(),
            location: GeoPoint::new(48.85, 2.35).expect("location"),
            params: params(),
            chunks: vec![co::ChunkPlan {
                data_id: DataId([2; 32]),
                packets: vec![co::PacketSpec {
                    packet_id: PacketId([3; 32]),
                    size: 10,
                }],
            }],
            exclude: vec![NodeId([4; 32])],
        };
        assert_eq!(plan_request(source, plan.to_wire()), plan);
        // A message cannot name another source: the requester is used.
        let other = NodeId([9; 32]);
        assert_eq!(plan_request(other, plan.to_wire()).source, other);
        let commit = co::CommitRequest {
            pending_id: 5,
            source,
            receipts: vec![co::StoreReceipt::unsigned(
                NodeId([4; 32]),
                source,
                PacketId([3; 32]),
                10,
                11,
                12,
            )],
            manifest: DataId([6; 32]),
            manifest_chunks: vec![DataId([6; 32])],
            chunks: vec![DataId([2; 32]), DataId([6; 32])],
            bytes: 99,
        };
        assert_eq!(commit_request(source, commit.to_wire()), commit);
        let summary = co::SnapshotSummary {
            snapshot: co::SnapshotId([7; 32]),
            set: "home".into(),
            source,
            time: 12,
            bytes: 99,
            chunks: 2,
        };
        assert_eq!(snapshot_summary(summary.to_wire()), summary);
        for outcome in [
            co::RestoreOutcome::Started,
            co::RestoreOutcome::Succeeded { bytes: 3 },
            co::RestoreOutcome::Failed {
                reason: "disk".into(),
            },
        ] {
            assert_eq!(restore_outcome(outcome.to_wire()), outcome);
        }
    }

    #[test]
    fn coordinator_errors_map_to_codes_a_client_can_act_on() {
        let node = NodeId([1; 32]);
        assert_eq!(
            refusal_code(&ManagerError::Apply(ApplyError::UnknownNode(node))),
            RefusalCode::NotJoined
        );
        assert_eq!(
            refusal_code(&ManagerError::NotYours {
                node,
                snapshot: co::SnapshotId([2; 32])
            }),
            RefusalCode::NotOwner
        );
        assert!(
            apply_code(&ApplyError::OutOfOrder {
                got: 2,
                expected: 3
            })
            .is_transient()
        );
        assert!(!refusal_code(&ManagerError::Invalid("x".into())).is_transient());
    }
}
