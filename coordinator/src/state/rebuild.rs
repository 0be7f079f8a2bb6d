//! Rebuilding the records of a lost coordinator group (issue 18, SPEC R15):
//! the rebuild mark (`strew grid rebuild`) and sources' re-registered
//! snapshots.
//!
//! A group founded again with the grid key after the old group was lost
//! knows nothing of the grid's snapshots although every packet is still on
//! its target. Once an operator marks it rebuilt, each source hands in the
//! snapshots its roots describe (the leader checked the old group's
//! attestation of each sequence first), and this module records them as a
//! commit would have: the snapshot, its chunk copies (merged with copies
//! other sources re-registered), the targets' packets and the source's
//! charge. Nothing here deletes anything on its own: packets no registered
//! snapshot references stay where they are until an operator's explicit
//! collection after the grace (`strew grid collect-unreferenced`) queues
//! them for the leader's collection. This module must not verify
//! signatures (the manager did) nor seal anything.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::{ApplyError, ManagerState, Touched, profile_of, same_packets};
use crate::attest::Attested;
use crate::ids::{DataId, NodeId, PacketId};
use crate::records::{
    BackupParams, ChunkRecord, LogKind, MAX_CHUNK_COPIES, NodeSet, SnapshotRecord, StoredPacket,
    chunk_copy_key,
};
use crate::seal::{SealedAtRest, SequenceStripe};
use crate::units::Millis;

/// `pending_id` of a re-registered snapshot's record (it came from no
/// pending backup of this group).
pub const REREGISTERED: u64 = u64::MAX;

/// One page of a snapshot of the lost group, as its source re-registered it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reregistered {
    /// The snapshot as its attestation states it.
    pub what: Attested,
    /// The sequence's header sealed under this group's key (its stripes are
    /// the chunk records, as for a paged commit).
    pub sealed_sequence: SealedAtRest,
    /// Which attested page this is (pages are recorded in order).
    pub page: u32,
    /// The page's stripes, in order.
    pub stripes: Vec<SequenceStripe>,
    pub params: BackupParams,
    pub at: Millis,
}

/// A packet a target holds that no record referenced when the operator's
/// collection looked (from the target's inventory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreferenced {
    pub packet_id: PacketId,
    /// The generation the target holds it under (its delete ticket names it).
    pub generation: u64,
    pub size: u64,
}

impl ManagerState {
    /// Queues `packets` of `target` for collection, except those a record
    /// or a pending plan references by now or that are queued already.
    pub(super) fn queue_unreferenced(
        &mut self,
        target: &NodeId,
        packets: &[Unreferenced],
        by: NodeId,
        at: Millis,
        touched: &mut Touched,
    ) {
        let mut queued = 0u64;
        let mut bytes = 0u64;
        for p in packets {
            let key = (*target, p.packet_id);
            let referenced = self
                .targets
                .get(target)
                .is_some_and(|r| r.packets.contains_key(&p.packet_id))
                || self.pending_puts(&p.packet_id, target, None);
            if referenced || self.garbage.contains_key(&key) {
                continue;
            }
            self.garbage.insert(
                key,
                super::Garbage {
                    generation: p.generation,
                    due: at,
                },
            );
            touched.garbage.insert(key);
            queued += 1;
            bytes = bytes.saturating_add(p.size);
        }
        if queued > 0 {
            self.log(
                touched,
                at,
                LogKind::Rebuilt,
                by,
                format!(
                    "{queued} packet(s) ({}) on {target} that no snapshot references are queued for collection",
                    crate::units::format_size(bytes)
                ),
            );
        }
    }

    /// Marks this group rebuilt (once; a repeat changes nothing).
    pub(super) fn begin_rebuild(&mut self, by: NodeId, at: Millis, touched: &mut Touched) {
        if self.rebuilt_since.is_some() {
            return;
        }
        self.rebuilt_since = Some(at);
        touched.counters = true;
        self.log(
            touched,
            at,
            LogKind::Rebuilt,
            by,
            "the coordinator group is rebuilt: sources re-register their snapshots from their roots"
                .into(),
        );
    }

    /// The record key a re-registered stripe's copy goes under: the copy of
    /// its chunk with the same packets if one is recorded (another source
    /// re-registered it), else the first free copy key.
    fn reregistered_key(
        &self,
        data_id: &DataId,
        packets: &[StoredPacket],
    ) -> Result<(DataId, bool), ApplyError> {
        let keys: Vec<DataId> = (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(data_id, n))
            .collect();
        if let Some(key) = keys.iter().find(|k| {
            self.chunks
                .get(k)
                .is_some_and(|c| c.data_id == *data_id && same_packets(&c.packets, packets))
        }) {
            return Ok((*key, true));
        }
        keys.into_iter()
            .find(|k| !self.chunks.contains_key(k))
            .map(|k| (k, false))
            .ok_or_else(|| {
                ApplyError::Invalid(format!(
                    "chunk {data_id} has {MAX_CHUNK_COPIES} other copies recorded already"
                ))
            })
    }

    /// Records one page of a re-registered snapshot, the snapshot itself
    /// with its last page (a page recorded already changes nothing).
    pub(super) fn reregister(
        &mut self,
        registered: &Reregistered,
        touched: &mut Touched,
    ) -> Result<(), ApplyError> {
        let (r, w) = (registered, &registered.what);
        if self.rebuilt_since.is_none() {
            return Err(ApplyError::Invalid(
                "this coordinator group was not rebuilt: it takes no re-registered snapshots"
                    .into(),
            ));
        }
        let pages = w.pages();
        // Pages of an attested sequence name each distinct chunk once (the
        // lost group recorded it so), so a page is checked against itself
        // only: no page costs the snapshot's size.
        let done = match self.snapshots.get(&w.snapshot) {
            None => 0,
            Some(record) if record.source != w.source => {
                return Err(ApplyError::Invalid(format!(
                    "snapshot {} is another source's",
                    w.snapshot
                )));
            }
            Some(record) => match record.registering {
                None => return Ok(()),
                Some(done) => done,
            },
        };
        if r.page < done {
            return Ok(());
        }
        if r.page > done || r.page >= pages {
            return Err(ApplyError::Invalid(format!(
                "page {} of snapshot {} re-registered before page {done} of {pages}",
                r.page, w.snapshot
            )));
        }
        let location = self
            .clients
            .get(&w.source)
            .ok_or(ApplyError::UnknownNode(w.source))?
            .profile
            .location;
        // Validate and resolve every stripe before changing anything.
        let mut resolved: Vec<(DataId, DataId, Vec<StoredPacket>, bool)> = Vec::new();
        let mut seen = BTreeSet::new();
        for stripe in &r.stripes {
            let packets: Vec<StoredPacket> = stripe
                .packets
                .iter()
                .flat_map(|e| {
                    e.targets.iter().map(move |t| StoredPacket {
                        packet_id: e.packet_id,
                        size: e.size,
                        target: *t,
                        generation: e.generation,
                    })
                })
                .collect();
            if packets.is_empty() || packets.iter().any(|p| p.size > super::MAX_PACKET_BYTES) {
                return Err(ApplyError::Invalid(format!(
                    "stripe of chunk {} has no packets or an oversized one",
                    stripe.data_id
                )));
            }
            let (key, known) = self.reregistered_key(&stripe.data_id, &packets)?;
            // Each distinct chunk once per snapshot, as a commit records it.
            if seen.insert(stripe.data_id) {
                resolved.push((key, stripe.data_id, packets, known));
            }
        }
        // Now change.
        let mut charged = 0u64;
        let mut chunks = Vec::with_capacity(resolved.len());
        for (key, data_id, packets, known) in resolved {
            chunks.push(key);
            touched.chunks.insert(key);
            if known {
                if let Some(chunk) = self.chunks.get_mut(&key) {
                    chunk.refs += 1;
                    chunk.sources.insert(w.source);
                }
                continue;
            }
            for p in &packets {
                self.record_on_target(p, touched);
                charged = charged.saturating_add(p.size);
                // A copy queued for collection is live again.
                self.collected(&[(p.target, p.packet_id)], touched);
            }
            let redundancy =
                (packets.len() == r.params.redundancy.width()).then_some(r.params.redundancy);
            self.chunks.insert(
                key,
                ChunkRecord {
                    data_id,
                    packets,
                    refs: 1,
                    sources: NodeSet::from([w.source]),
                    owner: w.source,
                    bad: false,
                    redundancy,
                },
            );
        }
        if let Some(client) = self.clients.get_mut(&w.source) {
            client.source_stored_bytes = client.source_stored_bytes.saturating_add(charged);
            touched.clients.insert(w.source);
        }
        touched.snapshots.insert(w.snapshot);
        let last = r.page + 1 == pages;
        match self.snapshots.get_mut(&w.snapshot) {
            Some(record) => {
                record.chunks.extend(chunks);
                record.registering = (!last).then_some(r.page + 1);
            }
            None => {
                self.snapshots.insert(
                    w.snapshot,
                    SnapshotRecord {
                        id: w.snapshot,
                        source: w.source,
                        set: w.set.clone(),
                        data_id: w.manifest,
                        created_at: w.created_at,
                        bytes: w.bytes,
                        chunks,
                        sealed_sequence: r.sealed_sequence.clone(),
                        pending_id: REREGISTERED,
                        registering: (!last).then_some(r.page + 1),
                    },
                );
            }
        }
        if !last {
            return Ok(());
        }
        let profile = profile_of(
            &mut self.profiles,
            (w.source, &w.set),
            location,
            &r.params,
            touched,
        );
        // Oldest first, as commits append them.
        let at = profile
            .snapshots
            .iter()
            .position(|s| {
                self.snapshots
                    .get(s)
                    .is_some_and(|rec| rec.created_at > w.created_at)
            })
            .unwrap_or(profile.snapshots.len());
        profile.snapshots.insert(at, w.snapshot);
        if at + 1 == profile.snapshots.len() {
            profile.data_id = Some(w.manifest);
            profile.sealed_sequence = Some(r.sealed_sequence.clone());
            profile.params = r.params.clone();
        }
        let stripes = self
            .snapshots
            .get(&w.snapshot)
            .map_or(0, |s| s.chunks.len());
        self.log(
            touched,
            r.at,
            LogKind::Rebuilt,
            w.source,
            format!(
                "snapshot {} of set {:?} re-registered from its root: {stripes} chunk(s) in {pages} page(s)",
                w.snapshot,
                w.set,
            ),
        );
        Ok(())
    }
}
