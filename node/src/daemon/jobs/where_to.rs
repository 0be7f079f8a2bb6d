//! Where backups go: `strew plan` (a dry run of placement for a tree) and
//! the placements of this node's snapshots (`strew status`, its map, the
//! dashboard and the health metrics).

use super::*;

impl SourceJobs {
    /// `strew plan`: estimates the chunks of PATH… from its size and asks the
    /// manager where they would go, without storing or recording anything.
    pub(super) async fn plan(
        &self,
        ctx: &DaemonContext,
        args: BackupArgs,
    ) -> Result<Value, CommandError> {
        let params = args.params().map_err(CommandError::BadArguments)?;
        let sizes = args.sizes().map_err(CommandError::BadArguments)?;
        all_exist(args.paths.clone()).await?;
        // Files the set's last snapshot holds unchanged (same path, size and
        // mtime) are stored already: only the rest counts (as restic's parent
        // snapshot). The manifest comes from the cache or its own stripes.
        let parent_id = self
            .sets
            .list()
            .into_iter()
            .find(|s| s.args.name == args.name)
            .and_then(|s| s.last_snapshot?.parse::<SnapshotId>().ok());
        let parent = match parent_id {
            Some(snapshot) => self.manifest(ctx, snapshot).await.ok(),
            None => None,
        };
        let parent_snapshot = parent.as_ref().and(parent_id);
        let paths = args.paths.clone();
        let rules = args.excludes.clone();
        let (total, unchanged) = tokio::task::spawn_blocking(move || {
            let known = parent
                .map(|p| unchanged_index(&p.manifest))
                .unwrap_or_default();
            (
                tree_bytes(&paths, &rules),
                unchanged_bytes(&paths, &rules, &known),
            )
        })
        .await
        .unwrap_or((0, 0));
        let new_bytes = total.saturating_sub(unchanged);
        let avg = u64::from(sizes.avg).max(1);
        let stripes = new_bytes.div_ceil(avg).max(1);
        let k = params.redundancy.data_packets() as u64;
        let packet = (avg / k.max(1)).max(1) + 64;
        let width = params.redundancy.width();
        let chunks: Vec<ChunkPlan> = (0..stripes)
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&i.to_le_bytes());
                id[8..16].copy_from_slice(&total.to_le_bytes());
                let data_id = DataId(*blake3::hash(&id).as_bytes());
                ChunkPlan {
                    data_id,
                    packets: (0..width)
                        .map(|j| PacketSpec {
                            packet_id: strew_coordinator::PacketId(
                                *blake3::hash(&[&data_id.0[..], &[j as u8]].concat()).as_bytes(),
                            ),
                            size: packet,
                        })
                        .collect(),
                }
            })
            .collect();
        let request = PlanRequest {
            extend: None,
            source: self.me.node_id,
            set: args.name.clone(),
            location: self.me.location,
            params: params.clone(),
            chunks,
            exclude: Vec::new(),
        };
        let manager = OverlayManager::new(ctx.overlay.clone());
        let answer = manager.dry_run(request).await?;
        let mut per_target: std::collections::BTreeMap<NodeId, (u64, u64)> = Default::default();
        for p in answer.uploads.iter().flat_map(|c| &c.packets) {
            let e = per_target.entry(p.target).or_default();
            e.0 += 1;
            e.1 += p.size;
        }
        let targets: Vec<Value> = ctx
            .overlay
            .with_grid_view(|view| {
                per_target
                    .iter()
                    .map(|(id, (packets, bytes))| {
                        let loc = view.get(id).map(|p| p.location);
                        json!({
                            "node_id": id.to_string(),
                            "location": loc.map(|l| json!({"lat": l.lat, "lon": l.lon})),
                            "city": loc.and_then(|l| crate::daemon::report::city_near(l.lat, l.lon)),
                            "distance_km": loc.map(|l| strew_coordinator::units::haversine_km(&self.me.location, &l)),
                            "packets": packets,
                            "bytes": bytes,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(json!({
            "feasible": true,
            "input_bytes": total,
            "unchanged_bytes": unchanged,
            "parent_snapshot": parent_snapshot.map(|id| id.to_string()),
            "estimated_chunks": stripes,
            "estimated_packets": stripes * width as u64,
            "estimated_stored_bytes": stripes * width as u64 * packet,
            "redundancy": params.redundancy.to_string(),
            // As the user typed them (`300mi..1200mi`), else the defaults.
            "backup_distance": args.backup_distance.clone().unwrap_or_else(|| params.backup_distance.to_string()),
            "spread": args.spread.clone().unwrap_or_else(|| params.spread.to_string()),
            "targets": targets,
        }))
    }

    /// Where this node's packets are: per snapshot, the targets holding its
    /// packets, with their locations (for `strew status` and its map).
    pub(super) async fn placements(&self, ctx: &DaemonContext) -> Result<Value, CommandError> {
        wait_for_manager(ctx).await?;
        let manager = OverlayManager::new(ctx.overlay.clone()).with_patience(STATUS_PATIENCE);
        let list = manager.list(None).await?;
        let mut out = Vec::new();
        for s in list {
            let set = self.sets.list().into_iter().find(|b| b.args.name == s.set);
            let params = set.and_then(|b| b.args.params().ok());
            let me = self.me.node_id;
            let up = |t: &NodeId| {
                *t == me
                    || ctx
                        .overlay
                        .with_grid_view(|v| v.get(t).is_some_and(|p| p.online))
                        .unwrap_or(false)
            };
            let (per_target, health) =
                standing(&self.me, &manager, s.snapshot, params.as_ref(), up).await?;
            let targets: Vec<Value> = per_target
                .iter()
                .map(|(id, (packets, bytes))| {
                    // A target gone from the grid view keeps the location it was last seen at.
                    let known = ctx
                        .overlay
                        .with_grid_view(|v| v.get(id).map(|p| (p.location, p.online)))
                        .flatten()
                        .or_else(|| {
                            let cache = ctx.peer_cache.lock().ok()?;
                            let p = cache.get(&id.to_string())?;
                            Some((GeoPoint::new(p.lat, p.lon).ok()?, false))
                        });
                    json!({
                        "node_id": id.to_string(),
                        "location": known.map(|(l, _)| json!({"lat": l.lat, "lon": l.lon})),
                        "city": known.and_then(|(l, _)| crate::daemon::report::city_near(l.lat, l.lon)),
                        "distance_km": known.map(|(l, _)| strew_coordinator::units::haversine_km(&self.me.location, &l)),
                        "up": known.is_some_and(|(_, online)| online),
                        "packets": packets,
                        "bytes": bytes,
                    })
                })
                .collect();
            out.push(json!({
                "snapshot": s.snapshot.to_string(),
                "health": health,
                "backup_distance_km": params.as_ref().map(|p| json!({"min": p.backup_distance.min_km, "max": p.backup_distance.max_km})),
                "spread_min_km": params.as_ref().and_then(|p| p.spread.min_km),
                "name": s.set,
                "time": s.time,
                "bytes": s.bytes,
                "targets": targets,
            }));
        }
        Ok(Value::Array(out))
    }
}

/// What each target holds of `snapshot` (packets, bytes) and its stripes'
/// health, as this node sees its targets (`up`). The manager sums both
/// (`Standing`): first with every target taken as up, and again naming the
/// targets this node sees down, if any. Only a manager that cannot (an
/// older one) makes this node read the whole sequence, a page at a time.
async fn standing(
    me: &crate::grid::SourceIdentity,
    manager: &OverlayManager,
    snapshot: SnapshotId,
    params: Option<&BackupParams>,
    up: impl Fn(&NodeId) -> bool,
) -> Result<
    (
        std::collections::BTreeMap<NodeId, (u64, u64)>,
        crate::grid::Health,
    ),
    CommandError,
> {
    let asked = match manager.standing(snapshot, Vec::new()).await {
        Ok(all_up) => {
            let down: Vec<NodeId> = all_up
                .targets
                .iter()
                .map(|t| t.target)
                .filter(|t| !up(t))
                .collect();
            if down.is_empty() {
                Ok(all_up)
            } else {
                manager.standing(snapshot, down).await
            }
        }
        Err(err) => Err(err),
    };
    match asked {
        Ok(standing) => Ok((
            standing
                .targets
                .iter()
                .map(|t| (t.target, (t.packets, t.bytes)))
                .collect(),
            standing.health,
        )),
        Err(err) => {
            tracing::debug!(%err, %snapshot, "the manager sums no standing: reading the sequence");
            // Counted a page at a time: no memory grows with the snapshot.
            let mut per_target = std::collections::BTreeMap::new();
            let mut health = crate::grid::Health::default();
            crate::grid::sequence::for_each_page(me, manager, snapshot, |page| {
                crate::grid::restore::count_per_target(&mut per_target, &page);
                health.add(&crate::grid::health(
                    &page,
                    params.map(|p| p.redundancy),
                    &up,
                ));
                Ok(())
            })
            .await?;
            Ok((per_target, health))
        }
    }
}

/// Path (as the manifest names it: the root's name, then the relative path)
/// → (size, mtime seconds, mtime nanoseconds) of every file in `manifest`.
fn unchanged_index(
    manifest: &crate::pipeline::manifest_disk::DiskManifest,
) -> std::collections::HashMap<Vec<u8>, (u64, i64, u32)> {
    use crate::pipeline::manifest::EntryKind;
    manifest
        .heads()
        .map_while(Result::ok)
        .filter_map(|e| match &e.kind {
            EntryKind::File { size, .. } => Some((e.path.to_vec(), (*size, e.mtime_s, e.mtime_ns))),
            _ => None,
        })
        .collect()
}

/// Bytes of the files under `paths` that `known` holds with the same size
/// and mtime (excluded files left out, as the backup would).
fn unchanged_bytes(
    paths: &[PathBuf],
    rules: &ExcludeRules,
    known: &std::collections::HashMap<Vec<u8>, (u64, i64, u32)>,
) -> u64 {
    use crate::pipeline::exclude::Excluder;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    if known.is_empty() {
        return 0;
    }
    fn walk(
        path: &Path,
        name: Vec<u8>,
        ex: &mut Excluder,
        known: &std::collections::HashMap<Vec<u8>, (u64, i64, u32)>,
    ) -> u64 {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return 0;
        };
        if ex.excluded(path, &meta).is_some() {
            return 0;
        }
        if meta.is_file() {
            let same = known.get(&name).is_some_and(|(size, s, ns)| {
                *size == meta.len() && *s == meta.mtime() && i64::from(*ns) == meta.mtime_nsec()
            });
            return if same { meta.len() } else { 0 };
        }
        if !meta.is_dir() {
            return 0;
        }
        ex.enter_dir(path);
        let Ok(entries) = std::fs::read_dir(path) else {
            return 0;
        };
        entries
            .flatten()
            .map(|e| {
                let mut child = name.clone();
                child.push(b'/');
                child.extend_from_slice(e.file_name().as_bytes());
                walk(&e.path(), child, ex, known)
            })
            .sum()
    }
    let mut ex = Excluder::new(rules).unwrap_or_default();
    let mut total = 0;
    for root in paths {
        if let Ok(meta) = std::fs::symlink_metadata(root) {
            ex.enter_root(root, &meta);
            let name = root
                .file_name()
                .map(|n| n.as_bytes().to_vec())
                .unwrap_or_default();
            total += walk(root, name, &mut ex, known);
        }
    }
    total
}
