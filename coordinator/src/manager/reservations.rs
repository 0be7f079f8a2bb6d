//! Bounds on what planned backups may reserve (SPEC R10): how long a plan
//! holds its targets' room, how many bytes one source may hold reserved at
//! once, and how much of a target's announced space placement believes.
//!
//! Owns [`ReservationLimits`] and the pure arithmetic the manager applies
//! when it decides a plan. Everything here is leader-side policy: the
//! commands carry its outcome (targets, deadline), so replicas never
//! recompute it. This module must not read clocks or do I/O.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::quota::QuotaError;
use crate::units::Millis;

/// How much planned backups may reserve, and for how long.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReservationLimits {
    /// Upload rate a plan's deadline assumes, bytes per second: a plan of
    /// `b` stored bytes gets `b / upload_rate` on top of the manager's
    /// `pending_ttl` (capped at the ticket lifetime, past which its tickets
    /// are worthless anyway).
    pub upload_rate: u64,
    /// Stored bytes one source may hold reserved by plans not yet
    /// committed (all its pending plans together).
    pub pending_bytes_per_source: u64,
    /// Room placement grants a target beyond what it has proven: a target
    /// is offered at most `held + allowance - reserved` (and never more
    /// than its announced free space), where `held` is what the manager
    /// committed on it with verified receipts. Announcing a huge donation
    /// buys nothing until packets are actually stored.
    pub unproven_allowance: u64,
}

/// 256 KiB/s (about 2 Mbit/s): a slow home uplink. An upload slower than
/// this may outlive its plan; one of the plan's size at this rate takes
/// longer than the tickets live once past 900 MiB, so only smaller plans
/// at slower rates are affected.
pub const DEFAULT_UPLOAD_RATE: u64 = 256 << 10;
/// 32 GiB of stored bytes (redundancy included) pending per source.
pub const DEFAULT_PENDING_BYTES_PER_SOURCE: u64 = 32 << 30;
/// 4 GiB of unproven room per target.
pub const DEFAULT_UNPROVEN_ALLOWANCE: u64 = 4 << 30;

impl Default for ReservationLimits {
    fn default() -> Self {
        ReservationLimits {
            upload_rate: DEFAULT_UPLOAD_RATE,
            pending_bytes_per_source: DEFAULT_PENDING_BYTES_PER_SOURCE,
            unproven_allowance: DEFAULT_UNPROVEN_ALLOWANCE,
        }
    }
}

impl ReservationLimits {
    /// When a plan of `stored_bytes` decided at `now` expires: the grace
    /// `pending_ttl`, plus the time its bytes take at [`upload_rate`](Self::upload_rate),
    /// that upload time capped at `ticket_ttl`.
    pub fn deadline(
        &self,
        now: Millis,
        stored_bytes: u64,
        pending_ttl: Millis,
        ticket_ttl: Millis,
    ) -> Millis {
        let rate = self.upload_rate.max(1);
        let upload_ms = u64::try_from(u128::from(stored_bytes) * 1000 / u128::from(rate))
            .unwrap_or(u64::MAX)
            .min(ticket_ttl);
        now.saturating_add(pending_ttl).saturating_add(upload_ms)
    }

    /// Free bytes placement may assign to a target that announces
    /// `announced_free` (after what is held and reserved), holds `held`
    /// committed bytes and has `reserved` bytes promised to pending plans.
    pub fn placement_free(&self, announced_free: u64, held: u64, reserved: u64) -> u64 {
        let proven = held
            .saturating_add(self.unproven_allowance)
            .saturating_sub(reserved);
        announced_free.min(proven)
    }

    /// Refuses a plan that would take `source` past its pending-bytes cap.
    /// `held`: the stored bytes of `source`'s pending backups now.
    pub fn check_pending(&self, source: NodeId, held: u64, extra: u64) -> Result<(), QuotaError> {
        if held.saturating_add(extra) > self.pending_bytes_per_source {
            return Err(QuotaError::PendingBytes {
                node: source,
                pending: held,
                extra,
                limit: self.pending_bytes_per_source,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deadline_grows_with_the_plan_up_to_the_ticket_lifetime() {
        let limits = ReservationLimits {
            upload_rate: 1000,
            ..ReservationLimits::default()
        };
        assert_eq!(limits.deadline(10, 0, 100, 5000), 110);
        // 2000 bytes at 1000 B/s: two more seconds.
        assert_eq!(limits.deadline(10, 2000, 100, 5000), 2110);
        assert_eq!(limits.deadline(10, u64::MAX, 100, 5000), 5110);
        assert_eq!(limits.deadline(u64::MAX - 1, 10, 100, 5000), u64::MAX);
    }

    #[test]
    fn placement_believes_only_proven_room_plus_the_allowance() {
        let limits = ReservationLimits {
            unproven_allowance: 100,
            ..ReservationLimits::default()
        };
        // Announces a lot, holds nothing: the allowance.
        assert_eq!(limits.placement_free(1 << 40, 0, 0), 100);
        // Reservations use the allowance up.
        assert_eq!(limits.placement_free(1 << 40, 0, 60), 40);
        assert_eq!(limits.placement_free(1 << 40, 0, 160), 0);
        // Proven bytes earn as much again.
        assert_eq!(limits.placement_free(1 << 40, 500, 0), 600);
        // Never more than announced.
        assert_eq!(limits.placement_free(30, 500, 0), 30);
    }
}
