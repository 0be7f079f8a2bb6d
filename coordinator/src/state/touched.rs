//! What an applied command changed ([`Touched`]): the records a driver that
//! persists must write, down to the packets of a target and, per list of a
//! pending backup, the first element that changed.

use std::collections::{BTreeMap, BTreeSet};

use crate::ids::{DataId, NodeId, PacketId, SnapshotId};
use crate::records::PendingBackup;

/// Which records a command changed: the store rewrites exactly these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Touched {
    pub mode: bool,
    pub counters: bool,
    pub clients: BTreeSet<NodeId>,
    pub profiles: BTreeSet<String>,
    pub chunks: BTreeSet<DataId>,
    pub targets: BTreeSet<NodeId>,
    pub snapshots: BTreeSet<SnapshotId>,
    /// Pending backups whose record (other than its lists) changed or went.
    pub pending: BTreeSet<u64>,
    /// Per pending backup and list, the first element that changed: the
    /// store rewrites the list from there on, never the whole backup, so a
    /// backup extended page by page costs each page's size, not its total.
    pub pending_lists: BTreeMap<(u64, PendingList), usize>,
    /// Packets added to or removed from a target's record: the store writes
    /// these rows; `targets` names records whose other fields changed.
    pub target_packets: BTreeSet<(NodeId, PacketId)>,
    pub assemblies: BTreeSet<u64>,
    /// Collection queue entries added or removed.
    pub garbage: BTreeSet<(NodeId, PacketId)>,
    /// Log entries appended (by sequence number).
    pub log_from: Option<u64>,
    /// Log entries before this sequence number were dropped.
    pub log_trimmed_before: Option<u64>,
}

/// The growing lists of a [`PendingBackup`], which the store keeps one row
/// per element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PendingList {
    NewChunks,
    Reused,
    Receipted,
    Order,
    OrderStored,
}

impl PendingList {
    pub const ALL: [PendingList; 5] = [
        PendingList::NewChunks,
        PendingList::Reused,
        PendingList::Receipted,
        PendingList::Order,
        PendingList::OrderStored,
    ];

    /// How many elements `pending` holds in this list.
    pub fn len(self, pending: &PendingBackup) -> usize {
        match self {
            PendingList::NewChunks => pending.new_chunks.len(),
            PendingList::Reused => pending.reused.len(),
            PendingList::Receipted => pending.receipted.len(),
            PendingList::Order => pending.order.len(),
            PendingList::OrderStored => pending.order_stored.len(),
        }
    }
}

impl Touched {
    /// Pending backup `id`'s `list` changed from element `from` on.
    pub fn touch_list(&mut self, id: u64, list: PendingList, from: usize) {
        let at = self.pending_lists.entry((id, list)).or_insert(from);
        *at = (*at).min(from);
    }

    /// Pending backup `id` is new or rewritten whole.
    pub fn touch_pending_whole(&mut self, id: u64) {
        self.pending.insert(id);
        for list in PendingList::ALL {
            self.touch_list(id, list, 0);
        }
    }

    /// Adds what `other` touched (several commands applied as one batch).
    pub fn merge(&mut self, other: Touched) {
        self.mode |= other.mode;
        self.counters |= other.counters;
        self.clients.extend(other.clients);
        self.profiles.extend(other.profiles);
        self.chunks.extend(other.chunks);
        self.targets.extend(other.targets);
        self.snapshots.extend(other.snapshots);
        self.pending.extend(other.pending);
        for (key, from) in other.pending_lists {
            self.touch_list(key.0, key.1, from);
        }
        self.target_packets.extend(other.target_packets);
        self.assemblies.extend(other.assemblies);
        self.garbage.extend(other.garbage);
        self.log_from = match (self.log_from, other.log_from) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.log_trimmed_before = self.log_trimmed_before.max(other.log_trimmed_before);
    }
}
