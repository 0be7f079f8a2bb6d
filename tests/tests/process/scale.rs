//! A snapshot of more than 200,000 chunks on a local grid (issue 14, SPEC
//! R12): 66 MB of noise cut with the smallest chunk sizes (64/256/1024 B)
//! backs up in parts, restores byte-identical and is forgotten until its
//! targets hold nothing, while no manager message and no raft entry exceeds
//! its bound (`STREW_SCALE_BYTES` makes it larger: 330 MB is about a
//! million chunks): the coordinator's and the source's metrics count every
//! refused or oversized message (0) and the largest raft entry proposed
//! (under 1 MiB). Too slow for every CI run (minutes on 2 cores): run it
//! with `cargo nextest run -p strew-tests --run-ignored only -E
//! 'test(/^scale::/)'`; its figures are in docs/benchmarks.md.

use std::fs;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use strew_tests::{Node, NodeOptions, cities, noise, wait_for};

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The value of metric `name` (a sample line `name value`) at `port`.
fn metric(port: u16, name: &str) -> Result<f64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} not in the metrics"))
}

#[test]
#[ignore = "scale: minutes on 2 cores; run with --run-ignored (docs/benchmarks.md)"]
fn a_snapshot_of_200k_chunks_backs_up_restores_and_forgets_within_every_bound() -> Result<()> {
    let places = cities(4)?;
    let ports = [free_port()?, free_port()?];
    let options = |i: usize| {
        let mut o = NodeOptions::at(places[i].location());
        o.announce_interval = "1s".into();
        o.storage = "2GiB".into();
        if i < 2 {
            o.extra = vec![format!("--metrics=127.0.0.1:{}", ports[i])];
        }
        o
    };
    let founder = Node::start(options(0).founder())?;
    let boot = founder.bootstrap_addr()?;
    let manager = founder.node_id()?;
    let mut nodes = vec![founder];
    for i in 1..places.len() {
        nodes.push(Node::start(options(i).bootstrap(boot.clone()))?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    let source = &nodes[1];
    source.wait_for_grid_secret(Duration::from_secs(60))?;

    let work = tempfile::tempdir()?;
    let tree = work.path().join("tree");
    fs::create_dir_all(&tree)?;
    // `STREW_SCALE_BYTES` scales it (330000000: about a million chunks).
    let size: usize = std::env::var("STREW_SCALE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(66_000_000);
    fs::write(tree.join("noise.bin"), noise(size, 14))?;
    let started = Instant::now();
    // The source's resident memory over the backup, every 30 s (where the
    // peak comes, if one does).
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, status) = (
            sampling.clone(),
            format!("/proc/{}/status", source.pid().context("source pid")?),
        );
        std::thread::spawn(move || {
            let (started, mut last, mut most) = (Instant::now(), Instant::now(), 0);
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let rss = fs::read_to_string(&status).ok().and_then(|s| {
                    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
                    line.split_whitespace().nth(1)?.parse::<u64>().ok()
                });
                most = most.max(rss.unwrap_or(0));
                if last.elapsed() >= Duration::from_secs(30) {
                    last = Instant::now();
                    eprintln!(
                        "scale: {:?} in: source RSS {} MB (most so far {} MB)",
                        started.elapsed(),
                        rss.unwrap_or(0) / 1000,
                        most / 1000
                    );
                }
            }
        })
    };
    let out = source.cli_json(&[
        "backup",
        tree.to_str().context("utf-8 path")?,
        "--chunk-sizes",
        "64/256/1024",
        "--redundancy",
        "replicas:1",
        "--json",
    ])?;
    let backup_time = started.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let _ = sampler.join();
    // The source's memory does not grow with the backup (issue 14): its
    // peak so far is the backup's (and its root's).
    let backup_peak = source.peak_rss_bytes().unwrap_or(0);
    eprintln!(
        "scale: backup took {backup_time:?}, source peak RSS {} MB",
        backup_peak / 1_000_000
    );
    ensure!(
        backup_peak > 0 && backup_peak < 300_000_000,
        "the source peaked at {backup_peak} bytes backing up"
    );
    let chunks = out["stats"]["chunks"].as_u64().unwrap_or(0);
    ensure!(
        chunks as usize >= size / 330,
        "{chunks} chunks of {size} bytes: {out}"
    );
    let snapshot = out["snapshot"].as_str().context("snapshot id")?.to_string();
    let plans = out["plans"].as_u64().unwrap_or(0);
    // Its root is kept too, one part per 512 stripes (issue 18).
    let root_parts = out["root_parts"].as_u64().unwrap_or(0);
    ensure!(
        out.get("root_warning").is_none() && root_parts >= chunks / 512,
        "a root of {root_parts} part(s) for {chunks} chunks: {out}"
    );

    let listed = source.cli_json(&["snapshots", "--json"])?;
    ensure!(
        listed
            .as_array()
            .is_some_and(|l| l.iter().any(|s| s["snapshot"] == snapshot.as_str())),
        "listed: {listed}"
    );

    // Its standing (status, the dashboard, the health tick) is summed by
    // the manager: no sequence page crosses for it.
    let started = Instant::now();
    let status = source.status()?;
    let status_time = started.elapsed();
    let health = status["snapshots"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["snapshot"] == snapshot.as_str()))
        .map(|s| s["health"].clone())
        .with_context(|| format!("the snapshot in the status: {status}"))?;
    eprintln!("scale: status took {status_time:?}: {health}");
    ensure!(
        // Noise has no repeated chunk: every data chunk is a stripe, and
        // the manifest's pieces are more.
        health["stripes"].as_u64() > Some(chunks) && health["healthy"] == health["stripes"],
        "the snapshot's health: {health}"
    );

    // The restore's own peak, apart from the backup's; the time includes
    // the comparison (a read of both copies).
    source.reset_peak_rss()?;
    let started = Instant::now();
    source.restore_identical(
        &snapshot,
        &work.path().join("restored"),
        &tree,
        &["noise.bin"],
    )?;
    let restore_time = started.elapsed();
    eprintln!("scale: restore took {restore_time:?}");

    let manager_rss = nodes[0].rss_bytes().unwrap_or(0);
    let disk = |name: &str| {
        fs::metadata(nodes[0].data_dir().join("manager").join(name)).map_or(0, |m| m.len())
    };
    let (manager_db, raft_log) = (disk("manager.redb"), disk("raft.redb"));
    let source_rss = nodes[1].rss_bytes().unwrap_or(0);
    let restore_peak = nodes[1].peak_rss_bytes().unwrap_or(0);
    // Nor does restoring it: the restore holds a compact index by chunk and
    // a page of the sequence, not a map of the whole manifest.
    ensure!(
        restore_peak > 0 && restore_peak < 300_000_000,
        "the source peaked at {restore_peak} bytes restoring"
    );
    let started = Instant::now();
    let out = source.cli_json(&["forget", &snapshot, "--json"])?;
    // Deleted now, or (a forget that outlived the call's deadline and was
    // retried) left to the leader's collection: the wait below checks both.
    ensure!(
        out["deleted"].as_u64() > Some(0) || out["more_collected_by_leader"] == true,
        "forget: {out}"
    );
    eprintln!(
        "scale: forget answered in {:?}: deleted {}, more collected by the leader: {}",
        started.elapsed(),
        out["deleted"],
        out["more_collected_by_leader"]
    );
    wait_for(
        "every target to hold no packet of the forgotten snapshot",
        Duration::from_secs(300.max(chunks / 1000)),
        || {
            let held: u64 = nodes.iter().filter_map(|n| n.stored_packets().ok()).sum();
            (held == 0).then_some(())
        },
    )?;
    eprintln!(
        "scale: every target empty {:?} after the forget began",
        started.elapsed()
    );

    for port in ports {
        ensure!(metric(port, "strew_oversize_messages_total")? == 0.0);
        ensure!(metric(port, "strew_raft_entries_refused_total")? == 0.0);
    }
    let largest = metric(ports[0], "strew_raft_largest_entry_bytes")?;
    ensure!(
        largest > 0.0 && largest <= (1 << 20) as f64,
        "largest raft entry {largest} bytes"
    );
    eprintln!(
        "scale: {chunks} chunks, {plans} plan(s), a root of {root_parts} part(s); backup {backup_time:?}, restore {restore_time:?}; \
         largest raft entry {largest} B; RSS manager {} MB, source {} MB (peak: backing up {} MB, restoring {} MB); manager disk: state {} MB \
         ({} B a chunk), raft log {} MB",
        manager_rss / 1_000_000,
        source_rss / 1_000_000,
        backup_peak / 1_000_000,
        restore_peak / 1_000_000,
        manager_db / 1_000_000,
        manager_db / chunks.max(1),
        raft_log / 1_000_000
    );
    Ok(())
}
