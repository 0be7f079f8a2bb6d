//! openraft's network over a small transport trait, and the receiving side.
//!
//! Owns [`RaftTransport`] (send one [`RaftRequest`] to a member, get its
//! [`RaftReply`] or learn it is unreachable), [`NetworkFactory`] /
//! [`MemberLink`] (openraft's `RaftNetworkFactory` / `RaftNetwork` on top of
//! any transport: deadlines, error mapping, nothing connects eagerly) and
//! [`serve`] (hand a received request to the local raft). The libp2p carrier
//! implements [`RaftTransport`] in the overlay; tests use
//! [`super::memory::MemoryRouter`].

// openraft's error types are large and its traits return them by value.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, RPCTypes, Raft, RaftNetwork, RaftNetworkFactory};

use super::types::{Member, RaftId, StrewRaft};
use super::wire::{RaftReply, RaftRequest, RaftRpc};

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The member cannot be reached now (down, partitioned, unknown address);
    /// openraft backs off before trying it again.
    #[error("member unreachable: {0}")]
    Unreachable(String),
    /// The encoded request exceeds the wire limit.
    #[error("raft request of {size} bytes is too large to send")]
    TooLarge { size: usize },
}

/// Carries raft requests to other members. Implementations must not retry
/// on their own for longer than the caller waits (the caller applies
/// openraft's deadline) and should fail fast for peers known to be down.
pub trait RaftTransport: Send + Sync + 'static {
    fn send(
        &self,
        target: RaftId,
        member: &Member,
        request: RaftRequest,
    ) -> impl Future<Output = Result<RaftReply, TransportError>> + Send;
}

/// Creates one [`MemberLink`] per member openraft replicates to.
pub struct NetworkFactory<T> {
    me: RaftId,
    transport: Arc<T>,
}

impl<T: RaftTransport> NetworkFactory<T> {
    pub fn new(me: RaftId, transport: Arc<T>) -> Self {
        NetworkFactory { me, transport }
    }
}

impl<T: RaftTransport> RaftNetworkFactory<StrewRaft> for NetworkFactory<T> {
    type Network = MemberLink<T>;

    async fn new_client(&mut self, target: RaftId, node: &Member) -> MemberLink<T> {
        // No connection here: the transport dials on the first send.
        MemberLink {
            me: self.me,
            target,
            member: node.clone(),
            transport: self.transport.clone(),
        }
    }
}

/// openraft's view of one other member.
pub struct MemberLink<T> {
    me: RaftId,
    target: RaftId,
    member: Member,
    transport: Arc<T>,
}

type RpcResult<R, E> = Result<R, RPCError<RaftId, Member, RaftError<RaftId, E>>>;

impl<T: RaftTransport> MemberLink<T> {
    /// Sends `rpc` within `deadline`; transport failures become openraft's
    /// retry signals (unreachable: back off; timeout; too large: split).
    async fn call<E: std::error::Error>(
        &self,
        action: RPCTypes,
        rpc: RaftRpc,
        deadline: Duration,
        entries: usize,
    ) -> Result<RaftReply, RPCError<RaftId, Member, RaftError<RaftId, E>>> {
        let request = RaftRequest {
            from: self.me,
            to: self.target,
            rpc,
        };
        let sent = self.transport.send(self.target, &self.member, request);
        match tokio::time::timeout(deadline, sent).await {
            Err(_) => Err(RPCError::Timeout(Timeout {
                action,
                id: self.me,
                target: self.target,
                timeout: deadline,
            })),
            Ok(Err(TransportError::Unreachable(why))) => Err(RPCError::Unreachable(
                Unreachable::new(&AnyError::error(why)),
            )),
            Ok(Err(TransportError::TooLarge { size })) => {
                if action == RPCTypes::AppendEntries && entries > 1 {
                    Err(RPCError::PayloadTooLarge(
                        PayloadTooLarge::new_entries_hint((entries / 2) as u64),
                    ))
                } else {
                    Err(RPCError::Network(NetworkError::new(&AnyError::error(
                        format!("{action} of {size} bytes exceeds the raft message limit"),
                    ))))
                }
            }
            Ok(Ok(RaftReply::Refused(why))) => Err(RPCError::Unreachable(Unreachable::new(
                &AnyError::error(format!("member refused: {why}")),
            ))),
            Ok(Ok(reply)) => Ok(reply),
        }
    }

    fn mismatch<E: std::error::Error>(&self, reply: &RaftReply) -> RPCError<RaftId, Member, E> {
        RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "member {} answered with the wrong reply kind: {reply:?}",
            self.target
        ))))
    }

    fn remote<E: std::error::Error>(
        &self,
        e: RaftError<RaftId, E>,
    ) -> RPCError<RaftId, Member, RaftError<RaftId, E>> {
        RPCError::RemoteError(RemoteError::new_with_node(
            self.target,
            self.member.clone(),
            e,
        ))
    }
}

impl<T: RaftTransport> RaftNetwork<StrewRaft> for MemberLink<T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<StrewRaft>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftId>, openraft::error::Infallible> {
        let entries = rpc.entries.len();
        let reply = self
            .call(
                RPCTypes::AppendEntries,
                RaftRpc::AppendEntries(rpc),
                option.hard_ttl(),
                entries,
            )
            .await?;
        match reply {
            RaftReply::AppendEntries(Ok(resp)) => Ok(resp),
            RaftReply::AppendEntries(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatch(&other)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<StrewRaft>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
        let reply = self
            .call(
                RPCTypes::InstallSnapshot,
                RaftRpc::InstallSnapshot(rpc),
                option.hard_ttl(),
                0,
            )
            .await?;
        match reply {
            RaftReply::InstallSnapshot(Ok(resp)) => Ok(resp),
            RaftReply::InstallSnapshot(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatch(&other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftId>, openraft::error::Infallible> {
        let reply = self
            .call(RPCTypes::Vote, RaftRpc::Vote(rpc), option.hard_ttl(), 0)
            .await?;
        match reply {
            RaftReply::Vote(Ok(resp)) => Ok(resp),
            RaftReply::Vote(Err(e)) => Err(self.remote(e)),
            other => Err(self.mismatch(&other)),
        }
    }
}

/// Hands a received request to the local raft (`me` is its id) and returns
/// the reply to send back. Requests addressed to another id are refused.
pub async fn serve(raft: &Raft<StrewRaft>, me: RaftId, request: RaftRequest) -> RaftReply {
    if request.to != me {
        return RaftReply::Refused(format!("this member is {me:016x}, not {:016x}", request.to));
    }
    match request.rpc {
        RaftRpc::AppendEntries(rpc) => RaftReply::AppendEntries(raft.append_entries(rpc).await),
        RaftRpc::Vote(rpc) => RaftReply::Vote(raft.vote(rpc).await),
        RaftRpc::InstallSnapshot(rpc) => {
            RaftReply::InstallSnapshot(raft.install_snapshot(rpc).await)
        }
    }
}
