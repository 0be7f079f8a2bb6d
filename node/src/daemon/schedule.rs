//! Scheduled backup sets (`strew backup … --sync-every DURATION`): the book
//! of sets in `DATA_DIR/backup-sets.json` (written atomically, so the
//! schedule survives restarts and crashes) and the daemon loop that re-runs
//! each set when it is due, incrementally (unchanged chunks are known and
//! not uploaded again), then applies the set's `--keep-*` retention policy.
//!
//! Owns when a set runs and what is remembered about its last run; the
//! backup itself is [`SourceJobs::backup`](super::jobs::SourceJobs::backup).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::DaemonContext;
use super::jobs::{BackupArgs, SourceJobs};

/// The book's file in the data dir.
pub const SETS_FILE: &str = "backup-sets.json";
/// How often the loop looks for due sets.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// After a failed run, wait this long (or the set's period, if shorter) before retrying.
const RETRY_AFTER: Duration = Duration::from_secs(5 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {why}")]
    Damaged { path: PathBuf, why: String },
}

/// One scheduled set: what to back up and how its last run went.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BackupSet {
    pub args: BackupArgs,
    /// Unix ms of the last run's start.
    pub last_run_ms: u64,
    pub last_snapshot: Option<String>,
    /// Digest of the last snapshot's tree (contents and metadata, not its
    /// time): a scheduled run of an unchanged tree makes no new snapshot.
    #[serde(default)]
    pub last_tree: Option<String>,
    pub last_error: Option<String>,
}

impl BackupSet {
    fn period_ms(&self) -> Option<u64> {
        self.args
            .params()
            .ok()?
            .sync_interval_secs
            .map(|s| s.saturating_mul(1000))
    }

    /// Unix ms when the set is next due (`None`: not scheduled).
    pub fn next_run_ms(&self) -> Option<u64> {
        let period = self.period_ms()?;
        let wait = if self.last_error.is_some() {
            period.min(RETRY_AFTER.as_millis() as u64)
        } else {
            period
        };
        Some(self.last_run_ms.saturating_add(wait))
    }
}

/// The persisted book of sets, keyed by set name.
pub struct SetBook {
    path: PathBuf,
    sets: Mutex<Vec<BackupSet>>,
}

impl SetBook {
    pub fn open(data_dir: &Path) -> Result<Self, ScheduleError> {
        let path = data_dir.join(SETS_FILE);
        let sets = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ScheduleError::Damaged {
                path: path.clone(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(ScheduleError::Io { path, source }),
        };
        Ok(SetBook {
            path,
            sets: Mutex::new(sets),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<BackupSet>> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn list(&self) -> Vec<BackupSet> {
        self.lock().clone()
    }

    /// Adds or replaces the set of the same name, and saves the book.
    pub fn upsert(&self, set: BackupSet) -> Result<(), ScheduleError> {
        let mut sets = self.lock();
        match sets.iter_mut().find(|s| s.args.name == set.args.name) {
            Some(existing) => *existing = set,
            None => sets.push(set),
        }
        self.save(&sets)
    }

    fn save(&self, sets: &[BackupSet]) -> Result<(), ScheduleError> {
        let io = |source| ScheduleError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(sets).map_err(|e| ScheduleError::Damaged {
            path: self.path.clone(),
            why: e.to_string(),
        })?;
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(io)
    }

    /// The last snapshot of a set and its tree digest, if both are known.
    pub fn previous_tree(&self, name: &str) -> Option<(strew_coordinator::SnapshotId, [u8; 32])> {
        let sets = self.lock();
        let set = sets.iter().find(|s| s.args.name == name)?;
        let snapshot = set.last_snapshot.as_deref()?.parse().ok()?;
        let text = set.last_tree.as_deref()?;
        let mut digest = [0u8; 32];
        if text.len() != 64 {
            return None;
        }
        for (i, d) in digest.iter_mut().enumerate() {
            *d = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some((snapshot, digest))
    }

    /// A snapshot was forgotten: no set may skip a run because of it.
    pub fn forgotten(&self, snapshot: &str) -> Result<(), ScheduleError> {
        let mut sets = self.lock();
        let mut changed = false;
        for set in sets.iter_mut() {
            if set.last_snapshot.as_deref() == Some(snapshot) {
                set.last_tree = None;
                changed = true;
            }
        }
        if changed {
            self.save(&sets)?;
        }
        Ok(())
    }

    /// Sets due at `now_ms`, oldest first.
    pub fn due(&self, now_ms: u64) -> Vec<BackupSet> {
        let mut due: Vec<BackupSet> = self
            .lock()
            .iter()
            .filter(|s| s.next_run_ms().is_some_and(|t| t <= now_ms))
            .cloned()
            .collect();
        due.sort_by_key(|s| s.next_run_ms());
        due
    }

    /// Records a failed run (the successful ones are recorded by the backup).
    pub fn record_failure(
        &self,
        name: &str,
        at_ms: u64,
        error: String,
    ) -> Result<(), ScheduleError> {
        let mut sets = self.lock();
        if let Some(set) = sets.iter_mut().find(|s| s.args.name == name) {
            set.last_run_ms = at_ms;
            set.last_error = Some(error);
        }
        self.save(&sets)
    }
}

/// Re-runs due sets forever (one at a time).
pub async fn run(ctx: DaemonContext, jobs: Arc<SourceJobs>) {
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for set in jobs.sets().due(strew_overlay::now_ms()) {
            let name = set.args.name.clone();
            info!(set = %name, "scheduled backup is due");
            let started = strew_overlay::now_ms();
            match jobs.backup_scheduled(&ctx, &set.args).await {
                Ok(report) if report["unchanged"] == serde_json::json!(true) => {
                    info!(set = %name, snapshot = %report["snapshot"], "scheduled backup done: nothing changed, no new snapshot")
                }
                Ok(report) => {
                    info!(set = %name, snapshot = %report["snapshot"], "scheduled backup done");
                    apply_policy(&ctx, &jobs, &set).await;
                }
                Err(err) => {
                    let err = err.text();
                    warn!(set = %name, %err, "scheduled backup failed; will retry");
                    let sets = jobs.sets().clone();
                    let saved = tokio::task::spawn_blocking(move || {
                        sets.record_failure(&name, started, err)
                    })
                    .await;
                    match saved {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => warn!(%e, "cannot record the failure in the schedule"),
                        Err(e) => warn!(%e, "the schedule task failed"),
                    }
                }
            }
        }
    }
}

/// The set's `--keep-*` policy, applied after one of its scheduled runs.
async fn apply_policy(ctx: &DaemonContext, jobs: &SourceJobs, set: &BackupSet) {
    let policy = set.args.keep;
    if policy.is_empty() {
        return;
    }
    let name = set.args.name.clone();
    match jobs
        .retention(ctx, &policy, Some(name.clone()), false)
        .await
    {
        Ok(report) => info!(
            set = %name,
            forgotten = report["remove"].as_array().map_or(0, Vec::len),
            deleted = %report["deleted"],
            "retention policy applied"
        ),
        Err(err) => {
            warn!(set = %name, err = %err.text(), "retention policy failed; will retry after the next run")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str, every: Option<&str>, last: u64) -> BackupSet {
        BackupSet {
            args: BackupArgs {
                paths: vec![PathBuf::from("/data")],
                name: name.into(),
                backup_distance: None,
                spread: None,
                redundancy: None,
                zstd_level: None,
                convergence: None,
                sync_every: every.map(str::to_string),
                chunk_sizes: None,
                job: None,
                excludes: Default::default(),
                keep: Default::default(),
            },
            last_run_ms: last,
            last_snapshot: None,
            last_tree: None,
            last_error: None,
        }
    }

    #[test]
    fn schedule_survives_reopen_and_knows_what_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let book = SetBook::open(dir.path()).unwrap();
        book.upsert(set("photos", Some("1h"), 1_000)).unwrap();
        book.upsert(set("mail", Some("10m"), 1_000)).unwrap();
        book.upsert(set("once", None, 1_000)).unwrap();
        drop(book);
        let book = SetBook::open(dir.path()).unwrap();
        assert_eq!(book.list().len(), 3);
        assert!(book.due(1_000 + 599_999).is_empty());
        let due: Vec<String> = book
            .due(1_000 + 600_000)
            .into_iter()
            .map(|s| s.args.name)
            .collect();
        assert_eq!(due, ["mail"]);
        let due: Vec<String> = book
            .due(1_000 + 3_600_000)
            .into_iter()
            .map(|s| s.args.name)
            .collect();
        assert_eq!(due, ["mail", "photos"]);
        // Replacing keeps one entry per name; a failure retries sooner than the period.
        book.upsert(set("photos", Some("1h"), 5_000_000)).unwrap();
        book.record_failure("photos", 5_000_000, "no manager".into())
            .unwrap();
        assert_eq!(book.list().len(), 3);
        assert!(
            book.due(5_000_000 + RETRY_AFTER.as_millis() as u64 - 1)
                .iter()
                .all(|s| s.args.name != "photos")
        );
        assert!(
            book.due(5_000_000 + RETRY_AFTER.as_millis() as u64)
                .iter()
                .any(|s| s.args.name == "photos")
        );
    }

    #[test]
    fn damaged_book_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SETS_FILE), b"{not json").unwrap();
        let err = SetBook::open(dir.path()).err().unwrap();
        assert!(err.to_string().contains("damaged"), "{err}");
    }
}
