//! The consensus group's messages as they travel between members.
//!
//! Owns [`RaftRequest`] / [`RaftReply`] (one request-response exchange per
//! raft RPC: append entries, vote, one snapshot chunk), their CBOR encoding
//! and the size limit every carrier enforces ([`MAX_RAFT_MESSAGE`]).
//! [`decode_request`] and [`decode_reply`] refuse oversized input before
//! parsing and never panic on garbage. A transport (libp2p's
//! `/strew/raft/4`, or the in-memory router of the tests) carries the bytes;
//! this module does not send anything.

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};

use super::types::{RaftId, StrewRaft};

/// Largest encoded request or reply, in bytes (SPEC R10: no raft message
/// over 4 MiB): an append-entries of `MAX_PAYLOAD_ENTRIES` entries of at
/// most 1 MiB each, or one snapshot chunk, with framing. Larger batches are
/// split by openraft (the sender answers `PayloadTooLarge`).
pub const MAX_RAFT_MESSAGE: usize = 4 << 20;

/// One raft RPC, addressed from one member to another.
#[derive(Clone, Serialize, Deserialize)]
pub struct RaftRequest {
    /// The sender's raft id.
    pub from: RaftId,
    /// The raft id the sender means to reach; a receiver with another id refuses.
    pub to: RaftId,
    pub rpc: RaftRpc,
}

/// The raft RPCs.
#[derive(Clone, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)]
pub enum RaftRpc {
    AppendEntries(AppendEntriesRequest<StrewRaft>),
    Vote(VoteRequest<RaftId>),
    InstallSnapshot(InstallSnapshotRequest<StrewRaft>),
}

impl RaftRpc {
    /// The RPC's name, for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            RaftRpc::AppendEntries(_) => "append-entries",
            RaftRpc::Vote(_) => "vote",
            RaftRpc::InstallSnapshot(_) => "install-snapshot",
        }
    }
}

/// The receiver's answer: openraft's own result, or why it did not handle it.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    AppendEntries(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    ),
    /// The receiver is not the addressed member, or runs no consensus group.
    Refused(String),
}

/// A message that cannot be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("raft message of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: usize, limit: usize },
    #[error("raft message does not decode: {0}")]
    Malformed(String),
    #[error("raft message does not encode: {0}")]
    Encode(String),
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| WireError::Encode(e.to_string()))?;
    if out.len() > MAX_RAFT_MESSAGE {
        return Err(WireError::TooLarge {
            size: out.len(),
            limit: MAX_RAFT_MESSAGE,
        });
    }
    Ok(out)
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    if bytes.len() > MAX_RAFT_MESSAGE {
        return Err(WireError::TooLarge {
            size: bytes.len(),
            limit: MAX_RAFT_MESSAGE,
        });
    }
    ciborium::from_reader(bytes).map_err(|e| WireError::Malformed(e.to_string()))
}

/// CBOR bytes of a request; `TooLarge` past [`MAX_RAFT_MESSAGE`].
pub fn encode_request(request: &RaftRequest) -> Result<Vec<u8>, WireError> {
    encode(request)
}

/// A request from untrusted bytes.
pub fn decode_request(bytes: &[u8]) -> Result<RaftRequest, WireError> {
    decode(bytes)
}

/// CBOR bytes of a reply; `TooLarge` past [`MAX_RAFT_MESSAGE`].
pub fn encode_reply(reply: &RaftReply) -> Result<Vec<u8>, WireError> {
    encode(reply)
}

/// A reply from untrusted bytes.
pub fn decode_reply(bytes: &[u8]) -> Result<RaftReply, WireError> {
    decode(bytes)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use strew_coordinator::{Command, GridMode};

    use super::*;
    use crate::consensus::types::Proposal;

    fn append(entries: usize) -> RaftRequest {
        let leader = CommittedLeaderId::new(3, 1);
        RaftRequest {
            from: 1,
            to: 2,
            rpc: RaftRpc::AppendEntries(AppendEntriesRequest {
                vote: Vote::new_committed(3, 1),
                prev_log_id: Some(LogId::new(leader, 4)),
                entries: (0..entries)
                    .map(|i| Entry {
                        log_id: LogId::new(leader, 5 + i as u64),
                        payload: EntryPayload::Normal(Proposal::Manager(Command::SetGridMode {
                            mode: GridMode::Closed {
                                token_issuers: Vec::new(),
                            },
                        })),
                    })
                    .collect(),
                leader_commit: Some(LogId::new(leader, 4)),
            }),
        }
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let bytes = encode_request(&append(3)).unwrap();
        let back = decode_request(&bytes).unwrap();
        assert_eq!((back.from, back.to), (1, 2));
        let RaftRpc::AppendEntries(req) = back.rpc else {
            panic!("decoded as another rpc");
        };
        assert_eq!(req.entries.len(), 3);
        assert_eq!(req.entries[2].log_id.index, 7);
        let reply = RaftReply::Vote(Ok(VoteResponse {
            vote: Vote::new(4, 2),
            vote_granted: true,
            last_log_id: None,
        }));
        let back = decode_reply(&encode_reply(&reply).unwrap()).unwrap();
        assert!(
            matches!(back, RaftReply::Vote(Ok(v)) if v.vote_granted && v.vote == Vote::new(4, 2))
        );
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let huge = vec![0u8; MAX_RAFT_MESSAGE + 1];
        assert!(matches!(
            decode_request(&huge),
            Err(WireError::TooLarge { .. })
        ));
        assert!(matches!(
            decode_reply(&huge),
            Err(WireError::TooLarge { .. })
        ));
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let bytes = encode_request(&append(2)).unwrap();
        for cut in 0..bytes.len() {
            assert!(
                decode_request(&bytes[..cut]).is_err(),
                "prefix {cut} decoded"
            );
        }
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let mut mutated = bytes.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..mutated.len());
                mutated[at] = rng.random();
            }
            let _ = decode_request(&mutated);
            let len = rng.random_range(0..64);
            let noise: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let _ = decode_reply(&noise);
        }
    }
}
