//! The node daemon (`strew run`) and the client commands that talk to it
//! (`strew init`, `strew status`, `strew peers`).
//!
//! `run` merges the configuration, loads the identity, opens the packet store,
//! starts the overlay, the control endpoint and (optionally) the metrics
//! endpoint and the dashboard, then waits for SIGINT/SIGTERM and shuts everything down in order.
//! Other subsystems plug their control commands in through [`DaemonExtension`].
//! This module must not implement protocols (the overlay does) or storage (the store does).

pub mod audit;
pub mod browse;
pub mod browse_commands;
pub mod check_commands;
pub mod collect;
pub mod commands;
pub mod error;
pub mod grid_commands;
pub mod group;
pub mod holders;
pub mod jobs;
pub mod leave;
pub mod manager;
pub mod recover_cli;
pub mod recover_commands;
pub mod repair;
pub mod report;
pub mod rtt;
pub mod schedule;
pub mod source_commands;
pub mod storage;
pub mod upkeep;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use prometheus_client::registry::Registry;
use serde_json::Value;
use strew_overlay::OverlayHandle;
use tracing::{info, warn};

use crate::config::{self, RunArgs, Settings};
use crate::control::{self, ControlHandler};
use crate::identity;
use crate::peer_cache::PeerCache;
use crate::store::PacketStore;
pub use error::CommandError;

/// Directory of the packet store inside the data dir.
pub const PACKETS_DIR: &str = "packets";
/// How long shutdown waits for the overlay to close connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How often the peer cache is refreshed from the grid view and saved.
const PEER_CACHE_EVERY: Duration = Duration::from_secs(30);

/// What a running daemon offers to control-command handlers.
#[derive(Clone)]
pub struct DaemonContext {
    pub data_dir: PathBuf,
    pub settings: Settings,
    pub overlay: OverlayHandle,
    pub store: PacketStore,
    /// Who stored each packet here, and the snapshot roots among them.
    pub holders: holders::HolderIndex,
    pub started: Instant,
    /// The sequence manager and its coordinator-group member (coordinator nodes).
    pub coordinator: Option<Arc<manager::ManagerService>>,
    /// Nodes this node knew (kept in the data dir; locations of targets that left the view).
    pub peer_cache: Arc<Mutex<PeerCache>>,
    /// The dashboard's URL (with its token), once it is serving (`--dashboard`).
    pub dashboard_url: Arc<std::sync::OnceLock<String>>,
    /// The pinned grid id, the grid key (founder) and the convergence secret.
    pub trust: crate::trust::GridTrust,
}

/// Boxed future returned by control handlers.
pub type ControlFuture<'a> = control::HandlerFuture<'a>;

/// A subsystem's control commands (backup, restore, ...), served by the daemon.
pub trait DaemonExtension: Send + Sync + 'static {
    /// Handles `cmd` if it is this extension's; `None` passes it on.
    fn handle<'a>(
        &'a self,
        ctx: &'a DaemonContext,
        cmd: &'a str,
        args: Value,
    ) -> Option<ControlFuture<'a>>;
}

struct Handler {
    ctx: DaemonContext,
    extensions: Vec<Arc<dyn DaemonExtension>>,
}

impl ControlHandler for Handler {
    fn handle(&self, cmd: &str, args: Value) -> ControlFuture<'_> {
        let cmd = cmd.to_string();
        Box::pin(async move {
            match cmd.as_str() {
                "status" => report::status(&self.ctx).await,
                "peers" => Ok(report::peers(&self.ctx).await),
                "leave" => leave::leave_here(&self.ctx, args).await,
                _ => {
                    for ext in &self.extensions {
                        if let Some(fut) = ext.handle(&self.ctx, &cmd, args.clone()) {
                            return fut.await;
                        }
                    }
                    Err(CommandError::UnknownCommand(cmd))
                }
            }
        })
    }
}

/// `strew run`: returns after SIGINT/SIGTERM, once everything has stopped.
/// Runs on the caller's (multi-thread) tokio runtime.
pub async fn run(data_dir: &Path, args: &RunArgs) -> anyhow::Result<()> {
    run_with(data_dir, args, Vec::new()).await
}

/// `strew run` with extra control commands.
pub async fn run_with(
    data_dir: &Path,
    args: &RunArgs,
    mut extensions: Vec<Arc<dyn DaemonExtension>>,
) -> anyhow::Result<()> {
    let (dir, run_args) = (data_dir.to_path_buf(), args.clone());
    let (settings, key, created, cache, trust) = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the data dir {}", dir.display()))?;
        let file = config::read(&dir)?;
        let settings = config::merge(&file, &run_args)?;
        let (key, created) = identity::load_or_create(&dir)?;
        let trust = crate::trust::GridTrust::open(&dir)?;
        let partial = browse::ManifestCache::new(&dir).sweep();
        if partial > 0 {
            info!(partial, "removed manifest copies a crash left half written");
        }
        Ok::<_, anyhow::Error>((settings, key, created, PeerCache::load(&dir), trust))
    })
    .await
    .context("startup task failed")??;
    let (mut settings, key, created, cache, trust) = (settings, key, created, cache, trust);
    // A restarted node rejoins through the nodes it knew, besides any configured bootstrap.
    let cached = cache.dial_addrs();
    if !cached.is_empty() {
        info!(
            nodes = cache.len(),
            addresses = cached.len(),
            "dialing nodes from the peer cache"
        );
    }
    for addr in cached {
        if !settings.bootstrap.contains(&addr) {
            settings.bootstrap.push(addr);
        }
    }
    let peer_cache = Arc::new(Mutex::new(cache));
    let node_id = identity::node_id(&key).context("the identity is not an Ed25519 key")?;
    if created {
        info!(%node_id, "created a new node identity");
    }
    let x25519 = identity::x25519_public(&key).context("cannot derive the X25519 key")?;
    let x25519_secret = identity::x25519_secret(&key).context("cannot derive the X25519 secret")?;
    let manager_key = key.clone();

    let packets_dir = data_dir.join(PACKETS_DIR);
    let capacity = settings.storage;
    let store = tokio::task::spawn_blocking(move || PacketStore::open(&packets_dir, capacity))
        .await
        .context("packet store task failed")?
        .with_context(|| {
            format!(
                "cannot open the packet store in {} (is another strew daemon using this data dir?)",
                data_dir.join(PACKETS_DIR).display()
            )
        })?;

    let holders_dir = data_dir.join(PACKETS_DIR);
    let holders = tokio::task::spawn_blocking(move || holders::HolderIndex::open(&holders_dir))
        .await
        .context("holder index task failed")?
        .context("cannot open the packet store's holder index")?;

    let mut registry = Registry::default();
    let mut overlay_config = settings.overlay_config(x25519);
    // The cost of entering an open grid's replicated state, paid once per identity.
    let policy = crate::work_stamp::join_policy_from_env()?;
    let stamp_dir = data_dir.to_path_buf();
    overlay_config.work_nonce = Some(
        tokio::task::spawn_blocking(move || {
            crate::work_stamp::load_or_compute(&stamp_dir, &node_id, policy.work_bits)
        })
        .await
        .context("proof-of-work task failed")??,
    );
    let (overlay, overlay_task) = strew_overlay::start(
        key,
        overlay_config,
        Arc::new(storage::StoreAdapter::new(store.clone()).with_holders(holders.clone())),
        Some(&mut registry),
    )
    .context("cannot start the overlay")?;
    info!(%node_id, "{}", settings.summary());

    let group_settings = group::GroupSettings::from_env().map_err(anyhow::Error::msg)?;
    let audit_settings = audit::AuditSettings::from_env().map_err(anyhow::Error::msg)?;
    let service = if settings.coordinator {
        let service = manager::ManagerService::start(
            data_dir,
            &manager_key,
            overlay.clone(),
            group_settings.config.clone(),
            settings.manager.clone(),
            strew_coordinator::repair::RepairPolicy {
                grace: u64::try_from(settings.repair_grace.as_millis()).unwrap_or(u64::MAX),
                ..Default::default()
            },
        )
        .await
        .context("cannot start the sequence manager")?;
        service.set_location_check(settings.location_check);
        service.set_join_policy(policy);
        overlay.set_manager_endpoint(Some(service.clone()));
        Some(service)
    } else {
        None
    };
    if let Some(grid) = trust.grid() {
        info!(%grid, "grid pinned");
    }
    let manager_task = tokio::spawn(group::run(
        overlay.clone(),
        service.clone(),
        group_settings,
        trust.clone(),
    ));
    let me = crate::grid::SourceIdentity {
        node_id,
        location: settings.location,
        x25519_secret,
    };
    let dir = data_dir.to_path_buf();
    let jobs = Arc::new(
        tokio::task::spawn_blocking(move || jobs::SourceJobs::open(&dir, me))
            .await
            .context("source state task failed")?
            .context("cannot open this node's source state")?
            .with_staging_limit(settings.staging_limit),
    );
    extensions.push(jobs.clone());
    extensions.push(Arc::new(grid_commands::GridCommands));

    let node_metrics = upkeep::NodeMetrics::register(&mut registry);
    let repair_metrics = repair::RepairMetrics::register(&mut registry);
    let audit_metrics = audit::AuditMetrics::register(&mut registry);
    let collect_metrics = collect::CollectMetrics::register(&mut registry);
    crate::consensus::bounds::register(&mut registry);
    let registry = Arc::new(Mutex::new(registry));
    let metrics_task = match settings.metrics {
        Some(addr) => {
            let (bound, task) = crate::metrics::serve(addr, registry.clone())
                .await
                .with_context(|| format!("cannot serve metrics on {addr}"))?;
            info!(address = %bound, "serving Prometheus metrics at /metrics");
            Some(task)
        }
        None => None,
    };

    let ctx = DaemonContext {
        holders,
        data_dir: data_dir.to_path_buf(),
        settings,
        overlay: overlay.clone(),
        store,
        started: Instant::now(),
        coordinator: service.clone(),
        peer_cache: peer_cache.clone(),
        dashboard_url: Arc::new(std::sync::OnceLock::new()),
        trust,
    };
    let dashboard_url = ctx.dashboard_url.clone();
    let dashboard_addr = ctx.settings.dashboard;
    let upkeep_task = tokio::spawn(upkeep::run(ctx.clone(), jobs.clone(), node_metrics));
    let repair_task = service.clone().map(|service| {
        let settings =
            repair::RepairSettings::new(ctx.settings.repair_grace, ctx.settings.repair_bandwidth);
        tokio::spawn(repair::run(
            service,
            ctx.store.clone(),
            settings,
            repair_metrics,
        ))
    });
    let audit_task = service
        .clone()
        .map(|service| tokio::spawn(audit::run(service, audit_settings, audit_metrics)));
    let collect_task = service
        .clone()
        .map(|service| tokio::spawn(collect::run(service, collect_metrics)));
    let schedule_task = tokio::spawn(schedule::run(ctx.clone(), jobs));
    let cache_task = tokio::spawn(keep_peer_cache(ctx.clone()));
    let rtt_task = tokio::spawn(rtt::run(ctx.clone()));
    let handler: Arc<dyn ControlHandler> = Arc::new(Handler { ctx, extensions });
    let (control_server, control_task) = control::serve(data_dir, handler.clone())
        .await
        .context("cannot start the control endpoint")?;
    info!(port = control_server.port, "control endpoint on 127.0.0.1");
    let dashboard_task = match dashboard_addr {
        Some(addr) => {
            let (bound, task) =
                crate::dashboard::serve(addr, handler, control_server.token.clone())
                    .await
                    .with_context(|| format!("cannot serve the dashboard on {addr}"))?;
            let _ = dashboard_url.set(crate::dashboard::url(bound, &control_server.token));
            info!(address = %bound, "serving the node dashboard (its URL is in `strew status`)");
            Some(task)
        }
        None => None,
    };

    let signal = wait_for_signal().await;
    info!(signal, "shutting down");
    control_task.abort();
    if let Some(task) = dashboard_task {
        task.abort();
    }
    schedule_task.abort();
    cache_task.abort();
    rtt_task.abort();
    upkeep_task.abort();
    for task in [repair_task, audit_task, collect_task]
        .into_iter()
        .flatten()
    {
        task.abort();
    }
    save_peer_cache(&ctx_for_cache(data_dir, &overlay, &peer_cache)).await;
    manager_task.abort();
    drop(control_server);
    if let Some(service) = &service {
        overlay.set_manager_endpoint(None);
        overlay.set_raft_endpoint(None);
        if let Err(err) = service.member().shutdown().await {
            warn!(%err, "the coordinator group member did not stop cleanly");
        }
    }
    if let Some(task) = metrics_task {
        task.abort();
    }
    overlay.shutdown();
    if tokio::time::timeout(SHUTDOWN_GRACE, overlay_task)
        .await
        .is_err()
    {
        warn!("the overlay did not stop within {SHUTDOWN_GRACE:?}; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

/// What refreshing the peer cache needs.
struct CacheCtx {
    data_dir: PathBuf,
    overlay: OverlayHandle,
    cache: Arc<Mutex<PeerCache>>,
}

fn ctx_for_cache(
    data_dir: &Path,
    overlay: &OverlayHandle,
    cache: &Arc<Mutex<PeerCache>>,
) -> CacheCtx {
    CacheCtx {
        data_dir: data_dir.to_path_buf(),
        overlay: overlay.clone(),
        cache: cache.clone(),
    }
}

/// Records the grid view's online peers in the cache and writes it.
async fn save_peer_cache(c: &CacheCtx) {
    let peers = c.overlay.peers();
    let snapshot = {
        let Ok(mut cache) = c.cache.lock() else {
            return;
        };
        cache.update(&peers, strew_overlay::now_ms());
        cache.clone()
    };
    let dir = c.data_dir.clone();
    match tokio::task::spawn_blocking(move || snapshot.save(&dir)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "cannot write the peer cache"),
        Err(error) => warn!(%error, "peer cache task failed"),
    }
}

/// Refreshes the peer cache every [`PEER_CACHE_EVERY`].
///
/// The first saves come quickly (every 5 s for the first minute), so a node
/// that dies soon after joining still finds its way back.
async fn keep_peer_cache(ctx: DaemonContext) {
    let c = ctx_for_cache(&ctx.data_dir, &ctx.overlay, &ctx.peer_cache);
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        save_peer_cache(&c).await;
    }
    let mut every = tokio::time::interval(PEER_CACHE_EVERY);
    every.tick().await;
    loop {
        every.tick().await;
        save_peer_cache(&c).await;
    }
}

/// Waits for SIGINT or SIGTERM; returns its name.
async fn wait_for_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot install signal handlers; stop the daemon with SIGKILL");
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
