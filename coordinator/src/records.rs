//! The manager's metadata records (SPEC R3, claims 2–3, 31, 38, 53–59):
//! global client profile, source client profile, source data record, target
//! data record, data assembly record and global backup log, plus the snapshot
//! and pending-backup records that tie them together.
//!
//! Owns only the shapes (serde, CBOR-stable field names) and small pure
//! helpers on them. It must not apply changes (the state does) or touch redb
//! (the store does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::grid::NodeProfile;
use crate::ids::{DataId, NodeId, PacketId, SnapshotId};
use crate::quota::Subscription;
use crate::seal::SealedAtRest;
use crate::units::{DistanceRange, GeoPoint, Millis, Redundancy};

/// Global client profile: every node the manager knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub profile: NodeProfile,
    pub subscription: Subscription,
    /// Stored bytes (redundancy included) charged to this node as a source.
    pub source_stored_bytes: u64,
    pub joined_at: Millis,
    /// When the node was last marked offline (`SetOnline { online: false }`'s
    /// time), while it stays offline; `None` while online. The repair
    /// checker counts its packets as gone once this is `repair_grace` old.
    #[serde(default)]
    pub offline_since: Option<Millis>,
    /// What it moved through the grid today (its network quota).
    #[serde(default)]
    pub network: crate::quota::NetworkDay,
}

impl ClientRecord {
    /// Bytes this node donates under its contract.
    pub fn donated(&self) -> u64 {
        self.subscription.donated(self.profile.storage_allocated)
    }
}

/// How a backup set's chunks are compressed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compression {
    None,
    Zstd { level: i32 },
}

/// Scope of the convergence secret (who can dedup against whom).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConvergenceScope {
    /// Shared by the grid: identical data from any source dedups.
    Grid,
    /// Per user: dedup only across the user's own nodes.
    Private,
}

/// How a backup set's packets are encrypted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Encryption {
    /// The AEAD, e.g. `"chacha20poly1305"`.
    pub cipher: String,
    pub convergence: ConvergenceScope,
}

/// The parameters a source chooses for one backup set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackupParams {
    pub backup_distance: DistanceRange,
    pub spread: DistanceRange,
    pub redundancy: Redundancy,
    pub compression: Compression,
    pub encryption: Encryption,
    /// Re-synchronisation period in seconds; `None` = on demand only.
    pub sync_interval_secs: Option<u64>,
}

/// Source client profile: one backup set of one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceProfile {
    pub source: NodeId,
    pub set: String,
    /// DataId of the latest snapshot's manifest.
    pub data_id: Option<DataId>,
    pub location: GeoPoint,
    pub params: BackupParams,
    /// The latest snapshot's sequence, sealed under the group key.
    pub sealed_sequence: Option<SealedAtRest>,
    /// Snapshots of the set, oldest first.
    pub snapshots: Vec<SnapshotId>,
}

/// Key of a source profile: source and set name.
pub fn profile_key(source: &NodeId, set: &str) -> String {
    format!("{source}/{set}")
}

/// One packet where it is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StoredPacket {
    pub packet_id: PacketId,
    pub size: u64,
    pub target: NodeId,
    /// The storage generation the target recorded (from its receipt; in a
    /// plan, the one its store ticket asks for). Delete tickets name it.
    #[serde(default)]
    pub generation: u64,
}

/// Copies one chunk (one DataId) may have in the manager's records: a
/// source whose backup the first copy does not suit (its packets are not
/// the ones this source computed, are marked bad, or sit outside its
/// distance, spread or redundancy) uploads its own copy under the next free
/// key. Past this many the chunk's first good copy is reused.
pub const MAX_CHUNK_COPIES: u32 = 8;

/// The record key of copy `n` of chunk `data_id`: the DataId itself for
/// copy 0, a one-way derivation of it for the others.
pub fn chunk_copy_key(data_id: &DataId, n: u32) -> DataId {
    if n == 0 {
        return *data_id;
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"strew/chunk-copy/v1\0");
    hasher.update(data_id.as_bytes());
    hasher.update(&n.to_le_bytes());
    DataId(*hasher.finalize().as_bytes())
}

/// A small set of nodes kept as a sorted vector: a chunk record's sources
/// (most chunks have one). A `BTreeSet` of one node takes a whole B-tree leaf
/// (about 380 bytes); this takes the node's 32. Encoded as a CBOR array, as
/// the `BTreeSet` it replaced was, so records on disk read either way; a
/// decoded array is sorted and deduplicated before use.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct NodeSet(Vec<NodeId>);

impl NodeSet {
    pub fn new() -> NodeSet {
        NodeSet(Vec::new())
    }

    /// Adds `node`; `false` if it was there already.
    pub fn insert(&mut self, node: NodeId) -> bool {
        match self.0.binary_search(&node) {
            Ok(_) => false,
            Err(at) => {
                // Exactly one more: most sets stay at one or two nodes.
                self.0.reserve_exact(1);
                self.0.insert(at, node);
                true
            }
        }
    }

    pub fn contains(&self, node: &NodeId) -> bool {
        self.0.binary_search(node).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &NodeId> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<const N: usize> From<[NodeId; N]> for NodeSet {
    fn from(nodes: [NodeId; N]) -> NodeSet {
        nodes.into_iter().collect()
    }
}

impl FromIterator<NodeId> for NodeSet {
    fn from_iter<I: IntoIterator<Item = NodeId>>(nodes: I) -> NodeSet {
        let mut v: Vec<NodeId> = nodes.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        v.shrink_to_fit();
        NodeSet(v)
    }
}

impl<'de> Deserialize<'de> for NodeSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NodeSet, D::Error> {
        Ok(Vec::<NodeId>::deserialize(d)?.into_iter().collect())
    }
}

/// Source data record: one chunk (one stripe) and where its packets are.
/// Shared by every source holding identical data (dedup).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub data_id: DataId,
    /// Packet `j` of the stripe, in share order.
    pub packets: Vec<StoredPacket>,
    /// Snapshots referencing this chunk.
    pub refs: u64,
    /// Sources whose snapshots reference it.
    pub sources: NodeSet,
    /// The source charged for its stored bytes (the first to upload it).
    pub owner: NodeId,
    /// A source found its packets unusable (a restore or check failed on
    /// them): never reused for a new backup.
    #[serde(default)]
    pub bad: bool,
    /// The redundancy the copy was stored with (dedup reuses it only for
    /// backups asking no more).
    #[serde(default)]
    pub redundancy: Option<Redundancy>,
}

impl ChunkRecord {
    pub fn stored_bytes(&self) -> u64 {
        self.packets
            .iter()
            .fold(0u64, |sum, p| sum.saturating_add(p.size))
    }
}

/// Target data record: what one target holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetRecord {
    /// (PacketId → bytes). A target holds at most one copy of a PacketId.
    pub packets: BTreeMap<PacketId, u64>,
    pub bytes: u64,
    /// Bytes promised to pending backups, not yet confirmed.
    pub reserved: u64,
    /// Its audit history and score.
    #[serde(default)]
    pub audit: crate::audit::Reputation,
    /// Since when the node is leaving the grid (`strew leave`): it gets no
    /// new packets and everything it holds is rebuilt elsewhere.
    #[serde(default)]
    pub exiting_since: Option<Millis>,
}

/// One committed snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    pub id: SnapshotId,
    pub source: NodeId,
    pub set: String,
    /// DataId of the snapshot's manifest (as the source computed it).
    pub data_id: DataId,
    pub created_at: Millis,
    /// Plaintext bytes of the files backed up.
    pub bytes: u64,
    /// Chunks in sequence order (each distinct chunk once).
    pub chunks: Vec<DataId>,
    /// The sequence, sealed under the group key with the snapshot id as associated data.
    pub sealed_sequence: SealedAtRest,
    /// The pending backup it came from (makes commit retries idempotent).
    pub pending_id: u64,
    /// A snapshot of a lost group still being re-registered: how many of
    /// its attested pages are recorded (`None`: complete). Such a record is
    /// not listed, read or forgotten until its last page arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registering: Option<u32>,
}

/// A new chunk of a pending backup and the targets its packets go to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChunk {
    pub data_id: DataId,
    pub packets: Vec<StoredPacket>,
    /// The record key the copy is to be stored under (see
    /// [`chunk_copy_key`]); `None` is the DataId itself.
    #[serde(default)]
    pub key: Option<DataId>,
}

impl PlannedChunk {
    /// The record key of this copy.
    pub fn record_key(&self) -> DataId {
        self.key.unwrap_or(self.data_id)
    }
}

/// A backup whose packets are being uploaded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingBackup {
    pub id: u64,
    pub source: NodeId,
    pub set: String,
    pub location: GeoPoint,
    pub params: BackupParams,
    /// Chunks that need uploading, with their targets.
    pub new_chunks: Vec<PlannedChunk>,
    /// Chunks already stored (dedup): nothing to upload. Record keys.
    pub reused: Vec<DataId>,
    pub created_at: Millis,
    pub expires_at: Millis,
    /// Packets whose target receipts the manager verified before the commit
    /// (`RecordReceipts`, in pages), with the generation each receipt names.
    #[serde(default)]
    pub receipted: Vec<Receipted>,
    /// The snapshot's chunks (record keys) in sequence order, as far as
    /// the source has handed them in page by page (`Command::CommitOrder`)
    /// for a commit too large for one message; empty otherwise.
    #[serde(default)]
    pub order: Vec<DataId>,
    /// The new chunk copies those pages use, each under the record key its
    /// plan gave it (the commit moves a copy whose key was taken meanwhile).
    #[serde(default)]
    pub order_stored: Vec<PlannedChunk>,
}

/// One packet of a pending backup moved to a new target before any target
/// receipted it (`Command::RetargetBackup`): packet `index` of the planned
/// copy of `data_id` goes to `target`, under a new storage generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retarget {
    pub data_id: DataId,
    pub index: u32,
    pub target: NodeId,
    pub generation: u64,
}

/// One planned packet a target receipted: which, where, which generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipted {
    pub packet_id: PacketId,
    pub target: NodeId,
    pub generation: u64,
}

impl PendingBackup {
    /// Bytes each target must reserve (sums saturate: a plan that large is
    /// refused by every target's free space anyway).
    pub fn reservations(&self) -> BTreeMap<NodeId, u64> {
        let mut out: BTreeMap<NodeId, u64> = BTreeMap::new();
        for chunk in &self.new_chunks {
            for p in &chunk.packets {
                let sum = out.entry(p.target).or_insert(0);
                *sum = sum.saturating_add(p.size);
            }
        }
        out
    }

    pub fn stored_bytes(&self) -> u64 {
        self.new_chunks
            .iter()
            .flat_map(|c| &c.packets)
            .fold(0u64, |sum, p| sum.saturating_add(p.size))
    }
}

/// How a restore ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestoreOutcome {
    Started,
    Succeeded { bytes: u64 },
    Failed { reason: String },
}

/// Data assembly record: one restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssemblyRecord {
    pub id: u64,
    pub requester: NodeId,
    pub snapshot: SnapshotId,
    pub at: Millis,
    pub outcome: RestoreOutcome,
}

/// What happened, for the global backup log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogKind {
    Joined,
    BackupPlanned,
    BackupCommitted,
    BackupAborted,
    Forgotten,
    Restore,
    Repair,
    Failure,
    /// The group was marked rebuilt, or a source re-registered a snapshot.
    Rebuilt,
}

/// One entry of the append-only global backup log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEvent {
    pub seq: u64,
    pub at: Millis,
    pub kind: LogKind,
    pub node: NodeId,
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn a_node_set_is_a_sorted_set_encoded_as_the_btree_set_it_replaced() {
        let (a, b, c) = (NodeId([3; 32]), NodeId([1; 32]), NodeId([2; 32]));
        let mut set = NodeSet::new();
        assert!(set.is_empty());
        assert!(set.insert(a));
        assert!(set.insert(b));
        assert!(!set.insert(a), "already there");
        assert!(set.contains(&a) && set.contains(&b) && !set.contains(&c));
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![b, a]);
        // The same bytes as a BTreeSet, both ways.
        let old = BTreeSet::from([a, b]);
        let bytes = crate::cbor::encode(&set).unwrap();
        assert_eq!(bytes, crate::cbor::encode(&old).unwrap());
        assert_eq!(crate::cbor::decode::<NodeSet>(&bytes).unwrap(), set);
        // An array from elsewhere is sorted and deduplicated.
        let messy = crate::cbor::encode(&vec![a, c, a, b]).unwrap();
        let read: NodeSet = crate::cbor::decode(&messy).unwrap();
        assert_eq!(read, NodeSet::from([b, c, a]));
        assert!(read.contains(&c));
    }
}
