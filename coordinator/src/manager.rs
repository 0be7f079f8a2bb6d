//! The sequence manager as a pure state machine: the operations the node
//! exposes over the network, as a sans-IO object.
//!
//! Owns [`Manager`]: `decide_*` turns a request (join, dedup query, plan,
//! commit, fetch, list, forget, abandon, restore record, expiry) and `now`
//! into a [`Command`] without changing anything; [`Manager::apply`] applies
//! a command to the [`ManagerState`] and returns its [`Effects`]; `finish_*`
//! turns what applied into the answer (signed tickets). A consensus layer
//! replicates the commands between deciding and applying; a leader change
//! only means the client retries against the new leader (plans are cheap to
//! redo, commits are idempotent). This module owns no database and must not
//! do I/O, read clocks (`now` is passed in) or draw randomness from anywhere
//! but the RNG it is given. It must not verify targets' receipts (that
//! format is the overlay's); the caller passes only receipts it verified.

use std::collections::{BTreeMap, BTreeSet};

use ed25519_dalek::SigningKey;
use rand::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::grid::{GridView, NodeProfile};
use crate::ids::{DataId, NodeId, PacketId, SnapshotId};
use crate::placement::{PlacementPolicy, PlacementRefusal, PlacementRequest, place_excluding};
use crate::quota::{GridMode, JoinToken};
use crate::receipt::StoreReceipt;
use crate::records::{
    AssemblyRecord, BackupParams, LogKind, PendingBackup, PlannedChunk, RestoreOutcome,
    SnapshotRecord, StoredPacket,
};
use crate::seal::{
    GroupKey, SealError, SealedAtRest, SealedForRecipient, Sequence, SequenceEntry, SequenceStripe,
    open_at_rest, seal_at_rest, seal_to_recipient,
};
use crate::state::{
    Applied, ApplyError, Command, Deletion, MAX_ENTRY_BYTES, ManagerState, Touched,
};
use crate::ticket::{StorageTicket, TicketEntry, TicketKind};
use crate::units::{GeoPoint, Millis};

mod access;
pub mod audits;
mod commit;
mod dedup;
pub mod exit;
mod log_retention;
mod messages;
mod order;
mod pages;
pub mod rebuild;
mod receipts;
mod reservations;
mod retarget;
mod snapshots;
mod standing;
pub use audits::{MAX_AUDIT_PAGE, StripeChallenges};
pub use log_retention::LogRetention;
pub use messages::*;
pub use order::{MAX_ORDER_PAGE, MAX_ORDER_PAGE_PACKETS, OrderStep, order_page_len};
pub use pages::{MAX_LIST_PAGE, MAX_SEQUENCE_PAGE, SequencePage};
pub use rebuild::ReregisterDecision;
pub use receipts::MAX_RECEIPTS_PER_CALL;
pub use reservations::*;
pub use retarget::{MAX_RETARGET_AVOID, MAX_RETARGET_SLOTS};
pub use standing::{
    Health, MAX_STANDING_DOWN, STANDING_PAGES, Standing, StandingSum, StripeHealth, TargetShare,
    classify, down_set,
};

/// Failures of manager operations.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    Placement(#[from] PlacementRefusal),
    #[error("sequence sealing failed")]
    Seal(#[source] SealError),
    #[error("ticket signing failed")]
    Ticket(#[source] crate::ticket::TicketError),
    #[error("{node} may not access snapshot {snapshot}: it belongs to another source")]
    NotYours { node: NodeId, snapshot: SnapshotId },
    #[error(
        "backup {pending_id}: {missing} planned packet(s) have no verified receipt yet; upload them and commit again"
    )]
    MissingUploads { pending_id: u64, missing: usize },
    #[error("receipt for packet {packet_id} on {target} refused: {reason}")]
    BadReceipt {
        packet_id: PacketId,
        target: NodeId,
        reason: String,
    },
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A plan naming more than [`MAX_PLAN_CHUNKS`] chunks or
    /// [`MAX_PLAN_PACKETS`] packets: never proposed; the source splits it.
    #[error(
        "a plan of {chunks} chunk(s) and {packets} packet(s) is too large (at most {MAX_PLAN_CHUNKS} chunks and {MAX_PLAN_PACKETS} packets a part): plan the backup in parts"
    )]
    PlanTooLarge { chunks: usize, packets: usize },
    /// A command whose encoding exceeds [`MAX_ENTRY_BYTES`]: never proposed.
    #[error(
        "a {kind} command of {bytes} bytes exceeds the raft entry limit of {MAX_ENTRY_BYTES} bytes"
    )]
    EntryTooLarge { kind: &'static str, bytes: usize },
}

/// Packets per storage ticket a plan issues. A ticket travels with every
/// put of a packet it names and the target decodes and verifies it each
/// time, so it is kept small (about 1.6 KB of CBOR: 2 % of an average
/// packet) rather than one per target (25 KB per put at 512 entries, and
/// over the packet protocol's 64 KiB header limit past about 1300).
pub const TICKET_BATCH: usize = 32;

/// Timeouts of the manager.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ManagerConfig {
    /// How long storage tickets stay valid.
    pub ticket_ttl: Millis,
    /// How long a planned backup may take to commit before it is aborted,
    /// on top of the upload time its size needs (see [`ReservationLimits`]).
    pub pending_ttl: Millis,
    /// What planned backups may reserve.
    #[serde(default)]
    pub reservations: ReservationLimits,
    /// How much of the global backup log is kept.
    #[serde(default)]
    pub log_retention: LogRetention,
    pub placement: PlacementPolicy,
    /// How long a source's snapshots are kept after its subscription
    /// expired; past it the leader forgets them and their packets are
    /// collected.
    #[serde(default = "default_subscription_grace")]
    pub subscription_grace: Millis,
}

/// 30 days.
fn default_subscription_grace() -> Millis {
    30 * 24 * 60 * 60 * 1000
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            ticket_ttl: 60 * 60 * 1000,
            pending_ttl: 15 * 60 * 1000,
            reservations: ReservationLimits::default(),
            log_retention: LogRetention::default(),
            placement: PlacementPolicy::default(),
            subscription_grace: default_subscription_grace(),
        }
    }
}

/// What applying one command did: the answer-relevant outcome and which
/// records changed (a driver that persists writes exactly these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Effects {
    pub applied: Applied,
    pub touched: Touched,
}

/// The sequence manager: a pure state machine. Requests are turned into
/// [`Command`]s by the `decide_*` methods (reading the state, never changing
/// it); [`apply`](Self::apply) is the one way the state changes. It owns no
/// database and does no I/O: whoever drives it (the node's raft state
/// machine, the simulator, tests) persists what it applied.
pub struct Manager {
    state: ManagerState,
    view: GridView,
    identity: SigningKey,
    group_key: GroupKey,
    config: ManagerConfig,
}

impl Manager {
    /// A manager with an empty state.
    pub fn new(identity: SigningKey, group_key: GroupKey, config: ManagerConfig) -> Self {
        Self::from_state(ManagerState::default(), identity, group_key, config)
    }

    /// A manager over a state its driver kept (loaded from disk, received
    /// as a consensus snapshot).
    pub fn from_state(
        mut state: ManagerState,
        identity: SigningKey,
        group_key: GroupKey,
        config: ManagerConfig,
    ) -> Self {
        state.reindex();
        let mut manager = Manager {
            state,
            view: GridView::new(),
            identity,
            group_key,
            config,
        };
        manager.rebuild_view();
        manager
    }

    /// This manager's node id (its tickets' issuer).
    pub fn node_id(&self) -> NodeId {
        NodeId(self.identity.verifying_key().to_bytes())
    }

    pub fn state(&self) -> &ManagerState {
        &self.state
    }

    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    /// The grid as placement sees it: free space is what the manager may still assign.
    pub fn view(&self) -> &GridView {
        &self.view
    }

    fn placement_profile(&self, id: &NodeId) -> Option<NodeProfile> {
        let client = self.state.clients.get(id)?;
        let record = self.state.targets.get(id);
        // A target disqualified by its audits, or leaving, gets no new packets.
        if record.is_some_and(|r| r.audit.is_disqualified() || r.exiting_since.is_some()) {
            return None;
        }
        let mut profile = client.profile.clone();
        profile.storage_free = self.config.reservations.placement_free(
            self.state.target_free(id),
            record.map_or(0, |r| r.bytes),
            record.map_or(0, |r| r.reserved),
        );
        Some(profile)
    }

    fn rebuild_view(&mut self) {
        // One insert at a time, not `GridView::from_profiles`: rstar 0.12's
        // bulk load can build trees that a later insert panics on
        // (georust/rstar#239), and this view takes inserts (joins) afterwards.
        let mut view = GridView::new();
        for id in self.state.clients.keys() {
            if let Some(profile) = self.placement_profile(id) {
                view.upsert(profile);
            }
        }
        self.view = view;
    }

    fn refresh_view(&mut self, ids: impl IntoIterator<Item = NodeId>) {
        for id in ids {
            match self.placement_profile(&id) {
                Some(profile) => {
                    self.view.upsert(profile);
                }
                None => {
                    self.view.remove(&id);
                }
            }
        }
    }

    /// Applies a command: the one way state changes. A consensus layer calls
    /// this for every committed log entry, in order, then persists the
    /// records `touched` names. All or nothing: on error the state is unchanged.
    pub fn apply(&mut self, command: &Command) -> Result<Effects, ApplyError> {
        let (applied, touched) = self.state.apply(command)?;
        match command {
            // Only the flag changed: the cheap path (the simulator sends
            // millions of these), unless the view somehow lacks the node.
            Command::SetOnline { node, online, .. } if self.view.set_online(node, *online) => {}
            _ => {
                let changed: BTreeSet<NodeId> = touched
                    .clients
                    .iter()
                    .chain(touched.targets.iter())
                    .copied()
                    .collect();
                self.refresh_view(changed);
            }
        }
        Ok(Effects { applied, touched })
    }

    /// [`apply`](Self::apply) for callers that persist nothing (tests,
    /// one-shot tools): only the outcome.
    pub fn execute(&mut self, command: Command) -> Result<Applied, ManagerError> {
        Ok(self.apply(&command)?.applied)
    }

    /// Replaces the whole state (a consensus snapshot being installed).
    pub fn replace_state(&mut self, mut state: ManagerState) {
        state.reindex();
        self.state = state;
        self.rebuild_view();
    }

    /// Sets the key sequences are sealed with at rest (the coordinator
    /// group's replicated key replaces a node-local one).
    pub fn set_group_key(&mut self, key: GroupKey) {
        self.group_key = key;
    }

    /// The earliest time at which something is due without any request:
    /// the first planned backup's deadline. A driver sleeps until then and
    /// calls [`decide_expire`](Self::decide_expire).
    pub fn next_deadline(&self) -> Option<Millis> {
        self.state.pending.values().map(|p| p.expires_at).min()
    }

    /// Sets the grid's admission mode.
    pub fn set_grid_mode(&mut self, mode: GridMode) -> Result<(), ManagerError> {
        self.execute(Command::SetGridMode { mode }).map(|_| ())
    }

    /// (h) A node joins or updates its profile (a token is needed on a closed grid).
    pub fn join(
        &mut self,
        profile: NodeProfile,
        token: Option<JoinToken>,
        now: Millis,
    ) -> Result<(), ManagerError> {
        self.execute(Command::Join {
            profile,
            token,
            at: now,
        })
        .map(|_| ())
    }

    /// Marks a node online or offline.
    pub fn set_online(
        &mut self,
        node: NodeId,
        online: bool,
        now: Millis,
    ) -> Result<(), ManagerError> {
        self.execute(Command::SetOnline {
            node,
            online,
            at: now,
        })
        .map(|_| ())
    }

    /// (a) Which of these chunks are already stored, and as which packets.
    pub fn dedup_query(&self, data_ids: &[DataId]) -> DedupAnswer {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for data_id in data_ids {
            match self.state.chunk_packets(data_id) {
                Some(packets) => known.push(KnownChunk {
                    data_id: *data_id,
                    packets: packets.iter().map(|p| p.packet_id).collect(),
                }),
                None => unknown.push(*data_id),
            }
        }
        DedupAnswer { known, unknown }
    }

    pub(crate) fn tickets(
        &self,
        kind: TicketKind,
        holder: Option<NodeId>,
        per_target: BTreeMap<NodeId, Vec<TicketEntry>>,
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        let mut tickets = Vec::new();
        for (target, mut entries) in per_target {
            entries.sort_by_key(|e| e.packet_id);
            entries.dedup_by_key(|e| e.packet_id);
            // A ticket travels with every packet put: bounded, so a large
            // backup gets several tickets per target rather than one huge one.
            for batch in entries.chunks(TICKET_BATCH) {
                tickets.push(
                    StorageTicket::issue_kind(
                        &self.identity,
                        kind,
                        target,
                        holder,
                        batch.to_vec(),
                        now + self.config.ticket_ttl,
                    )
                    .map_err(ManagerError::Ticket)?,
                );
            }
        }
        Ok(tickets)
    }

    /// Delete tickets for packets nothing references, each bound to the
    /// storage generation the manager recorded for it.
    fn delete_tickets(
        &self,
        deletions: &BTreeMap<NodeId, Vec<Deletion>>,
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        let per_target = deletions
            .iter()
            .map(|(target, list)| {
                let entries = list
                    .iter()
                    .map(|d| TicketEntry {
                        packet_id: d.packet_id,
                        size: 0,
                        generation: d.generation,
                    })
                    .collect();
                (*target, entries)
            })
            .collect();
        self.tickets(TicketKind::Delete, None, per_target, now)
    }

    /// (b) Plans a backup: dedups its chunks, places the new ones, records the
    /// decision as a command and signs one store ticket per target.
    /// [`decide_plan`](Self::decide_plan), [`execute`](Self::execute) and
    /// [`finish_plan`](Self::finish_plan) in one call.
    pub fn plan_backup<R: Rng + ?Sized>(
        &mut self,
        request: PlanRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<PlanDecision, ManagerError> {
        let (command, draft) = self.decide_plan(&request, now, rng)?;
        self.execute(command)?;
        self.finish_plan(draft, now)
    }

    /// Decides a plan without changing anything: the `BeginBackup` command
    /// to replicate and the draft [`finish_plan`](Self::finish_plan) turns
    /// into the answer once the command applied. The command carries the
    /// next pending id, so of two plans decided on the same state only the
    /// first applies (propose them one at a time).
    pub fn decide_plan<R: Rng + ?Sized>(
        &self,
        request: &PlanRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<(Command, PlanDraft), ManagerError> {
        let packets = request
            .chunks
            .iter()
            .fold(0usize, |sum, c| sum.saturating_add(c.packets.len()));
        if request.chunks.len() > MAX_PLAN_CHUNKS || packets > MAX_PLAN_PACKETS {
            return Err(ManagerError::PlanTooLarge {
                chunks: request.chunks.len(),
                packets,
            });
        }
        let extended = match request.extend {
            None => None,
            Some(id) => {
                let pending = self
                    .state
                    .pending
                    .get(&id)
                    .ok_or(ApplyError::UnknownPending(id))?;
                if pending.source != request.source || pending.set != request.set {
                    return Err(ManagerError::Invalid(format!(
                        "pending backup {id} is not {}'s backup of set {:?}",
                        request.source, request.set
                    )));
                }
                Some(pending)
            }
        };
        let (mut uploads, reused) = self.decide_placement(request, rng)?;
        // Each packet's storage generation: the target records it with the
        // packet, and only a delete ticket naming it deletes that copy.
        for p in uploads.iter_mut().flat_map(|c| c.packets.iter_mut()) {
            p.generation = rng.next_u64().max(1);
        }
        let stored_bytes = uploads
            .iter()
            .flat_map(|c| &c.packets)
            .fold(0u64, |sum, p| sum.saturating_add(p.size));
        let held = self
            .state
            .pending
            .values()
            .filter(|p| p.source == request.source)
            .fold(0u64, |sum, p| {
                sum.saturating_add(self.state.pending_stored_bytes(p))
            });
        self.config
            .reservations
            .check_pending(request.source, held, stored_bytes)
            .map_err(ApplyError::Quota)?;
        // A part renews the whole pending backup's deadline: the grace plus
        // the upload time of everything it holds, from now.
        let expires_at = self.config.reservations.deadline(
            now,
            extended.map_or(stored_bytes, |p| {
                self.state
                    .pending_stored_bytes(p)
                    .saturating_add(stored_bytes)
            }),
            self.config.pending_ttl,
            self.config.ticket_ttl,
        );
        let pending = PendingBackup {
            id: extended.map_or(self.state.next_pending, |p| p.id),
            source: request.source,
            set: request.set.clone(),
            location: extended.map_or(request.location, |p| p.location),
            params: request.params.clone(),
            new_chunks: uploads.clone(),
            reused: reused.clone(),
            created_at: now,
            expires_at: extended.map_or(expires_at, |p| p.expires_at.max(expires_at)),
            receipted: Vec::new(),
            order: Vec::new(),
            order_stored: Vec::new(),
        };
        let draft = PlanDraft {
            pending_id: pending.id,
            source: request.source,
            uploads,
            reused,
            expires_at: pending.expires_at,
        };
        let command = match extended {
            None => Command::BeginBackup { pending },
            Some(_) => Command::ExtendBackup { part: pending },
        };
        check_entry(&command)?;
        Ok((command, draft))
    }

    /// The answer to a plan whose `BeginBackup` applied: store tickets signed
    /// by this manager.
    pub fn finish_plan(&self, draft: PlanDraft, now: Millis) -> Result<PlanDecision, ManagerError> {
        let mut per_target: BTreeMap<NodeId, Vec<TicketEntry>> = BTreeMap::new();
        for p in draft.uploads.iter().flat_map(|c| &c.packets) {
            per_target.entry(p.target).or_default().push(TicketEntry {
                packet_id: p.packet_id,
                size: p.size,
                generation: p.generation,
            });
        }
        let target_caps = per_target
            .keys()
            .filter_map(|t| self.upload_cap(t).map(|cap| (*t, cap)))
            .collect();
        Ok(PlanDecision {
            pending_id: draft.pending_id,
            target_caps,
            tickets: self.tickets(TicketKind::Store, Some(draft.source), per_target, now)?,
            uploads: draft.uploads,
            reused: draft.reused,
            expires_at: draft.expires_at,
        })
    }

    /// The rate a source may upload to `target` at, if capped: the lower
    /// nonzero of the bandwidth it advertises and its subscription's.
    pub fn upload_cap(&self, target: &NodeId) -> Option<u64> {
        let client = self.state.clients.get(target)?;
        [
            client.profile.bandwidth_limit,
            client.subscription.bandwidth,
        ]
        .into_iter()
        .filter(|b| *b > 0)
        .min()
    }

    /// (b') A dry run of [`plan_backup`](Self::plan_backup): the same
    /// placement (or the same refusal) without recording anything or issuing
    /// tickets. `strew plan` shows it.
    pub fn preview_backup<R: Rng + ?Sized>(
        &self,
        request: &PlanRequest,
        rng: &mut R,
    ) -> Result<(Vec<PlannedChunk>, Vec<DataId>), ManagerError> {
        self.decide_placement(request, rng)
    }

    /// Validates a plan request, sorts its chunks into stored (reused) and
    /// new, and places the new ones. Changes nothing.
    fn decide_placement<R: Rng + ?Sized>(
        &self,
        request: &PlanRequest,
        rng: &mut R,
    ) -> Result<(Vec<PlannedChunk>, Vec<DataId>), ManagerError> {
        let redundancy = request.params.redundancy;
        redundancy
            .validate()
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        request
            .location
            .validate()
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        if !self.state.clients.contains_key(&request.source) {
            return Err(ApplyError::UnknownNode(request.source).into());
        }
        let width = redundancy.width();
        let mut seen = BTreeSet::new();
        let mut reused = Vec::new();
        let mut new_chunks: Vec<&ChunkPlan> = Vec::new();
        let mut keys: Vec<DataId> = Vec::new();
        for chunk in &request.chunks {
            if !seen.insert(chunk.data_id) {
                continue;
            }
            // Dedup: only a receipted copy that suits this backup.
            if let Some(key) = self.reusable_copy(chunk, request) {
                reused.push(key);
                continue;
            }
            let Some(key) = self.free_copy_key(&chunk.data_id) else {
                match self.any_good_copy(chunk) {
                    Some(key) => reused.push(key),
                    None => {
                        return Err(ManagerError::Invalid(format!(
                            "chunk {} has {} copies stored and none matches this backup's packets",
                            chunk.data_id,
                            crate::records::MAX_CHUNK_COPIES
                        )));
                    }
                }
                continue;
            };
            if chunk.packets.len() != width
                || chunk
                    .packets
                    .iter()
                    .any(|p| p.size == 0 || p.size > crate::state::MAX_PACKET_BYTES)
            {
                return Err(ManagerError::Invalid(format!(
                    "chunk {} must have {width} packets of 1 to {} bytes for {redundancy}",
                    chunk.data_id,
                    crate::state::MAX_PACKET_BYTES
                )));
            }
            new_chunks.push(chunk);
            keys.push(key);
        }
        let mut uploads = Vec::with_capacity(new_chunks.len());
        if !new_chunks.is_empty() {
            let packet_size = new_chunks
                .iter()
                .flat_map(|c| &c.packets)
                .map(|p| p.size)
                .max()
                .unwrap_or(1);
            let stripes = u32::try_from(new_chunks.len())
                .map_err(|_| ManagerError::Invalid("too many chunks in one backup".into()))?;
            let placement_request = PlacementRequest {
                source: request.location,
                source_node: Some(request.source),
                backup_distance: request.params.backup_distance,
                spread: request.params.spread,
                redundancy,
                stripes,
                packet_size,
            };
            // Targets the source could not reach are left out of this plan.
            let exclude: BTreeSet<NodeId> = request.exclude.iter().copied().collect();
            let placement = place_excluding(
                &self.view,
                &placement_request,
                &self.config.placement,
                &exclude,
                rng,
            )?;
            for ((chunk, targets), key) in new_chunks.iter().zip(&placement.stripes).zip(&keys) {
                uploads.push(PlannedChunk {
                    key: (key != &chunk.data_id).then_some(*key),
                    data_id: chunk.data_id,
                    packets: chunk
                        .packets
                        .iter()
                        .zip(targets)
                        .map(|(p, target)| StoredPacket {
                            packet_id: p.packet_id,
                            size: p.size,
                            target: *target,
                            generation: 0,
                        })
                        .collect(),
                });
            }
        }
        Ok((uploads, reused))
    }

    fn snapshot_id(source: &NodeId, set: &str, pending_id: u64) -> SnapshotId {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"strew/snapshot/v1\0");
        hasher.update(source.as_bytes());
        hasher.update(&(set.len() as u64).to_le_bytes());
        hasher.update(set.as_bytes());
        hasher.update(&pending_id.to_le_bytes());
        SnapshotId(*hasher.finalize().as_bytes())
    }

    /// The stripe of the copy stored (or being committed) under record key `key`.
    fn stripe_of(
        &self,
        key: &DataId,
        stored: &BTreeMap<DataId, &PlannedChunk>,
    ) -> Option<SequenceStripe> {
        let (data_id, packets): (DataId, Vec<StoredPacket>) = match self.state.chunks.get(key) {
            Some(copy) => (copy.data_id, copy.packets.clone()),
            None => {
                let copy = stored.get(key)?;
                (copy.data_id, copy.packets.clone())
            }
        };
        Some(SequenceStripe {
            data_id,
            packets: packets
                .iter()
                .map(|p| SequenceEntry {
                    packet_id: p.packet_id,
                    size: p.size,
                    targets: vec![p.target],
                    generation: p.generation,
                })
                .collect(),
        })
    }

    /// Delete tickets, signed by this manager, for the packets an applied
    /// command freed (`Deletions` or a commit's orphans); none otherwise.
    pub fn deletion_tickets(
        &self,
        applied: &Applied,
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        self.delete_tickets(&applied.deletions(), now)
    }
}

/// Refuses a command whose encoding exceeds [`MAX_ENTRY_BYTES`] (the raft
/// entry it would become), before anything proposes it.
pub fn check_entry(command: &Command) -> Result<usize, ManagerError> {
    let bytes = crate::cbor::encode(command)
        .map_err(|e| ManagerError::Invalid(e.to_string()))?
        .len();
    if bytes > MAX_ENTRY_BYTES {
        return Err(ManagerError::EntryTooLarge {
            kind: command.kind(),
            bytes,
        });
    }
    Ok(bytes)
}

/// How a commit's receipts are taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Receipts {
    /// Verified, one per planned packet (every real commit).
    Check,
    /// The driver's targets are modelled and sign nothing (the simulator).
    Modelled,
}
