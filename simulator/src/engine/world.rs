//! The world the manager cannot see: where nodes are, what they donate,
//! when they come and go, die, rot or are struck by a disaster, and which
//! copies survive.
//!
//! Owns the node placement on the map, the churn, failure and disaster
//! models, and the physical fate of packets (`alive` per stripe, object
//! loss). It must not tell the manager anything directly: online changes are
//! only marked dirty and reach the manager through the driver
//! (`super::drive`) before it next decides.

use std::collections::BTreeMap;

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use strew_coordinator::cities::CityTable;
use strew_coordinator::{GeoPoint, haversine_km};

use super::drive::audit_round;
use super::{DisasterOutcome, EngineError, Event, Fate, Sim, stream};
use crate::scenario::{Locations, Scenario};

fn uniform_sphere(rng: &mut Xoshiro256PlusPlus) -> GeoPoint {
    let z: f64 = rng.random::<f64>() * 2.0 - 1.0;
    let lon: f64 = rng.random::<f64>() * 360.0 - 180.0;
    GeoPoint {
        lat: z.asin().to_degrees(),
        lon,
    }
}

/// Where every node is.
pub(super) fn locations(sc: &Scenario, seed: u64) -> Result<Vec<GeoPoint>, EngineError> {
    let n = sc.nodes as usize;
    let mut rng_nodes = stream(seed, 1);
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
    Ok(loc)
}

/// What every node donates, whether it is online at the start, and the churn
/// stream (which drew the latter and goes on drawing sessions).
pub(super) fn capacities_and_presence(
    sc: &Scenario,
    seed: u64,
) -> (Vec<u64>, Vec<bool>, Xoshiro256PlusPlus) {
    let n = sc.nodes as usize;
    let mut rng_storage = stream(seed, 2);
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
    (capacity, online, rng_churn)
}

impl Sim<'_> {
    pub(super) fn schedule_world(&mut self) {
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
            self.schedule(audit_round(sc.audit.interval_ms).0, Event::Audit);
        }
        if sc.repair.enabled {
            self.schedule(sc.repair.retry_every_ms, Event::RepairRetry);
        }
        self.schedule(sc.sample_every_ms.min(horizon), Event::Sample);
    }

    pub(super) fn mark_dirty(&mut self, i: u32) {
        if !self.is_dirty[i as usize] {
            self.is_dirty[i as usize] = true;
            self.dirty.push(i);
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

    pub(super) fn toggle(&mut self, i: u32) {
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
    pub(super) fn compact_held(&mut self, i: u32) {
        let slots = &self.slots;
        self.held[i as usize].retain(|&p| slots[p as usize] == i);
    }

    pub(super) fn die(&mut self, i: u32, fate: Fate) -> Vec<u32> {
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

    /// Every copy on node `i` stops existing; returns the stripes hit.
    fn destroy_all_on(&mut self, i: u32) -> Vec<u32> {
        let u = i as usize;
        // The manager keeps the node as the target until it moves the packets.
        let held = std::mem::take(&mut self.held[u]);
        let mut stripes = Vec::with_capacity(held.len());
        for &p in &held {
            self.destroy(p as usize);
            stripes.push(p / self.width as u32);
        }
        self.held[u] = held;
        stripes
    }

    pub(super) fn corrupt(&mut self, i: u32) {
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

    pub(super) fn disaster(&mut self, d: u32) {
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
}
