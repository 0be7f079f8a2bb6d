//! Reachability: whether other nodes can dial this one, and what to do
//! when they cannot (SPEC R13).
//!
//! AutoNAT v2 (client and server on every node) tests the addresses
//! identify observed for this node: a server dials each back on a fresh
//! connection. A confirmed address makes the node `public`; a failed test,
//! or candidates left unconfirmed for [`UNCONFIRMED_FOR_PRIVATE`] (a NAT
//! that silently drops the dial-back makes the server give up before the
//! dial fails, and AutoNAT then reports nothing), with no confirmed address
//! make it `private`. A private node reserves a
//! slot on up to [`MAX_RELAYS`] relays (peers that offer the relay v2 hop
//! protocol, reached directly) and listens through them
//! (`…/p2p/<relay>/p2p-circuit`), so others can reach it; DCUtR then
//! upgrades such relayed connections to direct ones by hole punching.
//!
//! Relayed connections only coordinate: packets never travel over them
//! (the event loop refuses packet requests on them and sends none), and as
//! soon as a direct connection to a peer exists its relayed ones are closed.
//!
//! Owns the state behind those decisions (which connections are relayed,
//! which peers can relay, where this node listens through a relay); the
//! event loop routes events here and carries out the returned actions. It
//! must not touch the swarm itself.

use std::collections::{BTreeMap, BTreeSet};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// Relays a private node listens through at once.
pub const MAX_RELAYS: usize = 2;
/// Relay candidates remembered.
const MAX_CANDIDATES: usize = 8;
/// Failed AutoNAT tests (with no confirmed address) before a node counts as
/// private. AutoNAT v2 tests each candidate address once (again only when
/// identify reports it anew), so one failure with nothing confirmed is the evidence.
pub const FAILURES_FOR_PRIVATE: u32 = 1;
/// How long observed addresses may stay unconfirmed before the node counts
/// as private (AutoNAT tests one every 5 s and confirms within seconds).
pub const UNCONFIRMED_FOR_PRIVATE: std::time::Duration = std::time::Duration::from_secs(15);
/// Peers whose direct dial addresses are remembered (relay candidates come from them).
const MAX_DIRECT_ADDRS: usize = 1024;

/// Whether others can dial this node, as far as it knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reachability {
    /// Not tested yet (or no peer offers AutoNAT).
    Unknown,
    /// An address of this node was dialled back by another node.
    Public,
    /// Dial-backs failed and no address is confirmed: behind NAT or a firewall.
    Private,
}

impl Reachability {
    pub fn as_str(self) -> &'static str {
        match self {
            Reachability::Unknown => "unknown",
            Reachability::Public => "public",
            Reachability::Private => "private",
        }
    }

    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Reachability::Unknown => 0,
            Reachability::Public => 1,
            Reachability::Private => 2,
        }
    }

    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Reachability::Public,
            2 => Reachability::Private,
            _ => Reachability::Unknown,
        }
    }
}

/// Whether an address goes through a relay.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The reachability state of the event loop.
#[derive(Debug, Default)]
pub struct ReachabilityState {
    failures: u32,
    /// When identify first reported an observed address of this node.
    first_candidate: Option<std::time::Instant>,
    /// Candidates stayed unconfirmed for [`UNCONFIRMED_FOR_PRIVATE`].
    unconfirmed: bool,
    confirmed: usize,
    relayed: BTreeMap<ConnectionId, PeerId>,
    direct: BTreeMap<PeerId, BTreeSet<ConnectionId>>,
    /// The address this node dialled each peer at (a direct connection).
    dialled: BTreeMap<PeerId, Multiaddr>,
    /// Peers offering the relay hop protocol, at a direct address.
    candidates: BTreeMap<PeerId, Multiaddr>,
    /// Relays this node listens through (or asked to).
    listening_via: BTreeSet<PeerId>,
}

impl ReachabilityState {
    /// What the node knows now.
    pub fn status(&self) -> Reachability {
        if self.confirmed > 0 {
            Reachability::Public
        } else if self.failures >= FAILURES_FOR_PRIVATE || self.unconfirmed {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// An AutoNAT test of one of this node's addresses ended.
    pub fn on_test(&mut self, ok: bool) {
        if ok {
            self.failures = 0;
        } else {
            self.failures = self.failures.saturating_add(1);
        }
    }

    /// Identify reported an observed address of this node (a direct one).
    pub fn on_candidate(&mut self, now: std::time::Instant) {
        self.first_candidate.get_or_insert(now);
    }

    /// Time passes: candidates unconfirmed for long enough mean private.
    pub fn tick(&mut self, now: std::time::Instant) {
        if let Some(first) = self.first_candidate
            && self.confirmed == 0
            && now.duration_since(first) >= UNCONFIRMED_FOR_PRIVATE
        {
            self.unconfirmed = true;
        }
    }

    /// The swarm's confirmed external addresses changed; `count` remain.
    pub fn on_confirmed(&mut self, count: usize) {
        self.confirmed = count;
        if count > 0 {
            self.unconfirmed = false;
        }
    }

    /// A connection was established. Returns relayed connections to close
    /// (a direct one to the same peer now exists).
    pub fn on_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        remote: &Multiaddr,
        dialled: bool,
    ) -> Vec<ConnectionId> {
        if is_relayed(remote) {
            self.relayed.insert(connection, peer);
            if self.direct.get(&peer).is_some_and(|d| !d.is_empty()) {
                return vec![connection];
            }
            return Vec::new();
        }
        self.direct.entry(peer).or_default().insert(connection);
        if dialled && (self.dialled.len() < MAX_DIRECT_ADDRS || self.dialled.contains_key(&peer)) {
            self.dialled.insert(peer, remote.clone());
        }
        self.relayed
            .iter()
            .filter(|(_, p)| **p == peer)
            .map(|(c, _)| *c)
            .collect()
    }

    /// A connection closed.
    pub fn on_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        self.relayed.remove(&connection);
        if let Some(set) = self.direct.get_mut(&peer) {
            set.remove(&connection);
            if set.is_empty() {
                self.direct.remove(&peer);
            }
        }
    }

    /// Whether `connection` goes through a relay.
    pub fn is_relayed_connection(&self, connection: &ConnectionId) -> bool {
        self.relayed.contains_key(connection)
    }

    /// Whether the only connections to `peer` go through relays.
    pub fn relayed_only(&self, peer: &PeerId) -> bool {
        !self.direct.contains_key(peer) && self.relayed.values().any(|p| p == peer)
    }

    /// Whether a direct connection to `peer` is open.
    pub fn has_direct(&self, peer: &PeerId) -> bool {
        self.direct.contains_key(peer)
    }

    /// Identify told us `peer` offers (or not) the relay hop protocol.
    pub fn on_identified(&mut self, peer: PeerId, offers_relay: bool) {
        if !offers_relay {
            self.candidates.remove(&peer);
            return;
        }
        if self.candidates.len() >= MAX_CANDIDATES && !self.candidates.contains_key(&peer) {
            return;
        }
        if let Some(addr) = self.dialled.get(&peer) {
            let mut addr = addr.clone();
            if !addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
                addr.push(Protocol::P2p(peer));
            }
            self.candidates.insert(peer, addr);
        }
    }

    /// The relay addresses to listen on now: when private, through up to
    /// [`MAX_RELAYS`] candidates not used yet. Marks them used.
    pub fn relays_to_use(&mut self) -> Vec<Multiaddr> {
        if self.status() != Reachability::Private {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (peer, addr) in &self.candidates {
            if self.listening_via.len() + out.len() >= MAX_RELAYS {
                break;
            }
            if self.listening_via.contains(peer) {
                continue;
            }
            out.push((*peer, addr.clone().with(Protocol::P2pCircuit)));
        }
        out.into_iter()
            .map(|(peer, addr)| {
                self.listening_via.insert(peer);
                addr
            })
            .collect()
    }

    /// A relay listener closed (reservation lost): the relay may be used again later.
    pub fn on_relay_listener_closed(&mut self, addr: &Multiaddr) {
        let relay = addr
            .iter()
            .take_while(|p| !matches!(p, Protocol::P2pCircuit))
            .find_map(|p| match p {
                Protocol::P2p(peer) => Some(peer),
                _ => None,
            });
        if let Some(relay) = relay {
            self.listening_via.remove(&relay);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_node_listens_through_relays_and_drops_relayed_connections_once_direct() {
        let mut s = ReachabilityState::default();
        let relay = PeerId::random();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        assert!(
            s.on_established(relay, ConnectionId::new_unchecked(1), &addr, true)
                .is_empty()
        );
        s.on_identified(relay, true);
        assert!(s.relays_to_use().is_empty(), "not private yet");
        assert_eq!(s.status(), Reachability::Unknown);
        s.on_test(false);
        assert_eq!(s.status(), Reachability::Private);
        let via = s.relays_to_use();
        assert_eq!(via.len(), 1);
        assert!(is_relayed(&via[0]));
        assert!(s.relays_to_use().is_empty(), "asked once");

        let peer = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{relay}/p2p-circuit")
            .parse()
            .unwrap();
        let relayed = ConnectionId::new_unchecked(2);
        assert!(s.on_established(peer, relayed, &circuit, false).is_empty());
        assert!(s.relayed_only(&peer));
        assert!(s.is_relayed_connection(&relayed));
        let direct: Multiaddr = "/ip4/192.0.2.7/tcp/5000".parse().unwrap();
        let close = s.on_established(peer, ConnectionId::new_unchecked(3), &direct, false);
        assert_eq!(
            close,
            vec![relayed],
            "hole punched: the relayed connection goes"
        );
        assert!(!s.relayed_only(&peer));

        s.on_confirmed(1);
        assert_eq!(s.status(), Reachability::Public);
    }

    #[test]
    fn candidates_left_unconfirmed_mean_private() {
        let mut s = ReachabilityState::default();
        let start = std::time::Instant::now();
        s.tick(start + UNCONFIRMED_FOR_PRIVATE * 2);
        assert_eq!(
            s.status(),
            Reachability::Unknown,
            "no candidate, no verdict"
        );
        s.on_candidate(start);
        s.tick(start + UNCONFIRMED_FOR_PRIVATE / 2);
        assert_eq!(s.status(), Reachability::Unknown);
        s.tick(start + UNCONFIRMED_FOR_PRIVATE);
        assert_eq!(s.status(), Reachability::Private);
        s.on_confirmed(1);
        assert_eq!(s.status(), Reachability::Public);
    }
}
