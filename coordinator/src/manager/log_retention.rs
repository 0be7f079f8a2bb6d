//! How much of the global backup log the manager keeps ([`LogRetention`],
//! part of the manager's configuration); the leader's trimming is
//! `Manager::decide_trim_log`.

use serde::{Deserialize, Serialize};

use crate::units::Millis;

/// How much of the global backup log (a metadata kind that only grows) the
/// manager keeps: events older than `max_age`, and all but the newest
/// `max_events`, are trimmed by the leader (the newest event always stays).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogRetention {
    pub max_age: Millis,
    pub max_events: u64,
}

impl Default for LogRetention {
    fn default() -> Self {
        LogRetention {
            max_age: 90 * 24 * 60 * 60 * 1000,
            max_events: 100_000,
        }
    }
}
