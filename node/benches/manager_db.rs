//! The sequence manager and its database under one large backup, in one
//! process, no network: a source backs up `CHUNKS` new chunks (erasure 4+2,
//! 24 targets) the way the daemon drives it (plan parts, receipt pages,
//! order pages, a paged commit, then a forget), every step decided, applied
//! and written to `manager.redb` as one batch, as a coordinator does.
//!
//! Prints, per phase, the time and the bytes written, beside what the
//! version-2 layout (a pending backup and a target's record rewritten whole
//! whenever touched) would have encoded for the same batches; then the
//! database's size and the process's memory per chunk record.
//!
//! `cargo bench -p strew-node --bench manager_db` (`CHUNKS=n`, default
//! 50,000; `V2=0` skips the version-2 comparison, which costs time).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::{
    ChunkPlan, CommitOrderRequest, CommitRequest, CommitStep, MAX_PLAN_CHUNKS, MAX_PLAN_PACKETS,
    MAX_RECEIPTS_PER_CALL, OrderStep, PacketSpec, PlanRequest, order_page_len,
};
use strew_coordinator::{
    BackupParams, Command, Compression, ConvergenceScope, DataId, Encryption, GeoPoint, GroupKey,
    Manager, ManagerConfig, NodeId, NodeProfile, PacketId, Redundancy, StoreReceipt, cbor,
};
use strew_node::consensus::manager_db::{Batch, ManagerDb};

const GIB: u64 = 1 << 30;

#[derive(Default)]
struct Phase {
    steps: usize,
    time: Duration,
    written: usize,
    whole: usize,
}

struct Bench {
    m: Manager,
    db: ManagerDb,
    position: u64,
    v2: bool,
}

impl Bench {
    /// Applies `command` and writes its batch, counting the bytes written and
    /// those the version-2 layout would have encoded.
    fn step(&mut self, command: Command, phase: &mut Phase) -> Result<()> {
        let start = Instant::now();
        let touched = self.m.apply(&command).context("applies")?.touched;
        self.position += 1;
        let batch = Batch::collect(
            self.m.state(),
            &touched,
            self.position.to_be_bytes().to_vec(),
        )?;
        self.db.write(&batch)?;
        phase.time += start.elapsed();
        phase.steps += 1;
        phase.written += batch.bytes();
        if self.v2 {
            // The same batch with those two kinds of record whole.
            phase.whole += batch.bytes() - batch.split_bytes();
            let state = self.m.state();
            for id in &touched.pending {
                if let Some(p) = state.pending.get(id) {
                    phase.whole += cbor::encode(p)?.len();
                }
            }
            for t in &touched.targets {
                if let Some(r) = state.targets.get(t) {
                    phase.whole += cbor::encode(r)?.len();
                }
            }
        }
        Ok(())
    }
}

fn profile(n: u8, lat: f64, lon: f64) -> Result<NodeProfile> {
    let id = NodeId(SigningKey::from_bytes(&[n; 32]).verifying_key().to_bytes());
    Ok(NodeProfile::new(id, GeoPoint::new(lat, lon)?, 500 * GIB, 0))
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> Result<()> {
    let chunks: usize = std::env::var("CHUNKS")
        .ok()
        .map(|v| v.parse())
        .transpose()?
        .unwrap_or(50_000);
    let v2 = std::env::var("V2").map_or(true, |v| v != "0");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("manager.redb");
    let (db, _) = ManagerDb::open(&path)?;
    let m = Manager::new(
        SigningKey::from_bytes(&[200; 32]),
        GroupKey([7; 32]),
        ManagerConfig::default(),
    );
    let mut b = Bench {
        m,
        db,
        position: 0,
        v2,
    };
    let mut joins = Phase::default();
    let mut keys = Vec::new();
    let mut n = 10u8;
    for lat in [38.0, 42.0, 46.0, 50.0, 54.0, 58.0] {
        for lon in [-6.0, 4.0, 14.0, 24.0] {
            let p = profile(n, lat, lon)?;
            keys.push((p.node_id, SigningKey::from_bytes(&[n; 32])));
            b.step(
                Command::Join {
                    profile: p,
                    token: None,
                    at: 1,
                },
                &mut joins,
            )?;
            n += 1;
        }
    }
    let source = profile(1, 48.85, 2.35)?;
    b.step(
        Command::Join {
            profile: source.clone(),
            token: None,
            at: 1,
        },
        &mut joins,
    )?;
    let params = BackupParams {
        backup_distance: "..".parse()?,
        spread: "..".parse()?,
        redundancy: Redundancy::Erasure { k: 4, m: 2 },
        compression: Compression::None,
        encryption: Encryption {
            cipher: "chacha20poly1305".into(),
            convergence: ConvergenceScope::Grid,
        },
        sync_interval_secs: None,
    };
    let width = params.redundancy.width();
    let ids: Vec<DataId> = (0..chunks as u64)
        .map(|i| DataId(*blake3::hash(&i.to_le_bytes()).as_bytes()))
        .collect();
    let rss_before = rss_kib("VmRSS:");
    let mut rng = StdRng::seed_from_u64(1);

    let mut plans = Phase::default();
    let mut pending = None;
    let mut uploads = Vec::new();
    for part in ids.chunks((MAX_PLAN_PACKETS / width).min(MAX_PLAN_CHUNKS)) {
        let request = PlanRequest {
            source: source.node_id,
            set: "big".into(),
            location: source.location,
            params: params.clone(),
            chunks: part
                .iter()
                .map(|id| ChunkPlan {
                    data_id: *id,
                    packets: (0..width as u8)
                        .map(|j| PacketSpec {
                            packet_id: PacketId::of(&[id.0.as_slice(), &[j]].concat()),
                            size: 16 * 1024,
                        })
                        .collect(),
                })
                .collect(),
            exclude: Vec::new(),
            extend: pending,
        };
        let start = Instant::now();
        let (command, draft) = b.m.decide_plan(&request, 10, &mut rng)?;
        plans.time += start.elapsed();
        b.step(command, &mut plans)?;
        pending = Some(draft.pending_id);
        uploads.extend(draft.uploads);
    }
    let Some(pending_id) = pending else {
        bail!("no chunks");
    };

    let mut receipts = Phase::default();
    let packets: Vec<_> = uploads.iter().flat_map(|c| &c.packets).collect();
    for page in packets.chunks(MAX_RECEIPTS_PER_CALL) {
        let signed: Vec<StoreReceipt> = page
            .iter()
            .map(|p| {
                let key = keys
                    .iter()
                    .find(|(id, _)| *id == p.target)
                    .map(|(_, k)| k)
                    .context("a target's key")?;
                Ok(StoreReceipt::unsigned(
                    p.target,
                    source.node_id,
                    p.packet_id,
                    p.size,
                    p.generation,
                    0,
                )
                .sign_with(key)?)
            })
            .collect::<Result<_>>()?;
        let start = Instant::now();
        let command = b.m.decide_receipts(source.node_id, pending_id, &signed)?;
        receipts.time += start.elapsed();
        b.step(command, &mut receipts)?;
    }

    let mut order = Phase::default();
    let page_len = order_page_len(width);
    for (n, page) in ids.chunks(page_len).enumerate() {
        let request = CommitOrderRequest {
            pending_id,
            source: source.node_id,
            first: (n * page_len) as u64,
            chunks: page.to_vec(),
        };
        let start = Instant::now();
        let OrderStep::Propose(command) = b.m.decide_commit_order(&request)? else {
            bail!("order page {n} was not proposed");
        };
        order.time += start.elapsed();
        b.step(command, &mut order)?;
    }

    let mut commit = Phase::default();
    let request = CommitRequest {
        pending_id,
        source: source.node_id,
        receipts: Vec::new(),
        manifest: ids[0],
        manifest_chunks: vec![ids[0]],
        chunks: Vec::new(),
        bytes: chunks as u64 * 64 * 1024,
    };
    let start = Instant::now();
    let CommitStep::Propose { command, snapshot } = b.m.decide_commit(&request, 20, &mut rng)?
    else {
        bail!("the commit was not proposed");
    };
    commit.time += start.elapsed();
    b.step(command, &mut commit)?;
    drop(packets);
    drop(uploads);
    let rss_after = rss_kib("VmRSS:");
    let db_bytes = std::fs::metadata(&path)?.len();

    let mut forget = Phase::default();
    let start = Instant::now();
    let command = b.m.decide_forget(source.node_id, snapshot, 30)?;
    forget.time += start.elapsed();
    b.step(command, &mut forget)?;

    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "manager_db bench: {chunks} chunks of 4+2 ({} packets) over 24 targets",
        chunks * width
    );
    println!("| phase | steps | time | written (v3, split rows) | v2 (whole records) |");
    println!("|---|---|---|---|---|");
    for (name, p) in [
        ("plan parts", &plans),
        ("receipt pages", &receipts),
        ("order pages", &order),
        ("commit", &commit),
        ("forget", &forget),
    ] {
        let whole = if v2 {
            format!("{:.1} MB", mb(p.whole))
        } else {
            "-".into()
        };
        println!(
            "| {name} | {} | {:.2} s | {:.1} MB | {whole} |",
            p.steps,
            p.time.as_secs_f64(),
            mb(p.written)
        );
    }
    println!(
        "database after the commit: {:.1} MB ({:.0} B a chunk record with its 6 packets)",
        db_bytes as f64 / 1e6,
        db_bytes as f64 / chunks as f64
    );
    println!(
        "process RSS growth from the first plan to the commit: {:.1} MB ({:.0} B a chunk); peak RSS {:.1} MB",
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 * 1024.0 / chunks as f64,
        rss_kib("VmHWM:") as f64 / 1024.0
    );
    Ok(())
}
