//! `strew init` persists identity and config that `strew run` uses; the
//! Prometheus endpoint serves libp2p's and strew's metrics.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use strew_tests::{Node, NodeOptions, wait_for};

fn http_get(port: u16, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn metrics_endpoint_serves_libp2p_and_strew_metrics() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut opts = NodeOptions::at("51.5074,-0.1278");
    opts.extra = vec!["--metrics".into(), format!("127.0.0.1:{port}")];
    let first = Node::start(opts)?;
    let second =
        Node::start(NodeOptions::at("40.4168,-3.7038").bootstrap(first.bootstrap_addr()?))?;
    let second_id = second.node_id()?;
    wait_for(
        "the second node in the view",
        Duration::from_secs(30),
        || first.peer_ids().ok()?.contains(&second_id).then_some(()),
    )?;
    let text = wait_for(
        "grid_peers 1 in the metrics",
        Duration::from_secs(10),
        || {
            let text = http_get(port, "/metrics").ok()?;
            text.contains("strew_grid_peers 1").then_some(text)
        },
    )?;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for name in [
        "strew_announcements_total{result=\"accepted\"}",
        "strew_store_capacity_bytes",
        "libp2p_swarm_connections_established",
        "libp2p_gossipsub",
        "libp2p_bandwidth",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(http_get(port, "/nope")?.starts_with("HTTP/1.1 404"));
    for name in [
        "strew_store_disk_bytes",
        "strew_store_compactions_total",
        "strew_group_member",
        "strew_snapshots_degraded",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // Prometheus's own checker accepts the exposition (it used to find 21
    // counters without a HELP line under the name it expects).
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    let promtool = strew_tests::tools::promtool()?;
    let mut check = std::process::Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = check.stdin.take().expect("piped stdin");
        stdin.write_all(body.as_bytes())?;
    }
    let out = check.wait_with_output()?;
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn init_persists_identity_and_config_that_run_uses() -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("strew-init-").tempdir()?;
    let bin = strew_tests::strew_bin()?;
    let out = std::process::Command::new(&bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["init", "--location=-33.8688,151.2093", "--storage", "2GiB"])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let config = std::fs::read_to_string(dir.path().join("config.toml"))?;
    assert!(
        config.contains("-33.8688,151.2093") && config.contains("2GiB"),
        "{config}"
    );
    // `run` with no location flag takes it from config.toml; the id is the one init printed.
    let mut child = std::process::Command::new(&bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["run", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let status = wait_for("the daemon", Duration::from_secs(30), || {
        let out = std::process::Command::new(&bin)
            .arg("--data-dir")
            .arg(dir.path())
            .args(["status", "--json"])
            .output()
            .ok()?;
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    });
    let _ = child.kill();
    let _ = child.wait();
    let status = status?;
    assert_eq!(status["location"]["lat"], -33.8688);
    assert_eq!(status["storage"]["capacity_bytes"], 2u64 << 30);
    let id = status["node_id"].as_str().unwrap_or_default();
    assert!(!id.is_empty() && printed.contains(id), "{printed} vs {id}");
    // Without a daemon, client commands say so.
    let out = std::process::Command::new(&bin)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["peers"])
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no strew daemon is running"));
    Ok(())
}
