//! `strew bench pipeline PATH`: the packet pipeline alone, as a user-run
//! benchmark (like `kopia benchmark`). Backs PATH up into a temporary
//! packet store, deletes as many packets of every stripe as the redundancy
//! tolerates, restores into a temporary directory, compares the trees byte
//! for byte, and prints figures (`--json`: one object, fields as SPEC.md's
//! command-line section lists them).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use strew_coordinator::{PacketId, Redundancy};

use crate::pipeline::{
    self, BackupOptions, ChunkSizes, Codec, ConvergenceSecret, NothingKnown, Progress,
    RestoreOptions, RestoreProgress, local::StoreSink,
};
use crate::store::PacketStore;
use crate::verify::diff_trees;

#[derive(clap::Args, Debug)]
pub struct PipelineBenchArgs {
    /// The file or directory tree to run through the pipeline.
    pub path: PathBuf,
    /// Redundancy: `erasure:K+M` or `replicas:N`.
    #[arg(long, default_value = "erasure:4+2")]
    pub redundancy: Redundancy,
    /// zstd compression level (1–19; chunks that do not shrink are stored raw).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=19))]
    pub zstd_level: i32,
    /// Chunk sizes `MIN/AVG/MAX` in bytes (FastCDC).
    #[arg(long, default_value = "262144/1048576/4194304", value_parser = parse_sizes)]
    pub chunk_sizes: ChunkSizes,
    /// Where the temporary packet store and restore go (default: the system temp dir).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Seed choosing which packets of each stripe are deleted before the restore.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Parses `MIN/AVG/MAX` chunk sizes in bytes (also used by `strew backup --chunk-sizes`).
pub fn parse_sizes(s: &str) -> Result<ChunkSizes, String> {
    let parts: Vec<&str> = s.split('/').collect();
    let [min, avg, max] = parts.as_slice() else {
        return Err("expected MIN/AVG/MAX in bytes, e.g. 262144/1048576/4194304".into());
    };
    let num = |x: &str| x.trim().parse::<u32>().map_err(|e| format!("{x:?}: {e}"));
    ChunkSizes {
        min: num(min)?,
        avg: num(avg)?,
        max: num(max)?,
    }
    .validate()
    .map_err(|e| e.to_string())
}

/// The figures `strew bench pipeline --json` prints.
#[derive(Debug, Serialize)]
pub struct PipelineFigures {
    pub files: u64,
    pub bytes_in: u64,
    pub chunks: u64,
    pub unique_chunks: u64,
    pub packets: u64,
    pub bytes_stored: u64,
    pub packets_deleted: u64,
    pub backup_seconds: f64,
    pub restore_seconds: f64,
    pub backup_mb_per_s: f64,
    pub restore_mb_per_s: f64,
    pub degraded_stripes: u64,
    pub warnings: usize,
    pub redundancy: String,
    pub zstd_level: i32,
    /// Peak resident memory over the whole run (Linux `VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// Peak resident memory up to the end of the backup.
    pub backup_peak_rss_bytes: Option<u64>,
    /// Peak resident memory while restoring (the peak is reset before the
    /// restore), and resident memory just before it: their difference is
    /// what the restore itself holds (the backup's report is still held).
    pub restore_peak_rss_bytes: Option<u64>,
    pub rss_before_restore_bytes: Option<u64>,
    pub verified: bool,
    pub differences: Vec<String>,
}

pub fn run_pipeline(args: &PipelineBenchArgs) -> anyhow::Result<()> {
    let figures = bench_pipeline(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        print_table(&figures);
    }
    if !figures.verified {
        bail!(
            "the restored tree differs from the input: {}",
            figures.differences.join("; ")
        );
    }
    Ok(())
}

pub fn bench_pipeline(args: &PipelineBenchArgs) -> anyhow::Result<PipelineFigures> {
    let meta = std::fs::symlink_metadata(&args.path)
        .with_context(|| format!("cannot read {}", args.path.display()))?;
    let work = match &args.work_dir {
        Some(dir) => tempfile::Builder::new()
            .prefix("strew-bench-")
            .tempdir_in(dir),
        None => tempfile::Builder::new().prefix("strew-bench-").tempdir(),
    }
    .context("cannot create the benchmark's temporary directory")?;
    let store = PacketStore::open(&work.path().join("store"), u64::MAX)?;
    let codec = Codec {
        secret: ConvergenceSecret::random(),
        zstd_level: args.zstd_level,
        redundancy: args.redundancy,
    };
    let opts = BackupOptions {
        name: "bench".into(),
        time_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        sizes: args.chunk_sizes,
        codec: codec.clone(),
        owner: codec.secret.clone(),
        excludes: Default::default(),
    };

    let progress = Arc::new(Progress::default());
    let bar = crate::progress::bytes_bar("backup", None);
    let p = progress.clone();
    let ticker = crate::progress::follow(&bar, move || p.bytes_read.load(Ordering::Relaxed));
    let started = Instant::now();
    let mut sink = StoreSink::new(store.clone());
    let report = pipeline::backup(
        std::slice::from_ref(&args.path),
        &opts,
        &NothingKnown,
        &mut sink,
        &progress,
    );
    let backup_seconds = started.elapsed().as_secs_f64();
    ticker.stop();
    let report = report?;
    for w in &report.warnings {
        eprintln!("warning: skipped {}: {}", w.path.display(), w.message);
    }

    // Lose as many packets of every stripe as the redundancy tolerates.
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let tolerated = args.redundancy.tolerated_losses();
    let mut deleted = 0u64;
    let mut doomed: Vec<PacketId> = Vec::new();
    for stripe in report.sequence.stripes() {
        let distinct = stripe.distinct_packets();
        // Replicas are stored once here (one local store stands for all
        // targets), so losing copies removes nothing locally.
        if distinct.len() <= tolerated {
            continue;
        }
        let mut picks: Vec<usize> = (0..distinct.len()).collect();
        for i in 0..tolerated {
            let j = rng.random_range(i..picks.len());
            picks.swap(i, j);
            doomed.push(distinct[picks[i]]);
        }
    }
    doomed.sort();
    doomed.dedup();
    for id in &doomed {
        if store.delete(id)? {
            deleted += 1;
        }
    }

    let dest = work.path().join("restore");
    let rprogress = Arc::new(RestoreProgress::default());
    let bar = crate::progress::bytes_bar("restore", Some(report.stats.bytes_in));
    let p = rprogress.clone();
    let ticker = crate::progress::follow(&bar, move || p.bytes_written.load(Ordering::Relaxed));
    let backup_peak = peak_rss_bytes();
    let rss_before_restore = resident_bytes("VmRSS:");
    // Linux resets the peak (`VmHWM`) to the current resident size on "5".
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let started = Instant::now();
    let restored = pipeline::restore(
        &report.sequence,
        &pipeline::RestoreKeys {
            owner: codec.secret.clone(),
            data: Vec::new(),
        },
        &store,
        &dest,
        &RestoreOptions::default(),
        &rprogress,
    );
    let restore_seconds = started.elapsed().as_secs_f64();
    ticker.stop();
    let restored = restored?;
    let restore_peak = if reset { peak_rss_bytes() } else { None };

    let name = match report.manifest.entries().next() {
        Some(first) => std::ffi::OsStr::from_bytes(&first?.path).to_owned(),
        None => Default::default(),
    };
    let copy = if meta.is_dir() || meta.is_file() || meta.file_type().is_symlink() {
        dest.join(&name)
    } else {
        dest.clone()
    };
    let differences = diff_trees(&args.path, &copy, 20);
    let mb = report.stats.bytes_in as f64 / 1e6;
    Ok(PipelineFigures {
        files: report.stats.files,
        bytes_in: report.stats.bytes_in,
        chunks: report.stats.chunks,
        unique_chunks: report.stats.new_chunks,
        packets: report.stats.packets,
        bytes_stored: report.stats.bytes_stored,
        packets_deleted: deleted,
        backup_seconds,
        restore_seconds,
        backup_mb_per_s: mb / backup_seconds.max(1e-9),
        restore_mb_per_s: mb / restore_seconds.max(1e-9),
        degraded_stripes: restored.degraded_stripes,
        warnings: report.warnings.len(),
        redundancy: args.redundancy.to_string(),
        zstd_level: args.zstd_level,
        peak_rss_bytes: backup_peak.max(peak_rss_bytes()),
        backup_peak_rss_bytes: backup_peak,
        restore_peak_rss_bytes: restore_peak,
        rss_before_restore_bytes: rss_before_restore,
        verified: differences.is_empty() && report.warnings.is_empty(),
        differences,
    })
}

/// Peak resident memory of this process (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    resident_bytes("VmHWM:")
}

/// A memory line of `/proc/self/status` (`VmHWM:`, `VmRSS:`) in bytes.
fn resident_bytes(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn print_table(f: &PipelineFigures) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("files            {}", f.files);
    println!("input            {:.1} MiB", mib(f.bytes_in));
    println!("chunks           {} ({} unique)", f.chunks, f.unique_chunks);
    println!(
        "packets          {} ({:.1} MiB stored, {}, zstd {})",
        f.packets,
        mib(f.bytes_stored),
        f.redundancy,
        f.zstd_level
    );
    println!(
        "deleted          {} packets before restoring",
        f.packets_deleted
    );
    println!(
        "backup           {:.2} s  {:.1} MB/s",
        f.backup_seconds, f.backup_mb_per_s
    );
    println!(
        "restore          {:.2} s  {:.1} MB/s ({} stripes rebuilt from parity)",
        f.restore_seconds, f.restore_mb_per_s, f.degraded_stripes
    );
    if let Some(rss) = f.peak_rss_bytes {
        println!("peak memory      {:.0} MiB", mib(rss));
    }
    if let Some(rss) = f.backup_peak_rss_bytes {
        println!("backup memory    {:.0} MiB peak", mib(rss));
    }
    if let (Some(peak), Some(before)) = (f.restore_peak_rss_bytes, f.rss_before_restore_bytes) {
        println!(
            "restore memory   {:.0} MiB peak, {:.0} MiB resident before it",
            mib(peak),
            mib(before)
        );
    }
    println!(
        "verified         {}",
        if f.verified {
            "yes, byte-identical"
        } else {
            "NO"
        }
    );
}
