//! strew's sequence manager as a sans-IO library.
//!
//! Placement under geographic distance constraints, sequences and their
//! sealing, metadata records, dedup, quotas and subscriptions, repair policy.
//! No networking, no async runtime, no wall clock: time and randomness are
//! passed in, so the node and the simulator drive identical code.

pub mod ids;

pub use ids::{DataId, IdError, NodeId, PacketId};
