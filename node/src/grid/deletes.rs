//! Deleting many packets from their targets, as a forget and the cleanup
//! of a backup's leftovers do: grouped by target, each group sent as
//! [`PacketTransport::delete_many`] calls of at most [`PER_CALL`] packets
//! (the overlay's `DeleteMany` batches), a bounded number in flight, each
//! call bounded in time. Owns the grouping and the bounds; what a failed
//! delete means is the caller's (a forget reports it, the leader's
//! collection takes [`TransportFailure::LiveCopy`] as done).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use strew_coordinator::{NodeId, PacketId, StorageTicket};

use super::{PacketTransport, TransportError, TransportFailure};

/// One delete's result: its target, its packet, and why not.
pub type DeleteResult = (NodeId, PacketId, Result<(), TransportError>);

/// Most packets one `delete_many` call carries (a few `DeleteMany`
/// batches).
pub const PER_CALL: usize = 1024;

/// Deletes `jobs` (target, packet, its delete ticket), `in_flight` calls at
/// a time, each given up after `deadline`; returns each job's result, in
/// no particular order.
pub async fn delete_all<T: PacketTransport>(
    transport: &T,
    jobs: Vec<(NodeId, PacketId, &StorageTicket)>,
    in_flight: usize,
    deadline: Duration,
) -> Vec<DeleteResult> {
    let mut by_target: BTreeMap<NodeId, Vec<(PacketId, &StorageTicket)>> = BTreeMap::new();
    for (target, id, ticket) in jobs {
        by_target.entry(target).or_default().push((id, ticket));
    }
    let calls: Vec<(NodeId, Vec<(PacketId, &StorageTicket)>)> = by_target
        .into_iter()
        .flat_map(|(target, list)| {
            list.chunks(PER_CALL)
                .map(|c| (target, c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    // The calls as futures first, a named one each: a closure over the
    // borrowed tickets would not be `Send` for every lifetime.
    let calls: Vec<_> = calls
        .into_iter()
        .map(|(target, call)| one_call(transport, target, call, deadline))
        .collect();
    let done: Vec<Vec<DeleteResult>> = futures::stream::iter(calls)
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    done.into_iter().flatten().collect()
}

async fn one_call<T: PacketTransport>(
    transport: &T,
    target: NodeId,
    call: Vec<(PacketId, &StorageTicket)>,
    deadline: Duration,
) -> Vec<DeleteResult> {
    let failed = |kind, why: &str| Err(TransportError::new(target, kind, why));
    let results = match tokio::time::timeout(deadline, transport.delete_many(target, &call)).await {
        Ok(results) => results,
        Err(_) => vec![failed(TransportFailure::TimedOut, "the deletes timed out"); call.len()],
    };
    let missing = call.len().saturating_sub(results.len());
    let results = results.into_iter().chain(std::iter::repeat_n(
        failed(
            TransportFailure::Io,
            "the transport answered fewer deletes than asked",
        ),
        missing,
    ));
    call.iter()
        .zip(results)
        .map(|((id, _), r)| (target, *id, r))
        .collect()
}
