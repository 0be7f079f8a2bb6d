//! strew-sim: a discrete-event simulation of a strew grid that drives the
//! real coordinator — one in-memory `Manager` through its decide → apply
//! commands, with the coordinator's repair and audit policy — over thousands
//! to 100k virtual nodes.
//!
//! Layout: [`scenario`] (the TOML a user writes), [`distribution`] (session,
//! downtime and storage distributions), [`queue`] (simulated time),
//! [`engine`] (the world and the event loop), [`closed_form`] (binomial
//! models to validate against), [`report`] and [`plots`] (what a run leaves in
//! `--out`). This crate must not reimplement coordinator decisions: plans,
//! commits, forgets and repairs are the manager's commands; repair and audit
//! verdicts come from `strew-coordinator`'s policies.

pub mod closed_form;
pub mod distribution;
pub mod engine;
pub mod plots;
pub mod queue;
pub mod report;
pub mod scenario;

use std::path::{Path, PathBuf};
use std::time::Instant;

pub use engine::{Finished, Outcome, RepairMove, simulate, simulate_with_manager};
pub use report::Report;
pub use scenario::Scenario;

/// Everything that can stop `strew-sim run`.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Scenario(#[from] scenario::ScenarioError),
    #[error(transparent)]
    Engine(#[from] engine::EngineError),
    #[error(transparent)]
    Report(#[from] report::ReportError),
    #[error(transparent)]
    Plot(#[from] plots::PlotError),
    #[error("cannot create the output directory {path}")]
    OutDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A finished run: the report and the files written.
#[derive(Debug)]
pub struct RunResult {
    pub report: Report,
    pub outcome: Outcome,
    pub files: Vec<PathBuf>,
}

/// Runs a scenario and returns its report (no files written).
pub fn run(scenario: &Scenario, seed: u64) -> Result<(Report, Outcome), SimError> {
    // Wall time is measured around the model, never inside it.
    let started = Instant::now();
    let outcome = simulate(scenario, seed)?;
    let wall_seconds = started.elapsed().as_secs_f64();
    Ok((Report::build(scenario, &outcome, wall_seconds), outcome))
}

/// Runs a scenario and writes report.json, timeline.csv and the plots into `out`.
pub fn run_to_dir(scenario: &Scenario, seed: u64, out: &Path) -> Result<RunResult, SimError> {
    std::fs::create_dir_all(out).map_err(|source| SimError::OutDir {
        path: out.to_path_buf(),
        source,
    })?;
    let (report, outcome) = run(scenario, seed)?;
    let mut files = vec![
        report.write_json(out)?,
        report::write_timeline(&outcome, out)?,
    ];
    files.extend(plots::draw_all(&outcome, out)?);
    Ok(RunResult {
        report,
        outcome,
        files,
    })
}
