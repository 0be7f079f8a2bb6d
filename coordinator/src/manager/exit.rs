//! Graceful exit (`strew leave`): how far a leaving node's packets still are
//! from being rebuilt elsewhere.
//!
//! The exit itself is the replicated `SetExiting` command; a leaving target
//! leaves the placement view and the repair checker counts its packets as
//! gone, so the ordinary repairer moves them (reading from the other targets
//! of each stripe). This module only reports progress; it must not decide
//! where packets go or do I/O.

use serde::{Deserialize, Serialize};

use crate::ids::NodeId;
use crate::manager::Manager;
use crate::units::Millis;

/// A node's exit as the manager sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveStatus {
    /// When the node started leaving (`None`: it is not leaving).
    pub exiting_since: Option<Millis>,
    /// Packets the manager still records on the node.
    pub packets_remaining: u64,
    /// Their bytes.
    pub bytes_remaining: u64,
}

impl LeaveStatus {
    /// Leaving, and nothing left to move: the node may stop.
    pub fn done(&self) -> bool {
        self.exiting_since.is_some() && self.packets_remaining == 0
    }
}

impl Manager {
    /// How `node`'s exit stands.
    pub fn leave_status(&self, node: &NodeId) -> LeaveStatus {
        self.state()
            .targets
            .get(node)
            .map(|r| LeaveStatus {
                exiting_since: r.exiting_since,
                packets_remaining: r.packets.len() as u64,
                bytes_remaining: r.bytes,
            })
            .unwrap_or_default()
    }
}
