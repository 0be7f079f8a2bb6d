//! The coordinator group as the daemon runs it: who forms it, who is
//! admitted or removed, and every node's belief about the sequence manager.
//!
//! Owns the membership policy (the coordinator-eligible node with the lowest
//! NodeId in the grid view forms a group of one after a short settle time,
//! unless another eligible node already reports a group; the leader admits
//! the eligible nodes it sees in gossip — voters up to the configured count,
//! the rest learners — and removes a member gone from gossip for longer than
//! the grace period) and announcing the leader: a coordinator takes it from
//! its own member, any other node asks coordinators `Who` and trusts tickets
//! from every member of the group (so tickets signed by a new leader are
//! honoured after a failover). Answering manager calls is
//! [`super::manager`]'s; raft itself is [`crate::consensus`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strew_coordinator::NodeId;
use strew_overlay::manager::ManagerInfo;
use strew_overlay::{ManagerRequest, ManagerResponse, OverlayHandle, RefusalCode};
use tracing::{debug, info, warn};

use super::manager::ManagerService;
use crate::consensus::{GroupConfig, MAX_VOTERS, Member, Role, raft_id};

/// How often the group and the manager belief are looked at.
pub const REFRESH: Duration = Duration::from_secs(1);
/// How often a plain node that knows the leader asks again (the group's
/// membership may have changed). Until it knows one, it asks every [`REFRESH`];
/// while the group it knows looks unsettled (an eligible node in view is not
/// a member yet, or a member left the view) it asks every [`FOLLOW_UNSETTLED`],
/// so a member admitted moments before a failover is trusted before it leads.
pub const FOLLOW_KNOWN: Duration = Duration::from_secs(30);
pub const FOLLOW_UNSETTLED: Duration = Duration::from_secs(2);
/// How long a plain node keeps asking every [`FOLLOW_UNSETTLED`] after the
/// picture (members known, eligible nodes seen) last changed: an eligible
/// node the leader never admits must not make every node ask forever.
pub const UNSETTLED_PATIENCE: Duration = Duration::from_secs(120);
/// How long a coordinator listens to gossip before it may form a group.
pub const SETTLE: Duration = Duration::from_secs(3);
/// How long one `Who` question may take.
const WHO_TIMEOUT: Duration = Duration::from_secs(3);
/// Default time a member may be gone from gossip before it is removed.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// Environment variables that tune the group (tests shorten the grace).
pub const ENV_VOTERS: &str = "STREW_GROUP_VOTERS";
pub const ENV_GRACE: &str = "STREW_GROUP_GRACE";

/// The group's configuration as this daemon runs it.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub config: GroupConfig,
    /// A member gone from gossip this long is removed (and replaced).
    pub grace: Duration,
}

impl GroupSettings {
    /// Defaults, overridden by `STREW_GROUP_VOTERS` (1 to 5) and
    /// `STREW_GROUP_GRACE` (a duration such as `10m` or `20s`).
    pub fn from_env() -> Result<Self, String> {
        let mut settings = GroupSettings {
            config: GroupConfig::default(),
            grace: DEFAULT_GRACE,
        };
        if let Ok(text) = std::env::var(ENV_VOTERS) {
            let voters: usize = text
                .trim()
                .parse()
                .map_err(|_| format!("{ENV_VOTERS}={text:?} is not a number"))?;
            if voters == 0 || voters > MAX_VOTERS {
                return Err(format!(
                    "{ENV_VOTERS} must be 1 to {MAX_VOTERS}, not {voters}"
                ));
            }
            settings.config.voters = voters;
        }
        if let Ok(text) = std::env::var(ENV_GRACE) {
            settings.grace = strew_coordinator::parse_duration(&text)
                .map_err(|e| format!("{ENV_GRACE}={text:?}: {e}"))?;
        }
        Ok(settings)
    }
}

/// The first guess at the manager before anyone answered `Who`: the
/// coordinator-eligible node with the lowest NodeId in the grid view (the
/// one that forms the group).
pub fn choose_manager(overlay: &OverlayHandle) -> Option<NodeId> {
    eligible(overlay).into_iter().next()
}

/// Coordinator-eligible online nodes of the grid view (this one included
/// once it announced), lowest NodeId first.
fn eligible(overlay: &OverlayHandle) -> Vec<NodeId> {
    overlay
        .with_grid_view(|view| {
            let mut ids: Vec<NodeId> = view
                .iter()
                .filter(|p| p.coordinator_eligible && p.online)
                .map(|p| p.node_id)
                .collect();
            ids.sort();
            ids
        })
        .unwrap_or_default()
}

async fn who(overlay: &OverlayHandle, node: NodeId) -> Option<ManagerResponse> {
    match tokio::time::timeout(
        WHO_TIMEOUT,
        overlay.manager_request(node, ManagerRequest::Who),
    )
    .await
    {
        Ok(Ok(answer)) => Some(answer),
        _ => None,
    }
}

/// What asking around for the manager found.
enum Found {
    /// A coordinator knows the leader.
    Leader(ManagerInfo),
    /// Nobody knows a leader, but this coordinator answers (and can say why:
    /// no quorum, an election).
    Alive(NodeId),
    Nothing,
}

/// Asks the believed manager, then the other coordinator-eligible nodes,
/// who leads the group; the first that knows answers.
async fn discover(overlay: &OverlayHandle) -> Found {
    let me = overlay.node_id();
    let mut asked = BTreeSet::new();
    let mut alive = None;
    let candidates = overlay.manager().into_iter().chain(eligible(overlay));
    for node in candidates {
        if node == me || !asked.insert(node) {
            continue;
        }
        match who(overlay, node).await {
            Some(ManagerResponse::Info(info)) => return Found::Leader(info),
            Some(ManagerResponse::Unavailable(_)) => {
                alive.get_or_insert(node);
            }
            _ => {}
        }
    }
    alive.map_or(Found::Nothing, Found::Alive)
}

/// Points this node's manager calls at `manager` and honours tickets from
/// every group member.
fn believe(overlay: &OverlayHandle, manager: NodeId, members: &[NodeId]) {
    if overlay.manager() != Some(manager) {
        info!(%manager, "sequence manager");
    }
    let mut trusted: BTreeSet<NodeId> = members.iter().copied().collect();
    trusted.insert(manager);
    overlay.set_trusted_managers(trusted);
    overlay.set_manager(Some(manager));
}

/// Keeps this node's belief about the manager current and, on a coordinator
/// node, runs the group's membership. Runs until aborted.
pub async fn run(
    overlay: OverlayHandle,
    service: Option<Arc<ManagerService>>,
    settings: GroupSettings,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut missing: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut next_follow = Instant::now();
    let mut picture = Picture::default();
    loop {
        tick.tick().await;
        let Some(service) = &service else {
            // A plain node asks each second until it knows a leader, then
            // rarely: it trusts every member's tickets, so a failover needs
            // no question, and its calls follow the members' redirects.
            if Instant::now() >= next_follow || overlay.manager().is_none() {
                let wait = match follow(&overlay).await {
                    Some(members) => {
                        picture.update(Some(members), eligible(&overlay));
                        picture.wait()
                    }
                    None => REFRESH,
                };
                next_follow = Instant::now() + wait;
            } else {
                picture.update(None, eligible(&overlay));
                next_follow = next_follow.min(Instant::now() + picture.wait());
            }
            continue;
        };
        // Raft streams from anyone but the group's members are refused
        // before they are read (none known yet: whoever founds the group).
        let members = service.members();
        overlay.set_raft_members((!members.is_empty()).then_some(members.as_slice()));
        if service.member().status().members.is_empty() && started.elapsed() >= SETTLE {
            maybe_form(service).await;
        }
        match service.leader() {
            Some(leader) => believe(&overlay, leader, &service.members()),
            None => {
                follow(&overlay).await;
            }
        }
        if service.member().is_leader() {
            lead(service, &settings, &mut missing).await;
        } else {
            missing.clear();
        }
    }
}

/// What a plain node knows of the group (the members the leader named) and
/// sees (the coordinator-eligible nodes in its view), and since when.
#[derive(Default)]
struct Picture {
    members: BTreeSet<NodeId>,
    eligible: Vec<NodeId>,
    changed_at: Option<Instant>,
}

impl Picture {
    fn update(&mut self, members: Option<BTreeSet<NodeId>>, eligible: Vec<NodeId>) {
        let members = members.unwrap_or_else(|| self.members.clone());
        if members != self.members || eligible != self.eligible {
            self.changed_at = Some(Instant::now());
        }
        self.members = members;
        self.eligible = eligible;
    }

    /// Settled: every eligible node is a member and every member is in view.
    fn settled(&self) -> bool {
        self.eligible.len() == self.members.len()
            && self.eligible.iter().all(|n| self.members.contains(n))
    }

    /// How long until the leader should be asked again.
    fn wait(&self) -> Duration {
        let recent = self
            .changed_at
            .is_some_and(|at| at.elapsed() < UNSETTLED_PATIENCE);
        if !self.settled() && recent {
            FOLLOW_UNSETTLED
        } else {
            FOLLOW_KNOWN
        }
    }
}

/// A node outside the group (or a member during an election): learn the
/// manager from whoever knows it. Returns the group's members when a leader
/// answered.
async fn follow(overlay: &OverlayHandle) -> Option<BTreeSet<NodeId>> {
    match discover(overlay).await {
        Found::Leader(info) => {
            believe(overlay, info.manager, &info.members);
            let mut members: BTreeSet<NodeId> = info.members.iter().copied().collect();
            members.insert(info.manager);
            return Some(members);
        }
        // Calls go where they are answered with the reason nobody serves,
        // not to a manager that is gone.
        Found::Alive(node) => {
            if overlay.manager() != Some(node) {
                debug!(%node, "no leader known; asking a coordinator that answers");
                overlay.set_manager(Some(node));
            }
        }
        Found::Nothing => {
            if overlay.manager().is_none()
                && let Some(guess) = choose_manager(overlay)
            {
                overlay.set_manager(Some(guess));
            }
        }
    }
    None
}

/// Forms a group of one if this node is the lowest eligible one and no
/// other eligible node reports a group.
async fn maybe_form(service: &ManagerService) {
    let overlay = service.overlay();
    let me = overlay.node_id();
    let eligible = eligible(overlay);
    if eligible.first() != Some(&me) {
        return;
    }
    for other in eligible.iter().filter(|n| **n != me) {
        match who(overlay, *other).await {
            Some(ManagerResponse::Refused(refusal)) if refusal.code == RefusalCode::NoGroup => {}
            answer => {
                debug!(node = %other, ?answer, "not forming a group: another coordinator may be in one");
                return;
            }
        }
    }
    let addr = overlay
        .listen_addrs()
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match service.member().form_alone(Member::new(&me, addr)).await {
        Ok(()) => info!("formed the coordinator group (one voter: this node)"),
        Err(err) => warn!(%err, "cannot form the coordinator group"),
    }
}

/// The leader's duties: the group's sealing key, node records, expiring
/// plans past their deadline, admitting eligible nodes and removing members
/// gone past the grace period.
async fn lead(
    service: &ManagerService,
    settings: &GroupSettings,
    missing: &mut BTreeMap<u64, Instant>,
) {
    if let Err(err) = service.ensure_group_key().await {
        warn!(%err, "cannot commit the group's sealing key");
        return;
    }
    let overlay = service.overlay();
    let now = strew_overlay::now_ms();
    service.sync_grid(now).await;
    let expired = service.expire_pending(now).await;
    if expired > 0 {
        info!(expired, "aborted planned backups past their deadline");
    }
    service.trim_log(now).await;
    let member = service.member();
    let me = overlay.node_id();
    let candidates: BTreeMap<NodeId, String> = overlay
        .peers()
        .into_iter()
        .filter(|p| p.coordinator_eligible)
        .map(|p| {
            let addr = p.listen_addrs.first().cloned().unwrap_or_default();
            (p.node_id, addr)
        })
        .collect();
    let status = member.status();
    let voters = status
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .count();
    for (node, addr) in &candidates {
        let known = status.members.iter().find(|m| m.raft_id == raft_id(node));
        match known {
            Some(m) if m.role == Role::Voter => continue,
            Some(_) if voters >= settings.config.voters => continue,
            _ => {}
        }
        match member.admit(node, addr.clone()).await {
            Ok(role) => {
                if known.is_none() || role == Role::Voter {
                    info!(%node, ?role, "admitted to the coordinator group");
                }
            }
            Err(err) => debug!(%node, %err, "admission deferred"),
        }
    }
    for m in &status.members {
        let Ok(node) = m.node_id.parse::<NodeId>() else {
            continue;
        };
        if node == me || candidates.contains_key(&node) {
            missing.remove(&m.raft_id);
            continue;
        }
        let since = *missing.entry(m.raft_id).or_insert_with(Instant::now);
        if since.elapsed() >= settings.grace {
            info!(%node, grace = ?settings.grace, "removing a coordinator gone from the grid");
            match member.remove(&node).await {
                Ok(()) => {
                    missing.remove(&m.raft_id);
                }
                Err(err) => warn!(%node, %err, "cannot remove a gone coordinator"),
            }
        }
    }
}
