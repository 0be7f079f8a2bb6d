//! Browsing snapshots from their manifests alone: the `ls`, `find` and
//! `diff` control commands, and the local cache of manifests already read.
//!
//! A manifest is read from its snapshot's manifest stripes (never a data
//! packet: [`crate::grid::grid_manifest`]) and its bytes copied, as they
//! stream, to `DATA_DIR/manifests/` (mode 0600; a snapshot's manifest never
//! changes), so a second question about a snapshot fetches nothing. Either
//! way it is decoded into scratch files ([`DiskManifest`]), and the
//! commands read its entries as they stream: what the daemon holds is a
//! few bytes an entry and the answer (`diff`: 32 bytes an entry of A). Owns the cache and the commands' JSON;
//! the answers themselves are [`crate::pipeline::select`]'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use strew_coordinator::SnapshotId;

use super::jobs::{SourceJobs, resolve_snapshot};
use super::{CommandError, DaemonContext};
use crate::grid::{ManagerApi, ManifestRead, OverlayManager, OverlayTransport, grid_manifest};
use crate::pipeline::manifest_disk::DiskManifest;
use crate::pipeline::select;
use crate::spill::SpillError;

/// Directory of the manifest cache inside the data dir.
pub const MANIFESTS_DIR: &str = "manifests";

/// How the name of a manifest copy still being written starts.
const PARTIAL_PREFIX: &str = ".partial-";

/// Manifests already read, one file per snapshot.
pub struct ManifestCache {
    dir: PathBuf,
}

impl ManifestCache {
    pub fn new(data_dir: &Path) -> Self {
        ManifestCache {
            dir: data_dir.join(MANIFESTS_DIR),
        }
    }

    fn path(&self, snapshot: &SnapshotId) -> PathBuf {
        self.dir.join(format!("{snapshot}.cbor"))
    }

    /// The cached manifest, if any, decoded into scratch files as the file
    /// streams in (a damaged file counts as absent).
    fn get(&self, snapshot: &SnapshotId) -> Option<DiskManifest> {
        let file = std::fs::File::open(self.path(snapshot)).ok()?;
        DiskManifest::decode_from(std::io::BufReader::new(file)).ok()
    }

    /// A file (mode 0600) a manifest's bytes are copied into as they are
    /// read; [`ManifestCache::keep`] makes it the snapshot's. Its name
    /// starts with [`PARTIAL_PREFIX`], so a copy a crash left is known.
    fn fresh(&self) -> std::io::Result<tempfile::NamedTempFile> {
        std::fs::create_dir_all(&self.dir)?;
        tempfile::Builder::new()
            .prefix(PARTIAL_PREFIX)
            .tempfile_in(&self.dir)
    }

    /// Removes the copies a crash left half written (never a kept
    /// manifest); returns how many. Run once as the daemon starts, before
    /// any command can be copying.
    pub fn sweep(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX))
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }

    /// Drops a forgotten snapshot's cached manifest, if any: a forgotten
    /// snapshot is never browsed again, and its manifest may be large.
    pub fn forget(&self, snapshot: &SnapshotId) {
        match std::fs::remove_file(self.path(snapshot)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(%snapshot, %err, "cannot drop a forgotten snapshot's cached manifest")
            }
        }
    }

    fn keep(&self, snapshot: &SnapshotId, copy: tempfile::NamedTempFile) {
        if let Err(err) = copy.persist(self.path(snapshot)) {
            tracing::warn!(%err, "cannot cache a manifest; it will be fetched again");
        }
    }
}

/// A manifest's scratch files failed (the temporary directory full?).
fn scratch(e: SpillError) -> CommandError {
    CommandError::Internal(format!(
        "browsing a snapshot: {e} (is the temporary directory full?)"
    ))
}

/// Runs `f` on the manifest on a blocking thread (it reads scratch files).
async fn with_manifest<T: Send + 'static>(
    read: ManifestRead,
    f: impl FnOnce(&DiskManifest) -> Result<T, CommandError> + Send + 'static,
) -> Result<(T, ManifestRead), CommandError> {
    tokio::task::spawn_blocking(move || f(&read.manifest).map(|t| (t, read)))
        .await
        .map_err(|e| CommandError::task("manifest", e))?
}

impl SourceJobs {
    /// The manifest of `snapshot` (cached, or read from its manifest
    /// stripes), in scratch files: a few bytes an entry in memory; and the
    /// packets fetched to read it (0 when it was cached).
    pub(super) async fn manifest(
        &self,
        ctx: &DaemonContext,
        snapshot: SnapshotId,
    ) -> Result<ManifestRead, CommandError> {
        let cache = ManifestCache::new(&ctx.data_dir);
        let cached = tokio::task::spawn_blocking(move || cache.get(&snapshot))
            .await
            .map_err(|e| CommandError::task("manifest cache", e))?;
        if let Some(manifest) = cached {
            return Ok(ManifestRead {
                manifest,
                copied: true,
                fetched: 0,
            });
        }
        let cache = ManifestCache::new(&ctx.data_dir);
        let copy = cache.fresh().ok();
        let sink: Box<dyn std::io::Write + Send> =
            match copy.as_ref().and_then(|c| c.as_file().try_clone().ok()) {
                Some(file) => Box::new(std::io::BufWriter::new(file)),
                None => Box::new(std::io::sink()),
            };
        let manager = OverlayManager::new(ctx.overlay.clone());
        let transport = Arc::new(OverlayTransport::new(ctx.overlay.clone()));
        let read = grid_manifest(
            &self.me,
            &manager,
            transport,
            snapshot,
            self.restore_keys(),
            sink,
        )
        .await?;
        match copy {
            Some(copy) if read.copied => {
                tokio::task::spawn_blocking(move || cache.keep(&snapshot, copy))
                    .await
                    .map_err(|e| CommandError::task("manifest cache", e))?;
            }
            _ => tracing::warn!("cannot cache a manifest; it will be fetched again"),
        }
        Ok(read)
    }

    /// `strew ls SNAPSHOT [PATH]`: `{snapshot, entries, fetched_packets}`.
    pub(super) async fn ls(&self, ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let snapshot = resolve_snapshot(ctx, text_arg(&args, "snapshot")?).await?;
        let read = self.manifest(ctx, snapshot).await?;
        let under = args.get("path").and_then(Value::as_str).map(str::to_string);
        let wanted = under.clone();
        let (entries, read) = with_manifest(read, move |m| {
            select::list(m.heads(), wanted.as_deref()).map_err(scratch)
        })
        .await?;
        if entries.is_empty()
            && let Some(path) = under
        {
            return Err(CommandError::NotFound(format!(
                "{path:?} is not in snapshot {snapshot} (paths start with the backed-up folder's name; see `strew ls {snapshot}`)"
            )));
        }
        Ok(json!({
            "snapshot": snapshot.to_string(),
            "entries": entries,
            "fetched_packets": read.fetched,
        }))
    }

    /// `strew find PATTERN`: `{matches: [{snapshot, name, time, path, ...}], fetched_packets}`.
    pub(super) async fn find(
        &self,
        ctx: &DaemonContext,
        args: Value,
    ) -> Result<Value, CommandError> {
        let pattern = text_arg(&args, "pattern")?.to_string();
        let finder = Arc::new(
            select::Finder::new(&pattern)
                .map_err(|e| CommandError::BadArguments(crate::grid::error_text(&e)))?,
        );
        let set = args.get("name").and_then(Value::as_str).map(str::to_string);
        let manager = OverlayManager::new(ctx.overlay.clone());
        let mut matches = Vec::new();
        let mut fetched = 0;
        for s in manager.list(set).await? {
            let read = self.manifest(ctx, s.snapshot).await?;
            fetched += read.fetched;
            let f = finder.clone();
            let (found, _) =
                with_manifest(read, move |m| f.find(m.heads()).map_err(scratch)).await?;
            for entry in found {
                let mut v = serde_json::to_value(&entry).map_err(CommandError::json)?;
                v["snapshot"] = json!(s.snapshot.to_string());
                v["name"] = json!(s.set);
                v["time"] = json!(s.time);
                matches.push(v);
            }
        }
        Ok(json!({"matches": matches, "fetched_packets": fetched}))
    }

    /// `strew diff A B`: `{snapshot_a, snapshot_b, added, removed, changed, fetched_packets}`.
    pub(super) async fn diff(
        &self,
        ctx: &DaemonContext,
        args: Value,
    ) -> Result<Value, CommandError> {
        let a = resolve_snapshot(ctx, text_arg(&args, "snapshot_a")?).await?;
        let b = resolve_snapshot(ctx, text_arg(&args, "snapshot_b")?).await?;
        let (ra, rb) = (self.manifest(ctx, a).await?, self.manifest(ctx, b).await?);
        let fetched = ra.fetched + rb.fetched;
        let (d, _) = with_manifest(ra, move |ma| {
            select::diff(|| ma.heads(), rb.manifest.heads()).map_err(scratch)
        })
        .await?;
        let mut v = serde_json::to_value(&d).map_err(CommandError::json)?;
        v["snapshot_a"] = json!(a.to_string());
        v["snapshot_b"] = json!(b.to_string());
        v["fetched_packets"] = json!(fetched);
        Ok(v)
    }
}

fn text_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, CommandError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| CommandError::BadArguments(format!("missing argument {name:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_partial_copies_and_forget_only_its_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = ManifestCache::new(dir.path());
        assert_eq!(cache.sweep(), 0, "no directory yet");
        let (a, b) = (SnapshotId([1; 32]), SnapshotId([2; 32]));
        for snapshot in [a, b] {
            let copy = cache.fresh().expect("fresh");
            std::fs::write(copy.path(), b"manifest").expect("write");
            cache.keep(&snapshot, copy);
        }
        // Two copies a crash left behind: kept files never start so.
        for _ in 0..2 {
            let (_, path) = cache.fresh().expect("fresh").keep().expect("leave");
            assert!(path.exists());
        }
        assert_eq!(std::fs::read_dir(&cache.dir).expect("dir").count(), 4);
        assert_eq!(cache.sweep(), 2);
        assert!(cache.path(&a).exists() && cache.path(&b).exists());
        cache.forget(&a);
        cache.forget(&a);
        assert!(!cache.path(&a).exists(), "forgotten");
        assert!(cache.path(&b).exists(), "the other snapshot's stays");
        assert_eq!(cache.sweep(), 0);
    }
}
