//! Who may claim, read and condemn which packets (issue 11): the checks of
//! the receipts a commit carries, the read tickets a snapshot's owner (or
//! the leader's repairer) gets, and reports of unusable chunk copies.
//!
//! Receipts are checked against the pending plan: every planned (packet,
//! target) needs one, signed by that target, for this source, for the
//! planned size, naming the generation the plan's store ticket gave (or the
//! one another live plan or copy of the same packet on that target gave, when
//! the target held it already). Read tickets name the holder, so a target
//! serves them to nobody else. This module reads the state and signs; it
//! must not change the state or do I/O.

use super::*;
use crate::records::{MAX_CHUNK_COPIES, chunk_copy_key};

impl Manager {
    /// Verifies a commit's receipts against its plan; returns the generation
    /// each planned (packet, target) was stored under.
    /// Receipts recorded with the pending backup before the commit count
    /// as carried by it.
    pub(crate) fn check_receipts(
        &self,
        pending: &PendingBackup,
        receipts: &[StoreReceipt],
    ) -> Result<BTreeMap<(PacketId, NodeId), u64>, ManagerError> {
        let mut generations: BTreeMap<(PacketId, NodeId), u64> = pending
            .receipted
            .iter()
            .map(|r| ((r.packet_id, r.target), r.generation))
            .collect();
        generations.extend(self.verify_receipts(pending, receipts)?);
        let missing = pending
            .new_chunks
            .iter()
            .flat_map(|c| &c.packets)
            .filter(|p| !generations.contains_key(&(p.packet_id, p.target)))
            .count();
        if missing > 0 {
            return Err(ManagerError::MissingUploads {
                pending_id: pending.id,
                missing,
            });
        }
        Ok(generations)
    }

    /// Verifies receipts of `pending`'s packets (each for a planned packet
    /// and target, signed by it, for this source and size, a known
    /// generation); returns the generation each names.
    pub(crate) fn verify_receipts(
        &self,
        pending: &PendingBackup,
        receipts: &[StoreReceipt],
    ) -> Result<BTreeMap<(PacketId, NodeId), u64>, ManagerError> {
        // Looked up in the pending index: a page of receipts costs its own
        // size, not the backup's.
        let planned = |packet_id: &PacketId, target: &NodeId| {
            self.state
                .planned_packet(pending.id, packet_id, target)
                .and_then(|c| {
                    c.packets
                        .iter()
                        .find(|p| &p.packet_id == packet_id && &p.target == target)
                        .map(|p| (p.size, c.data_id, p.generation))
                })
        };
        let mut generations = BTreeMap::new();
        for receipt in receipts {
            let refuse = |reason: String| ManagerError::BadReceipt {
                packet_id: receipt.packet_id,
                target: receipt.target,
                reason,
            };
            let Some((size, data_id, planned_generation)) =
                planned(&receipt.packet_id, &receipt.target)
            else {
                return Err(refuse(format!(
                    "backup {} planned no such packet on that target",
                    pending.id
                )));
            };
            receipt.verify().map_err(|e| refuse(e.to_string()))?;
            if receipt.source != pending.source {
                return Err(refuse(format!(
                    "it was stored for {}, not for {}",
                    receipt.source, pending.source
                )));
            }
            if receipt.size != size {
                return Err(refuse(format!(
                    "it names {} bytes, the plan {size}",
                    receipt.size
                )));
            }
            // This plan's own generation (the common case) needs no search.
            if receipt.generation != planned_generation
                && !self.generation_known(
                    &receipt.packet_id,
                    &receipt.target,
                    &data_id,
                    receipt.generation,
                )
            {
                return Err(refuse(format!(
                    "generation {} is not one a store ticket gave",
                    receipt.generation
                )));
            }
            generations.insert((receipt.packet_id, receipt.target), receipt.generation);
        }
        Ok(generations)
    }

    /// Whether `generation` was given to `packet_id` on `target` by a store
    /// ticket of a live plan, or is the one a recorded copy of `data_id` holds.
    fn generation_known(
        &self,
        packet_id: &PacketId,
        target: &NodeId,
        data_id: &DataId,
        generation: u64,
    ) -> bool {
        let matches = |p: &StoredPacket| {
            &p.packet_id == packet_id && &p.target == target && p.generation == generation
        };
        self.state
            .pending
            .values()
            .any(|plan| plan.new_chunks.iter().flat_map(|c| &c.packets).any(matches))
            || (0..MAX_CHUNK_COPIES)
                .filter_map(|n| self.state.chunks.get(&chunk_copy_key(data_id, n)))
                .flat_map(|c| &c.packets)
                .any(matches)
    }

    /// (i) Read tickets for a page of a snapshot's chunks, to its owner:
    /// one ticket per target and 32 packets, each naming the requester as
    /// its holder.
    pub fn read_tickets(
        &self,
        request: &ReadTicketRequest,
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        let record = self.own_snapshot(request.requester, request.snapshot)?;
        if request.count as usize > MAX_READ_CHUNKS {
            return Err(ManagerError::Invalid(format!(
                "{} chunks asked for at once, at most {MAX_READ_CHUNKS}",
                request.count
            )));
        }
        let from = usize::try_from(request.from).unwrap_or(usize::MAX);
        let packets: Vec<(NodeId, PacketId)> = record
            .chunks
            .iter()
            .skip(from)
            .take(request.count as usize)
            .filter_map(|key| self.state.chunk_packets(key))
            .flatten()
            .map(|p| (p.target, p.packet_id))
            .collect();
        self.read_tickets_for(request.requester, &packets, now)
    }

    /// The network quota side of a read-ticket request: refused when the
    /// bytes a restore of those chunks reads (K packets a stripe) would take
    /// the requester past its `network_bytes_per_day`; otherwise the
    /// `RecordTraffic` command counting them, when its plan has a limit
    /// (`None` on an unlimited plan: nothing to count).
    pub fn decide_read_traffic(
        &self,
        request: &ReadTicketRequest,
        now: Millis,
    ) -> Result<Option<Command>, ManagerError> {
        let record = self.own_snapshot(request.requester, request.snapshot)?;
        let client = self
            .state
            .clients
            .get(&request.requester)
            .ok_or(ApplyError::UnknownNode(request.requester))?;
        if client.subscription.network_bytes_per_day == 0 {
            return Ok(None);
        }
        let from = usize::try_from(request.from).unwrap_or(usize::MAX);
        let bytes = record
            .chunks
            .iter()
            .skip(from)
            .take((request.count as usize).min(MAX_READ_CHUNKS))
            .filter_map(|key| self.state.chunks.get(key))
            .map(|c| {
                let width = c.packets.len().max(1) as u64;
                let k = c.redundancy.map_or(1, |r| r.data_packets()) as u64;
                c.stored_bytes() / width * k.min(width)
            })
            .fold(0u64, u64::saturating_add);
        crate::quota::check_network(
            request.requester,
            &client.subscription,
            &client.network,
            bytes,
            now,
        )
        .map_err(ApplyError::from)?;
        Ok((bytes > 0).then_some(Command::RecordTraffic {
            node: request.requester,
            bytes,
            at: now,
        }))
    }

    /// Read tickets for `holder` over `(target, packet)` pairs: for the
    /// leader's own repairer, which reads the stripes it rebuilds.
    pub fn read_tickets_for(
        &self,
        holder: NodeId,
        packets: &[(NodeId, PacketId)],
        now: Millis,
    ) -> Result<Vec<StorageTicket>, ManagerError> {
        let mut per_target: BTreeMap<NodeId, Vec<TicketEntry>> = BTreeMap::new();
        for (target, packet_id) in packets {
            per_target.entry(*target).or_default().push(TicketEntry {
                packet_id: *packet_id,
                size: 0,
                generation: 0,
            });
        }
        self.tickets(TicketKind::Read, Some(holder), per_target, now)
    }

    /// (j) A source reports that the packets of chunk `data_id` it was given
    /// failed (a restore or a check could not decode them): the `MarkBad`
    /// commands for the copies of that chunk its snapshots use that hold
    /// one of `packets`. Checked as far as the manager can: the reporter
    /// references the copy and the packets are that copy's. A liar can only
    /// make the next source with that data upload its own copy.
    pub fn decide_mark_bad(
        &self,
        reporter: NodeId,
        data_id: DataId,
        packets: &[PacketId],
        now: Millis,
    ) -> Result<Vec<Command>, ManagerError> {
        if packets.len() > usize::from(u8::MAX) {
            return Err(ManagerError::Invalid(format!(
                "{} packets reported for one chunk; a stripe has at most 255",
                packets.len()
            )));
        }
        let named: BTreeSet<&PacketId> = packets.iter().collect();
        let copies: Vec<(DataId, bool)> = (0..MAX_CHUNK_COPIES)
            .map(|n| chunk_copy_key(&data_id, n))
            .filter_map(|key| {
                let c = self.state.chunks.get(&key)?;
                let theirs = (c.sources.contains(&reporter) || c.owner == reporter)
                    && c.packets.iter().any(|p| named.contains(&p.packet_id));
                theirs.then_some((key, c.bad))
            })
            .collect();
        let commands: Vec<Command> = copies
            .iter()
            .filter(|(_, bad)| !bad)
            .map(|(key, _)| Command::MarkBad {
                key: *key,
                reporter,
                at: now,
            })
            .collect();
        if copies.is_empty() {
            return Err(ManagerError::Invalid(format!(
                "{reporter} holds no copy of chunk {data_id} with those packets"
            )));
        }
        Ok(commands)
    }
}
