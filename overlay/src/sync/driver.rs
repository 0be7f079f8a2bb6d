//! Grid sync's part of the event loop: pull the grid view page by page from
//! the first few peers after (re)joining, and serve pages to others.
//!
//! Owns the set of peers this node synced with (cleared when it is cut off
//! from the grid, so it syncs afresh on reconnect). Pulled announcements go
//! through the gossip driver's admission like gossiped ones; this module must
//! not trust them. Its requests carry no caller, so it tracks none in flight.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use libp2p::{PeerId, Swarm, request_response};
use tracing::debug;

use crate::announcement::{Announcement, FreshnessLimits};
use crate::behaviour::Behaviour;
use crate::gossip::driver::Gossip;
use crate::handle::Shared;
use crate::runtime::now_ms;
use crate::sync::{MAX_PAGE, SignedBytes, SyncRequest, SyncResponse};

/// Peers a node pulls the grid view from after (re)joining.
const SYNC_PEERS: usize = 2;
/// Pages followed from one peer per sync: 400 × 512 announcements covers a
/// view at its default cap (200k nodes); a peer whose `next` goes on past
/// that is not followed further.
pub const MAX_SYNC_PAGES: u32 = 400;

pub(crate) struct GridSync {
    shared: Arc<Shared>,
    synced_with: BTreeSet<PeerId>,
    /// Pages pulled from each peer in this sync.
    pages: BTreeMap<PeerId, u32>,
}

impl GridSync {
    pub fn new(shared: Arc<Shared>) -> Self {
        GridSync {
            shared,
            synced_with: BTreeSet::new(),
            pages: BTreeMap::new(),
        }
    }

    /// A connection to `peer` is up: pull the grid view from the first few
    /// peers only (at 100k nodes a full view is tens of MB).
    pub fn on_connected(&mut self, swarm: &mut Swarm<Behaviour>, peer: PeerId) {
        if self.synced_with.len() < SYNC_PEERS && self.synced_with.insert(peer) {
            swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest {
                    after: None,
                    limit: MAX_PAGE,
                },
            );
        }
    }

    /// Cut off from the grid: sync afresh on reconnect.
    pub fn on_isolated(&mut self) {
        self.synced_with.clear();
        self.pages.clear();
    }

    pub fn on_event(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        gossip: &mut Gossip,
        event: request_response::Event<SyncRequest, SyncResponse>,
    ) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => {
                    let limit = request.limit.clamp(1, MAX_PAGE) as usize;
                    let (page, next) = match self.shared.grid.read() {
                        Ok(grid) => grid.page(request.after, limit),
                        Err(_) => (Vec::new(), None),
                    };
                    let response = SyncResponse {
                        announcements: page.into_iter().map(SignedBytes).collect(),
                        next,
                    };
                    if swarm
                        .behaviour_mut()
                        .sync
                        .send_response(channel, response)
                        .is_err()
                    {
                        debug!(%peer, "sync requester went away");
                    }
                }
                request_response::Message::Response { response, .. } => {
                    self.on_page(swarm, gossip, peer, response);
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "grid sync failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                debug!(%peer, %error, "bad inbound grid sync request");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_page(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        gossip: &mut Gossip,
        peer: PeerId,
        response: SyncResponse,
    ) {
        let now = now_ms();
        let mut accepted = 0usize;
        for SignedBytes(bytes) in response.announcements {
            let source = Announcement::verify(&bytes, now, &FreshnessLimits::default())
                .ok()
                .map(|a| a.node());
            if source == Some(self.shared.node_id) {
                continue;
            }
            if gossip.admit(swarm, source, bytes, now) {
                accepted += 1;
            }
        }
        let pages = self.pages.entry(peer).or_insert(0);
        *pages = pages.saturating_add(1);
        debug!(%peer, accepted, pages = *pages, "grid sync page");
        if *pages >= MAX_SYNC_PAGES {
            debug!(%peer, "grid sync stops: page limit reached");
            return;
        }
        if let Some(after) = response.next {
            swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest {
                    after: Some(after),
                    limit: MAX_PAGE,
                },
            );
        }
    }
}
