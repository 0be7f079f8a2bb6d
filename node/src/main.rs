//! The `strew` binary: parses the command line, sets up logging, dispatches
//! to the node library, and maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use strew_node::cli::{BenchCommand, Cli, Command};

fn main() -> ExitCode {
    bound_allocator();
    let cli = Cli::parse();
    init_logging(&cli.log);
    // The one async runtime of the process: the daemon and every client
    // command run on it (no command builds its own).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("strew")
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
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

/// Keeps glibc's allocator from holding freed memory: buffers of 1 MiB
/// and more are always mapped on their own and unmapped when freed (glibc
/// otherwise raises that threshold to the largest block freed, up to 32
/// MiB, and serves later large buffers from arenas that fragment), and at
/// most four arenas are kept (a large backup's threads otherwise keep one
/// each, each holding its own free memory). A node's resident memory then
/// follows what it holds. An operator who set glibc's malloc tunables
/// (`GLIBC_TUNABLES=glibc.malloc.…`) keeps them: nothing is overridden.
fn bound_allocator() {
    let tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
    if tuned {
        return;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    use strew_node::daemon::{browse_commands, commands, source_commands};
    let dir = &cli.data_dir;
    match cli.command {
        Command::Init(args) => commands::init(dir, &args),
        Command::Run(args) => strew_node::daemon::run(dir, &args).await,
        Command::Status(cmd) => source_commands::status(dir, &cmd).await,
        Command::Backup(cmd) => source_commands::backup(dir, &cmd).await,
        Command::Plan(flags) => source_commands::plan(dir, &flags).await,
        Command::Snapshots(cmd) => source_commands::snapshots(dir, &cmd).await,
        Command::Restore(cmd) => source_commands::restore(dir, &cmd).await,
        Command::Recover(cmd) => strew_node::daemon::recover_cli::recover(dir, &cmd).await,
        Command::Forget(cmd) => source_commands::forget(dir, &cmd).await,
        Command::Check(cmd) => strew_node::daemon::check_commands::check(dir, &cmd).await,
        Command::Leave(cmd) => strew_node::daemon::leave::leave(dir, &cmd).await,
        Command::Cancel(cmd) => source_commands::cancel(dir, &cmd).await,
        Command::Ls(cmd) => browse_commands::ls(dir, &cmd).await,
        Command::Find(cmd) => browse_commands::find(dir, &cmd).await,
        Command::Diff(cmd) => browse_commands::diff(dir, &cmd).await,
        Command::Key(cmd) => source_commands::key(dir, &cmd),
        Command::Grid(cmd) => strew_node::daemon::grid_commands::grid(dir, &cmd).await,
        Command::Demo(args) => strew_node::demo::run(&args).await,
        Command::Peers(flag) => commands::peers(dir, &flag).await,
        // Minutes of CPU and disk: on a blocking thread, not a runtime worker.
        Command::Bench(BenchCommand::Pipeline(args)) => {
            tokio::task::spawn_blocking(move || strew_node::bench::run_pipeline(&args)).await?
        }
    }
}

fn init_logging(filter: &str) {
    // openraft's state dumps drown the node's own lines at `info`: keep it at
    // `warn` unless the filter names it (`--log info,openraft=info`).
    let filter = if filter.contains("openraft") {
        filter.to_string()
    } else {
        format!("{filter},openraft=warn")
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
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
