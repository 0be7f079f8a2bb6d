//! The overlay's storage seam implemented by the node's redb packet store,
//! with group commit: puts that arrive while one is being made durable are
//! stored together by one `put_many` (one segment sync and one index commit
//! for the group), so many concurrent uploads do not each pay two fsyncs;
//! deletes likewise (one index commit for the deletes waiting together, so
//! a leader collecting a million packets is not one fsync a packet).
//! Each put records the packet's storage generation with it (the store keeps
//! the first one); deletes are bound to a generation.
//! Owns the error mapping and the batching; it must not add policy.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};

use strew_coordinator::{NodeId, PacketId};
use strew_overlay::packet::{
    DeleteOutcome, HeldPacket, PacketStorage, ROOT_GENERATION, StorageError,
};

use super::holders::HolderIndex;
use crate::store::{CheckedPacket, GenerationDelete, PacketStore, StoreError};

/// Puts waiting for the group-commit thread (the overlay bounds in-flight puts well below this).
const QUEUE: usize = 256;
/// Most packets and bytes made durable together.
const GROUP_PACKETS: usize = 64;
const GROUP_BYTES: usize = 32 << 20;

/// Most deletes made durable together.
const GROUP_DELETES: usize = 256;

type Reply = SyncSender<Result<u64, StoreError>>;
type Job = (CheckedPacket, u64, Reply);
type DeleteReply = SyncSender<Result<GenerationDelete, StoreError>>;
type DeleteJob = (PacketId, u64, DeleteReply);

/// [`PacketStore`] as the packet protocol sees it.
#[derive(Clone)]
pub struct StoreAdapter {
    store: PacketStore,
    puts: Arc<Mutex<SyncSender<Job>>>,
    deletes: Arc<Mutex<SyncSender<DeleteJob>>>,
    /// Who stored each packet (holder reads, snapshot roots); none: no holder reads.
    holders: Option<HolderIndex>,
}

impl StoreAdapter {
    /// Wraps `store` and starts its group-commit threads (they end with the last clone).
    pub fn new(store: PacketStore) -> Self {
        let (tx, rx) = sync_channel::<Job>(QUEUE);
        let worker = store.clone();
        spawn_committer("strew-store-commit", move || group_commit(&worker, &rx));
        let (delete_tx, delete_rx) = sync_channel::<DeleteJob>(QUEUE);
        let worker = store.clone();
        spawn_committer("strew-store-delete", move || {
            group_delete(&worker, &delete_rx)
        });
        StoreAdapter {
            store,
            puts: Arc::new(Mutex::new(tx)),
            deletes: Arc::new(Mutex::new(delete_tx)),
            holders: None,
        }
    }

    /// Also keeps who stored each packet in `holders`.
    pub fn with_holders(mut self, holders: HolderIndex) -> Self {
        self.holders = Some(holders);
        self
    }
}

fn held(err: super::holders::HoldersError) -> StorageError {
    StorageError::Failed(Box::new(err))
}

fn spawn_committer(name: &str, work: impl FnOnce() + Send + 'static) {
    if let Err(err) = std::thread::Builder::new().name(name.into()).spawn(work) {
        // Without the thread every call is made directly (see `send`).
        tracing::error!(%err, "cannot start the packet store's {name} thread");
    }
}

/// `first` and whatever else is already waiting, while `room` says the
/// group may grow.
fn gather<J>(rx: &Receiver<J>, first: J, room: impl Fn(&[J]) -> bool) -> Vec<J> {
    let mut group = vec![first];
    while room(&group) {
        match rx.try_recv() {
            Ok(job) => group.push(job),
            Err(_) => break,
        }
    }
    group
}

/// Hands `job` to a committer thread and waits for its answer; `None`
/// when there is no thread (the caller then does the work itself).
fn send<J, R>(to: &Mutex<SyncSender<J>>, job: J, answer: &Receiver<R>) -> Option<R> {
    if !queue(to, job) {
        return None;
    }
    answer.recv().ok()
}

/// Hands `job` to the committing thread without waiting for its answer;
/// false when that thread is gone.
fn queue<J>(to: &Mutex<SyncSender<J>>, job: J) -> bool {
    let Ok(tx) = to.lock() else {
        return false;
    };
    match tx.try_send(job) {
        Ok(()) => true,
        Err(TrySendError::Full(job)) => tx.send(job).is_ok(),
        Err(TrySendError::Disconnected(_)) => false,
    }
}

fn delete_outcome(outcome: GenerationDelete) -> DeleteOutcome {
    match outcome {
        GenerationDelete::Deleted => DeleteOutcome::Deleted,
        GenerationDelete::Absent => DeleteOutcome::Absent,
        GenerationDelete::OtherGeneration => DeleteOutcome::OtherGeneration,
    }
}

/// Takes one delete, gathers whatever else is already waiting, deletes
/// them in one transaction.
fn group_delete(store: &PacketStore, rx: &Receiver<DeleteJob>) {
    while let Ok(first) = rx.recv() {
        let group = gather(rx, first, |g| g.len() < GROUP_DELETES);
        let wanted: Vec<(PacketId, u64)> = group.iter().map(|(id, g, _)| (*id, *g)).collect();
        match store.delete_generations(&wanted) {
            Ok(outcomes) => {
                for ((_, _, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            // A failed group: each on its own, so one error stays its own.
            Err(_) => {
                for (id, generation, reply) in group {
                    let _ = reply.send(store.delete_generation(&id, generation));
                }
            }
        }
    }
}

/// Takes one put, gathers whatever else is already waiting, stores them together.
fn group_commit(store: &PacketStore, rx: &Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut group = gather(rx, first, |g| {
            g.len() < GROUP_PACKETS && g.iter().map(|j| j.0.len()).sum::<usize>() < GROUP_BYTES
        });
        let refs: Vec<(&CheckedPacket, u64)> = group.iter().map(|(p, g, _)| (p, *g)).collect();
        match store.put_checked_with_generations(&refs) {
            Ok(generations) => {
                for ((_, _, reply), generation) in group.into_iter().zip(generations) {
                    let _ = reply.send(Ok(generation));
                }
            }
            // One member that cannot be stored must not fail the others: store them one by one.
            Err(err) if group.len() == 1 => {
                if let Some((_, _, reply)) = group.pop() {
                    let _ = reply.send(Err(err));
                }
            }
            Err(_) => {
                for (p, g, reply) in group {
                    let one = store
                        .put_checked_with_generations(&[(&p, g)])
                        .map(|out| out.first().copied().unwrap_or(g));
                    let _ = reply.send(one);
                }
            }
        }
    }
}

fn map(err: StoreError) -> StorageError {
    match err {
        StoreError::Full { needed, free, .. } => StorageError::Full { needed, free },
        StoreError::WrongPacketId { actual, .. } => StorageError::WrongId { actual },
        other => StorageError::Failed(Box::new(other)),
    }
}

impl PacketStorage for StoreAdapter {
    fn put(&self, id: PacketId, bytes: &[u8], generation: u64) -> Result<u64, StorageError> {
        // Hashed here, on the caller's thread (many run at once), not on
        // the one committing thread.
        let packet = CheckedPacket::check(id, bytes.to_vec()).map_err(map)?;
        let (reply, answer) = sync_channel(1);
        match send(&self.puts, (packet, generation, reply), &answer) {
            Some(result) => result.map_err(map),
            // No commit thread: store directly (checked again, rarely).
            None => self
                .store
                .put_many_with_generations(&[(id, bytes, generation)])
                .map(|out| out.first().copied().unwrap_or(generation))
                .map_err(map),
        }
    }

    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
        self.store.get(id).map_err(map)
    }

    fn delete(&self, id: &PacketId, generation: u64) -> Result<DeleteOutcome, StorageError> {
        let (reply, answer) = sync_channel(1);
        let outcome = match send(&self.deletes, (*id, generation, reply), &answer) {
            Some(result) => result,
            None => self.store.delete_generation(id, generation),
        };
        outcome.map(delete_outcome).map_err(map)
    }

    fn delete_many(&self, deletes: &[(PacketId, u64)]) -> Vec<Result<DeleteOutcome, StorageError>> {
        // Every delete queued before any answer is awaited: the committing
        // thread takes them in one group (or a few), not one each.
        let answers: Vec<Option<Receiver<_>>> = deletes
            .iter()
            .map(|(id, generation)| {
                let (reply, answer) = sync_channel(1);
                queue(&self.deletes, (*id, *generation, reply)).then_some(answer)
            })
            .collect();
        deletes
            .iter()
            .zip(answers)
            .map(|((id, generation), answer)| {
                let outcome = match answer.and_then(|a| a.recv().ok()) {
                    Some(result) => result,
                    None => self.store.delete_generation(id, *generation),
                };
                outcome.map(delete_outcome).map_err(map)
            })
            .collect()
    }

    fn free_bytes(&self) -> Result<u64, StorageError> {
        self.store.free_bytes().map_err(map)
    }

    fn capacity(&self) -> u64 {
        self.store.capacity()
    }

    fn record_holder(&self, id: &PacketId, holder: &NodeId) -> Result<(), StorageError> {
        match &self.holders {
            Some(h) => h.record(id, holder).map_err(held),
            None => Ok(()),
        }
    }

    fn is_holder(&self, id: &PacketId, holder: &NodeId) -> Result<bool, StorageError> {
        match &self.holders {
            Some(h) => h.is_holder(id, holder).map_err(held),
            None => Ok(false),
        }
    }

    fn holds_ticketed(&self, holder: &NodeId) -> Result<bool, StorageError> {
        match &self.holders {
            Some(h) => h.holds_ticketed(holder).map_err(held),
            None => Ok(false),
        }
    }

    fn mark_root(&self, id: &PacketId, holder: &NodeId) -> Result<bool, StorageError> {
        match &self.holders {
            Some(h) => h.mark_root(id, holder).map_err(held),
            None => Ok(false),
        }
    }

    fn drop_root(&self, id: &PacketId, holder: &NodeId) -> Result<bool, StorageError> {
        let Some(h) = &self.holders else {
            return Ok(false);
        };
        if !h.is_root(id, holder).map_err(held)? {
            return Ok(false);
        }
        // A packet `PutRoot` stored goes; a marked data packet is the
        // manager's to free and only loses its mark.
        let deleted = matches!(
            self.store
                .delete_generation(id, ROOT_GENERATION)
                .map_err(map)?,
            GenerationDelete::Deleted | GenerationDelete::Absent
        );
        h.unmark_root(id, holder, deleted).map_err(held)?;
        Ok(true)
    }

    fn roots_of(
        &self,
        holder: &NodeId,
        after: Option<&PacketId>,
        limit: usize,
    ) -> Result<Vec<PacketId>, StorageError> {
        match &self.holders {
            Some(h) => h
                .roots_of(holder, after, limit, |id| {
                    self.store.contains(id).unwrap_or(false)
                })
                .map_err(held),
            None => Ok(Vec::new()),
        }
    }

    fn inventory(
        &self,
        after: Option<&PacketId>,
        limit: usize,
    ) -> Result<Vec<HeldPacket>, StorageError> {
        Ok(self
            .store
            .inventory(after, limit)
            .map_err(map)?
            .into_iter()
            .map(|(packet_id, size, generation)| HeldPacket {
                packet_id,
                size,
                generation,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adapter_maps_full_and_wrong_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreAdapter::new(PacketStore::open(dir.path(), 8).unwrap());
        let bytes = b"0123456789".to_vec();
        assert!(matches!(
            store.put(PacketId::of(b"x"), &bytes, 1),
            Err(StorageError::WrongId { .. })
        ));
        assert!(matches!(
            store.put(PacketId::of(&bytes), &bytes, 1),
            Err(StorageError::Full { .. })
        ));
        let small = b"abc".to_vec();
        store.put(PacketId::of(&small), &small, 1).unwrap();
        assert_eq!(store.get(&PacketId::of(&small)).unwrap(), Some(small));
    }

    #[test]
    fn concurrent_puts_are_grouped_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreAdapter::new(PacketStore::open(dir.path(), 1 << 30).unwrap());
        let packets: Vec<Vec<u8>> = (0..200u32)
            .map(|i| format!("packet {i}").repeat(100).into_bytes())
            .collect();
        std::thread::scope(|s| {
            for chunk in packets.chunks(25) {
                let store = store.clone();
                s.spawn(move || {
                    for p in chunk {
                        store.put(PacketId::of(p), p, 3).unwrap();
                    }
                    // A lying put among good ones is refused on its own.
                    assert!(matches!(
                        store.put(PacketId::of(b"other"), &chunk[0], 3),
                        Err(StorageError::WrongId { .. })
                    ));
                });
            }
        });
        for p in &packets {
            assert_eq!(
                store.get(&PacketId::of(p)).unwrap().as_deref(),
                Some(&p[..])
            );
        }
    }

    #[test]
    fn concurrent_deletes_are_grouped_and_each_keeps_its_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreAdapter::new(PacketStore::open(dir.path(), 1 << 30).unwrap());
        let packets: Vec<(Vec<u8>, u64)> = (0..300u32)
            .map(|i| {
                (
                    format!("packet {i}").repeat(50).into_bytes(),
                    3 + u64::from(i % 3 == 0),
                )
            })
            .collect();
        for (p, generation) in &packets {
            store.put(PacketId::of(p), p, *generation).unwrap();
        }
        std::thread::scope(|s| {
            for chunk in packets.chunks(20) {
                let store = store.clone();
                s.spawn(move || {
                    for (p, generation) in chunk {
                        let id = PacketId::of(p);
                        // Every delete names generation 3: a packet stored
                        // under 4 is another copy and stays.
                        let want = if *generation == 3 {
                            DeleteOutcome::Deleted
                        } else {
                            DeleteOutcome::OtherGeneration
                        };
                        assert_eq!(store.delete(&id, 3).unwrap(), want);
                        if *generation == 3 {
                            assert_eq!(store.delete(&id, 3).unwrap(), DeleteOutcome::Absent);
                        }
                    }
                });
            }
        });
        for (p, generation) in &packets {
            let held = store.get(&PacketId::of(p)).unwrap().is_some();
            assert_eq!(held, *generation == 4, "{generation}");
        }
        let kept: u64 = packets
            .iter()
            .filter(|(_, g)| *g == 4)
            .map(|(p, _)| p.len() as u64)
            .sum();
        assert_eq!(store.store.usage().unwrap().used_bytes, kept);
    }

    #[test]
    fn a_batch_of_deletes_answers_each_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = StoreAdapter::new(PacketStore::open(dir.path(), 1 << 30).unwrap());
        let packets: Vec<(Vec<u8>, u64)> = (0..300u32)
            .map(|i| {
                let bytes = format!("batched {i}").repeat(40).into_bytes();
                (bytes, 3 + u64::from(i % 4 == 0))
            })
            .collect();
        for (p, generation) in &packets {
            store.put(PacketId::of(p), p, *generation).unwrap();
        }
        // Every delete names generation 3; one packet was never stored.
        let mut deletes: Vec<(PacketId, u64)> =
            packets.iter().map(|(p, _)| (PacketId::of(p), 3)).collect();
        deletes.push((PacketId::of(b"never stored"), 3));
        let outcomes = store.delete_many(&deletes);
        assert_eq!(outcomes.len(), 301);
        for ((_, generation), outcome) in packets.iter().zip(&outcomes) {
            let want = if *generation == 3 {
                DeleteOutcome::Deleted
            } else {
                DeleteOutcome::OtherGeneration
            };
            assert_eq!(outcome.as_ref().unwrap(), &want);
        }
        assert_eq!(outcomes[300].as_ref().unwrap(), &DeleteOutcome::Absent);
        for (p, generation) in &packets {
            let held = store.get(&PacketId::of(p)).unwrap().is_some();
            assert_eq!(held, *generation == 4);
        }
        // Again: what was deleted is absent now, the other copies stay.
        let again = store.delete_many(&deletes[..4]);
        let again: Vec<DeleteOutcome> = again.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            again,
            [
                DeleteOutcome::OtherGeneration,
                DeleteOutcome::Absent,
                DeleteOutcome::Absent,
                DeleteOutcome::Absent
            ]
        );
    }

    #[test]
    fn a_dropped_root_leaves_the_disk_and_its_holders_quota_a_marked_data_packet_stays() {
        let dir = tempfile::tempdir().unwrap();
        let holders = HolderIndex::open(&dir.path().join("holders")).unwrap();
        let store = StoreAdapter::new(PacketStore::open(dir.path(), 1 << 20).unwrap())
            .with_holders(holders);
        let owner = NodeId([3; 32]);
        let data = b"a data packet".to_vec();
        let data_id = PacketId::of(&data);
        store.put(data_id, &data, 7).unwrap();
        store.record_holder(&data_id, &owner).unwrap();
        let root = b"a root packet".to_vec();
        let root_id = PacketId::of(&root);
        store.put(root_id, &root, ROOT_GENERATION).unwrap();
        store.record_holder(&root_id, &owner).unwrap();
        assert!(store.mark_root(&root_id, &owner).unwrap());
        assert!(store.mark_root(&data_id, &owner).unwrap());
        assert_eq!(store.roots_of(&owner, None, 10).unwrap().len(), 2);
        assert!(!store.drop_root(&root_id, &NodeId([4; 32])).unwrap());
        assert!(store.drop_root(&root_id, &owner).unwrap());
        assert!(store.drop_root(&data_id, &owner).unwrap());
        assert_eq!(store.get(&root_id).unwrap(), None, "the root is deleted");
        assert_eq!(
            store.get(&data_id).unwrap(),
            Some(data),
            "the data packet stays"
        );
        assert!(store.roots_of(&owner, None, 10).unwrap().is_empty());
        assert!(!store.is_holder(&root_id, &owner).unwrap());
        assert!(store.is_holder(&data_id, &owner).unwrap());
        assert!(
            store.holds_ticketed(&owner).unwrap(),
            "its data packet still vouches"
        );
        assert!(!store.drop_root(&root_id, &owner).unwrap());
    }

    #[test]
    fn a_delete_is_honoured_once_for_its_generation_also_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = b"a packet".to_vec();
        let id = PacketId::of(&bytes);
        let store = StoreAdapter::new(PacketStore::open(dir.path(), 1 << 20).unwrap());
        assert_eq!(store.put(id, &bytes, 7).unwrap(), 7);
        assert_eq!(
            store.put(id, &bytes, 8).unwrap(),
            8,
            "the latest store's generation holds"
        );
        assert_eq!(
            store.delete(&id, 7).unwrap(),
            DeleteOutcome::OtherGeneration,
            "a delete of the earlier store does not remove the copy stored again"
        );
        assert!(store.get(&id).unwrap().is_some());
        assert_eq!(store.delete(&id, 8).unwrap(), DeleteOutcome::Deleted);
        assert_eq!(store.delete(&id, 8).unwrap(), DeleteOutcome::Absent);
        // Stored again under a new generation: the old delete is refused.
        assert_eq!(store.put(id, &bytes, 9).unwrap(), 9);
        drop(store);
        // Reopened (a restart, once the commit thread let go of the store):
        // the generation is still there, the old delete still refused.
        let mut reopened = PacketStore::open(dir.path(), 1 << 20);
        for _ in 0..250 {
            if reopened.is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            reopened = PacketStore::open(dir.path(), 1 << 20);
        }
        let reopened = reopened.expect("the store reopens once the commit thread ended");
        assert_eq!(reopened.generation_of(&id).unwrap(), Some(9));
        assert_eq!(
            reopened.delete_generation(&id, 7).unwrap(),
            GenerationDelete::OtherGeneration
        );
        assert_eq!(reopened.get(&id).unwrap(), Some(bytes));
        assert_eq!(
            reopened.delete_generation(&id, 9).unwrap(),
            GenerationDelete::Deleted
        );
        assert_eq!(reopened.generation_of(&id).unwrap(), None);
    }
}
