//! The handle the rest of the node uses to talk to the running overlay, and
//! the read-mostly state it shares with the event loop.
//!
//! Owns [`OverlayHandle`] (cheap to clone), the command channel's messages,
//! and [`Shared`]: the grid view, listen addresses, the endpoints the node
//! plugs in, metrics and the per-target outbound slots. Everything here is
//! either a lock held for a moment or a bounded channel send; the handle never
//! touches the swarm, which only the event loop owns. The packet calls with
//! receipt and hash checks live next to their protocol (`packet::client`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use strew_coordinator::NodeId;
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::debug;

use crate::error::{OverlayError, RequestFailure};
use crate::grid::GridBook;
use crate::manager::{self, ManagerEndpoint, ManagerRequest, ManagerResponse};
use crate::metrics::OverlayMetrics;
use crate::outbound::{PeerSlots, Reply};
use crate::packet::{PacketRequest, PacketResponse, Refusal, TrustedManagers};
use crate::peer;
use crate::raft::RaftEndpoint;

/// Attempts of a request the target answered `Busy`, with doubling back-off from 100 ms.
const BUSY_ATTEMPTS: u32 = 5;

/// What callers ask of the event loop.
pub(crate) enum Command {
    Packet {
        target: PeerId,
        request: PacketRequest,
        reply: Reply<PacketResponse>,
    },
    Manager {
        target: PeerId,
        request: ManagerRequest,
        reply: Reply<ManagerResponse>,
    },
    Raft {
        target: PeerId,
        addr: Option<Multiaddr>,
        message: Vec<u8>,
        reply: Reply<Vec<u8>>,
    },
    Dial(Multiaddr),
}

/// State the event loop shares with handles (read-mostly).
pub(crate) struct Shared {
    pub node_id: NodeId,
    pub grid: RwLock<GridBook>,
    pub listen_addrs: RwLock<Vec<Multiaddr>>,
    /// External addresses others confirmed (swarm's confirmed external addresses).
    pub external_addrs: RwLock<Vec<Multiaddr>>,
    pub connected: AtomicUsize,
    pub managers: TrustedManagers,
    /// The sequence manager this node believes in.
    pub manager: RwLock<Option<NodeId>>,
    pub endpoint: RwLock<Option<Arc<dyn ManagerEndpoint>>>,
    pub raft: RwLock<Option<Arc<dyn RaftEndpoint>>>,
    /// Who may open raft streams (decided before they are read).
    pub raft_gate: crate::raft::RaftGate,
    pub metrics: OverlayMetrics,
    /// Per-target limit of outbound packet requests.
    pub slots: PeerSlots<NodeId>,
    /// The smallest ping RTT (µs) to each peer since the samples were last
    /// taken (location evidence); at most [`MAX_PENDING_RTT`] peers.
    pub rtt: std::sync::Mutex<BTreeMap<NodeId, u32>>,
    /// [`crate::reachability::Reachability`] as a number (the event loop writes it).
    pub reachability: std::sync::atomic::AtomicU8,
    pub shutdown: Notify,
    pub stopping: AtomicBool,
    pub reannounce: Notify,
    /// This node's own packet service: a request to itself (the leader
    /// auditing or deleting its own packets) is answered here, since a node
    /// cannot dial itself.
    pub local: crate::packet::PacketService,
}

/// Peers whose RTT samples wait to be taken; further peers wait for the next round.
pub const MAX_PENDING_RTT: usize = 256;

impl Shared {
    /// Records a ping RTT to `node` (the smallest since the last take wins).
    pub fn record_rtt(&self, node: NodeId, rtt: std::time::Duration) {
        let micros = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX).max(1);
        if let Ok(mut pending) = self.rtt.lock() {
            if let Some(old) = pending.get_mut(&node) {
                *old = (*old).min(micros);
            } else if pending.len() < MAX_PENDING_RTT {
                pending.insert(node, micros);
            }
        }
    }

    pub fn manager(&self) -> Option<NodeId> {
        self.manager.read().ok().and_then(|m| *m)
    }

    pub fn manager_endpoint(&self) -> Option<Arc<dyn ManagerEndpoint>> {
        self.endpoint.read().ok().and_then(|e| e.clone())
    }

    pub fn raft_endpoint(&self) -> Option<Arc<dyn RaftEndpoint>> {
        self.raft.read().ok().and_then(|e| e.clone())
    }

    pub fn grid_size(&self) -> usize {
        self.grid.read().map(|g| g.len()).unwrap_or(0)
    }
}

/// A cheap, cloneable handle to the running overlay.
#[derive(Clone)]
pub struct OverlayHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
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
    /// Reachable as far as this node can tell (liveness), not just announced.
    pub online: bool,
}

fn peer_of(target: NodeId) -> Result<PeerId, OverlayError> {
    peer::peer_id_of(&target).ok_or_else(|| OverlayError::Request {
        target,
        failure: RequestFailure::Unreachable("not a valid peer id".into()),
    })
}

impl OverlayHandle {
    /// Takes up to `max` pending RTT samples (smallest RTT per peer since
    /// the last take), leaving the rest for the next call.
    pub fn take_rtt_samples(&self, max: usize) -> Vec<(NodeId, u32)> {
        let Ok(mut pending) = self.shared.rtt.lock() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while out.len() < max {
            match pending.pop_first() {
                Some(sample) => out.push(sample),
                None => break,
            }
        }
        out
    }

    /// Whether other nodes can dial this one (AutoNAT).
    pub fn reachability(&self) -> crate::reachability::Reachability {
        crate::reachability::Reachability::from_u8(self.shared.reachability.load(Ordering::Relaxed))
    }

    /// The addresses others can use to reach this node: confirmed external
    /// addresses and addresses through relays (full, with `/p2p/<id>`).
    pub fn reachable_addrs(&self) -> Vec<Multiaddr> {
        let me = self.shared.node_id;
        let mut out: Vec<Multiaddr> = self
            .shared
            .external_addrs
            .read()
            .map(|a| a.clone())
            .unwrap_or_default();
        if let Ok(listen) = self.shared.listen_addrs.read() {
            out.extend(
                listen
                    .iter()
                    .filter(|a| crate::reachability::is_relayed(a))
                    .cloned(),
            );
        }
        out.sort();
        out.dedup();
        if let Some(peer) = peer::peer_id_of(&me) {
            for a in &mut out {
                if !matches!(a.iter().last(), Some(libp2p::multiaddr::Protocol::P2p(_))) {
                    a.push(libp2p::multiaddr::Protocol::P2p(peer));
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

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
                online: grid.is_online(&a.node()),
            })
            .collect()
    }

    /// The first listen address `node` announced, if it is in the grid view.
    pub fn announced_addr(&self, node: &NodeId) -> Option<String> {
        let grid = self.shared.grid.read().ok()?;
        grid.announcement(node)?.listen_addrs.first().cloned()
    }

    /// How often the grid view changed in what the sequence manager records
    /// (arrivals, departures, new locations or allocations); equal values
    /// mean nothing to sync.
    pub fn grid_generation(&self) -> u64 {
        self.shared.grid.read().map(|g| g.generation()).unwrap_or(0)
    }

    /// The proof-of-work nonce each node in the grid view announced.
    pub fn work_nonces(&self) -> std::collections::BTreeMap<NodeId, Option<u64>> {
        let Ok(grid) = self.shared.grid.read() else {
            return Default::default();
        };
        grid.announcements()
            .map(|a| (a.node(), a.work_nonce))
            .collect()
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
        self.shared.manager()
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
            let answer = manager::driver::answer(&self.shared, target, request);
            return Ok(manager::driver::guarded(answer).await);
        }
        let peer = peer_of(target)?;
        self.call(target, |reply| Command::Manager {
            target: peer,
            request,
            reply,
        })
        .await
    }

    /// Serves the raft protocol through `endpoint` (the node's member of the
    /// coordinator group), or stops serving it (`None`: messages are dropped).
    pub fn set_raft_endpoint(&self, endpoint: Option<Arc<dyn RaftEndpoint>>) {
        self.shared.raft_gate.set_serving(endpoint.is_some());
        if let Ok(mut e) = self.shared.raft.write() {
            *e = endpoint;
        }
    }

    /// The members of this node's coordinator group (`None`: not known
    /// yet). Raft streams from any other peer are refused before they are
    /// read.
    pub fn set_raft_members(&self, members: Option<&[NodeId]>) {
        self.shared.raft_gate.set_members(members);
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
        let peer = peer_of(target)?;
        self.call(target, |reply| Command::Raft {
            target: peer,
            addr,
            message,
            reply,
        })
        .await
    }

    /// The managers whose tickets this node honours (the coordinator group's
    /// members as last learned).
    pub fn trusted_managers(&self) -> BTreeSet<NodeId> {
        self.shared
            .managers
            .read()
            .map(|set| set.clone())
            .unwrap_or_default()
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

    /// Sends one raw packet-protocol request and returns the raw answer (no
    /// receipt or hash checks; [`put_packet`](Self::put_packet) and friends add them).
    pub async fn request(
        &self,
        target: NodeId,
        request: PacketRequest,
    ) -> Result<PacketResponse, OverlayError> {
        if target == self.shared.node_id {
            let local = self.shared.local.clone();
            return tokio::task::spawn_blocking(move || {
                local.handle(request, target, crate::runtime::now_ms())
            })
            .await
            .map_err(|_| OverlayError::Stopped);
        }
        let peer = peer_of(target)?;
        // Per-target concurrency limit: callers queue here rather than flood one peer.
        let _slot = self.shared.slots.acquire(target).await;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 1;
        loop {
            let request = request.clone();
            let answer = self
                .call(target, |reply| Command::Packet {
                    target: peer,
                    request,
                    reply,
                })
                .await?;
            if answer != PacketResponse::Refused(Refusal::Busy) || attempt >= BUSY_ATTEMPTS {
                return Ok(answer);
            }
            debug!(%target, attempt, ?backoff, "target busy, retrying");
            tokio::time::sleep(backoff).await;
            backoff *= 2;
            attempt += 1;
        }
    }

    /// Hands one request to the event loop and waits for its answer. A closed
    /// channel either way means the loop stopped.
    async fn call<T>(
        &self,
        target: NodeId,
        command: impl FnOnce(Reply<T>) -> Command,
    ) -> Result<T, OverlayError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(command(reply))
            .await
            .map_err(|_| OverlayError::Stopped)?;
        rx.await
            .map_err(|_| OverlayError::Stopped)?
            .map_err(|failure| OverlayError::Request { target, failure })
    }
}
