//! The sequence manager's calls on committed snapshots and on time:
//! fetching a snapshot's sequence, listing, forgetting, recording restores,
//! abandoning and expiring plans, trimming the backup log. Same contract as
//! the parent module: `decide_*` reads the state and returns commands,
//! `finish_*` turns what applied into answers; no I/O, no clock.

use super::*;

impl Manager {
    /// One of `requester`'s snapshots: `UnknownSnapshot`, or `NotYours`
    /// when another source made it (only a snapshot's source reads,
    /// audits or forgets it).
    pub(crate) fn own_snapshot(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> Result<&SnapshotRecord, ManagerError> {
        let record = self
            .state
            .snapshots
            .get(&snapshot)
            // One still being re-registered is not a snapshot yet.
            .filter(|r| r.registering.is_none())
            .ok_or(ApplyError::UnknownSnapshot(snapshot))?;
        if record.source != requester {
            return Err(ManagerError::NotYours {
                node: requester,
                snapshot,
            });
        }
        Ok(record)
    }

    /// `sequence` (of `snapshot`) sealed to `requester`'s X25519 key, the
    /// snapshot id as associated data.
    pub(crate) fn seal_for<R: CryptoRng + ?Sized>(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        sequence: &Sequence,
        rng: &mut R,
    ) -> Result<SealedForRecipient, ManagerError> {
        let client = self
            .state
            .clients
            .get(&requester)
            .ok_or(ApplyError::UnknownNode(requester))?;
        seal_to_recipient(
            &client.profile.x25519_public,
            snapshot.as_bytes(),
            &sequence.to_bytes().map_err(ManagerError::Seal)?,
            rng,
        )
        .map_err(ManagerError::Seal)
    }

    /// (d) A snapshot's sequence, with current targets, sealed to the
    /// requesting source's X25519 key.
    pub fn fetch_sequence<R: CryptoRng + ?Sized>(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        rng: &mut R,
    ) -> Result<SealedForRecipient, ManagerError> {
        self.own_snapshot(requester, snapshot)?;
        let sequence = self.current_sequence(requester, snapshot)?;
        // A whole sequence travels only while it fits one page (4 MiB
        // message bound); larger ones are fetched with `fetch_sequence_page`.
        if sequence.stripes.len() > MAX_SEQUENCE_PAGE {
            return Err(ManagerError::Invalid(format!(
                "snapshot {snapshot} has {} stripes: fetch its sequence in pages of at most {MAX_SEQUENCE_PAGE}",
                sequence.stripes.len()
            )));
        }
        self.seal_for(requester, snapshot, &sequence, rng)
    }

    /// One of `requester`'s snapshots' sequence, opened, with every
    /// stripe's current targets.
    pub(crate) fn current_sequence(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> Result<Sequence, ManagerError> {
        let (record, mut sequence) = self.sequence_header(requester, snapshot)?;
        sequence.stripes = self.current_stripes(record, &sequence, 0..record.chunks.len())?;
        Ok(sequence)
    }

    /// The sealed part of one of `requester`'s snapshots' sequence, opened:
    /// snapshot, manifest and manifest chunks. Sequences sealed since
    /// commits are paged carry no stripes (they are the snapshot's chunk
    /// records, see [`current_stripes`](Self::current_stripes)); older ones
    /// carry all of them.
    pub(crate) fn sequence_header(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> Result<(&SnapshotRecord, Sequence), ManagerError> {
        let record = self.own_snapshot(requester, snapshot)?;
        let plain = open_at_rest(
            &self.group_key,
            snapshot.as_bytes(),
            &record.sealed_sequence,
        )
        .map_err(ManagerError::Seal)?;
        let sequence = Sequence::from_bytes(&plain).map_err(ManagerError::Seal)?;
        Ok((record, sequence))
    }

    /// Stripes `range` of a snapshot's sequence with their current targets:
    /// from the snapshot's chunk records (where repairs keep them current),
    /// or, for a sequence sealed with its stripes, those stripes with the
    /// targets repairs moved packets to since.
    pub(crate) fn current_stripes(
        &self,
        record: &SnapshotRecord,
        sealed: &Sequence,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<SequenceStripe>, ManagerError> {
        let keys = record.chunks.get(range.clone()).unwrap_or(&[]);
        if sealed.stripes.is_empty() {
            let none = BTreeMap::new();
            return keys
                .iter()
                .map(|key| {
                    self.stripe_of(key, &none)
                        .ok_or_else(|| ApplyError::UnknownChunk(*key).into())
                })
                .collect();
        }
        let stripes = sealed.stripes.get(range).unwrap_or(&[]);
        Ok(stripes
            .iter()
            .zip(keys)
            .map(|(stripe, key)| {
                let mut stripe = stripe.clone();
                if let Some(current) = self.state.chunk_packets(key) {
                    for (entry, now) in stripe.packets.iter_mut().zip(current) {
                        if entry.packet_id == now.packet_id {
                            entry.targets = vec![now.target];
                        }
                    }
                }
                stripe
            })
            .collect())
    }

    /// (e) Snapshots of a source, optionally of one backup set, oldest first.
    pub fn list_snapshots(&self, source: &NodeId, set: Option<&str>) -> Vec<SnapshotSummary> {
        let mut out: Vec<SnapshotSummary> = self
            .state
            .snapshots
            .values()
            .filter(|s| {
                &s.source == source
                    && set.is_none_or(|name| s.set == name)
                    && s.registering.is_none()
            })
            .map(|s| SnapshotSummary {
                snapshot: s.id,
                set: s.set.clone(),
                source: s.source,
                time: s.created_at,
                bytes: s.bytes,
                chunks: s.chunks.len(),
            })
            .collect();
        out.sort_by_key(|s| (s.time, s.snapshot));
        out
    }

    /// (f) Forgets a snapshot: the packets nobody references any more, per
    /// target, with delete tickets.
    pub fn forget(
        &mut self,
        requester: NodeId,
        snapshot: SnapshotId,
        now: Millis,
    ) -> Result<ForgetResponse, ManagerError> {
        let command = match self.decide_forget(requester, snapshot, now) {
            Ok(command) => command,
            Err(e) => return self.forgotten_already(requester, snapshot).ok_or(e),
        };
        let applied = self.execute(command)?;
        self.finish_forget(&applied, now)
    }

    /// The answer to a forget `requester` retries after it applied (the
    /// first answer was lost, e.g. a forget of a million chunks outran the
    /// call's deadline): its backup log says this source forgot the
    /// snapshot, and every packet it freed is in the collection queue, so
    /// the answer is "done, the leader deletes them". `None` when the log
    /// does not say so (never this source's, or trimmed since).
    pub fn forgotten_already(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> Option<ForgetResponse> {
        let said = format!("snapshot {snapshot} forgotten");
        self.state
            .log
            .iter()
            .rev()
            .any(|e| {
                e.kind == LogKind::Forgotten && e.node == requester && e.detail.starts_with(&said)
            })
            .then(|| ForgetResponse {
                deletions: BTreeMap::new(),
                delete_tickets: Vec::new(),
                more_collected_by_leader: true,
            })
    }

    /// Decides a forget: checks the snapshot is the requester's and returns
    /// the `Forget` command to replicate.
    pub fn decide_forget(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        now: Millis,
    ) -> Result<Command, ManagerError> {
        self.own_snapshot(requester, snapshot)?;
        Ok(Command::Forget {
            snapshot,
            at: now,
            expired: false,
        })
    }

    /// The answer to an applied `Forget`: what to delete where, with tickets.
    pub fn finish_forget(
        &self,
        applied: &Applied,
        now: Millis,
    ) -> Result<ForgetResponse, ManagerError> {
        let deletions = match applied {
            Applied::Deletions(d) => d.clone(),
            _ => BTreeMap::new(),
        };
        let answered: usize = deletions.values().map(Vec::len).sum();
        Ok(ForgetResponse {
            more_collected_by_leader: answered >= crate::state::MAX_DELETIONS_ANSWERED,
            delete_tickets: self.delete_tickets(&deletions, now)?,
            deletions: deletions
                .into_iter()
                .map(|(target, list)| (target, list.into_iter().map(|d| d.packet_id).collect()))
                .collect(),
        })
    }

    /// (g) Records a restore (data assembly record); returns its id.
    pub fn record_restore(
        &mut self,
        requester: NodeId,
        snapshot: SnapshotId,
        outcome: RestoreOutcome,
        now: Millis,
    ) -> Result<u64, ManagerError> {
        let (command, id) = self.decide_record_restore(requester, snapshot, outcome, now);
        self.execute(command)?;
        Ok(id)
    }

    /// The `RecordRestore` command for a restore, and the record's id.
    pub fn decide_record_restore(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        outcome: RestoreOutcome,
        now: Millis,
    ) -> (Command, u64) {
        let id = self.state.next_assembly;
        let command = Command::RecordRestore {
            record: AssemblyRecord {
                id,
                requester,
                snapshot,
                at: now,
                outcome,
            },
        };
        (command, id)
    }

    /// Abandons a planned backup of `source` (e.g. to re-plan it without a
    /// target that failed mid-upload): its reservations are released; returns
    /// delete tickets for whatever may already have been uploaded.
    pub fn abandon(
        &mut self,
        source: NodeId,
        pending_id: u64,
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        let command = self.decide_abandon(source, pending_id, now)?;
        let applied = self.execute(command)?;
        self.deletion_tickets(&applied, now)
    }

    /// Decides an abandon: checks the plan is `source`'s and returns the
    /// `AbortBackup` command to replicate (answer with
    /// [`deletion_tickets`](Self::deletion_tickets) once it applied).
    pub fn decide_abandon(
        &self,
        source: NodeId,
        pending_id: u64,
        now: Millis,
    ) -> Result<Command, ManagerError> {
        let pending = self
            .state
            .pending
            .get(&pending_id)
            .ok_or(ApplyError::UnknownPending(pending_id))?;
        if pending.source != source {
            return Err(ManagerError::Invalid(format!(
                "backup {pending_id} belongs to {}, not {source}",
                pending.source
            )));
        }
        Ok(Command::AbortBackup {
            pending_id,
            at: now,
            reason: "abandoned by its source".into(),
            expired: false,
        })
    }

    /// Aborts planned backups past their deadline; returns delete tickets for
    /// whatever they may have uploaded.
    pub fn expire_pending(&mut self, now: Millis) -> Result<Vec<StorageTicket>, ManagerError> {
        let mut tickets = Vec::new();
        for command in self.decide_expire(now) {
            let applied = self.execute(command)?;
            tickets.extend(self.deletion_tickets(&applied, now)?);
        }
        Ok(tickets)
    }

    /// The `TrimLog` command the log retention asks for at `now`, if any.
    pub fn decide_trim_log(&self, now: Millis) -> Option<Command> {
        let log = &self.state.log;
        let newest = log.last()?.seq;
        let keep = self.config.log_retention.max_events.max(1);
        let by_count = newest.saturating_add(1).saturating_sub(keep);
        let cutoff = now.saturating_sub(self.config.log_retention.max_age);
        // Events are appended in time order, so the too-old ones are a prefix.
        let by_age = log
            .iter()
            .find(|e| e.at >= cutoff)
            .map_or(newest, |e| e.seq);
        let before_seq = by_count.max(by_age).min(newest);
        (log.first()?.seq < before_seq).then_some(Command::TrimLog { before_seq })
    }

    /// `Forget` commands (at most `max`) for the snapshots of sources whose
    /// subscription expired more than `subscription_grace` before `now`:
    /// the grid keeps a lapsed subscriber's data for the grace, not forever.
    pub fn decide_expired_subscriptions(&self, now: Millis, max: usize) -> Vec<Command> {
        let grace = self.config.subscription_grace;
        let state = self.state();
        let lapsed: std::collections::BTreeSet<NodeId> = state
            .clients
            .iter()
            .filter(|(_, c)| {
                c.subscription
                    .expires_at
                    .is_some_and(|end| end.saturating_add(grace) < now)
            })
            .map(|(id, _)| *id)
            .collect();
        if lapsed.is_empty() {
            return Vec::new();
        }
        state
            .snapshots
            .values()
            .filter(|s| lapsed.contains(&s.source) && s.registering.is_none())
            .take(max)
            .map(|s| Command::Forget {
                snapshot: s.id,
                at: now,
                expired: true,
            })
            .collect()
    }

    /// The `AbortBackup` commands for planned backups past their deadline.
    pub fn decide_expire(&self, now: Millis) -> Vec<Command> {
        self.state
            .pending
            .values()
            .filter(|p| p.expires_at < now)
            .map(|p| Command::AbortBackup {
                pending_id: p.id,
                at: now,
                reason: "not committed before its deadline".into(),
                expired: true,
            })
            .collect()
    }
}
