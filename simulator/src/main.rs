//! The `strew-sim` binary: command line parsing and printing only; the
//! simulation lives in the library.

mod place;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use strew_simulator::{Scenario, run_to_dir};

/// Simulates a strew grid: placement, churn, failures, disasters, repair and
/// audits over virtual nodes, driving the real coordinator library.
#[derive(Parser, Debug)]
#[command(name = "strew-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Places one backup over a nodes file (id,lat,lon,free_bytes) and prints the decision.
    Place(place::PlaceArgs),
    /// Runs a scenario file and writes report.json, timeline.csv and SVG plots.
    Run {
        /// The scenario (TOML; see docs/simulator.md for every key).
        scenario: PathBuf,
        /// Seed of every random choice; overrides the scenario's `seed`.
        #[arg(long)]
        seed: Option<u64>,
        /// Directory for the report and plots.
        #[arg(long, default_value = "sim-out")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`strew-sim run ... | head`) is a normal end, not an error.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("strew-sim: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Place(args) => place::run(&args),
        Command::Run {
            scenario,
            seed,
            out,
        } => {
            let sc = Scenario::load(&scenario)
                .with_context(|| format!("scenario {}", scenario.display()))?;
            let seed = seed.unwrap_or(sc.seed);
            let mut stdout = std::io::stdout().lock();
            writeln!(
                stdout,
                "strew-sim: scenario {} ({} nodes, {} objects), seed {seed}",
                sc.name, sc.nodes, sc.backup.objects
            )?;
            stdout.flush()?;
            let result = run_to_dir(&sc, seed, &out)?;
            let r = &result.report;
            writeln!(
                stdout,
                "seed {seed}: {} of {} objects stored ({} placement failures), {} lost; \
                 availability {:.6}; {} nodes failed; repair {:.2} GiB in {} stripes; load gini {:.3}; {:.2} s",
                r.objects_stored,
                r.objects,
                r.placement_failures,
                r.objects_lost,
                r.availability,
                r.nodes_failed,
                r.repair_bytes as f64 / (1u64 << 30) as f64,
                r.stripes_repaired,
                r.load_gini,
                r.wall_seconds
            )?;
            let cf = &r.closed_form;
            let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
            writeln!(
                stdout,
                "closed form: {:.4} objects lost without repair{}; repair read {:.2} GiB = {:.2} x the RS lower bound \
                 ({:.2} GiB: bytes destroyed x K); repairer busy {:.1} h at repair.bandwidth, longest wait {:.2} h",
                cf.expected_objects_lost_without_repair,
                match (cf.expected_objects_lost_with_repair, cf.repair_window_hours) {
                    (Some(lost), Some(window)) =>
                        format!(", {lost:.3e} with repair (window {window:.2} h)"),
                    _ => String::new(),
                },
                gib(r.repair_bytes_read),
                r.repair_read_over_lower_bound,
                gib(r.repair_lower_bound_bytes),
                r.repair_busy_hours,
                r.repair_backlog_max_hours,
            )?;
            for file in &result.files {
                writeln!(stdout, "wrote {}", file.display())?;
            }
            Ok(())
        }
    }
}
