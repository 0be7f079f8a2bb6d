//! The packet protocol's part of the event loop.
//!
//! Owns this protocol's runtime state: the outbound requests in flight (one
//! [`Outbound`] tracker) and the inbound ones being served, with their
//! per-peer and total limits (over them the answer is `Busy`). Serving runs
//! [`PacketService`] on a blocking thread in a spawned task that reports back
//! through a bounded channel; nothing here waits. It must not decide what a
//! ticket allows (the service does) or retry (the handle does).

use std::collections::BTreeMap;
use std::time::Duration;

use libp2p::PeerId;
use libp2p::request_response::{self, OutboundRequestId, ResponseChannel};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::error::RequestFailure;
use crate::metrics::OverlayMetrics;
use crate::outbound::{Incoming, Outbound, Reply};
use crate::packet::{
    PacketCodec, PacketRequest, PacketResponse, PacketService, ReadLimit, ReadLimiter, Refusal,
};
use crate::peer;
use crate::runtime::now_ms;

type Behaviour = request_response::Behaviour<PacketCodec>;

/// Outbound requests get this long past libp2p's own timeout before the
/// tracker fails them itself.
const GRACE: Duration = Duration::from_secs(5);

/// A served inbound request, back from its task.
pub(crate) struct Served {
    peer: PeerId,
    channel: ResponseChannel<PacketResponse>,
    response: PacketResponse,
    op: &'static str,
    body_in: usize,
}

/// Limits of the packet driver.
#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub request_timeout: Duration,
    pub max_inflight_per_peer: usize,
    pub max_inflight_total: usize,
    /// Reads each peer may make (a token bucket per peer).
    pub reads: ReadLimit,
}

pub(crate) struct Packets {
    service: PacketService,
    metrics: OverlayMetrics,
    limits: Limits,
    outbound: Outbound<OutboundRequestId, PacketResponse>,
    inbound_per_peer: BTreeMap<PeerId, usize>,
    inbound_total: usize,
    reads: ReadLimiter,
    served_tx: mpsc::Sender<Served>,
    served: mpsc::Receiver<Served>,
}

impl Packets {
    pub fn new(service: PacketService, metrics: OverlayMetrics, limits: Limits) -> Self {
        // Capacity equals the in-flight limit, so a task reporting back never waits long.
        let (served_tx, served) = mpsc::channel(limits.max_inflight_total.max(1));
        Packets {
            service,
            metrics,
            limits,
            outbound: Outbound::new(),
            inbound_per_peer: BTreeMap::new(),
            inbound_total: 0,
            reads: ReadLimiter::new(limits.reads),
            served_tx,
            served,
        }
    }

    /// Sends a caller's request.
    pub fn send(
        &mut self,
        rr: &mut Behaviour,
        target: PeerId,
        request: PacketRequest,
        reply: Reply<PacketResponse>,
    ) {
        let id = rr.send_request(&target, request);
        let deadline = Instant::now() + self.limits.request_timeout + GRACE;
        self.outbound.insert(id, target, deadline, reply);
    }

    /// Inbound requests being served, as a fraction of the total limit.
    pub fn load(&self) -> f32 {
        (self.inbound_total as f32 / self.limits.max_inflight_total.max(1) as f32).clamp(0.0, 1.0)
    }

    /// The next served request (for the event loop's `select!`).
    pub async fn next_served(&mut self) -> Option<Served> {
        self.served.recv().await
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
        event: request_response::Event<PacketRequest, PacketResponse>,
    ) {
        match self.outbound.route(event, "packet request") {
            Some(Incoming::Request {
                peer,
                request,
                channel,
            }) => self.on_request(rr, peer, request, channel),
            Some(Incoming::Failed { peer, error }) => {
                warn!(%peer, %error, "bad or failed inbound packet request");
                self.metrics.packet("in", "frame", "failed");
            }
            None => {}
        }
    }

    fn on_request(
        &mut self,
        rr: &mut Behaviour,
        peer: PeerId,
        request: PacketRequest,
        channel: ResponseChannel<PacketResponse>,
    ) {
        let op = match &request {
            PacketRequest::Put { .. } => "put",
            PacketRequest::Get { .. } => "get",
            PacketRequest::Delete { .. } => "delete",
            PacketRequest::DeleteMany { .. } => "delete_many",
            PacketRequest::Audit { .. } => "audit",
            PacketRequest::PutRoot { .. } => "put_root",
            PacketRequest::MarkRoot { .. } => "mark_root",
            PacketRequest::ListRoots { .. } => "list_roots",
            PacketRequest::DropRoot { .. } => "drop_root",
            PacketRequest::Inventory { .. } => "inventory",
        };
        let Some(requester) = peer::node_id_of(&peer) else {
            self.metrics.packet("in", op, "refused");
            let _ = rr.send_response(
                channel,
                PacketResponse::Refused(Refusal::BadTicket(
                    "the requester has no Ed25519 identity".into(),
                )),
            );
            return;
        };
        let per_peer = self.inbound_per_peer.get(&peer).copied().unwrap_or(0);
        let over_read_rate = matches!(
            request,
            PacketRequest::Get { .. } | PacketRequest::ListRoots { .. }
        ) && !self.reads.try_read(peer, now_ms());
        if over_read_rate
            || per_peer >= self.limits.max_inflight_per_peer
            || self.inbound_total >= self.limits.max_inflight_total
        {
            self.metrics.packet("in", op, "busy");
            let _ = rr.send_response(channel, PacketResponse::Refused(Refusal::Busy));
            return;
        }
        *self.inbound_per_peer.entry(peer).or_insert(0) += 1;
        self.inbound_total += 1;
        self.metrics
            .inflight_requests
            .set(self.inbound_total as i64);
        let body_in = match &request {
            PacketRequest::Put { bytes, .. } | PacketRequest::PutRoot { bytes, .. } => bytes.len(),
            _ => 0,
        };
        let service = self.service.clone();
        let served = self.served_tx.clone();
        tokio::spawn(async move {
            let response =
                tokio::task::spawn_blocking(move || service.handle(request, requester, now_ms()))
                    .await
                    .unwrap_or_else(|err| {
                        PacketResponse::Refused(Refusal::StoreFailed(format!(
                            "storage task failed: {err}"
                        )))
                    });
            let _ = served
                .send(Served {
                    peer,
                    channel,
                    response,
                    op,
                    body_in,
                })
                .await;
        });
    }

    /// Answers a served request and gives its place back.
    pub fn on_served(&mut self, rr: &mut Behaviour, served: Served) {
        let Served {
            peer,
            channel,
            response,
            op,
            body_in,
        } = served;
        self.inbound_total = self.inbound_total.saturating_sub(1);
        if let Some(n) = self.inbound_per_peer.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound_per_peer.remove(&peer);
            }
        }
        let m = &self.metrics;
        m.inflight_requests.set(self.inbound_total as i64);
        let result = match &response {
            PacketResponse::Refused(reason) => {
                info!(peer = %peer, op, %reason, "refused packet request");
                "refused"
            }
            _ => "ok",
        };
        m.packet("in", op, result);
        if result == "ok" {
            m.bytes("in", body_in);
        }
        if let PacketResponse::Found(bytes) = &response {
            m.bytes("out", bytes.len());
        }
        if rr.send_response(channel, response).is_err() {
            debug!(%peer, "requester went away before the response");
        }
    }
}
