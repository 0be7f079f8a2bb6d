//! The node's bandwidth limit (`--bandwidth`): one token bucket shared by every
//! packet transfer in both directions.
//!
//! Owns the bucket and the async wait for tokens. It must not know protocols;
//! the packet codec calls [`BandwidthLimiter::acquire`] before moving each slice of a body.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A shared token bucket in bytes; `None` rate means unlimited.
#[derive(Clone, Debug, Default)]
pub struct BandwidthLimiter {
    inner: Option<Arc<Mutex<Bucket>>>,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl BandwidthLimiter {
    /// Unlimited.
    pub fn unlimited() -> Self {
        BandwidthLimiter { inner: None }
    }

    /// At most `bytes_per_sec` on average, bursts of a quarter second's worth
    /// (at least one 64 KiB slice so a slice can always pass).
    pub fn new(bytes_per_sec: u64) -> Self {
        if bytes_per_sec == 0 {
            return Self::unlimited();
        }
        let rate = bytes_per_sec as f64;
        let burst = (rate / 4.0).max(crate::packet::codec::SLICE_BYTES as f64);
        BandwidthLimiter {
            inner: Some(Arc::new(Mutex::new(Bucket {
                rate,
                burst,
                tokens: burst,
                last: Instant::now(),
            }))),
        }
    }

    /// The configured rate in bytes per second (0 = unlimited).
    pub fn rate(&self) -> u64 {
        match &self.inner {
            None => 0,
            Some(b) => b.lock().map(|b| b.rate as u64).unwrap_or(0),
        }
    }

    /// Waits until `bytes` may pass. Reserves immediately (tokens can go
    /// negative), so concurrent callers queue fairly behind each other.
    pub async fn acquire(&self, bytes: usize) {
        let Some(bucket) = &self.inner else { return };
        let wait = {
            let Ok(mut b) = bucket.lock() else { return };
            let now = Instant::now();
            let elapsed = now.duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * b.rate).min(b.burst);
            b.last = now;
            b.tokens -= bytes as f64;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64(-b.tokens / b.rate)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_transfers_at_the_configured_rate() {
        let limiter = BandwidthLimiter::new(1_000_000);
        let start = tokio::time::Instant::now();
        // 4 MB at 1 MB/s with a 250 kB burst: at least ~3.75 s.
        for _ in 0..64 {
            limiter.acquire(62_500).await;
        }
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(3_700), "{took:?}");
        assert!(took <= Duration::from_millis(4_100), "{took:?}");
    }

    #[tokio::test]
    async fn unlimited_never_waits() {
        let limiter = BandwidthLimiter::unlimited();
        assert_eq!(limiter.rate(), 0);
        limiter.acquire(usize::MAX).await;
    }
}
