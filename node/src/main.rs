//! The `strew` binary: parses the command line, sets up logging, dispatches
//! to the node library, and maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use strew_node::cli::{BenchCommand, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log);
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => strew_node::daemon::commands::init(&cli.data_dir, &args),
        Command::Run(args) => strew_node::daemon::run(&cli.data_dir, &args),
        Command::Status(cmd) => strew_node::daemon::source_commands::status(&cli.data_dir, &cmd),
        Command::Backup(cmd) => strew_node::daemon::source_commands::backup(&cli.data_dir, &cmd),
        Command::Plan(flags) => strew_node::daemon::source_commands::plan(&cli.data_dir, &flags),
        Command::Snapshots(cmd) => {
            strew_node::daemon::source_commands::snapshots(&cli.data_dir, &cmd)
        }
        Command::Restore(cmd) => strew_node::daemon::source_commands::restore(&cli.data_dir, &cmd),
        Command::Forget(cmd) => strew_node::daemon::source_commands::forget(&cli.data_dir, &cmd),
        Command::Key(cmd) => strew_node::daemon::source_commands::key(&cli.data_dir, &cmd),
        Command::Demo(args) => strew_node::demo::run(&args),
        Command::Peers(flag) => strew_node::daemon::commands::peers(&cli.data_dir, &flag),
        Command::Bench(BenchCommand::Pipeline(args)) => strew_node::bench::run_pipeline(&args),
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// A closed stdout (`strew snapshots | head`) is a normal end, not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
