//! The collection queue's rows: one `garbage-v1` row per queued deletion,
//! target (32 bytes) ++ PacketId (32 bytes) → (generation, due). An applied
//! command writes the entries it queued or removed ([`Touched::garbage`]),
//! so a forget of a million packets costs its own rows and a collection
//! batch only the entries it removes.

use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use strew_coordinator::{Garbage, ManagerState, Touched};

use super::StoreError;
use super::split::{packet_key as key, split_packet_key};

/// Target ++ PacketId → (generation, due ms).
pub(super) const GARBAGE: TableDefinition<[u8; 64], (u64, u64)> =
    TableDefinition::new("garbage-v1");

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
        let (generation, due) = v.value();
        state
            .garbage
            .insert(split_packet_key(&k.value()), Garbage { generation, due });
    }
    Ok(())
}
