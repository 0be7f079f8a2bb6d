//! The client side of `strew backup`, `plan`, `restore`, `snapshots`,
//! `forget`, `key export|import` and `status --map`: parse flags, resolve
//! paths against the caller's working directory, ask the daemon, follow the
//! job's progress on a bar (stderr, terminals only), print JSON or a summary.
//! Must not reach into daemon state directly.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use strew_coordinator::format_size;

use super::commands::{num, print_json};
use super::jobs::BackupArgs;
use crate::control;
use crate::progress::{Estimate, Estimator, ProgressMode, Sample};

/// Longest a backup or restore may run before the client stops waiting.
const LONG_CALL: Duration = Duration::from_secs(7 * 24 * 3600);
/// Calls that ask the manager something small.
const SHORT_CALL: Duration = Duration::from_secs(120);

/// Flags shared by `strew backup` and `strew plan`.
#[derive(Args, Debug, Clone)]
pub struct BackupFlags {
    /// Files and directories to back up.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Distance from this node to every target, e.g. `200km..2000km`, `100mi..`.
    #[arg(long)]
    pub backup_distance: Option<String>,
    /// Distance between any two targets of the backup, e.g. `100km..`.
    #[arg(long)]
    pub spread: Option<String>,
    /// `erasure:K+M` (default `erasure:4+2`) or `replicas:N`.
    #[arg(long)]
    pub redundancy: Option<String>,
    /// Backup set name (snapshots of one set form its history).
    #[arg(long, default_value = "default")]
    pub name: String,
    /// zstd level 1–19 (default 3).
    #[arg(long)]
    pub zstd_level: Option<i32>,
    /// Convergence secret scope: `grid` (identical data from any source is
    /// stored once, but grid members can confirm that a file they know is
    /// stored) or `private` (dedup only across your own nodes).
    #[arg(long, value_parser = ["grid", "private"])]
    pub convergence: Option<String>,
    /// FastCDC chunk sizes `MIN/AVG/MAX` in bytes.
    #[arg(long)]
    pub chunk_sizes: Option<String>,
    /// Leave out what matches PATTERN (gitignore-style: `node_modules`, `*.tmp`,
    /// `/home/build` anchored at the snapshot's top; repeatable). A
    /// `.strewignore` file in any backed-up folder is always honoured.
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Read exclude patterns from FILE, one a line (`#` starts a comment; repeatable).
    #[arg(long, value_name = "FILE")]
    pub exclude_file: Vec<PathBuf>,
    /// Leave out folders holding a valid CACHEDIR.TAG (browser and build caches).
    #[arg(long)]
    pub exclude_caches: bool,
    /// Stay on the file system of each PATH: do not descend into mount points below it.
    #[arg(long)]
    pub one_file_system: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct BackupCmd {
    #[command(flatten)]
    pub flags: BackupFlags,
    /// Re-run this backup set on a schedule (e.g. `6h`, `1d`); the daemon keeps it across restarts.
    #[arg(long)]
    pub sync_every: Option<String>,
    /// Retention for a `--sync-every` set: the daemon forgets what these rules
    /// do not keep after each scheduled run.
    #[command(flatten)]
    pub keep: KeepFlags,
    /// `bar` (stderr, when a terminal), `json` (one progress object a line
    /// on stdout, then the result as one line) or `none`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Bar)]
    pub progress: ProgressMode,
}

/// restic's `--keep-*` rules (a snapshot kept by any rule stays).
#[derive(Args, Debug, Clone, Default)]
pub struct KeepFlags {
    /// Keep the N newest snapshots.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the last N hours that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the last N days that have one (UTC days).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the last N ISO weeks that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the last N months that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the last N years that have one.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub keep_yearly: u32,
}

impl KeepFlags {
    pub fn policy(&self) -> crate::grid::KeepPolicy {
        crate::grid::KeepPolicy {
            last: self.keep_last,
            hourly: self.keep_hourly,
            daily: self.keep_daily,
            weekly: self.keep_weekly,
            monthly: self.keep_monthly,
            yearly: self.keep_yearly,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RestoreCmd {
    /// Snapshot id (or a unique prefix of at least 4 hex digits).
    pub snapshot: String,
    /// Directory to restore into (created if absent; must be empty unless
    /// --overwrite). Each backed-up folder comes back under its own name:
    /// backing up `/home/ana/docs` and restoring into DEST gives `DEST/docs/…`.
    pub dest: PathBuf,
    /// Restore into a non-empty DEST, replacing what the snapshot names.
    #[arg(long)]
    pub overwrite: bool,
    /// Keep setuid, setgid and sticky bits as backed up. Without it they are
    /// cleared: a snapshot's modes come from its manifest, and a restored
    /// setuid program owned by the restoring user is rarely what anyone wants.
    #[arg(long)]
    pub preserve_setid: bool,
    /// Restore only this path inside the snapshot (`home/docs/report.pdf`, a
    /// folder and all it holds) or what a gitignore-style pattern matches
    /// (`*.jpg`); repeatable. Only the packets those files need are fetched.
    #[arg(long, value_name = "PATH_OR_PATTERN")]
    pub include: Vec<String>,
    /// Restore from the snapshot's root on the grid, with no coordinator:
    /// packets are read back as their holder (this node id, or its imported key).
    #[arg(long)]
    pub from_grid: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// `bar` (stderr, when a terminal), `json` (one progress object a line
    /// on stdout, then the result as one line) or `none`.
    #[arg(long, value_enum, default_value_t = ProgressMode::Bar)]
    pub progress: ProgressMode,
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotsCmd {
    /// Only snapshots of this backup set.
    #[arg(long)]
    pub name: Option<String>,
    /// List from the snapshot roots (this data dir's and those the grid's
    /// nodes hold for this node id), with no coordinator.
    #[arg(long)]
    pub from_grid: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct ForgetCmd {
    /// Snapshot id (or a unique prefix); leave out to forget by `--keep-*` rules.
    #[arg(required_unless_present_any = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"])]
    pub snapshot: Option<String>,
    #[command(flatten)]
    pub keep: KeepFlags,
    /// With `--keep-*`: only the snapshots of this backup set (default: every set, each on its own).
    #[arg(long)]
    pub name: Option<String>,
    /// With `--keep-*`: list what would be kept and forgotten, forget nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct CancelCmd {
    /// The job to cancel; every running backup when absent.
    pub job: Option<String>,
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum KeyCmd {
    /// Writes this node's identity and convergence secret to FILE (keep it safe!).
    Export {
        /// Where to write the key (created with mode 0600).
        file: PathBuf,
        /// Replace FILE if it exists (it may hold another node's key).
        #[arg(long)]
        force: bool,
    },
    /// Installs an exported key into this (new) data dir, to restore on a fresh machine.
    Import {
        /// A file written by `strew key export`.
        file: PathBuf,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct StatusCmd {
    /// Print machine-readable JSON.
    #[arg(long)]
    pub json: bool,
    /// Also draw a world map (SVG) of where this node's packets are.
    #[arg(long, value_name = "FILE.svg")]
    pub map: Option<PathBuf>,
}

pub(super) fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the working directory")?
        .join(path))
}

fn backup_args(
    flags: &BackupFlags,
    sync_every: Option<String>,
    keep: crate::grid::KeepPolicy,
) -> anyhow::Result<BackupArgs> {
    if !keep.is_empty() && sync_every.is_none() {
        bail!(
            "--keep-* on a backup is the retention of a scheduled set: add --sync-every (or run `strew forget --keep-*`)"
        );
    }
    let mut files = Vec::new();
    for f in &flags.exclude_file {
        files.push(absolute(f)?);
    }
    let excludes = crate::pipeline::ExcludeRules {
        patterns: flags.exclude.clone(),
        files,
        exclude_caches: flags.exclude_caches,
        one_file_system: flags.one_file_system,
    };
    crate::pipeline::exclude::Excluder::new(&excludes)?;
    let mut paths = Vec::new();
    for p in &flags.paths {
        let abs = absolute(p)?;
        if std::fs::symlink_metadata(&abs).is_err() {
            bail!("{}: no such file or directory", p.display());
        }
        paths.push(abs);
    }
    let args = BackupArgs {
        paths,
        name: flags.name.clone(),
        backup_distance: flags.backup_distance.clone(),
        spread: flags.spread.clone(),
        redundancy: flags.redundancy.clone(),
        zstd_level: flags.zstd_level,
        convergence: flags.convergence.clone(),
        sync_every,
        chunk_sizes: flags.chunk_sizes.clone(),
        job: Some(format!("job-{:016x}", rand::random::<u64>())),
        excludes,
        keep,
    };
    // Refuse bad flags here, before the daemon does any work.
    args.params().map_err(anyhow::Error::msg)?;
    args.sizes().map_err(anyhow::Error::msg)?;
    Ok(args)
}

/// Runs a long control call while showing the job's progress from
/// `progress` polls: one bar, or (`ProgressMode::Json`) one JSON line on
/// stdout about once a second.
async fn with_progress(
    data_dir: &Path,
    cmd: &str,
    args: Value,
    job: &str,
    mode: ProgressMode,
) -> anyhow::Result<Value> {
    let call = control::call(data_dir, cmd, args, LONG_CALL);
    tokio::pin!(call);
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut cancelling = false;
    let started = std::time::Instant::now();
    let mut estimator = Estimator::new(cmd == "backup");
    let mut last_line: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            result = &mut call => {
                if let Some(b) = bar { b.finish_and_clear(); }
                return result.map_err(anyhow::Error::from);
            }
            // Ctrl-C cancels the daemon's job (not only this client), then
            // waits for its answer, which says what was undone.
            _ = tokio::signal::ctrl_c(), if !cancelling => {
                cancelling = true;
                if let Some(b) = bar.take() { b.finish_and_clear(); }
                eprintln!("cancelling the {cmd} (its plans are aborted, reservations released)…");
                if let Err(e) = control::call(data_dir, "cancel", json!({"job": job}), control::QUICK_CALL).await {
                    eprintln!("could not ask the daemon to cancel: {e}");
                }
            }
            _ = tick.tick(), if mode != ProgressMode::None && !cancelling => {
                let Ok(p) = control::call(data_dir, "progress", json!({"job": job}), Duration::from_secs(5)).await else { continue };
                if p["running"] != json!(true) { continue; }
                let restore = p["kind"].as_str() == Some("restore");
                let estimate = estimator.update(Sample {
                    at_secs: started.elapsed().as_secs_f64(),
                    total: num(&p, "bytes_total"),
                    done: num(&p, if restore { "bytes_written" } else { "bytes_read" }),
                    stored: num(&p, "bytes_stored"),
                    uploaded: num(&p, "uploaded_bytes"),
                });
                match mode {
                    ProgressMode::Json => {
                        if last_line.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                            last_line = Some(std::time::Instant::now());
                            print_progress_line(&estimate)?;
                        }
                    }
                    _ => crate::progress::show(bar.get_or_insert_with(|| crate::progress::job_bar(cmd)), &estimate),
                }
            }
        }
    }
}

/// One `--progress json` line: `{"event":"progress", ...the estimate}`.
fn print_progress_line(e: &Estimate) -> anyhow::Result<()> {
    let mut v = serde_json::to_value(e)?;
    v["event"] = json!("progress");
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &v)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}

/// The result as the last `--progress json` line: `{"event":"result", ...}`.
fn print_result_line(v: &Value) -> anyhow::Result<()> {
    let mut v = v.clone();
    if v.is_object() {
        v["event"] = json!("result");
    }
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &v)?;
    writeln!(out)?;
    Ok(())
}

/// `strew backup PATH…`.
pub async fn backup(data_dir: &Path, cmd: &BackupCmd) -> anyhow::Result<()> {
    let args = backup_args(&cmd.flags, cmd.sync_every.clone(), cmd.keep.policy())?;
    let job = args.job.clone().unwrap_or_default();
    let v = with_progress(
        data_dir,
        "backup",
        serde_json::to_value(&args)?,
        &job,
        cmd.progress,
    )
    .await?;
    if cmd.progress == ProgressMode::Json {
        return print_result_line(&v);
    }
    if cmd.flags.json {
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    let stats = &v["stats"];
    writeln!(out, "snapshot  {}", v["snapshot"].as_str().unwrap_or("-"))?;
    writeln!(
        out,
        "backed up {} files, {} ({} chunks, {} of them new; manifest {} chunk(s))",
        num(stats, "files"),
        format_size(num(stats, "bytes_in")),
        num(stats, "chunks"),
        num(stats, "new_chunks"),
        num(stats, "manifest_chunks")
    )?;
    if num(stats, "excluded") > 0 {
        writeln!(
            out,
            "excluded  {} files and folders (--exclude, .strewignore, caches, other file systems)",
            num(stats, "excluded")
        )?;
    }
    writeln!(
        out,
        "sent      {} packets, {} to {} targets; {} chunks deduplicated by the grid",
        num(&v, "uploaded_packets"),
        format_size(num(&v, "uploaded_bytes")),
        v["targets"].as_array().map_or(0, Vec::len),
        num(&v, "deduplicated_chunks")
    )?;
    if let Some(paced) = v["paced_targets"].as_array().filter(|p| !p.is_empty()) {
        writeln!(
            out,
            "paced     uploads to {} target(s) at the bandwidth cap their plan gave",
            paced.len()
        )?;
    }
    if num(&v, "moved_packets") > 0 {
        writeln!(
            out,
            "moved     {} packets to other targets: uploads to {} target(s) kept failing",
            num(&v, "moved_packets"),
            v["failed_targets"].as_array().map_or(0, Vec::len)
        )?;
    }
    for f in v["failed_targets"].as_array().into_iter().flatten() {
        if num(f, "held_packets") > 0 {
            writeln!(
                out,
                "warning   target {} failed after it stored {} packets of this backup: \
                 repair rebuilds them elsewhere if it stays away",
                f["target"].as_str().unwrap_or("?"),
                num(f, "held_packets")
            )?;
        }
    }
    if num(&v, "skipped_packets") > 0 {
        writeln!(
            out,
            "resumed   {} packets an interrupted run had uploaded were not sent again",
            num(&v, "skipped_packets")
        )?;
    }
    for w in v["warnings"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "warning   {}: {}",
            w["path"].as_str().unwrap_or("?"),
            w["message"].as_str().unwrap_or("?")
        )?;
    }
    if let Some(every) = &cmd.sync_every {
        writeln!(out, "scheduled every {every} (the daemon re-runs it)")?;
    }
    Ok(())
}

/// `strew plan PATH…`.
pub async fn plan(data_dir: &Path, flags: &BackupFlags) -> anyhow::Result<()> {
    let args = backup_args(flags, None, Default::default())?;
    let v = short_call(data_dir, "plan", serde_json::to_value(&args)?).await?;
    if flags.json {
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} of input{} → about {} chunks, {} packets, {} stored ({})",
        format_size(num(&v, "input_bytes")),
        match num(&v, "unchanged_bytes") {
            0 => String::new(),
            n => format!(
                " ({} unchanged since the set's last snapshot, not sent again)",
                format_size(n)
            ),
        },
        num(&v, "estimated_chunks"),
        num(&v, "estimated_packets"),
        format_size(num(&v, "estimated_stored_bytes")),
        v["redundancy"].as_str().unwrap_or("-")
    )?;
    writeln!(
        out,
        "fits: backup distance {}, spread {}; targets:",
        v["backup_distance"].as_str().unwrap_or(".."),
        v["spread"].as_str().unwrap_or("..")
    )?;
    for t in v["targets"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {}  {}  {:>6} packets  {}  {}",
            t["node_id"].as_str().unwrap_or("-"),
            super::commands::km_text(&t["distance_km"]),
            num(t, "packets"),
            format_size(num(t, "bytes")),
            t["city"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// `strew restore SNAPSHOT DEST`.
pub async fn restore(data_dir: &Path, cmd: &RestoreCmd) -> anyhow::Result<()> {
    let dest = absolute(&cmd.dest)?;
    let job = format!("job-{:016x}", rand::random::<u64>());
    let args = json!({
        "snapshot": cmd.snapshot,
        "dest": dest,
        "overwrite": cmd.overwrite,
        "preserve_setid": cmd.preserve_setid,
        "include": cmd.include,
        "job": job,
    });
    let call = if cmd.from_grid {
        "restore_from_grid"
    } else {
        "restore"
    };
    let v = with_progress(data_dir, call, args, &job, cmd.progress).await?;
    if cmd.progress == ProgressMode::Json {
        return print_result_line(&v);
    }
    if cmd.json {
        return print_json(&v);
    }
    let r = &v["restore"];
    writeln!(
        std::io::stdout().lock(),
        "restored {} files, {} dirs, {} symlinks, {} into {} ({} packets fetched, {} fetches failed and were replaced)",
        num(r, "files"),
        num(r, "dirs"),
        num(r, "symlinks"),
        format_size(num(r, "bytes")),
        dest.display(),
        num(&v, "fetched"),
        num(&v, "failed_fetches"),
    )?;
    Ok(())
}

pub(super) async fn short_call(data_dir: &Path, cmd: &str, args: Value) -> anyhow::Result<Value> {
    Ok(control::call(data_dir, cmd, args, SHORT_CALL).await?)
}

/// `strew snapshots`.
pub async fn snapshots(data_dir: &Path, cmd: &SnapshotsCmd) -> anyhow::Result<()> {
    if cmd.from_grid {
        return super::recover_cli::snapshots_from_grid(data_dir, cmd).await;
    }
    let v = short_call(data_dir, "snapshots", json!({"name": cmd.name})).await?;
    if cmd.json {
        return print_json(&v);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<64}  {:<16} {:>24}  size",
        "snapshot", "name", "time"
    )?;
    for s in v.as_array().into_iter().flatten() {
        let time = num(s, "time");
        writeln!(
            out,
            "{:<64}  {:<16} {:>24}  {}",
            s["snapshot"].as_str().unwrap_or("-"),
            s["name"].as_str().unwrap_or("-"),
            format_time(time),
            format_size(num(s, "bytes"))
        )?;
    }
    Ok(())
}

/// Unix ms as `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn format_time(ms: u64) -> String {
    let secs = ms / 1000;
    let (y, m, d) = crate::grid::retention::civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `strew cancel [JOB]`.
pub async fn cancel(data_dir: &Path, cmd: &CancelCmd) -> anyhow::Result<()> {
    let v = short_call(data_dir, "cancel", json!({"job": cmd.job})).await?;
    if cmd.json {
        return print_json(&v);
    }
    let jobs = v["cancelled"].as_array().map_or(0, Vec::len);
    writeln!(
        std::io::stdout().lock(),
        "{}",
        if jobs == 0 {
            "no running backup to cancel".to_string()
        } else {
            format!(
                "cancelling {jobs} backup(s): their plans are aborted and reservations released"
            )
        }
    )?;
    Ok(())
}

/// `strew forget SNAPSHOT`.
pub async fn forget(data_dir: &Path, cmd: &ForgetCmd) -> anyhow::Result<()> {
    let policy = cmd.keep.policy();
    let Some(snapshot) = &cmd.snapshot else {
        return super::browse_commands::forget_by_policy(data_dir, cmd, &policy).await;
    };
    if !policy.is_empty() || cmd.dry_run {
        bail!("give either a SNAPSHOT or --keep-* rules, not both");
    }
    let v = short_call(data_dir, "forget", json!({"snapshot": snapshot})).await?;
    if cmd.json {
        return print_json(&v);
    }
    let undeleted = v["undeleted"].as_object().cloned().unwrap_or_default();
    let packets: usize = undeleted
        .values()
        .filter_map(Value::as_array)
        .map(Vec::len)
        .sum();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "forgot {}: {} packets no snapshot needs were deleted from their targets",
        v["snapshot"].as_str().unwrap_or("-"),
        num(&v, "deleted"),
    )?;
    if packets > 0 {
        let until = v["retry_until"]
            .as_u64()
            .map_or("their delete tickets expire".to_string(), |ms| {
                format_time(ms)
            });
        writeln!(
            out,
            "{packets} packet(s) on {} target(s) that could not be reached now will be deleted later: \
             this node retries every minute until {until}; the snapshot is forgotten either way",
            undeleted.len()
        )?;
    }
    if v["more_collected_by_leader"].as_bool() == Some(true) {
        writeln!(
            out,
            "more packets were freed than one answer carries: the coordinator group's leader \
             deletes the rest from their targets (`collection_queue` in its `strew status --json`)"
        )?;
    }
    Ok(())
}

/// `strew key export|import`.
pub fn key(data_dir: &Path, cmd: &KeyCmd) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        KeyCmd::Export { file, force } => {
            if file.exists() && !force {
                bail!(
                    "{} exists (it may hold another key); choose another FILE or pass --force to replace it",
                    file.display()
                );
            }
            let node = crate::keys::export(data_dir, file)?;
            writeln!(out, "exported the key of node {node} to {}", file.display())?;
            eprintln!("warning: {}", crate::keys::SAFETY_WARNING);
        }
        KeyCmd::Import { file } => {
            let node = crate::keys::import(data_dir, file)?;
            writeln!(
                out,
                "imported node {node} into {}; start it with `strew run` and restore with `strew restore`",
                data_dir.display()
            )?;
        }
    }
    Ok(())
}

/// `strew status [--json] [--map FILE.svg]`.
pub async fn status(data_dir: &Path, cmd: &StatusCmd) -> anyhow::Result<()> {
    let mut v = control::call(data_dir, "status", Value::Null, control::QUICK_CALL).await?;
    // Where this node's packets are (needs the manager; say so if it is unreachable).
    match short_call(data_dir, "placements", Value::Null).await {
        Ok(p) => v["snapshots"] = p,
        Err(e) => v["snapshots_error"] = json!(format!("{e:#}")),
    }
    // Stripes the grid's repair checker has queued (the manager knows).
    if let Ok(m) = short_call(data_dir, "manager", Value::Null).await {
        v["repairs_pending"] = m["repairs_pending"].clone();
    }
    if let Some(map) = &cmd.map {
        write_map(&v, map)?;
    }
    if cmd.json {
        return print_json(&v);
    }
    super::commands::print_status(&v)?;
    let mut out = std::io::stdout().lock();
    if let Some(e) = v["snapshots_error"].as_str() {
        writeln!(out, "snapshots unknown: {e}")?;
    }
    if let Some(pending) = v["repairs_pending"].as_u64() {
        writeln!(
            out,
            "repairs   {pending} stripe(s) of the grid waiting for repair"
        )?;
    }
    for s in v["snapshots"].as_array().into_iter().flatten() {
        let h = &s["health"];
        let health = if num(h, "lost") > 0 {
            format!("LOST {} of {} stripes", num(h, "lost"), num(h, "stripes"))
        } else if num(h, "degraded") > 0 {
            format!(
                "DEGRADED: {} of {} stripes miss packets",
                num(h, "degraded"),
                num(h, "stripes")
            )
        } else {
            format!("healthy ({} stripes)", num(h, "stripes"))
        };
        writeln!(
            out,
            "snapshot  {} {} {} on {} targets, {health}:",
            s["snapshot"].as_str().unwrap_or("-"),
            s["name"].as_str().unwrap_or("-"),
            format_size(num(s, "bytes")),
            s["targets"].as_array().map_or(0, Vec::len)
        )?;
        for t in s["targets"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "          {} {} {:>5} packets {} {}",
                t["node_id"].as_str().unwrap_or("-"),
                super::commands::km_text(&t["distance_km"]),
                num(t, "packets"),
                if t["up"] == json!(true) { "up" } else { "DOWN" },
                t["city"].as_str().unwrap_or("")
            )?;
        }
    }
    if let Some(map) = &cmd.map {
        writeln!(out, "map       {}", map.display())?;
    }
    Ok(())
}

/// Draws the status's source and targets (all snapshots together) to `path`.
pub fn write_map(status: &Value, path: &Path) -> anyhow::Result<()> {
    let svg = status_map_svg(status)?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The map of a status (with its `snapshots`) as SVG: this node and the
/// targets of all its snapshots (the CLI's `--map` and the dashboard draw the same).
pub fn status_map_svg(status: &Value) -> Result<String, crate::map::MapError> {
    use crate::map::{MapInput, MapSource, MapTarget, cities_from, render_svg};
    use std::collections::BTreeMap;
    let lat = status["location"]["lat"].as_f64().unwrap_or(0.0);
    let lon = status["location"]["lon"].as_f64().unwrap_or(0.0);
    let mut targets: BTreeMap<String, MapTarget> = BTreeMap::new();
    let snapshots: Vec<&Value> = status["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    // One ring only when every snapshot was made under the same bounds.
    let bounds = |s: &Value| {
        (
            s["backup_distance_km"]["min"].as_f64(),
            s["backup_distance_km"]["max"].as_f64(),
            s["spread_min_km"].as_f64(),
        )
    };
    let first = snapshots.first().map(|s| bounds(s));
    let same = snapshots.iter().all(|s| Some(bounds(s)) == first);
    let (min_km, max_km, spread) = match first {
        Some(b) if same => b,
        _ => (None, None, None),
    };
    for s in &snapshots {
        for t in s["targets"].as_array().into_iter().flatten() {
            let (Some(tlat), Some(tlon)) =
                (t["location"]["lat"].as_f64(), t["location"]["lon"].as_f64())
            else {
                continue;
            };
            let id = t["node_id"].as_str().unwrap_or("?").to_string();
            let entry = targets.entry(id.clone()).or_insert(MapTarget {
                lat: tlat,
                lon: tlon,
                // Peer ids all start alike (`12D3KooW…`): their tails tell
                // them apart; the nearest city says where they are.
                label: t["label"].as_str().map(str::to_string).unwrap_or_else(|| {
                    let tail: String = id.chars().rev().take(6).collect();
                    let tail: String = tail.chars().rev().collect();
                    match t["city"].as_str() {
                        Some(city) => format!("{city} …{tail}"),
                        None => format!("…{tail}"),
                    }
                }),
                packets: 0,
                up: t["up"] == json!(true),
            });
            entry.packets += num(t, "packets");
        }
    }
    let cities = strew_coordinator::cities::CityTable::embedded()
        .map(cities_from)
        .unwrap_or_default();
    let node = status["node_id"].as_str().unwrap_or("this node");
    let svg = render_svg(&MapInput {
        title: match snapshots.len() {
            1 => format!(
                "Where the packets of {} are (1 snapshot)",
                &node[..node.len().min(12)]
            ),
            n => format!(
                "Where the packets of {} are: all {n} snapshots, packets summed{}",
                &node[..node.len().min(12)],
                if same {
                    ""
                } else {
                    "; their distance bounds differ, no ring drawn"
                }
            ),
        },
        source: MapSource {
            lat,
            lon,
            label: "this node".into(),
        },
        targets: targets.into_values().collect(),
        min_km,
        max_km,
        spread_min_km: spread,
        cities,
    })?;
    Ok(svg)
}
