//! Room for newcomers among inbound connections.
//!
//! Owns the record of established inbound connections (oldest first) and the
//! choice of which to close when they near libp2p's hard inbound limit
//! ([`crate::behaviour::MAX_ESTABLISHED_INCOMING`]): the oldest connections of
//! peers this node does not know (not in its grid view, not a trusted
//! manager) go first, so a flood of fresh identities cannot keep an honest
//! newcomer out, while known peers keep their connections. It must not touch
//! the swarm (the event loop closes what this returns).

use std::collections::BTreeMap;

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// Inbound slots kept free below the hard limit for newcomers.
pub const NEWCOMER_SLOTS: usize = 64;

/// Established inbound connections, in the order they came.
#[derive(Debug, Default)]
pub struct Room {
    /// (arrival number, connection) → peer.
    inbound: BTreeMap<(u64, ConnectionId), PeerId>,
    by_connection: BTreeMap<ConnectionId, u64>,
    arrivals: u64,
}

impl Room {
    /// An inbound connection was established.
    pub fn on_inbound(&mut self, connection: ConnectionId, peer: PeerId) {
        self.arrivals += 1;
        self.inbound.insert((self.arrivals, connection), peer);
        self.by_connection.insert(connection, self.arrivals);
    }

    /// A connection (inbound or not) closed.
    pub fn on_closed(&mut self, connection: ConnectionId) {
        if let Some(n) = self.by_connection.remove(&connection) {
            self.inbound.remove(&(n, connection));
        }
    }

    /// Inbound connections held now.
    pub fn len(&self) -> usize {
        self.inbound.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inbound.is_empty()
    }

    /// The connections to close so at most `limit - NEWCOMER_SLOTS` inbound
    /// connections stay: the oldest of peers `known` says no to. Known
    /// peers are never chosen (if they alone fill the room, nothing is).
    pub fn to_evict(&self, limit: usize, known: impl Fn(&PeerId) -> bool) -> Vec<ConnectionId> {
        let keep = limit.saturating_sub(NEWCOMER_SLOTS);
        let excess = self.inbound.len().saturating_sub(keep);
        self.inbound
            .iter()
            .filter(|(_, peer)| !known(peer))
            .take(excess)
            .map(|((_, connection), _)| *connection)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_unknown_connections_make_room_and_known_peers_stay() {
        let mut room = Room::default();
        let known_peer = PeerId::random();
        let strangers: Vec<PeerId> = (0..NEWCOMER_SLOTS + 10).map(|_| PeerId::random()).collect();
        room.on_inbound(ConnectionId::new_unchecked(0), known_peer);
        for (i, peer) in strangers.iter().enumerate() {
            room.on_inbound(ConnectionId::new_unchecked(i + 1), *peer);
        }
        let limit = NEWCOMER_SLOTS + 5;
        let known = |p: &PeerId| *p == known_peer;
        // 75 held, 5 may stay: 70 go, the oldest strangers first, never the known peer.
        let evict = room.to_evict(limit, known);
        assert_eq!(evict.len(), room.len() - 5);
        assert_eq!(evict[0], ConnectionId::new_unchecked(1));
        assert!(!evict.contains(&ConnectionId::new_unchecked(0)));
        for c in &evict {
            room.on_closed(*c);
        }
        assert_eq!(room.len(), 5);
        assert!(room.to_evict(limit, known).is_empty());
        // Below the threshold nothing is closed.
        assert!(Room::default().to_evict(limit, known).is_empty());
    }
}
