//! The simulation drives the real manager: after a run with replaced
//! snapshots (forgets), permanent failures, silent corruption, audits and
//! repairs, the manager's records agree with the report — reference counts,
//! packets per target, repaired packets on their new targets — and every
//! target still keeps its backup's distance rules.

use std::collections::{BTreeMap, BTreeSet};

use strew_coordinator::records::profile_key;
use strew_coordinator::{DataId, GeoPoint, ManagerState, NodeId, PacketId, haversine_km};
use strew_simulator::engine::{Fate, node_index};
use strew_simulator::{Finished, Report, Scenario, simulate_with_manager};

/// 400 nodes around central Europe, two-stripe objects backed up in three
/// versions (the last stripe changes, the first dedups, the older snapshots
/// are forgotten), no churn, so every node the driver gives up on stays gone.
const SCENARIO: &str = r#"
nodes = 400
locations = "cities"
region = { lat = 48.0, lon = 8.0, radius = "900km" }
horizon = "120d"
sample_every = "10d"
storage = "20GiB"
[backup]
objects = 150
versions = 3
object_size = "8MiB"
packet_size = "1MiB"
redundancy = "erasure:4+2"
backup_distance = "50km..1500km"
spread = "40km.."
[failures]
permanent_probability = 0.15
corruption_probability = 0.03
[repair]
enabled = true
grace = "24h"
threshold = 1
[audit]
enabled = true
interval = "7d"
evict_after = 1
"#;

fn run(seed: u64) -> (Scenario, Finished, Report) {
    let scenario = match Scenario::parse(SCENARIO, "manager-records") {
        Ok(s) => s,
        Err(e) => panic!("test scenario invalid: {e}"),
    };
    let finished = match simulate_with_manager(&scenario, seed) {
        Ok(f) => f,
        Err(e) => panic!("simulation failed: {e}"),
    };
    let report = Report::build(&scenario, &finished.outcome, 0.0);
    (scenario, finished, report)
}

fn location(state: &ManagerState, id: &NodeId) -> GeoPoint {
    match state.clients.get(id) {
        Some(c) => c.profile.location,
        None => panic!("target {id} never joined"),
    }
}

#[test]
fn manager_records_match_the_report_after_forgets_failures_and_repairs() {
    let (scenario, finished, report) = run(5);
    let state = finished.manager().state();
    let b = &scenario.backup;
    let width = b.redundancy.width() as u64;
    let stripes = u64::from(b.stripes_per_object());
    assert_eq!(stripes, 2);

    // Every object stored, every replaced version forgotten.
    assert_eq!(report.objects_stored, report.objects, "{report:?}");
    assert_eq!(state.snapshots.len() as u64, report.objects_stored);
    assert_eq!(
        report.snapshots_forgotten,
        report.objects_stored * u64::from(b.versions - 1)
    );
    assert!(state.pending.is_empty(), "every plan committed");

    // Reference counts: a chunk's `refs` is the number of snapshots naming it.
    let mut referenced: BTreeMap<DataId, u64> = BTreeMap::new();
    for snapshot in state.snapshots.values() {
        for data_id in &snapshot.chunks {
            *referenced.entry(*data_id).or_default() += 1;
        }
    }
    assert_eq!(state.chunks.len(), referenced.len(), "no orphaned chunks");
    for (data_id, chunk) in &state.chunks {
        assert_eq!(
            Some(&chunk.refs),
            referenced.get(data_id),
            "refs of {data_id}"
        );
    }

    // Packets per target: what the report says still exists, booked exactly once.
    let placed = report.packets_stored - report.packets_deleted;
    assert_eq!(placed, report.objects_stored * stripes * width);
    // The first stripe dedups across versions; each version uploads a new last stripe.
    assert_eq!(
        report.packets_stored,
        report.objects_stored * (stripes + u64::from(b.versions - 1)) * width
    );
    let booked: u64 = state.targets.values().map(|t| t.packets.len() as u64).sum();
    assert_eq!(booked, placed);
    let bytes: u64 = state.targets.values().map(|t| t.bytes).sum();
    assert_eq!(bytes, placed * b.packet_size);
    assert!(state.targets.values().all(|t| t.reserved == 0));
    let mut expected: BTreeMap<NodeId, BTreeSet<PacketId>> = BTreeMap::new();
    for chunk in state.chunks.values() {
        for p in &chunk.packets {
            assert!(expected.entry(p.target).or_default().insert(p.packet_id));
        }
    }
    for (id, target) in &state.targets {
        let held: BTreeSet<PacketId> = target.packets.keys().copied().collect();
        assert_eq!(
            held,
            expected.remove(id).unwrap_or_default(),
            "packets booked on {id}"
        );
    }
    assert!(expected.is_empty(), "packets on targets without a record");

    // Repairs happened, each one a MovePacket the state recorded.
    assert!(
        report.nodes_failed > 0 && report.nodes_evicted > 0,
        "{report:?}"
    );
    assert!(report.stripes_repaired > 0, "{report:?}");
    assert_eq!(finished.moves().len() as u64, report.packets_rebuilt);
    let mut last_move: BTreeMap<(DataId, u32), NodeId> = BTreeMap::new();
    for m in finished.moves() {
        assert_ne!(m.from, m.to);
        last_move.insert((m.data_id, m.index), m.to);
    }
    for ((data_id, index), to) in &last_move {
        let Some(chunk) = state.chunks.get(data_id) else {
            panic!("repaired chunk {data_id} is gone");
        };
        let packet = chunk.packets[*index as usize];
        assert_eq!(&packet.target, to, "packet {index} of {data_id}");
        assert!(state.targets[to].packets.contains_key(&packet.packet_id));
    }
    let log_repairs = state
        .log
        .iter()
        .filter(|e| e.kind == strew_coordinator::LogKind::Repair)
        .count() as u64;
    assert_eq!(log_repairs, report.packets_rebuilt);

    check_distance_rules(&finished, &scenario, Spread::PerChunk);
}

/// Which targets the spread rule is checked between.
#[derive(Clone, Copy, PartialEq)]
enum Spread {
    /// The packets of each chunk (stripe).
    PerChunk,
    /// All live targets of a snapshot.
    WholeBackup,
}

/// Every target within the backup distance of its source and never the
/// source itself, one packet per target in a stripe, and live targets
/// pairwise within the spread (a node given up on no longer constrains
/// where replacements go).
fn check_distance_rules(finished: &Finished, scenario: &Scenario, spread: Spread) {
    let state = finished.manager().state();
    let fates = &finished.outcome.nodes;
    let live = |id: &NodeId| fates[node_index(id) as usize].1 == Fate::Alive;
    let check_spread = |targets: &BTreeSet<NodeId>, range: &strew_coordinator::DistanceRange| {
        let targets: Vec<&NodeId> = targets.iter().filter(|id| live(id)).collect();
        for (i, a) in targets.iter().enumerate() {
            for c in &targets[i + 1..] {
                let d = haversine_km(&location(state, a), &location(state, c));
                assert!(range.contains(d), "{a} and {c} are {d:.0} km apart");
            }
        }
    };
    for snapshot in state.snapshots.values() {
        let profile = &state.profiles[&profile_key(&snapshot.source, &snapshot.set)];
        assert_eq!(
            profile.params.backup_distance,
            scenario.backup.backup_distance
        );
        let mut all = BTreeSet::new();
        for data_id in &snapshot.chunks {
            let chunk = &state.chunks[data_id];
            let distinct: BTreeSet<NodeId> = chunk.packets.iter().map(|p| p.target).collect();
            assert_eq!(distinct.len(), chunk.packets.len(), "one packet per target");
            for p in &chunk.packets {
                assert_ne!(p.target, snapshot.source);
                let d = haversine_km(&profile.location, &location(state, &p.target));
                assert!(
                    profile.params.backup_distance.contains(d),
                    "{} is {d:.0} km from its source",
                    p.target
                );
            }
            if spread == Spread::PerChunk {
                check_spread(&distinct, &profile.params.spread);
            }
            all.extend(distinct);
        }
        if spread == Spread::WholeBackup {
            check_spread(&all, &profile.params.spread);
        }
    }
}

/// With one version per object every chunk of a snapshot was placed in one
/// plan, so the spread holds across the whole backup, repairs included.
/// (A later version's new chunks are placed without regard to the targets
/// of the chunks it reuses: the manager's plan keeps the spread only among
/// the packets it places.)
#[test]
fn single_version_backups_keep_the_spread_across_the_whole_backup_through_repairs() {
    let scenario = match Scenario::parse(
        &SCENARIO.replace("versions = 3", "versions = 1"),
        "single-version",
    ) {
        Ok(s) => s,
        Err(e) => panic!("test scenario invalid: {e}"),
    };
    let finished = match simulate_with_manager(&scenario, 5) {
        Ok(f) => f,
        Err(e) => panic!("simulation failed: {e}"),
    };
    assert!(finished.outcome.stripes_repaired > 0);
    check_distance_rules(&finished, &scenario, Spread::WholeBackup);
}

#[test]
fn a_seed_replays_to_the_same_manager_state() {
    let (_, first, _) = run(9);
    let (_, second, _) = run(9);
    assert!(first.manager().state() == second.manager().state());
    assert_eq!(first.moves(), second.moves());
}
