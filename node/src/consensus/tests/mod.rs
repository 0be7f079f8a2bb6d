//! Tests of the coordinator group: real redb files in temp dirs, members
//! talking through the in-memory router. The harness ([`Cluster`]) starts,
//! kills and restarts members and records every (term, leader) pair their
//! metrics report.

mod chaos;
mod failover;
mod formation;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use openraft::ServerState;
use strew_coordinator::{
    Command, GeoPoint, GroupKey, ManagerConfig, ManagerState, NodeId, NodeProfile,
};
use tokio::task::JoinHandle;

use super::memory::MemoryRouter;
use super::replica::{ManagerReplica, ReplicationPosition};
use super::{Committed, ConsensusMember, GroupConfig, Member, WriteError, raft_id};

/// Short timings so elections and snapshots happen within a test.
pub(super) fn fast_config() -> GroupConfig {
    GroupConfig {
        cluster: "test".into(),
        heartbeat: Duration::from_millis(40),
        election_min: Duration::from_millis(150),
        election_max: Duration::from_millis(300),
        write_timeout: Duration::from_secs(2),
        snapshot_every: 20,
        keep_behind_snapshot: 5,
        voters: 3,
    }
}

/// The strew identity of test member `n`.
pub(super) fn node_id(n: u8) -> NodeId {
    NodeId(SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes())
}

pub(super) fn member(n: u8) -> Member {
    Member::new(&node_id(n), format!("/memory/{n}"))
}

/// A distinct grid node to join (not a group member).
pub(super) fn joiner(k: u32) -> NodeProfile {
    let mut seed = [0u8; 32];
    seed[..4].copy_from_slice(&k.to_be_bytes());
    seed[31] = 0xA5;
    let id = NodeId(SigningKey::from_bytes(&seed).verifying_key().to_bytes());
    let lat = -60.0 + f64::from(k % 120);
    let lon = -170.0 + f64::from((k * 7) % 340);
    NodeProfile::new(
        id,
        GeoPoint::new(lat, lon).expect("valid test location"),
        1 << 30,
        0,
    )
}

pub(super) fn join(k: u32) -> Command {
    Command::Join {
        profile: joiner(k),
        token: None,
        at: u64::from(k),
    }
}

struct Running {
    member: Arc<ConsensusMember>,
    watcher: JoinHandle<()>,
}

/// A group of test members over one router.
pub(super) struct Cluster {
    dir: tempfile::TempDir,
    pub router: MemoryRouter,
    config: GroupConfig,
    running: BTreeMap<u8, Running>,
    /// Every (term → leaders) pair any member's metrics reported. openraft
    /// runs in its default "advanced" leader-id mode: a leader id is
    /// `(term, node)`, totally ordered, so two members may both lead in one
    /// term (the later one wins, and log ids carry the node). Safety is
    /// therefore checked on the logs (acknowledged writes kept in order,
    /// members identical), not by "one leader per term".
    pub leaders: Arc<Mutex<BTreeMap<u64, BTreeSet<u64>>>>,
}

impl Cluster {
    pub fn new(config: GroupConfig) -> Cluster {
        Cluster {
            dir: tempfile::tempdir().expect("temp dir"),
            router: MemoryRouter::new(),
            config,
            running: BTreeMap::new(),
            leaders: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    fn paths(&self, n: u8) -> (PathBuf, PathBuf) {
        let dir = self.dir.path().join(format!("member-{n}"));
        std::fs::create_dir_all(&dir).expect("member dir");
        (dir.join("manager.redb"), dir.join("raft.redb"))
    }

    /// Opens member `n`'s manager, retrying while a killed predecessor's
    /// tasks still hold the file.
    async fn open_manager(&self, n: u8) -> ManagerReplica {
        let (path, _) = self.paths(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // Each member starts with its own local key: the group's replaces it.
            match ManagerReplica::open(
                &path,
                SigningKey::from_bytes(&[n; 32]),
                GroupKey([n; 32]),
                ManagerConfig::default(),
            )
            .await
            {
                Ok(m) => return m,
                Err(e) if Instant::now() > deadline => panic!("manager {n} does not open: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Starts (or restarts, on its files) member `n` and connects it.
    pub async fn start(&mut self, n: u8) -> Arc<ConsensusMember> {
        self.start_offline(n).await;
        self.connect(n);
        self.member(n)
    }

    /// Starts member `n` without connecting it to the router.
    pub async fn start_offline(&mut self, n: u8) {
        assert!(!self.running.contains_key(&n), "member {n} already runs");
        let manager = Arc::new(self.open_manager(n).await);
        let (_, log_path) = self.paths(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        let member = loop {
            match ConsensusMember::start(
                &node_id(n),
                &log_path,
                manager.clone(),
                Arc::new(self.router.clone()),
                self.config.clone(),
            )
            .await
            {
                Ok(m) => break Arc::new(m),
                Err(e) if Instant::now() > deadline => panic!("member {n} does not start: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let mut metrics = member.raft().metrics();
        let leaders = self.leaders.clone();
        let id = member.id();
        let watcher = tokio::spawn(async move {
            loop {
                {
                    let m = metrics.borrow_and_update();
                    if m.state == ServerState::Leader {
                        let mut seen = leaders.lock().unwrap_or_else(|e| e.into_inner());
                        seen.entry(m.current_term).or_default().insert(id);
                    }
                }
                if metrics.changed().await.is_err() {
                    break;
                }
            }
        });
        self.running.insert(n, Running { member, watcher });
    }

    pub fn connect(&self, n: u8) {
        let member = self.member(n);
        self.router.connect(member.id(), member.raft().clone());
    }

    /// Kills member `n`: unreachable at once, raft stopped, files kept.
    pub async fn kill(&mut self, n: u8) {
        let running = self.running.remove(&n).expect("kill a running member");
        self.router.disconnect(running.member.id());
        let _ = running.member.shutdown().await;
        running.watcher.abort();
    }

    pub fn member(&self, n: u8) -> Arc<ConsensusMember> {
        self.running
            .get(&n)
            .map(|r| r.member.clone())
            .expect("member runs")
    }

    pub fn running(&self) -> Vec<u8> {
        self.running.keys().copied().collect()
    }

    pub fn is_running(&self, n: u8) -> bool {
        self.running.contains_key(&n)
    }

    /// The running member that believes it leads in the highest term, if any.
    pub fn leader(&self) -> Option<u8> {
        self.running
            .iter()
            .filter_map(|(n, r)| {
                let m = r.member.raft().metrics().borrow().clone();
                (m.state == ServerState::Leader).then_some((m.current_term, *n))
            })
            .max()
            .map(|(_, n)| n)
    }

    /// Waits (up to `within`) for a leader among the running members.
    pub async fn await_leader(&self, within: Duration) -> Option<u8> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(n) = self.leader() {
                return Some(n);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Proposes `command` through whichever member leads, retrying across
    /// leader changes until `within` has passed.
    pub async fn write(&self, command: Command, within: Duration) -> Result<Committed, WriteError> {
        let deadline = Instant::now() + within;
        loop {
            let result = match self.leader() {
                Some(n) => self.member(n).execute(command.clone()).await,
                None => Err(WriteError::NotLeader { leader: None }),
            };
            match result {
                Ok(c) => return Ok(c),
                Err(e @ (WriteError::Fatal(_) | WriteError::Collision(_))) => return Err(e),
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(30)).await,
            }
        }
    }

    pub fn state(&self, n: u8) -> ManagerState {
        self.member(n).replica().read(|m| m.state().clone())
    }

    pub fn position(&self, n: u8) -> ReplicationPosition {
        self.member(n).replica().position()
    }

    pub fn last_applied(&self, n: u8) -> Option<u64> {
        self.member(n)
            .raft()
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
    }

    /// Waits until every running member has applied as far as the leader's
    /// log reaches; true when they did within `within`.
    pub async fn await_converged(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            let target = self
                .leader()
                .and_then(|n| self.member(n).raft().metrics().borrow().last_log_index);
            if let Some(target) = target
                && self
                    .running()
                    .iter()
                    .all(|&n| self.last_applied(n) == Some(target))
            {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn shutdown(mut self) {
        for n in self.running() {
            self.kill(n).await;
        }
    }
}

/// Forms a group of voters `1..=n` (leader 1).
pub(super) async fn formed(config: GroupConfig, n: u8) -> Cluster {
    let mut cluster = Cluster::new(config);
    for i in 1..=n {
        cluster.start(i).await;
    }
    let first = cluster.member(1);
    first
        .form_alone(member(1))
        .await
        .expect("group of one forms");
    assert_eq!(cluster.await_leader(Duration::from_secs(10)).await, Some(1));
    for i in 2..=n {
        first
            .admit(&node_id(i), member(i).addr)
            .await
            .expect("member admitted");
    }
    cluster
}

#[test]
fn raft_ids_are_the_node_id_prefix() {
    let id = node_id(1);
    let b = id.as_bytes();
    assert_eq!(
        raft_id(&id).to_be_bytes(),
        [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
    );
    assert_ne!(raft_id(&node_id(1)), raft_id(&node_id(2)));
}
