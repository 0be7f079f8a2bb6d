//! Scenario files: the TOML a user writes, checked into a [`Scenario`].
//!
//! Owns the scenario keys, their defaults and their validation; every error
//! names the key (`backup.redundancy`, `failures.disasters[0].radius`) and the
//! problem. Values with units go through the coordinator's unit parsers (all
//! such calls are in the `value` helpers below). This module must not run
//! anything: it only turns text into checked numbers. Times are simulated
//! milliseconds from the start of the run.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use strew_coordinator::audit::AuditPolicy;
use strew_coordinator::repair::{DEFAULT_REPAIR_BANDWIDTH, RepairPolicy, check_period};
use strew_coordinator::{DistanceRange, GeoPoint, Redundancy};

use crate::distribution::{Distribution, DistributionError};

const DAY_MS: u64 = 86_400_000;

/// Why a scenario cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario file is not valid (unknown key, wrong type or bad TOML)")]
    Toml(#[source] toml::de::Error),
    #[error("scenario key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
    #[error("scenario key `{key}`")]
    Unit {
        key: String,
        #[source]
        source: strew_coordinator::UnitError,
    },
    #[error("scenario key `{key}`")]
    Distribution {
        key: String,
        #[source]
        source: DistributionError,
    },
}

/// How node locations are drawn.
#[derive(Debug, Clone, PartialEq)]
pub enum Locations {
    /// Population-weighted from the embedded city table (only cities within
    /// `region` if given), moved by up to `jitter_km`.
    Cities {
        jitter_km: f64,
        region: Option<Region>,
    },
    /// Uniform over the sphere (no population weighting): a control case.
    Uniform,
}

/// A disc on the globe that node locations are restricted to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub center: GeoPoint,
    pub radius_km: f64,
}

/// The backups placed at the start.
#[derive(Debug, Clone, PartialEq)]
pub struct BackupSpec {
    pub objects: u32,
    pub object_size: u64,
    pub packet_size: u64,
    pub redundancy: Redundancy,
    pub backup_distance: DistanceRange,
    pub spread: DistanceRange,
    /// Snapshots taken of each object at the start. Each later one changes
    /// the object's last stripe (the others dedup) and replaces the previous
    /// snapshot, which is forgotten once the new one commits.
    pub versions: u32,
}

impl BackupSpec {
    /// Data packets of one object: ceil(object_size / packet_size).
    pub fn data_packets(&self) -> u64 {
        self.object_size.div_ceil(self.packet_size).max(1)
    }

    /// Stripes per object: ceil(data packets / K) (one per data packet for replicas).
    pub fn stripes_per_object(&self) -> u32 {
        let k = self.redundancy.data_packets() as u64;
        u32::try_from(self.data_packets().div_ceil(k)).unwrap_or(u32::MAX)
    }
}

/// Temporary disconnections: alternating online sessions and offline downtimes.
#[derive(Debug, Clone, PartialEq)]
pub struct ChurnSpec {
    /// Online session length, in ms.
    pub session: Distribution,
    /// Offline downtime length, in ms.
    pub downtime: Distribution,
}

/// A regional disaster: every node within `radius_km` of `center` dies at `at_ms`.
#[derive(Debug, Clone, PartialEq)]
pub struct Disaster {
    pub at_ms: u64,
    pub center: GeoPoint,
    pub radius_km: f64,
}

/// Permanent failures, silent data loss and disasters.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FailureSpec {
    /// Each node independently dies for good at a uniform time within the horizon with this probability.
    pub permanent_probability: f64,
    /// Each node independently loses all its packets silently (stays online) with this probability.
    pub corruption_probability: f64,
    pub disasters: Vec<Disaster>,
}

/// The manager's repair policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RepairSpec {
    pub enabled: bool,
    pub grace_ms: u64,
    pub threshold: u32,
    /// How often stripes waiting for enough reachable packets are retried.
    pub retry_every_ms: u64,
    /// Pace of the repairer's traffic, bytes per second (the daemon's
    /// `repair_bandwidth`); 0 = unlimited.
    pub bandwidth: u64,
}

/// Audits: periodic proof-of-storage challenges.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditSpec {
    pub enabled: bool,
    pub interval_ms: u64,
    /// Failed audits after which a target is evicted (its packets rebuilt elsewhere).
    pub evict_after: u32,
}

/// A checked scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub seed: u64,
    pub nodes: u32,
    pub locations: Locations,
    /// Bytes donated per node.
    pub storage: Distribution,
    pub horizon_ms: u64,
    pub sample_every_ms: u64,
    /// At most this many objects are checked for availability at each sample.
    pub availability_sample: u32,
    pub backup: BackupSpec,
    pub churn: Option<ChurnSpec>,
    pub failures: FailureSpec,
    pub repair: RepairSpec,
    pub audit: AuditSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    seed: Option<u64>,
    nodes: Option<i64>,
    locations: Option<String>,
    jitter: Option<String>,
    region: Option<RawRegion>,
    storage: Option<String>,
    horizon: Option<String>,
    sample_every: Option<String>,
    availability_sample: Option<i64>,
    backup: Option<RawBackup>,
    churn: Option<RawChurn>,
    failures: Option<RawFailures>,
    repair: Option<RawRepair>,
    audit: Option<RawAudit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRegion {
    lat: Option<f64>,
    lon: Option<f64>,
    radius: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackup {
    objects: Option<i64>,
    object_size: Option<String>,
    packet_size: Option<String>,
    redundancy: Option<String>,
    backup_distance: Option<String>,
    spread: Option<String>,
    versions: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChurn {
    session: Option<String>,
    downtime: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFailures {
    permanent_probability: Option<f64>,
    corruption_probability: Option<f64>,
    disasters: Option<Vec<RawDisaster>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisaster {
    at: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
    radius: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepair {
    enabled: Option<bool>,
    grace: Option<String>,
    threshold: Option<i64>,
    retry_every: Option<String>,
    bandwidth: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    enabled: Option<bool>,
    interval: Option<String>,
    evict_after: Option<i64>,
}

fn invalid(key: &str, problem: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

/// Unit parsing: the only place scenario values meet the coordinator's parsers.
mod value {
    use super::ScenarioError;
    use std::str::FromStr;
    use strew_coordinator::{DistanceRange, Redundancy, UnitError};

    fn unit<T>(key: &str, r: Result<T, UnitError>) -> Result<T, ScenarioError> {
        r.map_err(|source| ScenarioError::Unit {
            key: key.to_string(),
            source,
        })
    }

    pub fn size(key: &str, text: &str) -> Result<u64, ScenarioError> {
        unit(key, strew_coordinator::parse_size(text))
    }

    pub fn duration_ms(key: &str, text: &str) -> Result<u64, ScenarioError> {
        let d = unit(key, strew_coordinator::parse_duration(text))?;
        Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn distance_km(key: &str, text: &str) -> Result<f64, ScenarioError> {
        unit(key, strew_coordinator::parse_distance_km(text))
    }

    pub fn range(key: &str, text: &str) -> Result<DistanceRange, ScenarioError> {
        unit(key, DistanceRange::from_str(text))
    }

    pub fn redundancy(key: &str, text: &str) -> Result<Redundancy, ScenarioError> {
        unit(key, Redundancy::from_str(text))
    }

    /// Size parser for distributions (bytes as f64).
    pub fn size_f64(text: &str) -> Result<f64, UnitError> {
        strew_coordinator::parse_size(text).map(|b| b as f64)
    }

    /// Duration parser for distributions (milliseconds as f64).
    pub fn duration_f64(text: &str) -> Result<f64, UnitError> {
        strew_coordinator::parse_duration(text).map(|d| d.as_secs_f64() * 1000.0)
    }
}

fn positive_count(key: &str, v: Option<i64>, default: Option<i64>) -> Result<u32, ScenarioError> {
    let v = v.or(default).ok_or_else(|| invalid(key, "is required"))?;
    u32::try_from(v).ok().filter(|&n| n > 0).ok_or_else(|| {
        invalid(
            key,
            format!("must be a whole number from 1 to {}, got {v}", u32::MAX),
        )
    })
}

fn probability(key: &str, v: Option<f64>) -> Result<f64, ScenarioError> {
    let p = v.unwrap_or(0.0);
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err(invalid(
            key,
            format!("must be a probability in [0, 1], got {p}"),
        ))
    }
}

fn distribution(
    key: &str,
    text: &str,
    parse: fn(&str) -> Result<f64, strew_coordinator::UnitError>,
) -> Result<Distribution, ScenarioError> {
    Distribution::parse(text, parse).map_err(|source| ScenarioError::Distribution {
        key: key.to_string(),
        source,
    })
}

impl Scenario {
    /// Reads and checks a scenario file; the file stem is the default name.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "scenario".to_string());
        Scenario::parse(&text, &stem)
    }

    /// Parses and checks scenario text.
    pub fn parse(text: &str, default_name: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(ScenarioError::Toml)?;
        let nodes = positive_count("nodes", raw.nodes, None)?;
        if nodes > 10_000_000 {
            return Err(invalid(
                "nodes",
                "at most 10,000,000 virtual nodes are supported",
            ));
        }
        let jitter_km = match raw.jitter.as_deref() {
            Some(t) => value::distance_km("jitter", t)?,
            None => 25.0,
        };
        let region = match raw.region {
            None => None,
            Some(r) => {
                let lat = r.lat.ok_or_else(|| invalid("region.lat", "is required"))?;
                let lon = r.lon.ok_or_else(|| invalid("region.lon", "is required"))?;
                let center = GeoPoint::new(lat, lon).map_err(|source| ScenarioError::Unit {
                    key: "region.lat/lon".to_string(),
                    source,
                })?;
                let radius = r
                    .radius
                    .ok_or_else(|| invalid("region.radius", "is required"))?;
                let radius_km = value::distance_km("region.radius", &radius)?;
                if radius_km <= 0.0 {
                    return Err(invalid("region.radius", "must be larger than zero"));
                }
                Some(Region { center, radius_km })
            }
        };
        let locations = match raw.locations.as_deref().unwrap_or("cities") {
            "cities" => Locations::Cities { jitter_km, region },
            "uniform" if region.is_some() => {
                return Err(invalid("region", "only applies to locations = \"cities\""));
            }
            "uniform" => Locations::Uniform,
            other => {
                return Err(invalid(
                    "locations",
                    format!("{other:?} is not known: use \"cities\" or \"uniform\""),
                ));
            }
        };
        let storage = distribution(
            "storage",
            raw.storage.as_deref().unwrap_or("100GiB"),
            value::size_f64,
        )?;
        let horizon_ms = value::duration_ms("horizon", raw.horizon.as_deref().unwrap_or("365d"))?;
        if horizon_ms == 0 {
            return Err(invalid("horizon", "must be longer than zero"));
        }
        let sample_every_ms = match raw.sample_every.as_deref() {
            Some(t) => value::duration_ms("sample_every", t)?,
            None => (horizon_ms / 365).clamp(60_000, DAY_MS),
        };
        if sample_every_ms == 0 {
            return Err(invalid("sample_every", "must be longer than zero"));
        }
        if horizon_ms / sample_every_ms > 100_000 {
            return Err(invalid(
                "sample_every",
                "gives more than 100,000 samples over the horizon: choose a longer interval",
            ));
        }
        let availability_sample = positive_count(
            "availability_sample",
            raw.availability_sample,
            Some(100_000),
        )?;

        let rb = raw
            .backup
            .ok_or_else(|| invalid("backup", "the [backup] table is required"))?;
        let backup = BackupSpec {
            objects: positive_count("backup.objects", rb.objects, None)?,
            object_size: value::size(
                "backup.object_size",
                rb.object_size.as_deref().unwrap_or("4MiB"),
            )?,
            packet_size: value::size(
                "backup.packet_size",
                rb.packet_size.as_deref().unwrap_or("1MiB"),
            )?,
            redundancy: value::redundancy(
                "backup.redundancy",
                rb.redundancy.as_deref().unwrap_or("erasure:4+2"),
            )?,
            backup_distance: value::range(
                "backup.backup_distance",
                rb.backup_distance.as_deref().unwrap_or(".."),
            )?,
            spread: value::range("backup.spread", rb.spread.as_deref().unwrap_or(".."))?,
            versions: positive_count("backup.versions", rb.versions, Some(1))?,
        };
        if backup.versions > 100 {
            return Err(invalid(
                "backup.versions",
                "at most 100 versions are supported",
            ));
        }
        if backup.object_size == 0 {
            return Err(invalid("backup.object_size", "must be larger than zero"));
        }
        if backup.packet_size == 0 {
            return Err(invalid("backup.packet_size", "must be larger than zero"));
        }
        if backup.data_packets() > 1_000_000 {
            return Err(invalid(
                "backup.packet_size",
                "gives more than 1,000,000 packets per object: use larger packets",
            ));
        }

        let churn = match raw.churn {
            None => None,
            Some(c) => {
                let session = c
                    .session
                    .ok_or_else(|| invalid("churn.session", "is required when [churn] is given"))?;
                let downtime = c.downtime.ok_or_else(|| {
                    invalid("churn.downtime", "is required when [churn] is given")
                })?;
                let spec = ChurnSpec {
                    session: distribution("churn.session", &session, value::duration_f64)?,
                    downtime: distribution("churn.downtime", &downtime, value::duration_f64)?,
                };
                if spec.session.mean() <= 0.0 {
                    return Err(invalid(
                        "churn.session",
                        "sessions must last longer than zero",
                    ));
                }
                Some(spec)
            }
        };

        let failures = match raw.failures {
            None => FailureSpec::default(),
            Some(f) => {
                let mut disasters = Vec::new();
                for (i, d) in f.disasters.unwrap_or_default().into_iter().enumerate() {
                    let key = |field: &str| format!("failures.disasters[{i}].{field}");
                    let at = d.at.ok_or_else(|| invalid(&key("at"), "is required"))?;
                    let at_ms = value::duration_ms(&key("at"), &at)?;
                    if at_ms > horizon_ms {
                        return Err(invalid(&key("at"), "is after the horizon"));
                    }
                    let lat = d.lat.ok_or_else(|| invalid(&key("lat"), "is required"))?;
                    let lon = d.lon.ok_or_else(|| invalid(&key("lon"), "is required"))?;
                    let center = GeoPoint::new(lat, lon).map_err(|source| ScenarioError::Unit {
                        key: key("lat/lon"),
                        source,
                    })?;
                    let radius = d
                        .radius
                        .ok_or_else(|| invalid(&key("radius"), "is required"))?;
                    let radius_km = value::distance_km(&key("radius"), &radius)?;
                    disasters.push(Disaster {
                        at_ms,
                        center,
                        radius_km,
                    });
                }
                FailureSpec {
                    permanent_probability: probability(
                        "failures.permanent_probability",
                        f.permanent_probability,
                    )?,
                    corruption_probability: probability(
                        "failures.corruption_probability",
                        f.corruption_probability,
                    )?,
                    disasters,
                }
            }
        };

        // Defaults are the daemon's: the coordinator's repair policy, the
        // checker's period and the repair bandwidth.
        let daemon = RepairPolicy::default();
        // The daemon's threshold for this scenario's stripes (by their width).
        let daemon_threshold = daemon.threshold_for(backup.redundancy) as u32;
        let repair = match raw.repair {
            None => RepairSpec {
                enabled: false,
                grace_ms: daemon.grace,
                threshold: daemon_threshold,
                retry_every_ms: check_period(daemon.grace),
                bandwidth: DEFAULT_REPAIR_BANDWIDTH,
            },
            Some(r) => {
                let width = backup.redundancy.width() as i64;
                let threshold = positive_count(
                    "repair.threshold",
                    r.threshold,
                    Some(i64::from(daemon_threshold)),
                )?;
                if i64::from(threshold) > width - backup.redundancy.data_packets() as i64 {
                    return Err(invalid(
                        "repair.threshold",
                        format!(
                            "is {threshold}, but a {} stripe is lost once more than {} packets are gone: use 1..={}",
                            backup.redundancy,
                            backup.redundancy.tolerated_losses(),
                            backup.redundancy.tolerated_losses()
                        ),
                    ));
                }
                let grace_ms = match r.grace.as_deref() {
                    Some(text) => value::duration_ms("repair.grace", text)?,
                    None => daemon.grace,
                };
                let retry_every_ms = match r.retry_every.as_deref() {
                    Some(text) => value::duration_ms("repair.retry_every", text)?,
                    None => check_period(grace_ms),
                };
                if retry_every_ms == 0 {
                    return Err(invalid("repair.retry_every", "must be longer than zero"));
                }
                let bandwidth = match r.bandwidth.as_deref() {
                    Some(text) => value::size("repair.bandwidth", text)?,
                    None => DEFAULT_REPAIR_BANDWIDTH,
                };
                RepairSpec {
                    enabled: r.enabled.unwrap_or(true),
                    grace_ms,
                    threshold,
                    retry_every_ms,
                    bandwidth,
                }
            }
        };

        let audits = AuditPolicy::default();
        let audit = match raw.audit {
            None => AuditSpec {
                enabled: false,
                interval_ms: audits.interval,
                evict_after: audits.evict_after,
            },
            Some(a) => {
                let interval_ms = match a.interval.as_deref() {
                    Some(text) => value::duration_ms("audit.interval", text)?,
                    None => audits.interval,
                };
                if interval_ms == 0 {
                    return Err(invalid("audit.interval", "must be longer than zero"));
                }
                AuditSpec {
                    enabled: a.enabled.unwrap_or(true),
                    interval_ms,
                    evict_after: positive_count(
                        "audit.evict_after",
                        a.evict_after,
                        Some(i64::from(audits.evict_after)),
                    )?,
                }
            }
        };

        Ok(Scenario {
            name: raw.name.unwrap_or_else(|| default_name.to_string()),
            seed: raw.seed.unwrap_or(1),
            nodes,
            locations,
            storage,
            horizon_ms,
            sample_every_ms,
            availability_sample,
            backup,
            churn,
            failures,
            repair,
            audit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE_EXAMPLE: &str = r#"
seed = 1
nodes = 5000
locations = "cities"
storage = "100GiB"
horizon = "365d"
[backup]
objects = 20000
object_size = "4MiB"
packet_size = "1MiB"
redundancy = "erasure:4+2"
backup_distance = "100km..2000km"
spread = "50km.."
[churn]
session = "weibull(shape=0.5, scale=2h)"
downtime = "exponential(mean=1h)"
[failures]
permanent_probability = 0.05
disasters = [{ at = "100d", lat = 48.85, lon = 2.35, radius = "300km" }]
[repair]
enabled = true
grace = "24h"
threshold = 1
"#;

    fn error_of(text: &str) -> String {
        match Scenario::parse(text, "t") {
            Ok(s) => panic!("accepted: {s:?}"),
            Err(e) => {
                let mut msg = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    source = s.source();
                }
                msg
            }
        }
    }

    #[test]
    fn repair_and_audit_defaults_are_the_daemons() {
        let s = Scenario::parse(
            "nodes = 10\n[backup]\nobjects = 1\n[repair]\n[audit]\n",
            "defaults",
        )
        .unwrap();
        let daemon = RepairPolicy::default();
        assert_eq!(s.repair.grace_ms, daemon.grace);
        assert_eq!(
            s.repair.threshold as usize,
            daemon.threshold_for(s.backup.redundancy)
        );
        assert_eq!(s.repair.retry_every_ms, check_period(daemon.grace));
        assert_eq!(s.repair.bandwidth, DEFAULT_REPAIR_BANDWIDTH);
        assert_eq!(s.audit.interval_ms, AuditPolicy::default().interval);
        assert_eq!(s.audit.evict_after, AuditPolicy::default().evict_after);
        assert!(s.repair.enabled && s.audit.enabled);
        let paced = Scenario::parse(
            "nodes = 10\n[backup]\nobjects = 1\n[repair]\nbandwidth = \"1MB\"\n",
            "paced",
        )
        .unwrap();
        assert_eq!(paced.repair.bandwidth, 1_000_000);
    }

    #[test]
    fn the_issue_example_parses() {
        let s = Scenario::parse(ISSUE_EXAMPLE, "example").expect("valid");
        assert_eq!(s.nodes, 5000);
        assert_eq!(s.horizon_ms, 365 * DAY_MS);
        assert_eq!(s.backup.stripes_per_object(), 1);
        assert_eq!(s.backup.redundancy.width(), 6);
        assert_eq!(s.failures.disasters.len(), 1);
        assert_eq!(s.failures.disasters[0].at_ms, 100 * DAY_MS);
        assert!((s.failures.disasters[0].radius_km - 300.0).abs() < 1e-9);
        assert_eq!(s.repair.grace_ms, DAY_MS);
        assert!(matches!(
            s.churn.as_ref().map(|c| &c.session),
            Some(Distribution::Weibull { shape, scale }) if *shape == 0.5 && *scale == 7_200_000.0
        ));
    }

    #[test]
    fn bad_values_name_their_key() {
        let bad_redundancy = ISSUE_EXAMPLE.replace("erasure:4+2", "erasure:4-2");
        assert!(error_of(&bad_redundancy).contains("backup.redundancy"));
        let bad_radius = ISSUE_EXAMPLE.replace("\"300km\"", "\"far\"");
        assert!(error_of(&bad_radius).contains("failures.disasters[0].radius"));
        let bad_probability = ISSUE_EXAMPLE.replace("0.05", "1.5");
        assert!(error_of(&bad_probability).contains("failures.permanent_probability"));
        let bad_session = ISSUE_EXAMPLE.replace("shape=0.5, ", "");
        let msg = error_of(&bad_session);
        assert!(
            msg.contains("churn.session") && msg.contains("shape"),
            "{msg}"
        );
        let bad_threshold = ISSUE_EXAMPLE.replace("threshold = 1", "threshold = 3");
        assert!(error_of(&bad_threshold).contains("repair.threshold"));
        let zero_nodes = ISSUE_EXAMPLE.replace("nodes = 5000", "nodes = 0");
        assert!(error_of(&zero_nodes).contains("nodes"));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let typo = ISSUE_EXAMPLE.replace("grace =", "grase =");
        assert!(error_of(&typo).contains("grase"));
        let missing_backup = "nodes = 10\n";
        assert!(error_of(missing_backup).contains("backup"));
    }
}
