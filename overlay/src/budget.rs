//! The global budget for inbound message buffers, shared by every protocol
//! and every peer of one overlay.
//!
//! Owns [`InboundBudget`] (a byte counter with a ceiling) and [`Reserved`]
//! (the bytes one inbound message holds, given back when it drops). A codec
//! reserves a message's announced length *before* allocating or reading any
//! of it; when the reservation does not fit, the stream is refused with
//! [`busy`] and nothing is buffered. A peer's identity costs nothing, so the
//! bound is global, never only per peer. This module must not know any
//! protocol.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Default ceiling of all inbound buffers together.
pub const DEFAULT_INBOUND_BUDGET: usize = 256 * 1024 * 1024;

/// Bytes of inbound messages held at once, across all peers and protocols.
#[derive(Clone, Debug)]
pub struct InboundBudget {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    used: AtomicUsize,
}

impl InboundBudget {
    pub fn new(limit: usize) -> Self {
        InboundBudget {
            inner: Arc::new(Inner {
                limit,
                used: AtomicUsize::new(0),
            }),
        }
    }

    /// A budget no message can exhaust (tests, fuzzing, in-memory decoding).
    pub fn unlimited() -> Self {
        Self::new(usize::MAX)
    }

    /// Reserves `bytes`, or `None` when they would take the total past the
    /// ceiling (nothing is reserved then).
    pub fn try_reserve(&self, bytes: usize) -> Option<Reserved> {
        let inner = &self.inner;
        inner
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|total| *total <= inner.limit)
            })
            .ok()?;
        Some(Reserved {
            budget: self.clone(),
            bytes,
        })
    }

    /// [`try_reserve`](Self::try_reserve) as the I/O error a codec returns.
    pub fn reserve(&self, bytes: usize) -> io::Result<Reserved> {
        self.try_reserve(bytes).ok_or_else(|| busy(bytes))
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.inner.used.load(Ordering::Acquire)
    }

    /// The ceiling.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }
}

impl Default for InboundBudget {
    fn default() -> Self {
        Self::new(DEFAULT_INBOUND_BUDGET)
    }
}

/// Bytes held by one inbound message; given back on drop.
#[derive(Debug)]
pub struct Reserved {
    budget: InboundBudget,
    bytes: usize,
}

impl Reserved {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget
            .inner
            .used
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// The error a codec returns when a message does not fit the budget: the
/// stream is dropped unread (the sender sees its request fail and retries
/// later, as after `Busy`).
pub fn busy(bytes: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!("busy: no room in the inbound buffer budget for {bytes} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_ceiling_and_come_back_on_drop() {
        let budget = InboundBudget::new(100);
        let a = budget.try_reserve(60).expect("fits");
        assert!(budget.try_reserve(41).is_none());
        assert_eq!(budget.used(), 60);
        let b = budget.try_reserve(40).expect("fits exactly");
        assert_eq!(budget.used(), 100);
        drop(a);
        assert_eq!(budget.used(), 40);
        assert!(budget.try_reserve(usize::MAX).is_none(), "no overflow");
        drop(b);
        assert_eq!(budget.used(), 0);
        let err = budget.reserve(101).expect_err("over the ceiling");
        assert_eq!(err.kind(), io::ErrorKind::OutOfMemory);
    }
}
