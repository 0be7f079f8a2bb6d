//! A snapshot's health as its source sees it: per stripe, whether every
//! packet's target is up (healthy), enough are for a restore (degraded), or
//! not (lost); the dashboard and `strew status --json` show it. The manager
//! sums it (`Standing`, with the targets this node sees down); this module
//! counts it from the sealed sequence itself, page by page, for a manager
//! that does not answer `Standing` (one older than this node). The rule of
//! what a stripe needs is the coordinator's ([`classify`]).

pub use strew_coordinator::manager::Health;
use strew_coordinator::manager::classify;
use strew_coordinator::seal::Sequence as SealedSequence;
use strew_coordinator::{NodeId, Redundancy};

/// Classifies every stripe of `seq`; `up` says whether a target is reachable.
pub fn health(
    seq: &SealedSequence,
    redundancy: Option<Redundancy>,
    up: impl Fn(&NodeId) -> bool,
) -> Health {
    let mut h = Health::default();
    for stripe in &seq.stripes {
        h.count(classify(&stripe.packets, redundancy, &up));
    }
    h
}
