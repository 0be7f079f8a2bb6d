//! A snapshot's sequence as the pipeline produces it (before the sequence
//! manager adds targets): the snapshot's manifest id, the stripes of its
//! root and manifest, and the stripes of its data, in the order they were
//! stored. Restoring needs exactly this, the packets, and the owner's
//! private secret (which opens the root). Every id in it is a storage
//! index: no key.

use serde::{Deserialize, Serialize};
use strew_coordinator::{DataId, PacketId};

use super::codec::StripeRecord;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Storage index of the manifest bytes' key (under the owner's secret).
    pub snapshot: DataId,
    /// The snapshot root's stripe, then the manifest's stripes in order.
    pub manifest: Vec<StripeRecord>,
    /// Stripes of data chunks, in the order they were stored (each distinct
    /// chunk once).
    pub data: Vec<StripeRecord>,
}

impl Sequence {
    /// All stripes, data first, then the manifest.
    pub fn stripes(&self) -> impl Iterator<Item = &StripeRecord> {
        self.data.iter().chain(self.manifest.iter())
    }

    /// Every distinct PacketId the snapshot references.
    pub fn packet_ids(&self) -> std::collections::BTreeSet<PacketId> {
        self.stripes()
            .flat_map(|s| s.packets.iter().copied())
            .collect()
    }
}
