//! End to end on real processes: a 9-node grid on 127.0.0.1 at real city
//! locations backs up a tree (unicode names, a symlink, an empty dir, a
//! sparse file, duplicate files, 50 MB of random data) with erasure 4+2 under
//! a backup-distance bound, loses two targets, and restores it byte for byte;
//! a second source's backup of the same data sends no data packets; `forget`
//! frees exactly the unshared packets; a target serving corrupt packets is
//! survived; bad input gets clear errors and stores nothing.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use strew_tests::{City, Node, NodeOptions, cities, haversine_km, noise, wait_for};

/// Gossip timing for grids that work hard: announce every 2 s, keep entries 30 s.
fn options(city: &City, storage: &str) -> NodeOptions {
    let mut o = NodeOptions::at(city.location());
    o.announce_interval = "2s".into();
    o.peer_ttl = "30s".into();
    o.storage = storage.into();
    o
}

/// The tree the issue asks for.
fn make_tree(root: &Path, random_mb: usize) -> Result<()> {
    let text = root.join("données").join("ünïcödé 文件 ✓.txt");
    fs::create_dir_all(text.parent().context("parent")?)?;
    fs::write(&text, "grüße aus 上海\n".repeat(100))?;
    fs::set_permissions(&text, fs::Permissions::from_mode(0o640))?;
    symlink("données/ünïcödé 文件 ✓.txt", root.join("lien → texte"))?;
    fs::create_dir_all(root.join("empty dir"))?;
    // Sparse: 16 MiB long, 4 KiB of data in the middle.
    let sparse = fs::File::create(root.join("sparse.img"))?;
    sparse.set_len(16 << 20)?;
    {
        use std::os::unix::fs::FileExt;
        sparse.write_at(&noise(4096, 7), 8 << 20)?;
    }
    let dup = noise(3 << 20, 11);
    fs::create_dir_all(root.join("dup"))?;
    fs::write(root.join("dup/a.bin"), &dup)?;
    fs::write(root.join("dup/b.bin"), &dup)?;
    let mut f = fs::File::create(root.join("random.bin"))?;
    f.write_all(&noise(random_mb * 1_000_000, 42))?;
    fs::set_permissions(root.join("random.bin"), fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Compares two trees: kinds, contents, modes, mtimes of files, symlink targets.
fn diff(a: &Path, b: &Path, rel: &Path, out: &mut Vec<String>) -> Result<()> {
    let (ma, mb) = (fs::symlink_metadata(a)?, fs::symlink_metadata(b));
    let Ok(mb) = mb else {
        out.push(format!("{}: missing", rel.display()));
        return Ok(());
    };
    if ma.file_type() != mb.file_type() {
        out.push(format!("{}: kind differs", rel.display()));
        return Ok(());
    }
    if ma.file_type().is_symlink() {
        if fs::read_link(a)? != fs::read_link(b)? {
            out.push(format!("{}: link target differs", rel.display()));
        }
        return Ok(());
    }
    if ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        out.push(format!("{}: mode differs", rel.display()));
    }
    if ma.is_file() {
        if ma.len() != mb.len() || fs::read(a)? != fs::read(b)? {
            out.push(format!("{}: content differs", rel.display()));
        }
        if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
            out.push(format!("{}: mtime differs", rel.display()));
        }
        return Ok(());
    }
    let names = |p: &Path| -> Result<Vec<std::ffi::OsString>> {
        let mut v: Vec<_> = fs::read_dir(p)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        v.sort();
        Ok(v)
    };
    let (na, nb) = (names(a)?, names(b)?);
    if na != nb {
        out.push(format!("{}: entries differ", rel.display()));
    }
    for name in na {
        diff(&a.join(&name), &b.join(&name), &rel.join(&name), out)?;
    }
    Ok(())
}

/// Starts a coordinator at `places[0]` and plain nodes at the rest; waits
/// until every node knows the manager and the manager sees every node.
fn start_grid(places: &[City], storage: &str) -> Result<Vec<Node>> {
    start_grid_with(places, storage, &[])
}

/// [`start_grid`] with extra `strew run` flags on every node.
fn start_grid_with(places: &[City], storage: &str, extra: &[&str]) -> Result<Vec<Node>> {
    start_grid_each(places, storage, |_| {
        extra.iter().map(|e| e.to_string()).collect()
    })
}

/// [`start_grid_with`] with each node's own extra flags (by index).
fn start_grid_each(
    places: &[City],
    storage: &str,
    extra: impl Fn(usize) -> Vec<String>,
) -> Result<Vec<Node>> {
    let with_extra = |i: usize, mut o: NodeOptions| {
        o.extra.extend(extra(i));
        o
    };
    let mut first = with_extra(0, options(&places[0], storage));
    // The grid's founder: `strew grid create --open` before it starts.
    first.found_grid = true;
    first.extra.push("--coordinator".into());
    let first = Node::start(first)?;
    let boot = first.bootstrap_addr()?;
    let manager = first.node_id()?;
    let mut nodes = vec![first];
    for (i, city) in places.iter().enumerate().skip(1) {
        nodes.push(Node::start(
            with_extra(i, options(city, storage)).bootstrap(boot.clone()),
        )?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    Ok(nodes)
}

/// Packets each node stores, by node index.
fn stored_packets(nodes: &[&Node]) -> Result<Vec<u64>> {
    nodes.iter().map(|n| n.stored_packets()).collect()
}

/// The targets of `snapshot` as `strew status --json` lists them: node id → (lat, lon, packets).
fn targets_of(node: &Node, snapshot: &str) -> Result<BTreeMap<String, (f64, f64, u64)>> {
    let status = node.status()?;
    let snap = status["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["snapshot"].as_str() == Some(snapshot))
        .with_context(|| format!("snapshot {snapshot} not in status: {status}"))?;
    Ok(snap["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["node_id"].as_str().unwrap_or_default().to_string(),
                (
                    t["location"]["lat"].as_f64().unwrap_or(f64::NAN),
                    t["location"]["lon"].as_f64().unwrap_or(f64::NAN),
                    t["packets"].as_u64().unwrap_or(0),
                ),
            )
        })
        .collect())
}

#[test]
fn nine_nodes_back_up_lose_two_targets_and_restore_byte_identical() -> Result<()> {
    let places = cities(9)?;
    let mut nodes = start_grid(&places, "256MiB")?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    make_tree(&tree, 50)?;

    let (min_km, max_km) = (1000.0, 13000.0);
    let out = nodes[0].cli_json(&[
        "backup",
        tree.to_str().context("utf-8 path")?,
        "--backup-distance",
        "1000km..13000km",
        "--spread",
        "50km..",
        "--redundancy",
        "erasure:4+2",
        "--name",
        "tree",
        "--json",
    ])?;
    let snapshot = out["snapshot"].as_str().context("snapshot id")?.to_string();
    ensure!(out["stats"]["bytes_in"].as_u64() >= Some(50_000_000));

    // Every target lies within the backup distance (checked independently).
    let targets = targets_of(&nodes[0], &snapshot)?;
    ensure!(
        targets.len() >= 6,
        "a 4+2 stripe needs 6 targets: {targets:?}"
    );
    let source = (places[0].lat, places[0].lon);
    for (id, (lat, lon, _)) in &targets {
        let d = haversine_km(source, (*lat, *lon));
        ensure!(
            d >= min_km - 1.0 && d <= max_km + 1.0,
            "target {id} is {d:.0} km from the source"
        );
    }

    // Kill the two targets holding the most packets.
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect::<Result<_>>()?;
    let mut holders: Vec<usize> = (1..nodes.len())
        .filter(|&i| targets.contains_key(&ids[i]))
        .collect();
    holders.sort_by_key(|&i| std::cmp::Reverse(targets[&ids[i]].2));
    for &i in &holders[..2] {
        nodes[i].kill();
    }

    let dest = work.path().join("restored");
    let r = nodes[0].cli_json(&[
        "restore",
        &snapshot[..12],
        dest.to_str().context("utf-8 path")?,
        "--json",
    ])?;
    ensure!(
        r["failed_fetches"].as_u64() > Some(0),
        "dead targets were tried: {r}"
    );
    let mut differences = Vec::new();
    diff(
        &tree,
        &dest.join("tree"),
        Path::new("tree"),
        &mut differences,
    )?;
    ensure!(differences.is_empty(), "restore differs: {differences:?}");
    let sparse = fs::metadata(dest.join("tree/sparse.img"))?;
    ensure!(sparse.len() == 16 << 20);
    ensure!(
        sparse.blocks() * 512 < 4 << 20,
        "the sparse file is restored sparse ({} blocks)",
        sparse.blocks()
    );

    // The source's status (the manager sums it, told which targets the
    // source sees down) shows the damage: both dead targets down, the
    // stripes with a packet on either degraded (at least as many as one of
    // them holds, at most as many as both), none lost.
    let dead: Vec<&String> = holders[..2].iter().map(|&i| &ids[i]).collect();
    let on_dead: Vec<u64> = holders[..2].iter().map(|&i| targets[&ids[i]].2).collect();
    let (at_least, at_most) = (
        on_dead.iter().copied().max().unwrap_or(0),
        on_dead.iter().sum::<u64>(),
    );
    wait_for(
        "the source's status to show the dead targets' stripes degraded",
        Duration::from_secs(60),
        || {
            let status = nodes[0].status().ok()?;
            let snap = status["snapshots"]
                .as_array()?
                .iter()
                .find(|s| s["snapshot"] == snapshot.as_str())?
                .clone();
            let down: Vec<&str> = snap["targets"]
                .as_array()?
                .iter()
                .filter(|t| t["up"] == false)
                .filter_map(|t| t["node_id"].as_str())
                .collect();
            let h = &snap["health"];
            let degraded = h["degraded"].as_u64()?;
            (dead.iter().all(|d| down.contains(&d.as_str()))
                && (at_least..=at_most).contains(&degraded)
                && h["lost"] == 0
                && h["healthy"].as_u64()? + degraded == h["stripes"].as_u64()?)
            .then_some(())
        },
    )?;

    // A restore into a non-empty DEST is refused.
    let again = nodes[0].cli(&["restore", &snapshot, dest.to_str().unwrap_or_default()])?;
    ensure!(!again.status.success());
    Ok(())
}

#[test]
fn second_source_dedups_forget_frees_only_unshared_and_corrupt_target_is_survived() -> Result<()> {
    let places = cities(8)?;
    let nodes = start_grid(&places, "256MiB")?;
    let all: Vec<&Node> = nodes.iter().collect();
    let work = tempfile::tempdir()?;
    let tree = work.path().join("data");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("big.bin"), noise(12_000_000, 5))?;
    fs::write(tree.join("notes.txt"), "the same data on two machines\n")?;
    let tree_s = tree.to_str().context("utf-8")?;
    let backup = |node: &Node, name: &str, distance: &str| {
        node.cli_json(&[
            "backup",
            tree_s,
            "--backup-distance",
            distance,
            "--name",
            name,
            "--json",
        ])
    };

    // Both sources hold the grid's convergence secret, as the founder hands
    // it to members of an open grid once they reach the manager; without it
    // grid-scope sets do not dedup.
    // Node 0 founded the grid.
    let founder_secret = fs::read_to_string(nodes[0].data_dir().join("grid-convergence.key"))?;
    wait_for(
        "both sources to receive the grid's convergence secret",
        Duration::from_secs(60),
        || {
            nodes[..2]
                .iter()
                .all(|n| {
                    fs::read_to_string(n.data_dir().join("grid-convergence.key"))
                        .is_ok_and(|s| s.trim() == founder_secret.trim())
                })
                .then_some(())
        },
    )?;
    let first = backup(&nodes[0], "mine", "1000km..")?;
    let before = stored_packets(&all)?;
    // Dedup reuses a stored copy only if its targets meet the new backup's
    // distance and spread: the second source accepts any distance, so the
    // first source's copy (1000 km or more from it) suits.
    let second = backup(&nodes[1], "theirs", "..")?;
    let after = stored_packets(&all)?;
    let data_chunks = second["stats"]["chunks"].as_u64().context("chunks")?;
    ensure!(data_chunks >= 10, "{second}");
    ensure!(
        second["deduplicated_chunks"].as_u64().context("dedup")? >= data_chunks,
        "every data chunk of the second source was already stored: {second}"
    );
    // Only the second snapshot's own manifest went out.
    let sent = second["uploaded_bytes"].as_u64().context("bytes")?;
    ensure!(
        sent < 100_000,
        "the second source sent {sent} bytes for 12 MB it did not need to send"
    );
    let new_packets = second["uploaded_packets"].as_u64().context("packets")?;
    // Plus the copies of the second snapshot's root (issue 18).
    let root_copies = second["root_copies"].as_u64().context("root copies")?;
    ensure!(
        after.iter().sum::<u64>() - before.iter().sum::<u64>() == new_packets + root_copies,
        "targets gained exactly the second manifest's packets and its root copies"
    );

    // Forgetting the second snapshot frees exactly its unshared packets,
    // and its root copies.
    let theirs = second["snapshot"].as_str().context("snapshot")?;
    let forgot = nodes[1].cli_json(&["forget", theirs, "--json"])?;
    ensure!(forgot["deleted"].as_u64() == Some(new_packets), "{forgot}");
    ensure!(
        forgot["root_copies_dropped"].as_u64() == Some(root_copies),
        "{forgot}"
    );
    let after_forget = stored_packets(&all)?;
    ensure!(
        after_forget.iter().sum::<u64>() == before.iter().sum::<u64>(),
        "{after_forget:?} != {before:?}"
    );

    // The first source's snapshot still restores, even with one target
    // serving corrupt bytes: flip every byte of its packet segments.
    let mine = first["snapshot"].as_str().context("snapshot")?;
    let targets = targets_of(&nodes[0], mine)?;
    let ids: Vec<String> = nodes.iter().map(Node::node_id).collect::<Result<_>>()?;
    // The two targets holding the most packets serve corrupt bytes: every
    // stripe keeps at least 4 of its 6 packets intact.
    let mut holders: Vec<usize> = (1..nodes.len())
        .filter(|&i| targets.contains_key(&ids[i]))
        .collect();
    holders.sort_by_key(|&i| std::cmp::Reverse(targets[&ids[i]].2));
    let mut corrupted = 0;
    for &liar in &holders[..2] {
        for entry in walk(&nodes[liar].data_dir().join("packets"))? {
            if entry.extension().is_some_and(|e| e == "seg") {
                let mut bytes = fs::read(&entry)?;
                for b in bytes.iter_mut().skip(64) {
                    *b ^= 0x5a;
                }
                fs::write(&entry, bytes)?;
                corrupted += 1;
            }
        }
    }
    ensure!(corrupted > 0, "found the target's segment files");
    let dest = work.path().join("restored");
    let r = nodes[0].cli_json(&["restore", mine, dest.to_str().context("utf-8")?, "--json"])?;
    ensure!(r["failed_fetches"].as_u64() > Some(0), "{r}");
    let mut differences = Vec::new();
    diff(
        &tree,
        &dest.join("data"),
        Path::new("data"),
        &mut differences,
    )?;
    ensure!(differences.is_empty(), "{differences:?}");
    ensure!(
        nodes[0].log().contains("fetch failed"),
        "the corrupt packets were logged"
    );

    // Forgetting the last snapshot of the data frees everything it held,
    // its root copies included.
    let last = nodes[0].cli_json(&["forget", mine, "--json"])?;
    ensure!(
        last["root_copies_dropped"] == first["root_copies"],
        "{last} (the backup kept {} root copies)",
        first["root_copies"]
    );
    let left: u64 = stored_packets(&all)?.iter().sum();
    ensure!(left == 0, "{left} packets left after forgetting everything");
    Ok(())
}

fn walk(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

#[test]
fn bad_input_gets_clear_errors_and_stores_nothing() -> Result<()> {
    // Small donations: 7 nodes × 8 MiB cannot hold 40 MB with erasure 4+2.
    let places = cities(7)?;
    let nodes = start_grid(&places, "8MiB")?;
    let all: Vec<&Node> = nodes.iter().collect();
    let work = tempfile::tempdir()?;
    fs::write(work.path().join("f.txt"), "hello")?;
    let path = work.path().to_str().context("utf-8")?;

    // A path that does not exist.
    let out = nodes[0].cli(&["backup", "/no/such/place"])?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("no such file"));

    // A bad flag value names the flag.
    let out = nodes[0].cli(&["backup", path, "--redundancy", "erasure:0+2"])?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("--redundancy"));

    // A constraint no grid can meet: the planner's explanation, non-zero, nothing stored.
    let before = stored_packets(&all)?;
    let out = nodes[0].cli(&["backup", path, "--backup-distance", "19000km..20000km"])?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        err.contains("km"),
        "the refusal explains the distance: {err}"
    );
    let out = nodes[0].cli(&["plan", path, "--backup-distance", "19000km..20000km"])?;
    ensure!(!out.status.success());
    ensure!(stored_packets(&all)? == before, "nothing was stored");

    // More than the targets' disks can hold: refused up front with the
    // reason, nothing stored; a backup that fits still works afterwards.
    let huge = work.path().join("huge");
    fs::create_dir_all(&huge)?;
    fs::write(huge.join("x.bin"), noise(40_000_000, 9))?;
    let out = nodes[0].cli(&["backup", huge.to_str().context("utf-8")?])?;
    ensure!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("room") || err.contains("space"), "{err}");
    ensure!(stored_packets(&all)? == before, "nothing was stored");
    let fits = work.path().join("fits");
    fs::create_dir_all(&fits)?;
    fs::write(fits.join("f.txt"), "small enough")?;
    // Something that cannot be backed up (a FIFO; root reads any file, so an
    // unreadable file cannot be staged here) is reported and the rest stored.
    let fifo = fits.join("a pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    ensure!(made.success(), "mkfifo");
    let ok = nodes[0].cli_json(&["backup", fits.to_str().context("utf-8")?, "--json"])?;
    ensure!(ok["snapshot"].is_string());
    let warned = ok["warnings"].to_string();
    ensure!(warned.contains("a pipe"), "the FIFO is reported: {ok}");
    ensure!(ok["stats"]["files"].as_u64() == Some(1), "{ok}");

    // A snapshot id that does not exist.
    let dest = work.path().join("dest");
    let out = nodes[0].cli(&["restore", &"ab".repeat(32), dest.to_str().context("utf-8")?])?;
    ensure!(!out.status.success());
    let out = nodes[0].cli(&["restore", "zz", dest.to_str().context("utf-8")?])?;
    ensure!(!out.status.success());
    ensure!(String::from_utf8_lossy(&out.stderr).contains("snapshot"));
    Ok(())
}

/// The `docs` set's `sync_every` after a run by hand of `tree` with `extra` flags.
fn run_by_hand(node: &Node, tree: &str, extra: &[&str]) -> Result<Value> {
    let base = [
        "backup",
        tree,
        "--redundancy",
        "replicas:2",
        "--name",
        "docs",
        "--json",
    ];
    node.cli_json(&[&base[..], extra].concat())?;
    let sets = node.control("sets", Value::Null)?;
    sets.as_array()
        .and_then(|l| l.iter().find(|s| s["args"]["name"] == "docs"))
        .map(|s| s["args"]["sync_every"].clone())
        .with_context(|| format!("no docs set in {sets}"))
}

#[test]
fn scheduled_backup_reruns_incrementally_and_survives_a_restart() -> Result<()> {
    let places = cities(3)?;
    let mut nodes = start_grid(&places, "64MiB")?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("docs");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("a.txt"), "first version\n")?;
    fs::write(tree.join("big.bin"), noise(2_000_000, 3))?;
    let tree_s = tree.to_str().context("utf-8")?;
    let first = nodes[1].cli_json(&[
        "backup",
        tree_s,
        "--redundancy",
        "replicas:2",
        "--name",
        "docs",
        "--sync-every",
        "10s",
        "--json",
    ])?;
    let first_id = first["snapshot"].as_str().context("snapshot")?.to_string();
    fs::write(tree.join("a.txt"), "second version\n")?;
    let snapshots = |node: &Node| -> Option<Vec<Value>> {
        node.cli_json(&["snapshots", "--json"])
            .ok()?
            .as_array()
            .cloned()
    };
    let list = wait_for(
        "the scheduler to take a second snapshot",
        Duration::from_secs(60),
        || snapshots(&nodes[1]).filter(|l| l.len() >= 2),
    )?;
    ensure!(list.iter().all(|s| s["name"] == "docs"), "{list:?}");
    // The run is logged once its post-commit steps are done, which may be
    // a moment after the snapshot is listed.
    wait_for("the daemon to log the run", Duration::from_secs(30), || {
        nodes[1]
            .log()
            .contains("scheduled backup done")
            .then_some(())
    })?;

    // An unchanged tree makes no new snapshot, however often the set runs.
    let settled = snapshots(&nodes[1]).map_or(0, |l| l.len());
    let runs = |node: &Node| {
        node.log()
            .matches("nothing changed, no new snapshot")
            .count()
    };
    wait_for(
        "a scheduled run of the unchanged tree",
        Duration::from_secs(60),
        || (runs(&nodes[1]) >= 1).then_some(()),
    )?;
    let now = snapshots(&nodes[1]).map_or(0, |l| l.len());
    ensure!(
        now == settled,
        "unchanged runs made snapshots: {settled} → {now}"
    );

    // A run by hand keeps the schedule (it used to remove it).
    let every = run_by_hand(&nodes[1], tree_s, &[])?;
    ensure!(every == "10s", "the manual run kept the schedule: {every}");

    // The schedule is on disk: after a restart the daemon keeps running it
    // (node 1 is the source: it rejoins without `--bootstrap`, from its peer cache).
    fs::write(tree.join("a.txt"), "third version\n")?;
    nodes[1].restart_without_bootstrap()?;
    wait_for("the manager again", Duration::from_secs(60), || {
        nodes[1].daemon_status().ok()?["manager"]
            .as_str()
            .map(|_| ())
    })?;
    let before = snapshots(&nodes[1]).map_or(0, |l| l.len());
    wait_for(
        "a scheduled snapshot after the restart",
        Duration::from_secs(60),
        || snapshots(&nodes[1]).filter(|l| l.len() > before),
    )?;

    // `--sync-every off` switches the schedule off.
    let every = run_by_hand(&nodes[1], tree_s, &["--sync-every", "off"])?;
    ensure!(every.is_null(), "the schedule is off: {every}");
    // With no run left, the outbox gave its space back at the commits and
    // stays empty over a restart.
    let outbox = |node: &Node| -> Result<u64> {
        fs::read_dir(node.data_dir().join("outbox/segments"))?
            .map(|e| Ok(e?.metadata()?.len()))
            .sum()
    };
    ensure!(
        outbox(&nodes[1])? == 0,
        "outbox after the commits: {} bytes",
        outbox(&nodes[1])?
    );
    nodes[1].restart()?;
    ensure!(
        outbox(&nodes[1])? == 0,
        "outbox after a restart: {} bytes",
        outbox(&nodes[1])?
    );
    wait_for(
        "the manager after the restart",
        Duration::from_secs(60),
        || {
            nodes[1].daemon_status().ok()?["manager"]
                .as_str()
                .map(|_| ())
        },
    )?;
    // The latest snapshot restores the third version; the first still has the first.
    let latest = snapshots(&nodes[1])
        .and_then(|l| {
            l.iter()
                .max_by_key(|s| s["time"].as_u64())
                .and_then(|s| s["snapshot"].as_str().map(str::to_string))
        })
        .context("latest")?;
    for (snap, want) in [(&latest, "third version\n"), (&first_id, "first version\n")] {
        let dest = work.path().join(&snap[..8]);
        nodes[1].cli_json(&["restore", snap, dest.to_str().context("utf-8")?, "--json"])?;
        ensure!(fs::read_to_string(dest.join("docs/a.txt"))? == want);
    }
    Ok(())
}

#[test]
fn ctrl_c_cancels_a_running_backup_and_releases_its_reservations() -> Result<()> {
    // Four targets of 16 MiB hold one 7.6 MB backup at replicas:2 (placement
    // counts each packet at the largest size, ~1.9 MiB: about 20 packets of
    // the 32 that fit) but not two: a second attempt fits only if the
    // cancelled plan's reservations were released. Two targets take
    // 256 KB/s, so the upload lasts (about 15 s: at 512 KB/s a loaded
    // machine's polls for the first packet took long enough that the
    // backup finished before the cancel), and two take packets at once, so
    // the first packets land early: the cancel always comes mid-upload.
    // (The source's quota is its own donation.)
    let places = cities(5)?;
    let nodes = start_grid_each(&places, "16MiB", |i| {
        if i >= 3 {
            vec!["--bandwidth".into(), "256KB".into()]
        } else {
            Vec::new()
        }
    })?;
    let work = tempfile::tempdir()?;
    let tree = work.path().join("big");
    fs::create_dir_all(&tree)?;
    for i in 0..4u64 {
        fs::write(tree.join(format!("part{i}.bin")), noise(1_900_000, 40 + i))?;
    }
    let tree_s = tree.to_str().context("utf-8")?;
    let args = [
        "backup",
        tree_s,
        "--redundancy",
        "replicas:2",
        "--name",
        "big",
    ];
    // The client's own `--progress json` lines (one a second) say when the
    // first bytes were uploaded: polling four daemons' status instead took
    // long enough on a loaded machine that the backup finished first.
    let mut client = nodes[1].cli_spawn(&[&args[..], &["--progress", "json"]].concat())?;
    let others: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, n)| n)
        .collect();
    let stdout = client.stdout.take().context("the client's stdout")?;
    let (uploading, began) = std::sync::mpsc::channel();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["event"] == "progress" && v["uploaded"].as_u64().is_some_and(|u| u > 0) {
                let _ = uploading.send(());
            }
            seen.push(line);
        }
        seen
    });
    if began.recv_timeout(Duration::from_secs(120)).is_err() {
        let out = strew_tests::wait_output(&mut client, Duration::from_secs(5))?;
        let seen = lines.join().unwrap_or_default();
        anyhow::bail!(
            "no upload progress before the backup ended or 120 s passed: {}\n{}",
            seen.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    strew_tests::signal(client.id(), "INT")?;
    let out = strew_tests::wait_output(&mut client, Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let seen = lines.join().unwrap_or_default();
    ensure!(
        !out.status.success(),
        "a cancelled backup is not a success: {stderr}\n{}",
        seen.join("\n")
    );
    ensure!(stderr.contains("cancelled"), "it says so: {stderr}");
    ensure!(stderr.contains("reservations released"), "{stderr}");
    ensure!(
        nodes[1]
            .cli_json(&["snapshots", "--json"])?
            .as_array()
            .is_some_and(Vec::is_empty),
        "no snapshot was committed"
    );
    // The uploaded packets are deleted and the reservations gone: the same
    // backup runs again at once and fits.
    wait_for(
        "the cancelled uploads to be deleted",
        Duration::from_secs(60),
        || {
            stored_packets(&others)
                .ok()?
                .iter()
                .all(|n| *n == 0)
                .then_some(())
        },
    )?;
    let done = nodes[1].cli_json(&[&args[..], &["--json"]].concat())?;
    ensure!(done["snapshot"].as_str().is_some(), "{done}");
    Ok(())
}
