//! Finding and keeping peers: dialling the bootstrap addresses (and again
//! while this node has no peers, together with a few peers Kademlia's
//! routing table still remembers), refreshing Kademlia's routing table while
//! connected, and feeding identify's listen addresses to Kademlia.
//!
//! The routing table matters to a node that lost every connection while its
//! grid view expired (a laptop that slept longer than the peer TTL): the
//! founder of a grid has no bootstrap address, and its peers stopped
//! dialling it when its announcements stopped, so without the table it
//! would stay alone.
//!
//! Owns the bootstrap schedule and the set of bootstrap peers. It must not
//! look at strew's own protocols; what the grid view holds is gossip's.

use std::collections::BTreeSet;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::swarm::DialError;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::{Multiaddr, PeerId, Swarm, identify, kad};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, KAD_PROTOCOL};
use crate::gossip::driver::{reachable_from_elsewhere, without_p2p};

/// How often Kademlia's routing table is refreshed while connected.
const KAD_REFRESH: Duration = Duration::from_secs(300);
/// Peers from the routing table dialled at each retry while alone.
const ALONE_DIALS: usize = 8;

pub(crate) struct Discovery {
    bootstrap: Vec<Multiaddr>,
    retry: Duration,
    bootstrap_peers: BTreeSet<PeerId>,
    next_bootstrap: Instant,
    next_kad_refresh: Instant,
}

impl Discovery {
    pub fn new(bootstrap: Vec<Multiaddr>, retry: Duration) -> Self {
        Discovery {
            bootstrap,
            retry,
            bootstrap_peers: BTreeSet::new(),
            next_bootstrap: Instant::now(),
            next_kad_refresh: Instant::now() + KAD_REFRESH,
        }
    }

    pub fn dial_bootstraps(&mut self, swarm: &mut Swarm<Behaviour>) {
        for addr in &self.bootstrap {
            if let Some(Protocol::P2p(peer)) = addr.iter().last() {
                if peer == *swarm.local_peer_id() {
                    continue;
                }
                self.bootstrap_peers.insert(peer);
                swarm
                    .behaviour_mut()
                    .kad
                    .add_address(&peer, without_p2p(addr));
            }
            info!(%addr, "dialing bootstrap");
            if let Err(err) = swarm.dial(addr.clone()) {
                warn!(%addr, %err, "cannot dial bootstrap address");
            }
        }
        self.next_bootstrap = Instant::now() + self.retry;
    }

    /// Retries the bootstraps and a few remembered peers while alone,
    /// refreshes Kademlia while connected.
    pub fn housekeeping(&mut self, swarm: &mut Swarm<Behaviour>, connected: bool) {
        if !connected {
            if Instant::now() < self.next_bootstrap {
                return;
            }
            if !self.bootstrap.is_empty() {
                self.dial_bootstraps(swarm);
            }
            let remembered = remembered_peers(swarm, ALONE_DIALS);
            for (peer, addresses) in remembered {
                info!(%peer, "alone: dialing a peer the routing table remembers");
                let dial = DialOpts::peer_id(peer).addresses(addresses).build();
                if let Err(err) = swarm.dial(dial) {
                    debug!(%peer, %err, "cannot dial a remembered peer");
                }
            }
            self.next_bootstrap = Instant::now() + self.retry;
        } else if Instant::now() >= self.next_kad_refresh {
            let _ = swarm.behaviour_mut().kad.bootstrap();
            self.next_kad_refresh = Instant::now() + KAD_REFRESH;
        }
    }

    /// A connection is up: bootstrap Kademlia through it if we dialled it
    /// or it is a bootstrap peer.
    pub fn on_connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId, dialer: bool) {
        if dialer || self.bootstrap_peers.contains(&peer) {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
    }

    pub fn on_identify(&mut self, swarm: &mut Swarm<Behaviour>, event: identify::Event) {
        if let identify::Event::Received { peer_id, info, .. } = event {
            let speaks_kad = info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL);
            if speaks_kad {
                for addr in reachable_from_elsewhere(info.listen_addrs) {
                    swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
        }
    }

    pub fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::Bootstrap(Err(err)),
            ..
        } = event
        {
            debug!(?err, "kademlia bootstrap did not complete");
        }
    }

    /// Logs a failed dial (loudly for a bootstrap: the node may be alone).
    pub fn on_dial_error(&self, peer: Option<PeerId>, error: &DialError) {
        let is_bootstrap = peer.is_none_or(|p| self.bootstrap_peers.contains(&p));
        if is_bootstrap {
            warn!(
                ?peer,
                %error,
                retry_in = ?self.retry,
                "bootstrap unreachable; retrying while this node has no peers"
            );
        } else {
            debug!(?peer, %error, "outgoing connection failed");
        }
    }
}

/// Up to `limit` peers of Kademlia's routing table with the addresses it
/// holds for them (a dial that fails drops them from the table).
fn remembered_peers(swarm: &mut Swarm<Behaviour>, limit: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let me = *swarm.local_peer_id();
    let mut out = Vec::new();
    for bucket in swarm.behaviour_mut().kad.kbuckets() {
        for entry in bucket.iter() {
            if out.len() == limit {
                return out;
            }
            let peer = *entry.node.key.preimage();
            if peer != me {
                out.push((peer, entry.node.value.iter().cloned().collect()));
            }
        }
    }
    out
}
