//! The sequence manager's commit (c): checking every planned packet has a
//! verified receipt (or, modelled, that it was placed), sealing the
//! sequence at rest, the paged commit of a backup planned in parts, and
//! the answer once the commit applied. Same contract as the parent module:
//! `decide_*` reads the state and returns commands, `finish_*` turns what
//! applied into answers; no I/O, no clock.

use super::*;

impl Manager {
    /// (c) Commits an uploaded backup: checks every planned packet has a
    /// verified receipt, seals the sequence at rest and records the snapshot.
    /// Retrying a commit that already succeeded returns the same snapshot.
    pub fn commit_backup<R: CryptoRng + ?Sized>(
        &mut self,
        request: CommitRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<CommitResponse, ManagerError> {
        match self.decide_commit(&request, now, rng)? {
            CommitStep::Done(response) => Ok(response),
            CommitStep::Propose { command, snapshot } => {
                let applied = self.execute(command)?;
                self.finish_commit(snapshot, &applied, now)
            }
        }
    }

    /// Decides a commit without changing anything: either the answer
    /// already (a retried commit that succeeded before) or the
    /// `CommitBackup` command to replicate, with the sequence sealed at rest.
    /// Every planned packet needs a valid receipt (see
    /// [`check_receipts`](Self::check_receipts)).
    pub fn decide_commit<R: CryptoRng + ?Sized>(
        &self,
        request: &CommitRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<CommitStep, ManagerError> {
        self.decide_commit_as(request, Receipts::Check, now, rng)
    }

    /// [`decide_commit`](Self::decide_commit) for a driver whose targets are
    /// modelled rather than real and sign nothing (the simulator): every
    /// planned packet counts as stored under the generation its plan gave
    /// it. A node never calls this: its commits come from the network.
    pub fn decide_commit_modelled<R: CryptoRng + ?Sized>(
        &self,
        request: &CommitRequest,
        now: Millis,
        rng: &mut R,
    ) -> Result<CommitStep, ManagerError> {
        self.decide_commit_as(request, Receipts::Modelled, now, rng)
    }

    fn decide_commit_as<R: CryptoRng + ?Sized>(
        &self,
        request: &CommitRequest,
        receipts: Receipts,
        now: Millis,
        rng: &mut R,
    ) -> Result<CommitStep, ManagerError> {
        let Some(pending) = self.state.pending.get(&request.pending_id) else {
            let done = self
                .state
                .snapshots
                .values()
                .find(|s| s.pending_id == request.pending_id && s.source == request.source);
            return match done {
                Some(snapshot) => Ok(CommitStep::Done(CommitResponse {
                    snapshot: snapshot.id,
                    delete_tickets: Vec::new(),
                })),
                None => Err(ApplyError::UnknownPending(request.pending_id).into()),
            };
        };
        if pending.source != request.source {
            return Err(ManagerError::Invalid(format!(
                "backup {} belongs to {}, not {}",
                pending.id, pending.source, request.source
            )));
        }
        let receipts = match receipts {
            Receipts::Check => self.check_receipts(pending, &request.receipts)?,
            Receipts::Modelled => pending
                .new_chunks
                .iter()
                .flat_map(|c| &c.packets)
                .map(|p| ((p.packet_id, p.target), p.generation))
                .collect(),
        };
        let snapshot_id = Self::snapshot_id(&pending.source, &pending.set, pending.id);
        if !pending.order.is_empty() {
            return self.decide_paged_commit(pending, request, snapshot_id, now, rng);
        }
        // The copies this commit records: each planned chunk the snapshot
        // uses, under its planned key (or the next free one if another
        // backup took that key meanwhile), with its receipts' generations.
        let used: BTreeSet<DataId> = request.chunks.iter().copied().collect();
        let mut stored: Vec<PlannedChunk> = Vec::new();
        let mut stored_ids: BTreeSet<DataId> = BTreeSet::new();
        let mut taken: BTreeSet<DataId> = BTreeSet::new();
        for chunk in &pending.new_chunks {
            if !used.contains(&chunk.data_id) || !stored_ids.insert(chunk.data_id) {
                continue;
            }
            let mut copy = chunk.clone();
            for p in &mut copy.packets {
                p.generation = receipts
                    .get(&(p.packet_id, p.target))
                    .copied()
                    .unwrap_or(p.generation);
            }
            let key = copy.record_key();
            let free = |k: &DataId| {
                !taken.contains(k)
                    && self
                        .state
                        .chunks
                        .get(k)
                        .is_none_or(|c| crate::state::same_packets(&c.packets, &copy.packets))
            };
            if !free(&key) {
                let other = (0..crate::records::MAX_CHUNK_COPIES)
                    .map(|n| crate::records::chunk_copy_key(&chunk.data_id, n))
                    .find(|k| free(k))
                    .ok_or_else(|| {
                        ManagerError::Invalid(format!(
                            "chunk {} has no free copy key left",
                            chunk.data_id
                        ))
                    })?;
                copy.key = (other != chunk.data_id).then_some(other);
            }
            taken.insert(copy.record_key());
            stored.push(copy);
        }
        // The snapshot's chunks as record keys, in the order the source gave.
        let reused: BTreeMap<DataId, DataId> = pending
            .reused
            .iter()
            .filter_map(|key| self.state.chunks.get(key).map(|c| (c.data_id, *key)))
            .collect();
        // Each stored copy by DataId and by record key (no search per chunk).
        let stored_by_id: BTreeMap<DataId, &PlannedChunk> =
            stored.iter().map(|c| (c.data_id, c)).collect();
        let stored_by_key: BTreeMap<DataId, &PlannedChunk> =
            stored.iter().map(|c| (c.record_key(), c)).collect();
        let mut keys = Vec::with_capacity(request.chunks.len());
        let mut order_seen = BTreeSet::new();
        for data_id in &request.chunks {
            if !order_seen.insert(*data_id) {
                continue;
            }
            let key = stored_by_id
                .get(data_id)
                .map(|c| c.record_key())
                .or_else(|| reused.get(data_id).copied())
                // A chunk the source knows it committed before (not planned again).
                .or_else(|| self.own_copy(data_id, &pending.source))
                .ok_or(ApplyError::UnknownChunk(*data_id))?;
            if !self.state.chunks.contains_key(&key) && !stored_by_key.contains_key(&key) {
                return Err(ApplyError::UnknownChunk(*data_id).into());
            }
            keys.push(key);
        }
        let sealed = self.seal_sequence_header(snapshot_id, request, rng)?;
        let snapshot = SnapshotRecord {
            id: snapshot_id,
            source: pending.source,
            set: pending.set.clone(),
            data_id: request.manifest,
            created_at: now,
            bytes: request.bytes,
            // The snapshot's chunk copies (record keys) in the order the source gave them.
            chunks: keys,
            sealed_sequence: sealed,
            pending_id: pending.id,
            registering: None,
        };
        Ok(CommitStep::Propose {
            command: Command::CommitBackup {
                snapshot,
                stored: Some(stored),
                paged: false,
            },
            snapshot: snapshot_id,
        })
    }

    /// A commit's sequence as the manager keeps it: sealed at rest under
    /// the group key, its header only (snapshot, manifest, manifest
    /// chunks). The stripes are the snapshot's chunk records (its `chunks`,
    /// in order): sealing them again would only make the commit's raft
    /// entry grow with the snapshot.
    fn seal_sequence_header<R: CryptoRng + ?Sized>(
        &self,
        snapshot_id: SnapshotId,
        request: &CommitRequest,
        rng: &mut R,
    ) -> Result<SealedAtRest, ManagerError> {
        let sequence = Sequence {
            snapshot: snapshot_id,
            manifest: request.manifest,
            manifest_chunks: request.manifest_chunks.clone(),
            stripes: Vec::new(),
        };
        seal_at_rest(
            &self.group_key,
            snapshot_id.as_bytes(),
            &sequence.to_bytes().map_err(ManagerError::Seal)?,
            rng,
        )
        .map_err(ManagerError::Seal)
    }

    /// The commit of a backup whose chunk order came in pages: receipts
    /// were all recorded before (`RecordReceipts`) and checked above, the
    /// sequence is sealed (its stripes are the chunk records), and the
    /// entry names neither chunks nor copies: applying it takes them from
    /// the pending backup.
    fn decide_paged_commit<R: CryptoRng + ?Sized>(
        &self,
        pending: &PendingBackup,
        request: &CommitRequest,
        snapshot_id: SnapshotId,
        now: Millis,
        rng: &mut R,
    ) -> Result<CommitStep, ManagerError> {
        if !request.chunks.is_empty() || !request.receipts.is_empty() {
            return Err(ManagerError::Invalid(format!(
                "backup {} handed its order in pages: its commit names no chunks and carries no receipts (record them first)",
                pending.id
            )));
        }
        let sealed = self.seal_sequence_header(snapshot_id, request, rng)?;
        let command = Command::CommitBackup {
            snapshot: SnapshotRecord {
                id: snapshot_id,
                source: pending.source,
                set: pending.set.clone(),
                data_id: request.manifest,
                created_at: now,
                bytes: request.bytes,
                chunks: Vec::new(),
                sealed_sequence: sealed,
                pending_id: pending.id,
                registering: None,
            },
            stored: None,
            paged: true,
        };
        check_entry(&command)?;
        Ok(CommitStep::Propose {
            command,
            snapshot: snapshot_id,
        })
    }

    /// The answer to a commit whose `CommitBackup` applied: delete tickets
    /// (signed by this manager) for packets someone else stored first.
    pub fn finish_commit(
        &self,
        snapshot: SnapshotId,
        applied: &Applied,
        now: Millis,
    ) -> Result<CommitResponse, ManagerError> {
        Ok(CommitResponse {
            snapshot,
            delete_tickets: self.deletion_tickets(applied, now)?,
        })
    }
}
