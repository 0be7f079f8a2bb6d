//! The coordinator group: the sequence manager's state replicated with
//! openraft (issue 6).
//!
//! Coordinator-eligible nodes run one [`ConsensusMember`] each. The raft log
//! carries sequence-manager [`Command`](strew_coordinator::Command)s (and,
//! once, the group's sealing key); every member applies committed entries
//! to its own [`Manager`](strew_coordinator::Manager), so all members hold the
//! same `ManagerState` and any of them can take over as leader. The log and
//! vote are durable in redb ([`log_store`]); the applied state and its log
//! position are durable in the manager's own redb ([`state_machine`]);
//! snapshots are the whole state as CBOR. Messages are [`wire`] CBOR carried
//! by any [`network::RaftTransport`] (libp2p in the daemon: [`overlay`];
//! [`memory`] in tests).

pub mod bounds;
pub mod group;
pub mod log_store;
pub mod manager_db;
pub mod memory;
pub mod network;
pub mod overlay;
pub mod replica;
pub mod state_machine;
pub mod types;
pub mod wire;

pub use group::{
    Committed, ConsensusError, ConsensusMember, GroupConfig, GroupStatus, MAX_VOTERS, MemberStatus,
    Role, WriteError,
};
pub use network::{RaftTransport, TransportError};
pub use types::{Member, Outcome, Proposal, RaftId, StrewRaft, raft_id};
pub use wire::{RaftReply, RaftRequest};

#[cfg(test)]
mod tests;
