//! The discrete-event simulation of a grid.
//!
//! Owns the virtual nodes (location, capacity, online/dead/corrupted state),
//! the event loop in simulated milliseconds, the truth about which packets
//! still exist, and the counters the report is built from. The simulation
//! drives one in-memory [`Manager`] through the same decide → apply path the
//! node's daemon uses: nodes join with `Command::Join`, online changes reach
//! it as `Command::SetOnline`, every backup is `decide_plan` → `apply` →
//! (uploads) → `decide_commit` → `apply`, replaced snapshots are forgotten
//! with `decide_forget` → `apply`, and repairs are `decide_repair` → `apply`
//! of `Command::MovePacket`s. *When* to repair and evict comes from the
//! coordinator's [`RepairPolicy`] and [`AuditLedger`]; where packets go comes
//! from the manager's placement. The engine only plays the world (churn,
//! failures, disasters, which copies survive) and the driver's knowledge the
//! manager does not keep (how long a node has been away, which nodes it gave
//! up on).
//!
//! Layout: this file holds the model's types, the event loop and the
//! measurements; `world` the churn and failure models; `drive` the
//! manager's side (joins, backups, forgets, repairs, audits).
//!
//! Determinism: one seeded RNG stream per concern, ties in the queue broken
//! by scheduling order, nodes and stripes in index order, and no hash maps.
//! This module must not read clocks, touch files or print.

mod drive;
mod world;

use std::collections::{BTreeMap, BTreeSet};

use rand::SeedableRng;
use rand::rngs::{StdRng, Xoshiro256PlusPlus};
use strew_coordinator::audit::{AuditLedger, AuditPolicy};
use strew_coordinator::repair::RepairPolicy;
use strew_coordinator::{DataId, GeoPoint, GroupKey, Manager, ManagerConfig, NodeId, SnapshotId};

use crate::queue::EventQueue;
use crate::scenario::Scenario;

/// A slot with no packet (its object was never stored).
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
    /// The manager refused a command the simulation proposed: a bug in the
    /// simulator or the coordinator (the seed reproduces it).
    #[error("at {at} ms the manager refused to {what}")]
    Apply {
        what: &'static str,
        at: u64,
        #[source]
        source: strew_coordinator::ApplyError,
    },
    /// The manager failed to decide something it must always be able to
    /// decide (refusals of placement are counted, not errors).
    #[error("at {at} ms the manager could not {what}")]
    Manager {
        what: &'static str,
        at: u64,
        #[source]
        source: strew_coordinator::ManagerError,
    },
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
    /// Packets uploaded by committed backups (every version).
    pub packets_stored: u64,
    /// Packets deleted because no snapshot referenced them any more.
    pub packets_deleted: u64,
    pub snapshots_forgotten: u64,
    pub packets_lost: u64,
    pub packets_given_up: u64,
    pub packets_readopted: u64,
    pub nodes_failed: u32,
    pub nodes_corrupted: u32,
    pub nodes_evicted: u32,
    pub repair_bytes: u64,
    pub repair_bytes_read: u64,
    pub repair_bytes_written: u64,
    /// Time the repairer spends moving `repair_bytes` at `repair.bandwidth`.
    pub repair_busy_ms: u64,
    /// Longest a repair waited behind others at that pace.
    pub repair_backlog_max_ms: u64,
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

/// One repair the manager applied: packet `index` of chunk `data_id` moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepairMove {
    pub at: u64,
    pub data_id: DataId,
    pub index: u32,
    pub from: NodeId,
    pub to: NodeId,
}

/// A finished run with the manager it drove, for checks of the manager's
/// records against the report.
pub struct Finished {
    pub outcome: Outcome,
    manager: Manager,
    moves: Vec<RepairMove>,
}

impl Finished {
    /// The manager as the run left it (read-only).
    pub fn manager(&self) -> &Manager {
        &self.manager
    }

    /// Every `MovePacket` the run applied, in order.
    pub fn moves(&self) -> &[RepairMove] {
        &self.moves
    }
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

/// The index of a virtual node's id (see [`node_id`]).
pub fn node_index(id: &NodeId) -> u32 {
    u32::from_be_bytes([id.0[0], id.0[1], id.0[2], id.0[3]])
}

struct Sim<'a> {
    sc: &'a Scenario,
    now: u64,
    queue: EventQueue<Event>,
    manager: Manager,
    // nodes (struct of arrays, by index)
    loc: Vec<GeoPoint>,
    capacity: Vec<u64>,
    online: Vec<bool>,
    dead: Vec<bool>,
    corrupted: Vec<bool>,
    /// Nodes the driver gave up on (away past the grace period, or evicted).
    gone: Vec<bool>,
    given_up: BTreeSet<NodeId>,
    evicted: Vec<bool>,
    epoch: Vec<u32>,
    offline_since: Vec<u64>,
    fate: Vec<Fate>,
    /// Packets (slot indices) a node holds; stale entries are dropped lazily.
    held: Vec<Vec<u32>>,
    /// The online flag the manager was last told (changes reach it lazily, before it decides).
    told_online: Vec<bool>,
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
    online_count: u32,
    // packets
    width: usize,
    k: usize,
    stripes_per_object: usize,
    /// Per packet slot: its target in the manager's chunk record (a mirror, for speed).
    slots: Vec<u32>,
    /// Packets a failed read proved gone, until the manager moves them.
    known_missing: BTreeSet<u32>,
    /// Per stripe: copies in its slots that physically exist (node neither dead nor rotten).
    alive: Vec<u16>,
    stored: Vec<bool>,
    lost: Vec<bool>,
    source: Vec<u32>,
    /// Per object: the version of its last stripe, and its committed snapshot.
    version: Vec<u8>,
    snapshot: Vec<Option<SnapshotId>>,
    pending: BTreeSet<u32>,
    /// Stripes whose replacement placement was refused: (not before, refusals).
    backoff: BTreeMap<u32, (u64, u32)>,
    // policy
    repair: RepairPolicy,
    /// When the paced repairer is free again.
    repair_busy_until: u64,
    audit_policy: AuditPolicy,
    ledger: AuditLedger,
    // rngs
    rng_churn: Xoshiro256PlusPlus,
    rng_place: Xoshiro256PlusPlus,
    rng_audit: Xoshiro256PlusPlus,
    /// Sealing sequences at rest needs a cryptographic RNG; seeded, so replayable.
    rng_seal: StdRng,
    // counters
    out: Outcome,
    availability_sum: f64,
    moves: Vec<RepairMove>,
}

/// Runs `scenario` with `seed` and returns what happened.
pub fn simulate(scenario: &Scenario, seed: u64) -> Result<Outcome, EngineError> {
    simulate_with_manager(scenario, seed).map(|f| f.outcome)
}

/// [`simulate`], keeping the manager the run drove.
pub fn simulate_with_manager(scenario: &Scenario, seed: u64) -> Result<Finished, EngineError> {
    let mut sim = Sim::new(scenario, seed)?;
    sim.join_all()?;
    sim.place_backups()?;
    sim.schedule_world();
    sim.run()?;
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
        let loc = world::locations(sc, seed)?;
        let (capacity, online, rng_churn) = world::capacities_and_presence(sc, seed);
        let objects = sc.backup.objects as usize;
        let stripes = objects * stripes_per_object;
        let online_count = online.iter().filter(|&&o| o).count() as u32;
        // The manager's keys only sign tickets and seal sequences the
        // simulation never sends; derived from the seed so runs replay.
        let mut key_rng = stream(seed, 9);
        let mut identity = [0u8; 32];
        let mut group = [0u8; 32];
        rand::Rng::fill_bytes(&mut key_rng, &mut identity);
        rand::Rng::fill_bytes(&mut key_rng, &mut group);
        let manager = Manager::new(
            ed25519_dalek::SigningKey::from_bytes(&identity),
            GroupKey(group),
            ManagerConfig::default(),
        );
        Ok(Sim {
            sc,
            now: 0,
            queue: EventQueue::new(),
            manager,
            dead: vec![false; n],
            corrupted: vec![false; n],
            gone: vec![false; n],
            given_up: BTreeSet::new(),
            evicted: vec![false; n],
            epoch: vec![0; n],
            offline_since: vec![0; n],
            fate: vec![Fate::Alive; n],
            held: vec![Vec::new(); n],
            told_online: online.clone(),
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
            known_missing: BTreeSet::new(),
            alive: vec![0; stripes],
            stored: vec![false; objects],
            lost: vec![false; objects],
            source: vec![0; objects],
            version: vec![0; objects],
            snapshot: vec![None; objects],
            pending: BTreeSet::new(),
            backoff: BTreeMap::new(),
            repair: RepairPolicy {
                grace: sc.repair.grace_ms,
                threshold: sc.repair.threshold as usize,
            },
            repair_busy_until: 0,
            audit_policy: AuditPolicy {
                interval: sc.audit.interval_ms,
                evict_after: sc.audit.evict_after,
                ..AuditPolicy::default()
            },
            ledger: AuditLedger::new(),
            rng_churn,
            rng_place: stream(seed, 5),
            rng_audit: stream(seed, 7),
            rng_seal: StdRng::seed_from_u64(seed ^ 0x5ea1),
            out: Outcome {
                seed,
                objects: objects as u64,
                objects_stored: 0,
                objects_lost: 0,
                placement_failures: 0,
                placement_refusal_example: None,
                packets_stored: 0,
                packets_deleted: 0,
                snapshots_forgotten: 0,
                packets_lost: 0,
                packets_given_up: 0,
                packets_readopted: 0,
                nodes_failed: 0,
                nodes_corrupted: 0,
                nodes_evicted: 0,
                repair_bytes: 0,
                repair_bytes_read: 0,
                repair_bytes_written: 0,
                repair_busy_ms: 0,
                repair_backlog_max_ms: 0,
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
            moves: Vec::new(),
        })
    }

    /// Whether the packet on `node` exists physically (the node neither dead nor corrupted).
    fn exists_on(&self, node: u32) -> bool {
        !self.dead[node as usize] && !self.corrupted[node as usize]
    }

    fn schedule(&mut self, at: u64, event: Event) {
        if at <= self.sc.horizon_ms {
            self.queue.push(at, event);
        }
    }

    fn run(&mut self) -> Result<(), EngineError> {
        while let Some((at, event)) = self.queue.pop() {
            self.now = at;
            self.out.events += 1;
            match event {
                Event::Toggle(i) => self.toggle(i),
                Event::Grace(i, epoch) => {
                    let u = i as usize;
                    if !self.online[u] && self.epoch[u] == epoch && !self.gone[u] {
                        self.give_up(i)?;
                    }
                }
                Event::Die(i) => {
                    self.die(i, Fate::Died);
                }
                Event::Corrupt(i) => self.corrupt(i),
                Event::Disaster(d) => self.disaster(d),
                Event::Audit => self.audit()?,
                Event::RepairRetry => {
                    self.retry_repairs()?;
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
        Ok(())
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

    fn finish(mut self) -> Finished {
        let samples = self.out.timeline.len();
        self.out.availability = if samples == 0 {
            1.0
        } else {
            self.availability_sum / samples as f64
        };
        self.out.pending_repairs_at_end = self.pending.len() as u64;
        self.out.audits = self.ledger.totals();
        // What each live node holds, as the manager books it.
        let targets = &self.manager.state().targets;
        self.out.utilisation = (0..self.sc.nodes)
            .filter(|&i| !self.dead[i as usize] && self.capacity[i as usize] > 0)
            .map(|i| {
                let held = targets.get(&node_id(i)).map_or(0, |t| t.bytes);
                held as f64 / self.capacity[i as usize] as f64
            })
            .collect();
        self.out.nodes = self
            .loc
            .iter()
            .copied()
            .zip(self.fate.iter().copied())
            .collect();
        Finished {
            outcome: self.out,
            manager: self.manager,
            moves: self.moves,
        }
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
