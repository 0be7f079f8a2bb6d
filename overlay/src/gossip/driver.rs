//! Gossip's part of the event loop: publishing this node's announcement
//! (periodically and on a significant change of free space or load) and
//! admitting announcements heard from others into the grid view.
//!
//! Owns the admission gate, the announcement schedule and what was last
//! announced. Admission is applied here: the verdict is reported to
//! gossipsub, an accepted announcement enters the grid view and its addresses
//! Kademlia. It must not judge announcements itself (the gate in `gossip`
//! does) nor wait for anything: free space arrives as a number.

use std::sync::Arc;
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub};
use strew_coordinator::NodeId;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::announcement::{Announcement, FreshnessLimits, MAX_LISTEN_ADDRS, PROTOCOL_VERSION};
use crate::behaviour::Behaviour;
use crate::config::OverlayConfig;
use crate::gossip::{self, AnnouncementGate, Verdict};
use crate::handle::Shared;
use crate::peer;
use crate::runtime::now_ms;

/// Free space moving by this fraction of the allocation is a "significant change".
const SIGNIFICANT_FREE_CHANGE: f64 = 0.05;
/// Load moving by this much is a "significant change".
const SIGNIFICANT_LOAD_CHANGE: f32 = 0.25;
/// Announcements accepted per node in a burst before the gate ignores more.
const GATE_BURST: u32 = 5;

pub(crate) struct Gossip {
    shared: Arc<Shared>,
    key: Keypair,
    config: OverlayConfig,
    gate: AnnouncementGate,
    started: Instant,
    next_announce: Instant,
    /// Free bytes and load at the last successful announcement.
    last_announced: Option<(u64, f32, Instant)>,
}

impl Gossip {
    pub fn new(shared: Arc<Shared>, key: Keypair, config: OverlayConfig) -> Self {
        let gate = AnnouncementGate::new(
            FreshnessLimits::default(),
            GATE_BURST,
            (config.announce_interval / 4).max(Duration::from_millis(100)),
        )
        .with_new_nodes_per_ip(config.new_nodes_per_ip);
        Gossip {
            shared,
            key,
            config,
            gate,
            started: Instant::now(),
            next_announce: Instant::now(),
            last_announced: None,
        }
    }

    /// Announce at the next housekeeping tick.
    pub fn announce_soon(&mut self) {
        self.next_announce = Instant::now();
    }

    /// A connection is up: a node that never announced does so shortly.
    pub fn on_connected(&mut self) {
        if self.last_announced.is_none() {
            self.next_announce = Instant::now() + Duration::from_millis(300);
        }
    }

    pub fn on_event(&mut self, swarm: &mut Swarm<Behaviour>, event: gossipsub::Event) {
        if let gossipsub::Event::Message {
            propagation_source,
            message_id,
            message,
        } = event
        {
            let now = now_ms();
            let source = message.source.as_ref().and_then(peer::node_id_of);
            // What the delivering peer's connection showed (never what it claims).
            let via = peer::node_id_of(&propagation_source).and_then(|node| {
                self.shared
                    .grid
                    .read()
                    .ok()
                    .and_then(|g| g.observed_address(&node))
            });
            let verdict = self.gate.judge_from(source, &message.data, via, now);
            self.record_verdict(&verdict, Some(propagation_source));
            let acceptance = verdict.acceptance();
            let _ = swarm
                .behaviour_mut()
                .gossipsub
                .report_message_validation_result(&message_id, &propagation_source, acceptance);
            if let Verdict::Accept(ann) = verdict {
                self.learn(swarm, *ann, message.data, now);
            }
        }
    }

    /// Runs the gate on one announcement that did not come through gossipsub
    /// (grid sync); on acceptance updates the grid view and the address book.
    /// Returns whether it was accepted.
    pub fn admit(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        source: Option<NodeId>,
        bytes: Vec<u8>,
        now: u64,
    ) -> bool {
        let verdict = self.gate.judge(source, &bytes, now);
        self.record_verdict(&verdict, None);
        if let Verdict::Accept(ann) = verdict {
            self.learn(swarm, *ann, bytes, now);
            return true;
        }
        false
    }

    fn learn(&mut self, swarm: &mut Swarm<Behaviour>, ann: Announcement, bytes: Vec<u8>, now: u64) {
        if let Some(peer) = peer::peer_id_of(&ann.node()) {
            for addr in reachable_from_elsewhere(ann.multiaddrs()) {
                swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, without_p2p(&addr));
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
            Verdict::Ignore(kind, why) => {
                m.announcement(kind.label());
                debug!(?via, why = %why, "ignored announcement");
            }
            Verdict::Reject(err) => {
                m.announcement("rejected");
                warn!(?via, %err, "rejected invalid announcement");
            }
        }
    }

    /// Expires the grid view and the gate, and announces when due or when
    /// `free` or `load` moved significantly. `free` is `None` until the
    /// store's free space was first sampled: nothing is announced before.
    /// Expires the grid view, announces when due; returns the nodes that expired.
    pub fn housekeeping(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        free: Option<u64>,
        load: f32,
    ) -> Vec<NodeId> {
        let now = now_ms();
        let expired = match self.shared.grid.write() {
            Ok(mut grid) => grid.expire(now),
            Err(_) => Vec::new(),
        };
        for node in &expired {
            info!(%node, "node expired from the grid view (no announcement within its TTL)");
        }
        self.gate.expire(now);
        let grid_peers = self.shared.grid_size().saturating_sub(1);
        self.shared.metrics.grid_peers.set(grid_peers as i64);

        let Some(free) = free else {
            return expired;
        };
        let free = free.min(self.config.profile.storage_allocated);
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
            self.announce(swarm, free, load);
        }
        expired
    }

    fn announce(&mut self, swarm: &mut Swarm<Behaviour>, free: u64, load: f32) {
        let now = now_ms();
        let grid_size = self.shared.grid_size().max(1);
        let ttl = self.config.effective_ttl(grid_size);
        let p = &self.config.profile;
        let mut addrs: Vec<Multiaddr> = self
            .shared
            .listen_addrs
            .read()
            .map(|a| a.iter().map(without_p2p).collect())
            .unwrap_or_default();
        if addrs.is_empty() {
            addrs = swarm
                .listeners()
                .chain(swarm.external_addresses())
                .cloned()
                .collect();
        }
        let mut concrete: Vec<String> = reachable_from_elsewhere(addrs)
            .iter()
            .map(|a| a.to_string())
            .collect();
        concrete.truncate(MAX_LISTEN_ADDRS);
        let ann = Announcement {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.shared.node_id.0,
            issued_at: now,
            valid_for_secs: ttl
                .as_secs()
                .clamp(2, u64::from(crate::announcement::MAX_VALID_FOR_SECS))
                as u32,
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
            external_addrs: self
                .shared
                .external_addrs
                .read()
                .map(|a| {
                    a.iter()
                        .take(MAX_LISTEN_ADDRS)
                        .map(|a| without_p2p(a).to_string())
                        .filter(|a| a.len() <= crate::announcement::MAX_ADDR_LEN)
                        .collect()
                })
                .unwrap_or_default(),
            behind_nat: crate::reachability::Reachability::from_u8(
                self.shared
                    .reachability
                    .load(std::sync::atomic::Ordering::Relaxed),
            ) == crate::reachability::Reachability::Private,
            work_nonce: self.config.work_nonce,
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
        match swarm
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

/// Whether `addr` is a loopback address (127.0.0.0/8 or ::1).
pub(crate) fn is_loopback(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| match p {
        Protocol::Ip4(ip) => ip.is_loopback(),
        Protocol::Ip6(ip) => ip.is_loopback(),
        _ => false,
    })
}

/// The addresses worth telling other hosts: loopback ones only when the node
/// has nothing else (a grid on one machine); elsewhere a peer that dials
/// 127.0.0.1 reaches itself.
pub(crate) fn reachable_from_elsewhere(addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    if addrs.iter().all(is_loopback) {
        return addrs;
    }
    addrs.into_iter().filter(|a| !is_loopback(a)).collect()
}

/// `addr` without its trailing `/p2p/<peer>` part. A relay's `/p2p/<relay>`
/// before `/p2p-circuit` stays: without it the address leads nowhere.
pub(crate) fn without_p2p(addr: &Multiaddr) -> Multiaddr {
    let mut addr = addr.clone();
    if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
        addr.pop();
    }
    addr
}
