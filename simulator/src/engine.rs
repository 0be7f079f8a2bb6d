//! The discrete-event simulation of a grid.
//!
//! Owns the virtual nodes (location, capacity, online/dead/corrupted state),
//! the packets of every backup (which node holds which slot of which stripe),
//! the event loop in simulated milliseconds, and the counters the report is
//! built from. Every decision a real manager takes is delegated to the
//! coordinator library: the grid view ([`GridView`]), placement and
//! replacement placement ([`place`], [`place_replacements`]), the repair
//! policy ([`RepairPolicy`]) and the audit ledger ([`AuditLedger`]).
//! The engine only plays the world: churn, failures, disasters, and the truth
//! about which packets still exist.
//!
//! Determinism: one seeded RNG stream per concern, ties in the queue broken
//! by scheduling order, nodes and stripes in index order, and no hash maps.
//! This module must not read clocks, touch files or print.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use strew_coordinator::audit::{AuditLedger, AuditOutcome, AuditPolicy, Standing};
use strew_coordinator::cities::CityTable;
use strew_coordinator::repair::{PacketStatus, RepairPolicy, StripeVerdict, repair_traffic};
use strew_coordinator::{
    GeoPoint, GridView, NodeId, NodeProfile, PlacementRequest, haversine_km, place,
    place_replacements,
};

use crate::queue::EventQueue;
use crate::scenario::{Locations, Scenario};

/// A slot with no packet (never placed, or given up by the manager).
const NONE: u32 = u32::MAX;

/// Errors that stop a simulation before it runs.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the embedded city table cannot be read")]
    Cities(#[source] &'static strew_coordinator::cities::CityError),
    #[error(
        "no city of the table lies within {radius_km} km of ({lat}, {lon}): widen `region.radius` or move `region`"
    )]
    EmptyRegion { lat: f64, lon: f64, radius_km: f64 },
    #[error(
        "the scenario needs {packets} packets, more than the simulator's limit of {limit}: use fewer objects or larger packets"
    )]
    TooManyPackets { packets: u64, limit: u64 },
}

/// Why a node failed, for the map and the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Alive,
    /// Independent permanent failure.
    Died,
    /// Killed by a regional disaster.
    Disaster,
    /// Silently lost its data (stays online until audits evict it).
    Corrupted,
}

/// One row of the timeline, taken every `sample_every`.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct TimelineRow {
    pub day: f64,
    pub online_nodes: u32,
    pub failed_nodes: u32,
    pub objects_lost: u64,
    pub packets_lost: u64,
    pub repair_bytes: u64,
    pub stripes_repaired: u64,
    pub pending_repairs: u64,
    /// Fraction of the sampled stored objects readable at this instant.
    pub availability: f64,
}

/// What one disaster did.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DisasterOutcome {
    pub day: f64,
    pub lat: f64,
    pub lon: f64,
    pub radius_km: f64,
    pub nodes_killed: u32,
    pub packets_destroyed: u64,
    /// The most packets one stripe lost in this disaster.
    pub max_packets_of_one_stripe: u32,
    /// Objects that became unrecoverable at this disaster.
    pub objects_lost: u64,
}

/// Everything the report is built from.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub objects: u64,
    pub objects_stored: u64,
    pub objects_lost: u64,
    pub placement_failures: u64,
    pub placement_refusal_example: Option<String>,
    pub packets_stored: u64,
    pub packets_lost: u64,
    pub packets_given_up: u64,
    pub packets_readopted: u64,
    pub nodes_failed: u32,
    pub nodes_corrupted: u32,
    pub nodes_evicted: u32,
    pub repair_bytes: u64,
    pub repair_bytes_read: u64,
    pub repair_bytes_written: u64,
    pub stripes_repaired: u64,
    pub packets_rebuilt: u64,
    pub repair_refusals: u64,
    pub pending_repairs_at_end: u64,
    pub audits: (u64, u64, u64),
    pub availability: f64,
    pub events: u64,
    pub timeline: Vec<TimelineRow>,
    pub disasters: Vec<DisasterOutcome>,
    /// Utilisation (used / donated) of every node still alive at the end.
    pub utilisation: Vec<f64>,
    /// Location and fate of every node.
    pub nodes: Vec<(GeoPoint, Fate)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    /// Churn: an online node leaves, or an offline one returns.
    Toggle(u32),
    /// The grace period of a node that went offline in the given epoch ends.
    Grace(u32, u32),
    Die(u32),
    Corrupt(u32),
    Disaster(u32),
    Audit,
    RepairRetry,
    Sample,
}

/// RNG streams, one per concern, so that changing one model does not reshuffle the others.
fn stream(seed: u64, concern: u64) -> Xoshiro256PlusPlus {
    Xoshiro256PlusPlus::seed_from_u64(seed ^ concern.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// The virtual node with index `i`: its id carries the index in its first 4 bytes.
pub fn node_id(i: u32) -> NodeId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&i.to_be_bytes());
    bytes[4] = 0x5e; // marks simulator ids
    NodeId(bytes)
}

fn node_index(id: &NodeId) -> u32 {
    u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

fn uniform_sphere(rng: &mut Xoshiro256PlusPlus) -> GeoPoint {
    let z: f64 = rng.random::<f64>() * 2.0 - 1.0;
    let lon: f64 = rng.random::<f64>() * 360.0 - 180.0;
    GeoPoint {
        lat: z.asin().to_degrees(),
        lon,
    }
}

struct Sim<'a> {
    sc: &'a Scenario,
    now: u64,
    queue: EventQueue<Event>,
    view: GridView,
    // nodes (struct of arrays, by index)
    loc: Vec<GeoPoint>,
    capacity: Vec<u64>,
    used: Vec<u64>,
    online: Vec<bool>,
    dead: Vec<bool>,
    corrupted: Vec<bool>,
    gone: Vec<bool>,
    evicted: Vec<bool>,
    epoch: Vec<u32>,
    offline_since: Vec<u64>,
    fate: Vec<Fate>,
    held: Vec<Vec<u32>>,
    /// Packets a node still stores physically after the manager gave up on it (lazily validated by `ghost`).
    ghosts_of: Vec<Vec<u32>>,
    view_online: Vec<bool>,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    online_count: u32,
    // packets
    width: usize,
    k: usize,
    stripes_per_object: usize,
    slots: Vec<u32>,
    /// Per packet: a node holding a copy the manager gave up on, not yet superseded (or NONE).
    ghost: Vec<u32>,
    /// Per stripe: copies that physically exist (in a slot or as a ghost) on nodes neither dead nor rotten.
    alive: Vec<u16>,
    stored: Vec<bool>,
    lost: Vec<bool>,
    source: Vec<u32>,
    pending: BTreeSet<u32>,
    /// Stripes whose replacement placement was refused: (not before, refusals).
    backoff: BTreeMap<u32, (u64, u32)>,
    // policy
    repair: RepairPolicy,
    audit_policy: AuditPolicy,
    ledger: AuditLedger,
    // rngs
    rng_churn: Xoshiro256PlusPlus,
    rng_place: Xoshiro256PlusPlus,
    rng_audit: Xoshiro256PlusPlus,
    // counters
    out: Outcome,
    availability_sum: f64,
}

/// Runs `scenario` with `seed` and returns what happened.
pub fn simulate(scenario: &Scenario, seed: u64) -> Result<Outcome, EngineError> {
    let mut sim = Sim::new(scenario, seed)?;
    sim.place_backups();
    sim.schedule_world();
    sim.run();
    Ok(sim.finish())
}

impl<'a> Sim<'a> {
    fn new(sc: &'a Scenario, seed: u64) -> Result<Self, EngineError> {
        let n = sc.nodes as usize;
        let width = sc.backup.redundancy.width();
        let stripes_per_object = sc.backup.stripes_per_object() as usize;
        let packets = u64::from(sc.backup.objects) * stripes_per_object as u64 * width as u64;
        let limit = u64::from(u32::MAX - 1);
        if packets > limit {
            return Err(EngineError::TooManyPackets { packets, limit });
        }
        let mut rng_nodes = stream(seed, 1);
        let mut rng_storage = stream(seed, 2);
        let mut loc = Vec::with_capacity(n);
        match sc.locations {
            Locations::Cities { jitter_km, region } => {
                let world = CityTable::embedded().map_err(EngineError::Cities)?;
                let regional;
                let table = match region {
                    None => world,
                    Some(r) => {
                        regional = world
                            .filtered(|c| {
                                haversine_km(
                                    &GeoPoint {
                                        lat: c.lat,
                                        lon: c.lon,
                                    },
                                    &r.center,
                                ) <= r.radius_km
                            })
                            .ok_or(EngineError::EmptyRegion {
                                lat: r.center.lat,
                                lon: r.center.lon,
                                radius_km: r.radius_km,
                            })?;
                        &regional
                    }
                };
                for _ in 0..n {
                    let (lat, lon) = table.sample_location(&mut rng_nodes, jitter_km);
                    loc.push(GeoPoint { lat, lon });
                }
            }
            Locations::Uniform => {
                for _ in 0..n {
                    loc.push(uniform_sphere(&mut rng_nodes));
                }
            }
        }
        let capacity: Vec<u64> = (0..n)
            .map(|_| sc.storage.sample(&mut rng_storage) as u64)
            .collect();
        let mut rng_churn = stream(seed, 3);
        let online: Vec<bool> = match &sc.churn {
            None => vec![true; n],
            Some(c) => {
                let s = c.session.mean();
                let availability = if s.is_infinite() {
                    1.0
                } else {
                    s / (s + c.downtime.mean())
                };
                (0..n)
                    .map(|_| rng_churn.random::<f64>() < availability)
                    .collect()
            }
        };
        let view = GridView::from_profiles((0..n).map(|i| {
            let mut p = NodeProfile::new(node_id(i as u32), loc[i], capacity[i], 0);
            p.online = online[i];
            p
        }));
        let objects = sc.backup.objects as usize;
        let stripes = objects * stripes_per_object;
        let online_count = online.iter().filter(|&&o| o).count() as u32;
        Ok(Sim {
            sc,
            now: 0,
            queue: EventQueue::new(),
            view,
            used: vec![0; n],
            dead: vec![false; n],
            corrupted: vec![false; n],
            gone: vec![false; n],
            evicted: vec![false; n],
            epoch: vec![0; n],
            offline_since: vec![0; n],
            fate: vec![Fate::Alive; n],
            held: vec![Vec::new(); n],
            ghosts_of: vec![Vec::new(); n],
            view_online: online.clone(),
            dirty: Vec::new(),
            is_dirty: vec![false; n],
            online_count,
            online,
            loc,
            capacity,
            width,
            k: sc.backup.redundancy.data_packets(),
            stripes_per_object,
            slots: vec![NONE; stripes * width],
            ghost: vec![NONE; stripes * width],
            alive: vec![0; stripes],
            stored: vec![false; objects],
            lost: vec![false; objects],
            source: vec![0; objects],
            pending: BTreeSet::new(),
            backoff: BTreeMap::new(),
            repair: RepairPolicy {
                grace: sc.repair.grace_ms,
                threshold: sc.repair.threshold as usize,
            },
            audit_policy: AuditPolicy {
                interval: sc.audit.interval_ms,
                evict_after: sc.audit.evict_after,
            },
            ledger: AuditLedger::new(),
            rng_churn,
            rng_place: stream(seed, 5),
            rng_audit: stream(seed, 7),
            out: Outcome {
                seed,
                objects: objects as u64,
                objects_stored: 0,
                objects_lost: 0,
                placement_failures: 0,
                placement_refusal_example: None,
                packets_stored: 0,
                packets_lost: 0,
                packets_given_up: 0,
                packets_readopted: 0,
                nodes_failed: 0,
                nodes_corrupted: 0,
                nodes_evicted: 0,
                repair_bytes: 0,
                repair_bytes_read: 0,
                repair_bytes_written: 0,
                stripes_repaired: 0,
                packets_rebuilt: 0,
                repair_refusals: 0,
                pending_repairs_at_end: 0,
                audits: (0, 0, 0),
                availability: 1.0,
                events: 0,
                timeline: Vec::new(),
                disasters: Vec::new(),
                utilisation: Vec::new(),
                nodes: Vec::new(),
            },
            availability_sum: 0.0,
        })
    }

    fn request(&self, object: usize) -> PlacementRequest {
        let src = self.source[object];
        PlacementRequest {
            source: self.loc[src as usize],
            source_node: Some(node_id(src)),
            backup_distance: self.sc.backup.backup_distance,
            spread: self.sc.backup.spread,
            redundancy: self.sc.backup.redundancy,
            stripes: self.stripes_per_object as u32,
            packet_size: self.sc.backup.packet_size,
        }
    }

    fn book(&mut self, node: u32, delta: i64) {
        let i = node as usize;
        self.used[i] = if delta >= 0 {
            self.used[i].saturating_add(delta as u64)
        } else {
            self.used[i].saturating_sub(delta.unsigned_abs())
        };
        let free = self.capacity[i].saturating_sub(self.used[i]);
        self.view.set_free(&node_id(node), free);
    }

    /// Whether the packet in a slot exists physically (its node neither dead nor corrupted).
    fn exists_on(&self, node: u32) -> bool {
        !self.dead[node as usize] && !self.corrupted[node as usize]
    }

    // ------------------------------------------------------------ placement

    fn place_backups(&mut self) {
        let n = self.sc.nodes;
        let mut rng_sources = stream(self.out.seed, 6);
        let packet_size = self.sc.backup.packet_size as i64;
        for object in 0..self.sc.backup.objects as usize {
            self.source[object] = rng_sources.random_range(0..n);
            let req = self.request(object);
            match place(&self.view, &req, &mut self.rng_place) {
                Ok(placement) => {
                    self.stored[object] = true;
                    self.out.objects_stored += 1;
                    for (i, stripe) in placement.stripes.iter().enumerate() {
                        let s = object * self.stripes_per_object + i;
                        for (j, target) in stripe.iter().enumerate() {
                            let node = node_index(target);
                            let p = s * self.width + j;
                            self.slots[p] = node;
                            self.held[node as usize].push(p as u32);
                            self.alive[s] += 1;
                            self.out.packets_stored += 1;
                            self.book(node, packet_size);
                        }
                    }
                }
                Err(refusal) => {
                    self.out.placement_failures += 1;
                    if self.out.placement_refusal_example.is_none() {
                        self.out.placement_refusal_example = Some(refusal.to_string());
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ world model

    fn schedule_world(&mut self) {
        let sc = self.sc;
        let horizon = sc.horizon_ms;
        if let Some(churn) = &sc.churn {
            for i in 0..sc.nodes {
                let d = if self.online[i as usize] {
                    &churn.session
                } else {
                    &churn.downtime
                };
                let at = d.sample(&mut self.rng_churn).ceil() as u64;
                self.schedule(at.max(1), Event::Toggle(i));
                if !self.online[i as usize] && sc.repair.enabled && at > self.repair.grace {
                    self.schedule(self.repair.grace, Event::Grace(i, 0));
                }
            }
        }
        let mut rng_fail = stream(self.out.seed, 4);
        for i in 0..sc.nodes {
            if sc.failures.permanent_probability > 0.0
                && rng_fail.random::<f64>() < sc.failures.permanent_probability
            {
                let at = 1 + (rng_fail.random::<f64>() * (horizon - 1) as f64) as u64;
                self.schedule(at, Event::Die(i));
            }
        }
        let mut rng_corrupt = stream(self.out.seed, 8);
        for i in 0..sc.nodes {
            if sc.failures.corruption_probability > 0.0
                && rng_corrupt.random::<f64>() < sc.failures.corruption_probability
            {
                let at = 1 + (rng_corrupt.random::<f64>() * (horizon - 1) as f64) as u64;
                self.schedule(at, Event::Corrupt(i));
            }
        }
        for (i, d) in sc.failures.disasters.iter().enumerate() {
            self.schedule(d.at_ms, Event::Disaster(i as u32));
        }
        if sc.audit.enabled {
            self.schedule(sc.audit.interval_ms, Event::Audit);
        }
        if sc.repair.enabled {
            self.schedule(sc.repair.retry_every_ms, Event::RepairRetry);
        }
        self.schedule(sc.sample_every_ms.min(horizon), Event::Sample);
    }

    fn schedule(&mut self, at: u64, event: Event) {
        if at <= self.sc.horizon_ms {
            self.queue.push(at, event);
        }
    }

    fn run(&mut self) {
        while let Some((at, event)) = self.queue.pop() {
            self.now = at;
            self.out.events += 1;
            match event {
                Event::Toggle(i) => self.toggle(i),
                Event::Grace(i, epoch) => {
                    let u = i as usize;
                    if !self.online[u] && self.epoch[u] == epoch && !self.gone[u] {
                        self.give_up(i);
                    }
                }
                Event::Die(i) => {
                    self.die(i, Fate::Died);
                }
                Event::Corrupt(i) => self.corrupt(i),
                Event::Disaster(d) => self.disaster(d),
                Event::Audit => self.audit(),
                Event::RepairRetry => {
                    self.retry_repairs();
                    self.schedule(at + self.sc.repair.retry_every_ms, Event::RepairRetry);
                }
                Event::Sample => {
                    self.sample();
                    let next = (at + self.sc.sample_every_ms).min(self.sc.horizon_ms);
                    if next > at {
                        self.schedule(next, Event::Sample);
                    }
                }
            }
        }
    }

    fn mark_dirty(&mut self, i: u32) {
        if !self.is_dirty[i as usize] {
            self.is_dirty[i as usize] = true;
            self.dirty.push(i);
        }
    }

    /// Brings the grid view's online flags up to date (only net changes cost an index update).
    fn sync_view(&mut self) {
        for i in std::mem::take(&mut self.dirty) {
            let u = i as usize;
            self.is_dirty[u] = false;
            let want = self.online[u] && !self.gone[u] && !self.dead[u];
            if want != self.view_online[u] {
                self.view.set_online(&node_id(i), want);
                self.view_online[u] = want;
            }
        }
    }

    /// Takes a node offline. `back_at` is when churn brings it back (None: never);
    /// the grace timer is only scheduled if it can expire before then.
    fn go_offline(&mut self, i: u32, back_at: Option<u64>) {
        let u = i as usize;
        if !self.online[u] {
            return;
        }
        self.online[u] = false;
        self.online_count -= 1;
        self.epoch[u] = self.epoch[u].wrapping_add(1);
        self.offline_since[u] = self.now;
        self.mark_dirty(i);
        let expires = self.now.saturating_add(self.repair.grace);
        if back_at.is_none_or(|back| back > expires) {
            self.schedule_grace(i);
        }
    }

    /// Schedules the end of the grace period of an offline node's current absence.
    fn schedule_grace(&mut self, i: u32) {
        let u = i as usize;
        if self.sc.repair.enabled && !self.gone[u] {
            let at = self.offline_since[u].saturating_add(self.repair.grace);
            self.schedule(at.max(self.now), Event::Grace(i, self.epoch[u]));
        }
    }

    fn toggle(&mut self, i: u32) {
        let u = i as usize;
        let Some(churn) = &self.sc.churn else { return };
        if self.dead[u] {
            return;
        }
        if self.online[u] {
            let next = self.now + churn.downtime.sample(&mut self.rng_churn).ceil().max(1.0) as u64;
            self.go_offline(i, Some(next));
            self.schedule(next, Event::Toggle(i));
        } else {
            let next = self.now + churn.session.sample(&mut self.rng_churn).ceil().max(1.0) as u64;
            self.online[u] = true;
            self.online_count += 1;
            if self.gone[u] && !self.evicted[u] {
                self.readopt(i);
            }
            self.mark_dirty(i);
            self.schedule(next, Event::Toggle(i));
        }
    }

    /// A node the manager gave up on is back: the packets whose slots were not
    /// rebuilt meanwhile are taken back; the rest was garbage and is deleted.
    fn readopt(&mut self, i: u32) {
        let u = i as usize;
        self.gone[u] = false;
        self.used[u] = 0;
        let size = self.sc.backup.packet_size;
        for p in std::mem::take(&mut self.ghosts_of[u]) {
            let pu = p as usize;
            if self.ghost[pu] == i && self.slots[pu] == NONE {
                self.ghost[pu] = NONE;
                self.slots[pu] = i;
                self.held[u].push(p);
                self.used[u] = self.used[u].saturating_add(size);
                self.out.packets_readopted += 1;
            }
        }
        let free = self.capacity[u].saturating_sub(self.used[u]);
        self.view.set_free(&node_id(i), free);
    }

    /// A slot's packet stops existing (its node died or rotted): count it, check its object.
    fn destroy(&mut self, p: usize) {
        let s = p / self.width;
        self.alive[s] = self.alive[s].saturating_sub(1);
        self.out.packets_lost += 1;
        self.check_loss(s);
    }

    fn check_loss(&mut self, s: usize) {
        let object = s / self.stripes_per_object;
        if usize::from(self.alive[s]) < self.k && !self.lost[object] && self.stored[object] {
            self.lost[object] = true;
            self.out.objects_lost += 1;
            self.settle(s as u32);
        }
    }

    /// Valid packets the node holds (drops stale entries).
    fn compact_held(&mut self, i: u32) {
        let slots = &self.slots;
        self.held[i as usize].retain(|&p| slots[p as usize] == i);
    }

    fn die(&mut self, i: u32, fate: Fate) -> Vec<u32> {
        let u = i as usize;
        if self.dead[u] {
            return Vec::new();
        }
        if self.online[u] {
            self.go_offline(i, None);
        } else {
            // Its absence will now never end: make sure the grace timer runs.
            self.schedule_grace(i);
        }
        self.dead[u] = true;
        if self.fate[u] == Fate::Alive {
            self.fate[u] = fate;
        }
        self.out.nodes_failed += 1;
        self.compact_held(i);
        let mut stripes = Vec::new();
        if !self.corrupted[u] {
            stripes = self.destroy_all_on(i);
        }
        stripes
    }

    /// Every copy on node `i` (in slots or ghosts) stops existing; returns the stripes hit.
    fn destroy_all_on(&mut self, i: u32) -> Vec<u32> {
        let u = i as usize;
        let mut stripes = Vec::new();
        // The node keeps its slots until the manager gives up on it.
        let held = std::mem::take(&mut self.held[u]);
        for &p in &held {
            self.destroy(p as usize);
            stripes.push(p / self.width as u32);
        }
        self.held[u] = held;
        for p in std::mem::take(&mut self.ghosts_of[u]) {
            if self.ghost[p as usize] == i {
                self.ghost[p as usize] = NONE;
                self.destroy(p as usize);
                stripes.push(p / self.width as u32);
            }
        }
        stripes
    }

    fn corrupt(&mut self, i: u32) {
        let u = i as usize;
        if self.dead[u] || self.corrupted[u] {
            return;
        }
        self.corrupted[u] = true;
        self.fate[u] = Fate::Corrupted;
        self.out.nodes_corrupted += 1;
        self.compact_held(i);
        self.destroy_all_on(i);
    }

    fn disaster(&mut self, d: u32) {
        let Some(spec) = self.sc.failures.disasters.get(d as usize) else {
            return;
        };
        let (center, radius_km) = (spec.center, spec.radius_km);
        let lost_before = self.out.objects_lost;
        let packets_before = self.out.packets_lost;
        let mut hits: BTreeMap<u32, u32> = BTreeMap::new();
        let mut killed = 0;
        for i in 0..self.sc.nodes {
            if !self.dead[i as usize] && haversine_km(&self.loc[i as usize], &center) <= radius_km {
                killed += 1;
                for s in self.die(i, Fate::Disaster) {
                    *hits.entry(s).or_insert(0) += 1;
                }
            }
        }
        self.out.disasters.push(DisasterOutcome {
            day: self.now as f64 / 86_400_000.0,
            lat: center.lat,
            lon: center.lon,
            radius_km,
            nodes_killed: killed,
            packets_destroyed: self.out.packets_lost - packets_before,
            max_packets_of_one_stripe: hits.values().copied().max().unwrap_or(0),
            objects_lost: self.out.objects_lost - lost_before,
        });
    }

    // ------------------------------------------------------------ manager side

    /// The manager gives up on a node: its packets are dropped and rebuilt elsewhere.
    fn give_up(&mut self, i: u32) {
        let u = i as usize;
        if self.gone[u] {
            return;
        }
        self.gone[u] = true;
        self.mark_dirty(i);
        self.compact_held(i);
        let held = std::mem::take(&mut self.held[u]);
        let mut touched = Vec::with_capacity(held.len());
        for p in held {
            let p = p as usize;
            self.slots[p] = NONE;
            self.out.packets_given_up += 1;
            let s = p / self.width;
            if self.exists_on(i) {
                // The copy still exists on the node: a ghost the manager no longer counts on,
                // re-adopted if the node returns before the slot is rebuilt.
                self.ghost[p] = i;
                self.ghosts_of[u].push(p as u32);
            }
            touched.push(s as u32);
        }
        self.used[u] = 0;
        self.view.set_free(&node_id(i), self.capacity[u]);
        if self.sc.repair.enabled {
            for s in touched {
                if !self.lost[s as usize / self.stripes_per_object] {
                    self.pending.insert(s);
                    self.try_repair(s);
                }
            }
        }
    }

    fn status_of(&self, node: u32) -> PacketStatus {
        if node == NONE {
            PacketStatus::Missing
        } else if self.online[node as usize] {
            PacketStatus::Reachable
        } else {
            PacketStatus::Unreachable {
                since: self.offline_since[node as usize],
            }
        }
    }

    fn retry_repairs(&mut self) {
        let now = self.now;
        let waiting: Vec<u32> = self
            .pending
            .iter()
            .copied()
            .filter(|s| {
                self.backoff
                    .get(s)
                    .is_none_or(|&(not_before, _)| not_before <= now)
            })
            .collect();
        for s in waiting {
            self.try_repair(s);
        }
    }

    /// A stripe needs no more repair (healthy again, or lost).
    fn settle(&mut self, s: u32) {
        self.pending.remove(&s);
        self.backoff.remove(&s);
    }

    fn try_repair(&mut self, s: u32) {
        let su = s as usize;
        let object = su / self.stripes_per_object;
        if self.lost[object] {
            self.settle(s);
            return;
        }
        let base = su * self.width;
        // Reading a packet from a node that silently lost it fails verification:
        // the manager learns it is missing and assesses again (at most `width` rounds).
        for _ in 0..=self.width {
            let statuses: Vec<PacketStatus> = (0..self.width)
                .map(|j| self.status_of(self.slots[base + j]))
                .collect();
            match self
                .repair
                .assess(self.sc.backup.redundancy, &statuses, self.now)
            {
                StripeVerdict::Healthy { .. } => {
                    self.settle(s);
                    return;
                }
                // Copies the manager gave up on may still come back (`readopt`);
                // truly lost stripes leave `pending` in `check_loss`.
                StripeVerdict::Lost { .. } | StripeVerdict::Waiting { .. } => return,
                StripeVerdict::Rebuild { rebuild, read } => {
                    let rotten: Vec<usize> = read
                        .iter()
                        .copied()
                        .filter(|&j| self.corrupted[self.slots[base + j] as usize])
                        .collect();
                    if rotten.is_empty() {
                        self.rebuild(s, &rebuild);
                        return;
                    }
                    for j in rotten {
                        self.slots[base + j] = NONE;
                        self.out.packets_given_up += 1;
                    }
                }
            }
        }
    }

    fn rebuild(&mut self, s: u32, rebuild: &[usize]) {
        self.sync_view();
        let su = s as usize;
        let object = su / self.stripes_per_object;
        let base = su * self.width;
        let first = object * self.stripes_per_object * self.width;
        let last = first + self.stripes_per_object * self.width;
        let mut backup_targets: Vec<NodeId> = self.slots[first..last]
            .iter()
            .filter(|&&n| n != NONE)
            .map(|&n| node_id(n))
            .collect();
        backup_targets.sort_unstable();
        backup_targets.dedup();
        let survivors: Vec<NodeId> = (0..self.width)
            .filter(|j| !rebuild.contains(j))
            .map(|j| self.slots[base + j])
            .filter(|&n| n != NONE)
            .map(node_id)
            .collect();
        let req = self.request(object);
        match place_replacements(
            &self.view,
            &req,
            &backup_targets,
            &survivors,
            rebuild.len(),
            &mut self.rng_place,
        ) {
            Ok(new_targets) => {
                let size = self.sc.backup.packet_size;
                for (&j, target) in rebuild.iter().zip(&new_targets) {
                    let p = base + j;
                    let ghost = self.ghost[p];
                    if ghost != NONE {
                        // The given-up copy is superseded: garbage from now on.
                        self.ghost[p] = NONE;
                        self.alive[su] = self.alive[su].saturating_sub(1);
                    }
                    let old = self.slots[p];
                    if old != NONE {
                        // A copy away past its grace period is superseded.
                        if self.exists_on(old) {
                            self.alive[su] = self.alive[su].saturating_sub(1);
                        }
                        self.out.packets_given_up += 1;
                        self.book(old, -(size as i64));
                    }
                    let node = node_index(target);
                    self.slots[p] = node;
                    self.held[node as usize].push(p as u32);
                    self.book(node, size as i64);
                    if self.exists_on(node) {
                        self.alive[su] += 1;
                    }
                }
                let traffic = repair_traffic(self.sc.backup.redundancy, rebuild.len(), size);
                self.out.repair_bytes += traffic.total();
                self.out.repair_bytes_read += traffic.read;
                self.out.repair_bytes_written += traffic.written;
                self.out.stripes_repaired += 1;
                self.out.packets_rebuilt += rebuild.len() as u64;
                self.settle(s);
            }
            Err(_) => {
                // No compatible target now: retry later, backing off exponentially.
                self.out.repair_refusals += 1;
                let retry = self.sc.repair.retry_every_ms;
                let entry = self.backoff.entry(s).or_insert((0, 0));
                entry.1 = entry.1.saturating_add(1);
                entry.0 = self
                    .now
                    .saturating_add(retry.saturating_mul(1 << entry.1.min(8)));
            }
        }
    }

    fn audit(&mut self) {
        let now = self.now;
        for i in 0..self.sc.nodes {
            let u = i as usize;
            if self.dead[u] || self.gone[u] || !self.online[u] || self.held[u].is_empty() {
                continue;
            }
            self.compact_held(i);
            let count = self.held[u].len();
            if count == 0 {
                continue;
            }
            // Which packet is challenged only matters to a real target; draw it so the
            // RNG stream matches what a manager would consume.
            let _challenged = self.held[u][self.rng_audit.random_range(0..count)];
            let outcome = if self.corrupted[u] {
                AuditOutcome::Failed
            } else {
                AuditOutcome::Passed
            };
            let standing = self
                .ledger
                .record(&self.audit_policy, node_id(i), outcome, now);
            if standing == Standing::Evicted && !self.evicted[u] {
                self.evicted[u] = true;
                self.out.nodes_evicted += 1;
                self.give_up(i);
            }
        }
        self.schedule(now + self.sc.audit.interval_ms, Event::Audit);
    }

    // ------------------------------------------------------------ measurement

    fn sample(&mut self) {
        let objects = self.sc.backup.objects as usize;
        let stride = objects
            .div_ceil(self.sc.availability_sample as usize)
            .max(1);
        let (mut checked, mut readable) = (0u64, 0u64);
        for object in (0..objects).step_by(stride) {
            if !self.stored[object] {
                continue;
            }
            checked += 1;
            if self.lost[object] {
                continue;
            }
            let first = object * self.stripes_per_object;
            let ok = (first..first + self.stripes_per_object).all(|s| {
                let base = s * self.width;
                let readable_packets = (0..self.width)
                    .filter(|j| {
                        let n = self.slots[base + j];
                        n != NONE && self.online[n as usize] && !self.corrupted[n as usize]
                    })
                    .count();
                readable_packets >= self.k
            });
            if ok {
                readable += 1;
            }
        }
        let availability = if checked == 0 {
            1.0
        } else {
            readable as f64 / checked as f64
        };
        self.availability_sum += availability;
        self.out.timeline.push(TimelineRow {
            day: self.now as f64 / 86_400_000.0,
            online_nodes: self.online_count,
            failed_nodes: self.out.nodes_failed,
            objects_lost: self.out.objects_lost,
            packets_lost: self.out.packets_lost,
            repair_bytes: self.out.repair_bytes,
            stripes_repaired: self.out.stripes_repaired,
            pending_repairs: self.pending.len() as u64,
            availability,
        });
    }

    fn finish(mut self) -> Outcome {
        let samples = self.out.timeline.len();
        self.out.availability = if samples == 0 {
            1.0
        } else {
            self.availability_sum / samples as f64
        };
        self.out.pending_repairs_at_end = self.pending.len() as u64;
        self.out.audits = self.ledger.totals();
        self.out.utilisation = (0..self.sc.nodes as usize)
            .filter(|&i| !self.dead[i] && self.capacity[i] > 0)
            .map(|i| self.used[i] as f64 / self.capacity[i] as f64)
            .collect();
        self.out.nodes = self
            .loc
            .iter()
            .copied()
            .zip(self.fate.iter().copied())
            .collect();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_round_trip() {
        for i in [0, 1, 255, 65_536, 99_999, u32::MAX - 1] {
            assert_eq!(node_index(&node_id(i)), i);
        }
        assert!(node_id(1) < node_id(2));
    }
}
