//! Bookkeeping of outbound requests, shared by every request-response
//! protocol of the overlay (packets, manager, raft).
//!
//! Owns two small structures: [`Outbound`], the event loop's record of who
//! waits for which request (reply sender, peer, deadline, and a per-peer count
//! of requests in flight), and [`PeerSlots`], the per-target limit callers
//! queue on before a request is sent. Both shrink back by themselves: an entry
//! leaves on its answer, its failure, its deadline, or when its caller gave
//! up, and a peer's count or slot disappears when it reaches zero. This
//! module must not touch the swarm or decide anything about a peer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use libp2p::PeerId;
use libp2p::request_response;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tokio::time::Instant;

use crate::error::RequestFailure;

/// Where the answer to one outbound request goes.
pub type Reply<T> = oneshot::Sender<Result<T, RequestFailure>>;

struct Entry<T> {
    peer: PeerId,
    deadline: Instant,
    reply: Reply<T>,
}

/// The requests of one protocol in flight, keyed by request id.
pub struct Outbound<K, T> {
    entries: BTreeMap<K, Entry<T>>,
    per_peer: BTreeMap<PeerId, usize>,
}

impl<K, T> Default for Outbound<K, T> {
    fn default() -> Self {
        Outbound {
            entries: BTreeMap::new(),
            per_peer: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy, T> Outbound<K, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a request sent to `peer`; it fails with `TimedOut` if nothing
    /// settles it by `deadline` (a safety net behind libp2p's own timeout).
    pub fn insert(&mut self, id: K, peer: PeerId, deadline: Instant, reply: Reply<T>) {
        if let Some(old) = self.entries.insert(
            id,
            Entry {
                peer,
                deadline,
                reply,
            },
        ) {
            // Request ids are unique per behaviour; keep the counts right anyway.
            self.release(&old.peer);
        }
        *self.per_peer.entry(peer).or_insert(0) += 1;
    }

    /// Hands the answer to the caller; false if the id is unknown (expired,
    /// abandoned or failed already).
    pub fn complete(&mut self, id: &K, answer: T) -> bool {
        match self.remove(id) {
            Some(entry) => {
                // The caller may have given up meanwhile: nothing to do then.
                let _ = entry.reply.send(Ok(answer));
                true
            }
            None => false,
        }
    }

    /// Fails one request; false if the id is unknown.
    pub fn fail(&mut self, id: &K, failure: RequestFailure) -> bool {
        match self.remove(id) {
            Some(entry) => {
                let _ = entry.reply.send(Err(failure));
                true
            }
            None => false,
        }
    }

    /// Fails every request to `peer` (e.g. it could not be dialled); returns how many.
    pub fn fail_peer(&mut self, peer: &PeerId, failure: &RequestFailure) -> usize {
        let ids: Vec<K> = self
            .entries
            .iter()
            .filter(|(_, e)| e.peer == *peer)
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            self.fail(id, failure.clone());
        }
        ids.len()
    }

    /// Fails the requests past their deadline with `TimedOut` and forgets
    /// those whose caller stopped waiting; returns how many timed out.
    pub fn expire(&mut self, now: Instant) -> usize {
        let mut timed_out = Vec::new();
        let mut abandoned = Vec::new();
        for (id, e) in &self.entries {
            if e.reply.is_closed() {
                abandoned.push(*id);
            } else if e.deadline <= now {
                timed_out.push(*id);
            }
        }
        for id in &abandoned {
            self.remove(id);
        }
        for id in &timed_out {
            self.fail(
                id,
                RequestFailure::TimedOut("no answer within the overlay's deadline".into()),
            );
        }
        timed_out.len()
    }

    /// Requests in flight.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Requests in flight to `peer`.
    pub fn in_flight(&self, peer: &PeerId) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Peers with at least one request in flight.
    pub fn peers(&self) -> usize {
        self.per_peer.len()
    }

    fn remove(&mut self, id: &K) -> Option<Entry<T>> {
        let entry = self.entries.remove(id)?;
        self.release(&entry.peer);
        Some(entry)
    }

    fn release(&mut self, peer: &PeerId) {
        if let Some(n) = self.per_peer.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(peer);
            }
        }
    }
}

struct Slot {
    semaphore: Arc<Semaphore>,
    /// Callers holding or waiting for a permit of this slot.
    users: usize,
}

type SlotMap<P> = Arc<Mutex<BTreeMap<P, Slot>>>;

fn lock<P>(map: &Mutex<BTreeMap<P, Slot>>) -> MutexGuard<'_, BTreeMap<P, Slot>> {
    // The map stays consistent under every operation here: a panic elsewhere
    // while holding the lock leaves nothing half-done.
    map.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What a request-response event leaves for the protocol once the tracker
/// took the answers and failures of its own requests.
pub enum Incoming<Req, Resp> {
    /// A request from `peer`, to be answered on `channel`.
    Request {
        peer: PeerId,
        request: Req,
        channel: request_response::ResponseChannel<Resp>,
    },
    /// An inbound request that could not be read or answered.
    Failed {
        peer: PeerId,
        error: request_response::InboundFailure,
    },
}

impl<T> Outbound<request_response::OutboundRequestId, T> {
    /// Routes one request-response event: answers and outbound failures
    /// complete this tracker's requests (`what` names the protocol in
    /// logs); inbound requests and inbound failures are returned.
    pub fn route<Req>(
        &mut self,
        event: request_response::Event<Req, T>,
        what: &str,
    ) -> Option<Incoming<Req, T>> {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request {
                    request, channel, ..
                } => Some(Incoming::Request {
                    peer,
                    request,
                    channel,
                }),
                request_response::Message::Response {
                    request_id,
                    response,
                } => {
                    self.complete(&request_id, response);
                    None
                }
            },
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "{what} failed");
                self.fail(&request_id, RequestFailure::from(&error));
                None
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                Some(Incoming::Failed { peer, error })
            }
            request_response::Event::ResponseSent { .. } => None,
        }
    }
}

/// At most `per_peer` requests to one target at a time: callers queue here
/// rather than flood a peer. A target's slot exists only while someone holds
/// or waits for it.
pub struct PeerSlots<P: Ord + Clone> {
    per_peer: usize,
    slots: SlotMap<P>,
}

impl<P: Ord + Clone> PeerSlots<P> {
    pub fn new(per_peer: usize) -> Self {
        PeerSlots {
            per_peer: per_peer.max(1),
            slots: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Waits for a free slot towards `peer`; the slot is given back when the
    /// permit drops. Cancel-safe: a caller that stops waiting leaves no trace.
    pub async fn acquire(&self, peer: P) -> SlotPermit<P> {
        let semaphore = {
            let mut map = lock(&self.slots);
            let slot = map.entry(peer.clone()).or_insert_with(|| Slot {
                semaphore: Arc::new(Semaphore::new(self.per_peer)),
                users: 0,
            });
            slot.users += 1;
            slot.semaphore.clone()
        };
        let mut permit = SlotPermit {
            permit: None,
            slots: self.slots.clone(),
            peer,
        };
        // The semaphore is never closed, so this only fails if it were.
        permit.permit = semaphore.acquire_owned().await.ok();
        permit
    }

    /// Targets with a slot in use or waited for.
    pub fn peers(&self) -> usize {
        lock(&self.slots).len()
    }
}

/// One request's place in a target's slot.
pub struct SlotPermit<P: Ord + Clone> {
    permit: Option<OwnedSemaphorePermit>,
    slots: SlotMap<P>,
    peer: P,
}

impl<P: Ord + Clone> Drop for SlotPermit<P> {
    fn drop(&mut self) {
        // Give the permit back before the slot may disappear, so a new slot
        // for the same peer never runs next to this one.
        drop(self.permit.take());
        let mut map = lock(&self.slots);
        if let Some(slot) = map.get_mut(&self.peer) {
            slot.users = slot.users.saturating_sub(1);
            if slot.users == 0 {
                map.remove(&self.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pending<T>() -> (Reply<T>, oneshot::Receiver<Result<T, RequestFailure>>) {
        oneshot::channel()
    }

    #[test]
    fn answers_reach_their_caller_and_counts_shrink_to_nothing() {
        let mut out: Outbound<u32, &str> = Outbound::new();
        let (a, b) = (PeerId::random(), PeerId::random());
        let later = Instant::now() + Duration::from_secs(60);
        let (tx1, mut rx1) = pending();
        let (tx2, mut rx2) = pending();
        let (tx3, mut rx3) = pending();
        out.insert(1, a, later, tx1);
        out.insert(2, a, later, tx2);
        out.insert(3, b, later, tx3);
        assert_eq!(
            (out.in_flight(&a), out.in_flight(&b), out.peers()),
            (2, 1, 2)
        );

        assert!(out.complete(&1, "one"));
        assert!(!out.complete(&1, "again"));
        assert_eq!(rx1.try_recv().unwrap(), Ok("one"));
        assert!(out.fail(&3, RequestFailure::Refused("closed".into())));
        assert_eq!(
            rx3.try_recv().unwrap(),
            Err(RequestFailure::Refused("closed".into()))
        );
        assert_eq!(out.peers(), 1, "b has nothing in flight any more");

        let unreachable = RequestFailure::Unreachable("connection refused".into());
        assert_eq!(out.fail_peer(&a, &unreachable), 1);
        assert_eq!(rx2.try_recv().unwrap(), Err(unreachable));
        assert!(out.is_empty());
        assert_eq!(out.peers(), 0);
    }

    #[test]
    fn expiry_times_out_late_requests_and_forgets_abandoned_ones() {
        let mut out: Outbound<u32, ()> = Outbound::new();
        let peer = PeerId::random();
        let now = Instant::now();
        let (late, mut late_rx) = pending();
        let (gone, gone_rx) = pending();
        let (fine, mut fine_rx) = pending();
        out.insert(1, peer, now, late);
        out.insert(2, peer, now + Duration::from_secs(60), gone);
        out.insert(3, peer, now + Duration::from_secs(60), fine);
        drop(gone_rx);

        assert_eq!(out.expire(now), 1);
        assert!(matches!(
            late_rx.try_recv().unwrap(),
            Err(RequestFailure::TimedOut(_))
        ));
        assert_eq!(out.len(), 1);
        assert_eq!(out.in_flight(&peer), 1);
        assert!(fine_rx.try_recv().is_err(), "still waiting");
        assert!(out.complete(&3, ()));
        assert_eq!(out.peers(), 0);
    }

    #[tokio::test]
    async fn peer_slots_bound_each_target_and_vanish_when_unused() {
        let slots: PeerSlots<u8> = PeerSlots::new(2);
        let a1 = slots.acquire(1).await;
        let a2 = slots.acquire(1).await;
        let b1 = slots.acquire(2).await;
        assert_eq!(slots.peers(), 2);

        // A third call to target 1 waits until one of its permits drops.
        let third = tokio::time::timeout(Duration::from_millis(50), slots.acquire(1)).await;
        assert!(third.is_err(), "target 1 is at its limit");
        assert_eq!(slots.peers(), 2, "the cancelled waiter left no trace");
        drop(a1);
        let a3 = tokio::time::timeout(Duration::from_secs(1), slots.acquire(1))
            .await
            .expect("a slot was given back");

        drop((a2, a3, b1));
        assert_eq!(slots.peers(), 0, "no slot outlives its last user");
    }
}
