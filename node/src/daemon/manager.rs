//! The sequence-manager service of a coordinator node: the coordinator
//! library's [`Manager`] (its state in `DATA_DIR/manager/manager.redb`)
//! behind the overlay's manager protocol, fed with the grid the overlay sees.
//!
//! Owns: which node is the manager (until the consensus group of the
//! replication issue elects one, the coordinator-eligible node with the
//! lowest NodeId in the grid view; every node applies the same rule, and a
//! node that is not the manager redirects callers), translating protocol
//! calls into manager calls with this process's clock and randomness, and
//! keeping the manager's view of nodes (joins, profile changes, offline)
//! in step with the overlay's gossip. Placement, sealing and records are the
//! coordinator's; transport is the overlay's.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::{Manager, ManagerConfig};
use strew_coordinator::seal::GroupKey;
use strew_coordinator::{NodeId, NodeProfile};
use strew_overlay::manager::{DryRunAnswer, ManagerInfo};
use strew_overlay::{Keypair, ManagerEndpoint, ManagerRequest, ManagerResponse, OverlayHandle};
use tracing::{debug, info, warn};

/// Directory of the manager's state inside the data dir.
pub const MANAGER_DIR: &str = "manager";
/// How often the manager choice and the manager's node view are refreshed.
pub const REFRESH: Duration = Duration::from_secs(1);

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
    Manager(#[source] strew_coordinator::ManagerError),
}

/// The sequence manager as this node serves it.
pub struct ManagerService {
    overlay: OverlayHandle,
    manager: Mutex<Manager>,
    rng: Mutex<StdRng>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ServiceError + '_ {
    move |source| ServiceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads the coordinator group's sealing key, creating it on first start.
fn group_key(dir: &Path) -> Result<GroupKey, ServiceError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
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
            let tmp = dir.join("group.key.tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            file.write_all(&key.0).map_err(io_err(&tmp))?;
            file.sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            Ok(key)
        }
        Err(e) => Err(io_err(&path)(e)),
    }
}

/// The manager every node should talk to: the coordinator-eligible node with
/// the lowest NodeId in the overlay's grid view.
pub fn choose_manager(overlay: &OverlayHandle) -> Option<NodeId> {
    overlay
        .with_grid_view(|view| {
            view.iter()
                .filter(|p| p.coordinator_eligible && p.online)
                .map(|p| p.node_id)
                .min()
        })
        .flatten()
}

impl ManagerService {
    /// Opens the manager state in `data_dir/manager`, signing tickets with `key`.
    pub fn open(
        data_dir: &Path,
        key: &Keypair,
        overlay: OverlayHandle,
    ) -> Result<Self, ServiceError> {
        let dir = data_dir.join(MANAGER_DIR);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let group = group_key(&dir)?;
        let signing =
            strew_overlay::packet::ticket::signing_key(key).ok_or(ServiceError::NotEd25519)?;
        let manager = Manager::open(
            &dir.join("manager.redb"),
            signing,
            group,
            ManagerConfig::default(),
        )
        .map_err(ServiceError::Manager)?;
        Ok(ManagerService {
            overlay,
            manager: Mutex::new(manager),
            rng: Mutex::new(StdRng::from_seed(rand::random())),
        })
    }

    fn node_id(&self) -> NodeId {
        self.overlay.node_id()
    }

    /// Brings the manager's node records in step with the overlay's grid
    /// view: new or changed nodes join, vanished ones go offline, returning
    /// ones come back. Writes only on change.
    pub fn sync_grid(&self, now: u64) {
        let Some(profiles) = self
            .overlay
            .with_grid_view(|v| v.iter().cloned().collect::<Vec<NodeProfile>>())
        else {
            return;
        };
        let mut manager = lock(&self.manager);
        let mut seen = std::collections::BTreeSet::new();
        for profile in profiles {
            seen.insert(profile.node_id);
            let changed = match manager.state().clients.get(&profile.node_id) {
                None => true,
                Some(known) => {
                    let k = &known.profile;
                    k.location != profile.location
                        || k.storage_allocated != profile.storage_allocated
                        || k.x25519_public != profile.x25519_public
                        || k.coordinator_eligible != profile.coordinator_eligible
                        || k.bandwidth_limit != profile.bandwidth_limit
                        || !k.online
                }
            };
            if changed {
                let id = profile.node_id;
                match manager.join(profile, None, now) {
                    Ok(()) => debug!(node = %id, "manager: node joined or updated"),
                    Err(err) => warn!(node = %id, %err, "manager: join refused"),
                }
            }
        }
        let gone: Vec<NodeId> = manager
            .state()
            .clients
            .iter()
            .filter(|(id, c)| c.profile.online && !seen.contains(id))
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            info!(node = %id, "manager: node left the grid view; it gets no new packets");
            if let Err(err) = manager.set_online(id, false, now) {
                warn!(node = %id, %err, "manager: cannot mark node offline");
            }
        }
    }

    /// Who the manager is and what it holds.
    pub fn info(&self) -> ManagerInfo {
        let manager = lock(&self.manager);
        let state = manager.state();
        ManagerInfo {
            manager: self.node_id(),
            nodes: state.clients.len() as u64,
            online: state.clients.values().filter(|c| c.profile.online).count() as u64,
            snapshots: state.snapshots.len() as u64,
            stored_bytes: state.targets.values().map(|t| t.bytes).sum(),
        }
    }

    fn answer(&self, requester: NodeId, request: ManagerRequest, now: u64) -> ManagerResponse {
        let refuse =
            |e: &dyn std::error::Error| ManagerResponse::Refused(super::jobs::error_text(e));
        let not_yours = || ManagerResponse::Refused("a node may only act for itself".into());
        match request {
            ManagerRequest::Who => ManagerResponse::Info(self.info()),
            ManagerRequest::Plan(req) => {
                if req.source != requester {
                    return not_yours();
                }
                let mut rng = lock(&self.rng);
                match lock(&self.manager).plan_backup(req, now, &mut *rng) {
                    Ok(decision) => ManagerResponse::Planned(decision),
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::DryRun(req) => {
                if req.source != requester {
                    return not_yours();
                }
                let mut rng = lock(&self.rng);
                match lock(&self.manager).preview_backup(&req, &mut *rng) {
                    Ok((uploads, reused)) => {
                        ManagerResponse::DryRun(DryRunAnswer { uploads, reused })
                    }
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::Commit(req) => {
                if req.source != requester {
                    return not_yours();
                }
                let mut rng = lock(&self.rng);
                match lock(&self.manager).commit_backup(req, now, &mut *rng) {
                    Ok(r) => ManagerResponse::Committed(r),
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::FetchSequence { snapshot } => {
                let mut rng = lock(&self.rng);
                match lock(&self.manager).fetch_sequence(requester, snapshot, &mut *rng) {
                    Ok(sealed) => ManagerResponse::Sequence(sealed),
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::List { set } => ManagerResponse::Snapshots(
                lock(&self.manager).list_snapshots(&requester, set.as_deref()),
            ),
            ManagerRequest::Forget { snapshot } => {
                match lock(&self.manager).forget(requester, snapshot, now) {
                    Ok(r) => ManagerResponse::Forgotten(r),
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::Abandon { pending_id } => {
                match lock(&self.manager).abandon(requester, pending_id, now) {
                    Ok(tickets) => ManagerResponse::Abandoned(tickets),
                    Err(e) => refuse(&e),
                }
            }
            ManagerRequest::RecordRestore { snapshot, outcome } => {
                match lock(&self.manager).record_restore(requester, snapshot, outcome, now) {
                    Ok(_) => ManagerResponse::Recorded,
                    Err(e) => refuse(&e),
                }
            }
        }
    }
}

impl ManagerEndpoint for ManagerService {
    fn handle(&self, requester: NodeId, request: ManagerRequest) -> ManagerResponse {
        let leader = self.overlay.manager();
        if leader != Some(self.node_id()) {
            return ManagerResponse::NotManager { leader };
        }
        let now = strew_overlay::now_ms();
        // A caller the manager has not heard of yet (its announcement is
        // still travelling): take its profile from the grid view now.
        if !matches!(request, ManagerRequest::Who)
            && !lock(&self.manager).state().clients.contains_key(&requester)
        {
            self.sync_grid(now);
        }
        self.answer(requester, request, now)
    }
}

/// Keeps this node's belief about the manager current (so targets honour
/// its tickets and clients know where to call) and, on a coordinator node,
/// the manager's node records. Runs until the overlay stops.
pub async fn run(overlay: OverlayHandle, service: Option<Arc<ManagerService>>) {
    let mut tick = tokio::time::interval(REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut current: Option<NodeId> = None;
    loop {
        tick.tick().await;
        let chosen = choose_manager(&overlay);
        if chosen.is_some() && chosen != current {
            info!(manager = ?chosen.map(|m| m.to_string()), "sequence manager");
            overlay.set_manager(chosen);
            current = chosen;
        }
        if let Some(service) = &service
            && chosen == Some(overlay.node_id())
        {
            let service = service.clone();
            let now = strew_overlay::now_ms();
            if tokio::task::spawn_blocking(move || service.sync_grid(now))
                .await
                .is_err()
            {
                warn!("manager grid sync task failed");
            }
        }
    }
}
