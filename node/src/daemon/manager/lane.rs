//! The lane the manager's heavy reads take: building and sealing a sequence
//! page, a page of read tickets, a snapshot's standing, a placement preview.
//! Each costs milliseconds to a second of CPU, and any joined node may ask
//! for them about its own snapshots, as often as it likes, on up to
//! sixteen streams at once. Unbounded, one such node could keep every core
//! of the manager busy, and the group's heartbeats and applies would starve.
//!
//! So these reads run a few at a time (one core fewer than the machine
//! has, at least one: a core is left for everything else), in the order they arrive, and each requester has
//! at most [`PER_REQUESTER`] of them waiting or running: another one is
//! answered `Unavailable(Busy)` at once, which an honest node retries after
//! a back-off. A requester's share of the lane is thus at most its share of
//! the requesters, whatever it sends. Owns only the counting; what a read
//! does is the manager's.

use std::collections::HashMap;
use std::sync::Mutex;

use strew_coordinator::NodeId;
use strew_overlay::ManagerResponse;
use strew_overlay::manager::{Refusal, RefusalCode};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::sync::lock;

/// Heavy reads one requester may have waiting or running at once: a
/// restore fetches a sequence page and the next page's tickets together.
pub const PER_REQUESTER: usize = 2;

/// Heavy reads waiting or running, by requester, and the lane itself.
pub struct ReadLane {
    lane: Semaphore,
    held: Mutex<HashMap<NodeId, usize>>,
}

/// A heavy read's turn: the lane until it is dropped.
pub struct Turn<'a> {
    _permit: SemaphorePermit<'a>,
    _held: Held<'a>,
}

/// One of a requester's [`PER_REQUESTER`] places, given back on drop (also
/// when the call is dropped while it waits for the lane).
struct Held<'a> {
    lane: &'a ReadLane,
    requester: NodeId,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut held = lock(&self.lane.held);
        if let Some(n) = held.get_mut(&self.requester) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.requester);
            }
        }
    }
}

impl ReadLane {
    /// A lane of `lanes` heavy reads at a time (at least one).
    pub fn new(lanes: usize) -> Self {
        ReadLane {
            lane: Semaphore::new(lanes.max(1)),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// One lane fewer than this machine's cores, at least one.
    pub fn for_this_machine() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        ReadLane::new(cores.saturating_sub(1))
    }

    /// Waits for the lane, unless `requester` already has
    /// [`PER_REQUESTER`] heavy reads waiting or running: then the answer to
    /// give it instead.
    pub async fn enter(&self, requester: NodeId) -> Result<Turn<'_>, ManagerResponse> {
        {
            let mut held = lock(&self.held);
            let n = held.entry(requester).or_insert(0);
            if *n >= PER_REQUESTER {
                return Err(ManagerResponse::Unavailable(Refusal::new(
                    RefusalCode::Busy,
                    format!(
                        "this node already has {PER_REQUESTER} reads of sequences, tickets or \
                         standings waiting or running at the manager; retry when one is answered"
                    ),
                )));
            }
            *n += 1;
        }
        let held = Held {
            lane: self,
            requester,
        };
        // The semaphore is never closed, so acquiring fails never.
        let permit = self.lane.acquire().await.map_err(|_| {
            ManagerResponse::Unavailable(Refusal::new(
                RefusalCode::Internal,
                "the manager's read lane is closed",
            ))
        })?;
        Ok(Turn {
            _permit: permit,
            _held: held,
        })
    }

    /// Requesters with a heavy read waiting or running.
    #[cfg(test)]
    fn requesters(&self) -> usize {
        lock(&self.held).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn node(n: u8) -> NodeId {
        NodeId([n; 32])
    }

    fn busy(r: &Result<Turn<'_>, ManagerResponse>) -> bool {
        matches!(r, Err(ManagerResponse::Unavailable(why)) if why.code == RefusalCode::Busy)
    }

    /// Whether `call` is still waiting after `ms`: it neither got the lane
    /// nor was turned away.
    async fn waits<F: std::future::Future + Unpin>(call: &mut F, ms: u64) -> bool {
        tokio::time::timeout(Duration::from_millis(ms), call)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn a_requester_gets_two_places_and_the_lane_serves_one_at_a_time() {
        let lane = ReadLane::new(1);
        let first = lane.enter(node(1)).await;
        assert!(first.is_ok());
        // The second read of the same requester waits for the lane...
        let second = lane.enter(node(1));
        tokio::pin!(second);
        assert!(waits(&mut second, 50).await, "the lane is held");
        // ... and holds its place while it waits: a third is refused now.
        assert!(busy(&lane.enter(node(1)).await));
        // Another requester is not refused: it queues for the lane.
        let other = lane.enter(node(2));
        tokio::pin!(other);
        assert!(waits(&mut other, 20).await);
        assert_eq!(lane.requesters(), 2);
        drop(first);
        let second = second.await;
        assert!(second.is_ok(), "the lane passes on in arrival order");
        drop(second);
        let other = other.await;
        assert!(other.is_ok());
        drop(other);
        assert_eq!(lane.requesters(), 0, "every place was given back");
        assert!(lane.enter(node(1)).await.is_ok());
    }

    #[tokio::test]
    async fn a_call_dropped_while_it_waits_gives_its_place_back() {
        let lane = ReadLane::new(1);
        let running = lane.enter(node(1)).await;
        assert!(running.is_ok());
        for _ in 0..3 {
            assert!(waits(&mut Box::pin(lane.enter(node(1))), 10).await);
        }
        // Each abandoned wait gave its place back: a second is still taken.
        let waiting = lane.enter(node(1));
        tokio::pin!(waiting);
        assert!(waits(&mut waiting, 10).await);
        drop(running);
        assert!(waiting.await.is_ok());
    }

    #[test]
    fn a_machine_always_has_a_lane() {
        assert_eq!(ReadLane::new(0).lane.available_permits(), 1);
        assert!(ReadLane::for_this_machine().lane.available_permits() >= 1);
    }
}
