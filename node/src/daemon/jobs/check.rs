//! `strew check SNAPSHOT [--read-data]` on the daemon: has the leader audit
//! every packet of one of this node's snapshots, or with `--read-data`
//! fetches and verifies every packet (see [`crate::grid::check`]).

use super::*;
use crate::grid::check::grid_check_by_audits;
use crate::grid::grid_check;

impl SourceJobs {
    /// Checks a snapshot; the answer is `strew check --json`'s.
    pub(super) async fn check(
        &self,
        ctx: &DaemonContext,
        args: Value,
    ) -> Result<Value, CommandError> {
        #[derive(Deserialize)]
        struct Args {
            snapshot: String,
            #[serde(default)]
            read_data: bool,
        }
        let args: Args = serde_json::from_value(args)
            .map_err(|e| CommandError::BadArguments(format!("bad check arguments: {e}")))?;
        let snapshot = resolve_snapshot(ctx, &args.snapshot).await?;
        let manager = OverlayManager::new(ctx.overlay.clone());
        let report = if args.read_data {
            let transport = Arc::new(OverlayTransport::new(ctx.overlay.clone()));
            grid_check(&self.me, &manager, transport, snapshot).await?
        } else {
            grid_check_by_audits(&manager, snapshot).await?
        };
        if report.lost > 0 || report.degraded > 0 {
            warn!(
                snapshot = %snapshot,
                degraded = report.degraded,
                lost = report.lost,
                "check: some packets of the snapshot are missing or corrupt"
            );
        }
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        value["read_data"] = json!(args.read_data);
        Ok(value)
    }
}
