//! Adapters between the pipeline engines and a local packet store: a
//! [`PacketSink`] that writes stripes in durable groups, and a
//! [`PacketSource`] that reads packets back. Used by `strew bench pipeline`
//! and by tests; the grid uses network-backed sinks and sources instead.

use strew_coordinator::PacketId;

use super::backup::{PacketSink, SinkError};
use super::codec::{EncodedStripe, PacketSource};
use crate::store::PacketStore;

/// Packets are written to the store in groups of about this many bytes,
/// each group made durable with one sync.
const GROUP_BYTES: usize = 32 * 1024 * 1024;

/// Writes stripes into a local packet store.
pub struct StoreSink {
    store: PacketStore,
    pending: Vec<(PacketId, Vec<u8>)>,
    pending_bytes: usize,
}

impl StoreSink {
    pub fn new(store: PacketStore) -> Self {
        StoreSink {
            store,
            pending: Vec::new(),
            pending_bytes: 0,
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        put_group(&self.store, &self.pending)?;
        self.pending.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}

impl PacketSink for StoreSink {
    fn store(&mut self, stripe: EncodedStripe) -> Result<(), SinkError> {
        for (id, bytes) in stripe.packets {
            self.pending_bytes += bytes.len();
            self.pending.push((id, bytes));
        }
        if self.pending_bytes >= GROUP_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
}

impl PacketSource for PacketStore {
    fn fetch(&self, id: &PacketId) -> Option<Vec<u8>> {
        match self.get(id) {
            Ok(bytes) => bytes,
            Err(err) => {
                tracing::warn!(packet = %id, %err, "cannot read packet from the local store");
                None
            }
        }
    }
}

/// Writes a group of encoded packets to `store` in one batch (the sinks
/// group small packets so the store syncs once per group, not per packet).
pub(crate) fn put_group(
    store: &PacketStore,
    group: &[(PacketId, Vec<u8>)],
) -> Result<(), SinkError> {
    let group: Vec<(PacketId, &[u8])> = group.iter().map(|(id, b)| (*id, b.as_slice())).collect();
    store.put_many(&group).map_err(|e| SinkError {
        message: e.to_string(),
        source: Some(Box::new(e)),
    })?;
    Ok(())
}
