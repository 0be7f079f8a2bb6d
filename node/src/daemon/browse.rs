//! Browsing snapshots from their manifests alone: the `ls`, `find` and
//! `diff` control commands, and the local cache of manifests already read.
//!
//! A manifest is read from its snapshot's manifest stripes (never a data
//! packet: [`crate::grid::grid_manifest`]) and kept in `DATA_DIR/manifests/`
//! (mode 0600; a snapshot's manifest never changes), so a second question
//! about a snapshot fetches nothing. Owns the cache and the commands' JSON;
//! the answers themselves are [`crate::pipeline::select`]'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use strew_coordinator::SnapshotId;

use super::jobs::{SourceJobs, resolve_snapshot};
use super::{CommandError, DaemonContext};
use crate::grid::{ManagerApi, OverlayManager, OverlayTransport, grid_manifest};
use crate::pipeline::manifest::Manifest;
use crate::pipeline::select;

/// Directory of the manifest cache inside the data dir.
pub const MANIFESTS_DIR: &str = "manifests";

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

    /// The cached manifest, if any (a damaged file counts as absent).
    fn get(&self, snapshot: &SnapshotId) -> Option<Manifest> {
        let bytes = std::fs::read(self.path(snapshot)).ok()?;
        Manifest::decode(&bytes).ok()
    }

    fn put(&self, snapshot: &SnapshotId, manifest: &Manifest) {
        let write = std::fs::create_dir_all(&self.dir)
            .map_err(|e| e.to_string())
            .and_then(|()| {
                crate::private_file::write_private(&self.path(snapshot), &manifest.encode())
                    .map_err(|e| crate::grid::error_text(&e))
            });
        if let Err(err) = write {
            tracing::warn!(%err, "cannot cache a manifest; it will be fetched again");
        }
    }
}

/// A manifest and the packets fetched to read it (0 when it was cached).
struct Read {
    manifest: Manifest,
    fetched: u64,
}

impl SourceJobs {
    /// The manifest of `snapshot` (cached, or read from its manifest stripes).
    pub(super) async fn manifest_of(
        &self,
        ctx: &DaemonContext,
        snapshot: SnapshotId,
    ) -> Result<Manifest, CommandError> {
        Ok(self.manifest(ctx, snapshot).await?.manifest)
    }

    /// The manifest of `snapshot`, from the cache or its manifest stripes.
    async fn manifest(
        &self,
        ctx: &DaemonContext,
        snapshot: SnapshotId,
    ) -> Result<Read, CommandError> {
        let cache = ManifestCache::new(&ctx.data_dir);
        let cached = tokio::task::spawn_blocking(move || cache.get(&snapshot))
            .await
            .map_err(|e| CommandError::task("manifest cache", e))?;
        if let Some(manifest) = cached {
            return Ok(Read {
                manifest,
                fetched: 0,
            });
        }
        let manager = OverlayManager::new(ctx.overlay.clone());
        let transport = Arc::new(OverlayTransport::new(ctx.overlay.clone()));
        let (manifest, fetched) =
            grid_manifest(&self.me, &manager, transport, snapshot, self.restore_keys()).await?;
        let (cache, copy) = (ManifestCache::new(&ctx.data_dir), manifest.clone());
        tokio::task::spawn_blocking(move || cache.put(&snapshot, &copy))
            .await
            .map_err(|e| CommandError::task("manifest cache", e))?;
        Ok(Read { manifest, fetched })
    }

    /// `strew ls SNAPSHOT [PATH]`: `{snapshot, entries, fetched_packets}`.
    pub(super) async fn ls(&self, ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let snapshot = resolve_snapshot(ctx, text_arg(&args, "snapshot")?).await?;
        let read = self.manifest(ctx, snapshot).await?;
        let under = args.get("path").and_then(Value::as_str);
        let entries = select::list(&read.manifest, under);
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
        let set = args.get("name").and_then(Value::as_str).map(str::to_string);
        let manager = OverlayManager::new(ctx.overlay.clone());
        let mut matches = Vec::new();
        let mut fetched = 0;
        for s in manager.list(set).await? {
            let read = self.manifest(ctx, s.snapshot).await?;
            fetched += read.fetched;
            let found = select::find(&read.manifest, &pattern)
                .map_err(|e| CommandError::BadArguments(crate::grid::error_text(&e)))?;
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
        let d = select::diff(&ra.manifest, &rb.manifest);
        let mut v = serde_json::to_value(&d).map_err(CommandError::json)?;
        v["snapshot_a"] = json!(a.to_string());
        v["snapshot_b"] = json!(b.to_string());
        v["fetched_packets"] = json!(ra.fetched + rb.fetched);
        Ok(v)
    }
}

fn text_arg<'a>(args: &'a Value, name: &str) -> Result<&'a str, CommandError> {
    args.get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| CommandError::BadArguments(format!("missing argument {name:?}")))
}
