//! The streaming half of a grid backup: a [`PartSink`] the pipeline writes
//! into on its blocking thread, which stages packets in the outbox and hands
//! finished parts (at most [`MAX_PLAN_CHUNKS`] new chunks and
//! [`MAX_PLAN_PACKETS`] packets, their packets durable in the outbox) over a
//! bounded channel to the async side that plans and uploads them; and the
//! [`Staging`] bound that makes the pipeline wait while the outbox holds more
//! than `staging_limit` bytes of packets not yet receipted. The sink keeps
//! the stripes' order in a scratch file ([`super::spill`]), not in memory:
//! the commit reads it back.

use std::collections::HashMap;

use crate::claim_set::{ClaimSet, claim};
use crate::spill::{Spill, SpillError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use strew_coordinator::PacketId;
use strew_coordinator::manager::{ChunkPlan, MAX_PLAN_CHUNKS, MAX_PLAN_PACKETS, PacketSpec};
use tokio::sync::mpsc;

use crate::pipeline::backup::{PacketSink, SinkError};
use crate::pipeline::codec::{EncodedStripe, StripeRecord};
use crate::store::PacketStore;

/// Default bound on the outbox's unreceipted packets (`staging_limit`).
pub const DEFAULT_STAGING_LIMIT: u64 = 1 << 30;
/// Parts waiting for the async side at once (beyond the one it works on).
pub const PART_QUEUE: usize = 1;
/// Packets are written to the outbox in groups of at most this many bytes.
const GROUP_BYTES: usize = 32 * 1024 * 1024;

/// One part of a backup, its packets in the outbox.
#[derive(Debug, Default)]
pub struct Part {
    pub chunks: Vec<ChunkPlan>,
    /// Distinct packets of the part, for the outbox cleanup.
    pub packets: Vec<PacketId>,
    /// Bytes those packets take (counted in [`Staging`]).
    pub bytes: u64,
    /// The pipeline's last part (it carries the manifest's chunks).
    pub last: bool,
}

#[derive(Debug, Default)]
struct StagingState {
    staged: u64,
    high_water: u64,
    closed: bool,
}

/// The outbox's bytes of packets staged and not yet receipted, shared by the
/// pipeline (which adds and waits) and the uploader (which releases).
#[derive(Debug)]
pub struct Staging {
    limit: u64,
    state: Mutex<StagingState>,
    room: Condvar,
}

impl Staging {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Staging {
            limit: limit.max(1),
            state: Mutex::new(StagingState::default()),
            room: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, StagingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the outbox is over the limit now.
    fn full(&self) -> bool {
        let s = self.lock();
        !s.closed && s.staged > self.limit
    }

    /// Blocks while the outbox is over the limit; false once closed.
    fn wait_room(&self) -> bool {
        let mut s = self.lock();
        while !s.closed && s.staged > self.limit {
            s = self.room.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        !s.closed
    }

    fn add(&self, bytes: u64) {
        let mut s = self.lock();
        s.staged += bytes;
        s.high_water = s.high_water.max(s.staged);
    }

    /// Packets left the outbox (receipted, or not needed).
    pub fn release(&self, bytes: u64) {
        let mut s = self.lock();
        s.staged = s.staged.saturating_sub(bytes);
        self.room.notify_all();
    }

    /// The backup ends (done or failed): the pipeline stops waiting.
    pub fn close(&self) {
        self.lock().closed = true;
        self.room.notify_all();
    }

    /// The most bytes the outbox held for this backup at once.
    pub fn high_water(&self) -> u64 {
        self.lock().high_water
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// Stages stripes in the outbox and hands them on in parts.
pub struct PartSink {
    store: PacketStore,
    tx: mpsc::Sender<Part>,
    staging: Arc<Staging>,
    /// Every data stripe's record in sequence order (new or known).
    order: Spill<StripeRecord>,
    /// Chunks an interrupted earlier run planned: neither staged nor sent.
    skip: ClaimSet,
    part: Part,
    part_packets: usize,
    group: Vec<(PacketId, Vec<u8>)>,
    group_bytes: usize,
}

fn sink_error(message: impl Into<String>) -> SinkError {
    SinkError {
        message: message.into(),
        source: None,
    }
}

impl PartSink {
    pub fn new(
        store: PacketStore,
        tx: mpsc::Sender<Part>,
        staging: Arc<Staging>,
    ) -> Result<Self, SpillError> {
        Ok(PartSink {
            store,
            tx,
            staging,
            order: Spill::new()?,
            skip: ClaimSet::new(),
            part: Part::default(),
            part_packets: 0,
            group: Vec::new(),
            group_bytes: 0,
        })
    }

    /// The data stripes' order the pipeline handed over.
    pub fn into_order(self) -> Spill<StripeRecord> {
        self.order
    }

    /// Leaves out the chunks an interrupted run already planned.
    pub fn skipping(mut self, skip: ClaimSet) -> Self {
        self.skip = skip;
        self
    }

    fn flush_group(&mut self) -> Result<(), SinkError> {
        if self.group.is_empty() {
            return Ok(());
        }
        crate::pipeline::local::put_group(&self.store, &self.group)?;
        self.group.clear();
        self.group_bytes = 0;
        Ok(())
    }

    /// Makes the part's packets durable and hands it on (blocking while the
    /// queue is full).
    fn send_part(&mut self, last: bool) -> Result<(), SinkError> {
        self.flush_group()?;
        let mut part = std::mem::take(&mut self.part);
        part.last = last;
        self.part_packets = 0;
        self.tx
            .blocking_send(part)
            .map_err(|_| sink_error("the backup's uploads stopped"))
    }
}

impl PacketSink for PartSink {
    fn store(&mut self, stripe: EncodedStripe) -> Result<(), SinkError> {
        // The pipeline hands each distinct chunk once.
        let skipped = self
            .skip
            .contains(claim(&stripe.record.data_id))
            .map_err(|e| SinkError {
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        if skipped {
            return Ok(());
        }
        let width = stripe.record.packets.len();
        let part_full = !self.part.chunks.is_empty()
            && (self.part.chunks.len() >= MAX_PLAN_CHUNKS
                || self.part_packets + width > MAX_PLAN_PACKETS);
        // A part is cut early when the outbox is full: its uploads make room.
        if part_full || (!self.part.chunks.is_empty() && self.staging.full()) {
            self.send_part(false)?;
        }
        if !self.staging.wait_room() {
            return Err(sink_error("the backup's uploads stopped"));
        }
        let sizes: HashMap<PacketId, u64> = stripe
            .packets
            .iter()
            .map(|(id, b)| (*id, b.len() as u64))
            .collect();
        let mut packets = Vec::with_capacity(width);
        for id in &stripe.record.packets {
            let size = sizes
                .get(id)
                .copied()
                .ok_or_else(|| sink_error(format!("stripe names packet {id} it does not carry")))?;
            packets.push(PacketSpec {
                packet_id: *id,
                size,
            });
        }
        self.part.chunks.push(ChunkPlan {
            data_id: stripe.record.data_id,
            packets,
        });
        self.part_packets += width;
        for (id, bytes) in stripe.packets {
            let len = bytes.len();
            self.staging.add(len as u64);
            self.part.bytes += len as u64;
            self.part.packets.push(id);
            self.group_bytes += len;
            self.group.push((id, bytes));
        }
        if self.group_bytes >= GROUP_BYTES {
            self.flush_group()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.send_part(true)
    }

    fn order(&mut self, record: &StripeRecord) -> Result<bool, SinkError> {
        self.order
            .push(record)
            .map_err(|e| sink_error(e.to_string()))?;
        Ok(true)
    }
}
