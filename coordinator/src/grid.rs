//! The grid view: the global client profile of every known node, with a
//! spatial index over the online ones.
//!
//! Owns [`NodeProfile`] (what a node announces about itself plus its
//! liveness) and [`GridView`] (a `BTreeMap` by [`NodeId`] for deterministic
//! iteration, an rstar R-tree of every node on the unit sphere for ring
//! queries in O(log n + k) that skip offline nodes, a dense list of online
//! nodes for O(1) uniform sampling, and a last-seen index so expiry costs
//! O(k log n)). Every update is O(log n); going online or offline and
//! changing free space or load never touch the R-tree, so a simulator can
//! flip 100k nodes online and offline constantly. This module must not validate signatures or decode
//! announcements (the overlay does), and must not choose targets (placement does).

use std::collections::{BTreeMap, BTreeSet};

use rstar::{AABB, PointDistance, RTree, RTreeObject};
use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::network::NetworkDomain;
use crate::units::{DistanceRange, GeoPoint, Millis, chord_for_km, haversine_km};

/// The global client profile of one node: what it announces, plus liveness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeProfile {
    pub node_id: NodeId,
    pub location: GeoPoint,
    /// Bytes the node donates to the grid.
    pub storage_allocated: u64,
    /// Bytes of the donation still free.
    pub storage_free: u64,
    /// Upload/download limit in bytes per second; 0 = unlimited.
    pub bandwidth_limit: u64,
    /// Current load, 0.0 (idle) ..= 1.0 (saturated).
    pub load: f32,
    pub uptime_secs: u64,
    pub coordinator_eligible: bool,
    /// The node's X25519 public key: sequences are sealed to it.
    pub x25519_public: [u8; 32],
    pub protocol_version: u32,
    /// When the node was last heard from (announcement or direct contact).
    pub last_seen: Millis,
    /// Whether the node is currently reachable. Offline nodes stay in the
    /// view (their packets still count) but are never chosen as targets.
    pub online: bool,
    /// The public network (IPv4 /24, IPv6 /64) of the node's observed
    /// address, when it has a public one: a failure domain (see
    /// [`crate::network`]). `None` for loopback, private or unknown addresses.
    #[serde(default)]
    pub network: Option<NetworkDomain>,
    /// The node is behind NAT (AutoNAT): reachable only through relays and
    /// hole punching, so placement prefers directly reachable nodes.
    #[serde(default)]
    pub behind_nat: bool,
}

impl NodeProfile {
    /// A profile with the given identity, location and free storage, online,
    /// idle, unlimited bandwidth; other fields zero. Handy for simulators and tests.
    pub fn new(node_id: NodeId, location: GeoPoint, storage_free: u64, now: Millis) -> Self {
        NodeProfile {
            node_id,
            location,
            storage_allocated: storage_free,
            storage_free,
            bandwidth_limit: 0,
            load: 0.0,
            uptime_secs: 0,
            coordinator_eligible: false,
            x25519_public: [0; 32],
            protocol_version: 1,
            last_seen: now,
            online: true,
            network: None,
            behind_nat: false,
        }
    }
}

/// One online node in the spatial index: its unit-sphere position and id.
#[derive(Clone, Debug, PartialEq)]
struct Indexed {
    xyz: [f64; 3],
    id: NodeId,
}

impl RTreeObject for Indexed {
    type Envelope = AABB<[f64; 3]>;
    fn envelope(&self) -> Self::Envelope {
        AABB::from_point(self.xyz)
    }
}

impl PointDistance for Indexed {
    fn distance_2(&self, point: &[f64; 3]) -> f64 {
        let d = [
            self.xyz[0] - point[0],
            self.xyz[1] - point[1],
            self.xyz[2] - point[2],
        ];
        d[0] * d[0] + d[1] * d[1] + d[2] * d[2]
    }
}

/// Every known node, by id, with a spatial index over the online ones.
#[derive(Clone, Debug, Default)]
pub struct GridView {
    nodes: BTreeMap<NodeId, NodeProfile>,
    index: RTree<Indexed>,
    by_last_seen: BTreeSet<(Millis, NodeId)>,
    /// Online nodes in a dense list, for O(1) uniform sampling by placement.
    online_ids: Vec<(NodeId, GeoPoint)>,
    online_pos: BTreeMap<NodeId, usize>,
}

impl GridView {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a view from many profiles at once (bulk-loads the index).
    pub fn from_profiles(profiles: impl IntoIterator<Item = NodeProfile>) -> Self {
        let mut nodes = BTreeMap::new();
        for profile in profiles {
            nodes.insert(profile.node_id, profile);
        }
        let index = RTree::bulk_load(
            nodes
                .values()
                .map(|p| Indexed {
                    xyz: p.location.unit_vector(),
                    id: p.node_id,
                })
                .collect(),
        );
        let by_last_seen = nodes.values().map(|p| (p.last_seen, p.node_id)).collect();
        let online_ids: Vec<(NodeId, GeoPoint)> = nodes
            .values()
            .filter(|p| p.online)
            .map(|p| (p.node_id, p.location))
            .collect();
        let online_pos = online_ids
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        GridView {
            nodes,
            index,
            by_last_seen,
            online_ids,
            online_pos,
        }
    }

    fn list_online(&mut self, id: NodeId, location: GeoPoint) {
        if !self.online_pos.contains_key(&id) {
            self.online_pos.insert(id, self.online_ids.len());
            self.online_ids.push((id, location));
        }
    }

    fn unlist_online(&mut self, id: &NodeId) {
        if let Some(pos) = self.online_pos.remove(id) {
            self.online_ids.swap_remove(pos);
            if let Some((moved, _)) = self.online_ids.get(pos) {
                self.online_pos.insert(*moved, pos);
            }
        }
    }

    fn unindex(&mut self, profile: &NodeProfile) {
        self.index.remove(&Indexed {
            xyz: profile.location.unit_vector(),
            id: profile.node_id,
        });
        self.unlist_online(&profile.node_id);
        self.by_last_seen
            .remove(&(profile.last_seen, profile.node_id));
    }

    fn reindex(&mut self, profile: &NodeProfile) {
        self.index.insert(Indexed {
            xyz: profile.location.unit_vector(),
            id: profile.node_id,
        });
        if profile.online {
            self.list_online(profile.node_id, profile.location);
        }
        self.by_last_seen
            .insert((profile.last_seen, profile.node_id));
    }

    /// Inserts or replaces a node's profile. O(log n); the spatial index is
    /// only touched when the location changes. Returns the previous profile.
    pub fn upsert(&mut self, profile: NodeProfile) -> Option<NodeProfile> {
        let id = profile.node_id;
        let previous = self.nodes.remove(&id);
        match &previous {
            Some(old) if old.location == profile.location => {
                if old.last_seen != profile.last_seen {
                    self.by_last_seen.remove(&(old.last_seen, id));
                    self.by_last_seen.insert((profile.last_seen, id));
                }
                if profile.online {
                    self.list_online(id, profile.location);
                } else {
                    self.unlist_online(&id);
                }
            }
            Some(old) => {
                self.unindex(old);
                self.reindex(&profile);
            }
            None => self.reindex(&profile),
        }
        self.nodes.insert(id, profile);
        previous
    }

    /// Forgets a node. O(log n).
    pub fn remove(&mut self, id: &NodeId) -> Option<NodeProfile> {
        let old = self.nodes.remove(id)?;
        self.unindex(&old);
        Some(old)
    }

    /// Removes every node not seen since `now - ttl` and returns their ids
    /// (in last-seen order). O(k log n) for k expired nodes.
    pub fn expire(&mut self, now: Millis, ttl: Millis) -> Vec<NodeId> {
        let cutoff = now.saturating_sub(ttl);
        let stale: Vec<NodeId> = self
            .by_last_seen
            .range(..(cutoff, NodeId([0; 32])))
            .map(|(_, id)| *id)
            .collect();
        for id in &stale {
            self.remove(id);
        }
        stale
    }

    /// Marks a node online or offline. O(log n), and no spatial-index work:
    /// the index holds every node and queries skip offline ones. Returns false
    /// for an unknown node.
    pub fn set_online(&mut self, id: &NodeId, online: bool) -> bool {
        let Some(profile) = self.nodes.get_mut(id) else {
            return false;
        };
        if profile.online != online {
            profile.online = online;
            let location = profile.location;
            if online {
                self.list_online(*id, location);
            } else {
                self.unlist_online(id);
            }
        }
        true
    }

    /// Records that a node was heard from at `now`. O(log n).
    pub fn touch(&mut self, id: &NodeId, now: Millis) -> bool {
        let Some(profile) = self.nodes.get_mut(id) else {
            return false;
        };
        self.by_last_seen.remove(&(profile.last_seen, *id));
        profile.last_seen = now;
        self.by_last_seen.insert((now, *id));
        true
    }

    /// Sets a node's free storage (after packets were stored or deleted). O(log n).
    pub fn set_free(&mut self, id: &NodeId, storage_free: u64) -> bool {
        match self.nodes.get_mut(id) {
            Some(profile) => {
                profile.storage_free = storage_free;
                true
            }
            None => false,
        }
    }

    /// Sets a node's load (0..=1). O(log n).
    pub fn set_load(&mut self, id: &NodeId, load: f32) -> bool {
        match self.nodes.get_mut(id) {
            Some(profile) => {
                profile.load = load;
                true
            }
            None => false,
        }
    }

    pub fn get(&self, id: &NodeId) -> Option<&NodeProfile> {
        self.nodes.get(id)
    }

    pub fn contains(&self, id: &NodeId) -> bool {
        self.nodes.contains_key(id)
    }

    /// Number of known nodes, online or not.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Number of online nodes.
    pub fn online_len(&self) -> usize {
        self.online_ids.len()
    }

    /// The `i`-th online node of an internal dense list (0 ≤ i < [`Self::online_len`]),
    /// for uniform sampling in O(1). The order is arbitrary but depends only on
    /// the sequence of updates, so replays are deterministic.
    pub fn online_at(&self, i: usize) -> Option<&NodeProfile> {
        self.online_ids
            .get(i)
            .and_then(|(id, _)| self.nodes.get(id))
    }

    /// Id and location of the `i`-th online node (as [`Self::online_at`]), without a map lookup.
    pub fn online_location_at(&self, i: usize) -> Option<(NodeId, GeoPoint)> {
        self.online_ids.get(i).copied()
    }

    /// Every known node in `NodeId` order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeProfile> {
        self.nodes.values()
    }

    /// Online nodes whose great-circle distance from `center` lies in `range`,
    /// with that distance in km, sorted by `NodeId`. O(log n + k) for a bounded
    /// range (k nodes within the outer radius); a range without a maximum scans
    /// the online nodes.
    pub fn ring_with_distances(
        &self,
        center: &GeoPoint,
        range: &DistanceRange,
    ) -> Vec<(&NodeProfile, f64)> {
        let mut out = Vec::new();
        let mut consider = |item: &Indexed| {
            if let Some(profile) = self.nodes.get(&item.id).filter(|p| p.online) {
                let d = haversine_km(center, &profile.location);
                if range.contains(d) {
                    out.push((profile, d));
                }
            }
        };
        match range.max_km {
            Some(max) => {
                // A hair of slack so rounding in the chord never drops a node
                // the exact haversine test would accept.
                let r = chord_for_km(max) * (1.0 + 1e-9) + 1e-12;
                for item in self
                    .index
                    .locate_within_distance(center.unit_vector(), r * r)
                {
                    consider(item);
                }
            }
            None => {
                for item in self.index.iter() {
                    consider(item);
                }
            }
        }
        out.sort_unstable_by_key(|(p, _)| p.node_id);
        out
    }

    /// Online nodes in the ring `range` around `center`, sorted by `NodeId`.
    pub fn in_ring(&self, center: &GeoPoint, range: &DistanceRange) -> Vec<&NodeProfile> {
        self.ring_with_distances(center, range)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    }

    /// Online nodes by increasing distance from `center`, lazily, with the distance in km.
    /// Each step costs O(log n).
    pub fn nearest_online<'a>(
        &'a self,
        center: &GeoPoint,
    ) -> impl Iterator<Item = (&'a NodeProfile, f64)> + 'a {
        let center = *center;
        self.index
            .nearest_neighbor_iter(&center.unit_vector())
            .filter_map(move |item| {
                self.nodes
                    .get(&item.id)
                    .filter(|p| p.online)
                    .map(|p| (p, haversine_km(&center, &p.location)))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn node(n: u8, lat: f64, lon: f64, now: Millis) -> NodeProfile {
        NodeProfile::new(id(n), GeoPoint::new(lat, lon).unwrap(), 1 << 30, now)
    }

    #[test]
    fn ring_query_returns_exactly_the_online_nodes_in_range() {
        let mut view = GridView::new();
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        view.upsert(node(1, 48.86, 2.35, 0)); // Paris, ~0 km
        view.upsert(node(2, 51.5074, -0.1278, 0)); // London, ~344 km
        view.upsert(node(3, 52.52, 13.405, 0)); // Berlin, ~878 km
        view.upsert(node(4, 40.7128, -74.006, 0)); // New York, ~5837 km
        let ring = DistanceRange::km(Some(100.0), Some(1000.0)).unwrap();
        let ids: Vec<NodeId> = view
            .in_ring(&paris, &ring)
            .iter()
            .map(|p| p.node_id)
            .collect();
        assert_eq!(ids, vec![id(2), id(3)]);

        assert!(view.set_online(&id(3), false));
        let ids: Vec<NodeId> = view
            .in_ring(&paris, &ring)
            .iter()
            .map(|p| p.node_id)
            .collect();
        assert_eq!(ids, vec![id(2)]);
        assert_eq!(view.len(), 4);
        assert_eq!(view.online_len(), 3);
        let listed: BTreeSet<NodeId> = (0..3).map(|i| view.online_at(i).unwrap().node_id).collect();
        assert_eq!(listed, [id(1), id(2), id(4)].into_iter().collect());
        assert!(view.online_at(3).is_none());

        let open = DistanceRange::km(Some(1000.0), None).unwrap();
        let ids: Vec<NodeId> = view
            .in_ring(&paris, &open)
            .iter()
            .map(|p| p.node_id)
            .collect();
        assert_eq!(ids, vec![id(4)]);
    }

    #[test]
    fn moving_a_node_moves_it_in_the_index() {
        let mut view = GridView::new();
        let paris = GeoPoint::new(48.8566, 2.3522).unwrap();
        view.upsert(node(1, 48.86, 2.35, 0));
        let near = DistanceRange::km(None, Some(50.0)).unwrap();
        assert_eq!(view.in_ring(&paris, &near).len(), 1);
        view.upsert(node(1, 40.7128, -74.006, 5));
        assert!(view.in_ring(&paris, &near).is_empty());
        assert_eq!(view.online_len(), 1);
        let nearest: Vec<_> = view.nearest_online(&paris).collect();
        assert_eq!(nearest.len(), 1);
        assert!(nearest[0].1 > 5000.0);
    }

    #[test]
    fn expiry_removes_only_stale_nodes() {
        let mut view = GridView::new();
        view.upsert(node(1, 10.0, 10.0, 1_000));
        view.upsert(node(2, 11.0, 10.0, 5_000));
        view.upsert(node(3, 12.0, 10.0, 9_000));
        view.touch(&id(1), 9_500);
        let gone = view.expire(10_000, 4_000);
        assert_eq!(gone, vec![id(2)]);
        assert_eq!(view.len(), 2);
        assert_eq!(view.online_len(), 2);
        assert!(view.get(&id(2)).is_none());
        assert!(!view.set_online(&id(2), true));
    }

    #[test]
    fn bulk_built_view_matches_incremental_one() {
        let profiles: Vec<NodeProfile> = (0..50u8)
            .map(|n| {
                let mut p = node(n, -60.0 + 2.5 * n as f64, -170.0 + 7.0 * n as f64, 0);
                p.online = n % 3 != 0;
                p
            })
            .collect();
        let bulk = GridView::from_profiles(profiles.clone());
        let mut incremental = GridView::new();
        for p in profiles {
            incremental.upsert(p);
        }
        let center = GeoPoint::new(0.0, 0.0).unwrap();
        let range = DistanceRange::km(Some(1000.0), Some(9000.0)).unwrap();
        let a: Vec<_> = bulk
            .in_ring(&center, &range)
            .iter()
            .map(|p| p.node_id)
            .collect();
        let b: Vec<_> = incremental
            .in_ring(&center, &range)
            .iter()
            .map(|p| p.node_id)
            .collect();
        assert_eq!(a, b);
        assert!(!a.is_empty());
        assert_eq!(bulk.online_len(), incremental.online_len());
    }

    #[test]
    fn random_updates_keep_the_view_equal_to_a_naive_model() {
        use rand::rngs::Xoshiro256PlusPlus;
        use rand::{RngExt, SeedableRng};
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        let mut view = GridView::new();
        let mut model: BTreeMap<NodeId, NodeProfile> = BTreeMap::new();
        let center = GeoPoint::new(48.0, 8.0).unwrap();
        let range = DistanceRange::km(Some(100.0), Some(900.0)).unwrap();
        for step in 0..3000u64 {
            let n = rng.random_range(0..40u8);
            match rng.random_range(0..5) {
                0 | 1 => {
                    let mut p = node(
                        n,
                        rng.random_range(40.0..56.0),
                        rng.random_range(-2.0..18.0),
                        step,
                    );
                    if let Some(old) = model.get(&id(n)).filter(|_| rng.random_bool(0.5)) {
                        p.location = old.location; // an update that keeps the location
                    }
                    p.online = rng.random_bool(0.7);
                    view.upsert(p.clone());
                    model.insert(id(n), p);
                }
                2 => {
                    let online = rng.random_bool(0.5);
                    assert_eq!(view.set_online(&id(n), online), model.contains_key(&id(n)));
                    if let Some(p) = model.get_mut(&id(n)) {
                        p.online = online;
                    }
                }
                3 => {
                    assert_eq!(
                        view.remove(&id(n)).is_some(),
                        model.remove(&id(n)).is_some()
                    );
                }
                _ => {
                    let gone = view.expire(step, 400);
                    let stale: Vec<NodeId> = model
                        .values()
                        .filter(|p| p.last_seen < step.saturating_sub(400))
                        .map(|p| p.node_id)
                        .collect();
                    let gone_set: BTreeSet<NodeId> = gone.into_iter().collect();
                    assert_eq!(gone_set, stale.iter().copied().collect());
                    for id in stale {
                        model.remove(&id);
                    }
                }
            }
            let want: Vec<NodeId> = model
                .values()
                .filter(|p| p.online && range.contains(haversine_km(&center, &p.location)))
                .map(|p| p.node_id)
                .collect();
            let got: Vec<NodeId> = view
                .in_ring(&center, &range)
                .iter()
                .map(|p| p.node_id)
                .collect();
            assert_eq!(got, want, "step {step}");
            let online: BTreeSet<NodeId> = model
                .values()
                .filter(|p| p.online)
                .map(|p| p.node_id)
                .collect();
            assert_eq!(view.online_len(), online.len());
            let listed: BTreeSet<NodeId> = (0..view.online_len())
                .map(|i| view.online_location_at(i).unwrap().0)
                .collect();
            assert_eq!(listed, online);
            assert_eq!(view.len(), model.len());
        }
    }
}
