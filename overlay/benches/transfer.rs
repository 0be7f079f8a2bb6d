//! Packet transfer between two overlays on 127.0.0.1 (Noise, Yamux over TCP,
//! and QUIC; the packet protocol with ticket and hash checks on the target),
//! with 1 and 8 packets in flight, next to a plain tokio TCP socket copy and
//! iperf3 on loopback measured in the same run, and one core's seal and open
//! rates of the ciphers (the ceiling an encrypted connection cannot pass).
//! Prints Markdown tables.
//! MB = 10^6 bytes. iperf3 is taken from `$STREW_IPERF3`, then
//! `.tools/iperf3/bin/iperf3` (written by `scripts/install-iperf3.sh`), then
//! `PATH`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strew_coordinator::{PacketId, StorageTicket, TicketEntry};
use strew_overlay::DeleteOutcome;
use strew_overlay::libp2p::identity::Keypair;
use strew_overlay::packet::{PacketStorage, StorageError, ticket};
use strew_overlay::{LocalProfile, OverlayConfig, OverlayHandle, peer};

/// A target store that verifies and counts but keeps nothing (so the bench
/// measures the network path, not RAM or disk). Like the node's store it
/// hashes the body against its id: the one check of it on the target (the
/// packet service leaves it to the storage).
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
const PACKETS: usize = 64;

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

fn cfg(listen: &str, bootstrap: Vec<strew_overlay::Multiaddr>) -> OverlayConfig {
    let mut c = OverlayConfig::new(LocalProfile {
        lat: 0.0,
        lon: 0.0,
        storage_allocated: 1 << 40,
        bandwidth_limit: 0,
        coordinator_eligible: false,
        x25519_public: [0; 32],
    });
    c.listen = vec![listen.parse().expect("multiaddr")];
    c.bootstrap = bootstrap;
    c
}

async fn transfer(
    source: &OverlayHandle,
    target: &OverlayHandle,
    manager: &Keypair,
    packets: &Arc<Vec<Vec<u8>>>,
    in_flight: usize,
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
        &StorageTicket::issue(&key, t, ids.clone(), strew_overlay::now_ms() + 600_000)
            .expect("signs"),
    )
    .expect("encodes");
    let ids = Arc::new(ids);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for s in 0..in_flight {
        let source = source.clone();
        let tk = tk.clone();
        let packets = packets.clone();
        let ids = ids.clone();
        tasks.push(tokio::spawn(async move {
            for i in (s..packets.len()).step_by(in_flight) {
                source
                    .put_packet(t, tk.clone(), ids[i].packet_id, packets[i].clone())
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

/// Strew packet puts over one transport (`listen` is the target's address):
/// a warm-up pass, then 1 and 8 packets in flight.
async fn overlay_pair(listen: &str, packets: &Arc<Vec<Vec<u8>>>) -> (f64, f64) {
    let manager = Keypair::generate_ed25519();
    let manager_id = peer::node_id_of_key(&manager.public()).expect("ed25519");
    let (target, target_task) = strew_overlay::start(
        Keypair::generate_ed25519(),
        cfg(listen, vec![]),
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
        cfg(listen, vec![target.listen_addrs()[0].clone()]),
        Arc::new(CountingStorage),
        None,
    )
    .expect("source");
    while source.connected_peers() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm-up (connection, window growth).
    transfer(&source, &target, &manager, packets, 8).await;
    let one = transfer(&source, &target, &manager, packets, 1).await;
    let eight = transfer(&source, &target, &manager, packets, 8).await;
    source.shutdown();
    target.shutdown();
    let _ = source_task.await;
    let _ = target_task.await;
    (one, eight)
}

/// A plain tokio TCP socket copy of the same bytes on loopback, `streams`
/// connections at once (no encryption, no framing): the floor any protocol
/// on this machine is compared with when iperf3 is absent.
async fn raw_tcp(packets: &Arc<Vec<Vec<u8>>>, streams: usize) -> f64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let total = packets.len() * PACKET;
    let sink = tokio::spawn(async move {
        let mut readers = Vec::new();
        for _ in 0..streams {
            let (mut sock, _) = listener.accept().await.expect("accept");
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut n = 0usize;
                loop {
                    match sock.read(&mut buf).await.expect("read") {
                        0 => break n,
                        k => n += k,
                    }
                }
            }));
        }
        let mut n = 0;
        for r in readers {
            n += r.await.expect("reader");
        }
        n
    });
    let start = Instant::now();
    let mut writers = Vec::new();
    for s in 0..streams {
        let packets = packets.clone();
        writers.push(tokio::spawn(async move {
            let mut sock = tokio::net::TcpStream::connect(addr).await.expect("connect");
            sock.set_nodelay(true).expect("nodelay");
            for i in (s..packets.len()).step_by(streams) {
                sock.write_all(&packets[i]).await.expect("write");
            }
            sock.shutdown().await.expect("shutdown");
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    let got = sink.await.expect("sink");
    assert_eq!(got, total, "the raw copy lost bytes");
    total as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// One core's seal and open rates (MB/s) of `alg` over the packets in
/// Noise-sized frames (65,519 bytes of payload, one AEAD call each): the
/// ceiling a connection encrypted with it cannot pass, whatever else it does.
fn cipher_rates(alg: &'static ring::aead::Algorithm, packets: &[Vec<u8>]) -> (f64, f64) {
    use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey};
    const FRAME: usize = 65_519;
    let key = LessSafeKey::new(UnboundKey::new(alg, &vec![7u8; alg.key_len()]).expect("key"));
    let nonce = |n: u64| {
        let mut b = [0u8; 12];
        b[4..].copy_from_slice(&n.to_le_bytes());
        Nonce::assume_unique_for_key(b)
    };
    let mut frames: Vec<Vec<u8>> = packets
        .iter()
        .flat_map(|p| p.chunks(FRAME).map(<[u8]>::to_vec))
        .collect();
    let total: usize = frames.iter().map(Vec::len).sum();
    let start = Instant::now();
    let tags: Vec<Tag> = frames
        .iter_mut()
        .enumerate()
        .map(|(n, f)| {
            key.seal_in_place_separate_tag(nonce(n as u64), Aad::empty(), f)
                .expect("seal")
        })
        .collect();
    let seal = total as f64 / 1e6 / start.elapsed().as_secs_f64();
    for (f, t) in frames.iter_mut().zip(&tags) {
        f.extend_from_slice(t.as_ref());
    }
    let start = Instant::now();
    for (n, f) in frames.iter_mut().enumerate() {
        key.open_in_place(nonce(n as u64), Aad::empty(), f)
            .expect("open");
    }
    let open = total as f64 / 1e6 / start.elapsed().as_secs_f64();
    (seal, open)
}

fn iperf3_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STREW_IPERF3") {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools/iperf3/bin/iperf3");
    if local.exists() {
        return Some(local);
    }
    let on_path = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("iperf3"))
}

fn iperf3(bin: &PathBuf, parallel: usize) -> Option<f64> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut server = Command::new(bin)
        .args(["-s", "-1", "-B", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    std::thread::sleep(Duration::from_millis(500));
    let out = Command::new(bin)
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
    let packets = Arc::new((0..PACKETS).map(packet).collect::<Vec<_>>());
    // `STREW_TRANSFER_ONLY=tcp` (or `quic`) runs one overlay pair and prints
    // its figures only: for profiling one path.
    if let Ok(only) = std::env::var("STREW_TRANSFER_ONLY") {
        let listen = match only.as_str() {
            "tcp" => "/ip4/127.0.0.1/tcp/0",
            "quic" => "/ip4/127.0.0.1/udp/0/quic-v1",
            other => panic!("STREW_TRANSFER_ONLY is tcp or quic, not {other:?}"),
        };
        let (one, eight) = rt.block_on(overlay_pair(listen, &packets));
        println!(
            "strew packet put over {only}: {one:.0} MB/s with 1 in flight, {eight:.0} MB/s with 8"
        );
        return;
    }
    let (tcp1, tcp8) = rt.block_on(overlay_pair("/ip4/127.0.0.1/tcp/0", &packets));
    let (quic1, quic8) = rt.block_on(overlay_pair("/ip4/127.0.0.1/udp/0/quic-v1", &packets));
    let (raw1, raw8) =
        rt.block_on(async { (raw_tcp(&packets, 1).await, raw_tcp(&packets, 8).await) });
    drop(rt);
    let chacha = cipher_rates(&ring::aead::CHACHA20_POLY1305, &packets);
    let aes = cipher_rates(&ring::aead::AES_256_GCM, &packets);
    let (ip1, ip8) = match iperf3_binary() {
        Some(bin) => (iperf3(&bin, 1), iperf3(&bin, 8)),
        None => {
            eprintln!(
                "iperf3 not found (run scripts/install-iperf3.sh); comparing with the raw TCP copy"
            );
            (None, None)
        }
    };
    let reference1 = ip1.unwrap_or(raw1);
    let reference8 = ip8.unwrap_or(raw8);
    let show = |v: Option<f64>| {
        v.map(|x| format!("{x:.0}"))
            .unwrap_or_else(|| "iperf3 not found".into())
    };
    let pct = |x: f64, r: f64| format!("{x:.0} ({:.0} %)", 100.0 * x / r);
    println!(
        "{} x {} MiB packets; percentages against {}",
        PACKETS,
        PACKET >> 20,
        if ip1.is_some() {
            "iperf3"
        } else {
            "the raw TCP copy"
        }
    );
    println!("| path | 1 in flight (MB/s) | 8 in flight (MB/s) |");
    println!("|---|---|---|");
    println!(
        "| strew packet put, TCP + Noise + Yamux | {} | {} |",
        pct(tcp1, reference1),
        pct(tcp8, reference8)
    );
    println!(
        "| strew packet put, QUIC | {} | {} |",
        pct(quic1, reference1),
        pct(quic8, reference8)
    );
    println!("| tokio TCP socket copy (same run) | {raw1:.0} | {raw8:.0} |");
    println!("| iperf3 TCP (same run) | {} | {} |", show(ip1), show(ip8));
    println!();
    println!("One core's AEAD rates over the same bytes in Noise-sized frames (MB/s):");
    println!("| cipher | seal | open |");
    println!("|---|---|---|");
    println!(
        "| ChaCha20-Poly1305 (Noise's only cipher; libp2p's TLS prefers it) | {:.0} | {:.0} |",
        chacha.0, chacha.1
    );
    println!(
        "| AES-256-GCM (for comparison) | {:.0} | {:.0} |",
        aes.0, aes.1
    );
}
