//! The everyday habits (R14) on real processes: a 4-node grid on 127.0.0.1
//! backs up a tree with `--exclude` patterns, an `--exclude-file`, a
//! `.strewignore`, a CACHEDIR.TAG folder, `--exclude-caches` and (when this
//! machine lets the test mount a tmpfs) a second file system under
//! `--one-file-system`; `ls` shows none of the excluded paths; `ls`, `find`
//! and `diff` fetch only manifest packets (counted on every node's
//! Prometheus counters); `restore --include` fetches one file's stripes and
//! restores it byte-identical with its mode and mtime; `restore --progress
//! json` prints newline-delimited JSON ending with the result; `forget --keep-last`
//! lists and then forgets what restic's rule says; the dashboard serves the
//! node id, the snapshots with their health and the map, checked over HTTP
//! and, when a Chromium is installed, in a headless browser that saves a
//! screenshot (`scripts/dashboard-screenshot.sh` installs one).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use strew_tests::{City, Node, NodeOptions, cities, noise, wait_for};

/// A port nobody listens on now (the OS picks it).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A node announcing every 2 s, with its Prometheus endpoint on a free port.
fn options(city: &City) -> Result<(NodeOptions, u16)> {
    let mut o = NodeOptions::at(city.location());
    o.announce_interval = "2s".into();
    o.peer_ttl = "30s".into();
    o.storage = "256MiB".into();
    let port = free_port()?;
    o.extra.push(format!("--metrics=127.0.0.1:{port}"));
    Ok((o, port))
}

/// One HTTP GET on 127.0.0.1: (status line, body).
fn http_get(port: u16, target: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(s, "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").context("no HTTP head")?;
    Ok((
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    ))
}

/// Packets the nodes on `ports` served to fetches so far (their own counters).
fn packets_served(ports: &[u16]) -> Result<u64> {
    let mut total = 0;
    for port in ports {
        let (status, body) = http_get(*port, "/metrics")?;
        ensure!(status.contains("200"), "metrics: {status}");
        for line in body.lines() {
            if line.starts_with("strew_packets_total{")
                && line.contains("direction=\"in\"")
                && line.contains("op=\"get\"")
                && line.contains("result=\"ok\"")
            {
                let value = line.rsplit(' ').next().unwrap_or("0");
                total += value.parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
    }
    Ok(total)
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn try_new(at: &Path) -> Option<Mount> {
        fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
            .arg(at)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The tree, with what must be left out; returns the mount if one was made.
fn make_tree(root: &Path) -> Result<Option<Mount>> {
    for d in [
        "src/node_modules/pkg",
        "cache",
        "notes/drafts",
        "tmp",
        "docs",
        "bin",
    ] {
        fs::create_dir_all(root.join(d))?;
    }
    fs::write(root.join("src/main.rs"), "fn main() {}\n")?;
    fs::set_permissions(root.join("src/main.rs"), fs::Permissions::from_mode(0o751))?;
    fs::write(root.join("src/node_modules/pkg/index.js"), "x")?;
    fs::write(root.join("build.log"), "log")?;
    // Setuid and setgid: masked by restore unless --preserve-setid.
    fs::write(root.join("bin/tool"), "#!/bin/sh\n")?;
    fs::set_permissions(root.join("bin/tool"), fs::Permissions::from_mode(0o6755))?;
    fs::write(
        root.join("cache/CACHEDIR.TAG"),
        "Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    )?;
    fs::write(root.join("cache/blob.bin"), noise(50_000, 1))?;
    fs::write(root.join("notes/.strewignore"), "drafts/\n")?;
    fs::write(root.join("notes/drafts/d.txt"), "draft")?;
    fs::write(root.join("notes/todo.txt"), "todo")?;
    fs::write(root.join("tmp/scratch"), "scratch")?;
    fs::write(root.join("docs/bulk.bin"), noise(6_000_000, 2))?;
    let mount = Mount::try_new(&root.join("mnt"));
    match &mount {
        Some(_) => fs::write(root.join("mnt/other-fs.txt"), "on another file system")?,
        None => eprintln!("note: cannot mount a tmpfs here; the --one-file-system case is skipped"),
    }
    Ok(mount)
}

fn start_grid(places: &[City]) -> Result<(Vec<Node>, Vec<u16>)> {
    let (mut first, port) = options(&places[0])?;
    // The grid's founder: `strew grid create --open` before it starts.
    first.found_grid = true;
    first.extra.push("--coordinator".into());
    first.extra.push("--dashboard=127.0.0.1:0".into());
    let first = Node::start(first)?;
    let boot = first.bootstrap_addr()?;
    let manager = first.node_id()?;
    let mut nodes = vec![first];
    let mut ports = vec![port];
    for city in &places[1..] {
        let (o, port) = options(city)?;
        nodes.push(Node::start(o.bootstrap(boot.clone()))?);
        ports.push(port);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    Ok((nodes, ports))
}

fn paths_of(list: &Value) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn excludes_browsing_partial_restore_retention_and_the_dashboard() -> Result<()> {
    let places = cities(4)?;
    let (nodes, ports) = start_grid(&places)?;
    let source = &nodes[0];
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    let mount = make_tree(&tree)?;
    let exclude_file = work.path().join("excludes.txt");
    fs::write(
        &exclude_file,
        "# anchored at the snapshot's top\n/tree/tmp\n",
    )?;
    let tree_arg = tree.to_str().context("utf-8 path")?;
    let backup = |name: &str| -> Result<Value> {
        source.cli_json(&[
            "backup",
            tree_arg,
            "--redundancy",
            "erasure:2+1",
            "--name",
            name,
            "--exclude",
            "node_modules",
            "--exclude",
            "*.log",
            "--exclude-file",
            exclude_file.to_str().context("utf-8 path")?,
            "--exclude-caches",
            "--one-file-system",
            "--json",
        ])
    };

    // Excludes: the summary counts them, `ls` shows none of them.
    let a = backup("tree")?;
    let snap_a = a["snapshot"].as_str().context("snapshot id")?.to_string();
    let excluded_expected = if mount.is_some() { 6 } else { 5 };
    ensure!(
        a["stats"]["excluded"].as_u64() == Some(excluded_expected),
        "excluded count: {}",
        a["stats"]
    );
    let served = packets_served(&ports)?;
    let listed = paths_of(&source.cli_json(&["ls", &snap_a, "--json"])?);
    let ls_fetches = packets_served(&ports)? - served;
    let mut gone = vec![
        "tree/src/node_modules",
        "tree/build.log",
        "tree/cache",
        "tree/notes/drafts",
        "tree/tmp",
    ];
    if mount.is_some() {
        gone.push("tree/mnt");
    }
    for gone in gone {
        ensure!(
            !listed
                .iter()
                .any(|p| p == gone || p.starts_with(&format!("{gone}/"))),
            "{gone} is in the snapshot: {listed:?}"
        );
    }
    for kept in [
        "tree/src/main.rs",
        "tree/notes/todo.txt",
        "tree/notes/.strewignore",
        "tree/docs/bulk.bin",
    ] {
        ensure!(
            listed.iter().any(|p| p == kept),
            "{kept} missing: {listed:?}"
        );
    }
    // The snapshot root and the manifest are one stripe each here: 2
    // packets of erasure 2+1 read each; the 6 MB of data (dozens of
    // packets) were not touched.
    ensure!(
        (2..=4).contains(&ls_fetches),
        "ls fetched {ls_fetches} packets"
    );
    let cached_a = source
        .data_dir()
        .join("manifests")
        .join(format!("{snap_a}.cbor"));
    ensure!(cached_a.exists(), "ls caches the manifest it read");
    let one = source.cli_json(&["ls", &snap_a, "tree/src", "--json"])?;
    let one = one.as_array().context("ls list")?;
    ensure!(paths_of(&Value::Array(one.clone())) == ["tree/src", "tree/src/main.rs"]);
    ensure!(one[1]["type"] == "file" && one[1]["mode"] == 0o751 && one[1]["size"] == 13);

    // A second snapshot; `find` reads its manifest once, `diff` nothing new.
    fs::write(tree.join("src/lib.rs"), "pub fn lib() {}\n")?;
    fs::remove_file(tree.join("notes/todo.txt"))?;
    let b = backup("tree")?;
    let snap_b = b["snapshot"].as_str().context("snapshot id")?.to_string();
    let served = packets_served(&ports)?;
    let found = source.cli_json(&["find", "*.rs", "--json"])?;
    let find_fetches = packets_served(&ports)? - served;
    // Snapshot b's root and manifest stripes (a's manifest is cached).
    ensure!(
        (2..=4).contains(&find_fetches),
        "find fetched {find_fetches} packets"
    );
    let mut found: Vec<(String, String)> = found
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            (
                m["snapshot"].as_str().unwrap_or_default().to_string(),
                m["path"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    found.sort();
    let mut expected = vec![
        (snap_a.clone(), "tree/src/main.rs".to_string()),
        (snap_b.clone(), "tree/src/lib.rs".to_string()),
        (snap_b.clone(), "tree/src/main.rs".to_string()),
    ];
    expected.sort();
    ensure!(found == expected, "find: {found:?}");
    let served = packets_served(&ports)?;
    let diff = source.cli_json(&["diff", &snap_a, &snap_b, "--json"])?;
    ensure!(packets_served(&ports)? == served, "diff fetched packets");
    ensure!(
        diff["added"] == serde_json::json!(["tree/src/lib.rs"]),
        "{diff}"
    );
    ensure!(
        diff["removed"] == serde_json::json!(["tree/notes/todo.txt"]),
        "{diff}"
    );

    // Partial restore: two files, their stripes only, byte-identical with
    // mode and mtime, except setuid and setgid bits.
    let dest = work.path().join("restored");
    let served = packets_served(&ports)?;
    let r = source.cli_json(&[
        "restore",
        &snap_b,
        dest.to_str().context("utf-8 path")?,
        "--include",
        "tree/src/main.rs",
        "--include",
        "tree/bin/tool",
        "--json",
    ])?;
    let restore_fetches = packets_served(&ports)? - served;
    // The root, one manifest stripe and the stripes packing the small
    // files: 2 packets each.
    ensure!(
        restore_fetches <= 8,
        "restore --include fetched {restore_fetches} packets"
    );
    ensure!(r["restore"]["files"] == 2, "{r}");
    let tool_mode = |dest: &Path| -> Result<u32> {
        Ok(fs::metadata(dest.join("tree/bin/tool"))?.mode() & 0o7777)
    };
    ensure!(tool_mode(&dest)? == 0o755, "{:o}", tool_mode(&dest)?);
    let kept = work.path().join("restored-setid");
    source.cli_json(&[
        "restore",
        &snap_b,
        kept.to_str().context("utf-8 path")?,
        "--include",
        "tree/bin/tool",
        "--preserve-setid",
        "--json",
    ])?;
    ensure!(tool_mode(&kept)? == 0o6755, "{:o}", tool_mode(&kept)?);
    let (orig, back) = (tree.join("src/main.rs"), dest.join("tree/src/main.rs"));
    ensure!(fs::read(&orig)? == fs::read(&back)?);
    let (mo, mb) = (fs::metadata(&orig)?, fs::metadata(&back)?);
    ensure!(mo.mode() & 0o7777 == mb.mode() & 0o7777);
    ensure!((mo.mtime(), mo.mtime_nsec()) == (mb.mtime(), mb.mtime_nsec()));
    ensure!(
        !dest.join("tree/docs").exists(),
        "only the included file comes back"
    );

    // The dashboard: URL in status, page, JSON, map; then a browser.
    let status = source.cli_json(&["status", "--json"])?;
    let url = status["dashboard_url"]
        .as_str()
        .context("dashboard_url")?
        .to_string();
    ensure!(url.starts_with("http://127.0.0.1:"), "{url}");
    let port: u16 = url["http://127.0.0.1:".len()..]
        .split('/')
        .next()
        .and_then(|p| p.parse().ok())
        .context("dashboard port")?;
    let query = &url[url.find('?').context("token in URL")?..];
    let node_id = source.node_id()?;
    let (st, page) = http_get(port, &format!("/{query}"))?;
    ensure!(
        st.contains("200") && page.contains("<title>strew node</title>"),
        "{st}"
    );
    ensure!(!page.contains("<script src"), "no external scripts");
    let (st, _) = http_get(port, "/api/status?token=wrong")?;
    ensure!(st.contains("401"), "a wrong token is refused: {st}");
    let (_, api) = http_get(port, &format!("/api/status{query}"))?;
    let api: Value = serde_json::from_str(&api)?;
    ensure!(api["status"]["node_id"] == node_id.as_str(), "{api}");
    let snaps = api["snapshots"].as_array().context("snapshots")?;
    ensure!(
        snaps
            .iter()
            .all(|s| s["health"]["stripes"].as_u64() > Some(0) && s["health"]["lost"] == 0),
        "{api}"
    );
    let (st, svg) = http_get(port, &format!("/map.svg{query}"))?;
    ensure!(st.contains("200") && svg.contains("<svg"), "{st}");
    browser_check(&url, &node_id, &snap_b)?;

    // Retention: keep the newest one; a dry run lists, the real run forgets.
    let dry = source.cli_json(&[
        "forget",
        "--keep-last",
        "1",
        "--name",
        "tree",
        "--dry-run",
        "--json",
    ])?;
    let ids = |v: &Value, f: &str| -> Vec<String> {
        v[f].as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["snapshot"].as_str().map(str::to_string))
            .collect()
    };
    ensure!(
        ids(&dry, "keep") == [snap_b.clone()] && ids(&dry, "remove") == [snap_a.clone()],
        "{dry}"
    );
    // `--progress json`: stdout is newline-delimited JSON, progress objects
    // then the result on the last line.
    let ndjson = work.path().join("restored-ndjson");
    let out = source.cli(&[
        "restore",
        &snap_b,
        ndjson.to_str().context("utf-8 path")?,
        "--include",
        "tree/src/main.rs",
        "--progress",
        "json",
    ])?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8(out.stdout)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let (last, progress) = lines.split_last().context("no output")?;
    ensure!(last["event"] == "result", "{last}");
    ensure!(last["restore"]["files"] == 1, "{last}");
    for p in progress {
        ensure!(p["event"] == "progress" && p["phase"] == "restore", "{p}");
        ensure!(p["bytes_done"].as_u64() <= p["bytes_total"].as_u64(), "{p}");
    }

    let stored = |nodes: &[Node]| -> Result<u64> { nodes.iter().map(|n| n.stored_packets()).sum() };
    let before = stored(&nodes)?;
    let real = source.cli_json(&["forget", "--keep-last", "1", "--name", "tree", "--json"])?;
    ensure!(real["undeleted"] == 0, "{real}");
    let deleted = real["deleted"].as_u64().context("deleted")?;
    ensure!(deleted > 0, "{real}");
    // The forgotten snapshots' root copies leave their targets too.
    let roots = real["root_copies_dropped"]
        .as_u64()
        .context("root copies")?;
    ensure!(roots > 0, "{real}");
    ensure!(
        stored(&nodes)? == before - deleted - roots,
        "targets freed exactly what forget reports"
    );
    let left = source.cli_json(&["snapshots", "--json"])?;
    let left: Vec<&str> = left
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["snapshot"].as_str())
        .collect();
    ensure!(left == [snap_b.as_str()], "{left:?}");
    ensure!(
        !cached_a.exists(),
        "the forgotten snapshot's cached manifest is dropped"
    );

    // A scheduled set carries its policy: after its next run the daemon
    // forgets what `--keep-last 1` does not keep.
    let first = source.cli_json(&[
        "backup",
        tree_arg,
        "--redundancy",
        "erasure:2+1",
        "--name",
        "sched",
        "--sync-every",
        "10s",
        "--keep-last",
        "1",
        "--json",
    ])?;
    let first = first["snapshot"]
        .as_str()
        .context("snapshot id")?
        .to_string();
    let sched = |n: &Node| -> Option<Vec<String>> {
        let list = n
            .cli_json(&["snapshots", "--name", "sched", "--json"])
            .ok()?;
        Some(
            list.as_array()?
                .iter()
                .filter_map(|s| s["snapshot"].as_str().map(str::to_string))
                .collect(),
        )
    };
    // The tree changes, so the next scheduled run makes a snapshot (an
    // unchanged tree would make none).
    fs::write(tree.join("changed-for-the-schedule.txt"), "new\n")?;
    wait_for(
        "the scheduled run and its retention policy",
        Duration::from_secs(90),
        || sched(source).filter(|l| l.len() == 1 && l[0] != first),
    )
    .map_err(|e| anyhow::anyhow!("{e}; log:\n{}", source.log()))?;
    // The policy is logged once its deletions are done, after the listing
    // already shows the forget.
    wait_for(
        "the retention policy's log line",
        Duration::from_secs(30),
        || {
            source
                .log()
                .contains("retention policy applied")
                .then_some(())
        },
    )?;

    // Bad input is refused with a message naming what to fix.
    let refused = |args: &[&str], needle: &str| -> Result<()> {
        let out = source.cli(args)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
        Ok(())
    };
    refused(&["backup", tree_arg, "--keep-daily", "3"], "--sync-every")?;
    refused(&["backup", tree_arg, "--exclude", "{a,b"], "{a,b")?;
    refused(&["forget"], "<SNAPSHOT>")?;
    refused(&["ls", &snap_b, "tree/nothing-here"], "is not in snapshot")?;
    refused(
        &[
            "restore",
            &snap_b,
            "/tmp/strew-never",
            "--include",
            "nothing/here",
        ],
        "nothing in the snapshot matches",
    )?;
    drop(mount);
    Ok(())
}

/// A Chromium on this machine, if any.
fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome", "chrome"]
        .iter()
        .find_map(|name| {
            let out = Command::new("sh")
                .args(["-c", &format!("command -v {name}")])
                .output()
                .ok()?;
            let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !path.is_empty()).then(|| PathBuf::from(path))
        })
}

/// Loads the dashboard in headless Chromium: the rendered page must show the
/// node id, the snapshot with its health, and the map; saves a screenshot
/// (`STREW_SCREENSHOT`, default `target/dashboard.png`). Without a browser it
/// says so and returns (the HTTP checks above cover the same content).
fn browser_check(url: &str, node_id: &str, snapshot: &str) -> Result<()> {
    let Some(browser) = chromium() else {
        eprintln!(
            "note: no Chromium installed (scripts/dashboard-screenshot.sh installs one); the headless-browser check is skipped"
        );
        return Ok(());
    };
    let profile = tempfile::tempdir()?;
    let run = |extra: &[&str]| -> Result<std::process::Output> {
        let mut child = Command::new(&browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1280,1400",
                "--virtual-time-budget=6000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(extra)
            .arg(url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("start chromium")?;
        let mut stdout = child.stdout.take().context("chromium stdout")?;
        let reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stdout.read_to_end(&mut s);
            s
        });
        let status = strew_tests::wait_exit(&mut child, Duration::from_secs(90))?;
        let out = reader.join().unwrap_or_default();
        let Some(status) = status else {
            bail!("chromium did not finish within 90 s");
        };
        Ok(std::process::Output {
            status,
            stdout: out,
            stderr: Vec::new(),
        })
    };
    let dom = run(&["--dump-dom"])?;
    let dom = String::from_utf8_lossy(&dom.stdout);
    ensure!(
        dom.contains(node_id),
        "the rendered page has no node id:\n{dom}"
    );
    ensure!(
        dom.contains(&format!("data-snapshot=\"{snapshot}\"")),
        "no snapshot row:\n{dom}"
    );
    ensure!(dom.contains("healthy ("), "no health:\n{dom}");
    ensure!(dom.contains("<svg"), "no map:\n{dom}");
    let shot = std::env::var_os("STREW_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| strew_tests::workspace_root().join("target/dashboard.png"));
    let _ = fs::remove_file(&shot);
    run(&[&format!("--screenshot={}", shot.display())])?;
    let png = fs::read(&shot).with_context(|| format!("no screenshot at {}", shot.display()))?;
    ensure!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot is not a page"
    );
    eprintln!("dashboard screenshot saved to {}", shot.display());
    Ok(())
}
