//! The daemon's `snapshots --from-grid` and `restore --from-grid` (issue 18):
//! snapshots listed and restored from their roots (this data dir's
//! `roots/` and the roots the grid's nodes hold for this node id), with no
//! sequence manager or coordinator involved. Owns turning those calls into
//! `grid::recover` calls and their JSON answers.

use std::sync::Arc;

use serde_json::{Value, json};

use super::CommandError;
use super::DaemonContext;
use super::jobs::{Live, RestoreArgs, SourceJobs, lock};
use crate::grid::recover::{self, Found};
use crate::pipeline::{RestoreOptions, RestoreProgress};

impl SourceJobs {
    async fn found(&self, ctx: &DaemonContext) -> Result<Vec<Found>, CommandError> {
        let peers = ctx.overlay.peers().into_iter().map(|p| p.node_id).collect();
        Ok(
            recover::find_roots(&ctx.overlay, peers, &self.data_dir, &self.private, &self.me)
                .await?,
        )
    }

    /// Every snapshot whose root this node finds, newest first.
    pub(super) async fn snapshots_from_grid(
        &self,
        ctx: &DaemonContext,
    ) -> Result<Value, CommandError> {
        let found = self.found(ctx).await?;
        serde_json::to_value(found.iter().map(Found::summary).collect::<Vec<_>>())
            .map_err(CommandError::json)
    }

    /// Restores a snapshot found from its root, reading packets as their holder.
    pub(super) async fn restore_from_grid(
        &self,
        ctx: &DaemonContext,
        args: Value,
    ) -> Result<Value, CommandError> {
        let args = RestoreArgs::parse(args)?;
        let wanted = args.snapshot.to_ascii_lowercase();
        let found = self.found(ctx).await?;
        let matching: Vec<&Found> = found
            .iter()
            .filter(|f| wanted.len() >= 4 && f.doc.snapshot.to_string().starts_with(&wanted))
            .collect();
        let one = match matching.as_slice() {
            [one] => *one,
            [] => {
                return Err(CommandError::BadArguments(format!(
                    "no snapshot root found for {} (give at least 4 hex digits)",
                    args.snapshot
                )));
            }
            _ => {
                return Err(CommandError::BadArguments(format!(
                    "{} names several snapshots: give more digits",
                    args.snapshot
                )));
            }
        };
        let progress = Arc::new(RestoreProgress::default());
        let job = args.job.unwrap_or_default();
        lock(&self.live).insert(
            job.clone(),
            Live::Restore(progress.clone(), std::time::Instant::now()),
        );
        let result = recover::restore_found(
            &ctx.overlay,
            one,
            args.dest,
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
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        value["set"] = json!(one.doc.set);
        Ok(value)
    }
}
