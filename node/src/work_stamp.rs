//! This node's proof-of-work stamp (`strew_coordinator::work`), which an
//! open grid's leader asks for before it takes the node into replicated
//! state, and the join policy's settings.
//!
//! Owns the `work-stamp` file in the data dir (`<bits> <nonce>`, computed
//! once per identity and kept) and the environment knobs tests use to make
//! joining quick (`STREW_JOIN_WORK_BITS`, `STREW_JOIN_SEEN_SECS`). It must
//! not judge other nodes' stamps: the leader's join gate does.

use std::path::{Path, PathBuf};

use strew_coordinator::NodeId;
use strew_coordinator::joins::JoinPolicy;
use strew_coordinator::work;

/// The stamp's file inside the data dir.
pub const WORK_STAMP_FILE: &str = "work-stamp";
/// Zero bits of the stamps this node makes and (as leader) asks for.
pub const ENV_WORK_BITS: &str = "STREW_JOIN_WORK_BITS";
/// Seconds a node must have been in the leader's view before it joins.
pub const ENV_MIN_SEEN: &str = "STREW_JOIN_SEEN_SECS";

/// Why the stamp or the policy could not be had.
#[derive(Debug, thiserror::Error)]
pub enum WorkStampError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{name}={value:?} is not a whole number (at most {max})")]
    BadSetting {
        name: &'static str,
        value: String,
        max: u64,
    },
    #[error("no stamp of {0} bits exists")]
    Impossible(u32),
}

/// The join policy from the environment (defaults otherwise).
pub fn join_policy_from_env() -> Result<JoinPolicy, WorkStampError> {
    let mut policy = JoinPolicy::default();
    if let Some(bits) = setting(ENV_WORK_BITS, u64::from(work::MAX_WORK_BITS))? {
        policy.work_bits = u32::try_from(bits).unwrap_or(work::MAX_WORK_BITS);
    }
    if let Some(secs) = setting(ENV_MIN_SEEN, 7 * 24 * 3600)? {
        policy.min_seen_ms = secs.saturating_mul(1000);
    }
    Ok(policy)
}

fn setting(name: &'static str, max: u64) -> Result<Option<u64>, WorkStampError> {
    let Ok(value) = std::env::var(name) else {
        return Ok(None);
    };
    match value.trim().parse::<u64>() {
        Ok(n) if n <= max => Ok(Some(n)),
        _ => Err(WorkStampError::BadSetting { name, value, max }),
    }
}

/// This node's stamp of at least `bits` zero bits: the one kept in the
/// data dir if it still passes, otherwise a new one (found and kept).
pub fn load_or_compute(data_dir: &Path, node: &NodeId, bits: u32) -> Result<u64, WorkStampError> {
    let path = data_dir.join(WORK_STAMP_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let kept = text
                .split_whitespace()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(nonce) = kept
                && work::check(node, nonce, bits)
            {
                return Ok(nonce);
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(WorkStampError::Read { path, source }),
    }
    let nonce = work::find(node, bits, 0).ok_or(WorkStampError::Impossible(bits))?;
    let found = work::zero_bits(node, nonce);
    std::fs::write(&path, format!("{found} {nonce}\n"))
        .map_err(|source| WorkStampError::Write { path, source })?;
    Ok(nonce)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stamp_is_computed_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeId([9; 32]);
        let nonce = load_or_compute(dir.path(), &node, 10).unwrap();
        assert!(work::check(&node, nonce, 10));
        let text = std::fs::read_to_string(dir.path().join(WORK_STAMP_FILE)).unwrap();
        assert!(text.ends_with(&format!(" {nonce}\n")), "{text:?}");
        // A kept stamp is reused; a damaged one is replaced.
        std::fs::write(dir.path().join(WORK_STAMP_FILE), format!("10 {nonce}\n")).unwrap();
        assert_eq!(load_or_compute(dir.path(), &node, 10).unwrap(), nonce);
        std::fs::write(dir.path().join(WORK_STAMP_FILE), "garbage").unwrap();
        assert_eq!(load_or_compute(dir.path(), &node, 10).unwrap(), nonce);
        // Asking for more bits than the kept stamp has makes a new one.
        let harder = load_or_compute(dir.path(), &node, 14).unwrap();
        assert!(work::check(&node, harder, 14));
    }
}
