//! Location evidence (SPEC R13) with an injected RTT source: RTTs follow
//! the nodes' true positions (fibre at 100 km per ms of round trip, plus a
//! millisecond of equipment), and claims are judged against them.

use std::collections::BTreeSet;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use strew_coordinator::{
    DistanceRange, EvidencePolicy, GeoPoint, GridView, LocationBook, LocationCheck, NodeId,
    NodeProfile, PlacementPolicy, PlacementRequest, Redundancy, RttObservation, Verdict,
    haversine_km, place_excluding,
};

fn at(lat: f64, lon: f64) -> GeoPoint {
    GeoPoint::new(lat, lon).expect("valid location")
}

/// A node: its id, where it claims to be, where it really is.
struct Host {
    id: NodeId,
    claim: GeoPoint,
    truth: GeoPoint,
}

fn host(n: u8, claim: GeoPoint, truth: GeoPoint) -> Host {
    Host {
        id: NodeId([n; 32]),
        claim,
        truth,
    }
}

/// The node claiming Sydney.
const LIAR: NodeId = NodeId([10; 32]);

/// The injected RTT source: what a ping between two hosts would measure.
/// The liar (really in Frankfurt) answers the members in 5 ms.
fn rtt_micros(a: &Host, b: &Host) -> u32 {
    if a.id == LIAR || b.id == LIAR {
        return 5_000;
    }
    let km = haversine_km(&a.truth, &b.truth);
    (1000.0 + km / 100.0 * 1000.0) as u32
}

struct World {
    members: Vec<Host>,
    others: Vec<Host>,
    view: GridView,
}

fn world() -> World {
    let paris = at(48.8566, 2.3522);
    let zurich = at(47.3769, 8.5417);
    let amsterdam = at(52.3676, 4.9041);
    let members = vec![
        host(1, paris, paris),
        host(2, zurich, zurich),
        host(3, amsterdam, amsterdam),
    ];
    let frankfurt = at(50.1109, 8.6821);
    let mut others = vec![
        // Claims Sydney, runs in Frankfurt: 5 ms or so from every member.
        host(10, at(-33.8688, 151.2093), frankfurt),
    ];
    let honest = [
        at(51.5074, -0.1278), // London
        at(45.4642, 9.19),    // Milan
        at(52.52, 13.405),    // Berlin
        at(48.2082, 16.3738), // Vienna
        at(41.3874, 2.1686),  // Barcelona
        at(59.3293, 18.0686), // Stockholm
        at(50.0755, 14.4378), // Prague
        at(38.7223, -9.1393), // Lisbon
    ];
    for (i, p) in honest.into_iter().enumerate() {
        others.push(host(20 + i as u8, p, p));
    }
    let view = GridView::from_profiles(
        members
            .iter()
            .chain(&others)
            .map(|h| NodeProfile::new(h.id, h.claim, 1 << 34, 0)),
    );
    World {
        members,
        others,
        view,
    }
}

/// Every member pings every other node; the reports reach the book.
fn observe(w: &World, book: &mut LocationBook) {
    let trusted: BTreeSet<NodeId> = w.members.iter().map(|m| m.id).collect();
    let mut observations = Vec::new();
    for m in &w.members {
        for o in w.others.iter().chain(&w.members) {
            observations.push(RttObservation {
                observer: m.id,
                subject: o.id,
                rtt_micros: rtt_micros(m, o),
            });
        }
    }
    // Untrusted reports (a liar vouching for itself) are ignored.
    let liar = &w.others[0];
    for m in &w.members {
        observations.push(RttObservation {
            observer: liar.id,
            subject: m.id,
            rtt_micros: 400_000,
        });
    }
    book.record(&observations, &|id| trusted.contains(id), 1_000);
}

fn request() -> PlacementRequest {
    PlacementRequest {
        source: at(48.8566, 2.3522),
        source_node: Some(NodeId([1; 32])),
        backup_distance: DistanceRange::ANY,
        spread: DistanceRange::ANY,
        redundancy: Redundancy::Erasure { k: 4, m: 2 },
        stripes: 20,
        packet_size: 1 << 20,
    }
}

#[test]
fn a_node_claiming_sydney_with_5_ms_to_europe_is_refuted_and_honest_nodes_are_consistent() {
    let w = world();
    let trusted: BTreeSet<NodeId> = w.members.iter().map(|m| m.id).collect();
    let is_trusted = |id: &NodeId| trusted.contains(id);
    let mut book = LocationBook::new(EvidencePolicy::default());
    observe(&w, &mut book);

    let liar = book.evidence(&w.others[0].id, &w.view, &is_trusted);
    assert_eq!(liar.verdict, Verdict::Refuted, "{liar:?}");
    assert_eq!((liar.consistent, liar.refuted), (0, 3));
    for h in w.others.iter().skip(1).chain(&w.members) {
        let e = book.evidence(&h.id, &w.view, &is_trusted);
        assert_eq!(e.verdict, Verdict::Consistent, "{}: {e:?}", h.id);
        assert_eq!(e.refuted, 0);
    }
    let refuted = book.refuted(&w.view, &is_trusted);
    assert_eq!(
        refuted.keys().copied().collect::<Vec<_>>(),
        vec![w.others[0].id]
    );
    let text = LocationBook::explain_refuted(&refuted, &w.view, 5);
    assert!(text.contains("-33.87,151.21"), "{text}");
    assert!(text.contains("ms from"), "{text}");

    // One refuting observer is only a suspicion.
    let mut one = LocationBook::new(EvidencePolicy::default());
    let liar_host = &w.others[0];
    one.record(
        &[RttObservation {
            observer: w.members[0].id,
            subject: liar_host.id,
            rtt_micros: rtt_micros(&w.members[0], liar_host),
        }],
        &is_trusted,
        0,
    );
    assert_eq!(
        one.evidence(&liar_host.id, &w.view, &is_trusted).verdict,
        Verdict::Suspect
    );
}

#[test]
fn under_enforce_a_refuted_node_receives_no_packets_and_under_warn_it_may() {
    let w = world();
    let trusted: BTreeSet<NodeId> = w.members.iter().map(|m| m.id).collect();
    let is_trusted = |id: &NodeId| trusted.contains(id);
    let mut book = LocationBook::new(EvidencePolicy::default());
    observe(&w, &mut book);
    let liar = w.others[0].id;
    let policy = PlacementPolicy::default();

    let mut chosen_under_warn = false;
    for seed in 0..50u64 {
        for check in [LocationCheck::Warn, LocationCheck::Enforce] {
            let exclude: BTreeSet<NodeId> = book
                .exclusions(check, &w.view, &is_trusted)
                .into_keys()
                .collect();
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let placement = place_excluding(&w.view, &request(), &policy, &exclude, &mut rng)
                .unwrap_or_else(|r| panic!("seed {seed} {check}: {r}"));
            let on_liar = placement.targets.contains(&liar);
            match check {
                LocationCheck::Enforce => {
                    assert!(!on_liar, "seed {seed}: the refuted node got packets")
                }
                _ => chosen_under_warn |= on_liar,
            }
        }
    }
    assert!(
        chosen_under_warn,
        "under warn the refuted node is only flagged, so placement uses it sometimes"
    );
    assert!(
        book.exclusions(LocationCheck::Off, &w.view, &is_trusted)
            .is_empty()
    );
}

#[test]
fn location_check_parses_its_three_values() {
    for (text, value) in [
        ("off", LocationCheck::Off),
        ("warn", LocationCheck::Warn),
        ("ENFORCE", LocationCheck::Enforce),
    ] {
        assert_eq!(text.parse::<LocationCheck>().expect("parses"), value);
    }
    assert!("strict".parse::<LocationCheck>().is_err());
    assert_eq!(LocationCheck::default(), LocationCheck::Warn);
}
