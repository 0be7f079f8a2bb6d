//! Grid sync's part of the event loop: pull the grid view page by page from
//! the first few peers after (re)joining, serve pages to others, and
//! refresh a connected peer that is missing from the grid view.
//!
//! Owns the set of peers this node synced with (cleared when it is cut off
//! from the grid, so it syncs afresh on reconnect), and the refreshes: a
//! peer this node is connected to but whose announcement is not in its view
//! (gossip from it stopped arriving while the connection lived on, as after
//! a long load) is asked for its own announcement, one page of one, at most
//! every [`GridSync::refresh_every`]; of the answer only that announcement
//! is taken. Pulled announcements go through the gossip driver's admission
//! like gossiped ones; this module must not trust them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::request_response::OutboundRequestId;
use libp2p::{PeerId, Swarm, request_response};
use strew_coordinator::NodeId;
use tracing::{debug, info};

use crate::announcement::{Announcement, FreshnessLimits};
use crate::behaviour::Behaviour;
use crate::gossip::driver::Gossip;
use crate::handle::Shared;
use crate::peer;
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
    refresh_every: Duration,
    /// Connected peers missing from the grid view: since when, or when they
    /// were last asked for their announcement.
    missing: HashMap<PeerId, Instant>,
    /// Refresh requests in flight, with the node each asked for (answered
    /// with one page, never followed).
    refreshing: HashMap<OutboundRequestId, NodeId>,
}

impl GridSync {
    /// `peer_ttl`: how long an announcement stays in the view; a missing
    /// peer is refreshed every half of it (between 1 s and a minute).
    pub fn new(shared: Arc<Shared>, peer_ttl: Duration) -> Self {
        GridSync {
            shared,
            synced_with: BTreeSet::new(),
            pages: BTreeMap::new(),
            refresh_every: (peer_ttl / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            missing: HashMap::new(),
            refreshing: HashMap::new(),
        }
    }

    /// Asks every connected peer that has been missing from the grid view
    /// for [`GridSync::refresh_every`] for its own announcement (from the
    /// housekeeping tick). A peer whose announcement `expired` just now
    /// while it is connected is asked at once: it is no newcomer.
    pub fn refresh_missing(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        now: Instant,
        expired: &[NodeId],
    ) {
        let connected: Vec<PeerId> = swarm.connected_peers().copied().collect();
        let missing: Vec<(PeerId, NodeId)> = match self.shared.grid.read() {
            Ok(grid) => connected
                .into_iter()
                .filter_map(|p| Some((p, peer::node_id_of(&p)?)))
                .filter(|(_, node)| grid.announcement(node).is_none())
                .collect(),
            Err(_) => return,
        };
        let still: HashSet<PeerId> = missing.iter().map(|(p, _)| *p).collect();
        self.missing.retain(|p, _| still.contains(p));
        let at_once = now.checked_sub(self.refresh_every).unwrap_or(now);
        for (peer, node) in &missing {
            if expired.contains(node) {
                self.missing.insert(*peer, at_once);
            }
        }
        for (peer, node) in due_refreshes(&mut self.missing, &missing, now, self.refresh_every) {
            info!(%node, "connected to a node missing from the grid view (its gossip does not arrive): asking it for its announcement");
            let id = swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest {
                    after: before(&node),
                    limit: 1,
                },
            );
            self.refreshing.insert(id, node);
            self.shared.metrics.view_refreshes.inc();
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
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    if let Some(node) = self.refreshing.remove(&request_id) {
                        let accepted = self.admit_own(swarm, gossip, response, node);
                        debug!(%peer, accepted, "grid view refreshed from a connected peer");
                    } else {
                        self.on_page(swarm, gossip, peer, response);
                    }
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.refreshing.remove(&request_id);
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
        let next = response.next;
        let accepted = self.admit(swarm, gossip, response);
        let pages = self.pages.entry(peer).or_insert(0);
        *pages = pages.saturating_add(1);
        debug!(%peer, accepted, pages = *pages, "grid sync page");
        if *pages >= MAX_SYNC_PAGES {
            debug!(%peer, "grid sync stops: page limit reached");
            return;
        }
        if let Some(after) = next {
            swarm.behaviour_mut().sync.send_request(
                &peer,
                SyncRequest {
                    after: Some(after),
                    limit: MAX_PAGE,
                },
            );
        }
    }

    /// Takes only `node`'s own announcement from a refresh's answer: the
    /// page starts just before `node`, so it is the first one. Nothing else
    /// is looked at, so a peer that answers with a full page neither feeds
    /// identities through refreshes nor makes this node check 512
    /// signatures.
    fn admit_own(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        gossip: &mut Gossip,
        response: SyncResponse,
        node: NodeId,
    ) -> bool {
        let now = now_ms();
        let Some(SignedBytes(bytes)) = response.announcements.into_iter().next() else {
            return false;
        };
        let own = Announcement::verify(&bytes, now, &FreshnessLimits::default())
            .is_ok_and(|a| a.node() == node);
        own && gossip.admit(swarm, Some(node), bytes, now)
    }

    /// Runs every announcement of a page through the gossip driver's
    /// admission (this node's own skipped); returns how many were accepted.
    fn admit(
        &mut self,
        swarm: &mut Swarm<Behaviour>,
        gossip: &mut Gossip,
        response: SyncResponse,
    ) -> usize {
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
        accepted
    }
}

/// The missing peers due for a refresh at `now`: one first seen missing
/// waits `every` (a newcomer announces on its own shortly after connecting),
/// then is asked once every `every`. `since` holds when each was first seen
/// missing or last asked, and is updated.
fn due_refreshes(
    since: &mut HashMap<PeerId, Instant>,
    missing: &[(PeerId, NodeId)],
    now: Instant,
    every: Duration,
) -> Vec<(PeerId, NodeId)> {
    let mut due = Vec::new();
    for (peer, node) in missing {
        let at = since.entry(*peer).or_insert(now);
        if now.duration_since(*at) >= every {
            *at = now;
            due.push((*peer, *node));
        }
    }
    due
}

/// The NodeId just before `node` (big-endian, minus one): a sync page
/// `after` it starts with `node`. `None` for the smallest id (a page from
/// the start starts with it too).
fn before(node: &NodeId) -> Option<NodeId> {
    let mut bytes = node.0;
    for b in bytes.iter_mut().rev() {
        if *b > 0 {
            *b -= 1;
            return Some(NodeId(bytes));
        }
        *b = 0xff;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_before_a_node_orders_just_before_it() {
        let n = NodeId([7; 32]);
        let b = before(&n).expect("not the smallest");
        assert!(b < n);
        let mut one_less = [7u8; 32];
        one_less[31] = 6;
        assert_eq!(b, NodeId(one_less));
        // A borrow runs through trailing zeros.
        let mut z = [0u8; 32];
        z[0] = 1;
        let mut want = [0xffu8; 32];
        want[0] = 0;
        assert_eq!(before(&NodeId(z)), Some(NodeId(want)));
        assert_eq!(before(&NodeId([0; 32])), None);
    }

    #[test]
    fn a_missing_peer_is_refreshed_after_a_period_then_once_a_period() {
        let every = Duration::from_secs(2);
        let t0 = Instant::now();
        let peer = PeerId::random();
        let node = NodeId([1; 32]);
        let mut since = HashMap::new();
        let missing = [(peer, node)];
        assert!(due_refreshes(&mut since, &missing, t0, every).is_empty());
        let t1 = t0 + Duration::from_secs(1);
        assert!(due_refreshes(&mut since, &missing, t1, every).is_empty());
        let t2 = t0 + every;
        assert_eq!(
            due_refreshes(&mut since, &missing, t2, every),
            vec![(peer, node)]
        );
        assert!(due_refreshes(&mut since, &missing, t2 + Duration::from_secs(1), every).is_empty());
        assert_eq!(
            due_refreshes(&mut since, &missing, t2 + every, every),
            vec![(peer, node)]
        );
    }
}
