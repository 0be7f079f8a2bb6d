//! Placement rules, refusals and advice on small hand-made grids.

use super::*;
use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;

fn node(n: u8, lat: f64, lon: f64, free: u64) -> NodeProfile {
    NodeProfile::new(NodeId([n; 32]), GeoPoint::new(lat, lon).unwrap(), free, 0)
}

fn request(redundancy: Redundancy, stripes: u32) -> PlacementRequest {
    PlacementRequest {
        source: GeoPoint::new(48.8566, 2.3522).unwrap(),
        source_node: None,
        backup_distance: DistanceRange::ANY,
        spread: DistanceRange::ANY,
        redundancy,
        stripes,
        packet_size: 1 << 20,
    }
}

#[test]
fn layout_puts_each_stripe_on_distinct_targets() {
    let targets: Vec<NodeId> = (0..5u8).map(|n| NodeId([n; 32])).collect();
    let counts = [7, 7, 3, 2, 2]; // stripes = 7, width = 3
    let layout = lay_out(&targets, &counts, 7, 3);
    for stripe in &layout {
        assert_eq!(stripe.len(), 3);
        let distinct: BTreeSet<_> = stripe.iter().collect();
        assert_eq!(distinct.len(), 3);
    }
}

#[test]
fn apportion_respects_caps_and_follows_weights() {
    let counts = apportion(&[10, 10, 2], &[1.0, 3.0, 100.0], 14);
    assert_eq!(counts.iter().sum::<u64>(), 14);
    assert_eq!(counts[2], 2);
    assert!(counts[1] > counts[0]);
    assert!(counts.iter().zip([10, 10, 2]).all(|(c, cap)| *c <= cap));
}

#[test]
fn offline_overloaded_and_full_nodes_are_never_chosen() {
    let mut nodes = vec![
        node(1, 50.0, 0.0, 1 << 30),
        node(2, 52.0, 5.0, 1 << 30),
        node(3, 45.0, 8.0, 1 << 30),
        node(4, 40.0, -3.0, 1 << 30),
    ];
    nodes.push(node(5, 41.0, 12.0, 1 << 30));
    nodes[4].online = false;
    let mut busy = node(6, 55.0, 12.0, 1 << 30);
    busy.load = 0.99;
    nodes.push(busy);
    nodes.push(node(7, 60.0, 20.0, 10)); // no room for one packet
    let view = GridView::from_profiles(nodes);
    let req = request(Redundancy::Erasure { k: 2, m: 2 }, 3);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let p = place(&view, &req, &mut rng).unwrap();
    assert_eq!(
        p.targets,
        (1..=4u8).map(|n| NodeId([n; 32])).collect::<Vec<_>>()
    );
    let req5 = request(Redundancy::Erasure { k: 3, m: 2 }, 1);
    let refusal = place(&view, &req5, &mut rng).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
    assert_eq!(refusal.eligible_nodes, 4);
    assert!(refusal.exhaustive);
}

#[test]
fn refusal_names_the_bound_to_relax() {
    // Five nodes in a tight cluster around Lyon and three far away.
    let mut nodes: Vec<NodeProfile> = (0..5u8)
        .map(|n| node(n, 45.75 + 0.05 * n as f64, 4.85, 1 << 30))
        .collect();
    nodes.push(node(10, 40.4, -3.7, 1 << 30)); // Madrid, ~1050 km from Paris
    nodes.push(node(11, 52.52, 13.4, 1 << 30)); // Berlin, ~880 km
    nodes.push(node(12, 41.9, 12.5, 1 << 30)); // Rome, ~1100 km
    let view = GridView::from_profiles(nodes);
    let mut req = request(Redundancy::Erasure { k: 2, m: 1 }, 1);
    req.backup_distance = "..500km".parse().unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    // Only the Lyon cluster is in the ring, and it is not spread enough.
    req.spread = "100km..".parse().unwrap();
    let refusal = place(&view, &req, &mut rng).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::SpreadTooStrict);
    assert_eq!(refusal.ring_nodes, 5);
    assert_eq!(refusal.largest_compatible, 1);
    assert!(refusal.exhaustive);
    assert!(
        refusal.advice.contains("minimum spread"),
        "{}",
        refusal.advice
    );

    // A ring with too few nodes suggests a larger maximum.
    req.spread = DistanceRange::ANY;
    req.backup_distance = "700km..1000km".parse().unwrap();
    let refusal = place(&view, &req, &mut rng).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
    assert!(
        refusal.advice.contains("raise the maximum backup distance"),
        "{}",
        refusal.advice
    );
    assert!(
        refusal.to_string().contains("1 online node(s)"),
        "{refusal}"
    );
}

#[test]
fn capacity_is_never_exceeded() {
    let nodes = vec![
        node(1, 50.0, 0.0, 3 << 20),
        node(2, 52.0, 5.0, 1 << 20),
        node(3, 45.0, 8.0, 10 << 20),
        node(4, 40.0, -3.0, 10 << 20),
    ];
    let view = GridView::from_profiles(nodes);
    let req = request(Redundancy::Replicas { n: 2 }, 10);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let p = place(&view, &req, &mut rng).unwrap();
    let counts = p.packets_per_target();
    assert!(counts.get(&NodeId([1; 32])).copied().unwrap_or(0) <= 3);
    assert!(counts.get(&NodeId([2; 32])).copied().unwrap_or(0) <= 1);
    let req = request(Redundancy::Replicas { n: 2 }, 13);
    let refusal = place(&view, &req, &mut rng).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::NotEnoughCapacity);
}

#[test]
fn replacements_avoid_survivors_and_respect_spread_with_the_backup() {
    let nodes: Vec<NodeProfile> = (0..12u8)
        .map(|n| node(n, 35.0 + 2.0 * n as f64, -5.0 + 2.5 * n as f64, 1 << 30))
        .collect();
    let view = GridView::from_profiles(nodes);
    let mut req = request(Redundancy::Erasure { k: 2, m: 1 }, 1);
    req.spread = "150km..".parse().unwrap();
    let backup: Vec<NodeId> = [0u8, 4, 8].iter().map(|n| NodeId([*n; 32])).collect();
    let survivors = &backup[..2];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    let new = place_replacements(&view, &req, &backup, survivors, 1, &mut rng).unwrap();
    assert_eq!(new.len(), 1);
    assert!(!survivors.contains(&new[0]));
    for e in &backup {
        if *e != new[0] {
            let a = view.get(e).unwrap().location;
            let b = view.get(&new[0]).unwrap().location;
            assert!(haversine_km(&a, &b) >= 150.0);
        }
    }
    let refusal = place_replacements(&view, &req, &backup, survivors, 30, &mut rng).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
}

/// Distances from Paris the advice names, in km.
fn advised_km(advice: &str, phrase: &str) -> Option<f64> {
    let rest = &advice[advice.find(phrase)? + phrase.len()..];
    let digits: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    digits.parse().ok()
}

#[test]
fn advice_after_excluding_unreachable_targets_names_bounds_that_would_place() {
    // Four nodes 880..1100 km from Paris, two more at ~1450 and ~1550 km,
    // and two at 340..430 km.
    let nodes = vec![
        node(10, 40.4, -3.7, 1 << 30),   // Madrid ~1050 km
        node(11, 52.52, 13.4, 1 << 30),  // Berlin ~880 km
        node(12, 41.9, 12.5, 1 << 30),   // Rome ~1100 km
        node(13, 48.2, 16.37, 1 << 30),  // Vienna ~1030 km
        node(14, 59.33, 18.07, 1 << 30), // Stockholm ~1540 km
        node(15, 38.72, -9.14, 1 << 30), // Lisbon ~1450 km
        node(16, 51.5, -0.12, 1 << 30),  // London ~340 km
        node(17, 52.37, 4.9, 1 << 30),   // Amsterdam ~430 km
    ];
    let view = GridView::from_profiles(nodes);
    let mut req = request(Redundancy::Erasure { k: 2, m: 2 }, 1);
    req.backup_distance = "500km..1200km".parse().unwrap();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    assert!(place(&view, &req, &mut rng).is_ok());
    // Two of the four ring nodes failed their uploads: the advice must not
    // count them, and must not suggest a bound already inside the range.
    let failed: BTreeSet<NodeId> = [NodeId([11; 32]), NodeId([13; 32])].into();
    let refusal =
        place_excluding(&view, &req, &PlacementPolicy::default(), &failed, &mut rng).unwrap_err();
    assert_eq!(refusal.reason, RefusalReason::TooFewInRing);
    assert_eq!(refusal.eligible_nodes, 2, "{refusal}");
    let max = advised_km(&refusal.advice, "raise the maximum backup distance to")
        .unwrap_or_else(|| panic!("no maximum advised: {}", refusal.advice));
    assert!(max > 1200.0, "{}", refusal.advice);
    let min = advised_km(&refusal.advice, "lower the minimum backup distance to")
        .unwrap_or_else(|| panic!("no minimum advised: {}", refusal.advice));
    assert!(min < 500.0, "{}", refusal.advice);
    // Following either piece of advice places the backup.
    for range in [format!("500km..{max}km"), format!("{min}km..1200km")] {
        req.backup_distance = range.parse().unwrap();
        place_excluding(&view, &req, &PlacementPolicy::default(), &failed, &mut rng)
            .unwrap_or_else(|r| panic!("{range}: {r}"));
    }
    // With no bounds at all the advice says what is missing, not "widen".
    req.backup_distance = DistanceRange::ANY;
    let all: BTreeSet<NodeId> = (10..16u8).map(|n| NodeId([n; 32])).collect();
    let refusal =
        place_excluding(&view, &req, &PlacementPolicy::default(), &all, &mut rng).unwrap_err();
    assert!(!refusal.advice.contains("Widen"), "{}", refusal.advice);
    assert!(
        refusal.advice.contains("already unbounded"),
        "{}",
        refusal.advice
    );
}
