//! One member of the coordinator group: openraft started over the durable
//! log, the manager's state machine and a transport, with the operations the
//! daemon needs.
//!
//! Owns [`GroupConfig`] (timings, snapshot cadence, voter count),
//! [`ConsensusMember`] (start, form a group of one, propose commands and the
//! group key, admit and remove members, serve incoming RPCs, report status)
//! and the errors a proposer sees ([`WriteError`]). Deciding *when* to admit
//! or replace a member, and redirecting clients to the leader, belong to the
//! daemon.

// openraft's error types are large and its traits return them by value.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, LogId, Raft, ServerState, SnapshotPolicy};
use serde::Serialize;
use strew_coordinator::{Command, GroupKey, NodeId};

use super::log_store::{LogStore, LogStoreError};
use super::network::{NetworkFactory, RaftTransport, serve};
use super::replica::ManagerReplica;
use super::state_machine::{StateMachine, StateMachineError};
use super::types::{
    IdCollision, Member, Outcome, Proposal, RaftId, StrewRaft, check_no_collision, raft_id,
};
use super::wire::{RaftReply, RaftRequest};

/// The most voters a group has; further eligible members stay learners.
pub const MAX_VOTERS: usize = 5;

/// Entries one append-entries message carries at most (see `raft_config`).
pub const MAX_PAYLOAD_ENTRIES: u64 = 3;
/// Bytes of state one install-snapshot message carries at most.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// Timings and sizes of the group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupConfig {
    /// Names the group; members of different groups refuse each other.
    pub cluster: String,
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_min: Duration,
    pub election_max: Duration,
    /// How long a proposer waits for its entry to commit before giving up
    /// (it may still commit later: proposals must be safe to retry).
    pub write_timeout: Duration,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot (so short lags catch up without one).
    pub keep_behind_snapshot: u64,
    /// Voters wanted (1 to [`MAX_VOTERS`]; 3 survives one loss).
    pub voters: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            cluster: "strew-coordinators".into(),
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            write_timeout: Duration::from_secs(10),
            snapshot_every: 5000,
            keep_behind_snapshot: 1000,
            voters: 3,
        }
    }
}

impl GroupConfig {
    fn raft_config(&self) -> Result<Config, ConsensusError> {
        if self.voters == 0 || self.voters > MAX_VOTERS {
            return Err(ConsensusError::Config(format!(
                "voters must be 1 to {MAX_VOTERS}, not {}",
                self.voters
            )));
        }
        let config = Config {
            cluster_name: self.cluster.clone(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_behind_snapshot,
            // Chunks stay far below the wire limit; each may take a while
            // on a slow link (append-entries get one heartbeat interval).
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES as u64,
            // An append-entries carries at most this many entries: with
            // entries of at most `MAX_ENTRY_BYTES` (1 MiB) that is 3 MiB
            // plus framing, under the 4 MiB raft message bound
            // (`wire::MAX_RAFT_MESSAGE`), which a loopback or LAN link
            // moves well within the one heartbeat interval openraft gives an
            // append.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            install_snapshot_timeout: (self.election_max.as_millis() as u64).max(1000),
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| ConsensusError::Config(e.to_string()))
    }
}

/// Starting or running the group failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    #[error("consensus configuration: {0}")]
    Config(String),
    #[error(transparent)]
    LogStore(#[from] LogStoreError),
    #[error(transparent)]
    StateMachine(#[from] StateMachineError),
    #[error("raft stopped: {0}")]
    Fatal(String),
    #[error("forming the group failed: {0}")]
    Initialize(String),
}

/// Why a proposal did not commit (or is not known to have).
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// This member is not the leader; retry there (if one is known).
    #[error("not the leader; the leader is {}", leader.as_ref().map_or("unknown".to_string(), |m| m.to_string()))]
    NotLeader { leader: Option<Member> },
    /// No quorum acknowledged the entry in time: the group has lost a
    /// majority, or is electing. The entry may still commit later.
    #[error("no quorum of the coordinator group acknowledged the write within {0:?}")]
    NoQuorum(Duration),
    #[error(transparent)]
    Collision(#[from] IdCollision),
    #[error("membership change refused: {0}")]
    Membership(String),
    #[error("raft stopped: {0}")]
    Fatal(String),
    /// The entry would exceed the raft bound: it was not proposed.
    #[error(
        "an entry of {bytes} bytes exceeds the raft entry limit of {limit} bytes; not proposed"
    )]
    EntryTooLarge { bytes: usize, limit: usize },
}

impl WriteError {
    fn from_raft(e: RaftError<RaftId, ClientWriteError<RaftId, Member>>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => WriteError::NotLeader {
                leader: f.leader_node,
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
                WriteError::Membership(c.to_string())
            }
            RaftError::Fatal(f) => WriteError::Fatal(f.to_string()),
        }
    }
}

/// A committed and applied proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub log_id: LogId<RaftId>,
    pub outcome: Outcome,
}

/// A member's role in the group as `strew status` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Voter,
    Learner,
}

/// One member in [`GroupStatus`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemberStatus {
    pub raft_id: RaftId,
    pub node_id: String,
    pub addr: String,
    pub role: Role,
    /// Highest log index known replicated to it (leader only).
    pub matched: Option<u64>,
    /// Entries it is behind the leader's last (leader only).
    pub lag: Option<u64>,
}

/// The group as this member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GroupStatus {
    pub me: RaftId,
    /// "Leader", "Follower", "Candidate" or "Learner".
    pub state: String,
    pub term: u64,
    pub leader: Option<RaftId>,
    pub last_log: Option<u64>,
    pub last_applied: Option<u64>,
    pub members: Vec<MemberStatus>,
}

/// This process's member of the coordinator group.
pub struct ConsensusMember {
    id: RaftId,
    raft: Raft<StrewRaft>,
    replica: Arc<ManagerReplica>,
    config: GroupConfig,
}

impl ConsensusMember {
    /// Starts raft for `node`: its log in the redb file at `log_path`, its
    /// state machine over `replica` (whose own redb holds the applied state),
    /// reaching others through `transport`. A member restarted on the same
    /// files resumes where it stopped.
    pub async fn start<T: RaftTransport>(
        node: &NodeId,
        log_path: &Path,
        replica: Arc<ManagerReplica>,
        transport: Arc<T>,
        config: GroupConfig,
    ) -> Result<ConsensusMember, ConsensusError> {
        let id = raft_id(node);
        let raft_config = Arc::new(config.raft_config()?);
        let log = LogStore::open(log_path)?;
        let state_machine = StateMachine::new(replica.clone());
        let network = NetworkFactory::new(id, transport);
        let raft = Raft::new(id, raft_config, network, log, state_machine)
            .await
            .map_err(|e| ConsensusError::Fatal(e.to_string()))?;
        Ok(ConsensusMember {
            id,
            raft,
            replica,
            config,
        })
    }

    pub fn id(&self) -> RaftId {
        self.id
    }

    /// The openraft handle (metrics, triggers).
    pub fn raft(&self) -> &Raft<StrewRaft> {
        &self.raft
    }

    /// The manager as this member applied the log (read it; only the state
    /// machine changes it).
    pub fn replica(&self) -> &Arc<ManagerReplica> {
        &self.replica
    }

    /// Forms a group of one with this member as its voter, unless this
    /// member already belongs to a group (then nothing happens).
    pub async fn form_alone(&self, me: Member) -> Result<(), ConsensusError> {
        let initialized = self
            .raft
            .is_initialized()
            .await
            .map_err(|e| ConsensusError::Fatal(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        let members = BTreeMap::from([(self.id, me)]);
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ConsensusError::Initialize(e.to_string()))
    }

    /// Proposes an entry and waits until it is committed and applied here.
    pub async fn propose(&self, proposal: Proposal) -> Result<Committed, WriteError> {
        super::bounds::check(&proposal)?;
        let write = self.raft.client_write(proposal);
        match tokio::time::timeout(self.config.write_timeout, write).await {
            Err(_) => Err(WriteError::NoQuorum(self.config.write_timeout)),
            Ok(Err(e)) => Err(WriteError::from_raft(e)),
            Ok(Ok(resp)) => Ok(Committed {
                log_id: resp.log_id,
                outcome: resp.data,
            }),
        }
    }

    /// The leader as this member last heard of it, with its member record
    /// (where to redirect clients); `None` during an election.
    pub fn leader(&self) -> Option<(RaftId, Member)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let member = metrics
            .membership_config
            .membership()
            .get_node(&leader)?
            .clone();
        Some((leader, member))
    }

    /// Whether this member leads now (as far as it knows: a partitioned old
    /// leader believes so until it hears of a newer term; use
    /// [`read_barrier`](Self::read_barrier) before answering reads).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Confirms with a quorum that this member still leads and waits until
    /// everything committed before now is applied here: after `Ok`, reading
    /// the manager's state is linearizable. Fails with `NotLeader` on a
    /// follower and `NoQuorum` when a majority does not answer in time.
    pub async fn read_barrier(&self) -> Result<(), WriteError> {
        let check = self.raft.ensure_linearizable();
        match tokio::time::timeout(self.config.write_timeout, check).await {
            Err(_) => Err(WriteError::NoQuorum(self.config.write_timeout)),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Err(WriteError::NotLeader {
                    leader: f.leader_node,
                })
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(WriteError::NoQuorum(self.config.write_timeout))
            }
            Ok(Err(RaftError::Fatal(f))) => Err(WriteError::Fatal(f.to_string())),
        }
    }

    /// Proposes a sequence-manager command.
    pub async fn execute(&self, command: Command) -> Result<Committed, WriteError> {
        self.propose(Proposal::Manager(command)).await
    }

    /// Proposes independent commands as one entry (at most
    /// [`MAX_BATCH`](super::types::MAX_BATCH); the caller splits longer lists).
    pub async fn execute_batch(&self, commands: Vec<Command>) -> Result<Committed, WriteError> {
        self.propose(Proposal::Batch(commands)).await
    }

    /// Whether a group key has been committed (as applied on this member).
    pub fn has_group_key(&self) -> bool {
        self.replica.has_group_key()
    }

    /// Makes sure the group has a sealing key: proposes `candidate` unless
    /// one is committed already. The first committed key wins on every
    /// member; a later proposal is answered `Rejected` and changes nothing.
    pub async fn ensure_group_key(&self, candidate: GroupKey) -> Result<(), WriteError> {
        if self.has_group_key() {
            return Ok(());
        }
        self.propose(Proposal::SetGroupKey(candidate))
            .await
            .map(|_| ())
    }

    /// Admits an eligible node (leader only): it becomes a learner and, once
    /// it has caught up (within `write_timeout`), is promoted to voter while
    /// the group has fewer than the configured voters. Returns its role: a
    /// learner that has not caught up yet is promoted by a later call.
    /// Re-admitting a voter changes nothing.
    pub async fn admit(&self, node: &NodeId, addr: impl Into<String>) -> Result<Role, WriteError> {
        let id = raft_id(node);
        let membership = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .clone();
        check_no_collision(membership.nodes(), node)?;
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        if voters.contains(&id) {
            return Ok(Role::Voter);
        }
        let added = self
            .raft
            .add_learner(id, Member::new(node, addr), false)
            .await
            .map_err(WriteError::from_raft)?;
        if voters.len() >= self.config.voters {
            return Ok(Role::Learner);
        }
        // openraft's blocking add_learner would wait forever for a dead node.
        let upto = added.log_id.index;
        let caught_up = self
            .raft
            .wait(Some(self.config.write_timeout))
            .metrics(
                |m| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .is_some_and(|matched| matched.index >= upto)
                },
                "new learner catches up",
            )
            .await
            .is_ok();
        if !caught_up {
            return Ok(Role::Learner);
        }
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(WriteError::from_raft)?;
        Ok(Role::Voter)
    }

    /// Removes a member (leader only), e.g. a voter gone past its grace
    /// period; the caller then admits a replacement.
    pub async fn remove(&self, node: &NodeId) -> Result<(), WriteError> {
        let id = raft_id(node);
        let ids = BTreeSet::from([id]);
        let voters: BTreeSet<RaftId> = self
            .raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if voters.contains(&id) {
            self.raft
                .change_membership(ChangeMembers::RemoveVoters(ids.clone()), false)
                .await
                .map_err(WriteError::from_raft)?;
        } else {
            self.raft
                .change_membership(ChangeMembers::RemoveNodes(ids), false)
                .await
                .map_err(WriteError::from_raft)?;
        }
        Ok(())
    }

    /// Hands a request received from another member to raft, without
    /// checking who sent it (see [`serve_from`](Self::serve_from)).
    pub async fn serve(&self, request: RaftRequest) -> RaftReply {
        serve(&self.raft, self.id, request).await
    }

    /// Whether a request that arrived from the authenticated peer `sender`
    /// may be handed to raft: its `from` must be the sender's own raft id,
    /// and once this member knows a membership, the sender must be in it
    /// under the same strew node id (a pristine member, not yet told its
    /// group, accepts the leader that is admitting it).
    pub fn accepts(&self, sender: &NodeId, request: &RaftRequest) -> bool {
        if request.from != raft_id(sender) {
            return false;
        }
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        if membership.nodes().next().is_none() {
            return true;
        }
        membership
            .get_node(&request.from)
            .is_some_and(|m| m.node_id == sender.to_string())
    }

    /// [`serve`](Self::serve) for a request from the authenticated peer
    /// `sender`: refused unless [`accepts`](Self::accepts) says yes. The
    /// transport must call this one, so no node outside the group can vote,
    /// append entries or install state.
    pub async fn serve_from(&self, sender: &NodeId, request: RaftRequest) -> RaftReply {
        if !self.accepts(sender, &request) {
            return RaftReply::Refused(format!(
                "{sender} is not a member of this coordinator group"
            ));
        }
        self.serve(request).await
    }

    /// The group as this member sees it now.
    pub fn status(&self) -> GroupStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, member)| {
                let matched = m
                    .replication
                    .as_ref()
                    .and_then(|r| r.get(id).cloned())
                    .map(|log_id| log_id.map_or(0, |l| l.index));
                let lag = match (m.state == ServerState::Leader, m.last_log_index) {
                    (true, Some(_)) if *id == self.id => Some(0),
                    (true, Some(last)) => matched.map(|got| last.saturating_sub(got)),
                    _ => None,
                };
                MemberStatus {
                    raft_id: *id,
                    node_id: member.node_id.clone(),
                    addr: member.addr.clone(),
                    role: if voters.contains(id) {
                        Role::Voter
                    } else {
                        Role::Learner
                    },
                    matched,
                    lag,
                }
            })
            .collect();
        GroupStatus {
            me: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader: m.current_leader,
            last_log: m.last_log_index,
            last_applied: m.last_applied.map(|l| l.index),
            members,
        }
    }

    /// Stops raft (the log and state stay on disk for a restart).
    pub async fn shutdown(&self) -> Result<(), ConsensusError> {
        self.raft
            .shutdown()
            .await
            .map_err(|e| ConsensusError::Fatal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_voters_are_bounded() {
        let config = GroupConfig::default()
            .raft_config()
            .expect("default is valid");
        assert!(config.heartbeat_interval < config.election_timeout_min);
        for voters in [0, MAX_VOTERS + 1] {
            let bad = GroupConfig {
                voters,
                ..GroupConfig::default()
            };
            assert!(matches!(bad.raft_config(), Err(ConsensusError::Config(_))));
        }
        let inverted = GroupConfig {
            election_min: Duration::from_millis(100),
            heartbeat: Duration::from_millis(500),
            ..GroupConfig::default()
        };
        assert!(inverted.raft_config().is_err());
    }
}
