//! Per-source-IP rate limit on new identities entering the grid view by
//! gossip (SPEC R10).
//!
//! A node id costs nothing, so the per-node gate in `gossip` alone lets one
//! machine push any number of fresh identities into a victim's view. This
//! limiter keys on the IP address of the peer that delivered the
//! announcement (what its connection showed, not what the announcement
//! claims) and on that address's /24 (IPv4) or /64 (IPv6): past a budget per
//! minute, announcements of nodes the receiver does not know yet are ignored
//! (not forwarded, sender not penalised) and counted under `ip_rate`. Updates
//! of nodes already known pass through; only the per-node gate limits them.
//!
//! Owns the token buckets and their bounded tables. It must not decide
//! anything else about an announcement (the gate does) nor know where the
//! address came from (the gossip driver looks it up).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::ip_limits::subnet_of;

/// New identities accepted per minute from one IP address, by default.
pub const DEFAULT_NEW_NODES_PER_IP_PER_MINUTE: u32 = 60;
/// A /24 (/64) gets this many times the per-IP budget.
pub const SUBNET_FACTOR: u32 = 4;
/// Most addresses (and, separately, subnets) tracked; past it the fullest
/// buckets (idle ones) are forgotten first.
pub const MAX_TRACKED: usize = 4096;

/// One minute, in milliseconds.
const MINUTE_MS: f64 = 60_000.0;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: u64,
}

/// Token buckets of new identities per source IP and per source subnet:
/// each holds a minute's budget and refills continuously.
#[derive(Debug)]
pub struct IpRateLimit {
    per_ip: f64,
    per_subnet: f64,
    ips: HashMap<IpAddr, Bucket>,
    subnets: HashMap<IpAddr, Bucket>,
}

impl IpRateLimit {
    /// `per_ip` new identities a minute from one address (0 disables the
    /// limit), [`SUBNET_FACTOR`] times that from one /24 or /64.
    pub fn new(per_ip: u32) -> Self {
        IpRateLimit {
            per_ip: f64::from(per_ip),
            per_subnet: f64::from(per_ip.saturating_mul(SUBNET_FACTOR)),
            ips: HashMap::new(),
            subnets: HashMap::new(),
        }
    }

    /// Takes one token from `ip`'s bucket and its subnet's; false (and
    /// nothing taken) when either is empty.
    pub fn allow(&mut self, ip: IpAddr, now_ms: u64) -> bool {
        if self.per_ip <= 0.0 {
            return true;
        }
        let subnet = subnet_of(ip);
        let ip_tokens = refill(&mut self.ips, ip, self.per_ip, now_ms);
        let subnet_tokens = refill(&mut self.subnets, subnet, self.per_subnet, now_ms);
        if ip_tokens < 1.0 || subnet_tokens < 1.0 {
            return false;
        }
        for (table, key) in [(&mut self.ips, ip), (&mut self.subnets, subnet)] {
            if let Some(b) = table.get_mut(&key) {
                b.tokens -= 1.0;
            }
        }
        true
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.ips.len()
    }
}

/// Refills `key`'s bucket (creating it full) up to `capacity` and returns
/// its tokens; keeps the table at most [`MAX_TRACKED`] long.
fn refill(table: &mut HashMap<IpAddr, Bucket>, key: IpAddr, capacity: f64, now_ms: u64) -> f64 {
    if !table.contains_key(&key) && table.len() >= MAX_TRACKED {
        forget_idle(table, capacity, now_ms);
    }
    let bucket = table.entry(key).or_insert(Bucket {
        tokens: capacity,
        last_ms: now_ms,
    });
    let elapsed = now_ms.saturating_sub(bucket.last_ms) as f64;
    bucket.tokens = (bucket.tokens + elapsed * capacity / MINUTE_MS).min(capacity);
    bucket.last_ms = now_ms.max(bucket.last_ms);
    bucket.tokens
}

/// Drops buckets that would be full by now (forgetting them changes
/// nothing); if none is, the half with the most tokens. An address that is
/// forgotten while draining gets a fresh budget, so the table is large
/// enough that this needs many addresses, each of which pays its own budget.
fn forget_idle(table: &mut HashMap<IpAddr, Bucket>, capacity: f64, now_ms: u64) {
    let full = |b: &Bucket| {
        b.tokens + now_ms.saturating_sub(b.last_ms) as f64 * capacity / MINUTE_MS >= capacity
    };
    table.retain(|_, b| !full(b));
    if table.len() >= MAX_TRACKED {
        let mut levels: Vec<f64> = table.values().map(|b| b.tokens).collect();
        levels.sort_by(|a, b| a.total_cmp(b));
        let median = levels[levels.len() / 2];
        table.retain(|_, b| b.tokens < median);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn one_address_gets_its_budget_then_a_trickle() {
        let mut limit = IpRateLimit::new(10);
        let a = ip("203.0.113.7");
        let allowed = (0..100).filter(|_| limit.allow(a, NOW)).count();
        assert_eq!(allowed, 10);
        // Six seconds later one more token has come back, not more.
        let allowed = (0..100).filter(|_| limit.allow(a, NOW + 6_000)).count();
        assert_eq!(allowed, 1);
        // Another address is not affected.
        assert!(limit.allow(ip("198.51.100.1"), NOW + 6_000));
    }

    #[test]
    fn a_subnet_shares_a_larger_budget() {
        let mut limit = IpRateLimit::new(10);
        let allowed: usize = (1..=20)
            .map(|host| {
                let a = ip(&format!("203.0.113.{host}"));
                (0..100).filter(|_| limit.allow(a, NOW)).count()
            })
            .sum();
        assert_eq!(allowed, 10 * SUBNET_FACTOR as usize);
        // IPv6: one /64 is one subnet.
        let mut limit = IpRateLimit::new(10);
        let allowed: usize = (1..=20)
            .map(|host| {
                let a = ip(&format!("2001:db8:1:2::{host:x}"));
                (0..100).filter(|_| limit.allow(a, NOW)).count()
            })
            .sum();
        assert_eq!(allowed, 10 * SUBNET_FACTOR as usize);
    }

    #[test]
    fn zero_disables_the_limit() {
        let mut limit = IpRateLimit::new(0);
        let a = ip("203.0.113.7");
        assert!((0..1000).all(|_| limit.allow(a, NOW)));
    }

    #[test]
    fn the_tables_stay_bounded() {
        let mut limit = IpRateLimit::new(5);
        for i in 0..(3 * MAX_TRACKED as u32) {
            let a = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i * 256));
            assert!(limit.allow(a, NOW));
        }
        assert!(limit.tracked() <= MAX_TRACKED);
        assert!(limit.subnets.len() <= MAX_TRACKED);
    }
}
