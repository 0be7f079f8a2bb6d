//! `strew demo`: a real grid on this machine, in a minute. Starts N `strew
//! run` processes on 127.0.0.1 at real city locations (GeoNames, embedded),
//! one of them the sequence manager and the source; backs up a real folder
//! under a backup-distance and spread constraint; kills two targets that
//! hold packets; restores from the rest; verifies byte for byte; prints
//! where every packet went and writes the world map.
//!
//! Owns the demo's choreography only: the nodes are the real binary, and
//! every step goes through the same control commands a user types.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use strew_coordinator::cities::{City, CityTable};
use strew_coordinator::units::haversine_km;
use strew_coordinator::{GeoPoint, format_size};

use crate::control;

/// `strew demo` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Nodes in the local grid (at least 8 for erasure 4+2 with two killed;
    /// 7 with `--repair`, which kills one).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(7..=40))]
    pub nodes: u16,
    /// Folder to back up (default: `docs` in the working directory).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Where the nodes' data dirs, the restore and the map go (default: a temporary dir).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Leave the grid running and its files in place when the demo ends.
    #[arg(long)]
    pub keep: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// The repair benchmark: kill one target instead of two, wait until the
    /// coordinator has rebuilt its packets elsewhere (repair grace 2 s, repair
    /// bandwidth unlimited) and report the bytes moved per byte lost and the
    /// repair throughput; then restore as usual.
    #[arg(long)]
    pub repair: bool,
}

/// The source's city (and the manager's).
const SOURCE_CITY: (&str, f64, f64) = ("Paris", 48.8566, 2.3522);
const BACKUP_DISTANCE: &str = "300km..3000km";
const SPREAD: &str = "200km..";
const REDUNDANCY: &str = "erasure:4+2";
/// How long the grid may take to form, and a backup or restore to run.
const FORM_TIMEOUT: Duration = Duration::from_secs(90);
const CALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long the nodes get to shut down cleanly at the end.
const STOP_GRACE: Duration = Duration::from_secs(10);

struct DemoNode {
    city: String,
    location: GeoPoint,
    dir: PathBuf,
    child: Option<Child>,
    node_id: String,
}

impl DemoNode {
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Grid {
    nodes: Vec<DemoNode>,
    keep: bool,
}

impl Grid {
    /// Stops every node still running in order: SIGTERM to all (each daemon
    /// shuts down cleanly), then waits up to [`STOP_GRACE`] for them
    /// together; any still running then is killed.
    async fn stop_all(&mut self) {
        let mut children: Vec<Child> = self
            .nodes
            .iter_mut()
            .filter_map(|n| n.child.take())
            .collect();
        for child in &children {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + STOP_GRACE;
        while !children.is_empty() && Instant::now() < deadline {
            children.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Grid {
    /// Only reached with nodes still running when the demo panicked or was
    /// cancelled ([`Grid::stop_all`] stops them otherwise): kill them.
    fn drop(&mut self) {
        if !self.keep {
            for n in &mut self.nodes {
                n.kill();
            }
        }
    }
}

/// Cities for the targets: the most populous ones that keep the backup
/// distance from the source and the spread from each other.
fn pick_cities(table: &CityTable, source: &GeoPoint, count: usize) -> Vec<City> {
    let mut candidates: Vec<&City> = table
        .cities()
        .iter()
        .filter(|c| {
            let d = haversine_km(
                source,
                &GeoPoint {
                    lat: c.lat,
                    lon: c.lon,
                },
            );
            (450.0..2600.0).contains(&d)
        })
        .collect();
    candidates.sort_by_key(|c| std::cmp::Reverse(c.population));
    let mut chosen: Vec<City> = Vec::new();
    for c in candidates {
        let p = GeoPoint {
            lat: c.lat,
            lon: c.lon,
        };
        if chosen.iter().all(|o| {
            haversine_km(
                &p,
                &GeoPoint {
                    lat: o.lat,
                    lon: o.lon,
                },
            ) >= 350.0
        }) {
            chosen.push(c.clone());
            if chosen.len() == count {
                break;
            }
        }
    }
    chosen
}

fn spawn(
    exe: &Path,
    node: &DemoNode,
    coordinator: bool,
    bootstrap: Option<&str>,
    repair: bool,
) -> anyhow::Result<Child> {
    std::fs::create_dir_all(&node.dir)?;
    let log = std::fs::File::create(node.dir.join("node.log"))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--data-dir")
        .arg(&node.dir)
        .arg("--log")
        .arg("info")
        .arg("run")
        .arg("--listen")
        .arg("/ip4/127.0.0.1/tcp/0")
        .arg("--location")
        .arg(format!("{},{}", node.location.lat, node.location.lon))
        .arg("--storage")
        .arg("2GiB")
        // Every demo node runs on 127.0.0.1 while claiming a far-away city:
        // measured RTTs rightly refute those claims, so the demo only warns.
        .arg("--location-check")
        .arg("warn");
    // A demo grid takes its nodes in at once, for a cheap stamp (an open
    // grid's defaults: 10 minutes in view and 20 bits of work).
    for (name, value) in [
        (crate::work_stamp::ENV_MIN_SEEN, "0"),
        (crate::work_stamp::ENV_WORK_BITS, "12"),
    ] {
        if std::env::var_os(name).is_none() {
            cmd.env(name, value);
        }
    }
    if coordinator {
        cmd.arg("--coordinator");
    }
    if let Some(addr) = bootstrap {
        cmd.arg("--bootstrap").arg(addr);
    }
    if repair {
        cmd.args(["--repair-grace", "2s", "--repair-bandwidth", "0"]);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    cmd.spawn()
        .with_context(|| format!("cannot start {}", exe.display()))
}

async fn call(dir: &Path, cmd: &str, args: Value, timeout: Duration) -> anyhow::Result<Value> {
    Ok(control::call(dir, cmd, args, timeout).await?)
}

/// Probes every 250 ms until `probe` answers or `timeout` has passed.
async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn say(quiet: bool, text: impl AsRef<str>) {
    if !quiet {
        let _ = writeln!(std::io::stderr(), "{}", text.as_ref());
    }
}

/// Runs the demo.
pub async fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let folder = match &args.path {
        Some(p) => p.clone(),
        None => PathBuf::from("docs"),
    };
    let folder = std::fs::canonicalize(&folder).with_context(|| {
        format!(
            "cannot back up {} (give a folder with --path)",
            folder.display()
        )
    })?;
    let exe = std::env::current_exe().context("cannot find the strew binary")?;
    let (base, _tmp) = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (std::fs::canonicalize(d)?, None)
        }
        None => {
            let tmp = tempfile::Builder::new().prefix("strew-demo-").tempdir()?;
            let path = tmp.path().to_path_buf();
            if args.keep {
                (tmp.keep(), None)
            } else {
                (path, Some(tmp))
            }
        }
    };
    let table = CityTable::embedded()
        .map_err(|e| anyhow::anyhow!("the embedded city table is damaged: {e}"))?;
    let source = GeoPoint {
        lat: SOURCE_CITY.1,
        lon: SOURCE_CITY.2,
    };
    if args.nodes < 8 && !args.repair {
        bail!("--nodes must be at least 8 (erasure 4+2 with two targets killed); 7 with --repair");
    }
    let cities = pick_cities(table, &source, usize::from(args.nodes) - 1);
    if cities.len() + 1 < usize::from(args.nodes) {
        bail!(
            "only {} cities fit the demo's distances; use fewer --nodes",
            cities.len()
        );
    }
    let mut grid = Grid {
        nodes: Vec::new(),
        keep: args.keep,
    };
    let result = run_grid(&mut grid, args, &exe, &cities, &folder, &base).await;
    if !args.keep {
        grid.stop_all().await;
    }
    // Only now may a temporary grid dir (`_tmp`) go.
    drop(grid);
    result
}

/// Starts the grid in `base`, backs `folder` up, kills two targets,
/// restores, verifies and reports.
async fn run_grid(
    grid: &mut Grid,
    args: &DemoArgs,
    exe: &Path,
    cities: &[City],
    folder: &Path,
    base: &Path,
) -> anyhow::Result<()> {
    let quiet = args.json;
    let source = GeoPoint {
        lat: SOURCE_CITY.1,
        lon: SOURCE_CITY.2,
    };
    grid.nodes.push(DemoNode {
        city: SOURCE_CITY.0.into(),
        location: source,
        dir: base.join("node-0"),
        child: None,
        node_id: String::new(),
    });
    for (i, c) in cities.iter().enumerate() {
        grid.nodes.push(DemoNode {
            city: format!("{} ({})", c.name, c.country),
            location: GeoPoint {
                lat: c.lat,
                lon: c.lon,
            },
            dir: base.join(format!("node-{}", i + 1)),
            child: None,
            node_id: String::new(),
        });
    }

    // 1. The first node: manager and source.
    say(
        quiet,
        format!(
            "starting {} nodes in {} (logs: node-*/node.log); they all run on 127.0.0.1 while claiming far-apart cities, which round-trip times refute, so location_check is warn (flag, don't exclude)",
            args.nodes,
            base.display()
        ),
    );
    // The first node founds an open grid (`strew grid create --open`): it
    // holds the grid key, so it certifies itself and forms the group.
    std::fs::create_dir_all(&grid.nodes[0].dir)?;
    let root =
        crate::trust::create(&grid.nodes[0].dir, true).context("cannot create the demo's grid")?;
    say(quiet, format!("grid {} (open)", root.grid));
    let first = spawn(exe, &grid.nodes[0], true, None, args.repair)?;
    grid.nodes[0].child = Some(first);
    let dir0 = grid.nodes[0].dir.clone();
    let status0 = wait_for("the first node to listen", FORM_TIMEOUT, || async {
        call(&dir0, "status", Value::Null, Duration::from_secs(5))
            .await
            .ok()
            .filter(|s| s["listen_addrs"].as_array().is_some_and(|a| !a.is_empty()))
    })
    .await?;
    let bootstrap = status0["listen_addrs"][0]
        .as_str()
        .context("the first node has no listen address")?
        .to_string();
    grid.nodes[0].node_id = status0["node_id"].as_str().unwrap_or_default().to_string();
    for i in 1..grid.nodes.len() {
        let child = spawn(exe, &grid.nodes[i], false, Some(&bootstrap), args.repair)?;
        grid.nodes[i].child = Some(child);
    }
    // 2. Every node sees every other and knows the manager.
    let manager = grid.nodes[0].node_id.clone();
    let n = grid.nodes.len();
    for i in 0..n {
        let dir = grid.nodes[i].dir.clone();
        let status = wait_for(
            &format!("{} to join the grid", grid.nodes[i].city),
            FORM_TIMEOUT,
            || async {
                call(&dir, "status", Value::Null, Duration::from_secs(5))
                    .await
                    .ok()
                    .filter(|s| {
                        s["manager"].as_str() == Some(manager.as_str())
                            && s["peers"].as_u64().unwrap_or(0) as usize >= n - 1
                    })
            },
        )
        .await?;
        grid.nodes[i].node_id = status["node_id"].as_str().unwrap_or_default().to_string();
    }
    // The manager has taken every node into its placement view.
    wait_for("the manager to see every node", FORM_TIMEOUT, || async {
        call(&dir0, "manager", Value::Null, Duration::from_secs(10))
            .await
            .ok()
            .filter(|m| m["online"].as_u64().unwrap_or(0) as usize >= n)
    })
    .await?;
    say(
        quiet,
        format!(
            "grid formed: {n} nodes, sequence manager in {}",
            SOURCE_CITY.0
        ),
    );

    // 3. Back up.
    say(
        quiet,
        format!(
            "backing up {} from {} (backup distance {BACKUP_DISTANCE}, spread {SPREAD}, {REDUNDANCY})",
            folder.display(),
            SOURCE_CITY.0
        ),
    );
    let started = Instant::now();
    let backup = call(
        &dir0,
        "backup",
        json!({
            "paths": [folder],
            "name": "demo",
            "backup_distance": BACKUP_DISTANCE,
            "spread": SPREAD,
            "redundancy": REDUNDANCY,
        }),
        CALL_TIMEOUT,
    )
    .await
    .context("the backup failed")?;
    let backup_secs = started.elapsed().as_secs_f64();
    let snapshot = backup["snapshot"]
        .as_str()
        .context("the backup returned no snapshot")?
        .to_string();
    let placements = call(&dir0, "placements", Value::Null, CALL_TIMEOUT).await?;
    let targets: Vec<Value> = placements
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["snapshot"].as_str() == Some(snapshot.as_str()))
        .and_then(|s| s["targets"].as_array().cloned())
        .unwrap_or_default();
    let held = |id: &str| -> u64 {
        targets
            .iter()
            .find(|t| t["node_id"].as_str() == Some(id))
            .and_then(|t| t["packets"].as_u64())
            .unwrap_or(0)
    };

    // 4. Kill the two targets holding the most packets (one for the repair benchmark).
    let mut victims: Vec<usize> = (1..n)
        .filter(|&i| held(&grid.nodes[i].node_id) > 0)
        .collect();
    victims.sort_by_key(|&i| std::cmp::Reverse(held(&grid.nodes[i].node_id)));
    victims.truncate(if args.repair { 1 } else { 2 });
    for &i in &victims {
        say(
            quiet,
            format!(
                "killing {} (it held {} packets)",
                grid.nodes[i].city,
                held(&grid.nodes[i].node_id)
            ),
        );
        grid.nodes[i].kill();
    }

    // 4b. The repair benchmark: wait until the leader rebuilt the lost packets.
    let repair = if args.repair {
        let lost: u64 = victims.iter().map(|&i| held(&grid.nodes[i].node_id)).sum();
        // Reed–Solomon reads K packets to rebuild one: bytes read per byte lost ≥ K.
        let k = REDUNDANCY
            .parse::<strew_coordinator::Redundancy>()
            .map_err(|e| anyhow::anyhow!("the demo's redundancy {REDUNDANCY}: {e}"))?
            .data_packets();
        let started = Instant::now();
        let status = wait_for("the lost packets to be rebuilt", CALL_TIMEOUT, || async {
            call(&dir0, "status", Value::Null, Duration::from_secs(10))
                .await
                .ok()
                .filter(|s| {
                    s["repaired"]["packets"].as_u64() >= Some(lost)
                        && s["repairs_pending"].as_u64() == Some(0)
                })
        })
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        let read = status["repaired"]["bytes_read"].as_u64().unwrap_or(0);
        let written = status["repaired"]["bytes_written"].as_u64().unwrap_or(0);
        // Throughput over the repairs themselves, not the detection and grace before them.
        let busy_ms = status["repaired"]["last_ended_ms"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(status["repaired"]["first_started_ms"].as_u64().unwrap_or(0));
        let busy = (busy_ms as f64 / 1000.0).max(0.001);
        let report = json!({
            "lost_packets": lost,
            "bytes_lost": written,
            "bytes_read": read,
            "read_per_byte_lost": read as f64 / (written.max(1) as f64),
            "rs_lower_bound": k,
            "seconds_after_kill": seconds,
            "repair_seconds": busy,
            "mb_per_s": (read + written) as f64 / 1e6 / busy,
        });
        say(
            quiet,
            format!(
                "repaired {lost} packets ({}) {seconds:.1} s after the kill (detection and 2 s grace included); \
                 repairing took {busy:.2} s at {:.1} MB/s, reading {} ({:.2} bytes per byte lost; {REDUNDANCY}'s lower bound is {k})",
                format_size(written),
                report["mb_per_s"].as_f64().unwrap_or(0.0),
                format_size(read),
                report["read_per_byte_lost"].as_f64().unwrap_or(0.0),
            ),
        );
        report
    } else {
        Value::Null
    };

    // 5. Restore from what is left, and compare.
    let dest = base.join("restored");
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    let started = Instant::now();
    let restore = call(
        &dir0,
        "restore",
        json!({"snapshot": snapshot, "dest": dest}),
        CALL_TIMEOUT,
    )
    .await
    .context("the restore failed")?;
    let restore_secs = started.elapsed().as_secs_f64();
    // A snapshot restores each backed-up root under its own name.
    let restored_root = dest.join(folder.file_name().unwrap_or_default());
    let original = folder.to_path_buf();
    let differences = tokio::task::spawn_blocking(move || {
        crate::verify::diff_trees(&original, &restored_root, 10)
    })
    .await
    .context("the comparison task failed")?;
    let verified = differences.is_empty();

    // 6. Report and map.
    let mut status = call(&dir0, "status", Value::Null, Duration::from_secs(10)).await?;
    let mut placements = placements;
    for s in placements.as_array_mut().into_iter().flatten() {
        for t in s["targets"].as_array_mut().into_iter().flatten() {
            if let Some((i, node)) = grid
                .nodes
                .iter()
                .enumerate()
                .find(|(_, node)| t["node_id"].as_str() == Some(node.node_id.as_str()))
            {
                t["label"] = json!(node.city);
                if victims.contains(&i) {
                    t["up"] = json!(false);
                }
            }
        }
    }
    status["snapshots"] = placements;
    // A temporary grid dir disappears at the end: then the map goes to the working directory.
    let map = if args.dir.is_some() || args.keep {
        base.join("demo-map.svg")
    } else {
        std::env::current_dir()?.join("strew-demo-map.svg")
    };
    crate::daemon::source_commands::write_map(&status, &map)?;
    let nodes: Vec<Value> = grid
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            json!({
                "city": node.city,
                "node_id": node.node_id,
                "distance_km": haversine_km(&source, &node.location).round(),
                "role": if i == 0 { "source + manager" } else { "target" },
                "packets": held(&node.node_id),
                "killed": victims.contains(&i),
            })
        })
        .collect();
    let report = json!({
        "snapshot": snapshot,
        "folder": folder,
        "nodes": nodes,
        "bytes": backup["stats"]["bytes_in"],
        "packets_uploaded": backup["uploaded_packets"],
        "bytes_uploaded": backup["uploaded_bytes"],
        "backup_seconds": backup_secs,
        "restore_seconds": restore_secs,
        "fetched": restore["fetched"],
        "failed_fetches": restore["failed_fetches"],
        "verified": verified,
        "differences": differences,
        "map": map,
        "dir": base,
        "kept": args.keep,
        "repair": repair,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report)?;
    }
    if args.keep {
        say(
            quiet,
            format!(
                "the grid keeps running; try: strew --data-dir {} status --map map.svg",
                dir0.display()
            ),
        );
    }
    if !verified {
        bail!("the restored tree differs from {}", folder.display());
    }
    Ok(())
}

fn print_report(r: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out)?;
    writeln!(
        out,
        "{:<28} {:>9} {:>8}  role",
        "node (city)", "distance", "packets"
    )?;
    for n in r["nodes"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<28} {:>6} km {:>8}  {}{}",
            n["city"].as_str().unwrap_or("?"),
            n["distance_km"].as_f64().unwrap_or(0.0),
            n["packets"].as_u64().unwrap_or(0),
            n["role"].as_str().unwrap_or(""),
            if n["killed"] == json!(true) {
                "  ← killed"
            } else {
                ""
            }
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "backed up {} in {:.1} s: {} packets, {} sent directly to the targets",
        format_size(r["bytes"].as_u64().unwrap_or(0)),
        r["backup_seconds"].as_f64().unwrap_or(0.0),
        r["packets_uploaded"].as_u64().unwrap_or(0),
        format_size(r["bytes_uploaded"].as_u64().unwrap_or(0)),
    )?;
    writeln!(
        out,
        "restored with {} dead in {:.1} s ({} packets fetched, {} fetches failed and were replaced by other packets of their stripes)",
        if r["repair"].is_null() {
            "two targets"
        } else {
            "one target"
        },
        r["restore_seconds"].as_f64().unwrap_or(0.0),
        r["fetched"].as_u64().unwrap_or(0),
        r["failed_fetches"].as_u64().unwrap_or(0),
    )?;
    writeln!(
        out,
        "verified: {}",
        if r["verified"] == json!(true) {
            "the restored tree is byte-identical"
        } else {
            "DIFFERENCES FOUND"
        }
    )?;
    writeln!(out, "map: {}", r["map"].as_str().unwrap_or("-"))?;
    Ok(())
}
