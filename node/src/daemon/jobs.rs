//! The source side of a running node as control commands: `backup`,
//! `restore`, `snapshots`, `forget` (one snapshot, or by a `--keep-*`
//! policy), `plan`, `progress`, `jobs` and `sets` (`ls`, `find` and `diff`
//! are [`browse`](super::browse)'s).
//!
//! Owns the node's source resources (the packet outbox, the known-chunk
//! index, the convergence secrets), the request arguments as the CLI sends
//! them (JSON, parsed here with the coordinator's unit parsers so a bad flag
//! gets a message naming it), live progress per job, and the scheduled
//! backup sets (`--sync-every`, see [`schedule`](super::schedule)). The
//! work itself is [`crate::grid`]'s, over the overlay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use strew_coordinator::manager::{ChunkPlan, PacketSpec, PlanRequest};
use strew_coordinator::records::{BackupParams, Compression, ConvergenceScope, Encryption};
use strew_coordinator::{DataId, DistanceRange, GeoPoint, NodeId, Redundancy, SnapshotId};
use tracing::{info, warn};

mod check;
mod roots;
mod where_to;

use super::schedule::{BackupSet, SetBook};
use super::{CommandError, ControlFuture, DaemonContext, DaemonExtension};
use crate::grid::{
    GridBackupOptions, KnownIndex, ManagerApi, OverlayManager, OverlayTransport, SourceIdentity,
    grid_backup, grid_forget, grid_restore,
};
use crate::grid::{KeepPolicy, apply_retention};
use crate::pipeline::{
    ChunkSizes, ConvergenceSecret, ExcludeRules, Progress, RestoreKeys, RestoreOptions,
    RestoreProgress,
};
use crate::store::PacketStore;

/// Directory of the outbox (packets of backups not yet committed).
pub const OUTBOX_DIR: &str = "outbox";
/// The known-chunk index file.
pub const KNOWN_FILE: &str = "known-chunks.redb";
/// How long `status` waits for the manager before saying it is unreachable.
const STATUS_PATIENCE: std::time::Duration = std::time::Duration::from_secs(5);
/// Packets uploaded at once by one backup.
const PARALLEL_UPLOADS: usize = 16;

/// What `strew backup` (and `strew plan`) send.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupArgs {
    /// Absolute paths (the CLI resolves them against its working directory).
    pub paths: Vec<PathBuf>,
    #[serde(default = "default_set")]
    pub name: String,
    #[serde(default)]
    pub backup_distance: Option<String>,
    #[serde(default)]
    pub spread: Option<String>,
    #[serde(default)]
    pub redundancy: Option<String>,
    #[serde(default)]
    pub zstd_level: Option<i32>,
    /// `grid` (default) or `private`.
    #[serde(default)]
    pub convergence: Option<String>,
    #[serde(default)]
    pub sync_every: Option<String>,
    /// Chunk sizes `MIN/AVG/MAX` in bytes.
    #[serde(default)]
    pub chunk_sizes: Option<String>,
    /// A name the CLI picked to follow this job's progress.
    #[serde(default)]
    pub job: Option<String>,
    /// What the backup leaves out.
    #[serde(default)]
    pub excludes: ExcludeRules,
    /// Retention applied to the set after each scheduled run (`--keep-*` next to `--sync-every`).
    #[serde(default)]
    pub keep: KeepPolicy,
}

fn default_set() -> String {
    "default".into()
}

impl BackupArgs {
    /// The backup parameters these flags name, or a message naming the bad flag.
    pub fn params(&self) -> Result<BackupParams, String> {
        let range = |flag: &str, text: &Option<String>| -> Result<DistanceRange, String> {
            match text {
                None => Ok(DistanceRange::default()),
                Some(t) => t.parse().map_err(|e| format!("--{flag} {t:?}: {e}")),
            }
        };
        let redundancy: Redundancy = match &self.redundancy {
            None => Redundancy::Erasure { k: 4, m: 2 },
            Some(t) => t.parse().map_err(|e| format!("--redundancy {t:?}: {e}"))?,
        };
        redundancy
            .validate()
            .map_err(|e| format!("--redundancy: {e}"))?;
        let level = self.zstd_level.unwrap_or(3);
        if !(1..=19).contains(&level) {
            return Err(format!("--zstd-level {level}: must be 1..=19"));
        }
        let convergence = match self.convergence.as_deref() {
            None | Some("grid") => ConvergenceScope::Grid,
            Some("private") => ConvergenceScope::Private,
            Some(other) => {
                return Err(format!(
                    "--convergence {other:?}: must be `grid` or `private`"
                ));
            }
        };
        let sync_interval_secs = match &self.sync_every {
            None => None,
            Some(t) if t.eq_ignore_ascii_case("off") => None,
            Some(t) => {
                let d = strew_coordinator::units::parse_duration(t)
                    .map_err(|e| format!("--sync-every {t:?}: {e}"))?;
                if d.as_secs() < 10 {
                    return Err(format!("--sync-every {t:?}: must be at least 10s"));
                }
                Some(d.as_secs())
            }
        };
        Ok(BackupParams {
            backup_distance: range("backup-distance", &self.backup_distance)?,
            spread: range("spread", &self.spread)?,
            redundancy,
            compression: Compression::Zstd { level },
            encryption: Encryption {
                cipher: "chacha20poly1305".into(),
                convergence,
            },
            sync_interval_secs,
        })
    }

    /// Chunk sizes from `--chunk-sizes`, or the defaults.
    pub fn sizes(&self) -> Result<ChunkSizes, String> {
        match &self.chunk_sizes {
            None => Ok(ChunkSizes::default()),
            Some(t) => {
                crate::bench::parse_sizes(t).map_err(|e| format!("--chunk-sizes {t:?}: {e}"))
            }
        }
    }
}

/// A running job's live counters.
#[derive(Clone)]
pub(super) enum Live {
    Backup {
        progress: Arc<Progress>,
        total: u64,
        set: String,
        started: std::time::Instant,
    },
    Restore(Arc<RestoreProgress>, std::time::Instant),
}

/// Waits a few seconds for the sequence manager to be known (right after
/// joining, the coordinators are asked who leads); then says what is known.
async fn wait_for_manager(ctx: &DaemonContext) -> Result<(), CommandError> {
    for _ in 0..25 {
        if ctx.overlay.manager().is_some() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let coordinators = ctx
        .overlay
        .peers()
        .iter()
        .filter(|p| p.coordinator_eligible)
        .count();
    Err(CommandError::NoManager(if coordinators == 0 {
        "no sequence manager is known yet: no coordinator node is in the grid view".into()
    } else {
        format!(
            "no sequence manager is known yet: {coordinators} coordinator node(s) in the grid view, none answered who leads (no quorum yet?); try again shortly"
        )
    }))
}

/// Lower-case hex of 32 bytes.
fn hex_text(bytes: [u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How often deletes that could not be done at `forget` are tried again.
const DELETE_RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Tries the deletes of unreachable targets again until they are done or
/// their tickets expire (`until`, Unix ms).
async fn retry_deletes(
    manager: OverlayManager,
    transport: OverlayTransport,
    retry: crate::grid::Cleanup,
    until: u64,
) {
    while strew_overlay::now_ms() + DELETE_RETRY_EVERY.as_millis() as u64 <= until {
        tokio::time::sleep(DELETE_RETRY_EVERY).await;
        let report = crate::grid::clean_up(&manager, &transport, retry.clone()).await;
        if report.failed == 0 {
            info!(
                deleted = report.deleted,
                "freed packets deleted from targets that came back"
            );
            return;
        }
    }
    warn!(
        "some freed packets stay on targets that did not come back before their delete tickets expired"
    );
}

/// How this node's own snapshots stand.
#[derive(Debug, Clone, Copy, Default)]
pub struct BackupHealth {
    pub snapshots: u64,
    pub degraded: u64,
    pub unreachable_targets: u64,
}

/// Journals of running backups, in the data dir (see [`crate::grid::journal`]).
pub const JOURNAL_DIR: &str = "journal";

/// The node's source side.
pub struct SourceJobs {
    pub(super) me: SourceIdentity,
    outbox: PacketStore,
    known: KnownIndex,
    pub(super) private: ConvergenceSecret,
    /// Where `grid-convergence.key` is looked for (read at each use: it
    /// may arrive after the node started, when it joins a grid).
    pub(super) data_dir: PathBuf,
    sets: Arc<SetBook>,
    /// One backup at a time per node (they share the outbox and the index).
    backup_lock: tokio::sync::Mutex<()>,
    pub(super) live: Mutex<HashMap<String, Live>>,
    /// Bytes of unreceipted packets a backup stages in the outbox at most.
    staging_limit: u64,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Errors of opening the source side.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("cannot open the outbox in {0}")]
    Outbox(PathBuf, #[source] crate::store::StoreError),
    #[error("cannot open the known-chunk index {0}")]
    Known(PathBuf, #[source] redb::Error),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error(transparent)]
    Sets(#[from] super::schedule::ScheduleError),
}

impl SourceJobs {
    pub fn open(data_dir: &Path, me: SourceIdentity) -> Result<Self, JobsError> {
        let outbox_dir = data_dir.join(OUTBOX_DIR);
        let outbox = PacketStore::open(&outbox_dir, u64::MAX / 4)
            .map_err(|e| JobsError::Outbox(outbox_dir.clone(), e))?;
        let known_path = data_dir.join(KNOWN_FILE);
        let known = KnownIndex::open(&known_path).map_err(|e| JobsError::Known(known_path, e))?;
        Ok(SourceJobs {
            me,
            outbox,
            known,
            private: crate::keys::private_secret(data_dir)?,
            data_dir: data_dir.to_path_buf(),
            sets: Arc::new(SetBook::open(data_dir)?),
            backup_lock: tokio::sync::Mutex::new(()),
            live: Mutex::new(HashMap::new()),
            staging_limit: crate::grid::stream::DEFAULT_STAGING_LIMIT,
        })
    }

    /// Sets `staging_limit` (config key, `STREW_STAGING_LIMIT`).
    pub fn with_staging_limit(mut self, limit: u64) -> Self {
        self.staging_limit = limit;
        self
    }

    pub fn sets(&self) -> &Arc<SetBook> {
        &self.sets
    }

    /// The outbox (packets of backups not yet committed).
    pub fn outbox(&self) -> &PacketStore {
        &self.outbox
    }

    /// The health of this node's own snapshots now (for metrics), or `None`
    /// when no sequence manager answers.
    pub async fn health(&self, ctx: &DaemonContext) -> Option<BackupHealth> {
        let list = self.placements(ctx).await.ok()?;
        let mut h = BackupHealth::default();
        let mut unreachable = std::collections::BTreeSet::new();
        for s in list.as_array().into_iter().flatten() {
            h.snapshots += 1;
            let mut degraded = false;
            for t in s["targets"].as_array().into_iter().flatten() {
                if t["up"] != json!(true) {
                    degraded = true;
                    unreachable.insert(t["node_id"].as_str().unwrap_or_default().to_string());
                }
            }
            h.degraded += u64::from(degraded);
        }
        h.unreachable_targets = unreachable.len() as u64;
        Some(h)
    }

    fn secret(&self, params: &BackupParams) -> ConvergenceSecret {
        match params.encryption.convergence {
            ConvergenceScope::Grid => self.grid().unwrap_or_else(|| {
                warn!(
                    file = crate::keys::GRID_SECRET_FILE,
                    "this node has no grid convergence secret: the grid-scope set is keyed under \
                     the private secret (no dedup with other sources)"
                );
                self.private.clone()
            }),
            ConvergenceScope::Private => self.private.clone(),
        }
    }

    /// The grid's convergence secret, if this node was given one.
    fn grid(&self) -> Option<ConvergenceSecret> {
        crate::keys::grid_secret(&self.data_dir).unwrap_or_else(|err| {
            warn!(%err, "ignoring the grid convergence secret file");
            None
        })
    }

    /// The secrets a restore (or a manifest read) of this node's snapshots uses.
    pub(super) fn restore_keys(&self) -> RestoreKeys {
        RestoreKeys {
            owner: self.private.clone(),
            data: self.grid().into_iter().collect(),
        }
    }

    /// Runs one backup by hand (`strew backup`): always a new snapshot.
    pub async fn backup(
        &self,
        ctx: &DaemonContext,
        args: &BackupArgs,
    ) -> Result<Value, CommandError> {
        self.run_backup(ctx, args, false).await
    }

    /// Runs a scheduled set: an unchanged tree makes no new snapshot (the
    /// answer names the previous one, with `"unchanged": true`).
    pub async fn backup_scheduled(
        &self,
        ctx: &DaemonContext,
        args: &BackupArgs,
    ) -> Result<Value, CommandError> {
        self.run_backup(ctx, args, true).await
    }

    async fn run_backup(
        &self,
        ctx: &DaemonContext,
        args: &BackupArgs,
        skip_if_unchanged: bool,
    ) -> Result<Value, CommandError> {
        let params = args.params().map_err(CommandError::BadArguments)?;
        let sizes = args.sizes().map_err(CommandError::BadArguments)?;
        if let Some(path) = args.paths.iter().find(|p| !p.is_absolute()) {
            return Err(CommandError::BadArguments(format!(
                "{}: paths must be absolute",
                path.display()
            )));
        }
        all_exist(args.paths.clone()).await?;
        let _one_at_a_time = self.backup_lock.lock().await;
        let paths = args.paths.clone();
        let rules = args.excludes.clone();
        let total = tokio::task::spawn_blocking(move || tree_bytes(&paths, &rules))
            .await
            .unwrap_or(0);
        let progress = Arc::new(Progress::default());
        let job = args.job.clone().unwrap_or_default();
        lock(&self.live).insert(
            job.clone(),
            Live::Backup {
                progress: progress.clone(),
                total,
                set: args.name.clone(),
                started: std::time::Instant::now(),
            },
        );
        let opts = GridBackupOptions {
            set: args.name.clone(),
            paths: args.paths.clone(),
            params: params.clone(),
            sizes,
            secret: self.secret(&params),
            owner: self.private.clone(),
            now_ms: strew_overlay::now_ms(),
            parallel_uploads: PARALLEL_UPLOADS,
            previous: if skip_if_unchanged {
                self.sets.previous_tree(&args.name)
            } else {
                None
            },
            excludes: args.excludes.clone(),
            staging_limit: self.staging_limit,
            journal_dir: Some(self.data_dir.join(JOURNAL_DIR)),
        };
        let manager = OverlayManager::new(ctx.overlay.clone());
        let transport = OverlayTransport::new(ctx.overlay.clone());
        let result = grid_backup(
            &self.me,
            &manager,
            &transport,
            &self.outbox,
            &self.known,
            &opts,
            progress,
        )
        .await;
        lock(&self.live).remove(&job);
        let mut report = result?;
        if report.unchanged {
            info!(snapshot = %report.snapshot, set = %args.name, "backup: tree unchanged, no new snapshot");
        } else {
            info!(snapshot = %report.snapshot, set = %args.name, "backup committed");
        }
        // Issue 18: the snapshot's root, kept so it outlives the coordinators;
        // a failure is a warning, never a failed backup.
        let (mut root_copies, mut root_parts) = (0, 0);
        let root_warning = if report.unchanged {
            None
        } else {
            let listing = crate::grid::roots::RootListing {
                snapshot: report.snapshot,
                set: args.name.clone(),
                time_ms: opts.now_ms,
                bytes: report.stats.bytes_in,
                params: params.clone(),
            };
            let kept = crate::grid::roots::keep_root(
                &manager,
                &ctx.overlay,
                &self.me,
                &self.private,
                &self.data_dir,
                listing,
            )
            .await;
            match kept {
                Ok(k) if k.copies == 0 => {
                    Some("the snapshot root is kept locally only: no target took a copy".into())
                }
                Ok(k) => {
                    (root_copies, root_parts) = (k.copies, k.ids.len());
                    None
                }
                Err(err) => {
                    tracing::warn!(%err, "backup: no snapshot root kept");
                    Some(crate::grid::error_text(&err))
                }
            }
        };
        // Leftovers are tidied in the background: the backup is done, and the
        // next job must not wait for targets that may be gone.
        let cleanup = std::mem::take(&mut report.cleanup);
        tokio::spawn(async move {
            crate::grid::clean_up(&manager, &transport, cleanup).await;
        });
        ctx.overlay.reannounce();
        // Every set is remembered (its distances label the status map); only
        // those with `--sync-every` are re-run by the scheduler.
        // A run by hand keeps the set's schedule unless it names one
        // (`--sync-every off` switches it off).
        // Its retention policy likewise, unless the run names one.
        let existing = self
            .sets
            .list()
            .into_iter()
            .find(|s| s.args.name == args.name);
        let sync_every = match &args.sync_every {
            Some(t) if t.eq_ignore_ascii_case("off") => None,
            Some(t) => Some(t.clone()),
            None => existing.as_ref().and_then(|s| s.args.sync_every.clone()),
        };
        let keep = match &existing {
            Some(s) if args.keep.is_empty() && args.sync_every.is_none() => s.args.keep,
            _ => args.keep,
        };
        let set = BackupSet {
            args: BackupArgs {
                job: None,
                sync_every,
                keep,
                ..args.clone()
            },
            last_run_ms: opts.now_ms,
            last_snapshot: Some(report.snapshot.to_string()),
            last_tree: report.tree.map(hex_text),
            last_error: None,
        };
        let sets = self.sets.clone();
        tokio::task::spawn_blocking(move || sets.upsert(set))
            .await
            .map_err(|e| CommandError::task("backup sets", e))??;
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        value["snapshot"] = json!(report.snapshot.to_string());
        value["root_copies"] = json!(root_copies);
        value["root_parts"] = json!(root_parts);
        if let Some(w) = root_warning {
            value["root_warning"] = json!(w);
        }
        // NodeIds as their text, as everywhere else in the JSON answers.
        value["targets"] = json!(
            report
                .targets
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
        );
        Ok(value)
    }

    async fn restore(&self, ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let args = RestoreArgs::parse(args)?;
        let snapshot = resolve_snapshot(ctx, &args.snapshot).await?;
        let progress = Arc::new(RestoreProgress::default());
        let job = args.job.unwrap_or_default();
        lock(&self.live).insert(
            job.clone(),
            Live::Restore(progress.clone(), std::time::Instant::now()),
        );
        let manager = OverlayManager::new(ctx.overlay.clone());
        let transport = Arc::new(OverlayTransport::new(ctx.overlay.clone()));
        // The grid's convergence secret first, then this user's private one.
        let result = grid_restore(
            &self.me,
            &manager,
            transport,
            snapshot,
            args.dest.clone(),
            self.restore_keys(),
            RestoreOptions {
                overwrite: args.overwrite,
                preserve_setid: args.preserve_setid,
                include: args.include,
            },
            progress,
        )
        .await;
        lock(&self.live).remove(&job);
        let report = result?;
        if report.failed_fetches > 0 {
            warn!(
                failed = report.failed_fetches,
                "some packets could not be fetched or were corrupt; other packets of their stripes were used"
            );
        }
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        value["snapshot"] = json!(report.snapshot.to_string());
        Ok(value)
    }

    async fn snapshots(&self, ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let set = args.get("name").and_then(Value::as_str).map(str::to_string);
        let manager = OverlayManager::new(ctx.overlay.clone());
        let list = manager.list(set).await?;
        Ok(Value::Array(
            list.iter()
                .map(|s| {
                    json!({
                        "snapshot": s.snapshot.to_string(),
                        "name": s.set,
                        "time": s.time,
                        "bytes": s.bytes,
                        "chunks": s.chunks,
                        "source": s.source.to_string(),
                    })
                })
                .collect(),
        ))
    }

    async fn forget(&self, ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        if let Some(policy) = args.get("keep") {
            let policy: KeepPolicy = serde_json::from_value(policy.clone())
                .map_err(|e| CommandError::BadArguments(format!("bad --keep-* arguments: {e}")))?;
            let set = args.get("name").and_then(Value::as_str).map(str::to_string);
            let dry_run = args
                .get("dry_run")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            return self.retention(ctx, &policy, set, dry_run).await;
        }
        let text = args
            .get("snapshot")
            .and_then(Value::as_str)
            .ok_or_else(|| CommandError::BadArguments("forget needs a snapshot".into()))?;
        let snapshot = resolve_snapshot(ctx, text).await?;
        let manager = OverlayManager::new(ctx.overlay.clone());
        let transport = OverlayTransport::new(ctx.overlay.clone());
        let _no_backup_meanwhile = self.backup_lock.lock().await;
        let mut report = grid_forget(&manager, &transport, &self.known, snapshot).await?;
        let (sets, text) = (self.sets.clone(), snapshot.to_string());
        match tokio::task::spawn_blocking(move || sets.forgotten(&text)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!(%e, "cannot update the backup sets after forget"),
            Err(e) => warn!(%e, "backup sets task failed"),
        }
        let retry = std::mem::take(&mut report.retry);
        if let Some(until) = report.retry_until {
            tokio::spawn(retry_deletes(manager, transport, retry, until));
        }
        let roots = self.drop_roots(ctx, &[snapshot]).await;
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        value["snapshot"] = json!(report.snapshot.to_string());
        value["root_copies_dropped"] = json!(roots);
        Ok(value)
    }

    /// Applies a `--keep-*` policy (to one set or all), forgetting through the forget path.
    pub async fn retention(
        &self,
        ctx: &DaemonContext,
        policy: &KeepPolicy,
        set: Option<String>,
        dry_run: bool,
    ) -> Result<Value, CommandError> {
        if policy.is_empty() {
            return Err(CommandError::BadArguments(
                "give a SNAPSHOT or at least one --keep-* rule".into(),
            ));
        }
        let manager = OverlayManager::new(ctx.overlay.clone());
        let transport = OverlayTransport::new(ctx.overlay.clone());
        let _no_backup_meanwhile = self.backup_lock.lock().await;
        let report =
            apply_retention(&manager, &transport, &self.known, policy, set, dry_run).await?;
        let forgotten: Vec<SnapshotId> = if dry_run {
            Vec::new()
        } else {
            report
                .remove
                .iter()
                .filter_map(|d| d.snapshot.parse().ok())
                .collect()
        };
        let roots = self.drop_roots(ctx, &forgotten).await;
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        value["root_copies_dropped"] = json!(roots);
        Ok(value)
    }

    /// Cancels the running backup `job`, or every running backup.
    fn cancel(&self, args: &Value) -> Value {
        let only = args.get("job").and_then(Value::as_str);
        let mut cancelled = Vec::new();
        for (job, live) in lock(&self.live).iter() {
            if let Live::Backup { progress, .. } = live
                && only.is_none_or(|j| j == job)
            {
                progress.cancel();
                cancelled.push(job.clone());
            }
        }
        if !cancelled.is_empty() {
            info!(?cancelled, "backup cancelled on request");
        }
        json!({ "cancelled": cancelled })
    }

    fn progress(&self, args: &Value) -> Result<Value, CommandError> {
        let job = args.get("job").and_then(Value::as_str).unwrap_or_default();
        let live = lock(&self.live).get(job).cloned();
        Ok(match live {
            None => json!({"running": false}),
            Some(live) => live_json(&live),
        })
    }

    /// Every running backup and restore with its progress (the dashboard's list).
    fn jobs(&self) -> Value {
        let live: Vec<(String, Live)> = lock(&self.live)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Value::Array(
            live.iter()
                .map(|(job, l)| {
                    let mut v = live_json(l);
                    v["job"] = json!(job);
                    v
                })
                .collect(),
        )
    }
}

/// A running job's counters, with its rate (bytes/s) and ETA (s) when known.
fn live_json(live: &Live) -> Value {
    let (mut v, done, total, started) = match live {
        Live::Backup {
            progress,
            total,
            set,
            started,
        } => {
            let read = progress.bytes_read.load(Ordering::Relaxed);
            (
                json!({
                    "running": true,
                    "kind": "backup",
                    "name": set,
                    "bytes_total": total,
                    "bytes_read": read,
                    "bytes_stored": progress.bytes_stored.load(Ordering::Relaxed),
                    "uploaded_bytes": progress.uploaded_bytes.load(Ordering::Relaxed),
                }),
                read,
                *total,
                started,
            )
        }
        Live::Restore(p, started) => {
            let (written, total) = (
                p.bytes_written.load(Ordering::Relaxed),
                p.total_bytes.load(Ordering::Relaxed),
            );
            (
                json!({
                    "running": true,
                    "kind": "restore",
                    "bytes_total": total,
                    "bytes_written": written,
                }),
                written,
                total,
                started,
            )
        }
    };
    let secs = started.elapsed().as_secs_f64();
    v["elapsed_secs"] = json!(secs);
    if secs > 0.0 && done > 0 {
        let rate = done as f64 / secs;
        v["rate_bytes_per_sec"] = json!(rate);
        v["eta_secs"] = json!((total.saturating_sub(done)) as f64 / rate);
    }
    v
}

impl SourceJobs {}

/// Bytes of regular files under `paths` that the backup will read (excludes
/// applied), for progress and `plan`; unreadable parts count 0.
fn tree_bytes(paths: &[PathBuf], rules: &ExcludeRules) -> u64 {
    use crate::pipeline::exclude::Excluder;
    fn walk(path: &Path, ex: &mut Excluder) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if ex.excluded(path, &meta).is_some() {
            return 0;
        }
        if meta.is_file() {
            return meta.len();
        }
        if !meta.is_dir() {
            return 0;
        }
        ex.enter_dir(path);
        let Ok(entries) = std::fs::read_dir(path) else {
            return 0;
        };
        entries.flatten().map(|e| walk(&e.path(), ex)).sum()
    }
    // Bad rules are refused by the backup itself; the estimate goes on without them.
    let mut ex = Excluder::new(rules).unwrap_or_default();
    let mut total = 0;
    for root in paths {
        if let Ok(meta) = std::fs::symlink_metadata(root) {
            ex.enter_root(root, &meta);
            total += walk(root, &mut ex);
        }
    }
    total
}

/// Refuses the first of `paths` that does not exist (checked off the async workers).
async fn all_exist(paths: Vec<PathBuf>) -> Result<(), CommandError> {
    let missing = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .find(|p| std::fs::symlink_metadata(p).is_err())
    })
    .await
    .map_err(|e| CommandError::task("path check", e))?;
    match missing {
        Some(path) => Err(CommandError::NotFound(format!(
            "{}: no such file or directory",
            path.display()
        ))),
        None => Ok(()),
    }
}

/// A snapshot id in full, or a unique prefix of one of this node's snapshots.
pub(super) async fn resolve_snapshot(
    ctx: &DaemonContext,
    text: &str,
) -> Result<SnapshotId, CommandError> {
    if let Ok(id) = text.parse::<SnapshotId>() {
        return Ok(id);
    }
    if text.len() < 4 || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(CommandError::BadArguments(format!(
            "{text:?} is not a snapshot id (64 hex digits, or a unique prefix of at least 4; see `strew snapshots`)"
        )));
    }
    let manager = OverlayManager::new(ctx.overlay.clone());
    let list = manager.list(None).await?;
    let lower = text.to_ascii_lowercase();
    let matches: Vec<SnapshotId> = list
        .iter()
        .map(|s| s.snapshot)
        .filter(|s| s.to_string().starts_with(&lower))
        .collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(CommandError::NotFound(format!(
            "no snapshot of this node starts with {text:?} (see `strew snapshots`)"
        ))),
        _ => Err(CommandError::BadArguments(format!(
            "{text:?} names {} snapshots; give more digits",
            matches.len()
        ))),
    }
}

impl DaemonExtension for SourceJobs {
    fn handle<'a>(
        &'a self,
        ctx: &'a DaemonContext,
        cmd: &'a str,
        args: Value,
    ) -> Option<ControlFuture<'a>> {
        let parse = |args: Value| -> Result<BackupArgs, CommandError> {
            serde_json::from_value(args)
                .map_err(|e| CommandError::BadArguments(format!("bad backup arguments: {e}")))
        };
        Some(match cmd {
            "backup" => Box::pin(async move { self.backup(ctx, &parse(args)?).await }),
            "plan" => Box::pin(async move { self.plan(ctx, parse(args)?).await }),
            "restore" => Box::pin(self.restore(ctx, args)),
            "snapshots" => Box::pin(self.snapshots(ctx, args)),
            "snapshots_from_grid" => Box::pin(self.snapshots_from_grid(ctx)),
            "restore_from_grid" => Box::pin(self.restore_from_grid(ctx, args)),
            "forget" => Box::pin(self.forget(ctx, args)),
            "progress" => Box::pin(async move { self.progress(&args) }),
            "cancel" => Box::pin(async move { Ok(self.cancel(&args)) }),
            "jobs" => Box::pin(async move { Ok(self.jobs()) }),
            "ls" => Box::pin(self.ls(ctx, args)),
            "find" => Box::pin(self.find(ctx, args)),
            "diff" => Box::pin(self.diff(ctx, args)),
            "placements" => Box::pin(self.placements(ctx)),
            "check" => Box::pin(self.check(ctx, args)),
            "manager" => Box::pin(async move {
                if ctx.overlay.manager().is_none() {
                    return Err(CommandError::NoManager(
                        "no sequence manager is known yet".into(),
                    ));
                }
                let manager =
                    OverlayManager::new(ctx.overlay.clone()).with_patience(STATUS_PATIENCE);
                let info = manager.info().await?;
                Ok(json!({
                    "manager": info.manager.to_string(),
                    "nodes": info.nodes,
                    "online": info.online,
                    "snapshots": info.snapshots,
                    "stored_bytes": info.stored_bytes,
                    "repairs_pending": info.repairs_pending,
                }))
            }),
            "sets" => Box::pin(async move {
                serde_json::to_value(self.sets.list()).map_err(CommandError::json)
            }),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_leaves_out_what_the_backup_excludes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("home");
        std::fs::create_dir_all(root.join("node_modules")).unwrap();
        std::fs::write(root.join("keep.txt"), [1u8; 1000]).unwrap();
        std::fs::write(root.join("skip.log"), [1u8; 500]).unwrap();
        std::fs::write(root.join("node_modules/x.js"), [1u8; 300]).unwrap();
        std::fs::write(root.join(".strewignore"), "*.log\n").unwrap();
        let paths = vec![root];
        assert_eq!(tree_bytes(&paths, &ExcludeRules::default()), 1000 + 300 + 6);
        let rules = ExcludeRules {
            patterns: vec!["node_modules".into()],
            ..ExcludeRules::default()
        };
        assert_eq!(tree_bytes(&paths, &rules), 1000 + 6);
    }

    #[test]
    fn a_running_backup_reports_its_rate_and_eta() {
        let progress = Arc::new(Progress::default());
        progress.bytes_read.store(200, Ordering::Relaxed);
        let started = std::time::Instant::now()
            .checked_sub(std::time::Duration::from_secs(2))
            .unwrap_or_else(std::time::Instant::now);
        let v = live_json(&Live::Backup {
            progress,
            total: 1000,
            set: "home".into(),
            started,
        });
        assert_eq!(v["kind"], "backup");
        assert_eq!(v["name"], "home");
        let rate = v["rate_bytes_per_sec"].as_f64().unwrap();
        assert!((90.0..=100.0).contains(&rate), "{v}");
        let eta = v["eta_secs"].as_f64().unwrap();
        assert!((7.9..=8.9).contains(&eta), "{v}");
        // Nothing read yet: no rate, no ETA.
        let idle = live_json(&Live::Restore(
            Arc::new(RestoreProgress::default()),
            std::time::Instant::now(),
        ));
        assert!(idle.get("eta_secs").is_none(), "{idle}");
    }
}

/// The arguments of a restore (from the manager's sequence or `--from-grid`).
#[derive(Deserialize)]
pub(super) struct RestoreArgs {
    pub snapshot: String,
    pub dest: PathBuf,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub preserve_setid: bool,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub job: Option<String>,
}

impl RestoreArgs {
    /// Parses and checks them: DEST must be absolute (the daemon's working
    /// directory is not the user's).
    pub fn parse(args: Value) -> Result<Self, CommandError> {
        let args: RestoreArgs = serde_json::from_value(args)
            .map_err(|e| CommandError::BadArguments(format!("bad restore arguments: {e}")))?;
        if !args.dest.is_absolute() {
            return Err(CommandError::BadArguments(format!(
                "{}: DEST must be absolute",
                args.dest.display()
            )));
        }
        Ok(args)
    }
}
