//! The coordinator group as the daemon runs it: who forms it, who is
//! admitted or removed, and every node's belief about the sequence manager.
//!
//! Owns the membership policy and announcing the leader. Membership: the
//! coordinator node holding the grid key (the founder, after `strew grid
//! create`) forms a group of one after a short settle time, unless a
//! certified coordinator of its grid already reports a group, and records the
//! grid root; the leader admits only coordinator-eligible nodes in gossip
//! that hold a grid-key certificate recorded in the replicated state (`strew
//! grid admit`) — voters up to the configured count, the rest learners —
//! removes at once a member whose certificate was revoked (`strew grid
//! remove`), and removes a member gone from gossip for longer than the grace
//! period. `--coordinator` only offers: nothing is admitted because it says
//! so. Leader: a coordinator takes it from its own member; any other node
//! asks coordinators `Who` and believes an answer only for the members whose
//! certificates chain to its pinned grid id (pinning it on first use), and
//! trusts tickets from exactly those certified members (so tickets signed by
//! a new leader are honoured after a failover). Raft streams are accepted
//! only from certified members. Also fetches the grid's convergence secret
//! once this node is admitted. Answering manager calls is
//! [`super::manager`]'s; raft itself is [`crate::consensus`]'s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strew_coordinator::{GridId, NodeId, trust::certified_members};
use strew_overlay::manager::ManagerInfo;
use strew_overlay::{ManagerRequest, ManagerResponse, OverlayHandle, RefusalCode};
use tracing::{debug, error, info, warn};

use super::manager::ManagerService;
use crate::consensus::{GroupConfig, MAX_VOTERS, Member, Role, raft_id};
use crate::grid::overlay::OverlayManager;
use crate::trust::GridTrust;

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
/// How often a node without the grid's convergence secret asks for it.
const SECRET_EVERY: Duration = Duration::from_secs(5);
/// How long one request for the convergence secret may take.
const SECRET_PATIENCE: Duration = Duration::from_secs(3);

/// Environment variables that tune the group (tests shorten the grace).
pub const ENV_VOTERS: &str = "STREW_GROUP_VOTERS";
pub const ENV_GRACE: &str = "STREW_GROUP_GRACE";
/// How often a plain node that knows the leader asks again (default
/// [`FOLLOW_KNOWN`]): also how long a removed coordinator's tickets may
/// still be honoured by plain nodes.
pub const ENV_FOLLOW: &str = "STREW_GROUP_FOLLOW";

/// The group's configuration as this daemon runs it.
#[derive(Clone, Debug)]
pub struct GroupSettings {
    pub config: GroupConfig,
    /// A member gone from gossip this long is removed (and replaced).
    pub grace: Duration,
    /// How often a plain node that knows the leader asks `Who` again.
    pub follow: Duration,
}

impl GroupSettings {
    /// Defaults, overridden by `STREW_GROUP_VOTERS` (1 to 5) and
    /// `STREW_GROUP_GRACE` (a duration such as `10m` or `20s`).
    pub fn from_env() -> Result<Self, String> {
        let mut settings = GroupSettings {
            config: GroupConfig::default(),
            grace: DEFAULT_GRACE,
            follow: FOLLOW_KNOWN,
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
        if let Ok(text) = std::env::var(ENV_FOLLOW) {
            let every = strew_coordinator::parse_duration(&text)
                .map_err(|e| format!("{ENV_FOLLOW}={text:?}: {e}"))?;
            if every < REFRESH {
                return Err(format!("{ENV_FOLLOW} must be at least 1s, not {text:?}"));
            }
            settings.follow = every;
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

/// A `Who` answer as this node believes it: the manager and the members
/// whose certificates chain to the pinned grid.
#[derive(Debug, Clone)]
pub struct Believed {
    pub grid: GridId,
    pub manager: NodeId,
    pub members: BTreeSet<NodeId>,
}

/// What this node believes of a `Who` answer: nothing unless it names a grid
/// (the pinned one, or — with none pinned — any: trust on first use), and
/// the manager holds a certificate of that grid. Members without a valid
/// certificate are left out.
pub fn verify_info(pinned: Option<GridId>, info: &ManagerInfo) -> Option<Believed> {
    let grid = info.grid_id?;
    if pinned.is_some_and(|p| p != grid) {
        return None;
    }
    let mut claimed = info.members.clone();
    claimed.push(info.manager);
    let members = certified_members(&grid, &claimed, &info.certificates);
    members.contains(&info.manager).then_some(Believed {
        grid,
        manager: info.manager,
        members,
    })
}

/// What asking around for the manager found.
enum Found {
    /// A coordinator knows the leader, and its answer is believed.
    Leader(Believed),
    /// Nobody knows a leader, but this coordinator answers (and can say why:
    /// no quorum, an election).
    Alive(NodeId),
    Nothing,
}

/// Asks the believed manager, then the other coordinator-eligible nodes,
/// who leads the group; the first believed answer wins (an answer whose
/// member list does not chain to the pinned grid is ignored).
async fn discover(overlay: &OverlayHandle, trust: &GridTrust) -> Found {
    let me = overlay.node_id();
    let mut asked = BTreeSet::new();
    let mut alive = None;
    let candidates = overlay.manager().into_iter().chain(eligible(overlay));
    for node in candidates {
        if node == me || !asked.insert(node) {
            continue;
        }
        match who(overlay, node).await {
            Some(ManagerResponse::Info(info)) => match verify_info(trust.grid(), &info) {
                Some(believed) => return Found::Leader(believed),
                None => debug!(
                    %node,
                    grid = ?info.grid_id,
                    "ignoring a member list without certificates of this node's grid"
                ),
            },
            Some(ManagerResponse::Unavailable(_)) => {
                alive.get_or_insert(node);
            }
            _ => {}
        }
    }
    alive.map_or(Found::Nothing, Found::Alive)
}

/// Points this node's manager calls at `manager` and honours tickets from
/// the certified members only (the manager among them or not).
fn believe(overlay: &OverlayHandle, manager: NodeId, certified: &BTreeSet<NodeId>) {
    if overlay.manager() != Some(manager) {
        info!(%manager, "sequence manager");
    }
    overlay.set_trusted_managers(certified.clone());
    overlay.set_manager(Some(manager));
}

/// Redeems the join token of `strew init --join` with the manager once one
/// is believed (at most every [`SECRET_EVERY`]); the token file is then kept
/// as redeemed.
async fn redeem_invite(overlay: &OverlayHandle, trust: &GridTrust, next: &mut Instant) {
    if Instant::now() < *next || overlay.manager().is_none() {
        return;
    }
    *next = Instant::now() + SECRET_EVERY;
    let invite = match crate::trust::pending_join(trust.data_dir()) {
        Ok(Some(invite)) => invite,
        Ok(None) => return,
        Err(err) => {
            warn!(%err, "cannot read the join token");
            return;
        }
    };
    let manager = OverlayManager::new(overlay.clone()).with_patience(SECRET_PATIENCE);
    match manager.record_trust(ManagerRequest::Redeem(invite)).await {
        Ok(()) => {
            info!("joined the closed grid with the join token");
            if let Err(err) = crate::trust::joined(trust.data_dir()) {
                warn!(%err, "cannot mark the join token redeemed");
            }
        }
        // The grid key's signature or the invitation itself is refused
        // (used by another node, expired, another grid): asking again
        // cannot help; the token is set aside.
        Err(crate::grid::GridError::Refused(refusal)) if refusal.code == RefusalCode::Untrusted => {
            error!(%refusal, "the join token was refused; ask the grid's owner for a new one");
            let from = trust.data_dir().join(crate::trust::JOIN_FILE);
            let to = trust.data_dir().join("join-token.refused");
            if let Err(err) = std::fs::rename(&from, &to) {
                warn!(%err, "cannot set the refused join token aside");
            }
        }
        Err(err) => {
            warn!(err = %crate::grid::error_text(&err), "the join token was not redeemed yet")
        }
    }
}

/// Asks for the grid's convergence secret when this node lacks it, at most
/// every [`SECRET_EVERY`]: from the replicated root on a member, else from
/// the manager (which answers only nodes the grid admits).
async fn fetch_secret(
    overlay: &OverlayHandle,
    service: Option<&ManagerService>,
    trust: &GridTrust,
    next: &mut Instant,
) {
    if trust.local().convergence.is_some() || Instant::now() < *next {
        return;
    }
    *next = Instant::now() + SECRET_EVERY;
    let Some(grid) = trust.grid() else {
        return;
    };
    let from_state = service
        .and_then(|s| s.trust_state().root)
        .filter(|root| root.grid == grid)
        .map(|root| (root.convergence, root.open));
    let found = match from_state {
        Some(found) => Some(found),
        None => {
            if overlay.manager().is_none() {
                return;
            }
            let manager = OverlayManager::new(overlay.clone()).with_patience(SECRET_PATIENCE);
            match manager.grid_secret().await {
                Ok(secret) if secret.grid_id == grid => Some((secret.convergence, secret.open)),
                Ok(secret) => {
                    warn!(got = %secret.grid_id, %grid, "the manager sent another grid's secret; ignored");
                    None
                }
                Err(err) => {
                    debug!(%err, "no grid convergence secret yet");
                    None
                }
            }
        }
    };
    if let Some((secret, open)) = found {
        match trust.learn_convergence(&secret, open) {
            Ok(()) => info!(%grid, "received the grid's convergence secret"),
            Err(err) => warn!(%err, "cannot store the grid's convergence secret"),
        }
    }
}

/// Keeps this node's belief about the manager current and, on a coordinator
/// node, runs the group's membership. Runs until aborted.
pub async fn run(
    overlay: OverlayHandle,
    service: Option<Arc<ManagerService>>,
    settings: GroupSettings,
    trust: GridTrust,
) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let started = Instant::now();
    let mut missing: BTreeMap<u64, Instant> = BTreeMap::new();
    let mut next_follow = Instant::now();
    let mut next_secret = Instant::now();
    let mut next_redeem = Instant::now();
    let mut picture = Picture::default();
    // Certified members learnt from believed `Who` answers (a coordinator
    // not yet in the group accepts raft only from them).
    let mut learnt: BTreeSet<NodeId> = BTreeSet::new();
    loop {
        tick.tick().await;
        fetch_secret(&overlay, service.as_deref(), &trust, &mut next_secret).await;
        redeem_invite(&overlay, &trust, &mut next_redeem).await;
        let Some(service) = &service else {
            // A plain node asks each second until it knows a leader, then
            // rarely: it trusts every certified member's tickets, so a
            // failover needs no question, and its calls follow the members'
            // redirects.
            if Instant::now() >= next_follow || overlay.manager().is_none() {
                let wait = match follow(&overlay, &trust).await {
                    Some(members) => {
                        picture.update(Some(members), eligible(&overlay));
                        picture.wait(settings.follow)
                    }
                    None => REFRESH,
                };
                next_follow = Instant::now() + wait;
            } else {
                picture.update(None, eligible(&overlay));
                next_follow = next_follow.min(Instant::now() + picture.wait(settings.follow));
            }
            continue;
        };
        // Raft streams from anyone but certified members are refused
        // before they are read (a coordinator outside the group: the
        // certified members a believed `Who` answer named).
        let mut certified = service.certified();
        if certified.is_empty() {
            certified = learnt.clone();
        }
        let gate: Vec<NodeId> = certified.iter().copied().collect();
        overlay.set_raft_members(Some(&gate));
        if service.member().status().members.is_empty() && started.elapsed() >= SETTLE {
            maybe_form(service, &trust).await;
        }
        match service.leader() {
            Some(leader) => believe(&overlay, leader, &certified),
            None => {
                if let Some(members) = follow(&overlay, &trust).await {
                    learnt = members;
                }
            }
        }
        if service.member().is_leader() {
            if let Err(err) = service
                .ensure_grid_root(&trust, strew_overlay::now_ms())
                .await
            {
                warn!(%err, "cannot record the grid root");
            }
            if let Err(err) = service.ensure_grid_mode().await {
                warn!(%err, "cannot record the grid mode");
            }
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
    fn wait(&self, known: Duration) -> Duration {
        let recent = self
            .changed_at
            .is_some_and(|at| at.elapsed() < UNSETTLED_PATIENCE);
        if !self.settled() && recent {
            FOLLOW_UNSETTLED
        } else {
            known
        }
    }
}

/// A node outside the group (or a member during an election): learn the
/// manager from whoever knows it, believing only certified members (and
/// pinning the grid on first use). Returns the certified members when a
/// leader answered.
async fn follow(overlay: &OverlayHandle, trust: &GridTrust) -> Option<BTreeSet<NodeId>> {
    match discover(overlay, trust).await {
        Found::Leader(believed) => {
            match trust.pin_first_use(believed.grid) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(err) => {
                    warn!(%err, grid = %believed.grid, "cannot pin the grid");
                    return None;
                }
            }
            believe(overlay, believed.manager, &believed.members);
            return Some(believed.members);
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

/// Forms a group of one if this node holds the grid key (the founder) and
/// no certified coordinator of its grid reports a group.
async fn maybe_form(service: &ManagerService, trust: &GridTrust) {
    let overlay = service.overlay();
    let me = overlay.node_id();
    if trust.local().key.is_none() {
        return;
    }
    for other in eligible(overlay).iter().filter(|n| **n != me) {
        match who(overlay, *other).await {
            Some(ManagerResponse::Refused(refusal)) if refusal.code == RefusalCode::NoGroup => {}
            Some(ManagerResponse::Info(info)) if verify_info(trust.grid(), &info).is_some() => {
                debug!(node = %other, "not forming a group: a certified coordinator reports one");
                return;
            }
            Some(ManagerResponse::Unavailable(_)) => {
                debug!(node = %other, "not forming a group: another coordinator may be in one");
                return;
            }
            // Strangers' answers (and silence) do not stop the founder.
            _ => {}
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
/// plans past their deadline, admitting certified eligible nodes, removing
/// revoked members and members gone past the grace period.
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
    let lapsed = service.expire_subscriptions(now).await;
    if lapsed > 0 {
        info!(
            snapshots = lapsed,
            "forgot snapshots of sources whose subscription expired past the grace"
        );
    }
    service.trim_log(now).await;
    let member = service.member();
    let me = overlay.node_id();
    let certified = service.certified();
    let candidates: BTreeMap<NodeId, String> = overlay
        .peers()
        .into_iter()
        .filter(|p| p.coordinator_eligible && certified.contains(&p.node_id))
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
        // A revoked member leaves at once (the grid key said so); the
        // leader itself steps down by removing itself.
        if !certified.contains(&node) && service.trust_state().root.is_some() {
            info!(%node, "removing a coordinator whose certificate was revoked");
            match member.remove(&node).await {
                Ok(()) => {
                    missing.remove(&m.raft_id);
                }
                Err(err) => warn!(%node, %err, "cannot remove a revoked coordinator"),
            }
            continue;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;
    use strew_coordinator::MemberCert;
    use strew_coordinator::trust::grid_id_of;

    fn info(
        manager: NodeId,
        members: Vec<NodeId>,
        grid: Option<GridId>,
        certs: Vec<MemberCert>,
    ) -> ManagerInfo {
        ManagerInfo {
            manager,
            members,
            term: 1,
            nodes: 0,
            online: 0,
            snapshots: 0,
            stored_bytes: 0,
            repairs_pending: 0,
            grid_id: grid,
            certificates: certs,
            rebuilt_since: None,
        }
    }

    #[test]
    fn a_member_list_is_believed_only_with_certificates_of_the_pinned_grid() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let grid = grid_id_of(&key);
        let (leader, other, stranger) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let cert = |n| MemberCert::issue(&key, n, 5).expect("signs");
        // A forged list: no certificates at all.
        let forged = info(leader, vec![leader, stranger], Some(grid), Vec::new());
        assert!(verify_info(Some(grid), &forged).is_none());
        assert!(verify_info(None, &forged).is_none());
        // No grid named.
        assert!(verify_info(None, &info(leader, vec![leader], None, vec![cert(leader)])).is_none());
        // Another grid than the pinned one.
        let elsewhere = info(leader, vec![leader], Some(grid), vec![cert(leader)]);
        assert!(verify_info(Some(GridId([9; 32])), &elsewhere).is_none());
        // The manager itself uncertified.
        let headless = info(
            stranger,
            vec![leader, stranger],
            Some(grid),
            vec![cert(leader)],
        );
        assert!(verify_info(Some(grid), &headless).is_none());
        // A certified manager: only certified members are believed; with no
        // grid pinned the answer's grid is taken (trust on first use).
        let honest = info(
            leader,
            vec![leader, other, stranger],
            Some(grid),
            vec![cert(leader), cert(other)],
        );
        for pinned in [Some(grid), None] {
            let believed = verify_info(pinned, &honest).expect("believed");
            assert_eq!(believed.grid, grid);
            assert_eq!(believed.manager, leader);
            assert_eq!(believed.members, BTreeSet::from([leader, other]));
        }
    }
}
