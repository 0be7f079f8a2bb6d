//! The sequence-manager service of a coordinator node: the coordinator
//! library's pure `Manager`, as this node's member of the coordinator group
//! applied the log ([`ManagerReplica`], durable in
//! `DATA_DIR/manager/manager.redb`), behind the overlay's manager protocol.
//!
//! Owns answering protocol calls: only the group's leader serves; every
//! other member redirects callers to the leader (`NotManager`) or says why
//! nobody can serve (`Unavailable`: no quorum, election). A state change is
//! decided on the applied state, proposed to the group as a `Command`
//! (one proposal at a time, so a plan's pending id never races) and answered
//! once committed, with tickets signed by this node; reads first confirm
//! leadership with a read barrier. Also owns keeping the manager's node
//! records in step with the overlay's gossip (the leader proposes every
//! change it sees in one batch per tick) and expiring plans when the
//! manager's next deadline passes.
//! Membership of the group and announcing the leader are
//! [`super::group`]'s; placement, sealing and records are the coordinator's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::{
    CommitStep, MAX_LIST_PAGE, Manager, ManagerConfig, ManagerError, OrderStep,
};
use strew_coordinator::repair::RepairPolicy;
use strew_coordinator::seal::GroupKey;
use strew_coordinator::{Applied, Command, NodeId, NodeProfile};
use strew_overlay::manager::{DryRunAnswer, ManagerInfo, Refusal, RefusalCode};
use strew_overlay::{Keypair, ManagerEndpoint, ManagerRequest, ManagerResponse, OverlayHandle};
use tracing::{debug, info, warn};

use crate::consensus::overlay::{OverlayRaft, RaftService};
use crate::consensus::replica::{ManagerReplica, ReplicaError};
use crate::consensus::types::MAX_BATCH;

/// Raft entries of node records the leader proposes per grid sync (one per
/// tick): with [`MAX_BATCH`] records each, this bounds how fast a flood of
/// new nodes can grow the replicated log.
pub const MAX_GRID_BATCHES_PER_TICK: usize = 4;
use crate::consensus::{
    ConsensusError, ConsensusMember, GroupConfig, GroupStatus, Outcome, WriteError,
};
use crate::sync::lock;
use crate::wire::{self, ToWire};

mod audits;
mod collect;
mod joins;
mod lane;
mod location;
mod rebuild;
mod repair;
mod standing;
mod trust;
pub use repair::{RepairCommitError, RepairPlan, RepairTotals};

/// Directory of the manager's state inside the data dir.
pub const MANAGER_DIR: &str = "manager";
/// The raft log's file inside [`MANAGER_DIR`] (kept next to `manager.redb`:
/// the two are one member's state and must be lost or kept together).
pub const RAFT_LOG: &str = "raft.redb";
/// What a coordinator that belongs to no group answers `Who` with (a node
/// looking for an existing group before forming one recognises it).
pub const NO_GROUP: &str = "this coordinator is not in a coordinator group yet";

/// Errors of starting the manager service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot create or read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the group key file {0} is damaged (it must hold 32 bytes)")]
    BadGroupKey(PathBuf),
    #[error("the node identity is not an Ed25519 key")]
    NotEd25519,
    #[error("cannot open the manager's database")]
    Manager(#[source] ReplicaError),
    #[error("cannot start this node's member of the coordinator group")]
    Consensus(#[source] ConsensusError),
}

/// The sequence manager as this node serves it.
pub struct ManagerService {
    overlay: OverlayHandle,
    member: Arc<ConsensusMember>,
    transport: Arc<OverlayRaft>,
    replica: Arc<ManagerReplica>,
    rng: Mutex<StdRng>,
    /// The grid view's generation and the raft term of the last complete
    /// grid sync: an unchanged view under the same leader needs none.
    synced: Mutex<Option<(u64, u64)>>,
    /// Held from deciding a command until it is answered: one proposal at a time.
    proposals: tokio::sync::Mutex<()>,
    /// Heavy reads, a bounded few at a time and per requester.
    lane: lane::ReadLane,
    /// This node's candidate sealing key (the group's first committed key wins).
    local_key: GroupKey,
    config: GroupConfig,
    /// When the checker counts a packet as gone and rebuilds its stripe.
    repair: RepairPolicy,
    /// Stripes the leader's last repair check found to need repair (0 on
    /// members that do not lead).
    repairs_pending: AtomicU64,
    /// What this node rebuilt as the leader's repairer since it started.
    repaired: repair::RepairTotals,
    /// RTT evidence about claimed locations (the leader's memory only).
    location: Mutex<strew_coordinator::LocationBook>,
    /// What a refuted location claim costs (`location_check`).
    location_check: Mutex<strew_coordinator::LocationCheck>,
    /// Who in the view may enter an open grid's replicated state (`joins`).
    joins: Mutex<strew_coordinator::joins::JoinGate>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError + '_ {
    move |source| ServiceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads this node's candidate sealing key, creating it on first start.
fn group_key(dir: &Path) -> Result<GroupKey, ServiceError> {
    let path = dir.join("group.key");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| ServiceError::BadGroupKey(path.clone()))?;
            Ok(GroupKey(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = GroupKey(rand::random());
            crate::private_file::write_private(&path, &key.0).map_err(|e| ServiceError::Io {
                path: e.path,
                source: e.source,
            })?;
            Ok(key)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

fn refuse(e: &ManagerError) -> ManagerResponse {
    ManagerResponse::Refused(wire::refusal(e))
}

/// Runs CPU-heavy manager work (placement, sealing) without stalling the
/// other tasks of this runtime worker.
fn heavy<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

impl ManagerService {
    /// Runs a heavy read for `requester` in the read lane ([`lane`]), off
    /// the runtime's workers; `Err` is the answer to give instead (`Busy`).
    async fn heavy_read<T>(
        &self,
        requester: NodeId,
        read: impl FnOnce() -> T,
    ) -> Result<T, ManagerResponse> {
        let _turn = self.lane.enter(requester).await?;
        Ok(heavy(read))
    }
}

impl ManagerService {
    /// Opens the manager state in `data_dir/manager`, starts this node's
    /// member of the coordinator group over it (its raft log next to it) and
    /// serves the raft protocol on the overlay. Tickets are signed with `key`;
    /// `repair` is the policy the leader's repair checker applies.
    pub async fn start(
        data_dir: &Path,
        key: &Keypair,
        overlay: OverlayHandle,
        config: GroupConfig,
        manager_config: ManagerConfig,
        repair: RepairPolicy,
    ) -> Result<Arc<Self>, ServiceError> {
        let dir = data_dir.join(MANAGER_DIR);
        let local_key = {
            let dir = dir.clone();
            tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
                group_key(&dir)
            })
            .await
            .map_err(|e| io_err(data_dir)(std::io::Error::other(e)))??
        };
        let signing =
            strew_overlay::packet::ticket::signing_key(key).ok_or(ServiceError::NotEd25519)?;
        let replica = ManagerReplica::open(
            &dir.join("manager.redb"),
            signing,
            local_key.clone(),
            manager_config,
        )
        .await
        .map_err(ServiceError::Manager)?;
        let replica = Arc::new(replica);
        let transport = Arc::new(OverlayRaft::new(overlay.clone()));
        let endpoint = Arc::new(RaftService::new(transport.clone()));
        overlay.set_raft_endpoint(Some(endpoint.clone()));
        let member = ConsensusMember::start(
            &overlay.node_id(),
            &dir.join(RAFT_LOG),
            replica.clone(),
            transport.clone(),
            config.clone(),
        )
        .await
        .map_err(ServiceError::Consensus)?;
        let member = Arc::new(member);
        endpoint.install(member.clone());
        Ok(Arc::new(ManagerService {
            overlay,
            member,
            transport,
            replica,
            rng: Mutex::new(StdRng::from_seed(rand::random())),
            synced: Mutex::new(None),
            proposals: tokio::sync::Mutex::new(()),
            lane: lane::ReadLane::for_this_machine(),
            local_key,
            config,
            repair,
            repairs_pending: AtomicU64::new(0),
            repaired: repair::RepairTotals::default(),
            location: Mutex::new(strew_coordinator::LocationBook::default()),
            location_check: Mutex::new(strew_coordinator::LocationCheck::default()),
            joins: Mutex::new(strew_coordinator::joins::JoinGate::default()),
        }))
    }

    pub fn member(&self) -> &Arc<ConsensusMember> {
        &self.member
    }

    pub fn overlay(&self) -> &OverlayHandle {
        &self.overlay
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// The group as this member sees it.
    pub fn group_status(&self) -> GroupStatus {
        self.member.status()
    }

    /// The leader's strew node id, if this member knows one.
    pub fn leader(&self) -> Option<NodeId> {
        self.member.leader().and_then(|(_, m)| m.strew_id().ok())
    }

    /// Every member's strew node id (voters and learners).
    pub fn members(&self) -> Vec<NodeId> {
        self.member
            .status()
            .members
            .iter()
            .filter_map(|m| m.node_id.parse().ok())
            .collect()
    }

    /// Makes sure the group has a sealing key (leader only; proposes this
    /// node's unless one is committed).
    pub async fn ensure_group_key(&self) -> Result<(), WriteError> {
        self.member.ensure_group_key(self.local_key.clone()).await
    }

    /// "no quorum: N of M coordinators reachable; nothing was placed", with
    /// N the voters heard from lately (this one included).
    fn no_quorum(&self) -> String {
        let status = self.member.status();
        let voters: Vec<_> = status
            .members
            .iter()
            .filter(|m| m.role == crate::consensus::Role::Voter)
            .collect();
        let window = self.config.election_max * 3;
        let reachable = voters
            .iter()
            .filter(|m| m.raft_id == status.me || self.transport.heard_within(m.raft_id, window))
            .count();
        format!(
            "no quorum: {reachable} of {} coordinators reachable; nothing was placed",
            voters.len()
        )
    }

    /// The answer of a member that cannot serve: a redirect to the leader,
    /// or why there is none.
    fn not_serving(&self) -> ManagerResponse {
        if let Some(leader) = self.leader()
            && leader != self.overlay.node_id()
        {
            return ManagerResponse::NotManager {
                leader: Some(leader),
            };
        }
        let status = self.member.status();
        if status.members.is_empty() {
            return ManagerResponse::NotManager { leader: None };
        }
        self.unavailable_no_quorum()
    }

    fn unavailable_no_quorum(&self) -> ManagerResponse {
        ManagerResponse::Unavailable(Refusal::new(RefusalCode::NoQuorum, self.no_quorum()))
    }

    fn write_error(&self, e: WriteError) -> ManagerResponse {
        match e {
            WriteError::NotLeader { leader } => ManagerResponse::NotManager {
                leader: leader.and_then(|m| m.strew_id().ok()),
            },
            WriteError::NoQuorum(_) => self.unavailable_no_quorum(),
            WriteError::EntryTooLarge { .. } => ManagerResponse::Refused(Refusal::new(
                RefusalCode::TooLarge,
                format!("coordinator group: {e}"),
            )),
            other => ManagerResponse::Unavailable(Refusal::new(
                RefusalCode::Internal,
                format!("coordinator group: {other}"),
            )),
        }
    }

    /// Confirms leadership and waits until the applied state is current.
    async fn barrier(&self) -> Result<(), ManagerResponse> {
        self.member
            .read_barrier()
            .await
            .map_err(|e| self.write_error(e))?;
        if self.member.has_group_key() {
            Ok(())
        } else {
            Err(ManagerResponse::Unavailable(Refusal::new(
                RefusalCode::Busy,
                "the coordinator group has no sealing key yet; retry",
            )))
        }
    }

    /// Proposes a command (the caller holds `proposals`) and returns what
    /// applying it gave, or the response explaining why it did not apply.
    async fn propose(&self, command: Command) -> Result<Applied, ManagerResponse> {
        match self.member.execute(command).await {
            Ok(committed) => match committed.outcome {
                Outcome::Applied(applied) => Ok(applied),
                Outcome::Rejected(why) => Err(ManagerResponse::Refused(Refusal::new(
                    wire::apply_code(&why),
                    why.to_string(),
                ))),
            },
            Err(e) => Err(self.write_error(e)),
        }
    }

    /// Commands that bring the manager's node records in step with `profiles`
    /// (the overlay's grid view): joins for new or changed nodes, offline
    /// for vanished ones.
    fn grid_commands(
        manager: &Manager,
        profiles: Vec<NodeProfile>,
        certified: &BTreeSet<NodeId>,
        joinable: &BTreeSet<NodeId>,
        now: u64,
    ) -> Vec<Command> {
        let mut commands = Vec::new();
        let mut seen = BTreeSet::new();
        let closed = matches!(
            manager.state().mode,
            strew_coordinator::GridMode::Closed { .. }
        );
        for profile in profiles {
            // Unreachable nodes (the overlay's liveness) count as gone.
            if !profile.online {
                continue;
            }
            seen.insert(profile.node_id);
            // A closed grid takes in a node only with an invitation
            // (`Redeem`), or a certified coordinator with the default plan.
            if closed && !manager.state().clients.contains_key(&profile.node_id) {
                if certified.contains(&profile.node_id) {
                    commands.push(Command::Admit {
                        profile,
                        subscription: strew_coordinator::Subscription::default_plan(),
                        at: now,
                    });
                }
                continue;
            }
            let changed = match manager.state().clients.get(&profile.node_id) {
                // An open grid takes in a node once the join gate lets it
                // (seen for a while, proof of work), or a certified coordinator.
                None => joinable.contains(&profile.node_id) || certified.contains(&profile.node_id),
                Some(known) => {
                    let k = &known.profile;
                    k.location != profile.location
                        || k.storage_allocated != profile.storage_allocated
                        || k.x25519_public != profile.x25519_public
                        || k.coordinator_eligible != profile.coordinator_eligible
                        || k.bandwidth_limit != profile.bandwidth_limit
                        || k.network != profile.network
                        || k.behind_nat != profile.behind_nat
                        || !k.online
                }
            };
            if changed {
                commands.push(Command::Join {
                    profile,
                    token: None,
                    at: now,
                });
            }
        }
        for (id, client) in &manager.state().clients {
            if client.profile.online && !seen.contains(id) {
                info!(node = %id, "manager: node unreachable or gone from the grid view; it gets no new packets");
                commands.push(Command::SetOnline {
                    node: *id,
                    online: false,
                    at: now,
                });
            }
        }
        commands
    }

    /// Proposes the node records the grid view implies, in batches of at
    /// most [`MAX_BATCH`] commands (one raft entry each; leader only, the
    /// caller holds `proposals`), at most [`MAX_GRID_BATCHES_PER_TICK`] of
    /// them per call: a flood of new nodes grows the raft log by a bounded
    /// amount per tick, and the rest follows on later ticks. Departures go
    /// first (placement must stop choosing them). Stops at the first batch
    /// that fails.
    async fn sync_grid_locked(&self, now: u64) -> Result<(), ManagerResponse> {
        let seen = (self.overlay.grid_generation(), self.member.status().term);
        let Some(profiles) = self
            .overlay
            .with_grid_view(|v| v.iter().cloned().collect::<Vec<NodeProfile>>())
        else {
            return Ok(());
        };
        let certified = self.certified();
        let joinable = self.joinable(&profiles, now);
        let (mut commands, capped, open) = self.replica.read(|m| {
            let mut commands = Self::grid_commands(m, profiles, &certified, &joinable.ready, now);
            let capped = joins::cap_new_joins(m.state(), &mut commands);
            let open = !matches!(m.state().mode, strew_coordinator::GridMode::Closed { .. });
            (commands, capped, open)
        });
        commands.sort_by_key(|c| !matches!(c, Command::SetOnline { .. }));
        let cap = MAX_BATCH * MAX_GRID_BATCHES_PER_TICK;
        let complete = commands.len() <= cap && !capped && !(open && joinable.waiting);
        commands.truncate(cap);
        for batch in commands.chunks(MAX_BATCH) {
            match self.member.execute_batch(batch.to_vec()).await {
                Ok(committed) => {
                    if let Outcome::Rejected(why) = committed.outcome {
                        debug!(%why, "manager: some node records were refused");
                    }
                }
                Err(e) => return Err(self.write_error(e)),
            }
        }
        if complete {
            *lock(&self.synced) = Some(seen);
        }
        Ok(())
    }

    /// Brings the replicated node records in step with the overlay's grid
    /// view (leader only).
    pub async fn sync_grid(&self, now: u64) {
        if !self.member.is_leader() {
            return;
        }
        let seen = (self.overlay.grid_generation(), self.member.status().term);
        if *lock(&self.synced) == Some(seen) {
            return;
        }
        let _turn = self.proposals.lock().await;
        if let Err(e) = self.sync_grid_locked(now).await {
            debug!(?e, "manager: grid sync stopped");
        }
    }

    /// Aborts planned backups past their deadline (leader only), releasing
    /// their reservations. Returns how many were aborted.
    pub async fn expire_pending(&self, now: u64) -> usize {
        if !self.member.is_leader() {
            return 0;
        }
        let due = self
            .replica
            .read(|m| m.next_deadline().is_some_and(|at| at < now));
        if !due {
            return 0;
        }
        let _turn = self.proposals.lock().await;
        let commands = self.replica.read(|m| m.decide_expire(now));
        let mut aborted = 0;
        for command in commands {
            match self.propose(command).await {
                Ok(_) => aborted += 1,
                Err(e) => {
                    debug!(?e, "manager: expiring a plan stopped");
                    break;
                }
            }
        }
        aborted
    }

    /// Forgets the snapshots of sources whose subscription expired past the
    /// grace (leader only), a few per tick; their packets are collected.
    /// Returns how many were forgotten.
    pub async fn expire_subscriptions(&self, now: u64) -> usize {
        /// Snapshots forgotten per tick at most.
        const PER_TICK: usize = 16;
        if !self.member.is_leader() {
            return 0;
        }
        let commands = self
            .replica
            .read(|m| m.decide_expired_subscriptions(now, PER_TICK));
        if commands.is_empty() {
            return 0;
        }
        let _turn = self.proposals.lock().await;
        let mut forgotten = 0;
        for command in commands {
            match self.propose(command).await {
                Ok(_) => forgotten += 1,
                Err(e) => {
                    debug!(
                        ?e,
                        "manager: forgetting a lapsed subscriber's snapshot stopped"
                    );
                    break;
                }
            }
        }
        forgotten
    }

    /// Trims the global backup log to its retention (leader only).
    pub async fn trim_log(&self, now: u64) {
        if !self.member.is_leader() {
            return;
        }
        let Some(command) = self.replica.read(|m| m.decide_trim_log(now)) else {
            return;
        };
        let _turn = self.proposals.lock().await;
        if let Err(e) = self.propose(command).await {
            debug!(?e, "manager: trimming the backup log stopped");
        }
    }

    /// Who the manager is, the group's members and what the state holds;
    /// `None` while this member knows no leader.
    pub fn info(&self) -> Option<ManagerInfo> {
        let manager = self.leader()?;
        let status = self.member.status();
        let members = status
            .members
            .iter()
            .filter_map(|m| m.node_id.parse().ok())
            .collect();
        let (grid_id, certificates) = self.replica.read_trust(|t| (t.grid(), t.certificates()));
        Some(self.replica.read(|m| {
            let state = m.state();
            ManagerInfo {
                manager,
                members,
                term: status.term,
                nodes: state.clients.len() as u64,
                online: state.clients.values().filter(|c| c.profile.online).count() as u64,
                snapshots: state.snapshots.len() as u64,
                stored_bytes: state.targets.values().map(|t| t.bytes).sum(),
                repairs_pending: self.repairs_pending.load(Ordering::Relaxed),
                grid_id,
                certificates,
                rebuilt_since: state.rebuilt_since,
            }
        }))
    }

    fn who(&self) -> ManagerResponse {
        if self.member.status().members.is_empty() {
            return ManagerResponse::Refused(Refusal::new(RefusalCode::NoGroup, NO_GROUP));
        }
        match self.info() {
            Some(info) => ManagerResponse::Info(info),
            None => self.unavailable_no_quorum(),
        }
    }

    /// Proposes the requester's join when the manager has not heard of it
    /// yet (its announcement may still be travelling). The caller holds
    /// `proposals`.
    async fn ensure_known(&self, requester: NodeId, now: u64) -> Result<(), ManagerResponse> {
        if self
            .replica
            .read(|m| m.state().clients.contains_key(&requester))
        {
            return Ok(());
        }
        self.sync_grid_locked(now).await
    }

    async fn answer(&self, requester: NodeId, request: ManagerRequest) -> ManagerResponse {
        if matches!(request, ManagerRequest::Who) {
            return self.who();
        }
        if !self.member.is_leader() {
            return self.not_serving();
        }
        let now = strew_overlay::now_ms();
        if matches!(
            request,
            ManagerRequest::Plan(_)
                | ManagerRequest::DryRun(_)
                | ManagerRequest::Commit(_)
                | ManagerRequest::CommitOrder(_)
                | ManagerRequest::Retarget(_)
        ) && let Some(refusal) = self.closed_to(&requester)
        {
            return refusal;
        }
        match request {
            ManagerRequest::Who => self.who(),
            ManagerRequest::Certify(cert) => self.certify(cert).await,
            ManagerRequest::Revoke(revocation) => self.revoke(revocation).await,
            ManagerRequest::GridSecret => self.grid_secret(requester).await,
            ManagerRequest::Redeem(invite) => self.redeem(requester, invite, now).await,
            ManagerRequest::Renew(renewal) => self.renew(renewal, now).await,
            ManagerRequest::Members => self.list_members(requester, None).await,
            ManagerRequest::MembersPage { after, count } => {
                self.list_members(requester, Some((after, count))).await
            }
            ManagerRequest::AuditSnapshot {
                snapshot,
                from,
                count,
            } => self.audit_snapshot(requester, snapshot, from, count).await,
            ManagerRequest::ReportRtt(report) => self.record_rtt(requester, &report),
            ManagerRequest::Evidence => self.evidence(),
            ManagerRequest::FetchAttestation { snapshot } => {
                self.attestation(requester, snapshot).await
            }
            ManagerRequest::CollectUnreferenced {
                target,
                after,
                grace_ms,
                dry_run,
            } => {
                let page = rebuild::CollectPage {
                    target,
                    after,
                    grace_ms,
                    dry_run,
                };
                self.collect_unreferenced(requester, page, now).await
            }
            ManagerRequest::DryRun(req) => {
                let mut req = wire::plan_request(requester, req);
                if let Err(r) = self.barrier().await {
                    return r;
                }
                let refuted = self.apply_location_check(&mut req);
                let preview = self.heavy_read(requester, || {
                    self.replica
                        .read(|m| m.preview_backup(&req, &mut *lock(&self.rng)))
                });
                let preview = match preview.await {
                    Ok(preview) => preview,
                    Err(busy) => return busy,
                };
                match preview {
                    Ok((uploads, reused)) => ManagerResponse::DryRun(DryRunAnswer {
                        uploads: uploads.iter().map(ToWire::to_wire).collect(),
                        reused,
                    }),
                    Err(e) => self.refusal_naming(refuse(&e), &refuted),
                }
            }
            ManagerRequest::FetchSequence { snapshot } => {
                if let Err(r) = self.barrier().await {
                    return r;
                }
                let sealed = self
                    .replica
                    .read(|m| m.fetch_sequence(requester, snapshot, &mut *lock(&self.rng)));
                match sealed {
                    Ok(sealed) => ManagerResponse::Sequence(sealed),
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::FetchSequencePage {
                snapshot,
                from,
                count,
            } => {
                if let Err(r) = self.barrier().await {
                    return r;
                }
                let page = self.heavy_read(requester, || {
                    self.replica.read(|m| {
                        m.fetch_sequence_page(
                            requester,
                            snapshot,
                            from,
                            count,
                            &mut *lock(&self.rng),
                        )
                    })
                });
                let page = match page.await {
                    Ok(page) => page,
                    Err(busy) => return busy,
                };
                match page {
                    Ok(page) => ManagerResponse::SequencePage {
                        sealed: page.sealed,
                        total: page.total,
                    },
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::ReadTickets {
                snapshot,
                from,
                count,
            } => {
                if let Err(r) = self.barrier().await {
                    return r;
                }
                let request = strew_coordinator::manager::ReadTicketRequest {
                    requester,
                    snapshot,
                    from,
                    count,
                };
                // The reads count against a limited plan's network quota.
                match self.replica.read(|m| m.decide_read_traffic(&request, now)) {
                    Ok(None) => {}
                    Ok(Some(command)) => {
                        let _turn = self.proposals.lock().await;
                        if let Err(r) = self.propose(command).await {
                            return r;
                        }
                    }
                    Err(e) => return refuse(&e),
                }
                let tickets = self.heavy_read(requester, || {
                    self.replica.read(|m| m.read_tickets(&request, now))
                });
                match tickets.await {
                    Ok(Ok(tickets)) => ManagerResponse::ReadTickets(tickets),
                    Ok(Err(e)) => refuse(&e),
                    Err(busy) => busy,
                }
            }
            ManagerRequest::List { set } => {
                if let Err(r) = self.barrier().await {
                    return r;
                }
                // Whole listings only while they fit one page (4 MiB bound).
                let list = self
                    .replica
                    .read(|m| m.list_snapshots(&requester, set.as_deref()));
                if list.len() > MAX_LIST_PAGE {
                    return refuse(&ManagerError::Invalid(format!(
                        "{} snapshots: list them in pages of at most {MAX_LIST_PAGE}",
                        list.len()
                    )));
                }
                ManagerResponse::Snapshots(list.iter().map(ToWire::to_wire).collect())
            }
            ManagerRequest::Standing {
                snapshot,
                down,
                from,
            } => self.standing(requester, snapshot, &down, from).await,
            ManagerRequest::ListPage { set, from, count } => {
                if let Err(r) = self.barrier().await {
                    return r;
                }
                let page = self
                    .replica
                    .read(|m| m.list_snapshots_page(&requester, set.as_deref(), from, count));
                match page {
                    Ok((snapshots, total)) => ManagerResponse::SnapshotsPage {
                        snapshots: snapshots.iter().map(ToWire::to_wire).collect(),
                        total,
                    },
                    Err(e) => refuse(&e),
                }
            }
            write => {
                let _turn = self.proposals.lock().await;
                if let Err(r) = self.barrier().await {
                    return r;
                }
                if let Err(r) = self.ensure_known(requester, now).await {
                    return r;
                }
                match self.write(requester, write, now).await {
                    Ok(r) | Err(r) => r,
                }
            }
        }
    }

    /// A state-changing call: decide on the applied state, propose, answer.
    /// The caller holds `proposals`.
    async fn write(
        &self,
        requester: NodeId,
        request: ManagerRequest,
        now: u64,
    ) -> Result<ManagerResponse, ManagerResponse> {
        let refused = |e: ManagerError| refuse(&e);
        match request {
            ManagerRequest::Plan(req) => {
                let mut req = wire::plan_request(requester, req);
                let refuted = self.apply_location_check(&mut req);
                let (command, draft) = heavy(|| {
                    self.replica
                        .read(|m| m.decide_plan(&req, now, &mut *lock(&self.rng)))
                })
                .map_err(|e| self.refusal_naming(refuse(&e), &refuted))?;
                self.propose(command).await?;
                let decision = self
                    .replica
                    .read(|m| m.finish_plan(draft, now))
                    .map_err(refused)?;
                Ok(ManagerResponse::Planned(decision.to_wire()))
            }
            ManagerRequest::Commit(req) => {
                let req = wire::commit_request(requester, req);
                let step = heavy(|| {
                    self.replica
                        .read(|m| m.decide_commit(&req, now, &mut *lock(&self.rng)))
                })
                .map_err(refused)?;
                match step {
                    CommitStep::Done(response) => {
                        Ok(ManagerResponse::Committed(response.to_wire()))
                    }
                    CommitStep::Propose { command, snapshot } => {
                        let applied = self.propose(command).await?;
                        let response = self
                            .replica
                            .read(|m| m.finish_commit(snapshot, &applied, now))
                            .map_err(refused)?;
                        Ok(ManagerResponse::Committed(response.to_wire()))
                    }
                }
            }
            ManagerRequest::Forget { snapshot } => {
                let command = match self
                    .replica
                    .read(|m| m.decide_forget(requester, snapshot, now))
                {
                    Ok(command) => command,
                    // A retry of a forget that applied: done already.
                    Err(e) => match self
                        .replica
                        .read(|m| m.forgotten_already(requester, snapshot))
                    {
                        Some(done) => return Ok(ManagerResponse::Forgotten(done.to_wire())),
                        None => return Err(refused(e)),
                    },
                };
                let applied = self.propose(command).await?;
                let response = self
                    .replica
                    .read(|m| m.finish_forget(&applied, now))
                    .map_err(refused)?;
                Ok(ManagerResponse::Forgotten(response.to_wire()))
            }
            ManagerRequest::Abandon { pending_id } => {
                let command = self
                    .replica
                    .read(|m| m.decide_abandon(requester, pending_id, now))
                    .map_err(refused)?;
                let applied = self.propose(command).await?;
                let tickets = self
                    .replica
                    .read(|m| m.deletion_tickets(&applied, now))
                    .map_err(refused)?;
                Ok(ManagerResponse::Abandoned(tickets))
            }
            ManagerRequest::Leave { cancel } => {
                let exiting = !cancel;
                let current = self.replica.read(|m| m.leave_status(&requester));
                if current.exiting_since.is_some() != exiting {
                    self.propose(Command::SetExiting {
                        node: requester,
                        exiting,
                        at: now,
                    })
                    .await?;
                    if exiting {
                        info!(node = %requester, "a node is leaving the grid: its packets will be rebuilt elsewhere");
                    }
                }
                Ok(ManagerResponse::Leaving(
                    self.replica.read(|m| m.leave_status(&requester)),
                ))
            }
            ManagerRequest::Receipts {
                pending_id,
                receipts,
            } => {
                let command = heavy(|| {
                    self.replica
                        .read(|m| m.decide_receipts(requester, pending_id, &receipts))
                })
                .map_err(refused)?;
                self.propose(command).await?;
                Ok(ManagerResponse::Recorded)
            }
            ManagerRequest::Retarget(mut req) => {
                // The requester speaks for itself only.
                req.source = requester;
                let (command, mut draft) = heavy(|| {
                    self.replica
                        .read(|m| m.decide_retarget(&req, now, &mut *lock(&self.rng)))
                })
                .map_err(refused)?;
                self.propose(command.clone()).await?;
                let decision = self
                    .replica
                    .read(|m| {
                        draft.uploads = m.retargeted_chunks(&command);
                        m.finish_plan(draft, now)
                    })
                    .map_err(refused)?;
                Ok(ManagerResponse::Planned(decision.to_wire()))
            }
            ManagerRequest::CommitOrder(mut req) => {
                // The requester speaks for itself only.
                req.source = requester;
                let step = heavy(|| self.replica.read(|m| m.decide_commit_order(&req)))
                    .map_err(refused)?;
                if let OrderStep::Propose(command) = step {
                    self.propose(command).await?;
                }
                Ok(ManagerResponse::OrderRecorded(
                    self.replica.read(|m| m.order_recorded(req.pending_id)),
                ))
            }
            ManagerRequest::RecordRestore { snapshot, outcome } => {
                let outcome = wire::restore_outcome(outcome);
                let (command, _id) = self
                    .replica
                    .read(|m| m.decide_record_restore(requester, snapshot, outcome, now));
                self.propose(command).await?;
                Ok(ManagerResponse::Recorded)
            }
            ManagerRequest::Rebuild => self.rebuild(requester, now).await,
            ManagerRequest::Reregister(request) => self.reregister(requester, *request, now).await,
            ManagerRequest::ReportBad { data_id, packets } => {
                let commands = self
                    .replica
                    .read(|m| m.decide_mark_bad(requester, data_id, &packets, now))
                    .map_err(refused)?;
                for command in commands {
                    self.propose(command).await?;
                }
                Ok(ManagerResponse::Recorded)
            }
            other => {
                warn!(kind = other.kind(), "not a state-changing manager call");
                Err(ManagerResponse::Refused(Refusal::new(
                    RefusalCode::Invalid,
                    format!("{} is not a state-changing call", other.kind()),
                )))
            }
        }
    }
}

impl ManagerEndpoint for ManagerService {
    /// The answer, for the overlay to spawn; it keeps the service alive.
    fn handle(
        self: Arc<Self>,
        requester: NodeId,
        request: ManagerRequest,
    ) -> strew_overlay::ManagerAnswer {
        Box::pin(async move { self.answer(requester, request).await })
    }
}
