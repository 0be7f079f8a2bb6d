//! `strew grid create | admit | remove`: the client side (flags, printing)
//! and the daemon side ([`GridCommands`], a [`DaemonExtension`]).
//!
//! Owns turning the grid key into certificates and revocations and sending
//! them to the sequence manager. `grid create` writes the data dir directly
//! when no daemon runs, or asks the running one (which then founds the
//! group if it is a coordinator). The files are [`crate::trust`]'s; the
//! group's policy is [`super::group`]'s.

use std::io::Write;
use std::path::Path;

use clap::Subcommand;
use serde_json::{Value, json};
use strew_coordinator::NodeId;
use strew_overlay::ManagerRequest;

use super::{CommandError, ControlFuture, DaemonContext, DaemonExtension};
use crate::control::{self, ControlError};
use crate::daemon::commands::print_json;
use crate::grid::overlay::OverlayManager;

/// `strew grid …`.
#[derive(Subcommand, Debug)]
pub enum GridCmd {
    /// Founds a grid on this node: makes the grid key (kept in the data dir;
    /// back it up with `strew key export`) whose public half is the grid id,
    /// and the grid's convergence secret. Run it on the founding coordinator.
    Create {
        /// An open grid: any node may join and gets the grid's convergence
        /// secret (closed grids admit token holders only).
        #[arg(long)]
        open: bool,
        /// Print `{grid_id}` as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Certifies NODE_ID as a coordinator of this grid (needs the grid key):
    /// the group admits it once it runs with `--coordinator`.
    Admit {
        node_id: NodeId,
        #[arg(long)]
        json: bool,
    },
    /// Revokes NODE_ID's certificate: the group removes it at once, and no
    /// node honours its tickets any more (needs the grid key).
    Remove {
        node_id: NodeId,
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of the `grid_admit` / `grid_remove` control commands.
#[derive(serde::Deserialize)]
struct NodeArg {
    node_id: String,
}

/// `strew grid …` (client side).
pub async fn grid(data_dir: &Path, cmd: &GridCmd) -> anyhow::Result<()> {
    let (value, json_out, text) = match cmd {
        GridCmd::Create { open, json } => {
            let args = json!({ "open": open });
            let value =
                match control::call(data_dir, "grid_create", args, control::QUICK_CALL).await {
                    Ok(value) => value,
                    Err(ControlError::NotRunning { .. }) => {
                        let root = crate::trust::create(data_dir, *open)?;
                        json!({ "grid_id": root.grid.to_string(), "open": root.open })
                    }
                    Err(err) => return Err(err.into()),
                };
            let text = format!(
                "created {} grid {}\nthe grid key is in {}: back it up with `strew key export`",
                if *open { "open" } else { "closed" },
                value["grid_id"].as_str().unwrap_or("-"),
                data_dir.join(crate::trust::GRID_KEY_FILE).display()
            );
            (value, *json, text)
        }
        GridCmd::Admit { node_id, json } => {
            let args = json!({ "node_id": node_id.to_string() });
            let value = control::call(data_dir, "grid_admit", args, control::QUICK_CALL).await?;
            let text = format!(
                "certified {node_id} as a coordinator; the group admits it while it runs with --coordinator"
            );
            (value, *json, text)
        }
        GridCmd::Remove { node_id, json } => {
            let args = json!({ "node_id": node_id.to_string() });
            let value = control::call(data_dir, "grid_remove", args, control::QUICK_CALL).await?;
            let text = format!("revoked the certificate of {node_id}; the group removes it");
            (value, *json, text)
        }
    };
    if json_out {
        return print_json(&value);
    }
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

/// The daemon's `grid_*` control commands.
pub struct GridCommands;

impl GridCommands {
    async fn create(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let open = args.get("open").and_then(Value::as_bool).unwrap_or(false);
        let trust = ctx.trust.clone();
        let root = tokio::task::spawn_blocking(move || trust.create(open))
            .await
            .map_err(|e| CommandError::task("grid create", e))?
            .map_err(|e| CommandError::BadArguments(crate::grid::error_text(&e)))?;
        Ok(json!({ "grid_id": root.grid.to_string(), "open": root.open }))
    }

    fn node(args: Value) -> Result<NodeId, CommandError> {
        let arg = serde_json::from_value::<NodeArg>(args)
            .map_err(|e| CommandError::BadArguments(format!("bad grid arguments: {e}")))?;
        arg.node_id.parse().map_err(|e| {
            CommandError::BadArguments(format!("{:?} is not a node id: {e}", arg.node_id))
        })
    }

    fn no_key() -> CommandError {
        CommandError::BadArguments(
            "this node does not hold the grid key: run the command on the node that ran `strew grid create` (or one that imported its key)".into(),
        )
    }

    async fn admit(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let node = Self::node(args)?;
        let cert = ctx
            .trust
            .certify(node, strew_overlay::now_ms())
            .ok_or_else(Self::no_key)?
            .map_err(|e| CommandError::Internal(crate::grid::error_text(&e)))?;
        let grid = cert.grid;
        OverlayManager::new(ctx.overlay.clone())
            .record_trust(ManagerRequest::Certify(cert))
            .await?;
        Ok(json!({ "node_id": node.to_string(), "grid_id": grid.to_string(), "admitted": true }))
    }

    async fn remove(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let node = Self::node(args)?;
        let revocation = ctx
            .trust
            .revoke(node, strew_overlay::now_ms())
            .ok_or_else(Self::no_key)?
            .map_err(|e| CommandError::Internal(crate::grid::error_text(&e)))?;
        let grid = revocation.grid;
        OverlayManager::new(ctx.overlay.clone())
            .record_trust(ManagerRequest::Revoke(revocation))
            .await?;
        Ok(json!({ "node_id": node.to_string(), "grid_id": grid.to_string(), "removed": true }))
    }
}

impl DaemonExtension for GridCommands {
    fn handle<'a>(
        &'a self,
        ctx: &'a DaemonContext,
        cmd: &'a str,
        args: Value,
    ) -> Option<ControlFuture<'a>> {
        Some(match cmd {
            "grid_create" => Box::pin(Self::create(ctx, args)),
            "grid_admit" => Box::pin(Self::admit(ctx, args)),
            "grid_remove" => Box::pin(Self::remove(ctx, args)),
            _ => return None,
        })
    }
}
