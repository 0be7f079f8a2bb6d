//! The process harness for strew's integration tests: finds (or builds) the
//! `strew` binary, starts nodes on 127.0.0.1 in temporary data dirs, talks to
//! them through the CLI, and waits for conditions with deadlines.
//!
//! A [`Node`] kills its process and removes its data dir when dropped, so a
//! failing test leaves nothing behind. This crate must not know strew's
//! internals: it only runs the binary and speaks the documented control
//! endpoint (docs/protocol.md), like a user or a script would.
//!
//! Tests never sleep for a fixed time to let something happen: they wait for
//! an observable condition with [`wait_for`] (or [`wait_exit`] for a process),
//! which fails with a message naming what did not happen. Every node listens
//! on ports the OS picks and lives in its own temporary dir, so tests run in
//! parallel (cargo-nextest runs each in its own process).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;

pub mod netns;
pub mod tools;

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// The `target/<profile>` directory the running test executable lives in.
fn target_profile_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/debug/deps/<test-binary>
    let deps = exe.parent()?;
    let dir = if deps.file_name()? == "deps" {
        deps.parent()?
    } else {
        deps
    };
    Some(dir.to_path_buf())
}

/// Path of the `strew` binary, built once per test process (a no-op when it
/// is up to date). Integration tests cannot use `CARGO_BIN_EXE_strew` because
/// the binary belongs to another package. `STREW_BIN=/path/to/strew` runs the
/// tests against that binary instead and builds nothing.
pub fn strew_bin() -> Result<PathBuf> {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("STREW_BIN") {
            let bin = PathBuf::from(bin);
            return if bin.is_file() {
                Ok(bin)
            } else {
                Err(format!("STREW_BIN={} is not a file", bin.display()))
            };
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "strew-node", "--bin", "strew"])
            .current_dir(workspace_root())
            .status()
            .map_err(|e| format!("cannot run cargo to build strew: {e}"))?;
        if !status.success() {
            return Err(format!("building strew failed: {status}"));
        }
        let bin = target_profile_dir()
            .map(|d| d.join("strew"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| workspace_root().join("target/debug/strew"));
        if bin.exists() {
            Ok(bin)
        } else {
            Err(format!("strew binary not found at {}", bin.display()))
        }
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// A city from `data/cities.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct City {
    pub name: String,
    pub lat: f64,
    pub lon: f64,
}

impl City {
    /// `LAT,LON` for `--location`.
    pub fn location(&self) -> String {
        format!("{},{}", self.lat, self.lon)
    }
}

/// The first `n` cities of `data/cities.csv` (largest first), distinct names.
pub fn cities(n: usize) -> Result<Vec<City>> {
    let path = workspace_root().join("data/cities.csv");
    let file = fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    let mut out: Vec<City> = Vec::new();
    for line in BufReader::new(file).lines().skip(1) {
        let line = line?;
        // geonameid,name,country,latitude,longitude,population
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 6 {
            continue;
        }
        let (Ok(lat), Ok(lon)) = (cols[3].parse::<f64>(), cols[4].parse::<f64>()) else {
            continue;
        };
        if out.iter().any(|c| c.name == cols[1]) {
            continue;
        }
        out.push(City {
            name: cols[1].to_string(),
            lat,
            lon,
        });
        if out.len() == n {
            return Ok(out);
        }
    }
    bail!("only {} cities in {}", out.len(), path.display())
}

/// Deterministic incompressible bytes (xorshift64), for test trees.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Polls `check` until it returns `Some` or `timeout` passes; the error
/// names `what` did not happen. The one way tests wait for anything.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> Result<T> {
    poll(what, timeout, Duration::from_millis(200), check)
}

/// [`wait_for`] with a chosen polling interval (cheap checks poll faster).
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(every);
    }
}

/// Waits up to `timeout` for `child` to exit; kills it (and reaps it) if it
/// does not and returns `None`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let exited = poll(
        "the process to exit",
        timeout,
        Duration::from_millis(50),
        || child.try_wait().transpose(),
    );
    match exited {
        Ok(status) => Ok(Some(status?)),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Ok(None)
        }
    }
}

/// How a node is started.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    pub location: String,
    pub bootstrap: Vec<String>,
    pub announce_interval: String,
    pub peer_ttl: String,
    pub storage: String,
    pub extra: Vec<String>,
    /// Environment variables set for the daemon (e.g. `STREW_GROUP_GRACE`).
    pub env: Vec<(String, String)>,
    /// Run the daemon and its clients inside this network namespace
    /// (`ip netns exec`); see [`netns`].
    pub netns: Option<String>,
    /// `--listen` addresses (default: TCP and QUIC on 127.0.0.1, ephemeral ports).
    pub listen: Vec<String>,
    /// Before its first start, the node founds a grid (`strew grid create`,
    /// open unless [`closed`](Self::closed)): it holds the grid key, so it
    /// certifies itself and forms the coordinator group. See [`NodeOptions::founder`].
    pub found_grid: bool,
    /// With `found_grid`: a closed grid (join tokens) instead of an open one.
    pub closed: bool,
    /// Before its first start, pin this grid id (`strew init --grid`).
    pub pin_grid: Option<String>,
    /// Before its first start, join with this token (`strew init --join`).
    pub join_token: Option<String>,
    /// Before its first start, install this exported key (`strew key import`):
    /// the node is a fresh machine of the key's owner.
    pub import_key: Option<PathBuf>,
}

impl NodeOptions {
    /// Fast gossip timing for tests: announce every second, expire after 4 s.
    pub fn at(location: impl Into<String>) -> Self {
        NodeOptions {
            location: location.into(),
            bootstrap: Vec::new(),
            announce_interval: "1s".into(),
            peer_ttl: "4s".into(),
            storage: "64MiB".into(),
            extra: Vec::new(),
            env: Vec::new(),
            netns: None,
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".into(),
                "/ip4/127.0.0.1/udp/0/quic-v1".into(),
            ],
            found_grid: false,
            closed: false,
            pin_grid: None,
            join_token: None,
            import_key: None,
        }
    }

    /// The grid's founding coordinator: `--coordinator`, and `strew grid
    /// create --open` in its data dir before it first starts. Other
    /// coordinators become members only once it admits them
    /// ([`Node::admit`]); see also [`start_coordinators`].
    pub fn founder(mut self) -> Self {
        self.found_grid = true;
        self.coordinator()
    }

    /// Offers to coordinate (`--coordinator`); a member only once admitted.
    pub fn coordinator(mut self) -> Self {
        if !self.extra.iter().any(|a| a == "--coordinator") {
            self.extra.push("--coordinator".into());
        }
        self
    }

    pub fn bootstrap(mut self, addr: impl Into<String>) -> Self {
        self.bootstrap.push(addr.into());
        self
    }
}

/// A running `strew run` process with its own temporary data dir.
pub struct Node {
    dir: tempfile::TempDir,
    options: NodeOptions,
    child: Option<Child>,
}

impl Node {
    /// Starts a node and waits until its control endpoint answers.
    pub fn start(options: NodeOptions) -> Result<Node> {
        let dir = tempfile::Builder::new().prefix("strew-node-").tempdir()?;
        let mut node = Node {
            dir,
            options,
            child: None,
        };
        if let Some(file) = node.options.import_key.clone() {
            let out = node.cli(&["key", "import", &file.to_string_lossy()])?;
            if !out.status.success() {
                bail!(
                    "strew key import failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let init = match (&node.options.pin_grid, &node.options.join_token) {
            (Some(grid), _) => Some(("--grid", grid.clone())),
            (None, Some(token)) => Some(("--join", token.clone())),
            (None, None) => None,
        };
        if let Some((flag, value)) = init {
            let out = node.cli(&["init", flag, &value])?;
            if !out.status.success() {
                bail!(
                    "strew init {flag} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        if node.options.found_grid {
            let mut args = vec!["grid", "create", "--json"];
            if !node.options.closed {
                args.push("--open");
            }
            node.cli_json(&args)
                .context("found the grid before the first start")?;
        }
        node.spawn()?;
        Ok(node)
    }

    /// The grid id this node pinned (`grid_id` of its status), if any.
    pub fn grid_id(&self) -> Result<Option<String>> {
        Ok(self.daemon_status()?["grid_id"]
            .as_str()
            .map(str::to_string))
    }

    /// On the node holding the grid key: `strew grid admit` for `other`
    /// (a running `--coordinator` node), then waits until this node's group
    /// lists it as a member.
    pub fn admit(&self, other: &Node) -> Result<()> {
        let id = other.node_id()?;
        self.cli_json(&["grid", "admit", &id, "--json"])?;
        wait_for(
            &format!("{id} to be admitted to the coordinator group"),
            Duration::from_secs(60),
            || self.group_members().ok()?.contains(&id).then_some(()),
        )
        .map_err(|e| anyhow!("{e}; founder log:\n{}", self.log()))
    }

    /// The coordinator group's members as this coordinator sees them (empty
    /// on a plain node).
    pub fn group_members(&self) -> Result<Vec<String>> {
        Ok(self.daemon_status()?["group"]["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["node_id"].as_str().map(str::to_string))
            .collect())
    }

    fn spawn(&mut self) -> Result<()> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut cmd = self.strew()?;
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(["--log", "info,libp2p_kad=error"])
            .arg("run")
            .arg(format!("--location={}", self.options.location))
            .args(["--storage", &self.options.storage]);
        for l in &self.options.listen {
            cmd.args(["--listen", l]);
        }
        cmd.args(["--announce-interval", &self.options.announce_interval])
            .args(["--peer-ttl", &self.options.peer_ttl]);
        for b in &self.options.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        // An open grid's leader takes a node in at once and for a cheap
        // stamp in tests (defaults: 10 minutes, 20 bits); `env` may override.
        cmd.args(&self.options.extra)
            .env("STREW_JOIN_SEEN_SECS", "0")
            .env("STREW_JOIN_WORK_BITS", "8")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .env_remove("STREW_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log));
        self.child = Some(cmd.spawn().context("spawn strew run")?);
        wait_for("the control endpoint", Duration::from_secs(30), || {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Some(Err(anyhow!(
                    "strew run exited early ({status}); log:\n{}",
                    self.log()
                )));
            }
            self.daemon_status().ok().map(Ok)
        })??;
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// Everything the node logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The newest `lines` lines of the log, newest first (for a failure's
    /// context).
    pub fn log_tail(&self, lines: usize) -> String {
        self.log()
            .lines()
            .rev()
            .take(lines)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The `strew` command, inside the node's network namespace if it has one.
    fn strew(&self) -> Result<Command> {
        Ok(match &self.options.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(strew_bin()?);
                c
            }
            None => Command::new(strew_bin()?),
        })
    }

    /// A `strew` client command against this node's data dir.
    fn client(&self, args: &[&str]) -> Result<Command> {
        let mut cmd = self.strew()?;
        cmd.arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env_remove("STREW_DIR")
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs a `strew` client command against this node.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        self.client(args)?.output().context("run strew")
    }

    /// Runs a `strew` client command and parses its JSON output; a failed
    /// command is an error carrying its stderr.
    pub fn cli_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "strew {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        serde_json::from_slice(&out.stdout).context("parse JSON output")
    }

    /// `strew restore SNAPSHOT DEST --json`, then checks that each of
    /// `files` (paths inside `tree`) came back byte-identical under
    /// `DEST/<tree's name>/`; returns the restore's report.
    pub fn restore_identical(
        &self,
        snapshot: &str,
        dest: &Path,
        tree: &Path,
        files: &[&str],
    ) -> Result<Value> {
        let report = self.cli_json(&[
            "restore",
            snapshot,
            dest.to_str().context("utf-8 path")?,
            "--json",
        ])?;
        let name = tree.file_name().context("the tree has a name")?;
        for file in files {
            let (original, restored) = (tree.join(file), dest.join(name).join(file));
            let same = fs::read(&original)
                .with_context(|| format!("read {}", original.display()))?
                == fs::read(&restored).with_context(|| format!("read {}", restored.display()))?;
            if !same {
                bail!("{file} of snapshot {snapshot} did not restore byte-identical");
            }
        }
        Ok(report)
    }

    /// `strew backup TREE --name SET --redundancy REDUNDANCY --json`, checked
    /// to have kept the snapshot's root: one part, or with `small` (the
    /// smallest chunk sizes: hundreds of chunks from a small tree) several.
    /// Returns the snapshot id.
    pub fn backup_with_root(
        &self,
        tree: &Path,
        set: &str,
        redundancy: &str,
        small: bool,
    ) -> Result<String> {
        let mut args = vec![
            "backup",
            tree.to_str().context("utf-8 path")?,
            "--redundancy",
            redundancy,
            "--name",
            set,
            "--json",
        ];
        if small {
            args.extend(["--chunk-sizes", "64/256/1024"]);
        }
        let out = self.cli_json(&args)?;
        if out.get("root_warning").is_some() {
            bail!("the snapshot root was not kept: {out}");
        }
        let parts = out["root_parts"].as_u64().unwrap_or(0);
        if (small && parts < 2) || (!small && parts != 1) {
            bail!("a root of {parts} part(s): {out}");
        }
        Ok(out["snapshot"].as_str().context("snapshot id")?.to_string())
    }

    /// One call to the daemon's control endpoint (docs/protocol.md: one JSON
    /// line in, one out), for what no CLI command prints, e.g. `manager`.
    pub fn control(&self, cmd: &str, args: Value) -> Result<Value> {
        if let Some(ns) = &self.options.netns {
            bail!(
                "the control endpoint of a node in namespace {ns} is not reachable from the test"
            );
        }
        let file: Value = serde_json::from_slice(
            &fs::read(self.data_dir().join("control.json")).context("read control.json")?,
        )?;
        let port = file["port"].as_u64().context("control.json has no port")?;
        let mut stream = TcpStream::connect(("127.0.0.1", port as u16))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let request = serde_json::json!({"token": file["token"], "cmd": cmd, "args": args});
        writeln!(stream, "{request}")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        let answer: Value = serde_json::from_str(&line).context("control answer")?;
        if answer["ok"] != true {
            bail!("control {cmd} failed: {}", answer["error"]);
        }
        Ok(answer["result"].clone())
    }

    /// Waits until this node holds the grid's convergence secret (the
    /// leader hands it over after admission): its default (grid-scope)
    /// sets are keyed under it from then on.
    pub fn wait_for_grid_secret(&self, timeout: Duration) -> Result<()> {
        wait_for(
            "the node to receive the grid's convergence secret",
            timeout,
            || {
                self.data_dir()
                    .join("grid-convergence.key")
                    .exists()
                    .then_some(())
            },
        )
    }

    /// Waits until the sequence manager (asked through this node) has `n`
    /// online nodes in its placement view: it takes them from the gossip
    /// view by polling, a little after every node sees every other.
    pub fn wait_for_manager_view(&self, n: u64, timeout: Duration) -> Result<()> {
        wait_for(
            &format!("the manager to see {n} online nodes"),
            timeout,
            || {
                let who = self.control("manager", Value::Null).ok()?;
                (who["online"].as_u64()? >= n).then_some(())
            },
        )
    }

    /// `strew status --json`: the daemon's status plus where this node's
    /// snapshots are, which asks the manager (slow when there is none).
    pub fn status(&self) -> Result<Value> {
        self.cli_json(&["status", "--json"])
    }

    /// The daemon's own status (`strew status --json` without `snapshots`):
    /// answered locally, so it is quick to poll whatever the manager does.
    pub fn daemon_status(&self) -> Result<Value> {
        if self.options.netns.is_some() {
            return self.cli_json(&["status", "--json"]);
        }
        self.control("status", Value::Null)
    }

    /// The process id of the daemon (for signals), if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Packets this node stores for others.
    pub fn stored_packets(&self) -> Result<u64> {
        self.daemon_status()?["storage"]["packets"]
            .as_u64()
            .ok_or_else(|| anyhow!("status has no storage.packets"))
    }

    /// `strew peers --json`.
    pub fn peers(&self) -> Result<Vec<Value>> {
        match self.cli_json(&["peers", "--json"])? {
            Value::Array(list) => Ok(list),
            other => bail!("peers --json is not a list: {other}"),
        }
    }

    /// Node ids in this node's grid view.
    pub fn peer_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .peers()?
            .iter()
            .filter_map(|p| p["node_id"].as_str().map(str::to_string))
            .collect())
    }

    pub fn node_id(&self) -> Result<String> {
        self.daemon_status()?["node_id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("status has no node_id"))
    }

    /// The first listen address with the given transport (`tcp`, `quic-v1`), ending in `/p2p/<id>`.
    pub fn listen_addr(&self, transport: &str) -> Result<String> {
        let status = self.daemon_status()?;
        status["listen_addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .find(|a| a.contains(&format!("/{transport}/")) || a.contains(&format!("/{transport}")))
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no {transport} listen address in {status}"))
    }

    /// The TCP bootstrap address of this node.
    pub fn bootstrap_addr(&self) -> Result<String> {
        self.listen_addr("tcp")
    }

    /// Kills the process (SIGKILL) and waits for it; the data dir stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM and waits up to `timeout` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, timeout: Duration) -> Result<bool> {
        let Some(mut child) = self.child.take() else {
            return Ok(false);
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        Ok(wait_exit(&mut child, timeout)?.is_some_and(|s| s.success()))
    }

    /// Starts the process again on the same data dir (same identity).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Starts a `strew` client command against this node without waiting
    /// (its output is piped; see [`wait_output`]).
    pub fn cli_spawn(&self, args: &[&str]) -> Result<Child> {
        self.client(args)?
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn a strew client")
    }

    /// Starts the process again without any `--bootstrap`: it must rejoin
    /// through the peer cache in its data dir.
    pub fn restart_without_bootstrap(&mut self) -> Result<()> {
        self.kill();
        self.options.bootstrap.clear();
        self.spawn()
    }

    /// Resident memory of the running process in bytes (`VmRSS` of
    /// `/proc/<pid>/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmRSS:").map(|kib| kib * 1024)
    }

    /// The most resident memory the process ever had (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> Option<u64> {
        self.status_kib("VmHWM:").map(|kib| kib * 1024)
    }

    /// Resets the process's peak (`VmHWM`) to its resident memory now, so
    /// that a later [`Node::peak_rss_bytes`] is the peak of what follows.
    pub fn reset_peak_rss(&self) -> Result<()> {
        let pid = self.pid().context("no process")?;
        fs::write(format!("/proc/{pid}/clear_refs"), "5")
            .with_context(|| format!("resetting the peak RSS of {pid}"))
    }

    /// A `kB` field of `/proc/<pid>/status`.
    fn status_kib(&self, field: &str) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// CPU time (user + system) the process used so far, from
    /// `/proc/<pid>/stat` (a resource measure, not a timing).
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid()?)).ok()?;
        // Fields after the command name (which may hold spaces): state is
        // the 3rd field, utime and stime the 14th and 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let hz = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100);
        Some(Duration::from_millis((utime + stime) * 1000 / hz))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `strew` with `args` in a fresh temporary data dir and returns its output
/// (for commands expected to fail fast, e.g. bad flags). Kills it after `timeout`.
pub fn run_strew_once(args: &[&str], timeout: Duration) -> Result<(Option<i32>, String)> {
    let dir = tempfile::Builder::new().prefix("strew-once-").tempdir()?;
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(strew_bin()?)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(args)
        .env_remove("STREW_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(fs::File::create(&log)?))
        .spawn()?;
    let code = wait_exit(&mut child, timeout)?.and_then(|s| s.code());
    Ok((code, fs::read_to_string(&log).unwrap_or_default()))
}

/// Sends a signal (`INT`, `TERM`, `KILL`, `STOP`, `CONT`) to a process.
pub fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .context("run kill")?;
    anyhow::ensure!(status.success(), "kill -{name} {pid} failed");
    Ok(())
}

/// Waits at most `timeout` for a spawned client to exit and returns its output
/// (the client is killed when it overstays).
pub fn wait_output(child: &mut Child, timeout: Duration) -> Result<Output> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("the client did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    use std::io::Read;
    if let Some(mut o) = child.stdout.take() {
        o.read_to_end(&mut stdout)?;
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_end(&mut stderr)?;
    }
    Ok(Output {
        status: child.wait()?,
        stdout,
        stderr,
    })
}

/// Starts the coordinators of a grid: the first founds it (an open grid,
/// [`NodeOptions::founder`]), the others offer (`--coordinator`) and are
/// admitted by the founder one after the other (`strew grid admit`). Every
/// option after the first gets `--bootstrap` to the founder.
pub fn start_coordinators(options: Vec<NodeOptions>) -> Result<Vec<Node>> {
    let mut options = options.into_iter();
    let Some(first) = options.next() else {
        return Ok(Vec::new());
    };
    let founder = Node::start(first.founder())?;
    let boot = founder.bootstrap_addr()?;
    let mut nodes = vec![founder];
    for o in options {
        nodes.push(Node::start(o.bootstrap(boot.clone()).coordinator())?);
    }
    for i in 1..nodes.len() {
        nodes[0].admit(&nodes[i])?;
    }
    Ok(nodes)
}

/// Waits until every node knows `manager` as the sequence manager and sees
/// all the others, then until the manager (asked through the first node)
/// has every node in its placement view.
pub fn wait_for_grid(nodes: &[Node], manager: &str) -> Result<()> {
    let n = nodes.len();
    for (i, node) in nodes.iter().enumerate() {
        wait_for(
            &format!("node {i} to know the manager and the grid"),
            Duration::from_secs(90),
            || {
                let s = node.daemon_status().ok()?;
                (s["manager"].as_str() == Some(manager) && s["peers"].as_u64()? as usize >= n - 1)
                    .then_some(())
            },
        )
        .map_err(|e| anyhow!("{e}; log:\n{}", node.log()))?;
    }
    if let Some(first) = nodes.first() {
        first.wait_for_manager_view(n as u64, Duration::from_secs(60))?;
    }
    Ok(())
}

/// Great-circle km, written independently of the coordinator's, so tests
/// check distances with arithmetic the code under test does not share.
pub fn haversine_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (
        a.0.to_radians(),
        a.1.to_radians(),
        b.0.to_radians(),
        b.1.to_radians(),
    );
    let h = ((la2 - la1) / 2.0).sin().powi(2)
        + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}
