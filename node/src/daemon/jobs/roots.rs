//! Snapshot roots on the daemon (issue 18): dropping the roots of
//! forgotten snapshots, and the periodic pass that puts lost root copies
//! back on the snapshots' targets (see [`crate::grid::roots`] and
//! [`crate::grid::root_upkeep`]).

use super::*;
use crate::grid::root_upkeep::{RootUpkeep, keep_roots_alive};

impl SourceJobs {
    /// Issue 18: drops the roots of forgotten snapshots from the targets
    /// holding a copy and from the data dir; returns the copies dropped. A
    /// failure is a warning: the snapshot is forgotten either way.
    pub(super) async fn drop_roots(&self, ctx: &DaemonContext, snapshots: &[SnapshotId]) -> usize {
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
}
