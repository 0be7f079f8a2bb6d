//! The report of a run: `report.json` and `timeline.csv` in the output directory.
//!
//! Owns the report's fields and their meaning (documented in docs/simulator.md),
//! the load balance measure (Gini coefficient of node utilisation) and the
//! closed-form expectation printed next to the simulated losses. This module
//! must not simulate; it only summarises an [`Outcome`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::closed_form;
use crate::engine::{DisasterOutcome, Outcome};
use crate::scenario::Scenario;

/// Errors writing a report.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}")]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
}

/// What the binomial model predicts for this scenario without repair.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClosedForm {
    /// Probability a node is lost over the horizon (permanent failure or silent loss; disasters excluded).
    pub node_loss_probability: f64,
    pub stripe_loss_probability: f64,
    pub object_loss_probability: f64,
    /// Expected objects lost among those stored, with no repair.
    pub expected_objects_lost_without_repair: f64,
    /// The window model with repair (`closed_form::stripe_loss_with_repair`):
    /// a lost packet is rebuilt `repair_window_hours` (grace + checker
    /// period) after its node is lost; `null` when repair is off.
    pub repair_window_hours: Option<f64>,
    pub stripe_loss_probability_with_repair: Option<f64>,
    pub expected_objects_lost_with_repair: Option<f64>,
}

/// `report.json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub nodes: u32,
    pub horizon_days: f64,
    pub redundancy: String,
    pub objects: u64,
    pub objects_stored: u64,
    pub objects_lost: u64,
    /// objects_lost / objects_stored.
    pub durability_loss_fraction: f64,
    pub packets_stored: u64,
    pub packets_deleted: u64,
    pub snapshots_forgotten: u64,
    pub packets_lost: u64,
    pub packets_given_up: u64,
    pub packets_readopted: u64,
    pub nodes_failed: u32,
    pub nodes_corrupted: u32,
    pub nodes_evicted: u32,
    pub repair_bytes: u64,
    pub repair_bytes_read: u64,
    pub repair_bytes_written: u64,
    /// Reed–Solomon's lower bound on repair reads: every destroyed packet
    /// rebuilt from K others (bytes destroyed × K; replicas: × 1).
    pub repair_lower_bound_bytes: u64,
    /// repair_bytes_read / repair_lower_bound_bytes (1 = only destroyed
    /// packets were rebuilt; more = packets of nodes away past the grace
    /// that came back, or rebuilt twice).
    pub repair_read_over_lower_bound: f64,
    /// Hours the repairer is busy at `repair.bandwidth`, and the longest a
    /// repair waits behind others at that pace.
    pub repair_busy_hours: f64,
    pub repair_backlog_max_hours: f64,
    pub stripes_repaired: u64,
    pub packets_rebuilt: u64,
    pub repair_refusals: u64,
    pub pending_repairs_at_end: u64,
    pub placement_failures: u64,
    pub placement_success: f64,
    pub placement_refusal_example: Option<String>,
    pub availability: f64,
    pub load_gini: f64,
    pub utilisation_mean: f64,
    pub utilisation_max: f64,
    pub audits_passed: u64,
    pub audits_failed: u64,
    pub disasters: Vec<DisasterOutcome>,
    pub closed_form: ClosedForm,
    pub events: u64,
    pub wall_seconds: f64,
}

/// Gini coefficient of non-negative values: 0 = all equal, towards 1 = concentrated.
pub fn gini(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    let n = v.len();
    let sum: f64 = v.iter().sum();
    if n == 0 || sum <= 0.0 {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let weighted: f64 = v
        .iter()
        .enumerate()
        .map(|(i, x)| (2.0 * (i as f64 + 1.0) - n as f64 - 1.0) * x)
        .sum();
    weighted / (n as f64 * sum)
}

impl Report {
    /// Summarises an outcome; `wall_seconds` is measured by the caller.
    pub fn build(scenario: &Scenario, outcome: &Outcome, wall_seconds: f64) -> Report {
        let b = &scenario.backup;
        let width = b.redundancy.width() as u32;
        let k = b.redundancy.data_packets() as u32;
        let stripes = b.stripes_per_object();
        let f = &scenario.failures;
        let node_loss = 1.0 - (1.0 - f.permanent_probability) * (1.0 - f.corruption_probability);
        let object_loss = closed_form::object_loss_probability(width, k, stripes, node_loss);
        let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let lower_bound = outcome
            .packets_lost
            .saturating_mul(b.packet_size)
            .saturating_mul(u64::from(k));
        let horizon = scenario.horizon_ms as f64;
        let with_repair = scenario.repair.enabled.then(|| {
            let window = scenario.repair.grace_ms as f64
                + strew_coordinator::repair::check_period(scenario.repair.grace_ms) as f64;
            let rate = -(1.0 - node_loss).max(f64::MIN_POSITIVE).ln() / horizon.max(1.0);
            let stripe = closed_form::stripe_loss_with_repair(
                width,
                k,
                scenario.repair.threshold,
                rate,
                window,
                horizon,
            );
            let object = 1.0 - (1.0 - stripe).powf(f64::from(stripes));
            (
                window / 3_600_000.0,
                stripe,
                object * outcome.objects_stored as f64,
            )
        });
        let hours = |ms: u64| ms as f64 / 3_600_000.0;
        let utilisation_mean = if outcome.utilisation.is_empty() {
            0.0
        } else {
            outcome.utilisation.iter().sum::<f64>() / outcome.utilisation.len() as f64
        };
        Report {
            scenario: scenario.name.clone(),
            seed: outcome.seed,
            nodes: scenario.nodes,
            horizon_days: scenario.horizon_ms as f64 / 86_400_000.0,
            redundancy: b.redundancy.to_string(),
            objects: outcome.objects,
            objects_stored: outcome.objects_stored,
            objects_lost: outcome.objects_lost,
            durability_loss_fraction: ratio(outcome.objects_lost, outcome.objects_stored),
            packets_stored: outcome.packets_stored,
            packets_deleted: outcome.packets_deleted,
            snapshots_forgotten: outcome.snapshots_forgotten,
            packets_lost: outcome.packets_lost,
            packets_given_up: outcome.packets_given_up,
            packets_readopted: outcome.packets_readopted,
            nodes_failed: outcome.nodes_failed,
            nodes_corrupted: outcome.nodes_corrupted,
            nodes_evicted: outcome.nodes_evicted,
            repair_bytes: outcome.repair_bytes,
            repair_bytes_read: outcome.repair_bytes_read,
            repair_bytes_written: outcome.repair_bytes_written,
            repair_lower_bound_bytes: lower_bound,
            repair_read_over_lower_bound: ratio(outcome.repair_bytes_read, lower_bound),
            repair_busy_hours: hours(outcome.repair_busy_ms),
            repair_backlog_max_hours: hours(outcome.repair_backlog_max_ms),
            stripes_repaired: outcome.stripes_repaired,
            packets_rebuilt: outcome.packets_rebuilt,
            repair_refusals: outcome.repair_refusals,
            pending_repairs_at_end: outcome.pending_repairs_at_end,
            placement_failures: outcome.placement_failures,
            placement_success: ratio(outcome.objects_stored, outcome.objects),
            placement_refusal_example: outcome.placement_refusal_example.clone(),
            availability: outcome.availability,
            load_gini: gini(&outcome.utilisation),
            utilisation_mean,
            utilisation_max: outcome.utilisation.iter().copied().fold(0.0, f64::max),
            audits_passed: outcome.audits.0,
            audits_failed: outcome.audits.1,
            disasters: outcome.disasters.clone(),
            closed_form: ClosedForm {
                node_loss_probability: node_loss,
                stripe_loss_probability: closed_form::stripe_loss_probability(width, k, node_loss),
                object_loss_probability: object_loss,
                expected_objects_lost_without_repair: object_loss * outcome.objects_stored as f64,
                repair_window_hours: with_repair.map(|r| r.0),
                stripe_loss_probability_with_repair: with_repair.map(|r| r.1),
                expected_objects_lost_with_repair: with_repair.map(|r| r.2),
            },
            events: outcome.events,
            wall_seconds,
        }
    }

    /// Writes `report.json` into `dir`.
    pub fn write_json(&self, dir: &Path) -> Result<PathBuf, ReportError> {
        let path = dir.join("report.json");
        let io = |source| ReportError::Io {
            path: path.clone(),
            source,
        };
        let mut out = BufWriter::new(File::create(&path).map_err(io)?);
        serde_json::to_writer_pretty(&mut out, self).map_err(|source| ReportError::Json {
            path: path.clone(),
            source,
        })?;
        out.write_all(b"\n").map_err(io)?;
        out.flush().map_err(io)?;
        Ok(path)
    }
}

/// Writes `timeline.csv` (one row per sample) into `dir`.
pub fn write_timeline(outcome: &Outcome, dir: &Path) -> Result<PathBuf, ReportError> {
    let path = dir.join("timeline.csv");
    let csv_err = |source| ReportError::Csv {
        path: path.clone(),
        source,
    };
    let mut writer = csv::Writer::from_path(&path).map_err(csv_err)?;
    for row in &outcome.timeline {
        writer.serialize(row).map_err(csv_err)?;
    }
    writer.flush().map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gini_of_equal_and_concentrated_loads() {
        assert_eq!(gini(&[0.5, 0.5, 0.5, 0.5]), 0.0);
        let concentrated = gini(&[0.0, 0.0, 0.0, 1.0]);
        assert!((concentrated - 0.75).abs() < 1e-12, "{concentrated}");
        assert_eq!(gini(&[]), 0.0);
        assert_eq!(gini(&[0.0, 0.0]), 0.0);
    }
}
