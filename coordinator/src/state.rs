//! The manager's replicated state and the commands that change it.
//!
//! Owns [`Command`] (every state change, serialisable with ciborium so a
//! consensus log can carry it), [`ManagerState`] (all records in `BTreeMap`s)
//! and [`ManagerState::apply`]. Commands carry the leader's decisions —
//! chosen targets, sealed bytes, ids — never inputs a replica would recompute
//! with floating point or randomness; `apply` only checks and moves integers,
//! so every replica applying the same log reaches the same state. `apply` is
//! all-or-nothing: it validates everything before it changes anything.
//! This module must not place, seal, sign, read clocks or do I/O.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::audit::{AuditPolicy, AuditResult};
use crate::grid::NodeProfile;
use crate::ids::{DataId, NodeId, PacketId, SnapshotId};
use crate::quota::{
    GridMode, JoinToken, QuotaError, Subscription, check_network, check_source_quota,
};
use crate::records::{
    AssemblyRecord, BackupParams, ChunkRecord, ClientRecord, LogEvent, LogKind, NodeSet,
    PendingBackup, PlannedChunk, Receipted, Retarget, SnapshotRecord, SourceProfile, StoredPacket,
    TargetRecord, profile_key,
};
use crate::units::{GeoPoint, Millis, format_size};

mod bounds;
mod extend;
mod forget;
mod garbage;
mod order;
mod pending_index;
mod rebuild;
mod references;
mod retarget;
mod touched;
mod upkeep;

pub use bounds::MAX_ENTRY_BYTES;
pub use garbage::{COLLECT_HOLD, DueGarbage, Garbage, MAX_COLLECT_BATCH, MAX_DELETIONS_ANSWERED};
pub use pending_index::PendingIndex;
pub use rebuild::{REREGISTERED, Reregistered, Unreferenced};
pub use retarget::MAX_RETARGET_MOVES;
pub use touched::{PendingList, Touched};

/// Largest packet a plan may name: the packet protocol's maximum body
/// (the pipeline's 4 MiB chunk maximum plus compression, encryption and
/// erasure headroom). Larger ones could never be uploaded, only reserve room.
pub const MAX_PACKET_BYTES: u64 = 5 * 1024 * 1024;

/// Backups one source may have planned and not yet committed: each reserves
/// room on its targets until it commits, is abandoned or expires, so a
/// source cannot hold the grid's capacity with plans it never uploads.
pub const MAX_PENDING_PER_SOURCE: usize = 8;

/// One state change, as replicated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    SetGridMode {
        mode: GridMode,
    },
    /// A node joins, or updates its profile.
    Join {
        profile: NodeProfile,
        token: Option<JoinToken>,
        at: Millis,
    },
    SetOnline {
        node: NodeId,
        online: bool,
        at: Millis,
    },
    /// The leader admits a node with `subscription` whatever the grid mode
    /// (it checked a grid-key-signed invitation or renewal, or the node is a
    /// certified coordinator), or changes an admitted node's subscription.
    Admit {
        profile: NodeProfile,
        subscription: Subscription,
        at: Millis,
    },
    /// The leader's plan: which targets get which new packets.
    BeginBackup {
        pending: PendingBackup,
    },
    /// The leader's plan for one more part of pending backup `part.id`
    /// (same source and set): its new chunks and reused copies are added to
    /// that pending backup, their bytes reserved, its deadline renewed to
    /// `part.expires_at`. Nothing becomes a snapshot until the commit.
    ExtendBackup {
        part: PendingBackup,
    },
    /// Receipts of pending backup `pending_id`'s packets the leader verified
    /// (one page of at most `MAX_RECEIPTS_PER_CALL`): the commit need not
    /// carry them again.
    RecordReceipts {
        pending_id: u64,
        receipted: Vec<Receipted>,
    },
    /// The upload finished: the snapshot (with its sealed sequence) is
    /// recorded, and the new chunk copies it uses, each packet with the
    /// generation its target's verified receipt names. `None` only in logs
    /// written before receipts reached the manager: then the planned copies
    /// the snapshot names are recorded as planned (replay compatibility).
    CommitBackup {
        snapshot: SnapshotRecord,
        #[serde(default)]
        stored: Option<Vec<PlannedChunk>>,
        /// The snapshot's chunks and new copies are the ones its pending
        /// backup collected page by page (`CommitOrder`): `snapshot.chunks`
        /// and `stored` are empty, so the entry stays small whatever the
        /// snapshot's size.
        #[serde(default)]
        paged: bool,
    },
    /// One page (at most [`MAX_ORDER_PAGE`](crate::manager::MAX_ORDER_PAGE)
    /// chunks) of pending backup `pending_id`'s chunk order, starting at
    /// position `first`: the record keys, and the new copies first used on
    /// this page. Nothing becomes a snapshot until the paged commit.
    CommitOrder {
        pending_id: u64,
        first: u64,
        keys: Vec<DataId>,
        stored: Vec<PlannedChunk>,
    },
    /// Packets of pending backup `pending_id` that no target receipted
    /// yet, each moved to a new target: its source could not upload them
    /// (the target stopped answering mid-backup). The rest of the backup
    /// stays as planned; what the old targets may hold is collected.
    RetargetBackup {
        pending_id: u64,
        moves: Vec<Retarget>,
        at: Millis,
    },
    AbortBackup {
        pending_id: u64,
        at: Millis,
        reason: String,
        /// The leader expired it (nobody waits for the answer): what it
        /// uploaded is due for collection at once.
        #[serde(default)]
        expired: bool,
    },
    Forget {
        snapshot: SnapshotId,
        at: Millis,
        /// The leader forgot it (its source's subscription expired past the
        /// grace): nobody delivers the answer, its packets are due for
        /// collection at once.
        #[serde(default)]
        expired: bool,
    },
    RecordRestore {
        record: AssemblyRecord,
    },
    /// Drops the backup log's events before `before_seq` (the retention
    /// the leader decided; the newest event always stays).
    TrimLog {
        before_seq: u64,
    },
    /// Repair: packet `index` of a chunk now lives on `new_target`, under
    /// the storage generation the repair's store ticket gave it.
    MovePacket {
        data_id: DataId,
        index: u32,
        new_target: NodeId,
        at: Millis,
        #[serde(default)]
        generation: u64,
    },
    /// A source found a chunk copy's packets unusable (a restore or a check
    /// failed on them): the copy is never reused for a new backup.
    MarkBad {
        key: DataId,
        reporter: NodeId,
        at: Millis,
    },
    /// Audit outcomes (at most [`crate::audit::MAX_RESULTS_PER_COMMAND`]),
    /// scored under the leader's `policy`.
    RecordAudits {
        results: Vec<AuditResult>,
        policy: AuditPolicy,
        at: Millis,
    },
    /// A node starts (or stops) leaving the grid gracefully.
    SetExiting {
        node: NodeId,
        exiting: bool,
        at: Millis,
    },
    /// The leader collected these queued deletions (their targets deleted
    /// them, or they are live again): they leave the collection queue. At
    /// most [`MAX_COLLECT_BATCH`] entries.
    Collected {
        entries: Vec<(NodeId, PacketId)>,
    },
    /// `node` was given read tickets for `bytes` of packets at `at`: they
    /// count against its network quota for that day.
    RecordTraffic {
        node: NodeId,
        bytes: u64,
        at: Millis,
    },
    /// `strew grid rebuild` (by a member): this group replaces a lost one;
    /// sources may re-register their snapshots (see [`rebuild`]).
    BeginRebuild {
        by: NodeId,
        at: Millis,
    },
    /// A source re-registered a page of a snapshot of the lost group.
    Reregister {
        snapshot: Box<Reregistered>,
    },
    /// An operator's collection, after a rebuild's grace: packets `target`
    /// holds that no record references are queued for collection.
    QueueUnreferenced {
        target: NodeId,
        packets: Vec<Unreferenced>,
        by: NodeId,
        at: Millis,
    },
}

impl Command {
    /// CBOR bytes for a log entry.
    pub fn to_bytes(&self) -> Result<Vec<u8>, crate::cbor::CborError> {
        crate::cbor::encode(self)
    }

    /// Decodes a log entry; never panics on garbage.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApplyError> {
        crate::cbor::decode(bytes).map_err(|e| ApplyError::Malformed(e.to_string()))
    }
}

/// One packet to delete from a target: only while it has this generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Deletion {
    pub packet_id: PacketId,
    pub generation: u64,
}

/// What applying a command produced that the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    Done,
    /// Packets nothing references any more, per target: delete them.
    Deletions(BTreeMap<NodeId, Vec<Deletion>>),
    Committed {
        snapshot: SnapshotId,
        /// Packets the backup uploaded that nothing references (its chunk was
        /// stored first by someone else, or the snapshot does not use it):
        /// delete them.
        orphans: BTreeMap<NodeId, Vec<Deletion>>,
    },
}

impl Applied {
    /// The deletions this outcome asks for, per target (empty for `Done`).
    pub fn deletions(&self) -> BTreeMap<NodeId, Vec<Deletion>> {
        match self {
            Applied::Deletions(d) => d.clone(),
            Applied::Committed { orphans, .. } => orphans.clone(),
            Applied::Done => BTreeMap::new(),
        }
    }
}

/// Why a command does not apply. The state is unchanged.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApplyError {
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error("{0} has not joined the grid")]
    UnknownNode(NodeId),
    #[error("no pending backup {0} (expired, aborted or committed)")]
    UnknownPending(u64),
    #[error("no snapshot {0}")]
    UnknownSnapshot(SnapshotId),
    #[error("no chunk {0} is stored")]
    UnknownChunk(DataId),
    #[error("snapshot {0} already exists")]
    DuplicateSnapshot(SnapshotId),
    #[error("pending backup id {got} is out of order (next is {expected})")]
    OutOfOrder { got: u64, expected: u64 },
    #[error(
        "target {target} cannot take {} more: it donates {}, holds {} and has {} reserved",
        format_size(*extra), format_size(*donated), format_size(*held), format_size(*reserved)
    )]
    TargetFull {
        target: NodeId,
        extra: u64,
        donated: u64,
        held: u64,
        reserved: u64,
    },
    #[error("invalid command: {0}")]
    Invalid(String),
    #[error("command does not decode: {0}")]
    Malformed(String),
}

/// Every record the manager keeps, in deterministic maps. Serialisable so a
/// consensus layer can ship it whole as a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ManagerState {
    pub mode: GridMode,
    pub clients: BTreeMap<NodeId, ClientRecord>,
    pub profiles: BTreeMap<String, SourceProfile>,
    pub chunks: BTreeMap<DataId, ChunkRecord>,
    pub targets: BTreeMap<NodeId, TargetRecord>,
    pub snapshots: BTreeMap<SnapshotId, SnapshotRecord>,
    pub pending: BTreeMap<u64, PendingBackup>,
    pub assemblies: BTreeMap<u64, AssemblyRecord>,
    pub log: Vec<LogEvent>,
    pub next_pending: u64,
    pub next_assembly: u64,
    /// Deletions not known to be delivered yet (see [`garbage`]).
    #[serde(default)]
    pub garbage: BTreeMap<(NodeId, PacketId), Garbage>,
    /// Since when this group is a rebuilt one (`strew grid rebuild`):
    /// sources may re-register snapshots of the lost group.
    #[serde(default)]
    pub rebuilt_since: Option<Millis>,
    /// Lookups over `pending`, derived (see [`PendingIndex`]).
    #[serde(skip)]
    pub index: PendingIndex,
}

impl ManagerState {
    /// Free bytes the manager may still assign to `target`.
    pub fn target_free(&self, target: &NodeId) -> u64 {
        let donated = self.clients.get(target).map_or(0, |c| c.donated());
        let record = self.targets.get(target);
        let used = record.map_or(0, |r| r.bytes.saturating_add(r.reserved));
        donated.saturating_sub(used)
    }

    /// Stored bytes charged to `source`, plus what its pending backups would add.
    pub fn source_commitment(&self, source: &NodeId) -> u64 {
        let charged = self
            .clients
            .get(source)
            .map_or(0, |c| c.source_stored_bytes);
        let pending: u64 = self
            .pending
            .values()
            .filter(|p| &p.source == source)
            .fold(0u64, |sum, p| {
                sum.saturating_add(self.pending_stored_bytes(p))
            });
        charged.saturating_add(pending)
    }

    fn log(
        &mut self,
        touched: &mut Touched,
        at: Millis,
        kind: LogKind,
        node: NodeId,
        detail: String,
    ) {
        // Sequence numbers keep growing when old events are trimmed.
        let seq = self.log.last().map_or(0, |e| e.seq + 1);
        touched.log_from.get_or_insert(seq);
        self.log.push(LogEvent {
            seq,
            at,
            kind,
            node,
            detail,
        });
    }

    /// Applies one command: all of it, or nothing (the error says why).
    pub fn apply(&mut self, command: &Command) -> Result<(Applied, Touched), ApplyError> {
        self.ensure_index();
        let mut touched = Touched::default();
        let applied = match command {
            Command::SetGridMode { mode } => {
                self.mode = mode.clone();
                touched.mode = true;
                Applied::Done
            }
            Command::Join { profile, token, at } => {
                self.join(profile, token.as_ref(), *at, &mut touched)?
            }
            Command::Admit {
                profile,
                subscription,
                at,
            } => self.admit(profile, subscription, *at, &mut touched)?,
            Command::SetOnline { node, online, at } => {
                let client = self
                    .clients
                    .get_mut(node)
                    .ok_or(ApplyError::UnknownNode(*node))?;
                client.profile.online = *online;
                // Away since the first time it was marked offline.
                client.offline_since = if *online {
                    None
                } else {
                    client.offline_since.or(Some(*at))
                };
                touched.clients.insert(*node);
                Applied::Done
            }
            Command::BeginBackup { pending } => self.begin(pending, &mut touched)?,
            Command::ExtendBackup { part } => self.extend(part, &mut touched)?,
            Command::RecordReceipts {
                pending_id,
                receipted,
            } => self.record_receipts(*pending_id, receipted, &mut touched)?,
            Command::CommitBackup {
                snapshot,
                stored,
                paged: false,
            } => self.commit(snapshot, stored.as_deref(), &mut touched)?,
            Command::CommitBackup {
                snapshot,
                paged: true,
                ..
            } => {
                let (snapshot, stored) = self.paged_snapshot(snapshot)?;
                self.commit(&snapshot, Some(&stored), &mut touched)?
            }
            Command::CommitOrder {
                pending_id,
                first,
                keys,
                stored,
            } => self.commit_order(*pending_id, *first, keys, stored, &mut touched)?,
            Command::AbortBackup {
                pending_id,
                at,
                reason,
                ..
            } => self.abort(*pending_id, *at, reason, &mut touched)?,
            Command::RetargetBackup {
                pending_id,
                moves,
                at,
            } => self.retarget(*pending_id, moves, *at, &mut touched)?,
            Command::Forget { snapshot, at, .. } => self.forget(snapshot, *at, &mut touched)?,
            Command::RecordRestore { record } => {
                if !self.snapshots.contains_key(&record.snapshot) {
                    return Err(ApplyError::UnknownSnapshot(record.snapshot));
                }
                self.next_assembly = self.next_assembly.max(record.id + 1);
                self.assemblies.insert(record.id, record.clone());
                touched.assemblies.insert(record.id);
                touched.counters = true;
                self.log(
                    &mut touched,
                    record.at,
                    LogKind::Restore,
                    record.requester,
                    format!(
                        "restore {} of snapshot {}: {:?}",
                        record.id, record.snapshot, record.outcome
                    ),
                );
                Applied::Done
            }
            Command::TrimLog { before_seq } => {
                let newest = self.log.last().map_or(0, |e| e.seq);
                if *before_seq > newest {
                    return Err(ApplyError::Invalid(format!(
                        "trimming the log before {before_seq} would drop its newest event {newest}"
                    )));
                }
                self.log.retain(|e| e.seq >= *before_seq);
                touched.log_trimmed_before = Some(*before_seq);
                Applied::Done
            }
            Command::MovePacket {
                data_id,
                index,
                new_target,
                at,
                generation,
            } => self.move_packet(
                data_id,
                *index as usize,
                *new_target,
                *generation,
                *at,
                &mut touched,
            )?,
            Command::MarkBad { key, reporter, at } => {
                self.mark_bad(key, reporter, *at, &mut touched)?
            }
            Command::RecordAudits {
                results,
                policy,
                at,
            } => self.record_audits(results, policy, *at, &mut touched)?,
            Command::SetExiting { node, exiting, at } => {
                self.set_exiting(node, *exiting, *at, &mut touched)?
            }
            Command::BeginRebuild { by, at } => {
                self.begin_rebuild(*by, *at, &mut touched);
                Applied::Done
            }
            Command::Reregister { snapshot } => {
                self.reregister(snapshot, &mut touched)?;
                Applied::Done
            }
            Command::QueueUnreferenced {
                target,
                packets,
                by,
                at,
            } => {
                self.queue_unreferenced(target, packets, *by, *at, &mut touched);
                Applied::Done
            }
            Command::RecordTraffic { node, bytes, at } => {
                let client = self
                    .clients
                    .get_mut(node)
                    .ok_or(ApplyError::UnknownNode(*node))?;
                client.network.add(*at, *bytes);
                touched.clients.insert(*node);
                Applied::Done
            }
            Command::Collected { entries } => {
                if entries.len() > MAX_COLLECT_BATCH {
                    return Err(ApplyError::Invalid(format!(
                        "{} collected entries in one command (at most {MAX_COLLECT_BATCH})",
                        entries.len()
                    )));
                }
                self.collected(entries, &mut touched);
                Applied::Done
            }
        };
        let (at, hold) = match command {
            // Nobody delivers these but the collection (the repairer tries
            // a superseded copy's target once, at the move).
            Command::AbortBackup {
                at, expired: true, ..
            }
            | Command::Forget {
                at, expired: true, ..
            }
            | Command::MovePacket { at, .. }
            | Command::RetargetBackup { at, .. } => (*at, 0),
            Command::AbortBackup { at, .. } | Command::Forget { at, .. } => (*at, COLLECT_HOLD),
            Command::CommitBackup { snapshot, .. } => (snapshot.created_at, COLLECT_HOLD),
            _ => (0, COLLECT_HOLD),
        };
        let applied = self.queue_garbage(applied, at, at.saturating_add(hold), &mut touched);
        Ok((applied, touched))
    }

    fn admit(
        &mut self,
        profile: &NodeProfile,
        subscription: &Subscription,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let open = GridMode::Open {
            default_plan: subscription.clone(),
        };
        // A join under an open mode carrying this subscription, then the
        // subscription itself (an existing client keeps its usage).
        let mode = std::mem::replace(&mut self.mode, open);
        let joined = self.join(profile, None, at, touched);
        self.mode = mode;
        joined?;
        if let Some(record) = self.clients.get_mut(&profile.node_id) {
            record.subscription = subscription.clone();
        }
        Ok(Applied::Done)
    }

    fn join(
        &mut self,
        profile: &NodeProfile,
        token: Option<&JoinToken>,
        at: Millis,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        profile
            .location
            .validate()
            .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        let id = profile.node_id;
        let subscription = match (self.clients.get(&id), &self.mode, token) {
            (_, GridMode::Closed { token_issuers }, Some(token)) => {
                token.verify(&id, token_issuers, at)?;
                token.subscription.clone()
            }
            (Some(existing), _, _) => existing.subscription.clone(),
            (None, GridMode::Open { default_plan }, _) => default_plan.clone(),
            (None, GridMode::Closed { .. }, None) => {
                return Err(QuotaError::TokenRequired(id).into());
            }
        };
        let is_new = !self.clients.contains_key(&id);
        let record = self.clients.entry(id).or_insert_with(|| ClientRecord {
            profile: profile.clone(),
            subscription: Subscription::default_plan(),
            source_stored_bytes: 0,
            joined_at: at,
            offline_since: None,
            network: Default::default(),
        });
        record.profile = profile.clone();
        record.offline_since = if profile.online {
            None
        } else {
            record.offline_since.or(Some(at))
        };
        record.subscription = subscription;
        touched.clients.insert(id);
        if is_new {
            self.log(
                touched,
                at,
                LogKind::Joined,
                id,
                format!("joined at {}", profile.location),
            );
        }
        Ok(Applied::Done)
    }

    fn begin(
        &mut self,
        pending: &PendingBackup,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        if pending.id != self.next_pending {
            return Err(ApplyError::OutOfOrder {
                got: pending.id,
                expected: self.next_pending,
            });
        }
        if !self.clients.contains_key(&pending.source) {
            return Err(ApplyError::UnknownNode(pending.source));
        }
        let planned = self
            .pending
            .values()
            .filter(|p| p.source == pending.source)
            .count();
        if planned >= MAX_PENDING_PER_SOURCE {
            return Err(ApplyError::Quota(QuotaError::TooManyPending {
                node: pending.source,
                pending: planned,
                limit: MAX_PENDING_PER_SOURCE,
            }));
        }
        self.check_and_reserve(pending, touched)?;
        self.next_pending = pending.id + 1;
        touched.counters = true;
        self.pending.insert(pending.id, pending.clone());
        self.index_begun(pending);
        touched.touch_pending_whole(pending.id);
        self.log(
            touched,
            pending.created_at,
            LogKind::BackupPlanned,
            pending.source,
            format!(
                "backup {} of set {:?}: {} new chunk(s), {} deduplicated, {} to upload",
                pending.id,
                pending.set,
                pending.new_chunks.len(),
                pending.reused.len(),
                format_size(pending.stored_bytes())
            ),
        );
        Ok(Applied::Done)
    }

    /// Checks a plan (or one part of one) against the source's quota, the
    /// chunks it reuses and names, and its targets' free space, then
    /// reserves its bytes on those targets. Changes nothing on error.
    fn check_and_reserve(
        &mut self,
        pending: &PendingBackup,
        touched: &mut Touched,
    ) -> Result<(), ApplyError> {
        let source = self
            .clients
            .get(&pending.source)
            .ok_or(ApplyError::UnknownNode(pending.source))?;
        check_source_quota(
            pending.source,
            &source.subscription,
            source.profile.storage_allocated,
            self.targets.get(&pending.source).map_or(0, |t| t.bytes),
            self.source_commitment(&pending.source),
            pending.stored_bytes(),
            pending.created_at,
        )?;
        check_network(
            pending.source,
            &source.subscription,
            &source.network,
            pending.stored_bytes(),
            pending.created_at,
        )?;
        for data_id in &pending.reused {
            if !self.chunks.contains_key(data_id) {
                return Err(ApplyError::UnknownChunk(*data_id));
            }
        }
        let width = pending.params.redundancy.width();
        for chunk in &pending.new_chunks {
            if let Some(p) = chunk
                .packets
                .iter()
                .find(|p| p.size == 0 || p.size > MAX_PACKET_BYTES)
            {
                return Err(ApplyError::Invalid(format!(
                    "packet {} of chunk {} has {} bytes (a packet has 1 to {MAX_PACKET_BYTES})",
                    p.packet_id, chunk.data_id, p.size
                )));
            }
            let distinct: BTreeSet<NodeId> = chunk.packets.iter().map(|p| p.target).collect();
            if chunk.packets.len() != width || distinct.len() != width {
                return Err(ApplyError::Invalid(format!(
                    "chunk {} is not {width} packets on {width} distinct targets",
                    chunk.data_id
                )));
            }
            if !self.is_copy_key(&chunk.data_id, &chunk.record_key()) {
                return Err(ApplyError::Invalid(format!(
                    "chunk {} has no copy key {}",
                    chunk.data_id,
                    chunk.record_key()
                )));
            }
            self.check_not_foreign(chunk)?;
        }
        let reservations = pending.reservations();
        for (target, extra) in &reservations {
            let client = self
                .clients
                .get(target)
                .ok_or(ApplyError::UnknownNode(*target))?;
            if self.target_free(target) < *extra {
                let record = self.targets.get(target).cloned().unwrap_or_default();
                return Err(ApplyError::TargetFull {
                    target: *target,
                    extra: *extra,
                    donated: client.donated(),
                    held: record.bytes,
                    reserved: record.reserved,
                });
            }
        }
        for (target, extra) in reservations {
            let record = self.targets.entry(target).or_default();
            // target_free above bounds reserved + extra by the donation.
            record.reserved = record.reserved.saturating_add(extra);
            touched.targets.insert(target);
        }
        // The plan's uploads count against the source's network quota.
        if let Some(client) = self.clients.get_mut(&pending.source) {
            client
                .network
                .add(pending.created_at, pending.stored_bytes());
            touched.clients.insert(pending.source);
        }
        Ok(())
    }

    fn release(&mut self, pending: &PendingBackup, touched: &mut Touched) {
        for (target, bytes) in pending.reservations() {
            if let Some(record) = self.targets.get_mut(&target) {
                record.reserved = record.reserved.saturating_sub(bytes);
                touched.targets.insert(target);
            }
        }
    }

    fn commit(
        &mut self,
        snapshot: &SnapshotRecord,
        stored: Option<&[PlannedChunk]>,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let pending = self
            .pending
            .get(&snapshot.pending_id)
            .cloned()
            .ok_or(ApplyError::UnknownPending(snapshot.pending_id))?;
        let legacy: Vec<PlannedChunk>;
        let stored: &[PlannedChunk] = match stored {
            Some(stored) => stored,
            None => {
                // A command from before receipts: the copies as planned.
                legacy = pending
                    .new_chunks
                    .iter()
                    .filter(|c| snapshot.chunks.contains(&c.record_key()))
                    .cloned()
                    .collect();
                &legacy
            }
        };
        if pending.source != snapshot.source || pending.set != snapshot.set {
            return Err(ApplyError::Invalid(
                "snapshot does not match its pending backup".into(),
            ));
        }
        if self.snapshots.contains_key(&snapshot.id) {
            return Err(ApplyError::DuplicateSnapshot(snapshot.id));
        }
        // Every copy recorded is one the plan placed, packet for packet,
        // with the generation its receipt named.
        let mut new_keys: BTreeSet<DataId> = BTreeSet::new();
        let planned_by_id: BTreeMap<DataId, &PlannedChunk> =
            pending.new_chunks.iter().map(|c| (c.data_id, c)).collect();
        for copy in stored {
            let planned = planned_by_id
                .get(&copy.data_id)
                .ok_or(ApplyError::UnknownChunk(copy.data_id))?;
            let same_layout = planned.packets.len() == copy.packets.len()
                && planned.packets.iter().zip(&copy.packets).all(|(a, b)| {
                    a.packet_id == b.packet_id && a.target == b.target && a.size == b.size
                });
            if !same_layout {
                return Err(ApplyError::Invalid(format!(
                    "chunk {} is not recorded as planned",
                    copy.data_id
                )));
            }
            let key = copy.record_key();
            if !self.is_copy_key(&copy.data_id, &key) {
                return Err(ApplyError::Invalid(format!(
                    "chunk {} has no copy key {key}",
                    copy.data_id
                )));
            }
            if let Some(existing) = self.chunks.get(&key)
                && !same_packets(&existing.packets, &copy.packets)
            {
                return Err(ApplyError::Invalid(format!(
                    "copy {key} of chunk {} was stored by another backup meanwhile; commit again",
                    copy.data_id
                )));
            }
            new_keys.insert(key);
        }
        for key in &snapshot.chunks {
            if !new_keys.contains(key) && !self.chunks.contains_key(key) {
                return Err(ApplyError::UnknownChunk(*key));
            }
        }
        // Validated: now change.
        self.release(&pending, touched);
        self.pending.remove(&pending.id);
        self.index_removed(&pending);
        touched.pending.insert(pending.id);
        let referenced: BTreeSet<DataId> = snapshot.chunks.iter().copied().collect();
        let mut charged = 0u64;
        for copy in stored {
            let key = copy.record_key();
            if self.chunks.contains_key(&key) || !referenced.contains(&key) {
                // The same copy is recorded already, or the snapshot does
                // not use it: whatever nothing references goes below.
                continue;
            }
            for p in &copy.packets {
                self.record_on_target(p, touched);
                charged = charged.saturating_add(p.size);
            }
            self.chunks.insert(
                key,
                ChunkRecord {
                    data_id: copy.data_id,
                    packets: copy.packets.clone(),
                    refs: 0,
                    sources: NodeSet::new(),
                    owner: pending.source,
                    bad: false,
                    redundancy: Some(pending.params.redundancy),
                },
            );
        }
        // Orphans, computed the way abort does: a planned packet nothing
        // committed and no other pending plan references.
        let orphans = self.unreferenced(&pending);
        for key in &referenced {
            if let Some(chunk) = self.chunks.get_mut(key) {
                chunk.refs += 1;
                chunk.sources.insert(snapshot.source);
                touched.chunks.insert(*key);
            }
        }
        if let Some(client) = self.clients.get_mut(&snapshot.source) {
            client.source_stored_bytes = client.source_stored_bytes.saturating_add(charged);
            touched.clients.insert(snapshot.source);
        }
        let profile = profile_of(
            &mut self.profiles,
            (snapshot.source, &snapshot.set),
            pending.location,
            &pending.params,
            touched,
        );
        profile.location = pending.location;
        profile.params = pending.params.clone();
        profile.data_id = Some(snapshot.data_id);
        profile.sealed_sequence = Some(snapshot.sealed_sequence.clone());
        profile.snapshots.push(snapshot.id);
        self.snapshots.insert(snapshot.id, snapshot.clone());
        touched.snapshots.insert(snapshot.id);
        self.log(
            touched,
            snapshot.created_at,
            LogKind::BackupCommitted,
            snapshot.source,
            format!(
                "snapshot {} of set {:?}: {} chunk(s), {} new stored",
                snapshot.id,
                snapshot.set,
                referenced.len(),
                format_size(charged)
            ),
        );
        Ok(Applied::Committed {
            snapshot: snapshot.id,
            orphans,
        })
    }

    fn abort(
        &mut self,
        id: u64,
        at: Millis,
        reason: &str,
        touched: &mut Touched,
    ) -> Result<Applied, ApplyError> {
        let pending = self
            .pending
            .remove(&id)
            .ok_or(ApplyError::UnknownPending(id))?;
        self.index_removed(&pending);
        touched.pending.insert(id);
        self.release(&pending, touched);
        // A later plan of the same backup (or another backup) may have put
        // the very same packet on the very same target and committed or
        // planned it: that copy is live, never delete it.
        let deletions = self.unreferenced(&pending);
        self.log(
            touched,
            at,
            LogKind::BackupAborted,
            pending.source,
            format!("backup {id} aborted: {reason}"),
        );
        Ok(Applied::Deletions(deletions))
    }

    /// Records packet `p` on its target (once: its bytes count once).
    pub(super) fn record_on_target(&mut self, p: &StoredPacket, touched: &mut Touched) {
        let record = self.targets.entry(p.target).or_default();
        if record.packets.insert(p.packet_id, p.size).is_none() {
            record.bytes = record.bytes.saturating_add(p.size);
        }
        touched.targets.insert(p.target);
        touched.target_packets.insert((p.target, p.packet_id));
    }

    /// The stored packets of a chunk, if stored.
    pub fn chunk_packets(&self, data_id: &DataId) -> Option<&[StoredPacket]> {
        self.chunks.get(data_id).map(|c| c.packets.as_slice())
    }
}

/// The profile of set `set` of `source`, made with `location` and `params`
/// if it is new; marked touched.
pub(crate) fn profile_of<'a>(
    profiles: &'a mut BTreeMap<String, SourceProfile>,
    (source, set): (NodeId, &str),
    location: GeoPoint,
    params: &BackupParams,
    touched: &mut Touched,
) -> &'a mut SourceProfile {
    let key = profile_key(&source, set);
    touched.profiles.insert(key.clone());
    profiles.entry(key).or_insert_with(|| SourceProfile {
        source,
        set: set.to_string(),
        data_id: None,
        location,
        params: params.clone(),
        sealed_sequence: None,
        snapshots: Vec::new(),
    })
}

/// Whether two copies put the same packets on the same targets, in order.
pub(crate) fn same_packets(a: &[StoredPacket], b: &[StoredPacket]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.packet_id == y.packet_id && x.target == y.target)
}
