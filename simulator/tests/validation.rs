//! Validation of the simulator against closed forms and invariants:
//! independent failures without repair follow the binomial K-of-N model,
//! churn alone loses nothing, a disaster cannot take two packets of a stripe
//! when the spread is at least twice its radius, and a seed replays exactly.

use strew_simulator::closed_form::{object_loss_probability, object_loss_slope};
use strew_simulator::{Report, Scenario, run, run_to_dir};

fn scenario(text: &str) -> Scenario {
    match Scenario::parse(text, "test") {
        Ok(s) => s,
        Err(e) => panic!("test scenario invalid: {e}"),
    }
}

fn report_of(text: &str, seed: u64) -> Report {
    match run(&scenario(text), seed) {
        Ok((report, _)) => report,
        Err(e) => panic!("simulation failed: {e}"),
    }
}

/// Checks simulated object losses (objects of one stripe) against the binomial model, two ways:
/// conditioned on the realised fraction of dead nodes (only the objects'
/// own sampling noise remains), and against the scenario's probability
/// (adding the noise of how many nodes died, propagated through the slope).
fn assert_matches_binomial(report: &Report, width: u32, k: u32, p: f64) {
    let n = report.objects_stored as f64;
    assert!(n > 0.0, "nothing stored: {report:?}");
    let simulated = report.objects_lost as f64 / n;
    let realised_p = f64::from(report.nodes_failed) / f64::from(report.nodes);

    let q = object_loss_probability(width, k, 1, realised_p);
    let sigma = (q * (1.0 - q) / n).sqrt();
    assert!(
        (simulated - q).abs() <= 4.0 * sigma + 1e-9,
        "given {realised_p:.4} of nodes dead: simulated loss {simulated:.5}, binomial {q:.5} ± {:.5} (4σ)",
        4.0 * sigma
    );

    let q0 = object_loss_probability(width, k, 1, p);
    let node_sigma = (p * (1.0 - p) / f64::from(report.nodes)).sqrt();
    let sigma0 =
        (q0 * (1.0 - q0) / n + (object_loss_slope(width, k, 1, p) * node_sigma).powi(2)).sqrt();
    assert!(
        (simulated - q0).abs() <= 4.0 * sigma0,
        "simulated loss {simulated:.5}, binomial at p={p}: {q0:.5} ± {:.5} (4σ)",
        4.0 * sigma0
    );
    assert!((report.closed_form.object_loss_probability - q0).abs() < 1e-12);
}

const INDEPENDENT: &str = r#"
nodes = 1000
locations = "uniform"
horizon = "365d"
sample_every = "365d"
storage = "100GiB"
[backup]
objects = 3000
object_size = "OBJECT"
packet_size = "1MiB"
redundancy = "REDUNDANCY"
backup_distance = "..4000km"
[failures]
permanent_probability = 0.3
"#;

#[test]
fn independent_failures_without_repair_match_binomial_erasure() {
    // 4 MiB in 1 MiB packets: one 4+2 stripe per object.
    let text = INDEPENDENT
        .replace("REDUNDANCY", "erasure:4+2")
        .replace("OBJECT", "4MiB");
    let report = report_of(&text, 11);
    assert_eq!(report.stripes_repaired, 0);
    assert_eq!(report.objects_stored, 3000);
    assert_matches_binomial(&report, 6, 4, 0.3);
}

#[test]
fn independent_failures_without_repair_match_binomial_replicas() {
    // One packet per object, so one stripe of three copies: lost with probability p³.
    let text = INDEPENDENT
        .replace("REDUNDANCY", "replicas:3")
        .replace("OBJECT", "1MiB");
    let report = report_of(&text, 12);
    assert_matches_binomial(&report, 3, 1, 0.3);
}

const CHURN: &str = r#"
nodes = 600
locations = "cities"
horizon = "60d"
sample_every = "1d"
[backup]
objects = 1500
object_size = "4MiB"
packet_size = "1MiB"
redundancy = "erasure:4+2"
backup_distance = "..3000km"
spread = "20km.."
[churn]
session = "weibull(shape=0.5, scale=2h)"
downtime = "DOWNTIME"
[repair]
enabled = true
grace = "24h"
threshold = 1
"#;

#[test]
fn churn_without_failures_loses_nothing() {
    let report = report_of(&CHURN.replace("DOWNTIME", "exponential(mean=1h)"), 3);
    assert!(report.objects_stored > 1000, "{report:?}");
    assert_eq!(report.objects_lost, 0);
    assert_eq!(report.packets_lost, 0);
    assert_eq!(report.nodes_failed, 0);
    // Churn really happened: objects were sometimes unreadable.
    assert!(
        report.availability < 1.0 && report.availability > 0.5,
        "{report:?}"
    );
}

#[test]
fn long_absences_trigger_repair_but_lose_nothing() {
    // Downtimes average 2 days against a 24 h grace: many nodes are given up,
    // their packets rebuilt elsewhere, and they come back with ghosts to re-adopt.
    let report = report_of(&CHURN.replace("DOWNTIME", "exponential(mean=2d)"), 4);
    assert_eq!(report.objects_lost, 0, "{report:?}");
    assert_eq!(report.packets_lost, 0);
    assert!(report.stripes_repaired > 0, "{report:?}");
    assert!(report.repair_bytes > 0);
}

const DISASTER: &str = r#"
nodes = 1500
locations = "cities"
region = { lat = 48.0, lon = 8.0, radius = "1200km" }
horizon = "200d"
sample_every = "10d"
[backup]
objects = 1500
object_size = "4MiB"
packet_size = "1MiB"
redundancy = "erasure:4+2"
backup_distance = "..2500km"
spread = "SPREAD"
[failures]
disasters = [
  { at = "50d", lat = 48.85, lon = 2.35, radius = "300km" },
  { at = "120d", lat = 50.11, lon = 8.68, radius = "300km" },
]
"#;

#[test]
fn spread_of_twice_the_radius_keeps_disasters_to_one_packet_per_stripe() {
    let report = report_of(&DISASTER.replace("SPREAD", "600km.."), 5);
    assert!(report.objects_stored > 1000, "{report:?}");
    assert_eq!(report.disasters.len(), 2);
    for d in &report.disasters {
        assert!(d.nodes_killed > 10, "{d:?}");
        assert!(d.packets_destroyed > 0, "{d:?}");
        assert!(d.max_packets_of_one_stripe <= 1, "{d:?}");
    }
    // Two disasters take at most two packets of a 4+2 stripe: nothing is lost.
    assert_eq!(report.objects_lost, 0);
}

#[test]
fn without_the_spread_rule_a_disaster_takes_several_packets_of_a_stripe() {
    let report = report_of(&DISASTER.replace("SPREAD", "10km.."), 5);
    let worst = report
        .disasters
        .iter()
        .map(|d| d.max_packets_of_one_stripe)
        .max()
        .unwrap_or(0);
    assert!(worst >= 2, "{:?}", report.disasters);
}

const MIXED: &str = r#"
nodes = 400
region = { lat = 48.0, lon = 10.0, radius = "1500km" }
horizon = "120d"
sample_every = "5d"
storage = "uniform(min=20GiB, max=200GiB)"
[backup]
objects = 800
object_size = "8MiB"
packet_size = "1MiB"
redundancy = "erasure:4+2"
backup_distance = "..4000km"
spread = "30km.."
[churn]
session = "weibull(shape=0.6, scale=6h)"
downtime = "lognormal(median=1h, sigma=1)"
[failures]
permanent_probability = 0.1
corruption_probability = 0.03
disasters = [{ at = "40d", lat = 48.14, lon = 11.58, radius = "200km" }]
[repair]
grace = "48h"
[audit]
interval = "3d"
evict_after = 1
"#;

#[test]
fn same_seed_same_report_and_timeline() {
    let sc = scenario(MIXED);
    let (mut a, ta) = run(&sc, 99).expect("runs");
    let (mut b, tb) = run(&sc, 99).expect("runs");
    a.wall_seconds = 0.0;
    b.wall_seconds = 0.0;
    assert_eq!(a, b);
    assert_eq!(ta.timeline, tb.timeline);
    assert_eq!(
        serde_json::to_string(&a).expect("json"),
        serde_json::to_string(&b).expect("json")
    );
    let (mut c, _) = run(&sc, 100).expect("runs");
    c.wall_seconds = 0.0;
    assert_ne!(a, c, "a different seed should give a different run");
    // The mixed scenario exercises every mechanism.
    assert!(
        a.stripes_repaired > 0 && a.nodes_failed > 0 && a.audits_passed > 0,
        "{a:?}"
    );
    // Every failed audit evicts (evict_after = 1), and only rotten nodes fail.
    assert_eq!(u64::from(a.nodes_evicted), a.audits_failed);
    assert!(a.nodes_evicted <= a.nodes_corrupted);
}

#[test]
fn audits_find_silent_loss_that_repair_alone_misses() {
    let base = r#"
nodes = 400
horizon = "200d"
sample_every = "10d"
[backup]
objects = 1000
redundancy = "erasure:4+2"
backup_distance = "..4000km"
[failures]
corruption_probability = 0.25
[repair]
grace = "24h"
"#;
    let without = report_of(base, 8);
    let with = report_of(&format!("{base}[audit]\ninterval = \"2d\"\n"), 8);
    assert_eq!(without.nodes_evicted, 0);
    assert!(with.nodes_evicted > 50, "{with:?}");
    assert!(with.stripes_repaired > 0);
    assert!(
        with.objects_lost < without.objects_lost,
        "audits should prevent losses: with {} vs without {}",
        with.objects_lost,
        without.objects_lost
    );
}

#[test]
fn run_writes_report_timeline_and_plots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sc = scenario(MIXED);
    let result = run_to_dir(&sc, 1, dir.path()).expect("runs");
    let json = std::fs::read_to_string(dir.path().join("report.json")).expect("report.json");
    let value: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    for key in [
        "objects",
        "objects_lost",
        "packets_lost",
        "nodes_failed",
        "repair_bytes",
        "placement_failures",
        "availability",
        "load_gini",
        "wall_seconds",
        "seed",
    ] {
        assert!(value.get(key).is_some(), "report.json lacks {key}");
    }
    let timeline = std::fs::read_to_string(dir.path().join("timeline.csv")).expect("timeline");
    let lines: Vec<&str> = timeline.lines().collect();
    assert!(lines[0].starts_with("day,online_nodes,"), "{}", lines[0]);
    assert_eq!(lines.len(), 1 + 24, "120 days sampled every 5 days");
    for plot in ["timeline.svg", "load.svg", "map.svg"] {
        let svg = std::fs::read_to_string(dir.path().join(plot)).expect("plot");
        assert!(svg.starts_with("<svg") && svg.len() > 2_000, "{plot}");
    }
    assert_eq!(result.files.len(), 5);
}
