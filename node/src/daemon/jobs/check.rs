//! `strew check SNAPSHOT [--read-data]` on the daemon: fetches and verifies
//! every packet of one of this node's snapshots (see [`crate::grid::check`]).

use super::*;
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
        let transport = Arc::new(OverlayTransport::new(ctx.overlay.clone()));
        let report = grid_check(&self.me, &manager, transport, snapshot).await?;
        if report.lost > 0 || report.degraded > 0 {
            warn!(
                snapshot = %snapshot,
                degraded = report.degraded,
                lost = report.lost,
                "check: some packets of the snapshot are missing or corrupt"
            );
        }
        let mut value = serde_json::to_value(&report).map_err(CommandError::json)?;
        // Without audits, every check reads the data.
        value["read_data"] = json!(true);
        value["read_data_requested"] = json!(args.read_data);
        Ok(value)
    }
}
