//! Progress bars for long work (indicatif), drawn on stderr only when it is
//! a terminal, fed by polling the pipeline's atomic counters from a small
//! thread so the hot path never touches the display; and the client's
//! [`Estimator`]: one ETA across a backup's encoding and upload, also
//! printed as newline-delimited JSON (`--progress json`) for scripts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// A bar counting bytes, with rate and (when `total` is known) ETA. Hidden
/// when stderr is not a terminal.
pub fn bytes_bar(label: &str, total: Option<u64>) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    let template = if total.is_some() {
        "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}"
    } else {
        "{prefix:>8} {spinner} {bytes} {bytes_per_sec} {elapsed}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Polls `read` every 100 ms into `bar` until stopped.
pub struct Follower {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    bar: ProgressBar,
}

pub fn follow(bar: &ProgressBar, read: impl Fn() -> u64 + Send + 'static) -> Follower {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, b) = (stop.clone(), bar.clone());
    let thread = std::thread::spawn(move || {
        while !flag.load(Ordering::Relaxed) {
            b.set_position(read());
            std::thread::sleep(Duration::from_millis(100));
        }
        b.set_position(read());
    });
    Follower {
        stop,
        thread: Some(thread),
        bar: bar.clone(),
    }
}

impl Follower {
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.bar.finish_and_clear();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.halt();
    }
}

/// How `strew backup` and `strew restore` show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar on stderr when it is a terminal.
    #[default]
    Bar,
    /// One JSON object per line on stdout (about once a second), then the
    /// result as one JSON line.
    Json,
    /// Nothing until the result.
    None,
}

/// One poll of a job's counters (the daemon's `progress` answer).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the client started following the job.
    pub at_secs: f64,
    /// Bytes to read (backup) or write (restore) in all.
    pub total: u64,
    /// Bytes read (backup) or written (restore) so far.
    pub done: u64,
    /// Backup only: encoded bytes produced so far (what is to be sent).
    pub stored: u64,
    /// Backup only: bytes sent to targets so far.
    pub uploaded: u64,
}

/// What the client shows: one fraction and one ETA for the whole job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Estimate {
    /// `encode`, `upload` (backup) or `restore`.
    pub phase: &'static str,
    pub bytes_total: u64,
    pub bytes_done: u64,
    /// Bytes to send: exact once encoding ended, extrapolated before.
    pub upload_total: u64,
    pub uploaded: u64,
    /// Share of the whole job done, 0..=1, by expected time.
    pub fraction: f64,
    /// Expected seconds left for the whole job, once rates are known.
    pub eta_secs: Option<f64>,
    pub elapsed_secs: f64,
}

/// Turns polls into one estimate across encoding and upload. Rates are
/// the averages since each phase's first progress. Until any byte was sent,
/// the upload is assumed as fast as encoding (in encoded bytes per
/// second). When uploads run during encoding (a streaming backup) the two
/// remaining times overlap and the ETA is the larger; otherwise they add.
#[derive(Debug, Clone, Default)]
pub struct Estimator {
    backup: bool,
    /// (time, done) when reading/writing was first seen moving.
    read_from: Option<(f64, u64)>,
    /// (time, uploaded) when uploads were first seen moving.
    upload_from: Option<(f64, u64)>,
    overlapped: bool,
}

fn rate(from: Option<(f64, u64)>, at: f64, now: u64) -> Option<f64> {
    let (t0, b0) = from?;
    let dt = at - t0;
    let db = now.saturating_sub(b0);
    (dt > 0.0 && db > 0).then(|| db as f64 / dt)
}

impl Estimator {
    /// An estimator for a backup (`true`: encoding then upload) or a restore.
    pub fn new(backup: bool) -> Self {
        Estimator {
            backup,
            ..Estimator::default()
        }
    }

    pub fn update(&mut self, s: Sample) -> Estimate {
        let reading = s.done < s.total;
        if self.read_from.is_none() {
            self.read_from = Some((s.at_secs, s.done));
        }
        if self.backup && self.upload_from.is_none() && (s.uploaded > 0 || !reading) {
            self.upload_from = Some((s.at_secs, s.uploaded));
        }
        if self.backup && s.uploaded > 0 && reading {
            self.overlapped = true;
        }
        let read_rate = rate(self.read_from, s.at_secs, s.done);
        let read_left = read_rate.map(|r| s.total.saturating_sub(s.done) as f64 / r);
        if !self.backup {
            return self.finish(s, "restore", 0, read_left);
        }
        // Encoded bytes per byte read so far: what the rest will produce.
        let upload_total = if reading && s.done > 0 {
            ((s.stored as f64) * (s.total as f64) / (s.done as f64)) as u64
        } else {
            s.stored
        }
        .max(s.uploaded);
        let encode_rate = read_rate.map(|r| r * s.stored.max(1) as f64 / s.done.max(1) as f64);
        let upload_rate = rate(self.upload_from, s.at_secs, s.uploaded).or(encode_rate);
        let upload_left = upload_rate.map(|r| upload_total.saturating_sub(s.uploaded) as f64 / r);
        let eta = match (read_left, upload_left) {
            (Some(a), Some(b)) if self.overlapped => Some(a.max(b)),
            (Some(a), Some(b)) => Some(a + b),
            (None, b) if !reading => b,
            _ => None,
        };
        let phase = if reading || s.stored == 0 {
            "encode"
        } else {
            "upload"
        };
        self.finish(s, phase, upload_total, eta)
    }

    fn finish(
        &self,
        s: Sample,
        phase: &'static str,
        upload_total: u64,
        eta: Option<f64>,
    ) -> Estimate {
        let elapsed = s.at_secs.max(0.0);
        let fraction = match eta {
            Some(left) if elapsed + left > 0.0 => elapsed / (elapsed + left),
            _ if s.total > 0 => 0.0,
            _ => 1.0,
        };
        Estimate {
            phase,
            bytes_total: s.total,
            bytes_done: s.done,
            upload_total: if self.backup { upload_total } else { 0 },
            uploaded: s.uploaded,
            fraction: fraction.clamp(0.0, 1.0),
            eta_secs: eta.filter(|e| e.is_finite()),
            elapsed_secs: elapsed,
        }
    }
}

/// The one bar of a job, its position in thousandths of the estimate.
pub fn job_bar(label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}

/// Draws `e` on a [`job_bar`].
pub fn show(bar: &ProgressBar, e: &Estimate) {
    bar.set_prefix(e.phase);
    bar.set_position((e.fraction * 1000.0) as u64);
    let size = |b: u64| strew_coordinator::format_size(b);
    let eta = e.eta_secs.map_or_else(
        || "ETA -".to_string(),
        |s| {
            format!(
                "ETA {}",
                indicatif::HumanDuration(Duration::from_secs_f64(s))
            )
        },
    );
    let msg = if e.upload_total > 0 || e.phase != "restore" {
        format!(
            "read {}/{}, sent {}/{} {eta}",
            size(e.bytes_done),
            size(e.bytes_total),
            size(e.uploaded),
            size(e.upload_total)
        )
    } else {
        format!("{}/{} {eta}", size(e.bytes_done), size(e.bytes_total))
    };
    bar.set_message(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: f64, done: u64, stored: u64, uploaded: u64) -> Sample {
        Sample {
            at_secs: at,
            total: 1000,
            done,
            stored,
            uploaded,
        }
    }

    #[test]
    fn one_eta_covers_encoding_and_the_upload_after_it() {
        let mut e = Estimator::new(true);
        e.update(sample(0.0, 0, 0, 0));
        // 100 B/s read, 1.5 encoded bytes per byte read: 1500 to send.
        let x = e.update(sample(2.0, 200, 300, 0));
        assert_eq!(x.phase, "encode");
        assert_eq!(x.upload_total, 1500);
        // 8 s of reading left, then 1500 B at the assumed 150 B/s: 10 s.
        let eta = x.eta_secs.expect("rates known");
        assert!((eta - 18.0).abs() < 1e-6, "{eta}");
        assert!((x.fraction - 0.1).abs() < 1e-6, "{}", x.fraction);
        // Encoding done at 10 s; the upload then runs at 300 B/s.
        let y = e.update(sample(10.0, 1000, 1500, 0));
        assert_eq!(y.phase, "upload");
        let z = e.update(sample(12.0, 1000, 1500, 600));
        let eta = z.eta_secs.expect("upload rate known");
        assert!((eta - 3.0).abs() < 1e-6, "{eta}");
        assert_eq!(z.upload_total, 1500);
        assert!((z.fraction - 0.8).abs() < 1e-6, "{}", z.fraction);
    }

    #[test]
    fn overlapping_uploads_take_the_longer_remaining_time() {
        let mut e = Estimator::new(true);
        e.update(sample(0.0, 0, 0, 0));
        let x = e.update(sample(5.0, 500, 500, 100));
        // No upload rate yet: as fast as encoding (100 B/s), 900 left: 9 s
        // against 5 s of reading.
        let eta = x.eta_secs.expect("known");
        assert!((eta - 9.0).abs() < 1e-6, "{eta}");
        // Uploads at 20 B/s: 880 left = 44 s, reading 4 s: 44 s.
        let y = e.update(sample(6.0, 600, 600, 120));
        let eta = y.eta_secs.expect("known");
        assert!((eta - 44.0).abs() < 1e-6, "{eta}");
    }

    #[test]
    fn a_restore_is_one_phase_and_nothing_known_means_no_eta() {
        let mut e = Estimator::new(false);
        let x = e.update(sample(0.0, 0, 0, 0));
        assert_eq!(x.eta_secs, None);
        assert_eq!(x.fraction, 0.0);
        let y = e.update(sample(4.0, 400, 0, 0));
        assert_eq!(y.phase, "restore");
        assert_eq!(y.upload_total, 0);
        let eta = y.eta_secs.expect("known");
        assert!((eta - 6.0).abs() < 1e-6, "{eta}");
        let line = serde_json::to_string(&y).expect("serializes");
        assert!(line.contains("\"eta_secs\":6"), "{line}");
    }
}
