//! The overlay's event loop: [`start`] builds the swarm (TCP + QUIC, Noise,
//! Yamux with frames sized for packets, see `muxer`), listens, dials the bootstrap addresses and spawns one task that
//! owns the swarm.
//!
//! Owns routing only: each swarm event and each command goes to the module
//! that owns its protocol (`discovery`, `gossip`, `sync`, `packet`, `manager`,
//! `raft` drivers), and each spawned piece of work reports back to its owner
//! through a bounded channel. The loop awaits nothing but its next event:
//! storage work runs on blocking threads, free space arrives through a
//! `watch` channel (`space`), endpoint answers run in spawned tasks. It must
//! not decide placement or interpret tickets (the coordinator does).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, SwarmEvent};
use libp2p::{PeerId, Swarm, noise, tcp, yamux};
use prometheus_client::registry::Registry;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

pub use crate::handle::{OverlayHandle, PeerInfo};

use crate::bandwidth::BandwidthLimiter;
use crate::behaviour::{Behaviour, BehaviourEvent};
use crate::config::OverlayConfig;
use crate::discovery::Discovery;
use crate::error::{OverlayError, RequestFailure};
use crate::gossip::driver::{Gossip, reachable_from_elsewhere};
use crate::grid::GridBook;
use crate::handle::{Command, Shared};
use crate::liveness::{Change, Liveness, ProbePolicy};
use crate::manager::driver::Manager;
use crate::metrics::OverlayMetrics;
use crate::outbound::PeerSlots;
use crate::packet::codec::PutGate;
use crate::packet::driver::{Limits, Packets};
use crate::packet::{PacketService, PacketStorage, TrustedManagers};
use crate::peer;
use crate::raft::driver::Raft;
use crate::reachability::{ReachabilityState, is_relayed};
use crate::room::Room;
use crate::space::{SpaceWatch, watch_space};
use crate::sync::driver::GridSync;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Bound of the command channel (callers wait when it is full: back-pressure).
const COMMAND_QUEUE: usize = 256;
/// How often expiry, announcements and metrics are looked at (and free space sampled).
const HOUSEKEEPING: Duration = Duration::from_millis(500);

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
    let managers: TrustedManagers = Arc::new(RwLock::new(BTreeSet::new()));
    // The gate and the service verify each ticket's signature once between them.
    let verified = crate::packet::ticket::VerifiedTickets::default();
    let gate = PutGate::new(node_id, managers.clone()).with_verified_tickets(verified.clone());
    let raft_gate = crate::raft::RaftGate::default();

    let (metrics, p2p_metrics, mut swarm) = match registry {
        Some(registry) => {
            let metrics = OverlayMetrics::register(registry);
            let swarm = build_swarm(
                &key,
                &config,
                limiter,
                (gate, raft_gate.clone()),
                Some(&mut *registry),
            )?;
            let p2p = libp2p::metrics::Metrics::new(registry);
            (metrics, Some(p2p), swarm)
        }
        None => (
            OverlayMetrics::default(),
            None,
            build_swarm(&key, &config, limiter, (gate, raft_gate.clone()), None)?,
        ),
    };
    for addr in &config.listen {
        swarm
            .listen_on(addr.clone())
            .map_err(|source| OverlayError::Listen {
                addr: addr.to_string(),
                source,
            })?;
    }

    let service = PacketService::new(
        key.clone(),
        node_id,
        config.max_packet_bytes,
        storage.clone(),
        managers.clone(),
    )
    .with_verified_tickets(verified);
    let shared = Arc::new(Shared {
        local: service.clone(),
        node_id,
        grid: RwLock::new(GridBook::with_max_nodes(config.max_grid_nodes)),
        listen_addrs: RwLock::new(Vec::new()),
        external_addrs: RwLock::new(Vec::new()),
        connected: AtomicUsize::new(0),
        managers: managers.clone(),
        manager: RwLock::new(None),
        endpoint: RwLock::new(None),
        raft: RwLock::new(None),
        raft_gate,
        metrics: metrics.clone(),
        slots: PeerSlots::new(config.max_streams_per_peer),
        shutdown: Notify::new(),
        stopping: AtomicBool::new(false),
        reannounce: Notify::new(),
        rtt: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        reachability: std::sync::atomic::AtomicU8::new(0),
    });
    let space = watch_space(storage.clone(), HOUSEKEEPING);
    let limits = Limits {
        request_timeout: config.request_timeout,
        max_inflight_per_peer: config.max_inflight_per_peer,
        max_inflight_total: config.max_inflight_total,
        reads: config.read_limit,
    };
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let liveness = Liveness::new(ProbePolicy {
        // The sequence manager's view decides placement: coordinator-eligible
        // nodes watch every node they know; others re-check their own contacts.
        watch_all: config.profile.coordinator_eligible,
        ..ProbePolicy::default()
    });
    let mut event_loop = EventLoop {
        liveness,
        swarm,
        shared: shared.clone(),
        commands,
        space,
        p2p_metrics,
        discovery: Discovery::new(config.bootstrap.clone(), config.bootstrap_retry),
        packets: Packets::new(service, metrics, limits),
        manager: Manager::new(shared.clone(), config.request_timeout),
        raft: Raft::new(shared.clone()),
        room: Room::default(),
        reach: ReachabilityState::default(),
        sync: GridSync::new(shared.clone(), config.peer_ttl),
        gossip: Gossip::new(shared.clone(), key, config),
    };
    event_loop.discovery.dial_bootstraps(&mut event_loop.swarm);
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
    (gate, raft_gate): (PutGate, crate::raft::RaftGate),
    registry: Option<&mut Registry>,
) -> Result<Swarm<Behaviour>, OverlayError> {
    let transport_err = |e: &dyn std::fmt::Display| OverlayError::Transport(e.to_string().into());
    let builder = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            crate::muxer::Config::default,
        )
        .map_err(|e| transport_err(&e))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| transport_err(&e))?;
    let idle = config.idle_connection_timeout;
    let swarm = match registry {
        Some(registry) => builder
            .with_bandwidth_metrics(registry)
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, config, limiter, gate, raft_gate, relay_client)
                    .map_err(Box::from)
            })
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
        None => builder
            .with_behaviour(|key, relay_client| {
                Behaviour::new(key, config, limiter, gate, raft_gate, relay_client)
                    .map_err(Box::from)
            })
            .map_err(|e| transport_err(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build(),
    };
    Ok(swarm)
}

struct EventLoop {
    swarm: Swarm<Behaviour>,
    shared: Arc<Shared>,
    commands: mpsc::Receiver<Command>,
    space: SpaceWatch,
    p2p_metrics: Option<libp2p::metrics::Metrics>,
    discovery: Discovery,
    gossip: Gossip,
    sync: GridSync,
    packets: Packets,
    manager: Manager,
    raft: Raft,
    liveness: Liveness,
    room: Room,
    reach: ReachabilityState,
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
                Some(served) = self.packets.next_served() => {
                    self.packets.on_served(&mut self.swarm.behaviour_mut().packets, served);
                }
                Some(answered) = self.manager.next_answered() => {
                    self.manager.on_answered(&mut self.swarm.behaviour_mut().manager, answered);
                }
                Some(answered) = self.raft.next_answered() => {
                    self.raft.on_answered(&mut self.swarm.behaviour_mut().raft, answered);
                }
                _ = housekeeping.tick() => self.housekeeping(),
                _ = shared.reannounce.notified() => self.gossip.announce_soon(),
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
        // Callers still waiting see `Stopped` once the drivers (and their
        // reply senders) drop with this loop.
    }

    fn on_command(&mut self, cmd: Command) {
        let rr = self.swarm.behaviour_mut();
        match cmd {
            Command::Packet {
                target,
                request,
                reply,
            } => {
                // Packets never travel through a relay: with only a relayed
                // connection (hole punching not done yet) the request fails
                // at once and a direct dial is tried for the next attempt.
                if self.reach.relayed_only(&target) {
                    let _ = self.swarm.dial(
                        DialOpts::peer_id(target)
                            .condition(PeerCondition::Always)
                            .build(),
                    );
                    let _ = reply.send(Err(RequestFailure::Unreachable(
                        "only a relayed connection to this target: packets never travel through a relay".into(),
                    )));
                } else {
                    self.packets.send(&mut rr.packets, target, request, reply)
                }
            }
            Command::Manager {
                target,
                request,
                reply,
            } => self.manager.send(&mut rr.manager, target, request, reply),
            Command::Raft {
                target,
                addr,
                message,
                reply,
            } => self
                .raft
                .send(&mut self.swarm, target, addr, message, reply),
            Command::Dial(addr) => {
                if let Err(err) = self.swarm.dial(addr.clone()) {
                    warn!(%addr, %err, "dial failed");
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        self.reach.tick(std::time::Instant::now());
        self.on_reachability();
        let readdressed = self
            .shared
            .grid
            .write()
            .map(|mut g| g.take_readdressed())
            .unwrap_or_default();
        for node in readdressed {
            self.liveness.addresses_changed(node, Instant::now());
        }
        let connected = self.shared.connected.load(Ordering::Relaxed);
        let m = &self.shared.metrics;
        m.connected_peers.set(connected as i64);
        let space = *self.space.borrow();
        if let Some(space) = space {
            m.store_capacity_bytes.set(space.capacity as i64);
            if let Some(free) = space.free {
                m.store_free_bytes.set(free as i64);
            }
        }
        self.discovery.housekeeping(&mut self.swarm, connected > 0);

        let now = Instant::now();
        self.packets.expire(now);
        self.manager.expire(now);
        self.raft.expire(now);

        // A store that could not say how much is free announces none.
        let free = space.map(|s| s.free.unwrap_or(0));
        let load = self.packets.load();
        let expired = self.gossip.housekeeping(&mut self.swarm, free, load);
        for gone in &expired {
            self.liveness.forget(gone);
        }
        self.sync
            .refresh_missing(&mut self.swarm, now.into_std(), &expired);
        self.probe(now);
    }

    /// Dials the nodes liveness says are due, with the addresses they announced.
    fn probe(&mut self, now: Instant) {
        let me = self.shared.node_id;
        let (due, addrs) = {
            let Ok(grid) = self.shared.grid.read() else {
                return;
            };
            let known = grid.announcements().map(|a| a.node()).filter(|n| *n != me);
            let due = self.liveness.due(known, now);
            let addrs: Vec<Vec<libp2p::Multiaddr>> = due
                .iter()
                .map(|n| {
                    grid.announcement(n)
                        .map(|a| reachable_from_elsewhere(a.multiaddrs()))
                        .unwrap_or_default()
                })
                .collect();
            (due, addrs)
        };
        for (node, addrs) in due.into_iter().zip(addrs) {
            let Some(peer) = peer::peer_id_of(&node) else {
                continue;
            };
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .build();
            if let Err(error) = self.swarm.dial(opts) {
                debug!(%node, %error, "liveness probe not started");
            }
        }
    }

    /// Applies a liveness change to the grid view (placement reads it).
    fn on_liveness(&mut self, change: Option<Change>) {
        let (node, reachable) = match change {
            Some(Change::Online(n)) => (n, true),
            Some(Change::Offline(n)) => (n, false),
            None => return,
        };
        let changed = self
            .shared
            .grid
            .write()
            .map(|mut g| g.set_reachable(&node, reachable))
            .unwrap_or(false);
        if changed {
            if reachable {
                info!(%node, "node reachable again");
            } else {
                info!(%node, "node unreachable: counted offline until it answers again");
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        if let Some(m) = &self.p2p_metrics {
            libp2p::metrics::Recorder::record(m, &event);
        }
        match event {
            SwarmEvent::Behaviour(event) => self.on_behaviour_event(event),
            SwarmEvent::NewListenAddr { address, .. } => {
                // Relayed listen addresses already end in this node's id.
                let full = if matches!(address.iter().last(), Some(Protocol::P2p(_))) {
                    address.clone()
                } else {
                    address
                        .clone()
                        .with(Protocol::P2p(*self.swarm.local_peer_id()))
                };
                info!(address = %full, "listening");
                if let Ok(mut addrs) = self.shared.listen_addrs.write()
                    && !addrs.contains(&full)
                {
                    addrs.push(full);
                }
                self.gossip.announce_soon();
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                info!(%address, "external address confirmed");
                if let Ok(mut addrs) = self.shared.external_addrs.write()
                    && !addrs.contains(&address)
                {
                    addrs.push(address);
                }
                // A relayed address is confirmed too (by the relay client):
                // it says nothing about being dialable directly.
                self.reach.on_confirmed(
                    self.swarm
                        .external_addresses()
                        .filter(|a| !is_relayed(a))
                        .count(),
                );
                self.on_reachability();
                self.gossip.announce_soon();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                if let Ok(mut addrs) = self.shared.external_addrs.write() {
                    addrs.retain(|a| a != &address);
                }
                // A relayed address is confirmed too (by the relay client):
                // it says nothing about being dialable directly.
                self.reach.on_confirmed(
                    self.swarm
                        .external_addresses()
                        .filter(|a| !is_relayed(a))
                        .count(),
                );
                self.on_reachability();
                self.gossip.announce_soon();
            }
            SwarmEvent::NewExternalAddrCandidate { address } if !is_relayed(&address) => {
                self.reach.on_candidate(std::time::Instant::now());
            }
            SwarmEvent::ListenerClosed { addresses, .. } => {
                for address in addresses.iter().filter(|a| is_relayed(a)) {
                    self.reach.on_relay_listener_closed(address);
                    if let Ok(mut addrs) = self.shared.listen_addrs.write() {
                        addrs.retain(|a| !a.iter().zip(address.iter()).all(|(x, y)| x == y));
                    }
                }
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                if let Ok(mut addrs) = self.shared.listen_addrs.write() {
                    addrs.retain(|a| !a.iter().zip(address.iter()).all(|(x, y)| x == y));
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if endpoint.is_listener() {
                    self.room.on_inbound(connection_id, peer_id);
                    self.make_room();
                }
                // Relayed connections only coordinate: once a direct one
                // exists (dialled or hole-punched), the relayed ones close.
                for relayed in self.reach.on_established(
                    peer_id,
                    connection_id,
                    endpoint.get_remote_address(),
                    endpoint.is_dialer(),
                ) {
                    debug!(peer = %peer_id, "direct connection up: closing the relayed one");
                    self.swarm.close_connection(relayed);
                }
                if num_established.get() == 1 {
                    self.shared.connected.fetch_add(1, Ordering::Relaxed);
                    debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "connected");
                }
                if let Some(node) = peer::node_id_of(&peer_id) {
                    let change = self.liveness.connected(node);
                    self.on_liveness(change);
                    // What the connection shows, not what the node claims:
                    // the failure domain placement uses (never a relay's address).
                    if let Some(ip) = peer::ip_of(endpoint.get_remote_address())
                        && let Ok(mut grid) = self.shared.grid.write()
                    {
                        grid.observe_address(node, ip);
                    }
                }
                self.sync.on_connected(&mut self.swarm, peer_id);
                self.discovery
                    .on_connected(&mut self.swarm, peer_id, endpoint.is_dialer());
                self.gossip.on_connected();
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.room.on_closed(connection_id);
                self.reach.on_closed(peer_id, connection_id);
                if num_established == 0 {
                    let before = self.shared.connected.fetch_sub(1, Ordering::Relaxed);
                    if before <= 1 {
                        self.sync.on_isolated();
                    }
                }
                if let Some(node) = peer::node_id_of(&peer_id) {
                    self.liveness.disconnected(node, Instant::now());
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
                self.discovery.on_dial_error(peer_id, &error);
                if let Some(peer) = peer_id {
                    self.on_unreachable(peer, &error);
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "listener error"),
            _ => {}
        }
    }

    /// Publishes the reachability and, on a private node, listens through
    /// relays it has not used yet.
    fn on_reachability(&mut self) {
        let status = self.reach.status();
        let before = self
            .shared
            .reachability
            .swap(status.to_u8(), Ordering::Relaxed);
        if before != status.to_u8() {
            info!(reachability = status.as_str(), "reachability changed");
            self.gossip.announce_soon();
        }
        for addr in self.reach.relays_to_use() {
            info!(relay = %addr, "behind NAT: listening through a relay");
            if let Err(err) = self.swarm.listen_on(addr.clone()) {
                warn!(relay = %addr, %err, "cannot listen through the relay");
                self.reach.on_relay_listener_closed(&addr);
            }
        }
    }

    /// Near the inbound limit, closes the oldest inbound connections of
    /// peers this node does not know (not in the grid view, not a trusted
    /// manager), keeping slots free for newcomers.
    fn make_room(&mut self) {
        let limit = crate::behaviour::MAX_ESTABLISHED_INCOMING as usize;
        if self.room.len() + crate::room::NEWCOMER_SLOTS < limit {
            return;
        }
        let managers = self
            .shared
            .managers
            .read()
            .map(|m| m.clone())
            .unwrap_or_default();
        let evict = match self.shared.grid.read() {
            Ok(grid) => self.room.to_evict(limit, |peer| {
                peer::node_id_of(peer).is_some_and(|node| {
                    managers.contains(&node) || grid.announcement(&node).is_some()
                })
            }),
            Err(_) => Vec::new(),
        };
        if !evict.is_empty() {
            debug!(
                closing = evict.len(),
                "inbound connections near the limit: closing the oldest of unknown peers"
            );
        }
        for connection in evict {
            self.swarm.close_connection(connection);
        }
    }

    /// A dial to `peer` failed: requests waiting for that connection fail
    /// now, with the dial error's words (libp2p's own failure carries none).
    fn on_unreachable(&mut self, peer: PeerId, error: &DialError) {
        // Another dial is under way (libp2p skips these too) or a connection is up.
        if matches!(error, DialError::DialPeerConditionFalse(_)) || self.swarm.is_connected(&peer) {
            return;
        }
        // This node's own limits refused the dial: says nothing about the peer.
        let local = matches!(
            error,
            DialError::LocalPeerId { .. } | DialError::Denied { .. } | DialError::Aborted
        );
        if !local && let Some(node) = peer::node_id_of(&peer) {
            let change = self.liveness.dial_failed(node, Instant::now());
            self.on_liveness(change);
        }
        let failure = RequestFailure::Unreachable(error.to_string());
        self.packets.fail_peer(&peer, &failure);
        self.manager.fail_peer(&peer, &failure);
        self.raft.fail_peer(&peer, &failure);
    }

    fn on_behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Gossipsub(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                self.gossip.on_event(&mut self.swarm, event);
            }
            BehaviourEvent::Identify(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                if let libp2p::identify::Event::Received { peer_id, info, .. } = &event {
                    let hop = info.protocols.contains(&libp2p::relay::HOP_PROTOCOL_NAME);
                    self.reach.on_identified(*peer_id, hop);
                    self.on_reachability();
                }
                self.discovery.on_identify(&mut self.swarm, event);
            }
            BehaviourEvent::Kad(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                self.discovery.on_kad(event);
            }
            BehaviourEvent::Ping(event) => {
                if let Some(m) = &self.p2p_metrics {
                    libp2p::metrics::Recorder::record(m, &event);
                }
                // A host that vanished without closing its sockets shows as a
                // failed ping: close the connection so liveness re-checks it.
                // (A peer without ping, e.g. a bare tool, is not a failure.)
                if let Ok(rtt) = event.result
                    && let Some(node) = peer::node_id_of(&event.peer)
                {
                    self.shared.record_rtt(node, rtt);
                }
                if let Err(failure) = &event.result
                    && !matches!(failure, libp2p::ping::Failure::Unsupported)
                {
                    debug!(peer = %event.peer, %failure, "ping failed: closing the connection");
                    self.swarm.close_connection(event.connection);
                }
            }
            BehaviourEvent::Limits(never) => match never {},
            BehaviourEvent::IpLimits(never) => match never {},
            BehaviourEvent::Packets(libp2p::request_response::Event::Message {
                peer,
                connection_id,
                message: libp2p::request_response::Message::Request { channel, .. },
            }) if self.reach.is_relayed_connection(&connection_id) => {
                debug!(%peer, "packet request over a relayed connection refused");
                let _ = self.swarm.behaviour_mut().packets.send_response(
                    channel,
                    crate::packet::PacketResponse::Refused(crate::packet::Refusal::Relayed),
                );
            }
            BehaviourEvent::Packets(event) => {
                self.packets
                    .on_event(&mut self.swarm.behaviour_mut().packets, event);
            }
            BehaviourEvent::RelayClient(event) => {
                info!(?event, "relay client");
            }
            BehaviourEvent::Relay(event) => {
                debug!(?event, "relay service");
            }
            BehaviourEvent::Dcutr(event) => match event.result {
                Ok(_) => {
                    info!(peer = %event.remote_peer_id, "hole punch succeeded: direct connection")
                }
                Err(err) => info!(peer = %event.remote_peer_id, %err, "hole punch failed"),
            },
            BehaviourEvent::Autonat(event) => {
                let ok = event.result.is_ok();
                match &event.result {
                    Ok(()) => {
                        info!(address = %event.tested_addr, server = %event.server, "AutoNAT: address confirmed dialable")
                    }
                    Err(err) => {
                        info!(address = %event.tested_addr, server = %event.server, %err, "AutoNAT: address not dialable")
                    }
                }
                self.reach.on_test(ok);
                self.on_reachability();
            }
            BehaviourEvent::AutonatServer(event) => {
                debug!(client = %event.client, address = %event.tested_addr, ok = event.result.is_ok(), "AutoNAT dial-back served");
            }
            BehaviourEvent::Sync(event) => {
                self.sync.on_event(&mut self.swarm, &mut self.gossip, event);
            }
            BehaviourEvent::Manager(event) => {
                self.manager
                    .on_event(&mut self.swarm.behaviour_mut().manager, event);
            }
            BehaviourEvent::Raft(event) => self.raft.on_event(event),
        }
    }
}
