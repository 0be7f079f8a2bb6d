//! The manager's calls for outliving the coordinator group (issue 18, SPEC
//! R15): a snapshot's sequence with this group's attestation (what a source
//! keeps in the snapshot's root), the rebuild mark, and re-registering a
//! snapshot of a lost group from its root. Same contract as the parent
//! module: `decide_*` reads the state and returns commands; no I/O, no clock.

use super::*;
use crate::attest::{Attested, Registration, SnapshotAttestation};
use crate::ids::GridId;
use crate::state::Reregistered;

/// A snapshot's sequence sealed to its source, and this manager's
/// attestation of exactly that sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestedSequence {
    pub sealed: SealedForRecipient,
    pub attestation: SnapshotAttestation,
}

impl Manager {
    /// One of `requester`'s snapshots' sequence (whole: it must fit one
    /// page, as a root's does), sealed to it, with the attestation signed
    /// by this manager's identity that a rebuilt group believes.
    pub fn fetch_attested_sequence<R: CryptoRng + ?Sized>(
        &self,
        requester: NodeId,
        snapshot: SnapshotId,
        rng: &mut R,
    ) -> Result<AttestedSequence, ManagerError> {
        let record = self.own_snapshot(requester, snapshot)?;
        let sequence = self.current_sequence(requester, snapshot)?;
        if sequence.stripes.len() > MAX_SEQUENCE_PAGE {
            return Err(ManagerError::Invalid(format!(
                "snapshot {snapshot} has {} stripes: too many for one root",
                sequence.stripes.len()
            )));
        }
        let attestation = SnapshotAttestation::issue(
            &self.identity,
            Attested {
                snapshot,
                source: record.source,
                set: record.set.clone(),
                created_at: record.created_at,
                bytes: record.bytes,
                manifest: record.data_id,
            },
            &sequence,
        )
        .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let sealed = self.seal_for(requester, snapshot, &sequence, rng)?;
        Ok(AttestedSequence {
            sealed,
            attestation,
        })
    }

    /// `strew grid rebuild`: the command marking this group rebuilt, or
    /// `None` when it is already.
    pub fn decide_begin_rebuild(&self, by: NodeId, now: Millis) -> Option<Command> {
        self.state
            .rebuilt_since
            .is_none()
            .then_some(Command::BeginRebuild { by, at: now })
    }

    /// A source's re-registration of a lost group's snapshot: refused unless
    /// this group was marked rebuilt and the registration is the
    /// requester's own, attested by a certified member of grid `grid` for
    /// exactly its sequence. `None`: the snapshot is recorded already.
    pub fn decide_reregister<R: CryptoRng + ?Sized>(
        &self,
        requester: NodeId,
        registration: &Registration,
        grid: &GridId,
        now: Millis,
        rng: &mut R,
    ) -> Result<Option<Command>, ManagerError> {
        if self.state.rebuilt_since.is_none() {
            return Err(ManagerError::Invalid(
                "this coordinator group was not rebuilt (`strew grid rebuild`): it takes no re-registered snapshots".into(),
            ));
        }
        registration
            .verify(&requester, grid)
            .map_err(|e| ManagerError::Invalid(format!("re-registration refused: {e}")))?;
        let a = &registration.attestation.what;
        if self.state.snapshots.contains_key(&a.snapshot) {
            return Ok(None);
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
                stripes: seq.stripes.clone(),
                params: registration.params.clone(),
                at: now,
            }),
        };
        check_entry(&command)?;
        Ok(Some(command))
    }
}
