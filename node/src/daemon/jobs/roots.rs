//! Snapshot roots on the daemon (issue 18): dropping the roots of
//! forgotten snapshots, and the periodic pass that puts lost root copies
//! back on the snapshots' targets (see [`crate::grid::roots`] and
//! [`crate::grid::root_upkeep`]).

use super::*;
use crate::daemon::browse::ManifestCache;
use crate::grid::rebuild::{Reregistration, reregister_roots};
use crate::grid::root_upkeep::{RootUpkeep, keep_roots_alive};

impl SourceJobs {
    /// Issue 18: drops the roots of forgotten snapshots from the targets
    /// holding a copy and from the data dir, and their cached manifests;
    /// returns the root copies dropped. A failure is a warning: the
    /// snapshot is forgotten either way.
    pub(super) async fn drop_roots(&self, ctx: &DaemonContext, snapshots: &[SnapshotId]) -> usize {
        let (cache, gone) = (ManifestCache::new(&self.data_dir), snapshots.to_vec());
        if let Err(err) =
            tokio::task::spawn_blocking(move || gone.iter().for_each(|s| cache.forget(s))).await
        {
            warn!(%err, "dropping forgotten snapshots' cached manifests failed");
        }
        let mut dropped = 0;
        for snapshot in snapshots {
            match crate::grid::roots::drop_root(
                &ctx.overlay,
                &self.me,
                &self.private,
                &self.data_dir,
                *snapshot,
            )
            .await
            {
                Ok(d) => dropped += d.copies_dropped,
                Err(err) => warn!(%snapshot, %err, "the forgotten snapshot's root was not dropped"),
            }
        }
        dropped
    }

    /// One pass keeping this node's snapshot roots on [`ROOT_COPIES`]
    /// targets each; a failure is logged and tried again next time.
    ///
    /// [`ROOT_COPIES`]: crate::grid::roots::ROOT_COPIES
    pub async fn keep_roots(&self, ctx: &DaemonContext) -> Option<RootUpkeep> {
        match keep_roots_alive(&ctx.overlay, &self.me, &self.private, &self.data_dir).await {
            Ok(report) => {
                if report.copies_added > 0 || report.short > 0 {
                    info!(
                        roots = report.roots,
                        added = report.copies_added,
                        short = report.short,
                        "snapshot roots kept"
                    );
                }
                Some(report)
            }
            Err(err) => {
                warn!(%err, "snapshot roots could not be looked after");
                None
            }
        }
    }

    /// Issue 18: when the manager says its group was rebuilt (since
    /// `rebuilt_since`, which differs from `done`, the mark this node last
    /// re-registered everything for), hands it the snapshots of this node's
    /// local roots it does not list. Returns the mark once every root is
    /// listed or recorded (nothing refused), so the pass is not repeated.
    pub async fn reregister_if_rebuilt(
        &self,
        ctx: &DaemonContext,
        done: Option<u64>,
    ) -> Option<u64> {
        let has_roots = std::fs::read_dir(self.data_dir.join(crate::grid::roots::ROOTS_DIR))
            .is_ok_and(|mut d| d.next().is_some());
        if !has_roots {
            return done;
        }
        let manager = OverlayManager::new(ctx.overlay.clone());
        let since = manager.info().await.ok()?.rebuilt_since?;
        if done == Some(since) {
            return done;
        }
        match reregister_roots(&manager, &self.me, &self.private, &self.data_dir).await {
            Ok(report) => {
                let Reregistration {
                    roots,
                    listed,
                    registered,
                    unattested,
                    refused,
                } = report;
                info!(
                    roots,
                    listed,
                    registered,
                    unattested,
                    refused,
                    "snapshots re-registered with the rebuilt coordinator group"
                );
                (refused == 0).then_some(since).or(done)
            }
            Err(err) => {
                warn!(%err, "snapshots could not be re-registered with the rebuilt group");
                done
            }
        }
    }
}
