//! A target that stops answering mid-backup (SPEC R12): its source asks
//! for new targets for exactly the packets no target receipted yet; the
//! rest of the pending backup stays planned, reservations follow the
//! packets, what the old target may hold is queued for collection, and the
//! commit records the packets where they were receipted.

mod common;

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::MAX_RETARGET_SLOTS;
use strew_coordinator::records::Retarget;
use strew_coordinator::{
    ApplyError, Command, CommitRequest, DataId, Manager, ManagerError, NodeId, NodeProfile,
    PlanDecision, PlanRequest, RetargetRequest,
};

/// The manager over Europe, a source in Paris, and its pending backup of
/// eight chunks (2+1, 1 MiB packets).
fn planned() -> (Manager, NodeProfile, PlanDecision, StdRng) {
    let mut m = common::europe(common::node);
    let paris = common::node(1, 48.85, 2.35);
    m.join(paris.clone(), None, 1).expect("join");
    let mut rng = StdRng::seed_from_u64(7);
    let decision = m
        .plan_backup(
            PlanRequest {
                source: paris.node_id,
                set: "home".into(),
                location: paris.location,
                params: common::params(),
                chunks: (1..=8).map(common::chunk).collect(),
                exclude: Vec::new(),
                extend: None,
            },
            10,
            &mut rng,
        )
        .expect("plans");
    (m, paris, decision, rng)
}

/// The target holding the most packets of the plan (the one that fails).
fn busiest(decision: &PlanDecision) -> NodeId {
    let mut counts = std::collections::BTreeMap::<NodeId, usize>::new();
    for p in decision.uploads.iter().flat_map(|c| &c.packets) {
        *counts.entry(p.target).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t)
        .expect("the plan has targets")
}

fn reserved(m: &Manager) -> u64 {
    m.state().targets.values().map(|t| t.reserved).sum()
}

#[test]
fn a_failed_targets_unreceipted_packets_move_and_the_rest_stays_as_planned() {
    let (mut m, paris, decision, mut rng) = planned();
    let dead = busiest(&decision);
    let on_dead: Vec<(DataId, u32)> = decision
        .uploads
        .iter()
        .flat_map(|c| {
            c.packets
                .iter()
                .enumerate()
                .filter(|(_, p)| p.target == dead)
                .map(|(j, _)| (c.data_id, j as u32))
        })
        .collect();
    assert!(on_dead.len() >= 2, "{on_dead:?}");
    // The dead target stored (and receipted) its first packet before it
    // went; everything on the other targets is receipted too.
    let (kept, moving) = on_dead.split_first().expect("two or more");
    let planned_on = |(d, j): &(DataId, u32)| {
        let c = decision.uploads.iter().find(|c| &c.data_id == d).unwrap();
        c.packets[*j as usize]
    };
    let kept_packet = planned_on(kept);
    let handed: Vec<_> = decision
        .uploads
        .iter()
        .flat_map(|c| &c.packets)
        .filter(|p| p.target != dead || p.packet_id == kept_packet.packet_id)
        .map(|p| common::receipt(p, paris.node_id))
        .collect();
    m.record_receipts(paris.node_id, decision.pending_id, &handed)
        .expect("receipts");
    let dead_before = m.state().targets[&dead].reserved;
    let total_before = reserved(&m);

    // A receipted packet stays where it is.
    let refused = m.retarget(
        &RetargetRequest {
            pending_id: decision.pending_id,
            source: paris.node_id,
            slots: vec![*kept],
            avoid: vec![dead],
        },
        20,
        &mut rng,
    );
    assert!(
        matches!(&refused, Err(ManagerError::Apply(ApplyError::Invalid(why))) if why.contains("receipted")),
        "{refused:?}"
    );

    let moved = m
        .retarget(
            &RetargetRequest {
                pending_id: decision.pending_id,
                source: paris.node_id,
                slots: moving.to_vec(),
                avoid: vec![dead],
            },
            20,
            &mut rng,
        )
        .expect("moves");
    assert_eq!(moved.pending_id, decision.pending_id);
    let moved_chunks: BTreeSet<DataId> = moving.iter().map(|(d, _)| *d).collect();
    assert_eq!(
        moved
            .uploads
            .iter()
            .map(|c| c.data_id)
            .collect::<BTreeSet<_>>(),
        moved_chunks,
        "the answer names each moved chunk whole"
    );
    let pending = &m.state().pending[&decision.pending_id];
    for (before, now) in decision.uploads.iter().zip(&pending.new_chunks) {
        assert_eq!(before.data_id, now.data_id);
        let targets: BTreeSet<NodeId> = now.packets.iter().map(|p| p.target).collect();
        assert_eq!(targets.len(), now.packets.len(), "distinct targets");
        for (j, (b, n)) in before.packets.iter().zip(&now.packets).enumerate() {
            assert_eq!(b.packet_id, n.packet_id);
            if moving.contains(&(before.data_id, j as u32)) {
                assert_ne!(n.target, dead, "moved off the failed target");
                assert_ne!(n.generation, b.generation, "under a new generation");
                assert!(
                    moved.tickets.iter().any(|t| t.target == n.target
                        && t.entries
                            .iter()
                            .any(|e| e.packet_id == n.packet_id && e.generation == n.generation)),
                    "a store ticket for the new target"
                );
            } else {
                assert_eq!(b, n, "the rest stays as planned");
            }
        }
    }
    // The reservations followed the packets.
    let moved_bytes: u64 = moving.iter().map(|s| planned_on(s).size).sum();
    assert_eq!(m.state().targets[&dead].reserved, dead_before - moved_bytes);
    assert_eq!(reserved(&m), total_before);
    // What the dead target may hold of the moved packets is queued for
    // collection; the packet it receipted is not.
    for slot in moving {
        let p = planned_on(slot);
        assert!(m.state().garbage.contains_key(&(dead, p.packet_id)));
    }
    assert!(
        !m.state()
            .garbage
            .contains_key(&(dead, kept_packet.packet_id))
    );
    // The index over pending backups agrees with one rebuilt from scratch.
    let mut reloaded = m.state().clone();
    reloaded.reindex();
    for c in &moved.uploads {
        for p in &c.packets {
            assert!(
                reloaded
                    .planned_packet(decision.pending_id, &p.packet_id, &p.target)
                    .is_some()
            );
            assert!(
                m.state()
                    .planned_packet(decision.pending_id, &p.packet_id, &p.target)
                    .is_some()
            );
        }
    }
    // The backup's targets, as the index counts them, are the targets its
    // chunks name now: the new ones in, the dead one still (it holds the
    // receipted packet).
    let pending = &m.state().pending[&decision.pending_id];
    let named: Vec<_> = pending
        .new_chunks
        .iter()
        .flat_map(|c| c.packets.iter().map(|p| p.target))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(m.state().pending_targets(pending), named);
    assert_eq!(
        reloaded.pending_targets(&reloaded.pending[&decision.pending_id]),
        named
    );
    assert!(named.contains(&dead));
    for slot in moving {
        let p = planned_on(slot);
        assert!(
            m.state()
                .planned_packet(decision.pending_id, &p.packet_id, &dead)
                .is_none()
        );
    }

    // The commit takes the new targets' receipts and records every packet
    // where it was receipted, the kept one on the dead target included
    // (repair's to rebuild if it stays away).
    let committed = m
        .commit_backup(
            CommitRequest {
                pending_id: decision.pending_id,
                source: paris.node_id,
                receipts: common::receipts(&moved.uploads, paris.node_id)
                    .into_iter()
                    .filter(|r| r.target != dead)
                    .filter(|r| {
                        !handed
                            .iter()
                            .any(|h| h.packet_id == r.packet_id && h.target == r.target)
                    })
                    .collect(),
                manifest: DataId([9; 32]),
                manifest_chunks: Vec::new(),
                chunks: decision.uploads.iter().map(|c| c.data_id).collect(),
                bytes: 1000,
            },
            30,
            &mut rng,
        )
        .expect("commits");
    assert!(m.state().snapshots.contains_key(&committed.snapshot));
    for c in &moved.uploads {
        assert_eq!(m.state().chunks[&c.data_id].packets, c.packets);
    }
    assert!(
        m.state().targets[&dead]
            .packets
            .contains_key(&kept_packet.packet_id)
    );
    assert_eq!(reserved(&m), 0, "the commit released every reservation");
}

#[test]
fn a_retarget_that_is_not_the_sources_or_breaks_a_rule_changes_nothing() {
    let (mut m, paris, decision, mut rng) = planned();
    let chunk = &decision.uploads[0];
    let slot = (chunk.data_id, 0u32);
    let ask = |slots: Vec<(DataId, u32)>, source: NodeId, pending_id: u64| RetargetRequest {
        pending_id,
        source,
        slots,
        avoid: vec![chunk.packets[0].target],
    };
    let lyon = common::node(2, 45.76, 4.84);
    m.join(lyon.clone(), None, 2).expect("join");
    let before = m.state().clone();
    let refusals = [
        ask(vec![slot], lyon.node_id, decision.pending_id),
        ask(vec![slot], paris.node_id, decision.pending_id + 9),
        ask(Vec::new(), paris.node_id, decision.pending_id),
        ask(
            vec![slot; MAX_RETARGET_SLOTS + 1],
            paris.node_id,
            decision.pending_id,
        ),
        ask(vec![(chunk.data_id, 3)], paris.node_id, decision.pending_id),
        ask(
            vec![(DataId([99; 32]), 0)],
            paris.node_id,
            decision.pending_id,
        ),
    ];
    for request in refusals {
        let refused = m.retarget(&request, 20, &mut rng);
        assert!(refused.is_err(), "{request:?} was taken");
    }
    assert_eq!(m.state(), &before);

    // Commands are checked whole before any move applies: a good move
    // followed by one onto a target of the same stripe applies neither.
    let other = chunk.packets[1].target;
    let free = m
        .state()
        .clients
        .keys()
        .copied()
        .find(|n| {
            *n != paris.node_id
                && *n != lyon.node_id
                && !chunk.packets.iter().any(|p| p.target == *n)
        })
        .expect("a node outside the stripe");
    let command = |moves: Vec<Retarget>| Command::RetargetBackup {
        pending_id: decision.pending_id,
        moves,
        at: 20,
    };
    let good = Retarget {
        data_id: chunk.data_id,
        index: 0,
        target: free,
        generation: 5,
    };
    for bad in [
        // Onto a target already holding a packet of the stripe.
        Retarget {
            index: 2,
            target: other,
            ..good
        },
        // The same packet twice.
        Retarget {
            target: lyon.node_id,
            ..good
        },
        // Onto the source itself.
        Retarget {
            index: 1,
            target: paris.node_id,
            ..good
        },
    ] {
        assert!(m.execute(command(vec![good, bad])).is_err(), "{bad:?}");
        assert_eq!(m.state(), &before);
    }
    m.execute(command(vec![good]))
        .expect("the good move alone applies");
    assert_eq!(
        m.state().pending[&decision.pending_id].new_chunks[0].packets[0].target,
        free
    );
}
