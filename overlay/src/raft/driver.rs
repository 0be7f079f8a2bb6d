//! The raft protocol's part of the event loop.
//!
//! Owns this protocol's runtime state: messages this node sent that await a
//! reply (one [`Outbound`] tracker) and the count of inbound messages being
//! answered (over [`MAX_RAFT_INFLIGHT`] they are dropped; raft retries). An
//! inbound message is answered by the endpoint's future in a spawned task
//! that reports back through a bounded channel, so nothing here waits. It
//! must not look inside a message.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId, Swarm};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::debug;

use crate::behaviour::Behaviour as Composed;
use crate::error::RequestFailure;
use crate::handle::Shared;
use crate::outbound::{Incoming, Outbound, Reply};
use crate::peer;
use crate::raft::{RaftCodec, RaftMessage};

type Behaviour = request_response::Behaviour<RaftCodec>;

/// Raft messages being answered at once; further ones are dropped (raft retries).
pub const MAX_RAFT_INFLIGHT: usize = 64;
/// The outer bound of one raft message (its own deadline is usually shorter).
pub const RAFT_TIMEOUT: Duration = Duration::from_secs(30);
/// Outbound messages get this long past libp2p's own timeout before the
/// tracker fails them itself.
const GRACE: Duration = Duration::from_secs(5);

/// An answered inbound message, back from its task.
pub(crate) struct Answered {
    peer: PeerId,
    channel: ResponseChannel<Vec<u8>>,
    reply: Option<Vec<u8>>,
}

pub(crate) struct Raft {
    shared: Arc<Shared>,
    outbound: Outbound<OutboundRequestId, Vec<u8>>,
    inbound: usize,
    answered_tx: mpsc::Sender<Answered>,
    answered: mpsc::Receiver<Answered>,
}

impl Raft {
    pub fn new(shared: Arc<Shared>) -> Self {
        let (answered_tx, answered) = mpsc::channel(MAX_RAFT_INFLIGHT);
        Raft {
            shared,
            outbound: Outbound::new(),
            inbound: 0,
            answered_tx,
            answered,
        }
    }

    /// Sends a caller's message, telling the swarm where `target` listens
    /// first if it is not connected.
    pub fn send(
        &mut self,
        swarm: &mut Swarm<Composed>,
        target: PeerId,
        addr: Option<Multiaddr>,
        message: Vec<u8>,
        reply: Reply<Vec<u8>>,
    ) {
        if let Some(addr) = addr
            && !swarm.is_connected(&target)
        {
            swarm.add_peer_address(target, addr);
        }
        let id = swarm
            .behaviour_mut()
            .raft
            .send_request(&target, RaftMessage::from(message));
        self.outbound
            .insert(id, target, Instant::now() + RAFT_TIMEOUT + GRACE, reply);
    }

    /// The next answered inbound message (for the event loop's `select!`).
    pub async fn next_answered(&mut self) -> Option<Answered> {
        self.answered.recv().await
    }

    pub fn expire(&mut self, now: Instant) {
        self.outbound.expire(now);
    }

    pub fn fail_peer(&mut self, peer: &PeerId, failure: &RequestFailure) {
        self.outbound.fail_peer(peer, failure);
    }

    pub fn on_event(&mut self, event: request_response::Event<RaftMessage, Vec<u8>>) {
        match self.outbound.route(event, "raft message") {
            Some(Incoming::Request {
                peer,
                request,
                channel,
            }) => self.on_request(peer, request, channel),
            Some(Incoming::Failed { peer, error }) => {
                debug!(%peer, %error, "bad or failed inbound raft message");
            }
            None => {}
        }
    }

    fn on_request(
        &mut self,
        peer: PeerId,
        message: RaftMessage,
        channel: ResponseChannel<Vec<u8>>,
    ) {
        let (Some(sender), Some(endpoint)) = (peer::node_id_of(&peer), self.shared.raft_endpoint())
        else {
            return;
        };
        if self.inbound >= MAX_RAFT_INFLIGHT {
            debug!(%peer, "raft endpoint busy; dropping a message");
            return;
        }
        self.inbound += 1;
        let answered = self.answered_tx.clone();
        tokio::spawn(async move {
            // The message keeps its share of the inbound budget until answered.
            let (message, _held) = message.into_parts();
            // An endpoint that panics sends no reply, like one that declines.
            let reply = AssertUnwindSafe(endpoint.handle(sender, message))
                .catch_unwind()
                .await
                .unwrap_or(None);
            let _ = answered
                .send(Answered {
                    peer,
                    channel,
                    reply,
                })
                .await;
        });
    }

    /// Sends a reply and gives its place back.
    pub fn on_answered(&mut self, rr: &mut Behaviour, answered: Answered) {
        self.inbound = self.inbound.saturating_sub(1);
        let Answered {
            peer,
            channel,
            reply,
        } = answered;
        // No reply: dropping the channel closes the stream; the sender sees a failure.
        if let Some(reply) = reply
            && rr.send_response(channel, reply).is_err()
        {
            debug!(%peer, "raft sender went away before the reply");
        }
    }
}
