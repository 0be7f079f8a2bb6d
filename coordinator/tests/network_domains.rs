//! Failure domains by network (SPEC R13): two packets of one stripe never
//! go to nodes whose public addresses share an IPv4 /24 (or IPv6 /64);
//! private and loopback addresses are exempt.

use std::collections::BTreeSet;
use std::net::IpAddr;

use rand::SeedableRng;
use rand::rngs::Xoshiro256PlusPlus;
use strew_coordinator::{
    DistanceRange, GeoPoint, GridView, NetworkDomain, NodeId, NodeProfile, PlacementPolicy,
    PlacementRequest, Redundancy, place, place_replacements_reusing,
};

fn node(n: u8, lat: f64, lon: f64, ip: &str) -> NodeProfile {
    let mut p = NodeProfile::new(
        NodeId([n; 32]),
        GeoPoint::new(lat, lon).expect("valid location"),
        1 << 34,
        0,
    );
    let ip: IpAddr = ip.parse().expect("valid address");
    p.network = NetworkDomain::of(ip);
    p
}

/// Ten nodes behind one /24 (203.0.113.0/24) and ten on distinct /24s,
/// scattered over Europe.
fn grid() -> (GridView, BTreeSet<NodeId>) {
    let mut nodes = Vec::new();
    let mut shared = BTreeSet::new();
    for i in 0..10u8 {
        let p = node(
            i + 1,
            45.0 + f64::from(i) * 0.7,
            f64::from(i) * 1.3,
            &format!("203.0.113.{}", 10 + i),
        );
        shared.insert(p.node_id);
        nodes.push(p);
    }
    for i in 0..10u8 {
        nodes.push(node(
            i + 11,
            44.0 + f64::from(i) * 0.8,
            2.0 + f64::from(i) * 1.1,
            &format!("198.51.{}.20", 100 + i),
        ));
    }
    (GridView::from_profiles(nodes), shared)
}

fn request(stripes: u32) -> PlacementRequest {
    PlacementRequest {
        source: GeoPoint::new(48.8566, 2.3522).expect("Paris"),
        source_node: None,
        backup_distance: DistanceRange::ANY,
        spread: DistanceRange::ANY,
        redundancy: Redundancy::Erasure { k: 4, m: 2 },
        stripes,
        packet_size: 1 << 20,
    }
}

#[test]
fn no_stripe_ever_has_two_packets_on_one_public_slash_24() {
    let (view, shared) = grid();
    let mut used_shared: BTreeSet<NodeId> = BTreeSet::new();
    for seed in 0..300u64 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let stripes = 1 + (seed % 40) as u32;
        let placement = place(&view, &request(stripes), &mut rng)
            .unwrap_or_else(|r| panic!("seed {seed}: refused: {r}"));
        for (i, stripe) in placement.stripes.iter().enumerate() {
            let on_shared = stripe.iter().filter(|t| shared.contains(t)).count();
            assert!(
                on_shared <= 1,
                "seed {seed}: stripe {i} has {on_shared} packets on 203.0.113.0/24"
            );
            used_shared.extend(stripe.iter().filter(|t| shared.contains(t)).copied());
        }
        // Replacements for a lost packet keep the rule within the stripe
        // (a backup spread over every domain can only reuse its own targets).
        let survivors: Vec<NodeId> = placement.stripes[0][1..].to_vec();
        let new = place_replacements_reusing(
            &view,
            &request(stripes),
            &PlacementPolicy::default(),
            &placement.targets,
            &survivors,
            1,
            &mut rng,
        )
        .unwrap_or_else(|r| panic!("seed {seed}: replacement refused: {r}"));
        let mut stripe: Vec<NodeId> = survivors.clone();
        stripe.extend(new);
        assert!(
            stripe.iter().filter(|t| shared.contains(t)).count() <= 1,
            "seed {seed}: a replacement put a second packet on 203.0.113.0/24"
        );
    }
    // The shared network is not shunned, only limited to one packet a stripe.
    assert!(!used_shared.is_empty(), "the shared /24 was never used");
}

#[test]
fn nodes_of_one_public_network_alone_cannot_hold_a_stripe() {
    let (view, shared) = grid();
    let only_shared = GridView::from_profiles(
        shared
            .iter()
            .filter_map(|id| view.get(id).cloned())
            .collect::<Vec<_>>(),
    );
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let refusal = place(&only_shared, &request(2), &mut rng).expect_err("one failure domain");
    assert!(
        refusal.advice.contains("distinct public networks"),
        "{}",
        refusal.advice
    );
}

#[test]
fn private_and_loopback_addresses_are_exempt() {
    let nodes: Vec<NodeProfile> = (0..8u8)
        .map(|i| {
            let ip = if i % 2 == 0 {
                format!("192.168.1.{}", i + 2)
            } else {
                "127.0.0.1".to_string()
            };
            node(i + 1, 45.0 + f64::from(i), f64::from(i), &ip)
        })
        .collect();
    let view = GridView::from_profiles(nodes);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let placement = place(&view, &request(4), &mut rng).expect("private addresses are exempt");
    assert!(placement.targets.len() >= 6);
}
