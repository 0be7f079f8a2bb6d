//! Progress bars for long work (indicatif), drawn on stderr only when it is
//! a terminal, fed by polling the pipeline's atomic counters from a small
//! thread so the hot path never touches the display.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
