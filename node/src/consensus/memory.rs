//! An in-process [`RaftTransport`] for tests: a router between members that
//! can cut links, partition the group, drop and delay messages.
//!
//! Owns [`MemoryRouter`]. Every request and reply goes through the real CBOR
//! encoding of [`super::wire`], so the tests exercise what the libp2p carrier
//! sends. A link is checked both when the request leaves and when the reply
//! comes back, so a partition can swallow either.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::Raft;

use super::network::{RaftTransport, TransportError, serve};
use super::types::{Member, RaftId, StrewRaft};
use super::wire::{
    RaftReply, RaftRequest, decode_reply, decode_request, encode_reply, encode_request,
};

#[derive(Default)]
struct Routes {
    members: BTreeMap<RaftId, Raft<StrewRaft>>,
    /// Unordered pairs that cannot talk.
    cut: BTreeSet<(RaftId, RaftId)>,
    /// Probability (0..=1) that a message is lost.
    drop_rate: f64,
    /// Extra latency per message: uniformly in this range.
    delay: Option<(Duration, Duration)>,
}

/// The in-memory network. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryRouter {
    routes: Arc<Mutex<Routes>>,
}

fn pair(a: RaftId, b: RaftId) -> (RaftId, RaftId) {
    (a.min(b), a.max(b))
}

impl MemoryRouter {
    pub fn new() -> Self {
        Self::default()
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        // A test that panicked while holding the lock left nothing half-done.
        self.routes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Makes `raft` reachable as `id` (a started or restarted member).
    pub fn connect(&self, id: RaftId, raft: Raft<StrewRaft>) {
        self.routes().members.insert(id, raft);
    }

    /// Makes `id` unreachable, as if its process died.
    pub fn disconnect(&self, id: RaftId) {
        self.routes().members.remove(&id);
    }

    /// Splits the members into groups that only talk within themselves.
    /// Members in no group are cut from everyone.
    pub fn partition(&self, groups: &[Vec<RaftId>]) {
        let mut routes = self.routes();
        let all: Vec<RaftId> = routes.members.keys().copied().collect();
        let group_of = |id: RaftId| groups.iter().position(|g| g.contains(&id));
        routes.cut.clear();
        for &a in &all {
            for &b in &all {
                if a < b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    routes.cut.insert(pair(a, b));
                }
            }
        }
    }

    /// Cuts `id` off from every other member.
    pub fn isolate(&self, id: RaftId) {
        let mut routes = self.routes();
        let others: Vec<RaftId> = routes
            .members
            .keys()
            .copied()
            .filter(|&o| o != id)
            .collect();
        for other in others {
            routes.cut.insert(pair(id, other));
        }
    }

    /// Restores every link (members stay connected or disconnected as they are).
    pub fn heal(&self) {
        self.routes().cut.clear();
    }

    /// Loses each message with probability `rate` (0 to 1).
    pub fn set_drop_rate(&self, rate: f64) {
        self.routes().drop_rate = rate.clamp(0.0, 1.0);
    }

    /// Delays each message by a uniform random time in `min..=max`.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        self.routes().delay = Some((min, max.max(min)));
    }

    fn link(
        &self,
        from: RaftId,
        to: RaftId,
    ) -> Result<(Raft<StrewRaft>, Duration), TransportError> {
        let routes = self.routes();
        if routes.cut.contains(&pair(from, to)) {
            return Err(TransportError::Unreachable(format!(
                "{from:016x} and {to:016x} are partitioned"
            )));
        }
        if routes.drop_rate > 0.0 && rand::random::<f64>() < routes.drop_rate {
            return Err(TransportError::Unreachable("message lost".into()));
        }
        let raft = routes
            .members
            .get(&to)
            .cloned()
            .ok_or_else(|| TransportError::Unreachable(format!("{to:016x} is down")))?;
        let delay = match routes.delay {
            Some((min, max)) if max > min => min + (max - min).mul_f64(rand::random::<f64>()),
            Some((min, _)) => min,
            None => Duration::ZERO,
        };
        Ok((raft, delay))
    }
}

impl RaftTransport for MemoryRouter {
    async fn send(
        &self,
        target: RaftId,
        _member: &Member,
        request: RaftRequest,
    ) -> Result<RaftReply, TransportError> {
        let from = request.from;
        let (raft, delay) = self.link(from, target)?;
        let bytes = encode_request(&request).map_err(|e| match e {
            super::wire::WireError::TooLarge { size, .. } => TransportError::TooLarge { size },
            other => TransportError::Unreachable(other.to_string()),
        })?;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let request =
            decode_request(&bytes).map_err(|e| TransportError::Unreachable(e.to_string()))?;
        let reply = serve(&raft, target, request).await;
        // The way back can be cut (or the member killed) meanwhile.
        self.link(target, from)?;
        let bytes = encode_reply(&reply).map_err(|e| TransportError::Unreachable(e.to_string()))?;
        decode_reply(&bytes).map_err(|e| TransportError::Unreachable(e.to_string()))
    }
}
