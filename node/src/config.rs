//! The node's configuration: `DATA_DIR/config.toml`, overridden by command-line
//! flags and their `STREW_*` environment variables (flag > env > file > default).
//!
//! Owns the file format, the `init`/`run` flags, merging and validation, and
//! building the overlay's configuration from the result. It must not start
//! anything.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use strew_coordinator::{
    GeoPoint, LocationCheck, ManagerConfig, format_duration, format_size, parse_duration,
    parse_size,
};
use strew_overlay::{LocalProfile, Multiaddr, OverlayConfig};

/// File name of the config inside the data dir.
pub const CONFIG_FILE: &str = "config.toml";

/// Errors reading, merging or writing the config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid strew config")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("cannot serialise the config")]
    Serialize(#[source] toml::ser::Error),
    #[error("config value {key} = {value:?} is invalid: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error(
        "no location configured: pass --location LAT,LON (e.g. 48.8566,2.3522) or set it once with `strew init --location`"
    )]
    NoLocation,
}

/// `config.toml`. Every field is optional; sizes and durations are text (`20GiB`, `10m`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `LAT,LON` in degrees.
    pub location: Option<String>,
    /// Storage donated to the grid.
    pub storage: Option<String>,
    pub coordinator: Option<bool>,
    pub listen: Option<Vec<String>>,
    pub bootstrap: Option<Vec<String>>,
    /// Packet bandwidth limit per second (`10MB`); `0` = unlimited.
    pub bandwidth: Option<String>,
    /// Prometheus endpoint address, e.g. `127.0.0.1:9464`.
    pub metrics: Option<String>,
    /// Node dashboard address, e.g. `127.0.0.1:8080`.
    pub dashboard: Option<String>,
    pub announce_interval: Option<String>,
    pub peer_ttl: Option<String>,
    pub max_packet: Option<String>,
    /// Bytes of inbound messages held at once from all peers (`256MiB`).
    pub inbound_budget: Option<String>,
    /// Most nodes the grid view holds (default 200000).
    pub max_grid_nodes: Option<usize>,
    /// Bytes of unreceipted packets a backup stages in the outbox (`1GiB`).
    pub staging_limit: Option<String>,
    /// Coordinators: how long a planned backup may stay uncommitted beyond
    /// its upload time (`15m`).
    pub pending_ttl: Option<String>,
    /// Coordinators: stored bytes one source may hold reserved by plans not
    /// yet committed (`32GiB`).
    pub pending_per_source: Option<String>,
    /// Coordinators: room placement grants a target beyond what it has
    /// proven by storing (`4GiB`).
    pub unproven_allowance: Option<String>,
    /// Coordinators: the upload rate a plan's deadline assumes, per second
    /// (`256KiB`): a plan lives `pending_ttl` plus its bytes at this rate.
    pub plan_upload_rate: Option<String>,
    /// Coordinators: how long a source's snapshots are kept after its
    /// subscription expired (`30d`); then they are forgotten and deleted.
    pub subscription_grace: Option<String>,
    /// How long a target may stay unreachable before the leader rebuilds its
    /// packets elsewhere (`4h`).
    pub repair_grace: Option<String>,
    /// Pace of the leader's repair traffic per second (`8MB`); `0` = unlimited.
    pub repair_bandwidth: Option<String>,
    /// What a location claim refuted by measured RTTs costs: `off`, `warn`
    /// (default: flagged only) or `enforce` (never a target).
    pub location_check: Option<String>,
}

/// Flags shared by `init` and `run` (each also read from `STREW_*`).
#[derive(Args, Debug, Clone, Default)]
pub struct NodeFlags {
    /// Declared location of this node, `LAT,LON` in degrees.
    #[arg(
        long,
        env = "STREW_LOCATION",
        value_name = "LAT,LON",
        allow_hyphen_values = true
    )]
    pub location: Option<GeoPoint>,
    /// Storage this node donates to the grid (`20GiB`, `500MB`).
    #[arg(long, env = "STREW_STORAGE", value_name = "SIZE", value_parser = parse_size)]
    pub storage: Option<u64>,
    /// Offer this node as a member of the coordinator group.
    #[arg(long, env = "STREW_COORDINATOR")]
    pub coordinator: bool,
}

/// `strew init` flags.
#[derive(Args, Debug, Clone, Default)]
pub struct InitArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Address of a node of the grid to join, kept in `config.toml` so every
    /// `strew run` (and a systemd unit without flags) uses it; repeatable.
    /// Best with `/p2p/<node_id>` at the end (then the node is also checked).
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    pub bootstrap: Vec<Multiaddr>,
    /// The id of the grid this node belongs to (printed by `strew grid
    /// create` on its founder): pinned in the data dir, so member lists,
    /// certificates and tickets of any other grid are refused. Without it
    /// the node pins the first grid it joins (trust on first use).
    #[arg(long, value_name = "GRID_ID", conflicts_with = "join")]
    pub grid: Option<strew_coordinator::GridId>,
    /// A join token from `strew grid invite` (a closed grid): pins its grid,
    /// stores its convergence secret and bootstrap address; the node is
    /// admitted with the token's subscription when it first reaches the
    /// manager.
    #[arg(long, value_name = "TOKEN")]
    pub join: Option<String>,
}

/// `strew run` flags.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub node: NodeFlags,
    /// Address to listen on (repeatable). Default: TCP and QUIC on all interfaces, ephemeral ports.
    #[arg(
        long,
        env = "STREW_LISTEN",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub listen: Vec<Multiaddr>,
    /// Address of a node of the grid to join (repeatable). Best with
    /// `/p2p/<node_id>` at the end: the node is then checked to be that one;
    /// without it the address is dialled and whoever answers is used. After
    /// the first run the node also rejoins through the peers it remembers.
    #[arg(
        long,
        env = "STREW_BOOTSTRAP",
        value_name = "MULTIADDR",
        value_delimiter = ','
    )]
    pub bootstrap: Vec<Multiaddr>,
    /// Bandwidth limit for packet transfers, per second (`10MB`); 0 = unlimited.
    #[arg(long, env = "STREW_BANDWIDTH", value_name = "SIZE", value_parser = parse_size)]
    pub bandwidth: Option<u64>,
    /// Serve Prometheus metrics on this address (`127.0.0.1:9464`).
    #[arg(long, env = "STREW_METRICS", value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Serve the node dashboard (a read-only web page, protected by the control
    /// token) on this address, e.g. `127.0.0.1:8080`; `strew status` prints its URL.
    /// Off by default; keep it on 127.0.0.1 unless you mean to expose it.
    #[arg(long, env = "STREW_DASHBOARD", value_name = "ADDR")]
    pub dashboard: Option<SocketAddr>,
    /// Shortest period between this node's announcements (`10m`); grows with the grid.
    #[arg(long, env = "STREW_ANNOUNCE_INTERVAL", value_name = "DURATION", value_parser = parse_duration)]
    pub announce_interval: Option<Duration>,
    /// How long peers keep this node's entry without hearing from it (`45m`).
    #[arg(long, env = "STREW_PEER_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub peer_ttl: Option<Duration>,
    /// Largest packet this node accepts as a target (at most 5MiB).
    #[arg(long, env = "STREW_MAX_PACKET", value_name = "SIZE", value_parser = parse_size)]
    pub max_packet: Option<u64>,
    /// Bytes of inbound messages held at once from all peers (`256MiB`, at
    /// least 96MiB); past it new streams are refused unread.
    #[arg(long, env = "STREW_INBOUND_BUDGET", value_name = "SIZE", value_parser = parse_size)]
    pub inbound_budget: Option<u64>,
    /// Most nodes the grid view holds (default 200000); past it the least
    /// recently confirmed node makes room for a new one.
    #[arg(long, env = "STREW_MAX_GRID_NODES", value_name = "N")]
    pub max_grid_nodes: Option<usize>,
    /// Bytes of packets not yet receipted that a backup stages in the
    /// outbox (`1GiB`); past it the pipeline waits for uploads.
    #[arg(long, env = "STREW_STAGING_LIMIT", value_name = "SIZE", value_parser = parse_size)]
    pub staging_limit: Option<u64>,
    /// Coordinators: how long a planned backup may stay uncommitted beyond
    /// the upload time its size needs (`15m`).
    #[arg(long, env = "STREW_PENDING_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub pending_ttl: Option<Duration>,
    /// Coordinators: stored bytes one source may hold reserved by backups
    /// not yet committed (`32GiB`).
    #[arg(long, env = "STREW_PENDING_PER_SOURCE", value_name = "SIZE", value_parser = parse_size)]
    pub pending_per_source: Option<u64>,
    /// Coordinators: room placement grants a target beyond what it has
    /// proven by storing (`4GiB`); announced space past that is not believed.
    #[arg(long, env = "STREW_UNPROVEN_ALLOWANCE", value_name = "SIZE", value_parser = parse_size)]
    pub unproven_allowance: Option<u64>,
    /// Coordinators: the upload rate (bytes per second) a plan's deadline
    /// assumes (`256KiB`): a plan lives `--pending-ttl` plus its bytes at
    /// this rate, so a source that vanishes frees its reservations and its
    /// uploads are collected that much sooner.
    #[arg(long, env = "STREW_PLAN_UPLOAD_RATE", value_name = "SIZE", value_parser = parse_size)]
    pub plan_upload_rate: Option<u64>,
    /// Coordinators: how long a source's snapshots are kept after its
    /// subscription expired (default 30d); then the leader forgets them and
    /// their packets are deleted.
    #[arg(long, env = "STREW_SUBSCRIPTION_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub subscription_grace: Option<Duration>,
    /// How long a target may stay unreachable before the coordinator group's
    /// leader rebuilds its packets on other targets (default 4h).
    #[arg(long, env = "STREW_REPAIR_GRACE", value_name = "DURATION", value_parser = parse_duration)]
    pub repair_grace: Option<Duration>,
    /// Pace of repair traffic on the leader, per second (default 8MB); 0 = unlimited.
    #[arg(long, env = "STREW_REPAIR_BANDWIDTH", value_name = "SIZE", value_parser = parse_size)]
    pub repair_bandwidth: Option<u64>,
    /// Coordinators: what a location claim that measured round-trip times
    /// refute costs: `off`, `warn` (flag it; the default) or `enforce`
    /// (never choose the node as a target). A loopback grid whose nodes
    /// claim far-apart cities is refuted, correctly: run it with warn or off.
    #[arg(long, env = "STREW_LOCATION_CHECK", value_name = "off|warn|enforce")]
    pub location_check: Option<LocationCheck>,
}

/// The merged, validated settings of a node.
#[derive(Debug, Clone)]
pub struct Settings {
    pub location: GeoPoint,
    pub storage: u64,
    pub coordinator: bool,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub bandwidth: u64,
    pub metrics: Option<SocketAddr>,
    pub dashboard: Option<SocketAddr>,
    pub announce_interval: Option<Duration>,
    pub peer_ttl: Option<Duration>,
    pub max_packet: Option<u64>,
    pub inbound_budget: Option<u64>,
    pub max_grid_nodes: Option<usize>,
    /// Bytes of unreceipted packets a backup stages in the outbox.
    pub staging_limit: u64,
    /// The sequence manager's configuration (coordinators).
    pub manager: ManagerConfig,
    pub repair_grace: Duration,
    pub repair_bandwidth: u64,
    pub location_check: LocationCheck,
}

/// Default donation when none is configured.
pub const DEFAULT_STORAGE: u64 = 1 << 30;
/// Default `repair_grace`: the coordinator's default repair policy (4 h).
pub const DEFAULT_REPAIR_GRACE: Duration =
    Duration::from_millis(strew_coordinator::repair::DEFAULT_REPAIR_GRACE);

/// Path of the config file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(CONFIG_FILE)
}

/// Reads `config.toml` (an absent file is an empty config).
pub fn read(data_dir: &Path) -> Result<FileConfig, ConfigError> {
    let file = path(data_dir);
    match fs::read_to_string(&file) {
        Ok(text) => {
            toml::from_str(&text).map_err(|source| ConfigError::Parse { path: file, source })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(source) => Err(ConfigError::Io { path: file, source }),
    }
}

/// Writes `config.toml`.
pub fn write(data_dir: &Path, config: &FileConfig) -> Result<(), ConfigError> {
    let file = path(data_dir);
    let text = toml::to_string_pretty(config).map_err(ConfigError::Serialize)?;
    fs::create_dir_all(data_dir).map_err(|source| ConfigError::Io {
        path: file.clone(),
        source,
    })?;
    fs::write(&file, text).map_err(|source| ConfigError::Io { path: file, source })
}

/// Applies `init` flags to a file config (what `strew init` persists).
pub fn apply_init(mut file: FileConfig, args: &InitArgs) -> FileConfig {
    let flags = &args.node;
    if !args.bootstrap.is_empty() {
        file.bootstrap = Some(args.bootstrap.iter().map(|a| a.to_string()).collect());
    }
    if let Some(loc) = flags.location {
        file.location = Some(loc.to_string());
    }
    if let Some(storage) = flags.storage {
        file.storage = Some(format_size(storage));
    }
    if flags.coordinator {
        file.coordinator = Some(true);
    }
    file
}

fn invalid(key: &'static str, value: &str, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn parse_addrs(
    key: &'static str,
    list: &Option<Vec<String>>,
) -> Result<Vec<Multiaddr>, ConfigError> {
    list.iter()
        .flatten()
        .map(|a| a.parse::<Multiaddr>().map_err(|e| invalid(key, a, e)))
        .collect()
}

/// Merges flags over the file config and validates the result.
pub fn merge(file: &FileConfig, args: &RunArgs) -> Result<Settings, ConfigError> {
    let location = match args.node.location {
        Some(l) => l,
        None => match &file.location {
            Some(text) => text.parse().map_err(|e| invalid("location", text, e))?,
            None => return Err(ConfigError::NoLocation),
        },
    };
    let storage = match (args.node.storage, &file.storage) {
        (Some(s), _) => s,
        (None, Some(text)) => parse_size(text).map_err(|e| invalid("storage", text, e))?,
        (None, None) => DEFAULT_STORAGE,
    };
    let bandwidth = match (args.bandwidth, &file.bandwidth) {
        (Some(b), _) => b,
        (None, Some(text)) => parse_size(text).map_err(|e| invalid("bandwidth", text, e))?,
        (None, None) => 0,
    };
    let duration =
        |key: &'static str, flag: Option<Duration>, text: &Option<String>| match (flag, text) {
            (Some(d), _) => Ok(Some(d)),
            (None, Some(t)) => parse_duration(t).map(Some).map_err(|e| invalid(key, t, e)),
            (None, None) => Ok(None),
        };
    let metrics = match (args.metrics, &file.metrics) {
        (Some(m), _) => Some(m),
        (None, Some(text)) => Some(text.parse().map_err(|e| invalid("metrics", text, e))?),
        (None, None) => None,
    };
    let dashboard = match (args.dashboard, &file.dashboard) {
        (Some(m), _) => Some(m),
        (None, Some(text)) => Some(text.parse().map_err(|e| invalid("dashboard", text, e))?),
        (None, None) => None,
    };
    let max_packet = match (args.max_packet, &file.max_packet) {
        (Some(m), _) => Some(m),
        (None, Some(text)) => Some(parse_size(text).map_err(|e| invalid("max_packet", text, e))?),
        (None, None) => None,
    };
    let inbound_budget = match (args.inbound_budget, &file.inbound_budget) {
        (Some(b), _) => Some(b),
        (None, Some(text)) => {
            Some(parse_size(text).map_err(|e| invalid("inbound_budget", text, e))?)
        }
        (None, None) => None,
    };
    let size = |key: &'static str, flag: Option<u64>, text: &Option<String>| match (flag, text) {
        (Some(b), _) => Ok(Some(b)),
        (None, Some(t)) => parse_size(t).map(Some).map_err(|e| invalid(key, t, e)),
        (None, None) => Ok(None),
    };
    let mut manager = ManagerConfig::default();
    if let Some(ttl) = duration("pending_ttl", args.pending_ttl, &file.pending_ttl)? {
        manager.pending_ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    }
    if let Some(grace) = duration(
        "subscription_grace",
        args.subscription_grace,
        &file.subscription_grace,
    )? {
        manager.subscription_grace = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    }
    let limits = &mut manager.reservations;
    if let Some(b) = size(
        "pending_per_source",
        args.pending_per_source,
        &file.pending_per_source,
    )? {
        limits.pending_bytes_per_source = b;
    }
    if let Some(b) = size(
        "unproven_allowance",
        args.unproven_allowance,
        &file.unproven_allowance,
    )? {
        limits.unproven_allowance = b;
    }
    if let Some(b) = size(
        "plan_upload_rate",
        args.plan_upload_rate,
        &file.plan_upload_rate,
    )? {
        limits.upload_rate = b.max(1);
    }
    let repair_grace = duration("repair_grace", args.repair_grace, &file.repair_grace)?
        .unwrap_or(DEFAULT_REPAIR_GRACE);
    let repair_bandwidth = match (args.repair_bandwidth, &file.repair_bandwidth) {
        (Some(b), _) => b,
        (None, Some(text)) => parse_size(text).map_err(|e| invalid("repair_bandwidth", text, e))?,
        (None, None) => crate::daemon::repair::DEFAULT_REPAIR_BANDWIDTH,
    };
    let location_check = match (args.location_check, &file.location_check) {
        (Some(c), _) => c,
        (None, Some(text)) => text
            .parse()
            .map_err(|e| invalid("location_check", text, e))?,
        (None, None) => LocationCheck::default(),
    };
    Ok(Settings {
        location_check,
        location,
        storage,
        coordinator: args.node.coordinator || file.coordinator.unwrap_or(false),
        listen: if args.listen.is_empty() {
            parse_addrs("listen", &file.listen)?
        } else {
            args.listen.clone()
        },
        bootstrap: if args.bootstrap.is_empty() {
            parse_addrs("bootstrap", &file.bootstrap)?
        } else {
            args.bootstrap.clone()
        },
        bandwidth,
        metrics,
        dashboard,
        announce_interval: duration(
            "announce_interval",
            args.announce_interval,
            &file.announce_interval,
        )?,
        peer_ttl: duration("peer_ttl", args.peer_ttl, &file.peer_ttl)?,
        max_packet,
        inbound_budget,
        max_grid_nodes: args.max_grid_nodes.or(file.max_grid_nodes),
        staging_limit: size("staging_limit", args.staging_limit, &file.staging_limit)?
            .unwrap_or(crate::grid::stream::DEFAULT_STAGING_LIMIT),
        manager,
        repair_grace,
        repair_bandwidth,
    })
}

impl Settings {
    /// The overlay configuration for these settings.
    pub fn overlay_config(&self, x25519_public: [u8; 32]) -> OverlayConfig {
        let mut c = OverlayConfig::new(LocalProfile {
            lat: self.location.lat,
            lon: self.location.lon,
            storage_allocated: self.storage,
            bandwidth_limit: self.bandwidth,
            coordinator_eligible: self.coordinator,
            x25519_public,
        });
        if !self.listen.is_empty() {
            c.listen = self.listen.clone();
        }
        c.bootstrap = self.bootstrap.clone();
        c.bandwidth = self.bandwidth;
        // Coordinators must be reachable anyway: they offer the relay
        // service (coordination only) to nodes behind NAT.
        c.relay_service = self.coordinator;
        if let Some(i) = self.announce_interval {
            c.announce_interval = i;
            if self.peer_ttl.is_none() {
                c.peer_ttl = c.peer_ttl.max(3 * i);
            }
        }
        if let Some(t) = self.peer_ttl {
            c.peer_ttl = t;
        }
        if let Some(m) = self.max_packet {
            c.max_packet_bytes = m;
        }
        if let Some(b) = self.inbound_budget {
            c.inbound_budget = usize::try_from(b).unwrap_or(usize::MAX);
        }
        if let Some(n) = self.max_grid_nodes {
            c.max_grid_nodes = n;
        }
        // A knob for tests (one machine is one IP): new node ids per minute
        // gossip takes in from one delivering address.
        if let Some(n) = std::env::var(ENV_NEW_NODES_PER_IP)
            .ok()
            .and_then(|t| t.trim().parse().ok())
        {
            c.new_nodes_per_ip = n;
        }
        c
    }

    /// A one-line human summary for the startup log.
    pub fn summary(&self) -> String {
        format!(
            "location {}, donating {}, bandwidth {}, coordinator {}",
            self.location,
            format_size(self.storage),
            if self.bandwidth == 0 {
                "unlimited".to_string()
            } else {
                format!("{}/s", format_size(self.bandwidth))
            },
            self.coordinator,
        ) + &self
            .announce_interval
            .map(|d| format!(", announce every {}", format_duration(d)))
            .unwrap_or_default()
            + &if self.coordinator {
                format!(
                    ", repair grace {}, location check {}",
                    format_duration(self.repair_grace),
                    self.location_check
                )
            } else {
                String::new()
            }
    }
}

/// Environment override of the overlay's `new_nodes_per_ip` (0: no limit).
pub const ENV_NEW_NODES_PER_IP: &str = "STREW_NEW_NODES_PER_IP";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let file = FileConfig {
            location: Some("10,20".into()),
            storage: Some("2GiB".into()),
            bandwidth: Some("1MB".into()),
            ..Default::default()
        };
        let s = merge(&file, &RunArgs::default()).unwrap();
        assert_eq!((s.location.lat, s.location.lon), (10.0, 20.0));
        assert_eq!(s.storage, 2 << 30);
        assert_eq!(s.bandwidth, 1_000_000);
        let args = RunArgs {
            node: NodeFlags {
                location: Some("1,2".parse().unwrap()),
                storage: Some(5),
                coordinator: true,
            },
            ..Default::default()
        };
        let s = merge(&file, &args).unwrap();
        assert_eq!(
            (s.location.lat, s.location.lon, s.storage, s.coordinator),
            (1.0, 2.0, 5, true)
        );
    }

    #[test]
    fn staging_limit_comes_from_the_flag_the_file_or_the_default() {
        let file = FileConfig {
            location: Some("10,20".into()),
            staging_limit: Some("256MiB".into()),
            ..Default::default()
        };
        let s = merge(&file, &RunArgs::default()).unwrap();
        assert_eq!(s.staging_limit, 256 << 20);
        let args = RunArgs {
            staging_limit: Some(5 << 20),
            ..Default::default()
        };
        assert_eq!(merge(&file, &args).unwrap().staging_limit, 5 << 20);
        let file = FileConfig {
            staging_limit: None,
            ..file
        };
        let s = merge(&file, &RunArgs::default()).unwrap();
        assert_eq!(s.staging_limit, crate::grid::stream::DEFAULT_STAGING_LIMIT);
        let file = FileConfig {
            staging_limit: Some("lots".into()),
            ..file
        };
        assert!(merge(&file, &RunArgs::default()).is_err());
    }

    #[test]
    fn missing_location_and_bad_values_are_explained() {
        let err = merge(&FileConfig::default(), &RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("--location"), "{err}");
        let file = FileConfig {
            location: Some("123,0".into()),
            ..Default::default()
        };
        let err = merge(&file, &RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("location"), "{err}");
    }

    #[test]
    fn reservation_limits_come_from_the_file_and_flags_win() {
        let file = FileConfig {
            location: Some("1,2".into()),
            pending_ttl: Some("5m".into()),
            pending_per_source: Some("1GiB".into()),
            unproven_allowance: Some("512MiB".into()),
            plan_upload_rate: Some("1MiB".into()),
            subscription_grace: Some("7d".into()),
            ..Default::default()
        };
        let s = merge(&file, &RunArgs::default()).unwrap();
        assert_eq!(s.manager.pending_ttl, 5 * 60 * 1000);
        assert_eq!(s.manager.reservations.upload_rate, 1 << 20);
        assert_eq!(s.manager.subscription_grace, 7 * 24 * 3600 * 1000);
        assert_eq!(s.manager.reservations.pending_bytes_per_source, 1 << 30);
        assert_eq!(s.manager.reservations.unproven_allowance, 512 << 20);
        let args = RunArgs {
            unproven_allowance: Some(8 << 20),
            plan_upload_rate: Some(64 << 20),
            ..Default::default()
        };
        let s = merge(&file, &args).unwrap();
        assert_eq!(s.manager.reservations.unproven_allowance, 8 << 20);
        assert_eq!(s.manager.reservations.upload_rate, 64 << 20);
        // Unset: the manager's defaults.
        let plain = FileConfig {
            location: Some("1,2".into()),
            ..Default::default()
        };
        let s = merge(&plain, &RunArgs::default()).unwrap();
        assert_eq!(s.manager, ManagerConfig::default());
        let bad = FileConfig {
            unproven_allowance: Some("lots".into()),
            ..plain
        };
        let err = merge(&bad, &RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("unproven_allowance"), "{err}");
    }

    #[test]
    fn location_check_comes_from_the_flag_then_the_file_then_warn() {
        let base = FileConfig {
            location: Some("10,20".into()),
            ..Default::default()
        };
        let s = merge(&base, &RunArgs::default()).unwrap();
        assert_eq!(s.location_check, LocationCheck::Warn);
        let file = FileConfig {
            location_check: Some("enforce".into()),
            ..base.clone()
        };
        assert_eq!(
            merge(&file, &RunArgs::default()).unwrap().location_check,
            LocationCheck::Enforce
        );
        let args = RunArgs {
            location_check: Some(LocationCheck::Off),
            ..Default::default()
        };
        assert_eq!(
            merge(&file, &args).unwrap().location_check,
            LocationCheck::Off
        );
        let bad = FileConfig {
            location_check: Some("strict".into()),
            ..base
        };
        let err = merge(&bad, &RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("location_check"), "{err}");
    }

    #[test]
    fn repair_settings_come_from_flags_then_file_then_defaults() {
        let base = FileConfig {
            location: Some("10,20".into()),
            ..Default::default()
        };
        let s = merge(&base, &RunArgs::default()).unwrap();
        assert_eq!(s.repair_grace, Duration::from_secs(4 * 3600));
        assert_eq!(
            s.repair_bandwidth,
            crate::daemon::repair::DEFAULT_REPAIR_BANDWIDTH
        );
        let file = FileConfig {
            repair_grace: Some("30m".into()),
            repair_bandwidth: Some("2MB".into()),
            ..base.clone()
        };
        let s = merge(&file, &RunArgs::default()).unwrap();
        assert_eq!(s.repair_grace, Duration::from_secs(30 * 60));
        assert_eq!(s.repair_bandwidth, 2_000_000);
        let args = RunArgs {
            repair_grace: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        assert_eq!(
            merge(&file, &args).unwrap().repair_grace,
            Duration::from_secs(3)
        );
        let bad = FileConfig {
            repair_grace: Some("soon".into()),
            ..base
        };
        let err = merge(&bad, &RunArgs::default()).unwrap_err();
        assert!(err.to_string().contains("repair_grace"), "{err}");
    }

    #[test]
    fn config_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let flags = NodeFlags {
            location: Some("48.85,2.35".parse().unwrap()),
            storage: Some(10 << 30),
            coordinator: true,
        };
        let boot: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let args = InitArgs {
            node: flags,
            bootstrap: vec![boot.clone()],
            grid: None,
            join: None,
        };
        let file = apply_init(FileConfig::default(), &args);
        write(dir.path(), &file).unwrap();
        assert_eq!(read(dir.path()).unwrap(), file);
        let s = merge(&file, &RunArgs::default()).unwrap();
        assert_eq!(s.storage, 10 << 30);
        // `init --bootstrap` is what a later `strew run` without flags uses.
        assert_eq!(s.bootstrap, vec![boot]);
    }
}
