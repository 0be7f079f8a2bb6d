//! What `strew status --json` and `strew peers --json` return, built from a
//! running daemon. Owns the JSON shapes (SPEC.md §4; `group` is the
//! coordinator group as this member sees it, on coordinator nodes only); it
//! must not print.

use serde_json::{Value, json};
use strew_overlay::PeerInfo;

use super::{CommandError, DaemonContext};

/// `strew status --json`.
pub async fn status(ctx: &DaemonContext) -> Result<Value, CommandError> {
    let (store, holders) = (ctx.store.clone(), ctx.holders.clone());
    let (usage, disk, roots) = tokio::task::spawn_blocking(move || {
        (store.usage(), store.disk_usage(), holders.root_count())
    })
    .await
    .map_err(|e| CommandError::task("store", e))?;
    // A damaged index only loses this figure, not the status.
    let roots = roots
        .inspect_err(|err| tracing::warn!(%err, "cannot count the snapshot roots kept here"))
        .ok();
    let usage = usage.map_err(|source| CommandError::Store {
        what: "cannot read store usage",
        source,
    })?;
    let disk = disk.map_err(|source| CommandError::Store {
        what: "cannot read the store's disk use",
        source,
    })?;
    let overlay = &ctx.overlay;
    let peers = overlay.peers();
    let group = ctx.coordinator.as_ref().map(|service| {
        let status = service.group_status();
        let mut value = serde_json::to_value(&status).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.insert(
                "leader_node_id".into(),
                json!(service.leader().map(|l| l.to_string())),
            );
            map.insert("commit_index".into(), json!(status.last_applied));
        }
        value
    });
    Ok(json!({
        "node_id": overlay.node_id().to_string(),
        "listen_addrs": overlay.listen_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "location": {"lat": ctx.settings.location.lat, "lon": ctx.settings.location.lon},
        // AutoNAT: whether others can dial this node, and the addresses
        // they can use (confirmed external ones, and through relays).
        "reachability": overlay.reachability().as_str(),
        "reachable_addrs": overlay.reachable_addrs().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "manager": overlay.manager().map(|m| m.to_string()),
        "grid_id": ctx.trust.grid().map(|g| g.to_string()),
        "trusted_managers": overlay
            .trusted_managers()
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>(),
        "peers": peers.len(),
        "online_peers": peers.iter().filter(|p| p.online).count(),
        "connected_peers": overlay.connected_peers(),
        "coordinator_eligible": ctx.settings.coordinator,
        "group": group,
        // On the group's leader: stripes its repair checker queued.
        "repairs_pending": ctx
            .coordinator
            .as_ref()
            .filter(|s| s.leads())
            .map(|s| s.repairs_pending()),
        // On coordinators: packets freed but not yet deleted from their
        // targets (the replicated collection queue the leader delivers).
        "collection_queue": ctx.coordinator.as_ref().map(|s| s.collection_queue()),
        // On coordinators: since when the group is a rebuilt one (issue 18).
        "rebuilt_since": ctx.coordinator.as_ref().and_then(|s| s.rebuilt_since()),
        // On coordinators: what this node rebuilt as the leader's repairer.
        "repaired": ctx.coordinator.as_ref().map(|s| s.repaired().to_json()),
        "storage": {
            "capacity_bytes": usage.capacity,
            "used_bytes": usage.used_bytes,
            "free_bytes": usage.free_bytes,
            "packets": usage.packets,
            // Of `packets`: other nodes' snapshot roots (issue 18).
            "root_packets": roots,
            "disk_bytes": disk.disk_bytes,
            "garbage_bytes": disk.garbage_bytes,
            "compactions": disk.compactions,
            "reclaimed_bytes": disk.reclaimed_bytes,
        },
        "bandwidth_limit": ctx.settings.bandwidth,
        "uptime_secs": ctx.started.elapsed().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": ctx.data_dir.display().to_string(),
        "dashboard_url": ctx.dashboard_url.get(),
    }))
}

/// One entry of `strew peers --json`.
pub fn peer_json(p: &PeerInfo) -> Value {
    json!({
        "node_id": p.node_id.to_string(),
        "location": {"lat": p.lat, "lon": p.lon},
        "free_bytes": p.free_bytes,
        "storage_allocated": p.storage_allocated,
        "bandwidth_limit": p.bandwidth_limit,
        "load": p.load,
        "uptime_secs": p.uptime_secs,
        "coordinator_eligible": p.coordinator_eligible,
        "protocol_version": p.protocol_version,
        "listen_addrs": p.listen_addrs,
        "announced_at": p.announced_at,
        "expires_at": p.expires_at,
        "online": p.online,
        "city": city_near(p.lat, p.lon),
    })
}

/// The name of the city within 50 km of a location (`"Lyon, FR"`), if any.
pub fn city_near(lat: f64, lon: f64) -> Option<String> {
    let table = strew_coordinator::cities::CityTable::embedded().ok()?;
    table
        .nearest(lat, lon, 50.0)
        .map(|(c, _)| format!("{}, {}", c.name, c.country))
}

/// How long `peers` waits for the manager's location evidence.
const EVIDENCE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// `strew peers --json`: the grid view, each entry with the manager's
/// location evidence (`verdict: "unknown"` when no manager answered). On a
/// coordinator each entry also carries the node's `audit` record (`score`
/// in 0..1, `passed`, `failed`, `vetted`, `disqualified`), `null` for nodes
/// never given packets.
pub async fn peers(ctx: &DaemonContext) -> Value {
    // Without a known manager there is nobody to ask: don't wait.
    let evidence = match ctx.overlay.manager() {
        Some(_) => crate::grid::overlay::OverlayManager::new(ctx.overlay.clone())
            .with_patience(EVIDENCE_PATIENCE)
            .evidence()
            .await
            .ok(),
        None => None,
    }
    .map(|list| {
        list.into_iter()
            .map(|e| (e.node, e))
            .collect::<std::collections::BTreeMap<_, _>>()
    });
    let policy = strew_coordinator::audit::AuditPolicy::default();
    let audits = ctx.coordinator.as_ref().map(|s| s.reputations(&policy));
    Value::Array(
        ctx.overlay
            .peers()
            .iter()
            .map(|p| {
                let mut entry = peer_json(p);
                let found = evidence.as_ref().map(|all| all.get(&p.node_id));
                let value = match found {
                    Some(Some(e)) => json!({
                        "consistent": e.consistent,
                        "refuted": e.refuted,
                        "verdict": e.verdict.as_str(),
                    }),
                    Some(None) => json!({"consistent": 0, "refuted": 0, "verdict": "unchecked"}),
                    None => json!({"consistent": 0, "refuted": 0, "verdict": "unknown"}),
                };
                if let Value::Object(map) = &mut entry {
                    map.insert("location_evidence".into(), value);
                    if let Some(audits) = &audits {
                        let audit = audits.get(&p.node_id).map(|(r, vetted)| {
                            json!({
                                "score": f64::from(r.score_milli()) / 1000.0,
                                "passed": r.passed,
                                "failed": r.failed,
                                "vetted": vetted,
                                "disqualified": r.is_disqualified(),
                            })
                        });
                        map.insert("audit".into(), audit.unwrap_or(Value::Null));
                    }
                }
                entry
            })
            .collect(),
    )
}
