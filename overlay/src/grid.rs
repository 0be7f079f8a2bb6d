//! The local node's grid view as the overlay maintains it: the coordinator
//! crate's [`GridView`] (what placement reads) plus, per node, the signed
//! announcement bytes (served to syncing peers unchanged) and the expiry time
//! the node itself declared.
//!
//! Owns insertion, expiry, paging and the view's size cap (past it, the
//! least recently confirmed node makes room for a new one). It must not
//! validate announcements (the gossip gate does) or touch the network.

use std::collections::{BTreeMap, BTreeSet};

use std::net::IpAddr;

use strew_coordinator::network::{self, NetworkDomain};
use strew_coordinator::{GeoPoint, GridView, NodeId, NodeProfile};

use crate::announcement::Announcement;

/// Default cap of the grid view (nodes).
pub const DEFAULT_MAX_GRID_NODES: usize = 200_000;

#[derive(Debug, Clone)]
struct Signed {
    bytes: Vec<u8>,
    expires_at: u64,
    /// When an announcement of this node was last accepted.
    confirmed_at: u64,
    announcement: Announcement,
}

/// The grid view plus what the overlay needs to keep it fresh.
#[derive(Debug)]
pub struct GridBook {
    view: GridView,
    signed: BTreeMap<NodeId, Signed>,
    /// Nodes this node found unreachable (liveness): they stay in the view,
    /// offline, until a connection to them succeeds again, whatever their
    /// announcements say.
    unreachable: BTreeSet<NodeId>,
    /// Every node by when it was last confirmed (oldest first): the
    /// eviction order once the view is full.
    confirmed: BTreeSet<(u64, NodeId)>,
    max_nodes: usize,
    /// The remote IP of this node's latest direct connection to each node
    /// (at most one per node in the view, plus not-yet-announced ones up to
    /// the view's cap): what the connection shows, preferred over what a
    /// node's announcement claims when placement reads its failure domain.
    observed: BTreeMap<NodeId, IpAddr>,
    /// Nodes whose announced addresses changed since the event loop last
    /// looked (liveness retries them); bounded by the view.
    readdressed: BTreeSet<NodeId>,
    /// Bumped whenever a node arrives, leaves, or changes what placement
    /// depends on (not on every periodic re-announcement).
    generation: u64,
}

impl Default for GridBook {
    fn default() -> Self {
        GridBook::with_max_nodes(DEFAULT_MAX_GRID_NODES)
    }
}

/// Whether two profiles of one node differ in what the sequence manager records.
fn placement_changed(old: &NodeProfile, new: &NodeProfile) -> bool {
    old.location != new.location
        || old.storage_allocated != new.storage_allocated
        || old.x25519_public != new.x25519_public
        || old.coordinator_eligible != new.coordinator_eligible
        || old.bandwidth_limit != new.bandwidth_limit
        || old.online != new.online
        || old.network != new.network
        || old.behind_nat != new.behind_nat
}

/// The coordinator's profile of an announcing node, seen at `now_ms`.
pub fn profile_of(ann: &Announcement, now_ms: u64) -> Option<NodeProfile> {
    let location = GeoPoint::new(ann.lat, ann.lon).ok()?;
    Some(NodeProfile {
        node_id: ann.node(),
        location,
        storage_allocated: ann.storage_allocated,
        storage_free: ann.storage_free,
        bandwidth_limit: ann.bandwidth_limit,
        load: ann.load,
        uptime_secs: ann.uptime_secs,
        coordinator_eligible: ann.coordinator_eligible,
        x25519_public: ann.x25519_public,
        protocol_version: u32::from(ann.protocol_version),
        last_seen: now_ms,
        online: true,
        network: ann.external_ip().and_then(NetworkDomain::of),
        behind_nat: ann.behind_nat,
    })
}

impl GridBook {
    /// An empty view that holds at most `max_nodes` nodes (at least 1).
    pub fn with_max_nodes(max_nodes: usize) -> Self {
        GridBook {
            view: GridView::default(),
            signed: BTreeMap::new(),
            unreachable: BTreeSet::new(),
            confirmed: BTreeSet::new(),
            max_nodes: max_nodes.max(1),
            observed: BTreeMap::new(),
            readdressed: BTreeSet::new(),
            generation: 0,
        }
    }

    /// Records an accepted announcement and its signed bytes. A node new to
    /// a full view takes the place of the least recently confirmed one.
    pub fn insert(&mut self, ann: Announcement, bytes: Vec<u8>, now_ms: u64) {
        let Some(mut profile) = profile_of(&ann, now_ms) else {
            return;
        };
        if !self.signed.contains_key(&profile.node_id)
            && self.signed.len() >= self.max_nodes
            && let Some((_, oldest)) = self.confirmed.pop_first()
        {
            self.signed.remove(&oldest);
            self.view.remove(&oldest);
            self.unreachable.remove(&oldest);
            self.observed.remove(&oldest);
            self.generation += 1;
        }
        profile.online = !self.unreachable.contains(&profile.node_id);
        profile.network = self.network_of(&profile.node_id, &ann);
        if self
            .view
            .get(&profile.node_id)
            .is_none_or(|old| placement_changed(old, &profile))
        {
            self.generation += 1;
        }
        self.view.upsert(profile);
        let node = ann.node();
        if let Some(old) = self.signed.get(&node)
            && old.announcement.listen_addrs != ann.listen_addrs
        {
            self.readdressed.insert(node);
        }
        if let Some(old) = self.signed.insert(
            node,
            Signed {
                bytes,
                expires_at: ann.expires_at(),
                confirmed_at: now_ms,
                announcement: ann,
            },
        ) {
            self.confirmed.remove(&(old.confirmed_at, node));
        }
        self.confirmed.insert((now_ms, node));
    }

    /// The failure domain of a node: from the address its connection to this
    /// node showed, else from its identify-confirmed external addresses.
    fn network_of(&self, node: &NodeId, ann: &Announcement) -> Option<NetworkDomain> {
        match self.observed.get(node) {
            Some(ip) if network::is_public(*ip) => NetworkDomain::of(*ip),
            _ => ann.external_ip().and_then(NetworkDomain::of),
        }
    }

    /// Records the remote IP a direct connection to `node` showed. Updates
    /// the node's failure domain in the view when it changes.
    pub fn observe_address(&mut self, node: NodeId, ip: IpAddr) {
        if !self.observed.contains_key(&node) && self.observed.len() >= self.max_nodes {
            // Bounded: forget addresses of nodes that never announced.
            let stale: Vec<NodeId> = self
                .observed
                .keys()
                .filter(|id| !self.signed.contains_key(id))
                .copied()
                .collect();
            for id in stale {
                self.observed.remove(&id);
            }
            if self.observed.len() >= self.max_nodes {
                return;
            }
        }
        if self.observed.insert(node, ip) == Some(ip) {
            return;
        }
        let Some(signed) = self.signed.get(&node) else {
            return;
        };
        let network = self.network_of(&node, &signed.announcement);
        if let Some(profile) = self.view.get(&node)
            && profile.network != network
        {
            let mut profile = profile.clone();
            profile.network = network;
            self.view.upsert(profile);
            self.generation += 1;
        }
    }

    /// Takes the nodes whose announced addresses changed.
    pub fn take_readdressed(&mut self) -> BTreeSet<NodeId> {
        std::mem::take(&mut self.readdressed)
    }

    /// The address a direct connection to `node` showed, if any.
    pub fn observed_address(&self, node: &NodeId) -> Option<IpAddr> {
        self.observed.get(node).copied()
    }

    /// Drops nodes whose announcement expired; returns them.
    pub fn expire(&mut self, now_ms: u64) -> Vec<NodeId> {
        let gone: Vec<NodeId> = self
            .signed
            .iter()
            .filter(|(_, s)| s.expires_at <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            if let Some(s) = self.signed.remove(id) {
                self.confirmed.remove(&(s.confirmed_at, *id));
            }
            self.view.remove(id);
            self.unreachable.remove(id);
            self.observed.remove(id);
        }
        if !gone.is_empty() {
            self.generation += 1;
        }
        gone
    }

    /// Records what liveness found: an unreachable node stays in the view but
    /// offline (placement skips it) until it is reachable again. Returns
    /// whether anything changed.
    pub fn set_reachable(&mut self, node: &NodeId, reachable: bool) -> bool {
        if !self.signed.contains_key(node) {
            return false;
        }
        let listed = if reachable {
            self.unreachable.remove(node)
        } else {
            self.unreachable.insert(*node)
        };
        let was_online = self.view.get(node).map(|p| p.online);
        self.view.set_online(node, reachable);
        if listed || was_online.is_some_and(|w| w != reachable) {
            self.generation += 1;
            return true;
        }
        false
    }

    /// Whether the node is in the view and not found unreachable.
    pub fn is_online(&self, node: &NodeId) -> bool {
        self.signed.contains_key(node) && !self.unreachable.contains(node)
    }

    /// Changes so far of what the sequence manager records about nodes: a
    /// caller that remembers it can skip looking at an unchanged view.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The coordinator's grid view.
    pub fn view(&self) -> &GridView {
        &self.view
    }

    /// The latest accepted announcement of a node.
    pub fn announcement(&self, node: &NodeId) -> Option<&Announcement> {
        self.signed.get(node).map(|s| &s.announcement)
    }

    /// Every known node's latest announcement, ordered by NodeId.
    pub fn announcements(&self) -> impl Iterator<Item = &Announcement> {
        self.signed.values().map(|s| &s.announcement)
    }

    /// Nodes known, this node included if it announced.
    pub fn len(&self) -> usize {
        self.signed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.signed.is_empty()
    }

    /// Up to `limit` signed announcements of nodes after `after`, and the last
    /// NodeId returned when more follow.
    pub fn page(&self, after: Option<NodeId>, limit: usize) -> (Vec<Vec<u8>>, Option<NodeId>) {
        let range = match after {
            Some(a) => self
                .signed
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.signed.range(..),
        };
        let mut out = Vec::new();
        let mut last = None;
        let mut more = false;
        for (id, s) in range {
            if out.len() == limit {
                more = true;
                break;
            }
            out.push(s.bytes.clone());
            last = Some(*id);
        }
        (out, if more { last } else { None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::announcement::PROTOCOL_VERSION;

    fn announcement(n: u8, at: u64) -> Announcement {
        Announcement {
            protocol_version: PROTOCOL_VERSION,
            node_id: [n; 32],
            issued_at: at,
            valid_for_secs: 60,
            lat: 48.85,
            lon: 2.35,
            storage_allocated: 1 << 30,
            storage_free: 1 << 30,
            bandwidth_limit: 0,
            load: 0.0,
            uptime_secs: 1,
            coordinator_eligible: false,
            x25519_public: [0; 32],
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            behind_nat: false,
            work_nonce: None,
        }
    }

    #[test]
    fn a_full_view_evicts_the_least_recently_confirmed_node() {
        let mut book = GridBook::with_max_nodes(3);
        for (n, at) in [(1, 10), (2, 20), (3, 30)] {
            book.insert(announcement(n, at), vec![n], at);
        }
        // Node 1 confirms again: node 2 is now the least recently confirmed.
        book.insert(announcement(1, 40), vec![1], 40);
        assert_eq!(book.len(), 3, "a known node takes no extra room");
        book.insert(announcement(4, 50), vec![4], 50);
        assert_eq!(book.len(), 3);
        assert!(book.announcement(&NodeId([2; 32])).is_none(), "evicted");
        for n in [1, 3, 4] {
            assert!(book.announcement(&NodeId([n; 32])).is_some(), "{n} kept");
        }
        assert_eq!(book.view().len(), 3, "the placement view follows");
        // A flood of new ids never grows the view past its cap.
        for n in 10..200u8 {
            book.insert(
                announcement(n, 100 + u64::from(n)),
                vec![n],
                100 + u64::from(n),
            );
            assert!(book.len() <= 3);
        }
        // Expiry keeps the eviction order consistent.
        assert_eq!(book.expire(u64::MAX).len(), 3);
        assert!(book.is_empty());
        book.insert(announcement(5, 1), vec![5], 1);
        assert_eq!(book.len(), 1);
    }

    #[test]
    fn the_failure_domain_comes_from_the_connection_before_the_claim() {
        let mut book = GridBook::with_max_nodes(8);
        let node = NodeId([1; 32]);
        let mut ann = announcement(1, 10);
        ann.external_addrs = vec!["/ip4/198.51.100.9/tcp/4001".into()];
        book.insert(ann.clone(), vec![1], 10);
        let domain = |book: &GridBook| book.view().get(&node).and_then(|p| p.network);
        assert_eq!(
            domain(&book).map(|d| d.to_string()).as_deref(),
            Some("198.51.100.0/24"),
            "the confirmed external address, while no connection shows one"
        );
        let before = book.generation();
        book.observe_address(node, "203.0.113.5".parse().unwrap());
        assert_eq!(
            domain(&book).map(|d| d.to_string()).as_deref(),
            Some("203.0.113.0/24")
        );
        assert!(book.generation() > before, "the manager must notice");
        // A re-announcement keeps what the connection showed.
        book.insert(ann.clone(), vec![1], 20);
        assert_eq!(
            domain(&book).map(|d| d.to_string()).as_deref(),
            Some("203.0.113.0/24")
        );
        // A private connection address says nothing: back to the claim.
        book.observe_address(node, "10.0.0.7".parse().unwrap());
        assert_eq!(
            domain(&book).map(|d| d.to_string()).as_deref(),
            Some("198.51.100.0/24")
        );
        ann.external_addrs.clear();
        book.insert(ann, vec![1], 30);
        assert_eq!(domain(&book), None, "loopback and private grids are exempt");
    }
}
