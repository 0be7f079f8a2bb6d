//! Placement cost on grids of 1k, 10k and 100k nodes sampled from the city
//! table by population: 1,000 data packets with erasure 10+4 (100 stripes,
//! 1,400 packets), backup distance 200–2000 km, spread ≥ 100 km, source in
//! Frankfurt. Also the simulator's common case: one 4+2 stripe.
//! Run: `cargo bench -p strew-coordinator --bench placement`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use strew_coordinator::cities::CityTable;
use strew_coordinator::{
    DistanceRange, GeoPoint, GridView, NodeId, NodeProfile, PlacementRequest, Redundancy, place,
};

const GIB: u64 = 1 << 30;

fn grid(nodes: usize, seed: u64) -> GridView {
    let table = match CityTable::embedded() {
        Ok(table) => table,
        Err(e) => panic!("city table: {e}"),
    };
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    GridView::from_profiles((0..nodes).map(|i| {
        let (lat, lon) = table.sample_location(&mut rng, 0.0);
        let mut raw = [0u8; 32];
        raw[..4].copy_from_slice(&(i as u32).to_be_bytes());
        let free = rng.random_range(10 * GIB..1024 * GIB);
        let location = GeoPoint { lat, lon };
        NodeProfile::new(NodeId(raw), location, free, 0)
    }))
}

fn request(redundancy: Redundancy, stripes: u32) -> PlacementRequest {
    PlacementRequest {
        source: GeoPoint {
            lat: 50.1109,
            lon: 8.6821,
        },
        source_node: None,
        backup_distance: DistanceRange {
            min_km: Some(200.0),
            max_km: Some(2000.0),
        },
        spread: DistanceRange {
            min_km: Some(100.0),
            max_km: None,
        },
        redundancy,
        stripes,
        packet_size: 1 << 20,
    }
}

fn bench_placement(c: &mut Criterion) {
    let mut group = c.benchmark_group("place_1000_packets_erasure_10+4");
    for nodes in [1_000usize, 10_000, 100_000] {
        let view = grid(nodes, 1);
        let req = request(Redundancy::Erasure { k: 10, m: 4 }, 100);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
        assert!(
            place(&view, &req, &mut rng).is_ok(),
            "{nodes} nodes: infeasible"
        );
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &nodes, |b, _| {
            b.iter(|| black_box(place(&view, &req, &mut rng)))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("place_one_stripe_erasure_4+2");
    for nodes in [1_000usize, 10_000, 100_000] {
        let view = grid(nodes, 2);
        let req = request(Redundancy::Erasure { k: 4, m: 2 }, 1);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &nodes, |b, _| {
            b.iter(|| black_box(place(&view, &req, &mut rng)))
        });
    }
    group.finish();

    // The exhaustive fallback: what a full ring enumeration costs (sampling disabled).
    let mut group = c.benchmark_group("place_1000_packets_enumerating_the_ring");
    let policy = strew_coordinator::PlacementPolicy {
        sample_above: usize::MAX,
        ..Default::default()
    };
    for nodes in [1_000usize, 10_000, 100_000] {
        let view = grid(nodes, 1);
        let req = request(Redundancy::Erasure { k: 10, m: 4 }, 100);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        group.bench_with_input(BenchmarkId::from_parameter(nodes), &nodes, |b, _| {
            b.iter(|| {
                black_box(strew_coordinator::place_with(
                    &view, &req, &policy, &mut rng,
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_placement);
criterion_main!(benches);
