//! The consensus group's openraft type configuration and the values it
//! carries.
//!
//! Owns [`StrewRaft`] (the `RaftTypeConfig`), the mapping from a strew
//! [`NodeId`] to openraft's `u64` member id ([`raft_id`]), the member record
//! ([`Member`]), what a log entry proposes ([`Proposal`]) and what applying it
//! answers ([`Outcome`]). Nothing here does I/O.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};
use strew_coordinator::{Applied, ApplyError, Command, GroupKey, IdError, NodeId, TrustCommand};

openraft::declare_raft_types!(
    /// The strew coordinator group's raft: members are `u64`s derived from
    /// strew node ids, entries propose [`Proposal`]s, snapshots are CBOR bytes.
    pub StrewRaft:
        D = Proposal,
        R = Outcome,
        NodeId = RaftId,
        Node = Member,
        Entry = openraft::Entry<StrewRaft>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A member's id inside openraft: the first 8 bytes (big endian) of its strew
/// node id (an ed25519 public key). Two eligible nodes sharing a prefix is a
/// 2^-64 event per pair; [`check_no_collision`] refuses it at join time
/// rather than letting one member shadow another.
pub type RaftId = u64;

/// The openraft id of a strew node.
pub fn raft_id(node: &NodeId) -> RaftId {
    let b = node.as_bytes();
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// A member of the group as the membership config records it: its strew node
/// id (PeerId text, as everywhere in strew) and an address to reach it
/// (multiaddr text; the transport may ignore it and route by node id).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub addr: String,
}

impl Member {
    pub fn new(node: &NodeId, addr: impl Into<String>) -> Self {
        Member {
            node_id: node.to_string(),
            addr: addr.into(),
        }
    }

    /// The strew node id this member record names.
    pub fn strew_id(&self) -> Result<NodeId, IdError> {
        self.node_id.parse()
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

/// Two different strew nodes map to the same openraft id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("nodes {existing} and {joining} share raft id {id:016x}; {joining} cannot join the group")]
pub struct IdCollision {
    pub id: RaftId,
    pub existing: String,
    pub joining: String,
}

/// Refuses `joining` if a different member already holds its raft id.
pub fn check_no_collision<'a>(
    members: impl IntoIterator<Item = (&'a RaftId, &'a Member)>,
    joining: &NodeId,
) -> Result<(), IdCollision> {
    let id = raft_id(joining);
    let text = joining.to_string();
    for (existing_id, member) in members {
        if *existing_id == id && member.node_id != text {
            return Err(IdCollision {
                id,
                existing: member.node_id.clone(),
                joining: text,
            });
        }
    }
    Ok(())
}

/// Most commands one [`Proposal::Batch`] carries (a join is well under 1 KiB,
/// so a batch stays far below the 1 MiB a raft entry may take).
pub const MAX_BATCH: usize = 256;

/// What one normal log entry proposes.
// Nearly every entry is a command: boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub enum Proposal {
    /// A sequence-manager command, applied with `Manager::apply`.
    Manager(Command),
    /// Independent commands decided in one tick (node records from the
    /// grid view), applied in order; one that does not apply does not stop
    /// the others. At most [`MAX_BATCH`] commands.
    Batch(Vec<Command>),
    /// The group's key for sequences at rest. The first one committed wins;
    /// later proposals are rejected, so every member seals with the same key.
    SetGroupKey(GroupKey),
    /// A change of the grid's trust root or its certified coordinators,
    /// applied to the replicated `TrustState` (every grid-key signature is
    /// checked again on every member).
    Trust(TrustCommand),
}

impl fmt::Debug for Proposal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Commands can be large (sealed sequences): name the kind only.
            Proposal::Manager(command) => write!(f, "Manager({})", command_kind(command)),
            Proposal::Batch(commands) => write!(f, "Batch({} commands)", commands.len()),
            Proposal::SetGroupKey(_) => f.write_str("SetGroupKey(..)"),
            Proposal::Trust(TrustCommand::Found { root, .. }) => {
                write!(f, "Trust(Found {})", root.grid)
            }
            Proposal::Trust(TrustCommand::Certify(c)) => write!(f, "Trust(Certify {})", c.node),
            Proposal::Trust(TrustCommand::Revoke(r)) => write!(f, "Trust(Revoke {})", r.node),
            Proposal::Trust(TrustCommand::Redeem { node, .. }) => write!(f, "Trust(Redeem {node})"),
            Proposal::Trust(TrustCommand::Renew(r)) => write!(f, "Trust(Renew {})", r.node),
        }
    }
}

/// The variant name of a command, for logs.
pub fn command_kind(command: &Command) -> &'static str {
    command.kind()
}

/// What applying one log entry answered. Every member computes the same
/// outcome; the leader hands it to the client that proposed the entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The command applied (membership and blank entries answer `Applied(Done)`).
    Applied(Applied),
    /// The command did not apply; the state is unchanged. Says why.
    Rejected(ApplyError),
}
