//! Who may open a raft stream, decided before a byte of it is read.
//!
//! Owns [`RaftGate`] (whether this node serves raft at all, and the members
//! of its coordinator group as the node last told it) and [`GateMarker`],
//! the connection-only behaviour that tells each connection's raft codec
//! which peer it speaks to. libp2p's request-response codec never sees the
//! remote peer, but the request-response behaviour clones its codec once per
//! connection, right when the connection is established; the composed
//! behaviour calls its members in field order, so the marker (the field
//! just before `raft`) records the peer and the codec's `Clone` takes it.
//! Each inbound stream's codec then asks the gate: a peer that is not a
//! member (or any peer, on a node that does not serve raft) has its stream
//! refused unread, holding no inbound budget. It must not decide
//! membership (the node's consensus does) nor read messages.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm, dummy,
};
use strew_coordinator::NodeId;

use crate::peer;

#[derive(Debug, Default)]
struct State {
    /// Whether this node serves raft (a coordinator group member runs).
    serving: bool,
    /// The group's members as this node knows them; `None`: not known yet
    /// (a member that has not joined a group accepts whoever founds it).
    members: Option<HashSet<PeerId>>,
    /// The peer of the connection being set up (read by the codec's clone).
    connecting: Option<PeerId>,
}

/// Shared by the event loop, the handle and every raft codec.
#[derive(Clone, Debug, Default)]
pub struct RaftGate {
    state: Arc<Mutex<State>>,
}

impl RaftGate {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves raft (a member runs) or not (every raft stream is refused unread).
    pub fn set_serving(&self, serving: bool) {
        self.lock().serving = serving;
    }

    /// The group's members (`None`: not known yet, anyone may speak).
    pub fn set_members(&self, members: Option<&[NodeId]>) {
        self.lock().members = members.map(|ids| ids.iter().filter_map(peer::peer_id_of).collect());
    }

    /// Whether `peer` may open a raft stream to this node now. An unknown
    /// peer (a codec not bound to a connection) may only while the group's
    /// members are not known.
    pub fn admits(&self, peer: Option<&PeerId>) -> bool {
        let state = self.lock();
        state.serving
            && match (&state.members, peer) {
                (None, _) => true,
                (Some(members), Some(peer)) => members.contains(peer),
                (Some(_), None) => false,
            }
    }

    pub(crate) fn connecting(&self, peer: PeerId) {
        self.lock().connecting = Some(peer);
    }

    pub(crate) fn connecting_peer(&self) -> Option<PeerId> {
        self.lock().connecting
    }
}

/// Records each new connection's peer in the gate just before the raft
/// behaviour builds that connection's handler (see the module doc).
#[derive(Debug)]
pub struct GateMarker {
    gate: RaftGate,
}

impl GateMarker {
    pub fn new(gate: RaftGate) -> Self {
        GateMarker { gate }
    }
}

impl NetworkBehaviour for GateMarker {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.gate.connecting(peer);
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.gate.connecting(peer);
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, _: FromSwarm) {}

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {}
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_members_pass_once_the_group_is_known() {
        let gate = RaftGate::default();
        let member = libp2p::identity::Keypair::generate_ed25519();
        let member_peer = member.public().to_peer_id();
        let stranger = PeerId::random();
        // Not serving: nobody.
        assert!(!gate.admits(Some(&member_peer)));
        gate.set_serving(true);
        // Serving, group not known: anyone (a new member's founder).
        assert!(gate.admits(Some(&stranger)));
        let id = peer::node_id_of(&member_peer).unwrap();
        gate.set_members(Some(&[id]));
        assert!(gate.admits(Some(&member_peer)));
        assert!(!gate.admits(Some(&stranger)));
        assert!(!gate.admits(None));
        gate.set_serving(false);
        assert!(!gate.admits(Some(&member_peer)));
    }
}
