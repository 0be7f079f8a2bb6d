//! The two records that grow without bound, kept one row per element so an
//! applied command writes what it changed and not the whole record (SPEC
//! R12: a backup of a million chunks is extended, receipted and ordered
//! page by page; a target holds every packet placed on it).
//!
//! - A target's record: its header (bytes, reservations, audit, exit) in
//!   `target-data-v2` and one `target-packets-v1` row per packet it holds
//!   (target ++ PacketId → size).
//! - A pending backup: its header (everything but its lists) in
//!   `pending-v2` and one `pending-items-v1` row per list element, keyed
//!   (pending id, list, index). [`Touched::pending_lists`] says from which
//!   element a list changed: those rows are rewritten, the rest stay.
//!
//! Loading puts the rows back together; [`migrate_v2`] moves a version 2
//! database (whole records) into these tables.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use strew_coordinator::{
    DataId, ManagerState, NodeId, PacketId, PendingBackup, PendingList, PlannedChunk, Receipted,
    TargetRecord, Touched,
};

use super::{StoreError, decode, encode};

/// A target's record without its packets.
pub(super) const TARGETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("target-data-v2");
/// Target (32 bytes) ++ PacketId (32 bytes) → packet size.
pub(super) const TARGET_PACKETS: TableDefinition<[u8; 64], u64> =
    TableDefinition::new("target-packets-v1");
/// A pending backup without its lists.
pub(super) const PENDING: TableDefinition<u64, &[u8]> = TableDefinition::new("pending-v2");
/// (pending id, list, index) → one encoded list element.
pub(super) const PENDING_ITEMS: TableDefinition<(u64, u8, u64), &[u8]> =
    TableDefinition::new("pending-items-v1");

/// Version 2's whole target records and whole pending backups.
pub(super) const TARGETS_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("target-data-v1");
pub(super) const PENDING_V1: TableDefinition<u64, &[u8]> = TableDefinition::new("pending-v1");

fn list_code(list: PendingList) -> u8 {
    match list {
        PendingList::NewChunks => 0,
        PendingList::Reused => 1,
        PendingList::Receipted => 2,
        PendingList::Order => 3,
        PendingList::OrderStored => 4,
    }
}

/// Target ++ PacketId: the key of a target's packet row and of a
/// collection queue row.
pub(super) fn packet_key(target: &NodeId, packet: &PacketId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&target.0);
    key[32..].copy_from_slice(&packet.0);
    key
}

/// The target and PacketId of a [`packet_key`].
pub(super) fn split_packet_key(key: &[u8; 64]) -> (NodeId, PacketId) {
    let mut target = [0u8; 32];
    let mut packet = [0u8; 32];
    target.copy_from_slice(&key[..32]);
    packet.copy_from_slice(&key[32..]);
    (NodeId(target), PacketId(packet))
}

/// A target's record as its header row stores it (no packets).
fn target_header(record: &TargetRecord) -> TargetRecord {
    TargetRecord {
        packets: BTreeMap::new(),
        bytes: record.bytes,
        reserved: record.reserved,
        audit: record.audit.clone(),
        exiting_since: record.exiting_since,
    }
}

/// A pending backup as its header row stores it (no lists).
fn pending_header(pending: &PendingBackup) -> PendingBackup {
    PendingBackup {
        id: pending.id,
        source: pending.source,
        set: pending.set.clone(),
        location: pending.location,
        params: pending.params.clone(),
        new_chunks: Vec::new(),
        reused: Vec::new(),
        created_at: pending.created_at,
        expires_at: pending.expires_at,
        receipted: Vec::new(),
        order: Vec::new(),
        order_stored: Vec::new(),
    }
}

/// The encoded elements of `pending`'s `list` from index `from` on.
fn list_items(
    pending: &PendingBackup,
    list: PendingList,
    from: usize,
) -> Result<Vec<Vec<u8>>, StoreError> {
    const TABLE: &str = "pending-items-v1";
    fn tail<T: serde::Serialize>(items: &[T], from: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        items
            .get(from..)
            .unwrap_or(&[])
            .iter()
            .map(|item| encode(TABLE, item))
            .collect()
    }
    match list {
        PendingList::NewChunks => tail(&pending.new_chunks, from),
        PendingList::Reused => tail(&pending.reused, from),
        PendingList::Receipted => tail(&pending.receipted, from),
        PendingList::Order => tail(&pending.order, from),
        PendingList::OrderStored => tail(&pending.order_stored, from),
    }
}

/// The split records' rows of one applied batch.
#[derive(Default)]
pub(super) struct SplitRows {
    targets: Vec<([u8; 32], Option<Vec<u8>>)>,
    target_packets: Vec<([u8; 64], Option<u64>)>,
    pending: Vec<(u64, Option<Vec<u8>>)>,
    /// (pending id, list, first index rewritten, the elements from there).
    pending_items: Vec<(u64, u8, u64, Vec<Vec<u8>>)>,
}

impl SplitRows {
    /// Encodes what `touched` names of the split records as `state` holds them.
    pub(super) fn collect(state: &ManagerState, touched: &Touched) -> Result<Self, StoreError> {
        let mut rows = SplitRows::default();
        for id in &touched.targets {
            let value = state
                .targets
                .get(id)
                .map(|r| encode("target-data-v2", &target_header(r)))
                .transpose()?;
            rows.targets.push((id.0, value));
        }
        for (target, packet) in &touched.target_packets {
            let size = state
                .targets
                .get(target)
                .and_then(|r| r.packets.get(packet))
                .copied();
            rows.target_packets.push((packet_key(target, packet), size));
        }
        for id in &touched.pending {
            let value = state
                .pending
                .get(id)
                .map(|p| encode("pending-v2", &pending_header(p)))
                .transpose()?;
            rows.pending.push((*id, value));
        }
        for ((id, list), from) in &touched.pending_lists {
            // A backup that is gone loses every row (see `write`).
            if let Some(pending) = state.pending.get(id) {
                let items = list_items(pending, *list, *from)?;
                rows.pending_items
                    .push((*id, list_code(*list), *from as u64, items));
            }
        }
        Ok(rows)
    }

    /// Bytes of the encoded values these rows write.
    pub(super) fn bytes(&self) -> usize {
        let headers: usize = self
            .targets
            .iter()
            .map(|(_, v)| v.as_ref().map_or(0, Vec::len))
            .chain(
                self.pending
                    .iter()
                    .map(|(_, v)| v.as_ref().map_or(0, Vec::len)),
            )
            .sum();
        let items: usize = self
            .pending_items
            .iter()
            .flat_map(|(.., items)| items)
            .map(Vec::len)
            .sum();
        // A packet row is 8 bytes of size; a removal writes none.
        let packets = self
            .target_packets
            .iter()
            .filter(|(_, size)| size.is_some())
            .count();
        headers + items + 8 * packets
    }

    /// How many list elements these rows write (tests: a page writes its
    /// own elements, not the whole backup's).
    #[cfg(test)]
    pub(super) fn item_rows(&self) -> usize {
        self.pending_items
            .iter()
            .map(|(.., items)| items.len())
            .sum()
    }

    /// Writes these rows in `txn`.
    pub(super) fn write(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut targets = txn.open_table(TARGETS)?;
        for (k, v) in &self.targets {
            match v {
                Some(v) => targets.insert(k.as_slice(), v.as_slice())?,
                None => targets.remove(k.as_slice())?,
            };
        }
        let mut packets = txn.open_table(TARGET_PACKETS)?;
        for (k, size) in &self.target_packets {
            match size {
                Some(size) => packets.insert(*k, *size)?,
                None => packets.remove(*k)?,
            };
        }
        let mut pending = txn.open_table(PENDING)?;
        let mut items = txn.open_table(PENDING_ITEMS)?;
        for (id, v) in &self.pending {
            match v {
                Some(v) => {
                    pending.insert(*id, v.as_slice())?;
                }
                None => {
                    pending.remove(*id)?;
                    items.retain_in((*id, 0u8, 0u64)..=(*id, u8::MAX, u64::MAX), |_, _| false)?;
                }
            }
        }
        for (id, list, from, elements) in &self.pending_items {
            items.retain_in((*id, *list, *from)..=(*id, *list, u64::MAX), |_, _| false)?;
            for (i, element) in elements.iter().enumerate() {
                items.insert((*id, *list, *from + i as u64), element.as_slice())?;
            }
        }
        Ok(())
    }
}

/// Writes every target and pending backup of `state` (tables emptied first).
pub(super) fn replace(txn: &WriteTransaction, state: &ManagerState) -> Result<(), StoreError> {
    let mut targets = txn.open_table(TARGETS)?;
    targets.retain(|_, _| false)?;
    let mut packets = txn.open_table(TARGET_PACKETS)?;
    packets.retain(|_, _| false)?;
    for (id, r) in &state.targets {
        let header = encode("target-data-v2", &target_header(r))?;
        targets.insert(id.0.as_slice(), header.as_slice())?;
        for (packet, size) in &r.packets {
            packets.insert(packet_key(id, packet), *size)?;
        }
    }
    let mut pending = txn.open_table(PENDING)?;
    pending.retain(|_, _| false)?;
    let mut items = txn.open_table(PENDING_ITEMS)?;
    items.retain(|_, _| false)?;
    for (id, p) in &state.pending {
        pending.insert(*id, encode("pending-v2", &pending_header(p))?.as_slice())?;
        for list in PendingList::ALL {
            for (i, element) in list_items(p, list, 0)?.iter().enumerate() {
                items.insert((*id, list_code(list), i as u64), element.as_slice())?;
            }
        }
    }
    Ok(())
}

/// Reads the targets and pending backups into `state`.
pub(super) fn load(txn: &ReadTransaction, state: &mut ManagerState) -> Result<(), StoreError> {
    for row in txn.open_table(TARGETS)?.iter()? {
        let (k, v) = row?;
        let id: [u8; 32] = k.value().try_into().map_err(|_| StoreError::Decode {
            table: "target-data-v2",
            message: "key is not 32 bytes".into(),
        })?;
        state
            .targets
            .insert(NodeId(id), decode("target-data-v2", v.value())?);
    }
    for row in txn.open_table(TARGET_PACKETS)?.iter()? {
        let (k, v) = row?;
        let (target, packet) = split_packet_key(&k.value());
        state
            .targets
            .entry(target)
            .or_default()
            .packets
            .insert(packet, v.value());
    }
    for row in txn.open_table(PENDING)?.iter()? {
        let (k, v) = row?;
        state
            .pending
            .insert(k.value(), decode("pending-v2", v.value())?);
    }
    for row in txn.open_table(PENDING_ITEMS)?.iter()? {
        let (k, v) = row?;
        let (id, list, index) = k.value();
        let bad = |message: String| StoreError::Decode {
            table: "pending-items-v1",
            message,
        };
        let pending = state
            .pending
            .get_mut(&id)
            .ok_or_else(|| bad(format!("an element of pending backup {id}, which is gone")))?;
        let list = PendingList::ALL
            .into_iter()
            .find(|l| list_code(*l) == list)
            .ok_or_else(|| bad(format!("unknown list {list}")))?;
        if index != list.len(pending) as u64 {
            return Err(bad(format!(
                "pending backup {id}: element {index} of {list:?} follows {}",
                list.len(pending)
            )));
        }
        const TABLE: &str = "pending-items-v1";
        let bytes = v.value();
        match list {
            PendingList::NewChunks => pending
                .new_chunks
                .push(decode::<PlannedChunk>(TABLE, bytes)?),
            PendingList::Reused => pending.reused.push(decode::<DataId>(TABLE, bytes)?),
            PendingList::Receipted => pending.receipted.push(decode::<Receipted>(TABLE, bytes)?),
            PendingList::Order => pending.order.push(decode::<DataId>(TABLE, bytes)?),
            PendingList::OrderStored => pending
                .order_stored
                .push(decode::<PlannedChunk>(TABLE, bytes)?),
        }
    }
    Ok(())
}

/// Moves version 2's whole target records and pending backups into the
/// split tables and drops the old tables.
pub(super) fn migrate_v2(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut state = ManagerState::default();
    {
        let old = txn.open_table(TARGETS_V1)?;
        for row in old.iter()? {
            let (k, v) = row?;
            let id: [u8; 32] = k.value().try_into().map_err(|_| StoreError::Decode {
                table: "target-data-v1",
                message: "key is not 32 bytes".into(),
            })?;
            state
                .targets
                .insert(NodeId(id), decode("target-data-v1", v.value())?);
        }
        let old = txn.open_table(PENDING_V1)?;
        for row in old.iter()? {
            let (k, v) = row?;
            state
                .pending
                .insert(k.value(), decode("pending-v1", v.value())?);
        }
    }
    replace(txn, &state)?;
    txn.delete_table(TARGETS_V1)?;
    txn.delete_table(PENDING_V1)?;
    Ok(())
}
