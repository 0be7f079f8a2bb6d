//! Unit tests of the packet store.
use super::*;

fn packet(n: u8, len: usize) -> (PacketId, Vec<u8>) {
    let bytes: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(n)).collect();
    (PacketId::of(&bytes), bytes)
}

#[test]
fn stores_fetches_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (id, bytes) = packet(3, 1000);
    {
        let store = PacketStore::open(dir.path(), 10_000).unwrap();
        assert_eq!(store.put(id, &bytes).unwrap(), PutOutcome::Stored);
        assert_eq!(store.put(id, &bytes).unwrap(), PutOutcome::AlreadyPresent);
        assert_eq!(store.used_bytes().unwrap(), 1000);
    }
    let store = PacketStore::open(dir.path(), 10_000).unwrap();
    assert_eq!(store.get(&id).unwrap(), Some(bytes));
    assert_eq!(store.usage().unwrap().free_bytes, 9000);
    assert_eq!(store.list().unwrap(), vec![id]);
}

#[test]
fn refuses_wrong_id_oversize_and_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = PacketStore::open(dir.path(), 1500).unwrap();
    let (id, bytes) = packet(5, 1000);
    let (other, _) = packet(6, 10);
    assert!(matches!(
        store.put(other, &bytes),
        Err(StoreError::WrongPacketId { .. })
    ));
    store.put(id, &bytes).unwrap();
    let (id2, bytes2) = packet(7, 600);
    let err = store.put(id2, &bytes2).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Full {
                needed: 600,
                free: 500,
                capacity: 1500
            }
        ),
        "{err}"
    );
    assert!(!store.contains(&id2).unwrap());
    let big = vec![0u8; MAX_PACKET_BYTES + 1];
    assert!(matches!(
        store.put(PacketId::of(&big), &big),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.used_bytes().unwrap(), 1000);
}

#[test]
fn group_put_is_all_or_nothing_on_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let store = PacketStore::open(dir.path(), 1000).unwrap();
    let a = packet(1, 600);
    let b = packet(2, 600);
    assert!(store.put_many(&[(a.0, &a.1), (b.0, &b.1)]).is_err());
    assert!(!store.contains(&a.0).unwrap());
    assert_eq!(store.used_bytes().unwrap(), 0);
}

#[test]
fn delete_frees_space_and_compaction_reclaims_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (packet(1, 4000), packet(2, 4000));
    {
        let store = PacketStore::open(dir.path(), 100_000).unwrap();
        store.put(a.0, &a.1).unwrap();
        store.put(b.0, &b.1).unwrap();
    }
    // Reopen: the old segment is closed, new writes go elsewhere.
    let store = PacketStore::open(dir.path(), 100_000).unwrap();
    assert!(store.delete(&a.0).unwrap());
    assert!(!store.delete(&a.0).unwrap());
    assert_eq!(store.used_bytes().unwrap(), 4000);
    let reclaimed = store.compact().unwrap();
    assert!(reclaimed >= 8000, "reclaimed {reclaimed}");
    assert_eq!(store.get(&b.0).unwrap(), Some(b.1.clone()));
    assert_eq!(store.get(&a.0).unwrap(), None);
    assert_eq!(store.used_bytes().unwrap(), 4000);
}

#[test]
fn bytes_appended_without_an_index_entry_are_absent_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (packet(1, 100), packet(2, 100));
    {
        let store = PacketStore::open(dir.path(), 10_000).unwrap();
        store.put(a.0, &a.1).unwrap();
        // Simulate a crash between the append and the index commit:
        // bytes of b reach the segment, its index entry never does.
        let mut w = lock(&store.inner.writer);
        w.file.write_all(&b.1).unwrap();
    }
    let store = PacketStore::open(dir.path(), 10_000).unwrap();
    assert_eq!(store.get(&b.0).unwrap(), None);
    assert_eq!(store.get(&a.0).unwrap(), Some(a.1.clone()));
    assert_eq!(store.used_bytes().unwrap(), 100);
    // And the store keeps working after it.
    store.put(b.0, &b.1).unwrap();
    assert_eq!(store.get(&b.0).unwrap(), Some(b.1));
}

#[test]
fn delete_many_removes_present_packets_in_one_go_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = PacketStore::open(dir.path(), 100_000).unwrap();
    let packets: Vec<_> = (1..=5).map(|n| packet(n, 1000 + usize::from(n))).collect();
    for (id, bytes) in &packets {
        store.put(*id, bytes).unwrap();
    }
    let (absent, _) = packet(9, 10);
    let ids = [
        packets[0].0,
        packets[1].0,
        packets[1].0,
        absent,
        packets[3].0,
    ];
    assert_eq!(store.delete_many(&ids).unwrap(), 3);
    assert_eq!(store.delete_many(&[]).unwrap(), 0);
    assert_eq!(store.delete_many(&[absent]).unwrap(), 0);
    let left: u64 = [&packets[2], &packets[4]]
        .iter()
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(store.used_bytes().unwrap(), left);
    let mut expected = vec![packets[2].0, packets[4].0];
    expected.sort();
    assert_eq!(store.list().unwrap(), expected);
    assert_eq!(store.get(&packets[0].0).unwrap(), None);
    assert_eq!(
        store.get(&packets[2].0).unwrap(),
        Some(packets[2].1.clone())
    );
    // The accounting survives a reopen.
    drop(store);
    let store = PacketStore::open(dir.path(), 100_000).unwrap();
    assert_eq!(store.used_bytes().unwrap(), left);
    assert_eq!(store.delete_many(&[packets[2].0, packets[4].0]).unwrap(), 2);
    assert_eq!(store.usage().unwrap().packets, 0);
}

#[test]
fn compaction_reclaims_deleted_packets_down_to_live_bytes_also_in_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let store = PacketStore::open(dir.path(), 1 << 30).unwrap();
    let packets: Vec<_> = (1..=40u8)
        .map(|n| packet(n, 100_000 + usize::from(n)))
        .collect();
    for (id, bytes) in &packets {
        store.put(*id, bytes).unwrap();
    }
    let gone: Vec<PacketId> = packets.iter().take(30).map(|(id, _)| *id).collect();
    store.delete_many(&gone).unwrap();
    let before = store.disk_usage().unwrap();
    assert!(before.garbage_bytes >= 3_000_000, "{before:?}");
    let policy = CompactionPolicy {
        min_garbage_bytes: 1 << 20,
        min_garbage_ratio: 0.25,
    };
    let reclaimed = store.maybe_compact(&policy).unwrap();
    assert!(reclaimed >= before.garbage_bytes, "{reclaimed} {before:?}");
    let after = store.disk_usage().unwrap();
    assert_eq!(after.live_bytes, before.live_bytes);
    assert!(
        after.disk_bytes as f64 <= after.live_bytes as f64 * 1.10,
        "disk use within 10% of live packets: {after:?}"
    );
    assert_eq!(after.compactions, 1);
    for (id, bytes) in &packets[30..] {
        assert_eq!(store.get(id).unwrap().as_deref(), Some(bytes.as_slice()));
    }
    // Nothing to gain: the policy does not run it again.
    assert_eq!(store.maybe_compact(&policy).unwrap(), 0);
    // An emptied store (an outbox after its commit) shrinks to nothing.
    let rest: Vec<PacketId> = packets[30..].iter().map(|(id, _)| *id).collect();
    store.delete_many(&rest).unwrap();
    store.compact().unwrap();
    assert_eq!(store.disk_usage().unwrap().disk_bytes, 0);
    drop(store);
    let store = PacketStore::open(dir.path(), 1 << 30).unwrap();
    assert_eq!(store.disk_usage().unwrap().disk_bytes, 0);
}

#[test]
fn a_checked_packet_is_made_only_of_bytes_that_are_its_id_and_stores_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = PacketStore::open(dir.path(), 10_000).unwrap();
    let (id, bytes) = packet(9, 700);
    let (other, _) = packet(10, 10);
    assert!(matches!(
        CheckedPacket::check(other, bytes.clone()),
        Err(StoreError::WrongPacketId { .. })
    ));
    let big = vec![1u8; MAX_PACKET_BYTES + 1];
    assert!(matches!(
        CheckedPacket::check(PacketId::of(&big), big),
        Err(StoreError::TooLarge { .. })
    ));
    let checked = CheckedPacket::check(id, bytes.clone()).unwrap();
    assert_eq!((checked.id(), checked.len()), (id, 700));
    assert_eq!(
        store
            .put_checked_with_generations(&[(&checked, 4)])
            .unwrap(),
        vec![4]
    );
    assert_eq!(store.get(&id).unwrap(), Some(bytes));
    assert_eq!(store.generation_of(&id).unwrap(), Some(4));
    assert_eq!(store.used_bytes().unwrap(), 700);
}

#[test]
fn reads_during_compactions_and_deletes_find_every_live_packet() {
    // Compactions move the live packets to a new segment and remove the
    // old file, over and over, while two threads read them and a second
    // compactor runs: a read that found a packet's place just before it
    // moved finds it at its new place, and two compactions never remove
    // each other's files.
    let dir = tempfile::tempdir().unwrap();
    let store = PacketStore::open(dir.path(), 1 << 30).unwrap();
    let live: Vec<_> = (1..=8u8).map(|n| packet(n, 3000)).collect();
    for (id, bytes) in &live {
        store.put(*id, bytes).unwrap();
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, live, stop) = (store.clone(), live.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (id, bytes) in &live {
                        let got = store.get(id).expect("a live packet reads");
                        assert_eq!(got.as_ref(), Some(bytes), "a live packet is whole");
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let second = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store.compact().expect("a concurrent compaction");
            }
        })
    };
    for round in 0..60u8 {
        // Garbage as large as the live bytes: the active segment is at most
        // half live, so the compaction rolls it and moves the live packets.
        let garbage: Vec<_> = (0..8u8)
            .map(|n| packet(round.wrapping_mul(8).wrapping_add(n).wrapping_add(9), 3001))
            .collect();
        for (id, bytes) in &garbage {
            store.put(*id, bytes).unwrap();
        }
        let ids: Vec<PacketId> = garbage.iter().map(|(id, _)| *id).collect();
        store.delete_many(&ids).unwrap();
        store.compact().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    second.join().expect("the second compactor");
    for r in readers {
        assert!(r.join().expect("a reader") > 0);
    }
    for (id, bytes) in &live {
        assert_eq!(store.get(id).unwrap().as_ref(), Some(bytes));
    }
    assert_eq!(store.used_bytes().unwrap(), 8 * 3000);
}
