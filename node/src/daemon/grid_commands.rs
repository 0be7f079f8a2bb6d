//! `strew grid create | admit | remove | invite | renew | members | rebuild |
//! collect-unreferenced`: the
//! client side (flags, printing) and the daemon side ([`GridCommands`], a
//! [`DaemonExtension`]).
//!
//! Owns turning the grid key into certificates, revocations, invitations
//! (join tokens) and renewals, sending them to the sequence manager, and
//! listing the grid's members. `grid create` writes the data dir directly
//! when no daemon runs, or asks the running one (which then founds the
//! group if it is a coordinator). The files are [`crate::trust`]'s; the
//! group's policy is [`super::group`]'s.

use std::io::Write;
use std::path::Path;

use clap::Subcommand;
use serde_json::{Value, json};
use strew_coordinator::{NodeId, Subscription};
use strew_overlay::{ManagerRequest, RefusalCode};

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
    /// Prints a join token for one new node of a closed grid (needs the grid
    /// key): `strew init --join TOKEN` on the new node. The token carries the
    /// grid id, the subscription, the grid's convergence secret and this
    /// node's address; it admits the first node that redeems it, once.
    Invite(InviteArgs),
    /// Sets a new end of NODE_ID's subscription (needs the grid key).
    Renew {
        node_id: NodeId,
        /// From now, e.g. `30d`, `12h`.
        #[arg(long, value_name = "DURATION")]
        expires: String,
        #[arg(long)]
        json: bool,
    },
    /// Lists the grid's nodes with their role, subscription and usage.
    Members {
        #[arg(long)]
        json: bool,
    },
    /// Marks this coordinator group as the rebuilt successor of a lost one
    /// (run on a coordinator of the new group, founded again with the grid
    /// key): sources then re-register the snapshots their roots describe.
    /// Nothing the group does not know is deleted.
    Rebuild {
        #[arg(long)]
        json: bool,
    },
    /// After a rebuild: deletes the packets targets hold that no snapshot
    /// references (of snapshots whose sources never re-registered them).
    /// Refused until the group was rebuilt at least `--grace` ago; never
    /// done automatically. Roots are never collected.
    CollectUnreferenced {
        /// How long after the rebuild sources had to re-register.
        #[arg(long, value_name = "DURATION", default_value = "7d")]
        grace: String,
        /// Only count what would be collected.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

/// How long `grid collect-unreferenced` may take (every target's inventory,
/// one page a call).
const COLLECT_CALL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Inventory pages read from one target at most in one run.
const MAX_INVENTORY_PAGES: usize = 100_000;

/// `strew grid invite` flags (sizes like `20GiB`; absent: not limited).
#[derive(clap::Args, Debug)]
pub struct InviteArgs {
    /// Stored bytes (redundancy included) the node may use as a source.
    #[arg(long, value_name = "SIZE")]
    pub source_storage: Option<String>,
    /// Bytes the node stores for others at most.
    #[arg(long, value_name = "SIZE")]
    pub target_storage: Option<String>,
    /// Network bytes per day the node may move through the grid (plans and
    /// read tickets count against it; refused past it until the next UTC day).
    #[arg(long, value_name = "SIZE")]
    pub network_per_day: Option<String>,
    /// Bandwidth in bytes per second: the node limits its packet transfers
    /// to it, and sources pace their uploads to it.
    #[arg(long, value_name = "SIZE")]
    pub bandwidth: Option<String>,
    /// How long the subscription runs (and the token may be redeemed), from
    /// now, e.g. `365d`. Absent: the token may be redeemed for 7 days and the
    /// subscription does not end.
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// How long a token without `--expires` may be redeemed.
const DEFAULT_TOKEN_LIFE: std::time::Duration = std::time::Duration::from_secs(7 * 86_400);

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
        GridCmd::Invite(a) => {
            let size = |s: &Option<String>| -> anyhow::Result<Option<u64>> {
                s.as_deref()
                    .map(strew_coordinator::parse_size)
                    .transpose()
                    .map_err(anyhow::Error::msg)
            };
            let expires = a
                .expires
                .as_deref()
                .map(strew_coordinator::parse_duration)
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let args = json!({
                "source_storage": size(&a.source_storage)?,
                "target_storage": size(&a.target_storage)?,
                "network_per_day": size(&a.network_per_day)?,
                "bandwidth": size(&a.bandwidth)?,
                "expires_ms": expires.map(ms),
            });
            let value = control::call(data_dir, "grid_invite", args, control::QUICK_CALL).await?;
            let text = format!(
                "{}\n(one node: `strew init --join TOKEN`; redeemable until {})",
                value["token"].as_str().unwrap_or("-"),
                value["expires_text"].as_str().unwrap_or("-")
            );
            let value = json!({ "token": value["token"], "expires": value["expires"] });
            (value, a.json, text)
        }
        GridCmd::Renew {
            node_id,
            expires,
            json,
        } => {
            let d = strew_coordinator::parse_duration(expires).map_err(anyhow::Error::msg)?;
            let args = json!({ "node_id": node_id.to_string(), "expires_ms": ms(d) });
            let value = control::call(data_dir, "grid_renew", args, control::QUICK_CALL).await?;
            let text = format!(
                "the subscription of {node_id} now ends {}",
                value["expires_text"].as_str().unwrap_or("-")
            );
            (value, *json, text)
        }
        GridCmd::Rebuild { json } => {
            let value =
                control::call(data_dir, "grid_rebuild", Value::Null, control::QUICK_CALL).await?;
            let text = format!(
                "the coordinator group is rebuilt since {}: sources re-register their snapshots from their roots",
                value["rebuilt_since_text"].as_str().unwrap_or("-")
            );
            (value, *json, text)
        }
        GridCmd::CollectUnreferenced {
            grace,
            dry_run,
            json,
        } => {
            let grace = strew_coordinator::parse_duration(grace).map_err(anyhow::Error::msg)?;
            let args = json!({ "grace_ms": ms(grace), "dry_run": dry_run });
            let value =
                control::call(data_dir, "grid_collect_unreferenced", args, COLLECT_CALL).await?;
            let mut text = format!(
                "{} {} packet(s) ({} bytes) no snapshot references on {} target(s)",
                if *dry_run {
                    "would collect"
                } else {
                    "queued for collection"
                },
                value["found"].as_u64().unwrap_or(0),
                value["bytes"].as_u64().unwrap_or(0),
                value["targets"].as_array().map_or(0, Vec::len),
            );
            for t in value["targets"].as_array().into_iter().flatten() {
                if let Some(err) = t["error"].as_str() {
                    text.push_str(&format!(
                        "\n  {}: not listed: {err}",
                        t["node_id"].as_str().unwrap_or("-")
                    ));
                }
            }
            (value, *json, text)
        }
        GridCmd::Members { json } => {
            let value =
                control::call(data_dir, "grid_members", Value::Null, control::QUICK_CALL).await?;
            let mut text = format!(
                "{:<54} {:<12} {:>10} {:>10} {:>10} {:>10}  expires",
                "node", "role", "source", "used", "target", "stored"
            );
            for m in value.as_array().into_iter().flatten() {
                let size = |v: &Value| {
                    v.as_u64()
                        .map_or("-".to_string(), strew_coordinator::format_size)
                };
                text.push_str(&format!(
                    "\n{:<54} {:<12} {:>10} {:>10} {:>10} {:>10}  {}",
                    m["node_id"].as_str().unwrap_or("-"),
                    m["role"].as_str().unwrap_or("-"),
                    size(&m["subscription"]["source_storage"]),
                    size(&m["usage"]["source_stored_bytes"]),
                    size(&m["subscription"]["target_storage"]),
                    size(&m["usage"]["target_stored_bytes"]),
                    m["subscription"]["expires_at"]
                        .as_u64()
                        .map_or("never".to_string(), strew_coordinator::format_unix_ms),
                ));
            }
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

    async fn invite(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let num = |k: &str| args.get(k).and_then(Value::as_u64);
        let now = strew_overlay::now_ms();
        let expires_at = num("expires_ms").map(|d| now.saturating_add(d));
        let subscription = Subscription {
            plan: "invited".into(),
            source_storage: num("source_storage"),
            target_storage: num("target_storage"),
            network_bytes_per_day: num("network_per_day").unwrap_or(0),
            bandwidth: num("bandwidth").unwrap_or(0),
            expires_at,
            ..Subscription::default_plan()
        };
        let valid_until = expires_at.unwrap_or(now.saturating_add(ms(DEFAULT_TOKEN_LIFE)));
        let bootstrap = ctx
            .overlay
            .listen_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect();
        let invite = ctx
            .trust
            .invite(subscription, valid_until, bootstrap)
            .ok_or_else(Self::no_key)?
            .map_err(|e| CommandError::Internal(crate::grid::error_text(&e)))?;
        let token = crate::trust::encode_token(&invite)
            .map_err(|e| CommandError::Internal(crate::grid::error_text(&e)))?;
        Ok(json!({
            "token": token,
            "expires": valid_until,
            "expires_text": strew_coordinator::format_unix_ms(valid_until),
        }))
    }

    async fn renew(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let node = Self::node(args.clone())?;
        let now = strew_overlay::now_ms();
        let expires_at = args
            .get("expires_ms")
            .and_then(Value::as_u64)
            .map(|d| now.saturating_add(d));
        let renewal = ctx
            .trust
            .renew(node, expires_at, now)
            .ok_or_else(Self::no_key)?
            .map_err(|e| CommandError::Internal(crate::grid::error_text(&e)))?;
        OverlayManager::new(ctx.overlay.clone())
            .record_trust(ManagerRequest::Renew(renewal))
            .await?;
        Ok(json!({
            "node_id": node.to_string(),
            "expires": expires_at,
            "expires_text": expires_at.map_or("never".to_string(), strew_coordinator::format_unix_ms),
        }))
    }

    async fn members(ctx: &DaemonContext) -> Result<Value, CommandError> {
        let list = OverlayManager::new(ctx.overlay.clone()).members().await?;
        Ok(Value::Array(
            list.into_iter()
                .map(|m| {
                    json!({
                        "node_id": m.node_id.to_string(),
                        "role": m.role,
                        "online": m.online,
                        "subscription": {
                            "plan": m.subscription.plan,
                            "source_storage": m.subscription.source_storage,
                            "target_storage": m.subscription.target_storage,
                            "network_bytes_per_day": m.subscription.network_bytes_per_day,
                            "bandwidth": m.subscription.bandwidth,
                            "processor_millicores": m.subscription.processor_millicores,
                            "expires_at": m.subscription.expires_at,
                        },
                        "usage": {
                            "source_stored_bytes": m.source_stored_bytes,
                            "target_stored_bytes": m.target_stored_bytes,
                            "network_bytes_today": m.network_bytes_today,
                        },
                    })
                })
                .collect(),
        ))
    }

    async fn rebuild(ctx: &DaemonContext) -> Result<Value, CommandError> {
        let since = OverlayManager::new(ctx.overlay.clone()).rebuild().await?;
        Ok(json!({
            "rebuilt_since": since,
            "rebuilt_since_text": strew_coordinator::format_unix_ms(since),
        }))
    }

    /// Every member's inventory, page by page, through the leader: what no
    /// record references is queued for the leader's collection.
    async fn collect_unreferenced(ctx: &DaemonContext, args: Value) -> Result<Value, CommandError> {
        let grace_ms = args["grace_ms"]
            .as_u64()
            .ok_or_else(|| CommandError::BadArguments("grace_ms is required".into()))?;
        let dry_run = args["dry_run"].as_bool().unwrap_or(false);
        let manager = OverlayManager::new(ctx.overlay.clone());
        let members = manager.members().await?;
        let (mut found, mut bytes, mut targets) = (0u64, 0u64, Vec::new());
        for member in members {
            let target = member.node_id;
            let (mut after, mut t_found, mut t_bytes, mut scanned) = (None, 0u64, 0u64, 0u64);
            let mut error = None;
            for _ in 0..MAX_INVENTORY_PAGES {
                match manager
                    .collect_unreferenced(target, after, grace_ms, dry_run)
                    .await
                {
                    Ok(page) => {
                        scanned += page.scanned;
                        t_found += page.found;
                        t_bytes += page.bytes;
                        after = page.next;
                        if after.is_none() {
                            break;
                        }
                    }
                    // Not rebuilt, within the grace, not a member: the same
                    // for every target. (A target that did not answer is Busy.)
                    Err(crate::grid::GridError::Refused(r)) if r.code != RefusalCode::Busy => {
                        return Err(crate::grid::GridError::Refused(r).into());
                    }
                    Err(err) => {
                        error = Some(crate::grid::error_text(&err));
                        break;
                    }
                }
            }
            found += t_found;
            bytes += t_bytes;
            targets.push(json!({
                "node_id": target.to_string(),
                "scanned": scanned,
                "found": t_found,
                "bytes": t_bytes,
                "error": error,
            }));
        }
        Ok(json!({
            "dry_run": dry_run,
            "found": found,
            "bytes": bytes,
            "targets": targets,
        }))
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
            "grid_invite" => Box::pin(Self::invite(ctx, args)),
            "grid_renew" => Box::pin(Self::renew(ctx, args)),
            "grid_members" => Box::pin(Self::members(ctx)),
            "grid_rebuild" => Box::pin(Self::rebuild(ctx)),
            "grid_collect_unreferenced" => Box::pin(Self::collect_unreferenced(ctx, args)),
            _ => return None,
        })
    }
}
