//! A snapshot's standing (`Manager::snapshot_standing`): what its source
//! would count from the whole sequence, read page by page, summed on the
//! manager instead.

mod common;

use std::collections::BTreeMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::{
    Health, MAX_SEQUENCE_PAGE, MAX_STANDING_DOWN, Standing, StandingSum, TargetShare,
};
use strew_coordinator::{ManagerError, NodeId, Sequence, SequenceStripe, open_as_recipient};

/// The snapshot's stripes as its source reads them: every page, opened.
fn stripes(
    m: &strew_coordinator::Manager,
    source: NodeId,
    snapshot: strew_coordinator::SnapshotId,
) -> Vec<SequenceStripe> {
    let mut rng = StdRng::seed_from_u64(2);
    let mut all = Vec::new();
    loop {
        let page = m
            .fetch_sequence_page(source, snapshot, all.len() as u64, 512, &mut rng)
            .expect("page");
        let plain = open_as_recipient(&common::paris_secret(), snapshot.as_bytes(), &page.sealed)
            .expect("sealed to the source");
        let seq = Sequence::from_bytes(&plain).expect("a sequence");
        if seq.stripes.is_empty() {
            return all;
        }
        all.extend(seq.stripes);
    }
}

#[test]
fn a_snapshots_standing_adds_up_its_pages_and_marks_stripes_on_down_targets() {
    // More stripes than one sequence page: the manager's own paging shows.
    let n = MAX_SEQUENCE_PAGE as u64 + 7;
    let (m, paris, snapshot) = common::backed_up_many(n as u32);
    let seen = stripes(&m, paris.node_id, snapshot);
    assert_eq!(seen.len() as u64, n);
    let mut expected: BTreeMap<NodeId, (u64, u64)> = BTreeMap::new();
    for entry in seen.iter().flat_map(|s| &s.packets) {
        for t in &entry.targets {
            let e = expected.entry(*t).or_default();
            e.0 += 1;
            e.1 += entry.size;
        }
    }

    let all_up = m
        .snapshot_standing(paris.node_id, snapshot, &[])
        .expect("standing");
    assert_eq!(
        all_up.health,
        Health {
            stripes: n,
            healthy: n,
            degraded: 0,
            lost: 0
        }
    );
    let shares: BTreeMap<NodeId, (u64, u64)> = all_up
        .targets
        .iter()
        .map(|s: &TargetShare| (s.target, (s.packets, s.bytes)))
        .collect();
    assert_eq!(shares, expected, "the same targets, packets and bytes");

    // One target down: the stripes with a packet there are degraded (2+1
    // erasure: two of three suffice), every other stripe stays healthy.
    let (down, (on_it, _)) = expected.iter().next().expect("a target");
    let one_down = m
        .snapshot_standing(paris.node_id, snapshot, &[*down])
        .expect("standing");
    let touching = seen
        .iter()
        .filter(|s| s.packets.iter().any(|p| p.targets.contains(down)))
        .count() as u64;
    assert!(touching > 0 && touching <= *on_it);
    assert_eq!(
        one_down.health,
        Health {
            stripes: n,
            healthy: n - touching,
            degraded: touching,
            lost: 0
        }
    );
    assert_eq!(one_down.targets, all_up.targets, "down targets still hold");

    // Summed a page at a time, each page's standing on its own and added
    // up (as a source adds the parts of several calls): the same.
    let down_set = std::collections::BTreeSet::from([*down]);
    let mut parts = Standing::default();
    let mut from = Some(0);
    let mut pages = 0;
    while let Some(at) = from {
        let mut sum = StandingSum::default();
        from = m
            .add_standing_page(paris.node_id, snapshot, &down_set, at, &mut sum)
            .expect("page");
        parts.add(&sum.finish());
        pages += 1;
    }
    assert_eq!(pages, 2);
    assert_eq!(parts, one_down);

    // Every target down: every stripe is lost.
    let everyone: Vec<NodeId> = expected.keys().copied().collect();
    let none_up = m
        .snapshot_standing(paris.node_id, snapshot, &everyone)
        .expect("standing");
    assert_eq!((none_up.health.lost, none_up.health.healthy), (n, 0));

    // Only the snapshot's source may ask, and the list of down targets is bounded.
    let stranger = common::node(2, 45.76, 4.84).node_id;
    assert!(matches!(
        m.snapshot_standing(stranger, snapshot, &[]),
        Err(ManagerError::NotYours { .. })
    ));
    let too_many = vec![*down; MAX_STANDING_DOWN + 1];
    assert!(matches!(
        m.snapshot_standing(paris.node_id, snapshot, &too_many),
        Err(ManagerError::Invalid(_))
    ));
}
