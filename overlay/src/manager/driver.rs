//! The manager protocol's part of the event loop.
//!
//! Owns this protocol's runtime state: the calls this node made that await an
//! answer (one [`Outbound`] tracker) and the count of inbound calls being
//! answered (over [`MAX_MANAGER_INFLIGHT`] the answer is `Unavailable`). An
//! inbound call's answer is the endpoint's future, spawned on the runtime; it
//! reports back through a bounded channel, so nothing here waits. It must not
//! interpret calls: the endpoint (the node's sequence manager) does.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use strew_coordinator::NodeId;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::error::RequestFailure;
use crate::handle::Shared;
use crate::manager::{
    ManagerAnswer, ManagerCodec, ManagerRequest, ManagerResponse, Refusal, RefusalCode,
};
use crate::outbound::{Incoming, Outbound, Reply};
use crate::peer;

type Behaviour = request_response::Behaviour<ManagerCodec>;

/// Manager calls being answered at once; further ones are told `Unavailable`.
pub const MAX_MANAGER_INFLIGHT: usize = 64;
/// Outbound calls get this long past libp2p's own timeout before the
/// tracker fails them itself.
const GRACE: Duration = Duration::from_secs(5);

/// An answered inbound call, back from its task.
pub(crate) struct Answered {
    peer: PeerId,
    channel: ResponseChannel<ManagerResponse>,
    response: ManagerResponse,
}

/// Answers a manager call with the installed endpoint, or redirects.
pub(crate) fn answer(shared: &Shared, requester: NodeId, request: ManagerRequest) -> ManagerAnswer {
    match shared.manager_endpoint() {
        Some(endpoint) => endpoint.handle(requester, request),
        None => {
            let leader = shared.manager();
            Box::pin(std::future::ready(ManagerResponse::NotManager { leader }))
        }
    }
}

/// Awaits an answer; an endpoint that panics answers `Unavailable`.
pub(crate) async fn guarded(answer: ManagerAnswer) -> ManagerResponse {
    AssertUnwindSafe(answer)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            ManagerResponse::Unavailable(Refusal::new(
                RefusalCode::Internal,
                "the manager failed answering",
            ))
        })
}

pub(crate) struct Manager {
    shared: Arc<Shared>,
    request_timeout: Duration,
    outbound: Outbound<OutboundRequestId, ManagerResponse>,
    inbound: usize,
    answered_tx: mpsc::Sender<Answered>,
    answered: mpsc::Receiver<Answered>,
}

impl Manager {
    pub fn new(shared: Arc<Shared>, request_timeout: Duration) -> Self {
        let (answered_tx, answered) = mpsc::channel(MAX_MANAGER_INFLIGHT);
        Manager {
            shared,
            request_timeout,
            outbound: Outbound::new(),
            inbound: 0,
            answered_tx,
            answered,
        }
    }

    /// Sends a caller's call.
    pub fn send(
        &mut self,
        rr: &mut Behaviour,
        target: PeerId,
        request: ManagerRequest,
        reply: Reply<ManagerResponse>,
    ) {
        let id = rr.send_request(&target, request);
        let deadline = Instant::now() + self.request_timeout + GRACE;
        self.outbound.insert(id, target, deadline, reply);
    }

    /// The next answered inbound call (for the event loop's `select!`).
    pub async fn next_answered(&mut self) -> Option<Answered> {
        self.answered.recv().await
    }

    pub fn expire(&mut self, now: Instant) {
        self.outbound.expire(now);
    }

    pub fn fail_peer(&mut self, peer: &PeerId, failure: &RequestFailure) {
        self.outbound.fail_peer(peer, failure);
    }

    pub fn on_event(
        &mut self,
        rr: &mut Behaviour,
        event: request_response::Event<ManagerRequest, ManagerResponse>,
    ) {
        match self.outbound.route(event, "manager call") {
            Some(Incoming::Request {
                peer,
                request,
                channel,
            }) => self.on_request(rr, peer, request, channel),
            Some(Incoming::Failed { peer, error }) => {
                warn!(%peer, %error, "bad or failed inbound manager call");
            }
            None => {}
        }
    }

    fn on_request(
        &mut self,
        rr: &mut Behaviour,
        peer: PeerId,
        request: ManagerRequest,
        channel: ResponseChannel<ManagerResponse>,
    ) {
        let Some(requester) = peer::node_id_of(&peer) else {
            let _ = rr.send_response(
                channel,
                ManagerResponse::Refused(Refusal::new(
                    RefusalCode::Invalid,
                    "the caller is not an Ed25519 node",
                )),
            );
            return;
        };
        if self.inbound >= MAX_MANAGER_INFLIGHT {
            let _ = rr.send_response(
                channel,
                ManagerResponse::Unavailable(Refusal::new(
                    RefusalCode::Busy,
                    "the manager is busy; retry",
                )),
            );
            return;
        }
        self.inbound += 1;
        debug!(%peer, kind = request.kind(), "manager call");
        let answer = answer(&self.shared, requester, request);
        let answered = self.answered_tx.clone();
        tokio::spawn(async move {
            let response = guarded(answer).await;
            let _ = answered
                .send(Answered {
                    peer,
                    channel,
                    response,
                })
                .await;
        });
    }

    /// Sends an answer and gives its place back.
    pub fn on_answered(&mut self, rr: &mut Behaviour, answered: Answered) {
        self.inbound = self.inbound.saturating_sub(1);
        let Answered {
            peer,
            channel,
            response,
        } = answered;
        if rr.send_response(channel, response).is_err() {
            debug!(%peer, "manager caller went away before the response");
        }
    }
}
