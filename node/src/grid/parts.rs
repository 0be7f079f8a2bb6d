//! Plans a backup part by part: the new chunks are split into parts the
//! manager accepts (at most [`MAX_PLAN_CHUNKS`] chunks and
//! [`MAX_PLAN_PACKETS`] packets each); the first part starts a pending
//! backup and every later part extends it (`PlanRequest::extend`), so the
//! manager holds one pending backup that only the commit makes a snapshot.
//! This module owns the splitting and the merging of the parts' answers
//! into one [`PlanDecision`]; it does no uploads.

use strew_coordinator::manager::{
    ChunkPlan, MAX_PLAN_CHUNKS, MAX_PLAN_PACKETS, PlanDecision, PlanRequest,
};

use super::{GridError, ManagerApi};

/// Splits `chunks` into parts of at most `max_chunks` chunks and
/// `max_packets` packets (a chunk wider than `max_packets` is a part of
/// its own; the manager refuses it). Never returns an empty list: no
/// chunks is one empty part.
pub fn split_parts(
    chunks: &[ChunkPlan],
    max_chunks: usize,
    max_packets: usize,
) -> Vec<&[ChunkPlan]> {
    let mut parts = Vec::new();
    let (mut start, mut packets) = (0usize, 0usize);
    for (i, chunk) in chunks.iter().enumerate() {
        let width = chunk.packets.len();
        if i > start && (i - start >= max_chunks || packets + width > max_packets) {
            parts.push(&chunks[start..i]);
            start = i;
            packets = 0;
        }
        packets += width;
    }
    parts.push(&chunks[start..]);
    parts
}

/// Plans `request.chunks` in parts into one pending backup and merges the
/// answers. On a refusal of a later part the pending backup is abandoned
/// (best effort: the manager's expiry covers it otherwise).
pub async fn plan_in_parts<M: ManagerApi>(
    manager: &M,
    mut request: PlanRequest,
) -> Result<PlanDecision, GridError> {
    // The template each part copies, without the (possibly many) chunks.
    let chunks = std::mem::take(&mut request.chunks);
    let mut merged: Option<PlanDecision> = None;
    for part in split_parts(&chunks, MAX_PLAN_CHUNKS, MAX_PLAN_PACKETS) {
        let answer = manager
            .plan(PlanRequest {
                chunks: part.to_vec(),
                extend: merged.as_ref().map(|d| d.pending_id).or(request.extend),
                ..request.clone()
            })
            .await;
        let decision = match (answer, &merged) {
            (Ok(decision), _) => decision,
            (Err(err), None) => return Err(err),
            (Err(err), Some(first)) => {
                if let Err(why) = manager.abandon(first.pending_id).await {
                    tracing::warn!(pending_id = first.pending_id, %why, "could not abandon a partly planned backup; the manager will expire it");
                }
                return Err(err);
            }
        };
        match merged.as_mut() {
            None => merged = Some(decision),
            Some(all) => {
                all.uploads.extend(decision.uploads);
                all.reused.extend(decision.reused);
                all.tickets.extend(decision.tickets);
                all.expires_at = all.expires_at.max(decision.expires_at);
            }
        }
    }
    merged.ok_or_else(|| GridError::Other("a backup planned no part".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::manager::PacketSpec;
    use strew_coordinator::{DataId, PacketId};

    fn chunk(n: u8, width: usize) -> ChunkPlan {
        ChunkPlan {
            data_id: DataId([n; 32]),
            packets: (0..width)
                .map(|_| PacketSpec {
                    packet_id: PacketId([n; 32]),
                    size: 1,
                })
                .collect(),
        }
    }

    #[test]
    fn parts_respect_both_bounds_and_keep_every_chunk_in_order() {
        let chunks: Vec<ChunkPlan> = (0..10).map(|n| chunk(n, 3)).collect();
        let parts = split_parts(&chunks, 4, 9);
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            vec![3, 3, 3, 1]
        );
        let parts = split_parts(&chunks, 2, 100);
        assert_eq!(parts.len(), 5);
        let flat: Vec<&ChunkPlan> = parts.iter().flat_map(|p| p.iter()).collect();
        assert_eq!(flat.len(), 10);
        assert!(flat.iter().zip(&chunks).all(|(a, b)| *a == b));
        assert_eq!(split_parts(&[], 4, 9), vec![&[] as &[ChunkPlan]]);
        // A chunk wider than a part may be is a part of its own.
        let wide = vec![chunk(1, 2), chunk(2, 20), chunk(3, 2)];
        assert_eq!(
            split_parts(&wide, 10, 8)
                .iter()
                .map(|p| p.len())
                .collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
    }
}
