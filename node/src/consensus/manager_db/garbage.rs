//! The collection queue's rows: one `garbage-v1` row per queued deletion,
//! target (32 bytes) ++ PacketId (32 bytes) → (generation, due). An applied
//! command writes the entries it queued or removed ([`Touched::garbage`]),
//! so a forget of a million packets costs its own rows and a collection
//! batch only the entries it removes.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use strew_coordinator::{Garbage, ManagerState, NodeId, PacketId, Touched};

use super::StoreError;

/// Target ++ PacketId → (generation, due ms).
pub(super) const GARBAGE: TableDefinition<[u8; 64], (u64, u64)> =
    TableDefinition::new("garbage-v1");

fn key(target: &NodeId, packet: &PacketId) -> [u8; 64] {
    let mut key = [0u8; 64];
    key[..32].copy_from_slice(&target.0);
    key[32..].copy_from_slice(&packet.0);
    key
}

/// One row: its key, and `Some((generation, due))` to insert or `None` to remove.
type Row = ([u8; 64], Option<(u64, u64)>);

/// The queue rows one applied batch writes.
#[derive(Default)]
pub(super) struct GarbageRows(Vec<Row>);

impl GarbageRows {
    pub(super) fn collect(state: &ManagerState, touched: &Touched) -> GarbageRows {
        GarbageRows(
            touched
                .garbage
                .iter()
                .map(|(t, p)| {
                    let value = state.garbage.get(&(*t, *p)).map(|g| (g.generation, g.due));
                    (key(t, p), value)
                })
                .collect(),
        )
    }

    /// Bytes of the values written (16 a row).
    pub(super) fn bytes(&self) -> usize {
        self.0.iter().filter(|(_, v)| v.is_some()).count() * 16
    }

    pub(super) fn write(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let mut table = txn.open_table(GARBAGE)?;
        for (k, v) in &self.0 {
            match v {
                Some(v) => table.insert(*k, *v)?,
                None => table.remove(*k)?,
            };
        }
        Ok(())
    }
}

/// Writes the whole queue of `state` (table emptied first).
pub(super) fn replace(txn: &WriteTransaction, state: &ManagerState) -> Result<(), StoreError> {
    let mut table = txn.open_table(GARBAGE)?;
    table.retain(|_, _| false)?;
    for ((t, p), g) in &state.garbage {
        table.insert(key(t, p), (g.generation, g.due))?;
    }
    Ok(())
}

/// Reads the queue into `state`.
pub(super) fn load(txn: &ReadTransaction, state: &mut ManagerState) -> Result<(), StoreError> {
    for row in txn.open_table(GARBAGE)?.iter()? {
        let (k, v) = row?;
        let k = k.value();
        let mut target = [0u8; 32];
        let mut packet = [0u8; 32];
        target.copy_from_slice(&k[..32]);
        packet.copy_from_slice(&k[32..]);
        let (generation, due) = v.value();
        state.garbage.insert(
            (NodeId(target), PacketId(packet)),
            Garbage { generation, due },
        );
    }
    Ok(())
}
