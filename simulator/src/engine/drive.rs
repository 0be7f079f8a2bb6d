//! The manager's side of the simulation: the driver a node's daemon would be.
//!
//! Owns every call into the [`Manager`](strew_coordinator::Manager): joins
//! (`Command::Join`), online changes (`Command::SetOnline`, sent lazily:
//! only net changes, just before the manager decides), backups (`decide_plan`
//! → `apply` → uploads → `decide_commit` → `apply`), forgetting replaced
//! snapshots (`decide_forget` → `apply`), and repairs (the [`RepairPolicy`]
//! says when, `decide_repair` says where, `MovePacket` is applied). It also
//! keeps what a driver knows and the manager does not: how long a node has
//! been away, which nodes it gave up on, which reads failed, and audit
//! outcomes (the coordinator's [`AuditLedger`]). It must not choose targets
//! or decide repairs itself, and must not change the world's truth (which
//! copies exist) except by the manager's decisions.
//!
//! [`RepairPolicy`]: strew_coordinator::repair::RepairPolicy
//! [`AuditLedger`]: strew_coordinator::audit::AuditLedger

use rand::RngExt;
use strew_coordinator::audit::{AuditOutcome, Standing};
use strew_coordinator::repair::{PacketStatus, RepairRequest, StripeVerdict, repair_traffic};
use strew_coordinator::{
    Applied, BackupParams, ChunkPlan, Command, CommitRequest, CommitStep, Compression,
    ConvergenceScope, DataId, Encryption, MAX_COLLECT_BATCH, ManagerError, NodeProfile, PacketId,
    PacketSpec, PlanRequest,
};

use super::{EngineError, Event, NONE, RepairMove, Sim, node_id, node_index, stream};

/// Chunk `stripe` of `object`, in version `version`: ids carry the indices, no hashing.
pub(super) fn chunk_id(object: usize, stripe: usize, version: u8) -> DataId {
    let mut bytes = [0u8; 32];
    bytes[..4].copy_from_slice(&(object as u32).to_be_bytes());
    bytes[4..8].copy_from_slice(&(stripe as u32).to_be_bytes());
    bytes[8] = version;
    bytes[9] = 0x5e;
    DataId(bytes)
}

fn packet_id(chunk: &DataId, index: usize) -> PacketId {
    let mut bytes = chunk.0;
    bytes[10..14].copy_from_slice(&(index as u32).to_be_bytes());
    PacketId(bytes)
}

fn manifest_id(object: usize, version: u8) -> DataId {
    let mut bytes = chunk_id(object, u32::MAX as usize, version).0;
    bytes[9] = 0x3f;
    DataId(bytes)
}

impl Sim<'_> {
    fn apply(&mut self, what: &'static str, command: &Command) -> Result<Applied, EngineError> {
        let applied = self
            .manager
            .apply(command)
            .map(|effects| effects.applied)
            .map_err(|source| EngineError::Apply {
                what,
                at: self.now,
                source,
            })?;
        self.collect_garbage(what)?;
        Ok(applied)
    }

    /// Modelled targets delete what they are told at once: every queued
    /// deletion is collected right after the command that queued it, so the
    /// manager's collection queue stays empty between events.
    fn collect_garbage(&mut self, what: &'static str) -> Result<(), EngineError> {
        while !self.manager.state().garbage.is_empty() {
            let due = self
                .manager
                .state()
                .due_garbage(u64::MAX, MAX_COLLECT_BATCH, |_| false);
            let mut entries = due.stale;
            for (target, list) in due.deliver {
                entries.extend(list.into_iter().map(|d| (target, d.packet_id)));
            }
            if entries.is_empty() {
                // Only packets a pending plan puts again: they wait for it.
                break;
            }
            self.manager
                .apply(&Command::Collected { entries })
                .map_err(|source| EngineError::Apply {
                    what,
                    at: self.now,
                    source,
                })?;
        }
        Ok(())
    }

    fn manager_error(&self, what: &'static str, source: ManagerError) -> EngineError {
        EngineError::Manager {
            what,
            at: self.now,
            source,
        }
    }

    /// Every node joins with its location and donation as `storage_allocated`.
    pub(super) fn join_all(&mut self) -> Result<(), EngineError> {
        for i in 0..self.sc.nodes {
            let u = i as usize;
            let mut profile = NodeProfile::new(node_id(i), self.loc[u], self.capacity[u], 0);
            profile.online = self.online[u];
            let join = Command::Join {
                profile,
                token: None,
                at: 0,
            };
            self.apply("let a node join", &join)?;
        }
        Ok(())
    }

    /// Brings the manager's online flags up to date: a node is online to the
    /// manager if it is reachable and not given up on. Only net changes are sent.
    pub(super) fn tell_manager(&mut self) -> Result<(), EngineError> {
        for i in std::mem::take(&mut self.dirty) {
            let u = i as usize;
            self.is_dirty[u] = false;
            let want = self.online[u] && !self.gone[u] && !self.dead[u];
            if want != self.told_online[u] {
                let command = Command::SetOnline {
                    node: node_id(i),
                    online: want,
                    at: self.now,
                };
                self.apply("record a node going online or offline", &command)?;
                self.told_online[u] = want;
            }
        }
        Ok(())
    }

    fn params(&self) -> BackupParams {
        let b = &self.sc.backup;
        BackupParams {
            backup_distance: b.backup_distance,
            spread: b.spread,
            redundancy: b.redundancy,
            compression: Compression::None,
            encryption: Encryption {
                cipher: "chacha20poly1305".into(),
                convergence: ConvergenceScope::Private,
            },
            sync_interval_secs: None,
        }
    }

    /// The chunk of stripe `s` in its object's current version.
    pub(super) fn stripe_chunk(&self, s: usize) -> DataId {
        let object = s / self.stripes_per_object;
        let i = s % self.stripes_per_object;
        let version = if i + 1 == self.stripes_per_object {
            self.version[object]
        } else {
            0
        };
        chunk_id(object, i, version)
    }

    /// Backs up every object at the start, `versions` times each.
    pub(super) fn place_backups(&mut self) -> Result<(), EngineError> {
        let n = self.sc.nodes;
        let mut rng_sources = stream(self.out.seed, 6);
        for object in 0..self.sc.backup.objects as usize {
            self.source[object] = rng_sources.random_range(0..n);
            for version in 0..self.sc.backup.versions {
                self.back_up(object, u8::try_from(version).unwrap_or(u8::MAX))?;
            }
        }
        Ok(())
    }

    /// One backup of `object`, as a daemon runs it: plan, upload, commit; a
    /// replaced snapshot is forgotten. A refused plan is a placement failure.
    fn back_up(&mut self, object: usize, version: u8) -> Result<(), EngineError> {
        let src = self.source[object];
        let source = node_id(src);
        let spo = self.stripes_per_object;
        let replicas = self.sc.backup.redundancy.data_packets() == 1;
        let chunks: Vec<ChunkPlan> = (0..spo)
            .map(|i| {
                let data_id = chunk_id(object, i, if i + 1 == spo { version } else { 0 });
                ChunkPlan {
                    data_id,
                    packets: (0..self.width)
                        .map(|j| PacketSpec {
                            // Replicas are copies of one packet.
                            packet_id: packet_id(&data_id, if replicas { 0 } else { j }),
                            size: self.sc.backup.packet_size,
                        })
                        .collect(),
                }
            })
            .collect();
        let order: Vec<DataId> = chunks.iter().map(|c| c.data_id).collect();
        let request = PlanRequest {
            extend: None,
            source,
            set: format!("object-{object}"),
            location: self.loc[src as usize],
            params: self.params(),
            chunks,
            exclude: Vec::new(),
        };
        let now = self.now;
        let (command, draft) = match self.manager.decide_plan(&request, now, &mut self.rng_place) {
            Ok(decided) => decided,
            Err(ManagerError::Placement(refusal)) => {
                self.refused(refusal.to_string());
                return Ok(());
            }
            Err(e) => return Err(self.manager_error("plan a backup", e)),
        };
        match self.manager.apply(&command) {
            Ok(_) => {}
            Err(strew_coordinator::ApplyError::Quota(e)) => {
                self.refused(e.to_string());
                return Ok(());
            }
            Err(source) => {
                return Err(EngineError::Apply {
                    what: "begin a backup",
                    at: now,
                    source,
                });
            }
        }
        // Every upload succeeds: the targets were chosen online at this
        // instant (modelled targets sign no receipts).
        let stored: u64 = draft.uploads.iter().map(|c| c.packets.len() as u64).sum();
        let commit = CommitRequest {
            pending_id: draft.pending_id,
            source,
            receipts: Vec::new(),
            manifest: manifest_id(object, version),
            manifest_chunks: Vec::new(),
            chunks: order,
            bytes: self.sc.backup.object_size,
        };
        let step = self
            .manager
            .decide_commit_modelled(&commit, now, &mut self.rng_seal)
            .map_err(|e| self.manager_error("commit a backup", e))?;
        let CommitStep::Propose { command, snapshot } = step else {
            return Err(self.manager_error(
                "commit a backup",
                ManagerError::Invalid("a first commit was answered as a retry".into()),
            ));
        };
        self.apply("commit a backup", &command)?;
        self.out.packets_stored += stored;
        self.version[object] = version;
        match self.snapshot[object].replace(snapshot) {
            Some(previous) => {
                let forget = self
                    .manager
                    .decide_forget(source, previous, now)
                    .map_err(|e| self.manager_error("forget a replaced snapshot", e))?;
                if let Applied::Deletions(d) = self.apply("forget a replaced snapshot", &forget)? {
                    self.out.packets_deleted += d.values().map(|ids| ids.len() as u64).sum::<u64>();
                }
                self.out.snapshots_forgotten += 1;
            }
            None => {
                self.stored[object] = true;
                self.out.objects_stored += 1;
            }
        }
        self.mirror(object)
    }

    fn refused(&mut self, why: String) {
        self.out.placement_failures += 1;
        if self.out.placement_refusal_example.is_none() {
            self.out.placement_refusal_example = Some(why);
        }
    }

    /// Copies the targets of `object`'s chunks from the manager's records into `slots`.
    fn mirror(&mut self, object: usize) -> Result<(), EngineError> {
        let first = object * self.stripes_per_object;
        for s in first..first + self.stripes_per_object {
            let data_id = self.stripe_chunk(s);
            let Some(record) = self.manager.state().chunks.get(&data_id) else {
                return Err(self.manager_error(
                    "record a committed chunk",
                    ManagerError::Invalid(format!("chunk {data_id} is not in the state")),
                ));
            };
            let targets: Vec<u32> = record
                .packets
                .iter()
                .map(|p| node_index(&p.target))
                .collect();
            let base = s * self.width;
            for (j, node) in targets.into_iter().enumerate() {
                let p = base + j;
                let old = self.slots[p];
                if old == node {
                    continue;
                }
                if old != NONE {
                    self.held[old as usize].retain(|&q| q as usize != p);
                }
                self.slots[p] = node;
                self.held[node as usize].push(p as u32);
            }
            self.alive[s] = (0..self.width)
                .filter(|j| self.exists_on(self.slots[base + j]))
                .count() as u16;
        }
        Ok(())
    }

    /// The driver gives up on a node: its packets count as missing and are rebuilt elsewhere.
    pub(super) fn give_up(&mut self, i: u32) -> Result<(), EngineError> {
        let u = i as usize;
        if self.gone[u] {
            return Ok(());
        }
        self.gone[u] = true;
        self.given_up.insert(node_id(i));
        self.mark_dirty(i);
        self.compact_held(i);
        let held = self.held[u].clone();
        self.out.packets_given_up += held.len() as u64;
        if self.sc.repair.enabled {
            for p in held {
                let s = p / self.width as u32;
                if !self.lost[s as usize / self.stripes_per_object] {
                    self.pending.insert(s);
                    self.try_repair(s)?;
                }
            }
        }
        Ok(())
    }

    /// A node the driver gave up on is back: the packets the manager has not
    /// moved meanwhile are still its (the moved ones were deleted).
    pub(super) fn readopt(&mut self, i: u32) {
        let u = i as usize;
        self.gone[u] = false;
        self.given_up.remove(&node_id(i));
        self.compact_held(i);
        if self.exists_on(i) {
            self.out.packets_readopted += self.held[u].len() as u64;
        }
    }

    fn status_of(&self, p: usize) -> PacketStatus {
        let node = self.slots[p];
        if node == NONE || self.gone[node as usize] || self.known_missing.contains(&(p as u32)) {
            PacketStatus::Missing
        } else if self.online[node as usize] {
            PacketStatus::Reachable
        } else {
            PacketStatus::Unreachable {
                since: self.offline_since[node as usize],
            }
        }
    }

    pub(super) fn retry_repairs(&mut self) -> Result<(), EngineError> {
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
            self.try_repair(s)?;
        }
        Ok(())
    }

    /// A stripe needs no more repair (healthy again, or lost).
    pub(super) fn settle(&mut self, s: u32) {
        self.pending.remove(&s);
        self.backoff.remove(&s);
    }

    fn try_repair(&mut self, s: u32) -> Result<(), EngineError> {
        let su = s as usize;
        let object = su / self.stripes_per_object;
        if self.lost[object] {
            self.settle(s);
            return Ok(());
        }
        let base = su * self.width;
        // Reading a packet from a node that silently lost it fails verification:
        // the driver learns it is missing and assesses again (at most `width` rounds).
        for _ in 0..=self.width {
            let statuses: Vec<PacketStatus> =
                (0..self.width).map(|j| self.status_of(base + j)).collect();
            match self
                .repair
                .assess(self.sc.backup.redundancy, &statuses, self.now)
            {
                StripeVerdict::Healthy { .. } => {
                    self.settle(s);
                    return Ok(());
                }
                // Copies on nodes given up on may still come back (`readopt`);
                // truly lost stripes leave `pending` in `check_loss`.
                StripeVerdict::Lost { .. } | StripeVerdict::Waiting { .. } => return Ok(()),
                StripeVerdict::Rebuild { rebuild, read } => {
                    let rotten: Vec<usize> = read
                        .iter()
                        .copied()
                        .filter(|&j| self.corrupted[self.slots[base + j] as usize])
                        .collect();
                    if rotten.is_empty() {
                        return self.rebuild(s, &rebuild);
                    }
                    for j in rotten {
                        self.known_missing.insert((base + j) as u32);
                        self.out.packets_given_up += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// Rebuilds packets `rebuild` of stripe `s` where the manager decides.
    fn rebuild(&mut self, s: u32, rebuild: &[usize]) -> Result<(), EngineError> {
        self.tell_manager()?;
        let su = s as usize;
        let Some(snapshot) = self.snapshot[su / self.stripes_per_object] else {
            self.settle(s);
            return Ok(());
        };
        let data_id = self.stripe_chunk(su);
        let request = RepairRequest {
            snapshot,
            data_id,
            rebuild,
            given_up: &self.given_up,
        };
        let decided = self
            .manager
            .decide_repair(&request, self.now, &mut self.rng_place);
        let commands = match decided {
            Ok(commands) => commands,
            Err(ManagerError::Placement(_)) => {
                // No compatible target now: retry later, backing off exponentially.
                self.out.repair_refusals += 1;
                let retry = self.sc.repair.retry_every_ms;
                let entry = self.backoff.entry(s).or_insert((0, 0));
                entry.1 = entry.1.saturating_add(1);
                entry.0 = self
                    .now
                    .saturating_add(retry.saturating_mul(1 << entry.1.min(8)));
                return Ok(());
            }
            Err(e) => return Err(self.manager_error("decide a repair", e)),
        };
        let base = su * self.width;
        for command in &commands {
            self.apply("move a rebuilt packet", command)?;
            let Command::MovePacket {
                index, new_target, ..
            } = command
            else {
                continue;
            };
            let p = base + *index as usize;
            let old = self.slots[p];
            if old != NONE && self.exists_on(old) {
                // The superseded copy is deleted.
                self.alive[su] = self.alive[su].saturating_sub(1);
            }
            self.known_missing.remove(&(p as u32));
            let node = node_index(new_target);
            self.slots[p] = node;
            self.held[node as usize].push(p as u32);
            if self.exists_on(node) {
                self.alive[su] += 1;
            }
            self.moves.push(RepairMove {
                at: self.now,
                data_id,
                index: *index,
                from: node_id(old),
                to: *new_target,
            });
        }
        let size = self.sc.backup.packet_size;
        let traffic = repair_traffic(self.sc.backup.redundancy, rebuild.len(), size);
        self.pace_repair(traffic.total());
        self.out.repair_bytes += traffic.total();
        self.out.repair_bytes_read += traffic.read;
        self.out.repair_bytes_written += traffic.written;
        self.out.stripes_repaired += 1;
        self.out.packets_rebuilt += rebuild.len() as u64;
        self.settle(s);
        Ok(())
    }

    pub(super) fn audit(&mut self) -> Result<(), EngineError> {
        let now = self.now;
        let (round, per_round) = audit_round(self.sc.audit.interval_ms);
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
            let standing =
                self.ledger
                    .record_many(&self.audit_policy, node_id(i), outcome, per_round, now);
            if standing == Standing::Evicted && !self.evicted[u] {
                self.evicted[u] = true;
                self.out.nodes_evicted += 1;
                self.give_up(i)?;
            }
        }
        self.schedule(now + round, Event::Audit);
        Ok(())
    }
}

impl Sim<'_> {
    /// Books a repair's traffic on the repairer paced at `repair.bandwidth`
    /// (one repairer, first come first served): its busy time, and the
    /// longest a repair waits behind the others. The rebuild itself is
    /// applied when decided; this says how late the daemon's pace would make it.
    fn pace_repair(&mut self, bytes: u64) {
        let bandwidth = self.sc.repair.bandwidth;
        if bandwidth == 0 {
            return;
        }
        let takes = bytes.saturating_mul(1000).div_ceil(bandwidth);
        let start = self.repair_busy_until.max(self.now);
        self.out.repair_backlog_max_ms = self.out.repair_backlog_max_ms.max(start - self.now);
        self.repair_busy_until = start.saturating_add(takes);
        self.out.repair_busy_ms = self.out.repair_busy_ms.saturating_add(takes);
    }
}

/// One audit round of the simulation and the challenges each node answers
/// in it: the policy's interval, but at least an hour (460 challenges a day
/// are played as 19 per hourly round, through `AuditLedger::record_many`).
pub(super) fn audit_round(interval_ms: u64) -> (u64, u32) {
    const MIN_ROUND_MS: u64 = 3_600_000;
    let interval = interval_ms.max(1);
    if interval >= MIN_ROUND_MS {
        (interval, 1)
    } else {
        let per_round = MIN_ROUND_MS / interval;
        (
            per_round * interval,
            u32::try_from(per_round).unwrap_or(u32::MAX),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::audit_round;

    #[test]
    fn audit_rounds_are_hourly_or_the_interval_and_keep_the_rate() {
        let interval = strew_coordinator::audit::DEFAULT_AUDIT_INTERVAL;
        let (round, per_round) = audit_round(interval);
        assert_eq!(per_round, 19);
        assert_eq!(round, 19 * interval);
        assert!(round <= 3_600_000);
        assert_eq!(audit_round(7 * 86_400_000), (7 * 86_400_000, 1));
        assert_eq!(audit_round(0), (3_600_000, 3_600_000));
    }
}
