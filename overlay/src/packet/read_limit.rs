//! Per-peer rate limit of packet reads on a target (issue 11): a token
//! bucket per requesting peer, so one reader (even one holding valid read
//! tickets) cannot monopolise a target's disk and uplink.
//!
//! Owns [`ReadLimit`] (the policy) and [`ReadLimiter`] (the buckets). The
//! buckets are bounded: at most [`ReadLimit::max_peers`] peers are tracked;
//! past that, the bucket refilled longest ago (a peer that has been idle
//! longest) is forgotten. A read over the limit is answered `Busy`, which
//! the requester's handle retries later. Time is passed in; this module
//! must not read clocks or do I/O.

use std::collections::BTreeMap;

use libp2p::PeerId;

/// Default reads per second one peer may make of a target. A restore reads
/// one packet per stripe from each of K targets, so this is its pace per
/// target: at 64 a second a snapshot of 200,000 small chunks took over a
/// quarter of an hour to read from 3 targets. Bytes are bounded by the
/// node's `--bandwidth` and the in-flight limits (8 per peer), which also
/// share a target fairly between readers.
pub const DEFAULT_READS_PER_SEC: u32 = 2048;
/// Default burst: reads a peer idle for a while may make at once.
pub const DEFAULT_READ_BURST: u32 = 8192;
/// Default number of peers whose buckets a target keeps.
pub const DEFAULT_MAX_READ_PEERS: usize = 1024;

/// How fast each peer may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadLimit {
    /// Tokens added per second (0: reads are refused).
    pub per_sec: u32,
    /// Bucket size.
    pub burst: u32,
    /// Peers tracked at once.
    pub max_peers: usize,
}

impl Default for ReadLimit {
    fn default() -> Self {
        ReadLimit {
            per_sec: DEFAULT_READS_PER_SEC,
            burst: DEFAULT_READ_BURST,
            max_peers: DEFAULT_MAX_READ_PEERS,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Tokens in thousandths (integer arithmetic only).
    milli_tokens: u64,
    refilled_at_ms: u64,
}

/// The buckets of the peers reading from this node.
#[derive(Debug)]
pub struct ReadLimiter {
    limit: ReadLimit,
    buckets: BTreeMap<PeerId, Bucket>,
}

impl ReadLimiter {
    pub fn new(limit: ReadLimit) -> Self {
        ReadLimiter {
            limit,
            buckets: BTreeMap::new(),
        }
    }

    /// Takes one read token for `peer` at `now_ms`; `false` when its bucket is empty.
    pub fn try_read(&mut self, peer: PeerId, now_ms: u64) -> bool {
        let full = u64::from(self.limit.burst).saturating_mul(1000);
        if !self.buckets.contains_key(&peer) && self.buckets.len() >= self.limit.max_peers.max(1) {
            // Forget the peer idle longest (its bucket would be full again anyway).
            if let Some(oldest) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.refilled_at_ms)
                .map(|(p, _)| *p)
            {
                self.buckets.remove(&oldest);
            }
        }
        let bucket = self.buckets.entry(peer).or_insert(Bucket {
            milli_tokens: full,
            refilled_at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(bucket.refilled_at_ms);
        // per_sec tokens a second = per_sec milli-tokens a millisecond.
        let refill = elapsed.saturating_mul(u64::from(self.limit.per_sec));
        bucket.milli_tokens = bucket.milli_tokens.saturating_add(refill).min(full);
        bucket.refilled_at_ms = bucket.refilled_at_ms.max(now_ms);
        if bucket.milli_tokens >= 1000 {
            bucket.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Peers currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_gets_its_burst_then_its_rate_and_others_are_unaffected() {
        let mut limiter = ReadLimiter::new(ReadLimit {
            per_sec: 10,
            burst: 5,
            max_peers: 4,
        });
        let greedy = PeerId::random();
        let other = PeerId::random();
        let granted = (0..20).filter(|_| limiter.try_read(greedy, 1_000)).count();
        assert_eq!(granted, 5, "the burst, then nothing at the same instant");
        assert!(
            limiter.try_read(other, 1_000),
            "another peer has its own bucket"
        );
        // 10 reads a second: one more every 100 ms.
        assert!(!limiter.try_read(greedy, 1_050));
        assert!(limiter.try_read(greedy, 1_100));
        assert!(!limiter.try_read(greedy, 1_100));
        // A long pause refills to the burst, never beyond.
        let granted = (0..20)
            .filter(|_| limiter.try_read(greedy, 100_000))
            .count();
        assert_eq!(granted, 5);
    }

    #[test]
    fn the_buckets_stay_bounded() {
        let mut limiter = ReadLimiter::new(ReadLimit {
            per_sec: 1,
            burst: 1,
            max_peers: 3,
        });
        for t in 0..100u64 {
            assert!(limiter.try_read(PeerId::random(), t));
            assert!(limiter.tracked() <= 3);
        }
    }

    #[test]
    fn a_zero_rate_refuses_every_read() {
        let mut limiter = ReadLimiter::new(ReadLimit {
            per_sec: 0,
            burst: 0,
            max_peers: 1,
        });
        assert!(!limiter.try_read(PeerId::random(), 0));
    }
}
