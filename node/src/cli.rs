//! The `strew` command line: one clap derive tree, and nothing else. Each
//! subcommand's behaviour lives in the module that owns it; this file only
//! names the subcommands and their flags. Help text here is user documentation.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// strew — a peer-to-peer backup grid.
#[derive(Parser, Debug)]
#[command(name = "strew", version, about, long_about = None)]
pub struct Cli {
    /// The node's data directory (identity, config, packet store, metadata).
    #[arg(long, global = true, env = "STREW_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,

    /// Log filter (tracing env-filter syntax), e.g. `info`, `strew=debug`.
    #[arg(long, global = true, env = "STREW_LOG", default_value = "warn")]
    pub log: String,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Creates this node's identity and writes its configuration (`config.toml` in the data dir).
    Init(crate::config::InitArgs),
    /// Runs the node: joins the grid, gossips capacity and location, stores packets for others.
    Run(crate::config::RunArgs),
    /// Shows this node, the grid, the manager, and where this node's packets are.
    Status(crate::daemon::source_commands::StatusCmd),
    /// Lists the nodes in this node's grid view (asks the running daemon).
    Peers(crate::daemon::commands::JsonFlag),
    /// Backs PATH… up onto the grid (pipeline → placement → direct uploads → commit).
    Backup(crate::daemon::source_commands::BackupCmd),
    /// Dry run of a backup: would it fit under these constraints, and where would it go.
    Plan(crate::daemon::source_commands::BackupFlags),
    /// Lists this node's snapshots.
    Snapshots(crate::daemon::source_commands::SnapshotsCmd),
    /// Restores SNAPSHOT into DEST, byte for byte: each backed-up folder as
    /// `DEST/<its name>/…` (e.g. `/home/ana/docs` → `DEST/docs`).
    Restore(crate::daemon::source_commands::RestoreCmd),
    /// Lists the snapshots this node's key can restore with no coordinator
    /// (from their roots on the grid) and how to restore them.
    Recover(crate::daemon::recover_cli::RecoverCmd),
    /// Forgets SNAPSHOT, or what `--keep-*` rules do not keep (restic's
    /// semantics); packets no snapshot of any source needs are deleted.
    Forget(crate::daemon::source_commands::ForgetCmd),
    /// Verifies that every packet of SNAPSHOT is held: fetches each one and
    /// checks it against its id; names missing packets by stripe; exits
    /// non-zero when a stripe is degraded or lost.
    Check(crate::daemon::check_commands::CheckCmd),
    /// Leaves the grid gracefully: this node gets no new packets, everything
    /// it holds is rebuilt on other targets first, and the command says when
    /// the node may stop (`--json`: the status once).
    Leave(crate::daemon::leave::LeaveCmd),
    /// Cancels running backups (all of them, or the one named JOB): their
    /// plans are aborted and their reservations released. Ctrl-C on
    /// `strew backup` does the same for its own backup.
    Cancel(crate::daemon::source_commands::CancelCmd),
    /// Lists what SNAPSHOT contains (from its manifest; no data is fetched).
    Ls(crate::daemon::browse_commands::LsCmd),
    /// Finds paths matching PATTERN across this node's snapshots (manifests only).
    Find(crate::daemon::browse_commands::FindCmd),
    /// Shows what was added, removed and changed between two snapshots (manifests only).
    Diff(crate::daemon::browse_commands::DiffCmd),
    /// Exports or imports this node's key (identity and convergence secret).
    #[command(subcommand)]
    Key(crate::daemon::source_commands::KeyCmd),
    /// The grid's trust root: create a grid, admit or remove coordinators.
    #[command(subcommand)]
    Grid(crate::daemon::grid_commands::GridCmd),
    /// Starts a local grid of real nodes on 127.0.0.1 at real city locations,
    /// backs up a folder, kills two targets, restores, verifies and draws the map.
    Demo(crate::demo::DemoArgs),
    /// Benchmarks a user can run on their own machine.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Runs the packet pipeline alone over PATH: backup into a temporary packet
    /// store, delete as many packets per stripe as the redundancy tolerates,
    /// restore into a temporary directory, compare byte for byte, print figures.
    Pipeline(crate::bench::PipelineBenchArgs),
}

/// `$XDG_DATA_HOME/strew`, `~/.local/share/strew`, or `./strew-data` as a last resort.
pub fn default_data_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("strew");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".local/share/strew");
    }
    PathBuf::from("strew-data")
}
