//! Bad input against real `strew` processes: garbage and truncated frames on
//! the listening ports, impossible locations, malformed and unreachable
//! bootstrap addresses. Each gets a clear log line or error, and a running node
//! keeps serving.

use std::io::Write;
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use strew_tests::{Node, NodeOptions, noise, run_strew_once, wait_for};

fn port_of(addr: &str, proto: &str) -> u16 {
    let parts: Vec<&str> = addr.split('/').collect();
    let i = parts
        .iter()
        .position(|p| *p == proto)
        .expect("protocol in addr");
    parts[i + 1].parse().expect("port")
}

#[test]
fn garbage_on_the_ports_is_logged_and_the_node_keeps_serving() -> anyhow::Result<()> {
    let node = Node::start(NodeOptions::at("48.8566,2.3522"))?;
    let tcp = port_of(&node.listen_addr("tcp")?, "tcp");
    let udp = port_of(&node.listen_addr("quic-v1")?, "udp");

    // Random bytes, a truncated multistream-select header, and a valid header
    // followed by a truncated Noise frame.
    let payloads: Vec<Vec<u8>> = vec![
        noise(4096, 1),
        b"\x13/multistream/1.0.0\n\x07/noi".to_vec(),
        [
            &b"\x13/multistream/1.0.0\n\x07/noise\n"[..],
            &[0x00, 0x40, 0x01, 0x02],
        ]
        .concat(),
        vec![],
    ];
    for p in &payloads {
        let mut s = TcpStream::connect(("127.0.0.1", tcp))?;
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        let _ = s.write_all(p);
        drop(s);
    }
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..20 {
        sock.send_to(&noise(1200, 100 + i), ("127.0.0.1", udp))?;
    }
    sock.send_to(&[0xc0, 0, 0, 0, 1], ("127.0.0.1", udp))?;

    wait_for(
        "a log line about the rejected connection",
        Duration::from_secs(20),
        || {
            node.log()
                .contains("rejected incoming connection")
                .then_some(())
        },
    )?;

    // Still serving: control endpoint answers and a new node can join and be seen.
    node.status()?;
    let bootstrap = node.bootstrap_addr()?;
    let other = Node::start(NodeOptions::at("52.52,13.405").bootstrap(bootstrap))?;
    let other_id = other.node_id()?;
    wait_for("the new node in the view", Duration::from_secs(30), || {
        node.peer_ids().ok()?.contains(&other_id).then_some(())
    })?;
    Ok(())
}

#[test]
fn impossible_location_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let (code, stderr) = run_strew_once(&["run", "--location", "123,0"], Duration::from_secs(30))?;
    assert_ne!(code, Some(0));
    assert!(code.is_some(), "exits instead of hanging");
    assert!(stderr.contains("--location"), "{stderr}");
    assert!(stderr.contains("123"), "{stderr}");
    let (code, stderr) = run_strew_once(&["run"], Duration::from_secs(30))?;
    assert!(code.is_some_and(|c| c != 0));
    assert!(stderr.contains("no location configured"), "{stderr}");
    Ok(())
}

#[test]
fn malformed_bootstrap_is_refused_with_a_clear_error() -> anyhow::Result<()> {
    let (code, stderr) = run_strew_once(
        &["run", "--location", "1,2", "--bootstrap", "not/a/multiaddr"],
        Duration::from_secs(30),
    )?;
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}");
    assert!(stderr.contains("--bootstrap"), "{stderr}");
    assert!(stderr.contains("not/a/multiaddr"), "{stderr}");
    Ok(())
}

#[test]
fn unreachable_bootstrap_is_logged_and_the_node_keeps_serving() -> anyhow::Result<()> {
    // A port nothing listens on (bound then released) and a valid-looking peer id.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!(
        "/ip4/127.0.0.1/tcp/{port}/p2p/12D3KooWFcu5BwG5ns6BpJMC7g7koa6c3ruYdoFMH692vEAMoK5g"
    );
    let node = Node::start(NodeOptions::at("35.6762,139.6503").bootstrap(addr))?;
    wait_for(
        "a log line about the unreachable bootstrap",
        Duration::from_secs(20),
        || node.log().contains("bootstrap unreachable").then_some(()),
    )?;
    let status = node.status()?;
    assert_eq!(status["peers"], 0);
    // And others can still join it.
    let other = Node::start(NodeOptions::at("37.5665,126.978").bootstrap(node.bootstrap_addr()?))?;
    let id = other.node_id()?;
    wait_for(
        "the joining node in the view",
        Duration::from_secs(30),
        || node.peer_ids().ok()?.contains(&id).then_some(()),
    )?;
    Ok(())
}
