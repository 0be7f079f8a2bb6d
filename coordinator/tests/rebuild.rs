//! A coordinator group rebuilt after the old one was lost (issue 18): a
//! source re-registers its snapshot, page by attested page, from the
//! sequence and attestation its root kept, and the new group's records are the old group's (chunks,
//! targets' packets with their generations, the source's charge), so a
//! forget frees the same packets under the generations the targets
//! recorded. Forged, foreign and premature registrations are refused.

mod common;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::attest::{ATTEST_PAGE, Registration, page_digest};
use strew_coordinator::manager::{ReregisterDecision, check_entry};
use strew_coordinator::seal::{Sequence, open_as_recipient};
use strew_coordinator::trust::grid_id_of;
use strew_coordinator::{
    Command, GroupKey, Manager, ManagerConfig, MemberCert, NodeId, PacketId, PlanRequest,
    REREGISTERED, SnapshotAttestation, SnapshotId, Unreferenced,
};

use common::{backed_up_many, chunk, params, paris_secret};

/// What a source keeps in a snapshot's root: the manager's attestation,
/// and the sequence fetched in attested pages, opened.
fn root_of(
    old: &Manager,
    source: NodeId,
    snapshot: SnapshotId,
) -> (SnapshotAttestation, Vec<Sequence>) {
    let mut rng = StdRng::seed_from_u64(3);
    let attestation = old
        .fetch_attestation(source, snapshot)
        .expect("attestation");
    let mut pages = Vec::new();
    let what = &attestation.what;
    for page in 0..what.pages() {
        let sealed = old
            .fetch_sequence_page(
                source,
                snapshot,
                what.range(page).start,
                what.page,
                &mut rng,
            )
            .expect("page")
            .sealed;
        let plain = open_as_recipient(&paris_secret(), snapshot.as_bytes(), &sealed)
            .expect("the sequence opens for its source");
        pages.push(Sequence::from_bytes(&plain).expect("sequence"));
    }
    (attestation, pages)
}

/// The new group: another leader and group key, the old group's nodes.
fn new_group(old: &Manager) -> Manager {
    let mut new = Manager::new(
        SigningKey::from_bytes(&[201; 32]),
        GroupKey([8; 32]),
        ManagerConfig::default(),
    );
    for client in old.state().clients.values() {
        new.apply(&Command::Join {
            profile: client.profile.clone(),
            token: None,
            at: 100,
        })
        .expect("join");
    }
    new
}

#[test]
fn a_rebuilt_group_records_an_attested_snapshot_as_the_lost_group_had_it() {
    // Three attested pages.
    let (old, paris, snapshot) = backed_up_many(2 * ATTEST_PAGE as u32 + 40);
    let grid_key = SigningKey::from_bytes(&[250; 32]);
    let grid = grid_id_of(&grid_key);
    let old_leader = NodeId(
        SigningKey::from_bytes(&[200; 32])
            .verifying_key()
            .to_bytes(),
    );
    let cert = MemberCert::issue(&grid_key, old_leader, 1).expect("cert");
    let mut rng = StdRng::seed_from_u64(3);

    let (attestation, pages) = root_of(&old, paris.node_id, snapshot);
    assert_eq!(pages.len(), 3);
    let whole = old
        .fetch_sequence(paris.node_id, snapshot, &mut rng)
        .expect("whole sequence");
    let whole = Sequence::from_bytes(
        &open_as_recipient(&paris_secret(), snapshot.as_bytes(), &whole).expect("opens"),
    )
    .expect("sequence");
    let joined: Vec<_> = pages.iter().flat_map(|p| p.stripes.clone()).collect();
    assert_eq!(
        joined, whole.stripes,
        "the pages are the sequence, in order"
    );
    for stripe in &whole.stripes {
        let record = &old.state().chunks[&stripe.data_id];
        for (entry, stored) in stripe.packets.iter().zip(&record.packets) {
            assert_eq!(entry.generation, stored.generation);
            assert_ne!(entry.generation, 0, "plans give every packet a generation");
        }
    }
    let digests: Vec<[u8; 32]> = pages
        .iter()
        .map(|p| page_digest(p).expect("digest"))
        .collect();
    let registration = |page: u32| Registration {
        attestation: attestation.clone(),
        cert: cert.clone(),
        pages: digests.clone(),
        page,
        sequence: pages[page as usize].clone(),
        params: params(),
    };

    let mut new = new_group(&old);
    // Not marked rebuilt: nothing is re-registered.
    assert!(
        new.decide_reregister(paris.node_id, &registration(0), &grid, 110, &mut rng)
            .is_err()
    );
    let mark = new
        .decide_begin_rebuild(old_leader, 110)
        .expect("first mark");
    new.apply(&mark).expect("rebuild mark");
    assert_eq!(new.state().rebuilt_since, Some(110));
    assert!(new.decide_begin_rebuild(old_leader, 111).is_none());

    // Another node cannot register the snapshot as its own.
    let other = *old
        .state()
        .clients
        .keys()
        .find(|n| **n != paris.node_id)
        .expect("the targets are nodes too");
    assert!(
        new.decide_reregister(other, &registration(0), &grid, 120, &mut rng)
            .is_err()
    );
    // A page naming other packets than the attested one is refused, and so
    // are page digests that are not the attested ones.
    let mut forged = registration(1);
    forged.sequence.stripes[0].packets[0].packet_id = PacketId::of(b"someone else's");
    assert!(
        new.decide_reregister(paris.node_id, &forged, &grid, 120, &mut rng)
            .is_err()
    );
    let mut forged = registration(1);
    forged.pages[1] = page_digest(&forged.sequence)
        .map(|mut d| {
            d[0] ^= 1;
            d
        })
        .expect("digest");
    assert!(
        new.decide_reregister(paris.node_id, &forged, &grid, 120, &mut rng)
            .is_err()
    );
    // So is an attestation of another grid's member.
    let other_grid = grid_id_of(&SigningKey::from_bytes(&[251; 32]));
    assert!(
        new.decide_reregister(paris.node_id, &registration(0), &other_grid, 120, &mut rng)
            .is_err()
    );

    // Pages go in order: one ahead is answered with where to go on.
    assert_eq!(
        new.decide_reregister(paris.node_id, &registration(1), &grid, 120, &mut rng)
            .expect("answered"),
        ReregisterDecision::Have {
            pages_done: 0,
            pages: 3
        }
    );
    let propose = |new: &Manager, page: u32| match new
        .decide_reregister(
            paris.node_id,
            &registration(page),
            &grid,
            120,
            &mut StdRng::seed_from_u64(u64::from(page)),
        )
        .expect("accepted")
    {
        ReregisterDecision::Propose(command) => *command,
        other => panic!("page {page}: {other:?}"),
    };
    let first = propose(&new, 0);
    check_entry(&first).expect("a page is one bounded raft entry");
    new.apply(&first).expect("first page");
    // Applied twice (a raft replay), it changes nothing.
    let after_first = new.state().chunks.clone();
    new.apply(&first).expect("replay");
    assert_eq!(new.state().chunks, after_first);
    // Half registered, the snapshot is not one yet.
    assert!(new.list_snapshots(&paris.node_id, None).is_empty());
    assert!(
        new.fetch_sequence(paris.node_id, snapshot, &mut rng)
            .is_err()
    );
    assert!(new.decide_forget(paris.node_id, snapshot, 125).is_err());
    assert_eq!(
        new.decide_reregister(paris.node_id, &registration(0), &grid, 121, &mut rng)
            .expect("a repeat is fine"),
        ReregisterDecision::Have {
            pages_done: 1,
            pages: 3
        }
    );
    for page in 1..3 {
        let command = propose(&new, page);
        new.apply(&command).expect("page");
    }
    assert_eq!(
        new.decide_reregister(paris.node_id, &registration(2), &grid, 121, &mut rng)
            .expect("a repeat is fine"),
        ReregisterDecision::Have {
            pages_done: 3,
            pages: 3
        }
    );

    // The records are the lost group's.
    assert_eq!(new.state().chunks, old.state().chunks);
    for (node, record) in &old.state().targets {
        let rebuilt = &new.state().targets[node];
        assert_eq!(rebuilt.packets, record.packets, "target {node}");
        assert_eq!(rebuilt.bytes, record.bytes);
    }
    assert_eq!(
        new.state().clients[&paris.node_id].source_stored_bytes,
        old.state().clients[&paris.node_id].source_stored_bytes
    );
    let (was, is) = (
        &old.state().snapshots[&snapshot],
        &new.state().snapshots[&snapshot],
    );
    assert_eq!(
        (&is.chunks, is.created_at, is.bytes, &is.set, is.data_id),
        (
            &was.chunks,
            was.created_at,
            was.bytes,
            &was.set,
            was.data_id
        )
    );
    assert_eq!((is.pending_id, is.registering), (REREGISTERED, None));
    assert_eq!(new.list_snapshots(&paris.node_id, None).len(), 1);
    let listed = new
        .fetch_sequence(paris.node_id, snapshot, &mut rng)
        .expect("the new group serves the sequence");
    let plain = open_as_recipient(&paris_secret(), snapshot.as_bytes(), &listed).expect("opens");
    assert_eq!(Sequence::from_bytes(&plain).expect("sequence"), whole);

    // A forget frees the packets under the generations targets recorded.
    let mut old = old;
    let expected = old
        .execute(
            old.decide_forget(paris.node_id, snapshot, 130)
                .expect("forget"),
        )
        .expect("old forget")
        .deletions();
    let freed = new
        .execute(
            new.decide_forget(paris.node_id, snapshot, 130)
                .expect("forget"),
        )
        .expect("new forget")
        .deletions();
    assert!(!freed.is_empty());
    assert_eq!(freed, expected);
    assert_eq!(new.state().clients[&paris.node_id].source_stored_bytes, 0);
}

#[test]
fn an_operators_collection_after_the_grace_queues_only_what_nothing_references() {
    let (old, paris, _) = backed_up_many(3);
    let old_leader = NodeId(
        SigningKey::from_bytes(&[200; 32])
            .verifying_key()
            .to_bytes(),
    );
    let mut new = new_group(&old);
    // What one target of the lost snapshot holds, a root among it.
    let (target, record) = old
        .state()
        .targets
        .iter()
        .find(|(_, r)| !r.packets.is_empty())
        .expect("a target holds the snapshot's packets");
    let generation = |p: &PacketId| {
        old.state()
            .chunks
            .values()
            .flat_map(|c| &c.packets)
            .find(|s| &s.packet_id == p && &s.target == target)
            .map(|s| s.generation)
            .expect("recorded")
    };
    let mut held: Vec<Unreferenced> = record
        .packets
        .iter()
        .map(|(p, size)| Unreferenced {
            packet_id: *p,
            generation: generation(p),
            size: *size,
        })
        .collect();
    let root = Unreferenced {
        packet_id: PacketId::of(b"a root of its owner"),
        generation: u64::MAX,
        size: 100,
    };
    held.push(root);
    let grace = 1_000;
    let collect = |new: &Manager, held: &[Unreferenced], now| {
        new.decide_collect_unreferenced(old_leader, *target, held, grace, false, now)
    };

    // Not rebuilt, or within the grace: refused.
    assert!(collect(&new, &held, 5_000).is_err());
    let mark = new.decide_begin_rebuild(old_leader, 110).expect("mark");
    new.apply(&mark).expect("rebuild mark");
    assert!(collect(&new, &held, 110 + grace - 1).is_err());

    // After it: every packet but the root; a dry run proposes nothing.
    let now = 110 + grace;
    let (dry, found) = new
        .decide_collect_unreferenced(old_leader, *target, &held, grace, true, now)
        .expect("dry run");
    assert!(dry.is_none());
    assert_eq!(found.len(), held.len() - 1);
    assert!(!found.contains(&root));

    // A packet a pending plan puts on this target is not collected.
    let plan = PlanRequest {
        extend: None,
        source: paris.node_id,
        set: "docs".into(),
        location: paris.location,
        params: params(),
        chunks: vec![chunk(77)],
        exclude: Vec::new(),
    };
    let (begin, draft) = new
        .decide_plan(&plan, now, &mut StdRng::seed_from_u64(9))
        .expect("plan");
    new.apply(&begin).expect("begin");
    let planned = draft
        .uploads
        .iter()
        .flat_map(|c| &c.packets)
        .next()
        .expect("a planned packet");
    let in_flight = Unreferenced {
        packet_id: planned.packet_id,
        generation: planned.generation,
        size: planned.size,
    };
    let (_, found) = new
        .decide_collect_unreferenced(old_leader, planned.target, &[in_flight], grace, false, now)
        .expect("collect");
    assert!(found.is_empty(), "an upload in flight is not garbage");

    // Queued for collection, with the generation the target holds.
    let (command, found) = collect(&new, &held, now).expect("collect");
    new.apply(&command.expect("a command")).expect("queues");
    let due = new.state().due_garbage(now, 1_000, |_| false);
    let mut delivered: Vec<_> = due.deliver[target]
        .iter()
        .map(|d| (d.packet_id, d.generation))
        .collect();
    let mut expected: Vec<_> = found.iter().map(|p| (p.packet_id, p.generation)).collect();
    delivered.sort();
    expected.sort();
    assert_eq!(delivered, expected);
    // Asked again, nothing new: what is queued is not queued twice.
    let (again, found) = collect(&new, &held, now + 1).expect("again");
    assert!(again.is_none() && found.is_empty());
}
