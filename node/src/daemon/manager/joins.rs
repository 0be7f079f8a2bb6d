//! The leader's join gate applied to the grid view (SPEC R10): in an open
//! grid, which nodes not yet in replicated state grid sync may propose a
//! `Join` for (in the view continuously for a while, with a valid
//! proof-of-work stamp, or certified members of the group), and how many of
//! them per tick.
//!
//! Owns the service's [`JoinGate`] and the per-tick cap on new nodes. It
//! must not propose anything itself: grid sync in the manager does, in
//! batches, and asks here first.

use std::collections::BTreeSet;

use strew_coordinator::joins::{JoinGate, JoinPolicy};
use strew_coordinator::{Command, ManagerState, NodeId, NodeProfile};

use super::ManagerService;
use crate::consensus::types::MAX_BATCH;
use crate::sync::lock;

/// Nodes new to replicated state that one grid sync (one tick) proposes at
/// most: one raft entry's worth. The rest follow on later ticks.
pub const MAX_NEW_JOINS_PER_TICK: usize = MAX_BATCH;

/// What the gate allows this tick.
pub(super) struct Joinable {
    /// Nodes that may join now.
    pub ready: BTreeSet<NodeId>,
    /// Some node only waits for time to pass: look again next tick even if
    /// the view does not change.
    pub waiting: bool,
}

impl ManagerService {
    /// What an open grid asks of a node before its first `Join` from now on.
    pub fn set_join_policy(&self, policy: JoinPolicy) {
        *lock(&self.joins) = JoinGate::new(policy);
    }

    pub fn join_policy(&self) -> JoinPolicy {
        lock(&self.joins).policy()
    }

    /// Observes the view's online nodes and tells which may join now.
    pub(super) fn joinable(&self, profiles: &[NodeProfile], now: u64) -> Joinable {
        let nonces = self.overlay.work_nonces();
        let mut gate = lock(&self.joins);
        gate.observe(
            profiles
                .iter()
                .filter(|p| p.online)
                .map(|p| (p.node_id, nonces.get(&p.node_id).copied().flatten())),
            now,
        );
        Joinable {
            ready: profiles
                .iter()
                .map(|p| p.node_id)
                .filter(|n| gate.ready(n, now).is_ok())
                .collect(),
            waiting: gate.waiting(now) > 0,
        }
    }
}

/// Keeps the first [`MAX_NEW_JOINS_PER_TICK`] joins of nodes `state` does
/// not hold yet and drops the others; true when some were dropped.
pub(super) fn cap_new_joins(state: &ManagerState, commands: &mut Vec<Command>) -> bool {
    let mut new = 0usize;
    let before = commands.len();
    commands.retain(|c| match c {
        Command::Join { profile, .. } | Command::Admit { profile, .. }
            if !state.clients.contains_key(&profile.node_id) =>
        {
            new += 1;
            new <= MAX_NEW_JOINS_PER_TICK
        }
        _ => true,
    });
    commands.len() < before
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::GeoPoint;

    #[test]
    fn new_joins_are_capped_per_tick_and_others_pass() {
        let state = ManagerState::default();
        let at = 1;
        let mut commands: Vec<Command> = (0..(MAX_NEW_JOINS_PER_TICK + 50))
            .map(|i| {
                let mut id = [0u8; 32];
                id[..8].copy_from_slice(&(i as u64).to_le_bytes());
                Command::Join {
                    profile: NodeProfile::new(
                        NodeId(id),
                        GeoPoint { lat: 0.0, lon: 0.0 },
                        1 << 30,
                        at,
                    ),
                    token: None,
                    at,
                }
            })
            .collect();
        commands.push(Command::SetOnline {
            node: NodeId([9; 32]),
            online: false,
            at,
        });
        assert!(cap_new_joins(&state, &mut commands));
        assert_eq!(commands.len(), MAX_NEW_JOINS_PER_TICK + 1);
        assert!(matches!(commands.last(), Some(Command::SetOnline { .. })));
        let mut few = commands[..10].to_vec();
        assert!(!cap_new_joins(&state, &mut few));
        assert_eq!(few.len(), 10);
    }
}
