//! A coordinator group rebuilt after the old one was lost (issue 18): a
//! source re-registers its snapshot from the sequence and attestation its
//! root kept, and the new group's records are the old group's (chunks,
//! targets' packets with their generations, the source's charge), so a
//! forget frees the same packets under the generations the targets
//! recorded. Forged, foreign and premature registrations are refused.

mod common;

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::attest::Registration;
use strew_coordinator::seal::{Sequence, open_as_recipient};
use strew_coordinator::trust::grid_id_of;
use strew_coordinator::{
    Command, GroupKey, Manager, ManagerConfig, MemberCert, NodeId, PacketId, REREGISTERED,
};

use common::{backed_up, params, paris_secret};

#[test]
fn a_rebuilt_group_records_an_attested_snapshot_as_the_lost_group_had_it() {
    let (old, paris, snapshot) = backed_up();
    let grid_key = SigningKey::from_bytes(&[250; 32]);
    let grid = grid_id_of(&grid_key);
    let old_leader = NodeId(
        SigningKey::from_bytes(&[200; 32])
            .verifying_key()
            .to_bytes(),
    );
    let cert = MemberCert::issue(&grid_key, old_leader, 1).expect("cert");
    let mut rng = StdRng::seed_from_u64(3);

    // What the source keeps in the snapshot's root.
    let attested = old
        .fetch_attested_sequence(paris.node_id, snapshot, &mut rng)
        .expect("attested sequence");
    let plain = open_as_recipient(&paris_secret(), snapshot.as_bytes(), &attested.sealed)
        .expect("the sequence opens for its source");
    let sequence = Sequence::from_bytes(&plain).expect("sequence");
    for stripe in &sequence.stripes {
        let record = &old.state().chunks[&stripe.data_id];
        for (entry, stored) in stripe.packets.iter().zip(&record.packets) {
            assert_eq!(entry.generation, stored.generation);
            assert_ne!(entry.generation, 0, "plans give every packet a generation");
        }
    }
    let registration = Registration {
        attestation: attested.attestation,
        cert,
        sequence,
        params: params(),
    };

    // The new group: another leader and group key, the same nodes.
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
    // Not marked rebuilt: nothing is re-registered.
    assert!(
        new.decide_reregister(paris.node_id, &registration, &grid, 110, &mut rng)
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
        new.decide_reregister(other, &registration, &grid, 120, &mut rng)
            .is_err()
    );
    // A sequence naming other packets than the attested one is refused.
    let mut forged = registration.clone();
    forged.sequence.stripes[0].packets[0].packet_id = PacketId::of(b"someone else's");
    assert!(
        new.decide_reregister(paris.node_id, &forged, &grid, 120, &mut rng)
            .is_err()
    );
    // So is an attestation of another grid's member.
    let other_grid = grid_id_of(&SigningKey::from_bytes(&[251; 32]));
    assert!(
        new.decide_reregister(paris.node_id, &registration, &other_grid, 120, &mut rng)
            .is_err()
    );

    let command = new
        .decide_reregister(paris.node_id, &registration, &grid, 120, &mut rng)
        .expect("accepted")
        .expect("a new snapshot");
    new.apply(&command).expect("re-registers");
    assert!(
        new.decide_reregister(paris.node_id, &registration, &grid, 121, &mut rng)
            .expect("a repeat is fine")
            .is_none()
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
    assert_eq!(is.pending_id, REREGISTERED);
    let listed = new
        .fetch_sequence(paris.node_id, snapshot, &mut rng)
        .expect("the new group serves the sequence");
    let plain = open_as_recipient(&paris_secret(), snapshot.as_bytes(), &listed).expect("opens");
    assert_eq!(
        Sequence::from_bytes(&plain).expect("sequence"),
        registration.sequence
    );

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
