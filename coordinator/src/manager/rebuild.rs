//! The manager's calls for outliving the coordinator group (issue 18, SPEC
//! R15): this group's attestation of a snapshot's sequence (what a source
//! keeps in the snapshot's root), the rebuild mark, and re-registering a
//! snapshot of a lost group from its root, page by page, and the operator's
//! collection of packets no snapshot references once the rebuild's grace
//! is over. Same contract as the parent
//! module: `decide_*` reads the state and returns commands; no I/O, no clock.

use super::*;
use crate::attest::{Attested, Registration, SnapshotAttestation, attest_page_len, page_digest};
use crate::ids::GridId;
use crate::state::{Reregistered, Unreferenced};

/// What to do with one page of a re-registration.
#[derive(Clone, Debug, PartialEq)]
pub enum ReregisterDecision {
    /// Record the page.
    Propose(Box<Command>),
    /// Nothing to record: this group has the snapshot's first `pages_done`
    /// of its `pages` pages (all of them: the snapshot is recorded). The
    /// source goes on from page `pages_done`.
    Have { pages_done: u32, pages: u32 },
}

impl Manager {
    /// This manager's attestation of one of `requester`'s snapshots'
    /// sequence as it is now (what the snapshot's root keeps with its
    /// pages, fetched with `fetch_sequence_page` in pages of the stripes the
    /// attestation states), signed by this manager's identity, which a
    /// rebuilt group believes. Builds the sequence one page at a time.
    pub fn fetch_attestation(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
    ) -> Result<SnapshotAttestation, ManagerError> {
        let (record, header) = self.sequence_header(requester, snapshot)?;
        // Pages sized for the set's stripe width (a root part and a
        // re-registration page stay under their 1 MiB bounds).
        let width = self
            .state
            .profiles
            .get(&crate::records::profile_key(&record.source, &record.set))
            .map_or(16, |p| p.params.redundancy.width());
        let what = Attested {
            snapshot,
            source: record.source,
            set: record.set.clone(),
            created_at: record.created_at,
            bytes: record.bytes,
            manifest: record.data_id,
            stripes: record.chunks.len() as u64,
            page: attest_page_len(width),
        };
        let mut digests = Vec::with_capacity(what.pages() as usize);
        for page in 0..what.pages() {
            let range = what.range(page);
            let mut sequence = header.clone();
            sequence.stripes =
                self.current_stripes(record, &header, range.start as usize..range.end as usize)?;
            digests.push(page_digest(&sequence).map_err(|e| ManagerError::Invalid(e.to_string()))?);
        }
        SnapshotAttestation::issue(&self.identity, what, &digests)
            .map_err(|e| ManagerError::Invalid(e.to_string()))
    }

    /// `strew grid rebuild`: the command marking this group rebuilt, or
    /// `None` when it is already.
    pub fn decide_begin_rebuild(&self, by: NodeId, now: Millis) -> Option<Command> {
        self.state
            .rebuilt_since
            .is_none()
            .then_some(Command::BeginRebuild { by, at: now })
    }

    /// One page of a source's re-registration of a lost group's snapshot:
    /// refused unless this group was marked rebuilt and the registration is
    /// the requester's own, attested by a certified member of grid `grid`,
    /// with exactly the page attested. Pages are recorded in order; a page
    /// this group has already, or one ahead of the next it needs, is
    /// answered with how far it got.
    pub fn decide_reregister<R: CryptoRng + ?Sized>(
        &self,
        requester: NodeId,
        registration: &Registration,
        grid: &GridId,
        now: Millis,
        rng: &mut R,
    ) -> Result<ReregisterDecision, ManagerError> {
        if self.state.rebuilt_since.is_none() {
            return Err(ManagerError::Invalid(
                "this coordinator group was not rebuilt (`strew grid rebuild`): it takes no re-registered snapshots".into(),
            ));
        }
        registration
            .verify(&requester, grid)
            .map_err(|e| ManagerError::Invalid(format!("re-registration refused: {e}")))?;
        let a = &registration.attestation.what;
        let pages = a.pages();
        let pages_done = match self.state.snapshots.get(&a.snapshot) {
            None => 0,
            Some(record) if record.source != requester => {
                return Err(ManagerError::NotYours {
                    node: requester,
                    snapshot: a.snapshot,
                });
            }
            Some(record) => record.registering.unwrap_or(pages),
        };
        if registration.page != pages_done {
            return Ok(ReregisterDecision::Have { pages_done, pages });
        }
        if !self.state.clients.contains_key(&requester) {
            return Err(ApplyError::UnknownNode(requester).into());
        }
        registration
            .params
            .redundancy
            .validate()
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let seq = &registration.sequence;
        let header = Sequence {
            snapshot: seq.snapshot,
            manifest: seq.manifest,
            manifest_chunks: seq.manifest_chunks.clone(),
            stripes: Vec::new(),
        };
        let sealed_sequence = seal_at_rest(
            &self.group_key,
            a.snapshot.as_bytes(),
            &header.to_bytes().map_err(ManagerError::Seal)?,
            rng,
        )
        .map_err(ManagerError::Seal)?;
        let command = Command::Reregister {
            snapshot: Box::new(Reregistered {
                what: a.clone(),
                sealed_sequence,
                page: registration.page,
                stripes: seq.stripes.clone(),
                params: registration.params.clone(),
                at: now,
            }),
        };
        check_entry(&command)?;
        Ok(ReregisterDecision::Propose(Box::new(command)))
    }

    /// `strew grid collect-unreferenced`, one page of `target`'s inventory
    /// (packet, generation, size): the packets no record and no pending
    /// plan references, and the command queueing them for collection
    /// (`None` when there are none, or for a dry run). Refused unless this
    /// group was rebuilt at least `grace` ago: until then sources are still
    /// re-registering, and what they hold is referenced. Roots (generation
    /// `u64::MAX`, their owners') are never collected.
    pub fn decide_collect_unreferenced(
        &self,
        by: NodeId,
        target: NodeId,
        held: &[Unreferenced],
        grace: Millis,
        dry_run: bool,
        now: Millis,
    ) -> Result<(Option<Command>, Vec<Unreferenced>), ManagerError> {
        let Some(since) = self.state.rebuilt_since else {
            return Err(ManagerError::Invalid(
                "this coordinator group was not rebuilt: packets no snapshot references are collected by forget and expiry".into(),
            ));
        };
        let ends = since.saturating_add(grace);
        if now < ends {
            return Err(ManagerError::Invalid(format!(
                "the rebuild's grace ends in {}s: sources may still re-register their snapshots",
                ends.saturating_sub(now).div_ceil(1000)
            )));
        }
        let record = self.state.targets.get(&target);
        let found: Vec<Unreferenced> = held
            .iter()
            .filter(|p| p.generation != u64::MAX)
            .filter(|p| !record.is_some_and(|r| r.packets.contains_key(&p.packet_id)))
            .filter(|p| !self.state.pending_puts(&p.packet_id, &target, None))
            .filter(|p| !self.state.garbage.contains_key(&(target, p.packet_id)))
            .copied()
            .collect();
        let command = (!dry_run && !found.is_empty()).then(|| Command::QueueUnreferenced {
            target,
            packets: found.clone(),
            by,
            at: now,
        });
        if let Some(c) = &command {
            check_entry(c)?;
        }
        Ok((command, found))
    }
}
