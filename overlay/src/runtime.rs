//! The overlay's event loop and the handle the rest of the node uses.
//!
//! [`start`] builds the swarm (TCP + QUIC, Noise, Yamux), listens, dials the
//! bootstrap addresses and spawns one task that owns the swarm. That task never
//! blocks: storage work goes to `spawn_blocking` and comes back through a
//! bounded channel; callers talk to it through a bounded command channel.
//! Owns: announcing (periodic, on significant change), admitting announcements
//! into the grid view, grid sync, expiry, packet request routing with
//! concurrency limits, bootstrap retry and shutdown. It must not decide
//! placement or interpret tickets beyond checking them (the coordinator does).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, identify, kad, noise, tcp, yamux};
use prometheus_client::registry::Registry;
use strew_coordinator::{NodeId, PacketId};
use tokio::sync::{Notify, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::announcement::{Announcement, FreshnessLimits, PROTOCOL_VERSION};
use crate::bandwidth::BandwidthLimiter;
use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::config::OverlayConfig;
use crate::error::OverlayError;
use crate::gossip::{self, AnnouncementGate, Verdict};
use crate::grid::GridBook;
use crate::manager::{ManagerEndpoint, ManagerRequest, ManagerResponse};
use crate::metrics::OverlayMetrics;
use crate::packet::{
    PacketRequest, PacketResponse, PacketService, PacketStorage, Receipt, TrustedManagers,
};
use crate::peer;
use crate::raft::RaftEndpoint;
use crate::sync::{MAX_PAGE, SignedBytes, SyncRequest, SyncResponse};

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bound of the command channel (callers wait when it is full: back-pressure).
const COMMAND_QUEUE: usize = 256;
/// How often expiry, announcements and metrics are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(500);
/// Free space moving by this fraction of the allocation is a "significant change".
const SIGNIFICANT_FREE_CHANGE: f64 = 0.05;
/// How often Kademlia's routing table is refreshed while connected.
const KAD_REFRESH: Duration = Duration::from_secs(300);
/// Attempts of a request the target answered `Busy`, with doubling back-off from 100 ms.
const BUSY_ATTEMPTS: u32 = 5;
/// Peers a node pulls the grid view from after (re)joining.
const SYNC_PEERS: usize = 2;
/// Load moving by this much is a "significant change".
const SIGNIFICANT_LOAD_CHANGE: f32 = 0.25;

enum Command {
    Packet {
        target: PeerId,
        request: PacketRequest,
        reply: oneshot::Sender<Result<PacketResponse, String>>,
    },
    Manager {
        target: PeerId,
        request: ManagerRequest,
        reply: oneshot::Sender<Result<ManagerResponse, String>>,
    },
    Raft {
        target: PeerId,
        addr: Option<Multiaddr>,
        message: Vec<u8>,
        reply: oneshot::Sender<Result<Vec<u8>, String>>,
    },
    Dial(Multiaddr),
}

/// Manager calls being answered at once; further ones are told `Unavailable`.
const MAX_MANAGER_INFLIGHT: usize = 64;
/// Raft messages being answered at once; further ones are dropped (raft retries).
const MAX_RAFT_INFLIGHT: usize = 64;

/// State the event loop shares with handles (read-mostly).
struct Shared {
    node_id: NodeId,
    grid: RwLock<GridBook>,
    listen_addrs: RwLock<Vec<Multiaddr>>,
    connected: AtomicUsize,
    managers: TrustedManagers,
    manager: RwLock<Option<NodeId>>,
    endpoint: RwLock<Option<Arc<dyn ManagerEndpoint>>>,
    raft: RwLock<Option<Arc<dyn RaftEndpoint>>>,
    metrics: OverlayMetrics,
    per_peer_outbound: usize,
    outbound_slots: std::sync::Mutex<BTreeMap<NodeId, Arc<Semaphore>>>,
    shutdown: Notify,
    stopping: AtomicBool,
    reannounce: Notify,
}

/// A cheap, cloneable handle to the running overlay.
#[derive(Clone)]
pub struct OverlayHandle {
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for OverlayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverlayHandle")
            .field("node_id", &self.shared.node_id)
            .finish_non_exhaustive()
    }
}

/// A node as `strew peers` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub node_id: NodeId,
    pub lat: f64,
    pub lon: f64,
    pub storage_allocated: u64,
    pub free_bytes: u64,
    pub bandwidth_limit: u64,
    pub load: f32,
    pub uptime_secs: u64,
    pub coordinator_eligible: bool,
    pub protocol_version: u16,
    pub listen_addrs: Vec<String>,
    /// Unix ms when the node signed its latest announcement.
    pub announced_at: u64,
    /// Unix ms when this node drops the entry unless it hears again.
    pub expires_at: u64,
}

impl OverlayHandle {
    /// This node's id.
    pub fn node_id(&self) -> NodeId {
        self.shared.node_id
    }

    /// Addresses this node listens on, each ending in `/p2p/<node_id>`.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .listen_addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Distinct peers with an open connection.
    pub fn connected_peers(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    /// The grid view, other nodes only, ordered by NodeId.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let Ok(grid) = self.shared.grid.read() else {
            return Vec::new();
        };
        grid.announcements()
            .filter(|a| a.node() != self.shared.node_id)
            .map(|a| PeerInfo {
                node_id: a.node(),
                lat: a.lat,
                lon: a.lon,
                storage_allocated: a.storage_allocated,
                free_bytes: a.storage_free,
                bandwidth_limit: a.bandwidth_limit,
                load: a.load,
                uptime_secs: a.uptime_secs,
                coordinator_eligible: a.coordinator_eligible,
                protocol_version: a.protocol_version,
                listen_addrs: a.listen_addrs.clone(),
                announced_at: a.issued_at,
                expires_at: a.expires_at(),
            })
            .collect()
    }

    /// The first listen address `node` announced, if it is in the grid view.
    pub fn announced_addr(&self, node: &NodeId) -> Option<String> {
        let grid = self.shared.grid.read().ok()?;
        grid.announcement(node)?.listen_addrs.first().cloned()
    }

    /// Runs `f` on the coordinator's grid view (this node included once it announced).
    pub fn with_grid_view<R>(
        &self,
        f: impl FnOnce(&strew_coordinator::GridView) -> R,
    ) -> Option<R> {
        self.shared.grid.read().ok().map(|g| f(g.view()))
    }

    /// The sequence manager this node currently believes in (set by the coordinator side).
    pub fn manager(&self) -> Option<NodeId> {
        self.shared.manager.read().ok().and_then(|m| *m)
    }

    /// Records the current sequence manager; its tickets are honoured from now on.
    pub fn set_manager(&self, manager: Option<NodeId>) {
        if let Ok(mut m) = self.shared.manager.write() {
            *m = manager;
        }
        if let (Some(manager), Ok(mut set)) = (manager, self.shared.managers.write()) {
            set.insert(manager);
        }
    }

    /// Serves the manager protocol through `endpoint` (the node's sequence
    /// manager), or stops serving it (`None`: callers are redirected).
    pub fn set_manager_endpoint(&self, endpoint: Option<Arc<dyn ManagerEndpoint>>) {
        if let Ok(mut e) = self.shared.endpoint.write() {
            *e = endpoint;
        }
    }

    /// Sends one call to the sequence manager on `target` and returns its
    /// answer as is (redirects included: the caller decides where to retry).
    /// A call to this node itself goes straight to its endpoint.
    pub async fn manager_request(
        &self,
        target: NodeId,
        request: ManagerRequest,
    ) -> Result<ManagerResponse, OverlayError> {
        if target == self.shared.node_id {
            let shared = self.shared.clone();
            let me = self.shared.node_id;
            return tokio::task::spawn_blocking(move || answer_manager(&shared, me, request))
                .await
                .map_err(|e| OverlayError::Unreachable {
                    target,
                    detail: format!("manager task failed: {e}"),
                });
        }
        let peer = peer::peer_id_of(&target).ok_or_else(|| OverlayError::Unreachable {
            target,
            detail: "not a valid peer id".into(),
        })?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Manager {
                target: peer,
                request,
                reply,
            })
            .await
            .map_err(|_| OverlayError::Stopped)?;
        rx.await
            .map_err(|_| OverlayError::Stopped)?
            .map_err(|detail| OverlayError::Unreachable { target, detail })
    }

    /// Serves the raft protocol through `endpoint` (the node's member of the
    /// coordinator group), or stops serving it (`None`: messages are dropped).
    pub fn set_raft_endpoint(&self, endpoint: Option<Arc<dyn RaftEndpoint>>) {
        if let Ok(mut e) = self.shared.raft.write() {
            *e = endpoint;
        }
    }

    /// Sends one raft message to `target` (dialling `addr` first if given
    /// and not connected) and returns its reply bytes. The caller applies
    /// its own deadline; the overlay bounds the call at 30 s.
    pub async fn raft_request(
        &self,
        target: NodeId,
        addr: Option<Multiaddr>,
        message: Vec<u8>,
    ) -> Result<Vec<u8>, OverlayError> {
        let peer = peer::peer_id_of(&target).ok_or_else(|| OverlayError::Unreachable {
            target,
            detail: "not a valid peer id".into(),
        })?;
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::Raft {
                target: peer,
                addr,
                message,
                reply,
            })
            .await
            .map_err(|_| OverlayError::Stopped)?;
        rx.await
            .map_err(|_| OverlayError::Stopped)?
            .map_err(|detail| OverlayError::Unreachable { target, detail })
    }

    /// Replaces the set of managers whose tickets this node honours.
    pub fn set_trusted_managers(&self, managers: BTreeSet<NodeId>) {
        if let Ok(mut set) = self.shared.managers.write() {
            *set = managers;
        }
    }

    /// The metrics this overlay updates.
    pub fn metrics(&self) -> &OverlayMetrics {
        &self.shared.metrics
    }

    /// Asks the event loop to announce soon (e.g. after a big backup changed free space).
    pub fn reannounce(&self) {
        self.shared.reannounce.notify_one();
    }

    /// Dials an address (e.g. a late bootstrap).
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), OverlayError> {
        self.commands
            .send(Command::Dial(addr))
            .await
            .map_err(|_| OverlayError::Stopped)
    }

    /// Stops the event loop: listeners close, connections close.
    pub fn shutdown(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.shutdown.notify_one();
    }

    fn slots(&self, target: NodeId) -> Arc<Semaphore> {
        let Ok(mut map) = self.shared.outbound_slots.lock() else {
            return Arc::new(Semaphore::new(self.shared.per_peer_outbound));
        };
        map.entry(target)
            .or_insert_with(|| Arc::new(Semaphore::new(self.shared.per_peer_outbound)))
            .clone()
    }

    /// Sends one raw packet-protocol request and returns the raw answer (no
    /// receipt or hash checks; [`put_packet`](Self::put_packet) and friends add them).
    pub async fn request(
        &self,
        target: NodeId,
        request: PacketRequest,
    ) -> Result<PacketResponse, OverlayError> {
        let peer = peer::peer_id_of(&target).ok_or_else(|| OverlayError::Unreachable {
            target,
            detail: "not a valid peer id".into(),
        })?;
        // Per-target concurrency limit: callers queue here rather than flood one peer.
        let slots = self.slots(target);
        let _permit = slots.acquire().await.map_err(|_| OverlayError::Stopped)?;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let (reply, rx) = oneshot::channel();
            self.commands
                .send(Command::Packet {
                    target: peer,
                    request: request.clone(),
                    reply,
                })
                .await
                .map_err(|_| OverlayError::Stopped)?;
            let answer = rx
                .await
                .map_err(|_| OverlayError::Stopped)?
                .map_err(|detail| OverlayError::Unreachable { target, detail })?;
            if answer != PacketResponse::Refused(crate::packet::Refusal::Busy)
                || attempt >= BUSY_ATTEMPTS
            {
                return Ok(answer);
            }
            debug!(%target, attempt, ?backoff, "target busy, retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// Puts a packet on `target` under the manager's `ticket` (CBOR bytes of a
    /// `StorageTicket`, see `packet::ticket::encode`); returns the target's verified receipt.
    pub async fn put_packet(
        &self,
        target: NodeId,
        ticket: Vec<u8>,
        bytes: Vec<u8>,
    ) -> Result<Receipt, OverlayError> {
        let size = bytes.len() as u64;
        if size > crate::packet::MAX_PACKET_BYTES as u64 {
            return Err(OverlayError::TooLarge {
                size,
                limit: crate::packet::MAX_PACKET_BYTES as u64,
            });
        }
        let packet_id = PacketId::of(&bytes);
        let metrics = &self.shared.metrics;
        let res = self
            .request(
                target,
                PacketRequest::Put {
                    packet_id,
                    ticket,
                    bytes,
                },
            )
            .await;
        match res {
            Ok(PacketResponse::Stored(receipt)) => {
                if receipt.target != target
                    || receipt.packet_id != packet_id
                    || receipt.size != size
                    || !receipt.verify()
                {
                    metrics.packet("out", "put", "failed");
                    return Err(OverlayError::BadResponse {
                        target,
                        detail: "receipt does not match the packet or is not signed by the target"
                            .into(),
                    });
                }
                metrics.packet("out", "put", "ok");
                metrics.bytes("out", size as usize);
                Ok(receipt)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "put", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "put", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!("unexpected answer to put: {}", describe(&other)),
                })
            }
            Err(err) => {
                metrics.packet("out", "put", "failed");
                Err(err)
            }
        }
    }

    /// Fetches a packet from `target`; `Ok(None)` if the target does not hold it.
    /// The bytes are verified against `packet_id`.
    pub async fn get_packet(
        &self,
        target: NodeId,
        packet_id: PacketId,
    ) -> Result<Option<Vec<u8>>, OverlayError> {
        let metrics = &self.shared.metrics;
        match self.request(target, PacketRequest::Get { packet_id }).await {
            Ok(PacketResponse::Found(bytes)) => {
                if PacketId::of(&bytes) != packet_id {
                    metrics.packet("out", "get", "failed");
                    return Err(OverlayError::BadResponse {
                        target,
                        detail: format!("returned bytes do not hash to {packet_id}"),
                    });
                }
                metrics.packet("out", "get", "ok");
                metrics.bytes("in", bytes.len());
                Ok(Some(bytes))
            }
            Ok(PacketResponse::NotFound) => {
                metrics.packet("out", "get", "ok");
                Ok(None)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "get", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "get", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!("unexpected answer to get: {}", describe(&other)),
                })
            }
            Err(err) => {
                metrics.packet("out", "get", "failed");
                Err(err)
            }
        }
    }

    /// Deletes a packet on `target` under a manager ticket naming it; returns whether it existed.
    pub async fn delete_packet(
        &self,
        target: NodeId,
        packet_id: PacketId,
        ticket: Vec<u8>,
    ) -> Result<bool, OverlayError> {
        let metrics = &self.shared.metrics;
        match self
            .request(target, PacketRequest::Delete { packet_id, ticket })
            .await
        {
            Ok(PacketResponse::Deleted { existed }) => {
                metrics.packet("out", "delete", "ok");
                Ok(existed)
            }
            Ok(PacketResponse::Refused(reason)) => {
                metrics.packet("out", "delete", "refused");
                Err(OverlayError::Refused { target, reason })
            }
            Ok(other) => {
                metrics.packet("out", "delete", "failed");
                Err(OverlayError::BadResponse {
                    target,
                    detail: format!("unexpected answer to delete: {}", describe(&other)),
                })
            }
            Err(err) => {
                metrics.packet("out", "delete", "failed");
                Err(err)
            }
        }
    }
}

fn describe(res: &PacketResponse) -> &'static str {
    match res {
        PacketResponse::Stored(_) => "stored",
        PacketResponse::Found(_) => "found",
        PacketResponse::NotFound => "not found",
        PacketResponse::Deleted { .. } => "deleted",
        PacketResponse::Refused(_) => "refused",
    }
}

/// Builds the swarm, starts listening and dialing, and spawns the event loop.
/// Must be called inside a tokio runtime. `registry`, when given, receives
/// libp2p's and strew's metrics.
pub fn start(
    key: Keypair,
    config: OverlayConfig,
    storage: Arc<dyn PacketStorage>,
    registry: Option<&mut Registry>,
) -> Result<(OverlayHandle, JoinHandle<()>), OverlayError> {
    config.validate()?;
    let node_id = peer::node_id_of_key(&key.public())
        .ok_or_else(|| OverlayError::Config("the node identity must be an Ed25519 key".into()))?;
    let limiter = BandwidthLimiter::new(config.bandwidth);

    let (metrics, p2p_metrics, swarm) = match registry {
        Some(registry) => {
            let metrics = OverlayMetrics::register(registry);
            let swarm = build_swarm(&key, &config, limiter, Some(&mut *registry))?;
            let p2p = libp2p::metrics::Metrics::new(registry);
            (metrics, Some(p2p), swarm)
        }
        None => (
            OverlayMetrics::default(),
            None,
            build_swarm(&key, &config, limiter, None)?,
        ),
    };
    let mut swarm = swarm;
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| OverlayError::Listen {
                addr: addr.to_string(),
                source,
            })?;
    }

    let managers: TrustedManagers = Arc::new(RwLock::new(BTreeSet::new()));
    let shared = Arc::new(Shared {
        node_id,
        grid: RwLock::new(GridBook::default()),
        listen_addrs: RwLock::new(Vec::new()),
        connected: AtomicUsize::new(0),
        managers: managers.clone(),
        manager: RwLock::new(None),
        endpoint: RwLock::new(None),
        raft: RwLock::new(None),
        metrics,
        per_peer_outbound: config.max_streams_per_peer.max(1),
        outbound_slots: std::sync::Mutex::new(BTreeMap::new()),
        shutdown: Notify::new(),
        stopping: AtomicBool::new(false),
        reannounce: Notify::new(),
    });
    let service = PacketService::new(
        key.clone(),
        node_id,
        config.max_packet_bytes,
        storage,
        managers,
    );
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (done_tx, done) = mpsc::channel(config.max_inflight_total.max(1));
    let (manager_done_tx, manager_done) = mpsc::channel(MAX_MANAGER_INFLIGHT);
    let (raft_done_tx, raft_done) = mpsc::channel(MAX_RAFT_INFLIGHT);
    let gate = AnnouncementGate::new(
        FreshnessLimits::default(),
        5,
        (config.announce_interval / 4).max(Duration::from_millis(100)),
    );
    let mut event_loop = EventLoop {
        swarm,
        key,
        config,
        shared: shared.clone(),
        service,
        gate,
        commands,
        done,
        done_tx,
        pending: BTreeMap::new(),
        manager_pending: BTreeMap::new(),
        manager_done,
        manager_done_tx,
        manager_inflight: 0,
        raft_pending: BTreeMap::new(),
        raft_done,
        raft_done_tx,
        raft_inflight: 0,
        inflight_per_peer: BTreeMap::new(),
        inflight_total: 0,
        synced_with: BTreeSet::new(),
        p2p_metrics,
        started: Instant::now(),
        next_announce: Instant::now(),
        last_announced: None,
        next_bootstrap: Instant::now(),
        next_kad_refresh: Instant::now() + KAD_REFRESH,
        bootstrap_peers: BTreeSet::new(),
    };
    event_loop.dial_bootstraps();
    let task = tokio::spawn(async move { event_loop.run().await });
    Ok((
        OverlayHandle {
            commands: commands_tx,
            shared,
        },
        task,
    ))
}

fn build_swarm(
    key: &Keypair,
    config: &OverlayConfig,
    limiter: BandwidthLimiter,
    registry: Option<&mut Registry>,
) -> Result<Swarm<Behaviour>, OverlayError> {
    let transport_err = |e: &dyn std::fmt::Display| OverlayError::Transport(e.to_string().into());
    let builder = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_err(&e))?
        .with_quic();
    let idle = config.idle_connection_timeout;
    let swarm = match registry {
        Some(registry) => builder
            .with_bandwidth_metrics(registry)
            .with_behaviour(|key| Behaviour::new(key, config, limiter).map_err(Box::from))
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        None => builder
            .with_behaviour(|key| Behaviour::new(key, config, limiter).map_err(Box::from))
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

type Done = (
    PeerId,
    ResponseChannel<PacketResponse>,
    PacketResponse,
    &'static str,
    usize,
);

type ManagerDone = (PeerId, ResponseChannel<ManagerResponse>, ManagerResponse);
type RaftDone = (PeerId, ResponseChannel<Vec<u8>>, Option<Vec<u8>>);

/// Answers a manager call with the installed endpoint, or redirects.
fn answer_manager(shared: &Shared, requester: NodeId, request: ManagerRequest) -> ManagerResponse {
    let endpoint = shared.endpoint.read().ok().and_then(|e| e.clone());
    match endpoint {
        Some(endpoint) => endpoint.handle(requester, request),
        None => ManagerResponse::NotManager {
            leader: shared.manager.read().ok().and_then(|m| *m),
        },
    }
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    key: Keypair,
    config: OverlayConfig,
    shared: Arc<Shared>,
    service: PacketService,
    gate: AnnouncementGate,
    commands: mpsc::Receiver<Command>,
    done: mpsc::Receiver<Done>,
    done_tx: mpsc::Sender<Done>,
    pending: BTreeMap<OutboundRequestId, oneshot::Sender<Result<PacketResponse, String>>>,
    manager_pending: BTreeMap<OutboundRequestId, oneshot::Sender<Result<ManagerResponse, String>>>,
    manager_done: mpsc::Receiver<ManagerDone>,
    manager_done_tx: mpsc::Sender<ManagerDone>,
    manager_inflight: usize,
    raft_pending: BTreeMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, String>>>,
    raft_done: mpsc::Receiver<RaftDone>,
    raft_done_tx: mpsc::Sender<RaftDone>,
    raft_inflight: usize,
    inflight_per_peer: BTreeMap<PeerId, usize>,
    inflight_total: usize,
    synced_with: BTreeSet<PeerId>,
    p2p_metrics: Option<libp2p::metrics::Metrics>,
    started: Instant,
    next_announce: Instant,
    /// Free bytes and load at the last successful announcement.
    last_announced: Option<(u64, f32, Instant)>,
    next_bootstrap: Instant,
    next_kad_refresh: Instant,
    bootstrap_peers: BTreeSet<PeerId>,
}

impl EventLoop {
    async fn run(&mut self) {
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shared = self.shared.clone();
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(done) = self.done.recv() => self.on_done(done),
                Some(done) = self.manager_done.recv() => self.on_manager_done(done),
                Some(done) = self.raft_done.recv() => self.on_raft_done(done),
                _ = housekeeping.tick() => self.housekeeping().await,
                _ = shared.reannounce.notified() => self.next_announce = Instant::now(),
                _ = shared.shutdown.notified() => break,
            }
            if shared.stopping.load(Ordering::SeqCst) {
                break;
            }
        }
        info!("overlay stopping: closing connections");
        let peers: Vec<PeerId> = self.swarm.connected_peers().copied().collect();
        for p in peers {
            let _ = self.swarm.disconnect_peer_id(p);
        }
        for (_, reply) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err("overlay shut down".into()));
        }
        for (_, reply) in std::mem::take(&mut self.manager_pending) {
            let _ = reply.send(Err("overlay shut down".into()));
        }
        for (_, reply) in std::mem::take(&mut self.raft_pending) {
            let _ = reply.send(Err("overlay shut down".into()));
        }
    }

    fn dial_bootstraps(&mut self) {
        for addr in self.config.bootstrap.clone() {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                if peer == *self.swarm.local_peer_id() {
                    continue;
                }
                self.bootstrap_peers.insert(peer);
                let base: Multiaddr = addr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.swarm.behaviour_mut().kad.add_address(&peer, base);
            }
            info!(%addr, "dialing bootstrap");
            if let Err(err) = self.swarm.dial(addr.clone()) {
                warn!(%addr, %err, "cannot dial bootstrap address");
            }
        }
        self.next_bootstrap = Instant::now() + self.config.bootstrap_retry;
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Packet {
                target,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .packets
                    .send_request(&target, request);
                self.pending.insert(id, reply);
            }
            Command::Manager {
                target,
                request,
                reply,
            } => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .manager
                    .send_request(&target, request);
                self.manager_pending.insert(id, reply);
            }
            Command::Raft {
                target,
                addr,
                message,
                reply,
            } => {
                if let Some(addr) = addr
                    && !self.swarm.is_connected(&target)
                {
                    self.swarm.add_peer_address(target, addr);
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .raft
                    .send_request(&target, message);
                self.raft_pending.insert(id, reply);
            }
            Command::Dial(addr) => {
                if let Err(err) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, %err, "dial failed");
                }
            }
        }
    }

    fn on_manager_done(&mut self, (peer, channel, response): ManagerDone) {
        self.manager_inflight = self.manager_inflight.saturating_sub(1);
        if self
            .swarm
            .behaviour_mut()
            .manager
            .send_response(channel, response)
            .is_err()
        {
            debug!(%peer, "manager caller went away before the response");
        }
    }

    fn on_raft_done(&mut self, (peer, channel, reply): RaftDone) {
        self.raft_inflight = self.raft_inflight.saturating_sub(1);
        // No reply: dropping the channel closes the stream; the sender sees a failure.
        if let Some(reply) = reply
            && self
                .swarm
                .behaviour_mut()
                .raft
                .send_response(channel, reply)
                .is_err()
        {
            debug!(%peer, "raft sender went away before the reply");
        }
    }

    fn on_raft_event(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let endpoint = self.shared.raft.read().ok().and_then(|e| e.clone());
                    let (Some(sender), Some(endpoint)) = (peer::node_id_of(&peer), endpoint) else {
                        return;
                    };
                    if self.raft_inflight >= MAX_RAFT_INFLIGHT {
                        debug!(%peer, "raft endpoint busy; dropping a message");
                        return;
                    }
                    self.raft_inflight += 1;
                    let done = self.raft_done_tx.clone();
                    tokio::spawn(async move {
                        let reply = endpoint.handle(sender, request).await;
                        let _ = done.send((peer, channel, reply)).await;
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.raft_pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "raft message failed");
                if let Some(reply) = self.raft_pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "bad or failed inbound raft message");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_manager_event(
        &mut self,
        event: request_response::Event<ManagerRequest, ManagerResponse>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let Some(requester) = peer::node_id_of(&peer) else {
                        let _ = self.swarm.behaviour_mut().manager.send_response(
                            channel,
                            ManagerResponse::Refused("the caller is not an Ed25519 node".into()),
                        );
                        return;
                    };
                    if self.manager_inflight >= MAX_MANAGER_INFLIGHT {
                        let _ = self.swarm.behaviour_mut().manager.send_response(
                            channel,
                            ManagerResponse::Unavailable("the manager is busy; retry".into()),
                        );
                        return;
                    }
                    self.manager_inflight += 1;
                    debug!(%peer, kind = request.kind(), "manager call");
                    let shared = self.shared.clone();
                    let done = self.manager_done_tx.clone();
                    tokio::spawn(async move {
                        let response = tokio::task::spawn_blocking(move || {
                            answer_manager(&shared, requester, request)
                        })
                        .await
                        .unwrap_or_else(|err| {
                            ManagerResponse::Unavailable(format!("manager task failed: {err}"))
                        });
                        let _ = done.send((peer, channel, response)).await;
                    });
                }
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.manager_pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "manager call failed");
                if let Some(reply) = self.manager_pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                warn!(%peer, %error, "bad or failed inbound manager call");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_done(&mut self, (peer, channel, response, op, body_in): Done) {
        self.inflight_total = self.inflight_total.saturating_sub(1);
        if let Some(n) = self.inflight_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inflight_per_peer.remove(&peer);
            }
        }
        let m = &self.shared.metrics;
        m.inflight_requests.set(self.inflight_total as i64);
        let result = match &response {
            PacketResponse::Refused(reason) => {
                info!(peer = %peer, op, %reason, "refused packet request");
                "refused"
            }
            _ => "ok",
        };
        m.packet("in", op, result);
        if result == "ok" {
            m.bytes("in", body_in);
        }
        if let PacketResponse::Found(bytes) = &response {
            m.bytes("out", bytes.len());
        }
        if self
            .swarm
            .behaviour_mut()
            .packets
            .send_response(channel, response)
            .is_err()
        {
            debug!(%peer, "requester went away before the response");
        }
    }

    fn on_inbound_packet(
        &mut self,
        peer: PeerId,
        request: PacketRequest,
        channel: ResponseChannel<PacketResponse>,
    ) {
        let op = match &request {
            PacketRequest::Put { .. } => "put",
            PacketRequest::Get { .. } => "get",
            PacketRequest::Delete { .. } => "delete",
        };
        let per_peer = self.inflight_per_peer.get(&peer).copied().unwrap_or(0);
        if per_peer >= self.config.max_inflight_per_peer
            || self.inflight_total >= self.config.max_inflight_total
        {
            self.shared.metrics.packet("in", op, "busy");
            let _ = self.swarm.behaviour_mut().packets.send_response(
                channel,
                PacketResponse::Refused(crate::packet::Refusal::Busy),
            );
            return;
        }
        *self.inflight_per_peer.entry(peer).or_insert(0) += 1;
        self.inflight_total += 1;
        self.shared
            .metrics
            .inflight_requests
            .set(self.inflight_total as i64);
        let body_in = match &request {
            PacketRequest::Put { bytes, .. } => bytes.len(),
            _ => 0,
        };
        let service = self.service.clone();
        let done = self.done_tx.clone();
        tokio::spawn(async move {
            let response = tokio::task::spawn_blocking(move || service.handle(request, now_ms()))
                .await
                .unwrap_or_else(|err| {
                    PacketResponse::Refused(crate::packet::Refusal::StoreFailed(format!(
                        "storage task failed: {err}"
                    )))
                });
            // Capacity equals the in-flight limit, so this never waits long.
            let _ = done.send((peer, channel, response, op, body_in)).await;
        });
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.p2p_metrics {
            libp2p::metrics::Recorder::record(m, &event);
        }
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address
                    .clone()
                    .with(Protocol::P2p(*self.swarm.local_peer_id()));
                info!(address = %full, "listening");
                if let Ok(mut addrs) = self.shared.listen_addrs.write()
                    && !addrs.contains(&full)
                {
                    addrs.push(full);
                }
                self.next_announce = Instant::now();
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if let Ok(mut addrs) = self.shared.listen_addrs.write() {
                    addrs.retain(|a| !a.iter().zip(address.iter()).all(|(x, y)| x == y));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                endpoint,
                num_established,
                ..
            } => {
                if num_established.get() == 1 {
                    self.shared.connected.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                // Pull the grid view from the first few peers only: at 100k nodes a
                // full view is tens of MB, so syncing with every peer would be wasteful.
                if self.synced_with.len() < SYNC_PEERS && self.synced_with.insert(peer_id) {
                    self.swarm.behaviour_mut().sync.send_request(
                        &peer_id,
                        SyncRequest {
                            after: None,
                            limit: MAX_PAGE,
                        },
                    );
                }
                if self.bootstrap_peers.contains(&peer_id) || endpoint.is_dialer() {
                    let _ = self.swarm.behaviour_mut().kad.bootstrap();
                }
                if self.last_announced.is_none() {
                    self.next_announce = Instant::now() + Duration::from_millis(300);
                }
            }
            SwarmEvent::ConnectionClosed {
                num_established: 0, ..
            } => {
                let before = self.shared.connected.fetch_sub(1, Ordering::Relaxed);
                if before <= 1 {
                    // Cut off from the grid: sync afresh when we reconnect.
                    self.synced_with.clear();
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                warn!(from = %send_back_addr, %error, "rejected incoming connection");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                let is_bootstrap =
                    peer_id.is_some_and(|p| self.bootstrap_peers.contains(&p)) || peer_id.is_none();
                if is_bootstrap {
                    warn!(
                        peer = ?peer_id,
                        %error,
                        retry_in = ?self.config.bootstrap_retry,
                        "bootstrap unreachable; retrying while this node has no peers"
                    );
                } else {
                    debug!(peer = ?peer_id, %error, "outgoing connection failed");
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                self.on_gossip(event);
            }
            BehaviourEvent::Identify(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                if let identify::Event::Received { peer_id, info, .. } = event {
                    let speaks_kad = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
                    if speaks_kad {
                        for addr in info.listen_addrs {
                            self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                        }
                    }
                }
            }
            BehaviourEvent::Kad(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                if let kad::Event::OutboundQueryProgressed {
                    result: kad::QueryResult::Bootstrap(Err(err)),
                    ..
                } = event
                {
                    debug!(?err, "kademlia bootstrap did not complete");
                }
            }
            BehaviourEvent::Ping(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
            }
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::Packets(event) => self.on_packet_event(event),
            BehaviourEvent::Sync(event) => self.on_sync_event(event),
            BehaviourEvent::Manager(event) => self.on_manager_event(event),
            BehaviourEvent::Raft(event) => self.on_raft_event(event),
        }
    }

    fn on_packet_event(&mut self, event: request_response::Event<PacketRequest, PacketResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => self.on_inbound_packet(peer, request, channel),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(reply) = self.pending.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                debug!(%peer, %error, "packet request failed");
                if let Some(reply) = self.pending.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                warn!(%peer, %error, "bad or failed inbound packet request");
                self.shared.metrics.packet("in", "frame", "failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_sync_event(&mut self, event: request_response::Event<SyncRequest, SyncResponse>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let limit = request.limit.clamp(1, MAX_PAGE) as usize;
                    let (page, next) = match self.shared.grid.read() {
                        Ok(grid) => grid.page(request.after, limit),
                        Err(_) => (Vec::new(), None),
                    };
                    let response = SyncResponse {
                        announcements: page.into_iter().map(SignedBytes).collect(),
                        next,
                    };
                    if self
                        .swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response)
                        .is_err()
                    {
                        debug!(%peer, "sync requester went away");
                    }
                }
                request_response::Message::Response { response, .. } => {
                    let now = now_ms();
                    let mut accepted = 0usize;
                    for SignedBytes(bytes) in response.announcements {
                        let source = Announcement::verify(&bytes, now, &FreshnessLimits::default())
                            .ok()
                            .map(|a| a.node());
                        if source == Some(self.shared.node_id) {
                            continue;
                        }
                        if self.admit(source, bytes, now) {
                            accepted += 1;
                        }
                    }
                    debug!(%peer, accepted, "grid sync page");
                    if let Some(after) = response.next {
                        self.swarm.behaviour_mut().sync.send_request(
                            &peer,
                            SyncRequest {
                                after: Some(after),
                                limit: MAX_PAGE,
                            },
                        );
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "grid sync failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "bad inbound grid sync request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    /// Runs the gate on one announcement; on acceptance updates the grid view and
    /// the address book. Returns whether it was accepted.
    fn admit(&mut self, source: Option<NodeId>, bytes: Vec<u8>, now: u64) -> bool {
        let verdict = self.gate.judge(source, &bytes, now);
        self.record_verdict(&verdict, None);
        if let Verdict::Accept(ann) = verdict {
            self.learn(*ann, bytes, now);
            return true;
        }
        false
    }

    fn learn(&mut self, ann: Announcement, bytes: Vec<u8>, now: u64) {
        if let Some(peer) = peer::peer_id_of(&ann.node()) {
            for addr in ann.multiaddrs() {
                let base: Multiaddr = addr
                    .iter()
                    .filter(|p| !matches!(p, Protocol::P2p(_)))
                    .collect();
                self.swarm.behaviour_mut().kad.add_address(&peer, base);
            }
        }
        if let Ok(mut grid) = self.shared.grid.write() {
            if grid.announcement(&ann.node()).is_none() {
                info!(node = %ann.node(), lat = ann.lat, lon = ann.lon, "node joined the grid view");
            }
            grid.insert(ann, bytes, now);
        }
    }

    fn record_verdict(&self, verdict: &Verdict, via: Option<PeerId>) {
        let m = &self.shared.metrics;
        match verdict {
            Verdict::Accept(_) => m.announcement("accepted"),
            Verdict::Ignore(why) => {
                m.announcement("ignored");
                debug!(?via, why = %why, "ignored announcement");
            }
            Verdict::Reject(err) => {
                m.announcement("rejected");
                warn!(?via, %err, "rejected invalid announcement");
            }
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        if let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        {
            let now = now_ms();
            let source = message.source.as_ref().and_then(peer::node_id_of);
            let verdict = self.gate.judge(source, &message.data, now);
            self.record_verdict(&verdict, Some(propagation_source));
            let acceptance = verdict.acceptance();
            let _ = self
                .swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
            if let Verdict::Accept(ann) = verdict {
                self.learn(*ann, message.data, now);
            }
        }
    }

    async fn housekeeping(&mut self) {
        let now = now_ms();
        let expired = match self.shared.grid.write() {
            Ok(mut grid) => grid.expire(now),
            Err(_) => Vec::new(),
        };
        for node in expired {
            info!(%node, "node expired from the grid view (no announcement within its TTL)");
        }
        self.gate.expire(now);
        let grid_peers = self.grid_size().saturating_sub(1);
        self.shared.metrics.grid_peers.set(grid_peers as i64);
        self.shared
            .metrics
            .connected_peers
            .set(self.shared.connected.load(Ordering::Relaxed) as i64);

        if self.shared.connected.load(Ordering::Relaxed) == 0 {
            if !self.config.bootstrap.is_empty() && Instant::now() >= self.next_bootstrap {
                self.dial_bootstraps();
            }
        } else if Instant::now() >= self.next_kad_refresh {
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
            self.next_kad_refresh = Instant::now() + KAD_REFRESH;
        }

        let storage = self.service.storage().clone();
        let free = tokio::task::spawn_blocking(move || storage.free_bytes())
            .await
            .ok()
            .and_then(|r| r.ok());
        let capacity = self.service.storage().capacity();
        let m = &self.shared.metrics;
        m.store_capacity_bytes.set(capacity as i64);
        if let Some(free) = free {
            m.store_free_bytes.set(free as i64);
        }
        let free = free.unwrap_or(0).min(self.config.profile.storage_allocated);
        let load = (self.inflight_total as f32 / self.config.max_inflight_total.max(1) as f32)
            .clamp(0.0, 1.0);

        let significant = match self.last_announced {
            Some((last_free, last_load, at)) => {
                let alloc = self.config.profile.storage_allocated.max(1) as f64;
                let moved = (free as f64 - last_free as f64).abs() / alloc;
                let min_gap = self.config.announce_interval / 4;
                at.elapsed() >= min_gap
                    && (moved >= SIGNIFICANT_FREE_CHANGE
                        || (load - last_load).abs() >= SIGNIFICANT_LOAD_CHANGE)
            }
            None => false,
        };
        if Instant::now() >= self.next_announce || significant {
            self.announce(free, load);
        }
    }

    fn grid_size(&self) -> usize {
        self.shared.grid.read().map(|g| g.len()).unwrap_or(0)
    }

    fn announce(&mut self, free: u64, load: f32) {
        let now = now_ms();
        let grid_size = self.grid_size().max(1);
        let ttl = self.config.effective_ttl(grid_size);
        let p = &self.config.profile;
        let listen_addrs: Vec<String> = self
            .swarm
            .listeners()
            .chain(self.swarm.external_addresses())
            .map(|a| a.to_string())
            .collect();
        let mut concrete: Vec<String> = self
            .shared
            .listen_addrs
            .read()
            .map(|a| {
                a.iter()
                    .map(|m| {
                        m.iter()
                            .filter(|p| !matches!(p, Protocol::P2p(_)))
                            .collect::<Multiaddr>()
                            .to_string()
                    })
                    .collect()
            })
            .unwrap_or_default();
        if concrete.is_empty() {
            concrete = listen_addrs;
        }
        concrete.truncate(crate::announcement::MAX_LISTEN_ADDRS);
        let ann = Announcement {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.shared.node_id.0,
            issued_at: now,
            valid_for_secs: ttl.as_secs().clamp(2, u64::from(u32::MAX)) as u32,
            lat: p.lat,
            lon: p.lon,
            storage_allocated: p.storage_allocated,
            storage_free: free,
            bandwidth_limit: p.bandwidth_limit,
            load,
            uptime_secs: self.started.elapsed().as_secs(),
            coordinator_eligible: p.coordinator_eligible,
            x25519_public: p.x25519_public,
            listen_addrs: concrete,
        };
        let bytes = match ann.sign(&self.key) {
            Ok(b) => b,
            Err(err) => {
                warn!(%err, "cannot sign announcement");
                return;
            }
        };
        // Our own entry is always current in our view.
        if let Ok(mut grid) = self.shared.grid.write() {
            grid.insert(ann, bytes.clone(), now);
        }
        match self
            .swarm
            .behaviour_mut()
            .gossipsub
            .publish(gossip::topic(), bytes)
        {
            Ok(_) => {
                self.shared.metrics.announcements_published.inc();
                self.last_announced = Some((free, load, Instant::now()));
                let period = self.config.effective_interval(grid_size);
                self.next_announce = Instant::now() + period;
                debug!(?period, "announced");
            }
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                // Alone so far (first node of a grid, or still connecting): try again soon.
                self.next_announce = Instant::now() + Duration::from_secs(1);
            }
            Err(err) => {
                debug!(%err, "announcement not published");
                self.next_announce = Instant::now() + Duration::from_secs(1);
            }
        }
    }
}
