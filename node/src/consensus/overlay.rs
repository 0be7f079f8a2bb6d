//! The coordinator group's messages over the overlay's `/strew/raft/4`
//! protocol: the libp2p carrier of [`RaftTransport`] and the receiving side.
//!
//! Owns [`OverlayRaft`] (encode a request with [`super::wire`], send it to the
//! member's node at its currently announced address, decode its reply; remember which members answered lately,
//! so a refusal can say how many coordinators are reachable) and
//! [`RaftService`] (the overlay's [`RaftEndpoint`]: decode a message, hand it
//! to the local member with [`ConsensusMember::serve_from`] under the
//! sender's authenticated node id, encode the reply).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use strew_coordinator::NodeId;
use strew_overlay::{Multiaddr, OverlayError, OverlayHandle, RaftAnswer, RaftEndpoint};
use tracing::debug;

use super::group::ConsensusMember;
use super::network::{RaftTransport, TransportError};
use super::types::{Member, RaftId, raft_id};
use super::wire::{
    RaftReply, RaftRequest, WireError, decode_reply, decode_request, encode_reply, encode_request,
};

/// Sends raft requests to other members through the overlay.
pub struct OverlayRaft {
    overlay: OverlayHandle,
    /// When each member last answered a request or sent one.
    heard: Mutex<BTreeMap<RaftId, Instant>>,
}

impl OverlayRaft {
    pub fn new(overlay: OverlayHandle) -> Self {
        OverlayRaft {
            overlay,
            heard: Mutex::new(BTreeMap::new()),
        }
    }

    fn heard_from(&self, id: RaftId) {
        if let Ok(mut heard) = self.heard.lock() {
            heard.insert(id, Instant::now());
        }
    }

    /// Whether `id` answered or spoke within `window`.
    pub fn heard_within(&self, id: RaftId, window: Duration) -> bool {
        self.heard
            .lock()
            .ok()
            .and_then(|h| h.get(&id).map(|at| at.elapsed() <= window))
            .unwrap_or(false)
    }
}

fn wire_error(e: WireError) -> TransportError {
    match e {
        WireError::TooLarge { size, .. } => TransportError::TooLarge { size },
        other => TransportError::Unreachable(other.to_string()),
    }
}

impl RaftTransport for OverlayRaft {
    async fn send(
        &self,
        target: RaftId,
        member: &Member,
        request: RaftRequest,
    ) -> Result<RaftReply, TransportError> {
        let node: NodeId = member
            .strew_id()
            .map_err(|e| TransportError::Unreachable(format!("member {member}: {e}")))?;
        let bytes = encode_request(&request).map_err(wire_error)?;
        // A member that restarted listens elsewhere than when it was
        // admitted: its current announcement has the address to dial.
        let announced = self.overlay.announced_addr(&node);
        let addr: Option<Multiaddr> = announced.as_deref().unwrap_or(&member.addr).parse().ok();
        let answer = self
            .overlay
            .raft_request(node, addr, bytes)
            .await
            .map_err(|e| match e {
                OverlayError::Stopped => TransportError::Unreachable("overlay stopped".into()),
                other => TransportError::Unreachable(other.to_string()),
            })?;
        let reply = decode_reply(&answer).map_err(wire_error)?;
        self.heard_from(target);
        Ok(reply)
    }
}

/// The overlay's raft endpoint: hands messages to this node's member once
/// it is started ([`RaftService::install`]); refuses them before.
pub struct RaftService {
    member: OnceLock<Arc<ConsensusMember>>,
    transport: Arc<OverlayRaft>,
}

impl RaftService {
    pub fn new(transport: Arc<OverlayRaft>) -> Self {
        RaftService {
            member: OnceLock::new(),
            transport,
        }
    }

    /// Starts serving `member` (once; later calls change nothing).
    pub fn install(&self, member: Arc<ConsensusMember>) {
        let _ = self.member.set(member);
    }

    async fn answer(&self, sender: NodeId, message: Vec<u8>) -> Option<Vec<u8>> {
        let request = match decode_request(&message) {
            Ok(request) => request,
            Err(e) => {
                debug!(%sender, %e, "undecodable raft message");
                return None;
            }
        };
        let reply = match self.member.get() {
            Some(member) => {
                let reply = member.serve_from(&sender, request).await;
                if !matches!(reply, RaftReply::Refused(_)) {
                    self.transport.heard_from(raft_id(&sender));
                }
                reply
            }
            None => RaftReply::Refused("this node's coordinator group member is starting".into()),
        };
        match encode_reply(&reply) {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                debug!(%sender, %e, "raft reply does not encode");
                None
            }
        }
    }
}

impl RaftEndpoint for RaftService {
    fn handle(&self, sender: NodeId, message: Vec<u8>) -> RaftAnswer<'_> {
        Box::pin(self.answer(sender, message))
    }
}
