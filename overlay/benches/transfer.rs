//! Packet transfer between two overlays on 127.0.0.1 (TCP, Noise, Yamux, the
//! packet protocol with ticket and hash checks on the target), 1 and 8
//! parallel streams, next to iperf3 on loopback measured in the same run.
//! Prints a Markdown table. MB = 10^6 bytes.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strew_coordinator::{PacketId, StorageTicket, TicketEntry};
use strew_overlay::DeleteOutcome;
use strew_overlay::libp2p::identity::Keypair;
use strew_overlay::packet::{PacketStorage, StorageError, ticket};
use strew_overlay::{LocalProfile, OverlayConfig, OverlayHandle, peer};

/// A target store that verifies and counts but keeps nothing (so the bench
/// measures the network path, not RAM).
struct CountingStorage;

impl PacketStorage for CountingStorage {
    fn put(&self, id: PacketId, bytes: &[u8], generation: u64) -> Result<u64, StorageError> {
        let actual = PacketId::of(bytes);
        if actual != id {
            return Err(StorageError::WrongId { actual });
        }
        Ok(generation)
    }
    fn get(&self, _: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(None)
    }
    fn delete(&self, _: &PacketId, _: u64) -> Result<DeleteOutcome, StorageError> {
        Ok(DeleteOutcome::Absent)
    }
    fn free_bytes(&self) -> Result<u64, StorageError> {
        Ok(u64::MAX / 2)
    }
    fn capacity(&self) -> u64 {
        u64::MAX / 2
    }
}

const PACKET: usize = 4 << 20;
const PACKETS: usize = 32;

fn packet(i: usize) -> Vec<u8> {
    let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
    (0..PACKET)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn cfg(bootstrap: Vec<strew_overlay::Multiaddr>) -> OverlayConfig {
    let mut c = OverlayConfig::new(LocalProfile {
        lat: 0.0,
        lon: 0.0,
        storage_allocated: 1 << 40,
        bandwidth_limit: 0,
        coordinator_eligible: false,
        x25519_public: [0; 32],
    });
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")];
    c.bootstrap = bootstrap;
    c
}

async fn transfer(
    source: &OverlayHandle,
    target: &OverlayHandle,
    manager: &Keypair,
    packets: &Arc<Vec<Vec<u8>>>,
    streams: usize,
) -> f64 {
    let t = target.node_id();
    let ids: Vec<TicketEntry> = packets
        .iter()
        .map(|p| TicketEntry {
            packet_id: PacketId::of(p),
            size: p.len() as u64,
            generation: 1,
        })
        .collect();
    let key = ticket::signing_key(manager).expect("ed25519");
    let tk = ticket::encode(
        &StorageTicket::issue(&key, t, ids, strew_overlay::now_ms() + 600_000).expect("signs"),
    )
    .expect("encodes");
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..streams {
        let source = source.clone();
        let tk = tk.clone();
        let packets = packets.clone();
        tasks.push(tokio::spawn(async move {
            for i in (s..packets.len()).step_by(streams) {
                source
                    .put_packet(t, tk.clone(), packets[i].clone())
                    .await
                    .expect("put");
            }
        }));
    }
    for task in tasks {
        task.await.expect("task");
    }
    let secs = start.elapsed().as_secs_f64();
    (packets.len() * PACKET) as f64 / 1e6 / secs
}

fn iperf3(parallel: usize) -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new("iperf3")
        .args([
            "-c",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "5",
            "-J",
            "-P",
            &parallel.to_string(),
        ])
        .output()
        .ok();
    let _ = server.kill();
    let _ = server.wait();
    let text = String::from_utf8(out?.stdout).ok()?;
    // "sum_received": { ... "bits_per_second": N ... }
    let at = text.find("\"sum_received\"")?;
    let rest = &text[at..];
    let bps_at = rest.find("\"bits_per_second\"")?;
    let num: String = rest[bps_at + 17..]
        .chars()
        .skip_while(|c| !c.is_ascii_digit())
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == 'e' || *c == '+')
        .collect();
    num.parse::<f64>().ok().map(|bps| bps / 8.0 / 1e6)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let manager = Keypair::generate_ed25519();
        let manager_id = peer::node_id_of_key(&manager.public()).expect("ed25519");
        let (target, target_task) = strew_overlay::start(
            Keypair::generate_ed25519(),
            cfg(vec![]),
            Arc::new(CountingStorage),
            None,
        )
        .expect("target");
        target.set_trusted_managers(BTreeSet::from([manager_id]));
        while target.listen_addrs().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (source, source_task) = strew_overlay::start(
            Keypair::generate_ed25519(),
            cfg(vec![target.listen_addrs()[0].clone()]),
            Arc::new(CountingStorage),
            None,
        )
        .expect("source");
        while source.connected_peers() == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let packets = Arc::new((0..PACKETS).map(packet).collect::<Vec<_>>());
        // Warm-up (connection, yamux window growth).
        transfer(&source, &target, &manager, &packets, 1).await;
        let one = transfer(&source, &target, &manager, &packets, 1).await;
        let eight = transfer(&source, &target, &manager, &packets, 8).await;
        source.shutdown();
        target.shutdown();
        let _ = source_task.await;
        let _ = target_task.await;
        let ip1 = iperf3(1);
        let ip8 = iperf3(8);
        let show = |v: Option<f64>| {
            v.map(|x| format!("{x:.0}"))
                .unwrap_or_else(|| "iperf3 not installed".into())
        };
        println!("| path | 1 stream (MB/s) | 8 parallel streams (MB/s) |");
        println!("|---|---|---|");
        println!(
            "| strew packet put, {} x {} MiB packets | {one:.0} | {eight:.0} |",
            PACKETS,
            PACKET >> 20
        );
        println!(
            "| iperf3 TCP on loopback (same run) | {} | {} |",
            show(ip1),
            show(ip8)
        );
    });
}
