//! The sequence-manager protocol (`/strew/manager/6`): the calls a source
//! makes to the sequence manager — plan a backup, commit it, fetch a sealed
//! sequence, get read tickets, list, forget, abandon a plan, report a
//! restore or an unusable chunk, and a dry-run plan — the grid-key holder's
//! admissions and removals of coordinators, an admitted node's request for
//! the grid's secrets, and the manager's
//! answers, as size-bounded CBOR.
//!
//! Owns the messages (the payloads are [`wire`] types of this protocol,
//! never the coordinator's records), their codec and the [`ManagerEndpoint`] seam through
//! which the node plugs the coordinator in. The requester is the
//! authenticated remote peer (Noise), never a field of the message. A node
//! that does not serve answers [`ManagerResponse::NotManager`] with the
//! manager it believes in, so a client simply retries there: after a leader
//! change, a retry against the new leader is all a client has to do. The
//! protocol's runtime state (calls in flight both ways) is in `driver`.

pub(crate) mod driver;
pub mod wire;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use futures::{AsyncRead, AsyncWrite};
use libp2p::StreamProtocol;
use libp2p::request_response;
use serde::{Deserialize, Serialize};
use strew_coordinator::{
    DataId, Invite, MemberCert, NodeId, PacketId, Renewal, Revocation, SealedForRecipient,
    SnapshotAttestation, SnapshotId, StorageTicket,
};

pub use wire::{
    AuditVerdict, CommitRequest, CommitResponse, DryRunAnswer, EvidenceVerdict, ForgetResponse,
    GridSecret, ManagerInfo, MemberSummary, NodeEvidence, PacketAudited, PlanDecision, PlanRequest,
    Refusal, RefusalCode, ReregisterRequest, RestoreOutcome, RttReport, RttSample, SnapshotSummary,
    StripeAudited, SubscriptionInfo,
};

use crate::budget::InboundBudget;
use crate::cbor;

/// Protocol id. Version 2: payloads are this protocol's own types, the
/// source is the authenticated peer only, refusals carry a code.
/// Version 3: each message is length-prefixed (`cbor::read_framed`).
/// Version 5: `Who` answers carry the grid id and the members' certificates;
/// `Certify`, `Revoke`, `GridSecret`, `Redeem`, `Renew` and `Members` calls;
/// a commit carries the targets' signed receipts (not a list of packets),
/// `ReadTickets` and `ReportBad` are new (issue 11).
pub const MANAGER_PROTOCOL: &str = "/strew/manager/6";
/// Largest request on the wire (SPEC R12, issue 12): what a manager reads
/// from any grid node. Plans (`MAX_PLAN_CHUNKS`), receipts
/// (`MAX_RECEIPTS_PER_CALL`) and sequences (`MAX_SEQUENCE_PAGE`) travel in
/// bounded parts and pages, so no call needs more. Over it, both the writer
/// and the reader refuse the message (counted in `strew_oversize_messages`).
pub const MAX_MESSAGE_BYTES: usize = 4 << 20;
/// Largest response: the same bound. Every answer that grows with the grid
/// or a backup is paged or capped: plans and sequences by their pages,
/// listings (`ListPage`, `MembersPage`), forget, abandon and commit answers
/// at `MAX_DELETIONS_ANSWERED` deletions (about 2 MB with their tickets; the
/// leader collects the rest), evidence at `MAX_EVIDENCE_ENTRIES`.
pub const MAX_RESPONSE_BYTES: usize = MAX_MESSAGE_BYTES;

/// The manager's attestation of a snapshot's sequence and the signer's
/// grid-key certificate (`FetchAttestation`'s answer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttestationAnswer {
    pub attestation: SnapshotAttestation,
    pub cert: Option<MemberCert>,
}

/// A call to the sequence manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ManagerRequest {
    /// Where do these chunks go? (records a pending backup and issues store tickets)
    Plan(PlanRequest),
    /// The same placement without recording anything (`strew plan`).
    DryRun(PlanRequest),
    /// The uploads of a plan are done: here are the verified receipts.
    Commit(CommitRequest),
    /// The sequence of one of the requester's snapshots, sealed to its X25519 key.
    FetchSequence { snapshot: SnapshotId },
    /// Stripes `from..from+count` (at most
    /// `strew_coordinator::manager::MAX_SEQUENCE_PAGE`) of one of the
    /// requester's snapshots' sequence, sealed to its X25519 key; answered
    /// `SequencePage`.
    FetchSequencePage {
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    },
    /// The requester's snapshots (optionally of one backup set), answered
    /// only while they fit one page (`MAX_LIST_PAGE`); else `Invalid`.
    List { set: Option<String> },
    /// Snapshots `from..from+count` (at most
    /// `strew_coordinator::manager::MAX_LIST_PAGE`) of the requester's
    /// listing, oldest first; answered `SnapshotsPage`.
    ListPage {
        set: Option<String>,
        from: u64,
        count: u32,
    },
    /// Forget one of the requester's snapshots.
    Forget { snapshot: SnapshotId },
    /// Drop a plan the requester replaced.
    Abandon { pending_id: u64 },
    /// Targets' receipts for packets of the requester's pending backup
    /// `pending_id`, handed in before the commit (at most
    /// `strew_coordinator::manager::MAX_RECEIPTS_PER_CALL`): the manager
    /// verifies and records them, the commit need not carry them. Answered
    /// `Recorded`.
    Receipts {
        pending_id: u64,
        receipts: Vec<strew_coordinator::StoreReceipt>,
    },
    /// One page of the chunk order of the requester's pending backup, for
    /// a commit too large for one message (at most
    /// `strew_coordinator::manager::order_page_len(width)` chunks); the
    /// commit that follows names no chunks. Answered `OrderRecorded`.
    CommitOrder(strew_coordinator::CommitOrderRequest),
    /// Uploads of these packets of the requester's pending backup failed
    /// (after retries): the manager moves each (at most
    /// `strew_coordinator::manager::MAX_RETARGET_SLOTS`, none receipted
    /// yet) to a new target, never one named in `avoid`. Answered `Planned`
    /// with the moved chunks whole and store tickets for them.
    Retarget(strew_coordinator::RetargetRequest),
    /// A restore started, succeeded or failed.
    RecordRestore {
        snapshot: SnapshotId,
        outcome: RestoreOutcome,
    },
    /// Read tickets (to the requester) for `count` chunks (at most
    /// `strew_coordinator::manager::MAX_READ_CHUNKS`) of one of its
    /// snapshots, from chunk `from` of its sequence.
    ReadTickets {
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    },
    /// The packets of chunk `data_id` the requester was given failed to
    /// decode: never reuse that copy for a new backup.
    ReportBad {
        data_id: DataId,
        packets: Vec<PacketId>,
    },
    /// Who is the manager, and how is it doing? (answered by any node)
    Who,
    /// Admit a coordinator: a certificate signed by the grid key (sent by
    /// `strew grid admit` on the node holding it).
    Certify(MemberCert),
    /// Remove a coordinator: a revocation signed by the grid key.
    Revoke(Revocation),
    /// The grid's convergence secret (answered only to nodes the grid admits).
    GridSecret,
    /// Redeem an invitation of the grid key (`strew init --join`): the
    /// requester is admitted with the invitation's subscription.
    Redeem(Invite),
    /// A grid-key-signed new expiry of a node's subscription.
    Renew(Renewal),
    /// Every node the manager records, with its subscription and usage,
    /// answered only while they fit one page ([`MAX_MEMBERS_PAGE`]); else
    /// `Invalid`.
    Members,
    /// The requester leaves the grid gracefully (`cancel`: it stays after
    /// all): it gets no new packets and its packets are rebuilt elsewhere.
    /// Asked again, it reports progress.
    Leave { cancel: bool },
    /// RTTs the requester measured to other nodes (location evidence;
    /// at most [`wire::MAX_RTT_SAMPLES`]). Answered `Recorded`.
    ReportRtt(RttReport),
    /// The location evidence the manager holds (answered `Evidence`).
    Evidence,
    /// Up to `count` (at most [`MAX_MEMBERS_PAGE`]) recorded nodes after
    /// node id `after` (from the first with `None`), by node id; answered
    /// `MembersPage`.
    MembersPage { after: Option<NodeId>, count: u32 },
    /// `strew check`: the leader challenges every packet of stripes
    /// `from..from+count` (at most
    /// `strew_coordinator::manager::MAX_AUDIT_PAGE`) of one of the
    /// requester's snapshots and answers `Audited`.
    AuditSnapshot {
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    },
    /// How one of the requester's snapshots stands: its targets (packets
    /// and bytes on each) and its stripes' health with the targets in
    /// `down` (at most `strew_coordinator::manager::MAX_STANDING_DOWN`)
    /// unreachable, summed over the stripes from `from` on, at most
    /// `STANDING_PAGES` sequence pages of them. Answered `Standing`; no
    /// sequence page is sent.
    Standing {
        snapshot: SnapshotId,
        down: Vec<NodeId>,
        from: u64,
    },
    /// The manager's signed attestation of one of the requester's
    /// snapshots' sequence, in pages of `ATTEST_PAGE` stripes (fetched with
    /// `FetchSequencePage`), and the signer's certificate: what the
    /// snapshot's root keeps (issue 18). Answered `Attestation`.
    FetchAttestation { snapshot: SnapshotId },
    /// `strew grid rebuild` (from a certified member): this group replaces
    /// a lost one and takes re-registered snapshots. Answered `Rebuilding`.
    Rebuild,
    /// One page of a snapshot of a lost group, from the requester's root
    /// (answered `Reregistered`; refused unless the group was rebuilt and
    /// the attestation and the page check out).
    Reregister(Box<ReregisterRequest>),
    /// `strew grid collect-unreferenced` (from a certified member), one
    /// page of `target`'s inventory after `after`: the leader queues for
    /// collection the packets no record references, once the group was
    /// rebuilt at least `grace_ms` ago (`dry_run`: only counts them).
    /// Answered `Unreferenced`.
    CollectUnreferenced {
        target: NodeId,
        after: Option<PacketId>,
        grace_ms: u64,
        dry_run: bool,
    },
}

/// Most members one answer lists (about 200 bytes each: well under the
/// 4 MiB message bound).
pub const MAX_MEMBERS_PAGE: usize = 4096;

impl ManagerRequest {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ManagerRequest::Plan(_) => "plan",
            ManagerRequest::DryRun(_) => "dry_run",
            ManagerRequest::Commit(_) => "commit",
            ManagerRequest::FetchSequence { .. } => "fetch_sequence",
            ManagerRequest::FetchSequencePage { .. } => "fetch_sequence_page",
            ManagerRequest::List { .. } => "list",
            ManagerRequest::ListPage { .. } => "list_page",
            ManagerRequest::Forget { .. } => "forget",
            ManagerRequest::Abandon { .. } => "abandon",
            ManagerRequest::Receipts { .. } => "receipts",
            ManagerRequest::CommitOrder(_) => "commit_order",
            ManagerRequest::Retarget(_) => "retarget",
            ManagerRequest::RecordRestore { .. } => "record_restore",
            ManagerRequest::ReadTickets { .. } => "read_tickets",
            ManagerRequest::ReportBad { .. } => "report_bad",
            ManagerRequest::Who => "who",
            ManagerRequest::Certify(_) => "certify",
            ManagerRequest::Revoke(_) => "revoke",
            ManagerRequest::GridSecret => "grid_secret",
            ManagerRequest::Redeem(_) => "redeem",
            ManagerRequest::Renew(_) => "renew",
            ManagerRequest::Members => "members",
            ManagerRequest::Leave { .. } => "leave",
            ManagerRequest::ReportRtt(_) => "report_rtt",
            ManagerRequest::Evidence => "evidence",
            ManagerRequest::MembersPage { .. } => "members_page",
            ManagerRequest::AuditSnapshot { .. } => "audit_snapshot",
            ManagerRequest::Standing { .. } => "standing",
            ManagerRequest::FetchAttestation { .. } => "fetch_attestation",
            ManagerRequest::Rebuild => "rebuild",
            ManagerRequest::Reregister(_) => "reregister",
            ManagerRequest::CollectUnreferenced { .. } => "collect_unreferenced",
        }
    }
}

/// The manager's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ManagerResponse {
    Planned(PlanDecision),
    DryRun(DryRunAnswer),
    Committed(CommitResponse),
    Sequence(SealedForRecipient),
    /// One page of a sequence (its stripes and the whole sequence's
    /// snapshot, manifest and manifest chunks), and the stripes in all.
    SequencePage {
        sealed: SealedForRecipient,
        total: u64,
    },
    Snapshots(Vec<SnapshotSummary>),
    /// One page of a listing, and the snapshots in all.
    SnapshotsPage {
        snapshots: Vec<SnapshotSummary>,
        total: u64,
    },
    Forgotten(ForgetResponse),
    Abandoned(Vec<StorageTicket>),
    /// Read tickets naming the requester as holder.
    ReadTickets(Vec<StorageTicket>),
    Recorded,
    /// How many chunks of a paged commit's order the manager holds: the
    /// next page starts there.
    OrderRecorded(strew_coordinator::CommitOrderResponse),
    Info(ManagerInfo),
    /// The grid's secrets, for an admitted node.
    GridSecret(GridSecret),
    Members(Vec<MemberSummary>),
    /// One page of the members, and how many nodes are recorded in all.
    MembersPage {
        members: Vec<MemberSummary>,
        total: u64,
    },
    /// What the leader's challenges of one snapshot audit page found, and
    /// how many stripes the snapshot has.
    Audited {
        stripes: Vec<StripeAudited>,
        total: u64,
    },
    /// How a snapshot's stripes from the request's `from` on stand, and
    /// where the next call starts (`None` after the last stripe).
    Standing {
        standing: strew_coordinator::manager::Standing,
        next: Option<u64>,
    },
    /// How the requester's exit stands.
    Leaving(strew_coordinator::LeaveStatus),
    /// Location evidence of the nodes that have any (at most
    /// [`wire::MAX_EVIDENCE_ENTRIES`], by node id).
    Evidence(Vec<NodeEvidence>),
    /// The manager's attestation and the signer's certificate (none in a
    /// group without a grid).
    Attestation(Box<AttestationAnswer>),
    /// Since when (unix ms) the group is a rebuilt one.
    Rebuilding {
        since: u64,
    },
    /// The group has the first `pages_done` of the snapshot's `pages`
    /// pages (all: the snapshot is recorded); the source goes on from page
    /// `pages_done`.
    Reregistered {
        pages_done: u32,
        pages: u32,
    },
    /// One inventory page looked at: the packets of it listed, those no
    /// record references (queued unless a dry run) and their bytes, and
    /// where the next page starts (`None`: the target's last page).
    Unreferenced {
        scanned: u64,
        found: u64,
        bytes: u64,
        next: Option<PacketId>,
    },
    /// This node does not serve the manager; `leader` is where to retry.
    NotManager {
        leader: Option<NodeId>,
    },
    /// The manager refused the call: a code, and the words for the user
    /// (placement explanations, quota, unknown snapshot, …).
    Refused(Refusal),
    /// The manager cannot serve right now (no quorum, busy); retry later.
    Unavailable(Refusal),
}

/// A boxed answer of the endpoint. `'static` so the overlay can spawn it:
/// the endpoint is reached through an `Arc`, which the answer keeps.
pub type ManagerAnswer = Pin<Box<dyn Future<Output = ManagerResponse> + Send + 'static>>;

/// The node's side of the manager protocol: answers calls from `requester`.
/// Called on the event loop's task, so it must return at once: the work
/// (e.g. redb writes, through `spawn_blocking`) belongs inside the future,
/// which the overlay spawns (a bounded number at a time; over it callers are
/// told `Unavailable`).
pub trait ManagerEndpoint: Send + Sync + 'static {
    fn handle(self: Arc<Self>, requester: NodeId, request: ManagerRequest) -> ManagerAnswer;
}

/// Decodes a request (fuzz entry point).
pub fn decode_request(bytes: &[u8]) -> Result<ManagerRequest, cbor::CborError> {
    cbor::decode(bytes, MAX_MESSAGE_BYTES)
}

/// Decodes a response (fuzz entry point).
pub fn decode_response(bytes: &[u8]) -> Result<ManagerResponse, cbor::CborError> {
    cbor::decode(bytes, MAX_RESPONSE_BYTES)
}

/// The manager codec: one framed CBOR value per stream direction,
/// size-bounded, read only into room reserved in the inbound budget.
#[derive(Clone, Debug, Default)]
pub struct ManagerCodec {
    budget: InboundBudget,
}

impl ManagerCodec {
    pub fn new(budget: InboundBudget) -> Self {
        ManagerCodec { budget }
    }
}

impl request_response::Codec for ManagerCodec {
    type Protocol = StreamProtocol;
    type Request = ManagerRequest;
    type Response = ManagerResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Self::Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let framed = cbor::read_framed(io, MAX_MESSAGE_BYTES, &self.budget).await?;
        decode_request(&framed.bytes).map_err(cbor::invalid)
    }

    async fn read_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Self::Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        let framed = cbor::read_framed(io, MAX_RESPONSE_BYTES, &self.budget).await?;
        decode_response(&framed.bytes).map_err(cbor::invalid)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Self::Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        cbor::write_message(io, &req, MAX_MESSAGE_BYTES).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Self::Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        cbor::write_message(io, &res, MAX_RESPONSE_BYTES).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let requests = [
            ManagerRequest::Who,
            ManagerRequest::List {
                set: Some("home".into()),
            },
            ManagerRequest::ListPage {
                set: None,
                from: 4096,
                count: 2048,
            },
            ManagerRequest::Forget {
                snapshot: SnapshotId([3; 32]),
            },
            ManagerRequest::Abandon { pending_id: 7 },
            ManagerRequest::Retarget(strew_coordinator::RetargetRequest {
                pending_id: 7,
                source: NodeId([1; 32]),
                slots: vec![(DataId([4; 32]), 2)],
                avoid: vec![NodeId([6; 32])],
            }),
            ManagerRequest::ReportRtt(RttReport {
                samples: vec![RttSample {
                    peer: NodeId([5; 32]),
                    rtt_micros: 1234,
                }],
            }),
            ManagerRequest::Evidence,
            ManagerRequest::MembersPage {
                after: Some(NodeId([8; 32])),
                count: 4096,
            },
            ManagerRequest::AuditSnapshot {
                snapshot: SnapshotId([2; 32]),
                from: 64,
                count: 64,
            },
            ManagerRequest::Standing {
                snapshot: SnapshotId([5; 32]),
                down: vec![NodeId([6; 32])],
                from: 32_768,
            },
            ManagerRequest::RecordRestore {
                snapshot: SnapshotId([4; 32]),
                outcome: RestoreOutcome::Failed {
                    reason: "disk full".into(),
                },
            },
        ];
        for req in requests {
            assert_eq!(decode_request(&cbor::encode(&req).unwrap()).unwrap(), req);
        }
        let responses = [
            ManagerResponse::NotManager {
                leader: Some(NodeId([9; 32])),
            },
            ManagerResponse::Refused(Refusal::new(
                RefusalCode::Infeasible,
                "only 3 nodes lie between 200 km and 2000 km",
            )),
            ManagerResponse::Unavailable(Refusal::new(RefusalCode::NoQuorum, "1 of 3")),
            ManagerResponse::Recorded,
            ManagerResponse::MembersPage {
                members: Vec::new(),
                total: 3,
            },
            ManagerResponse::Audited {
                stripes: vec![StripeAudited {
                    stripe: 3,
                    data_id: DataId([1; 32]),
                    needed: 4,
                    packets: vec![PacketAudited {
                        packet: PacketId([2; 32]),
                        target: NodeId([3; 32]),
                        verdict: AuditVerdict::NoAnswer,
                    }],
                }],
                total: 9,
            },
            ManagerResponse::Standing {
                standing: strew_coordinator::manager::Standing {
                    health: strew_coordinator::manager::Health {
                        stripes: 9,
                        healthy: 7,
                        degraded: 1,
                        lost: 1,
                    },
                    targets: vec![strew_coordinator::manager::TargetShare {
                        target: NodeId([7; 32]),
                        packets: 9,
                        bytes: 1 << 20,
                    }],
                },
                next: Some(9),
            },
            ManagerResponse::Evidence(vec![NodeEvidence {
                node: NodeId([6; 32]),
                consistent: 1,
                refuted: 2,
                verdict: EvidenceVerdict::Refuted,
            }]),
        ];
        for res in responses {
            assert_eq!(decode_response(&cbor::encode(&res).unwrap()).unwrap(), res);
        }
        assert!(decode_request(b"nonsense").is_err());
        assert!(decode_response(&[0xff; 64]).is_err());
        assert!(decode_request(&[]).is_err());
    }

    #[tokio::test]
    async fn the_codec_refuses_requests_and_responses_over_4_mib_and_counts_them() {
        use libp2p::request_response::Codec;
        assert_eq!(MAX_MESSAGE_BYTES, 4 << 20);
        assert_eq!(MAX_RESPONSE_BYTES, 4 << 20);
        let protocol = StreamProtocol::new(MANAGER_PROTOCOL);
        let mut codec = ManagerCodec::new(InboundBudget::new(128 << 20));
        let refusal =
            |len| ManagerResponse::Refused(Refusal::new(RefusalCode::Infeasible, "x".repeat(len)));
        let before = cbor::OVERSIZE_MESSAGES.get();
        let mut wire = futures::io::Cursor::new(Vec::new());
        codec
            .write_response(&protocol, &mut wire, refusal(MAX_RESPONSE_BYTES))
            .await
            .expect_err("the writer refuses a response over the bound");
        assert!(wire.into_inner().is_empty(), "nothing was written");
        // A peer that frames a request over 4 MiB is refused on the length
        // prefix, before anything is buffered; a response too.
        let frame = |len: usize| {
            let mut framed = u32::try_from(len).expect("fits").to_be_bytes().to_vec();
            framed.extend_from_slice(&[0u8; 16]);
            futures::io::Cursor::new(framed)
        };
        codec
            .read_request(&protocol, &mut frame(MAX_MESSAGE_BYTES + 1))
            .await
            .expect_err("the reader refuses a request over the bound");
        codec
            .read_response(&protocol, &mut frame(MAX_RESPONSE_BYTES + 1))
            .await
            .expect_err("the reader refuses a response over the bound");
        assert!(cbor::OVERSIZE_MESSAGES.get() >= before + 3);
        // A response just under the bound travels.
        let fits = refusal(MAX_RESPONSE_BYTES - 1024);
        let mut wire = futures::io::Cursor::new(Vec::new());
        codec
            .write_response(&protocol, &mut wire, fits.clone())
            .await
            .expect("fits the response bound");
        let mut wire = futures::io::Cursor::new(wire.into_inner());
        let got = codec
            .read_response(&protocol, &mut wire)
            .await
            .expect("reads");
        assert_eq!(got, fits);
    }
}
