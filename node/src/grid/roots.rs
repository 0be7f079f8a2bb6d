//! Snapshot roots (issue 18, SPEC R15): what a source keeps so its snapshots
//! outlive the coordinator group. After a commit, the snapshot's sequence
//! as the manager sealed it to the owner (it carries the stripe → target map
//! a restore needs), in the pages the manager attested (512 stripes each,
//! fewer for wide stripes), is framed into root packets: part `i`
//! holds page `i`, and part 0 also the snapshot's listing (id, set, time,
//! bytes), its parameters and the manager's attestation (a
//! [`RootDocument`]). Each part is encrypted with the chunk AEAD under a key
//! derived from the owner's private secret and framed as an ordinary
//! replica packet (the data packet format), so no root packet grows with
//! the snapshot. The parts are kept in the source's data dir
//! ([`local`]) and go to the snapshot's targets as roots (`PutRoot`, found
//! again with `ListRoots` by the same node id), [`ROOT_COPIES`] copies each.
//!
//! Nothing in a root packet is readable without the owner's private secret:
//! the set name, the snapshot id and the sequence are inside the AEAD, and
//! the sequence is sealed to the owner's X25519 key as well. Owns the
//! format, assembling parts into a [`Root`], where copies go, making and
//! dropping a snapshot's root; finding roots on the grid is `recover`'s.

pub mod local;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strew_coordinator::attest::{page_digest, sequence_digest};
use strew_coordinator::seal::{SealedForRecipient, Sequence as SealedSequence, open_as_recipient};
use strew_coordinator::units::Redundancy;
use strew_coordinator::{
    BackupParams, MemberCert, NodeId, PacketId, SnapshotAttestation, SnapshotId,
};

use super::{ManagerApi, SourceIdentity};
use crate::pipeline::codec::{Codec, StripeError};
use crate::pipeline::packet::{self, FormatError};
use crate::pipeline::secret::{ChunkKey, ConvergenceSecret};

pub use local::{ROOTS_DIR, keep_found, load_local, local_roots};

/// Version of the [`RootPart`] layout (1 was one packet per snapshot).
pub const ROOT_VERSION: u8 = 2;
/// Largest root packet (what a target takes with `PutRoot`).
pub const MAX_ROOT_BYTES: usize = strew_overlay::packet::MAX_ROOT_PACKET_BYTES;
/// Copies of each root part kept on distinct targets.
pub const ROOT_COPIES: u8 = 3;
/// Most parts (attested pages) a root may have: 512 stripes each, about a
/// 4 TB snapshot, and what a target keeps for one owner.
pub const MAX_ROOT_PARTS: u32 = 8192;
/// Times a root is made again when the sequence changed (a repair moved a
/// packet) between the manager's attestation and the pages read.
const MAKE_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot fetch the snapshot's sequence: {0}")]
    Sequence(String),
    #[error("root document encoding: {0}")]
    Encode(String),
    #[error("a root part of {bytes} bytes exceeds the root limit of {MAX_ROOT_BYTES}")]
    TooLarge { bytes: usize },
    #[error("a root of {parts} parts exceeds the limit of {MAX_ROOT_PARTS}")]
    TooManyParts { parts: u32 },
    #[error("not a root packet: {0}")]
    Format(#[from] FormatError),
    #[error("the root does not open with this owner's secret")]
    NotOurs(#[source] StripeError),
    #[error("the root's sequence does not open with this node's key")]
    Seal(#[source] strew_coordinator::seal::SealError),
    #[error("unknown root document version {0}")]
    Version(u8),
    #[error("the root part is inconsistent: {0}")]
    Inconsistent(String),
    #[error("local roots folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a root states about its snapshot besides the sequence (in part 0):
/// everything needed to list it without a manager, and for a rebuilt group
/// to believe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootDocument {
    pub snapshot: SnapshotId,
    pub set: String,
    pub time_ms: u64,
    pub bytes: u64,
    /// The set's backup parameters (a rebuilt group's repair needs them).
    pub params: Option<BackupParams>,
    /// The manager's signed attestation of the sequence's pages and the
    /// signer's grid-key certificate: what a rebuilt coordinator group
    /// believes when the owner re-registers the snapshot
    /// (`crate::grid::rebuild`).
    pub attestation: Option<SnapshotAttestation>,
    pub cert: Option<MemberCert>,
}

/// One root packet's content: part `part` of the `parts` of a snapshot's
/// root.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootPart {
    pub version: u8,
    pub snapshot: SnapshotId,
    pub part: u32,
    pub parts: u32,
    /// Page `part` of the sequence as the manager sealed it to the owner
    /// (AAD: the snapshot id).
    pub sealed: SealedForRecipient,
    /// Part 0's only.
    pub doc: Option<RootDocument>,
}

/// Only a root document's version (every layout starts with it).
#[derive(Deserialize)]
struct Versioned {
    version: u8,
}

/// A version 1 root: one packet holding the whole sequence, made before
/// roots were cut in attested pages. It still lists and restores with
/// `--from-grid`; its attestation (of the whole sequence) is not read, so a
/// rebuilt group does not take it.
#[derive(Deserialize)]
struct LegacyRoot {
    snapshot: SnapshotId,
    set: String,
    time_ms: u64,
    bytes: u64,
    sealed: SealedForRecipient,
    #[serde(default)]
    params: Option<BackupParams>,
}

impl LegacyRoot {
    fn into_part(self) -> RootPart {
        RootPart {
            version: 1,
            snapshot: self.snapshot,
            part: 0,
            parts: 1,
            sealed: self.sealed,
            doc: Some(RootDocument {
                snapshot: self.snapshot,
                set: self.set,
                time_ms: self.time_ms,
                bytes: self.bytes,
                params: self.params,
                attestation: None,
                cert: None,
            }),
        }
    }
}

/// One root packet, opened.
#[derive(Debug, Clone)]
pub struct OpenedPart {
    pub id: PacketId,
    pub bytes: Vec<u8>,
    pub part: RootPart,
    /// Its page of the sequence.
    pub page: SealedSequence,
}

/// A snapshot's whole root: its document and every part, in order.
#[derive(Debug, Clone)]
pub struct Root {
    pub doc: RootDocument,
    pub parts: Vec<OpenedPart>,
}

impl Root {
    pub fn ids(&self) -> Vec<PacketId> {
        self.parts.iter().map(|p| p.id).collect()
    }

    /// The whole sequence (the pages joined).
    pub fn sequence(&self) -> SealedSequence {
        let mut pages = self.parts.iter().map(|p| &p.page);
        let mut whole = pages.next().cloned().unwrap_or(SealedSequence {
            snapshot: self.doc.snapshot,
            manifest: strew_coordinator::DataId([0; 32]),
            manifest_chunks: Vec::new(),
            stripes: Vec::new(),
        });
        for page in pages {
            whole.stripes.extend(page.stripes.iter().cloned());
        }
        whole
    }

    /// The snapshot's targets, those holding most of its packets first.
    pub fn targets(&self) -> Vec<NodeId> {
        root_targets(self.parts.iter().map(|p| &p.page))
    }
}

/// The key of every root document of an owner (the owner's private secret,
/// through its own derivation context). The blob nonce is synthetic over
/// the payload, so two documents never share a nonce.
pub fn root_document_key(owner: &ConvergenceSecret) -> ChunkKey {
    ChunkKey(blake3::derive_key(
        "strew snapshot root document v1",
        owner.as_bytes(),
    ))
}

fn codec(owner: &ConvergenceSecret) -> Codec {
    Codec {
        secret: owner.clone(),
        zstd_level: 3,
        redundancy: Redundancy::Replicas { n: ROOT_COPIES },
    }
}

/// The root packet of `part`: one replica packet in the data packet format.
pub fn encode_part(
    part: &RootPart,
    owner: &ConvergenceSecret,
) -> Result<(PacketId, Vec<u8>), RootError> {
    let plain =
        strew_coordinator::cbor::encode(part).map_err(|e| RootError::Encode(e.to_string()))?;
    let stripe = codec(owner).encode(&root_document_key(owner), &plain);
    let (id, bytes) = stripe
        .packets
        .into_iter()
        .next()
        .ok_or_else(|| RootError::Encode("the codec made no packet".into()))?;
    if bytes.len() > MAX_ROOT_BYTES {
        return Err(RootError::TooLarge { bytes: bytes.len() });
    }
    Ok((id, bytes))
}

/// The root packets of a snapshot: `doc` and its sequence's `pages` (as the
/// manager sealed them), part `i` holding page `i`.
pub fn encode_root(
    doc: &RootDocument,
    pages: Vec<SealedForRecipient>,
    owner: &ConvergenceSecret,
) -> Result<Vec<(PacketId, Vec<u8>)>, RootError> {
    let parts = u32::try_from(pages.len()).unwrap_or(u32::MAX);
    if parts == 0 || parts > MAX_ROOT_PARTS {
        return Err(RootError::TooManyParts { parts });
    }
    pages
        .into_iter()
        .enumerate()
        .map(|(i, sealed)| {
            encode_part(
                &RootPart {
                    version: ROOT_VERSION,
                    snapshot: doc.snapshot,
                    part: i as u32,
                    parts,
                    sealed,
                    doc: (i == 0).then(|| doc.clone()),
                },
                owner,
            )
        })
        .collect()
}

/// Opens a root packet with the owner's secret (the part) and this node's
/// X25519 secret (its page of the sequence).
pub fn open_part(
    bytes: Vec<u8>,
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
) -> Result<OpenedPart, RootError> {
    let (_, shard) = packet::decode_packet(&bytes)?;
    let key = root_document_key(owner);
    let plain = codec(owner)
        .open_blob(&key, shard, false)
        .map_err(RootError::NotOurs)?;
    let decode_error = |e: strew_coordinator::CborError| RootError::Encode(e.to_string());
    let versioned: Versioned = strew_coordinator::cbor::decode(&plain).map_err(decode_error)?;
    let part = match versioned.version {
        ROOT_VERSION => {
            strew_coordinator::cbor::decode::<RootPart>(&plain).map_err(decode_error)?
        }
        1 => strew_coordinator::cbor::decode::<LegacyRoot>(&plain)
            .map_err(decode_error)?
            .into_part(),
        other => return Err(RootError::Version(other)),
    };
    if part.part >= part.parts
        || part.parts > MAX_ROOT_PARTS
        || (part.part == 0) != part.doc.is_some()
        || part
            .doc
            .as_ref()
            .is_some_and(|d| d.snapshot != part.snapshot)
    {
        return Err(RootError::Inconsistent(format!(
            "part {} of {}",
            part.part, part.parts
        )));
    }
    let secret = x25519_dalek::StaticSecret::from(me.x25519_secret);
    let seq_bytes = open_as_recipient(&secret, part.snapshot.as_bytes(), &part.sealed)
        .map_err(RootError::Seal)?;
    let page = SealedSequence::from_bytes(&seq_bytes).map_err(RootError::Seal)?;
    if page.snapshot != part.snapshot {
        return Err(RootError::Inconsistent(
            "the page is another snapshot's".into(),
        ));
    }
    Ok(OpenedPart {
        id: PacketId::of(&bytes),
        bytes,
        part,
        page,
    })
}

/// Whole roots from opened parts (any order, repeats and strays allowed):
/// a snapshot's root is complete when every part of one version of it is
/// there; incomplete ones are left out. Returns the roots and how many
/// snapshots had only some parts.
pub fn assemble(parts: impl IntoIterator<Item = OpenedPart>) -> (Vec<Root>, usize) {
    // (snapshot, parts) → part index → part.
    let mut by_root: BTreeMap<(SnapshotId, u32), BTreeMap<u32, OpenedPart>> = BTreeMap::new();
    for p in parts {
        by_root
            .entry((p.part.snapshot, p.part.parts))
            .or_default()
            .entry(p.part.part)
            .or_insert(p);
    }
    let mut roots: BTreeMap<SnapshotId, Root> = BTreeMap::new();
    let mut partial: std::collections::BTreeSet<SnapshotId> = Default::default();
    for ((snapshot, count), parts) in by_root {
        let complete = parts.len() as u32 == count;
        let doc = parts.get(&0).and_then(|p| p.part.doc.clone());
        let consistent = parts.values().all(|p| {
            parts.get(&0).is_some_and(|first| {
                p.page.manifest == first.page.manifest
                    && p.page.manifest_chunks == first.page.manifest_chunks
            })
        });
        match doc {
            Some(doc) if complete && consistent && !roots.contains_key(&snapshot) => {
                roots.insert(
                    snapshot,
                    Root {
                        doc,
                        parts: parts.into_values().collect(),
                    },
                );
            }
            _ => {
                partial.insert(snapshot);
            }
        }
    }
    partial.retain(|s| !roots.contains_key(s));
    (roots.into_values().collect(), partial.len())
}

/// What a committed backup tells [`make_root`] about its snapshot.
#[derive(Debug, Clone)]
pub struct RootListing {
    pub snapshot: SnapshotId,
    pub set: String,
    pub time_ms: u64,
    pub bytes: u64,
    pub params: BackupParams,
}

/// A root just made and kept in `data_dir/roots/`: its packets (part
/// order) and the snapshot's targets, those holding most of its packets
/// first.
#[derive(Debug)]
pub struct MadeRoot {
    pub ids: Vec<PacketId>,
    pub targets: Vec<NodeId>,
}

/// After a commit: fetches the manager's attestation of the snapshot's
/// sequence and the sequence in the attested pages (sealed to this node),
/// makes each page's root part and keeps it in `data_dir/roots/` as it
/// goes, and checks the pages were the ones attested (else reads them
/// again: a repair moved a packet meanwhile). Holds one page at a time,
/// never the opened sequence: a root of any size costs one part's memory.
pub async fn make_root<M: ManagerApi>(
    manager: &M,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
    listing: RootListing,
) -> Result<MadeRoot, RootError> {
    let snapshot = listing.snapshot;
    let secret = x25519_dalek::StaticSecret::from(me.x25519_secret);
    let mut last = String::new();
    for _ in 0..MAKE_ATTEMPTS {
        let attested = manager
            .fetch_attestation(snapshot)
            .await
            .map_err(|e| RootError::Sequence(e.to_string()))?;
        let what = attested.attestation.what.clone();
        let (stripes, page_len, parts) = (what.stripes, what.page, what.pages());
        if parts == 0 || parts > MAX_ROOT_PARTS {
            return Err(RootError::TooManyParts { parts });
        }
        let doc = RootDocument {
            snapshot,
            set: listing.set.clone(),
            time_ms: listing.time_ms,
            bytes: listing.bytes,
            params: Some(listing.params.clone()),
            attestation: Some(attested.attestation),
            cert: attested.cert,
        };
        let mut ids = Vec::with_capacity(parts as usize);
        let mut digests = Vec::with_capacity(parts as usize);
        let mut count = BTreeMap::new();
        for page in 0..parts {
            let (sealed, total) = manager
                .fetch_sequence_page(snapshot, what.range(page).start, page_len)
                .await
                .map_err(|e| RootError::Sequence(e.to_string()))?;
            let plain = open_as_recipient(&secret, snapshot.as_bytes(), &sealed)
                .map_err(RootError::Seal)?;
            let opened = SealedSequence::from_bytes(&plain).map_err(RootError::Seal)?;
            if total != stripes {
                break;
            }
            digests.push(page_digest(&opened).map_err(|e| RootError::Encode(e.to_string()))?);
            count_targets(&mut count, &opened);
            let part = RootPart {
                version: ROOT_VERSION,
                snapshot,
                part: page,
                parts,
                sealed,
                doc: (page == 0).then(|| doc.clone()),
            };
            let (id, bytes) = encode_part(&part, owner)?;
            let dir = data_dir.to_path_buf();
            tokio::task::spawn_blocking(move || local::save_local(&dir, &id, &bytes))
                .await
                .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
            ids.push(id);
        }
        if digests.len() != parts as usize
            || sequence_digest(&digests) != doc.attestation.as_ref().map_or([0; 32], |a| a.sequence)
        {
            local::remove_local(data_dir, &snapshot, &ids)?;
            last = "the sequence changed while its pages were read".into();
            continue;
        }
        local::save_name(data_dir, &snapshot, &ids)?;
        return Ok(MadeRoot {
            ids,
            targets: by_count(count),
        });
    }
    Err(RootError::Sequence(last))
}

/// Where a snapshot's root went.
#[derive(Debug, Clone)]
pub struct RootKept {
    /// Its packets, part order.
    pub ids: Vec<PacketId>,
    /// Copies of the part with the fewest (`PutRoot` accepted).
    pub copies: usize,
}

/// The targets of `pages`, those holding most of the snapshot's packets
/// first: where its root copies go (placement follows the snapshot's
/// constraints).
pub fn root_targets<'a>(pages: impl IntoIterator<Item = &'a SealedSequence>) -> Vec<NodeId> {
    let mut count = BTreeMap::new();
    for page in pages {
        count_targets(&mut count, page);
    }
    by_count(count)
}

/// Adds `page`'s packets to each target's count.
fn count_targets(count: &mut BTreeMap<NodeId, u64>, page: &SealedSequence) {
    for t in page
        .stripes
        .iter()
        .flat_map(|s| &s.packets)
        .flat_map(|e| &e.targets)
    {
        *count.entry(*t).or_default() += 1;
    }
}

/// Targets by their count, most first (ties by id).
fn by_count(count: BTreeMap<NodeId, u64>) -> Vec<NodeId> {
    let mut targets: Vec<_> = count.into_iter().collect();
    targets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    targets.into_iter().map(|(t, _)| t).collect()
}

/// The targets asked for part `part`'s copies, in order: the snapshot's
/// targets turned by `part × ROOT_COPIES`, so the parts of a large root
/// spread over its targets instead of all landing on the first three.
pub fn part_targets(targets: &[NodeId], part: u32, most: usize) -> Vec<NodeId> {
    if targets.is_empty() {
        return Vec::new();
    }
    let start = (part as usize).saturating_mul(usize::from(ROOT_COPIES)) % targets.len();
    targets
        .iter()
        .cycle()
        .skip(start)
        .take(targets.len().min(most))
        .copied()
        .collect()
}

/// Targets of one part asked at most when placing, keeping or dropping it.
pub const MAX_ASKS_PER_PART: usize = 16;

/// After a commit: makes the snapshot's root, keeps it locally, and offers
/// [`ROOT_COPIES`] copies of each part to the snapshot's targets (part `i`
/// from the targets turned by `3·i`, so the parts spread), reading one part
/// at a time back from the local copy.
pub async fn keep_root<M: ManagerApi>(
    manager: &M,
    overlay: &strew_overlay::OverlayHandle,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
    listing: RootListing,
) -> Result<RootKept, RootError> {
    let MadeRoot { ids, targets } = make_root(manager, me, owner, data_dir, listing).await?;
    let mut fewest = usize::MAX;
    for (i, id) in ids.iter().enumerate() {
        let (dir, id) = (data_dir.to_path_buf(), *id);
        let bytes = tokio::task::spawn_blocking(move || local::read_local(&dir, &id))
            .await
            .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
        let mut copies = 0;
        for target in part_targets(&targets, i as u32, MAX_ASKS_PER_PART) {
            if copies >= usize::from(ROOT_COPIES) {
                break;
            }
            match overlay.put_root(target, bytes.clone()).await {
                Ok(()) => copies += 1,
                Err(err) => tracing::warn!(%target, %err, "a snapshot root copy was refused"),
            }
        }
        fewest = fewest.min(copies);
    }
    Ok(RootKept {
        ids,
        copies: if fewest == usize::MAX { 0 } else { fewest },
    })
}

/// What dropping a forgotten snapshot's root did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RootDropped {
    /// The root's packets, if this node kept one for the snapshot.
    pub root: Vec<PacketId>,
    /// Copies targets held and dropped.
    pub copies_dropped: usize,
}

/// After a forget: finds the snapshot's root among this node's local roots,
/// asks the targets that may hold a copy of each part (in the order
/// [`keep_root`] tried them, until [`ROOT_COPIES`] confirmed or
/// [`MAX_ASKS_PER_PART`] were asked) to drop it, and deletes the local copy.
/// Without this, a target's roots for a node fill up with forgotten
/// snapshots and it refuses new ones. A target that cannot be reached keeps
/// its copy (recovery may list the forgotten snapshot from it).
pub async fn drop_root(
    overlay: &strew_overlay::OverlayHandle,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
    snapshot: SnapshotId,
) -> Result<RootDropped, RootError> {
    let (dir, owner_, me_) = (data_dir.to_path_buf(), owner.clone(), me.clone());
    let found =
        tokio::task::spawn_blocking(move || local::find_local(&dir, &owner_, &me_, &snapshot))
            .await
            .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    let Some(root) = found else {
        return Ok(RootDropped::default());
    };
    let targets = root.targets();
    let mut dropped = 0;
    for part in &root.parts {
        let mut confirmed = 0;
        for target in part_targets(&targets, part.part.part, MAX_ASKS_PER_PART) {
            if confirmed >= usize::from(ROOT_COPIES) {
                break;
            }
            match overlay.drop_root(target, part.id).await {
                Ok(true) => confirmed += 1,
                Ok(false) => {}
                Err(err) => tracing::debug!(%target, %err, "a snapshot root copy was not dropped"),
            }
        }
        dropped += confirmed;
    }
    let (dir, ids) = (data_dir.to_path_buf(), root.ids());
    tokio::task::spawn_blocking(move || local::remove_local(&dir, &snapshot, &ids))
        .await
        .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    Ok(RootDropped {
        root: root.ids(),
        copies_dropped: dropped,
    })
}

/// Every root packet id `peer` holds for this node (every page of
/// `ListRoots`, at most `max_pages`).
pub async fn held_by(
    overlay: &strew_overlay::OverlayHandle,
    peer: NodeId,
    max_pages: usize,
) -> Result<Vec<PacketId>, strew_overlay::OverlayError> {
    let mut ids = Vec::new();
    let mut after = None;
    for _ in 0..max_pages {
        let page = overlay.list_roots(peer, after).await?;
        let full = page.len() == strew_overlay::packet::MAX_ROOTS_PAGE;
        after = page.last().copied();
        ids.extend(page);
        if !full {
            break;
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use strew_coordinator::DataId;
    use strew_coordinator::attest::ATTEST_PAGE;
    use strew_coordinator::seal::{SequenceEntry, SequenceStripe, seal_to_recipient};

    use super::*;

    fn identity() -> SourceIdentity {
        SourceIdentity {
            node_id: NodeId([7; 32]),
            location: strew_coordinator::units::GeoPoint { lat: 0.0, lon: 0.0 },
            x25519_secret: [5; 32],
        }
    }

    /// A root document and its sequence's pages (`stripes` stripes over
    /// twelve targets), sealed to `me`.
    fn document(
        me: &SourceIdentity,
        set: &str,
        stripes: usize,
    ) -> (RootDocument, Vec<SealedSequence>, Vec<SealedForRecipient>) {
        let snapshot = SnapshotId([0xab; 32]);
        let seq = SealedSequence {
            snapshot,
            manifest: DataId([1; 32]),
            manifest_chunks: vec![DataId([1; 32])],
            stripes: (0..stripes)
                .map(|i| SequenceStripe {
                    data_id: DataId(*blake3::hash(&i.to_le_bytes()).as_bytes()),
                    packets: vec![SequenceEntry {
                        packet_id: PacketId(*blake3::hash(&(i + 1).to_le_bytes()).as_bytes()),
                        size: 100,
                        targets: vec![NodeId([(i % 12) as u8 + 20; 32])],
                        generation: 3,
                    }],
                })
                .collect(),
        };
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(me.x25519_secret));
        let pages = strew_coordinator::attest::pages_of(&seq, ATTEST_PAGE as u32);
        let sealed = pages
            .iter()
            .map(|p| {
                seal_to_recipient(
                    public.as_bytes(),
                    snapshot.as_bytes(),
                    &p.to_bytes().expect("page"),
                    &mut rand::rngs::StdRng::seed_from_u64(3),
                )
                .expect("seal")
            })
            .collect();
        let doc = RootDocument {
            snapshot,
            set: set.into(),
            time_ms: 1_700_000_000_000,
            bytes: 12345,
            params: None,
            attestation: None,
            cert: None,
        };
        (doc, pages, sealed)
    }

    fn open_all(packets: &[(PacketId, Vec<u8>)], owner: &ConvergenceSecret) -> Vec<OpenedPart> {
        packets
            .iter()
            .map(|(_, b)| open_part(b.clone(), owner, &identity()).expect("opens"))
            .collect()
    }

    #[test]
    fn a_root_opens_with_the_owners_secret_only_and_shows_no_names() {
        let me = identity();
        let owner = ConvergenceSecret::from_bytes([9; 32]);
        let set = "holiday-photos-of-the-owner";
        let (doc, pages, sealed) = document(&me, set, 2 * ATTEST_PAGE + 5);
        let packets = encode_root(&doc, sealed, &owner).expect("encode");
        assert_eq!(packets.len(), 3, "one part per attested page");
        let (roots, partial) = assemble(open_all(&packets, &owner));
        assert_eq!((roots.len(), partial), (1, 0));
        assert_eq!(roots[0].doc, doc);
        assert_eq!(
            roots[0].ids(),
            packets.iter().map(|(id, _)| *id).collect::<Vec<_>>()
        );
        let whole: Vec<_> = pages.iter().flat_map(|p| p.stripes.clone()).collect();
        assert_eq!(roots[0].sequence().stripes, whole);
        assert_eq!(roots[0].targets().len(), 12);

        for (id, bytes) in &packets {
            assert_eq!(*id, PacketId::of(bytes));
            assert!(bytes.len() <= MAX_ROOT_BYTES);
            // A target holding a part sees no set name, snapshot id or owner id.
            let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
            assert!(!contains(set.as_bytes()));
            assert!(!contains(&doc.snapshot.0));
            assert!(!contains(doc.snapshot.to_string().as_bytes()));
            assert!(!contains(&me.node_id.0));
            // Another secret cannot open it.
            let other = ConvergenceSecret::from_bytes([8; 32]);
            assert!(matches!(
                open_part(bytes.clone(), &other, &me),
                Err(RootError::NotOurs(_))
            ));
            // Garbage is refused, never a panic.
            for n in [0, 1, 10, bytes.len() / 2] {
                assert!(open_part(bytes[..n].to_vec(), &owner, &me).is_err());
            }
        }
    }

    #[test]
    fn a_version_1_root_still_opens_as_a_root_of_one_part() {
        #[derive(Serialize)]
        struct V1<'a> {
            version: u8,
            snapshot: SnapshotId,
            set: &'a str,
            time_ms: u64,
            bytes: u64,
            sealed: SealedForRecipient,
            params: Option<BackupParams>,
            attestation: Option<u8>,
            cert: Option<u8>,
        }
        let me = identity();
        let owner = ConvergenceSecret::from_bytes([9; 32]);
        let (doc, pages, mut sealed) = document(&me, "old-set", 10);
        let v1 = V1 {
            version: 1,
            snapshot: doc.snapshot,
            set: "old-set",
            time_ms: doc.time_ms,
            bytes: doc.bytes,
            sealed: sealed.remove(0),
            params: None,
            attestation: None,
            cert: None,
        };
        let plain = strew_coordinator::cbor::encode(&v1).expect("encode");
        let stripe = codec(&owner).encode(&root_document_key(&owner), &plain);
        let (_, bytes) = stripe.packets.into_iter().next().expect("a packet");
        let (roots, _) = assemble([open_part(bytes, &owner, &me).expect("opens")]);
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].doc, doc);
        assert_eq!(roots[0].sequence(), pages[0]);
    }

    #[test]
    fn a_root_with_a_part_missing_is_not_assembled() {
        let me = identity();
        let owner = ConvergenceSecret::from_bytes([9; 32]);
        let (doc, _, sealed) = document(&me, "set", ATTEST_PAGE + 1);
        let packets = encode_root(&doc, sealed, &owner).expect("encode");
        let mut parts = open_all(&packets, &owner);
        // Repeats are fine.
        parts.push(parts[1].clone());
        let (roots, partial) = assemble(parts.clone());
        assert_eq!((roots.len(), partial), (1, 0));
        parts.retain(|p| p.part.part != 1);
        let (roots, partial) = assemble(parts);
        assert_eq!((roots.len(), partial), (0, 1));
    }

    #[test]
    fn parts_spread_over_the_snapshots_targets() {
        let targets: Vec<NodeId> = (0..7u8).map(|n| NodeId([n; 32])).collect();
        assert_eq!(part_targets(&targets, 0, 16), targets);
        let second = part_targets(&targets, 1, 16);
        assert_eq!(second[0], targets[3]);
        assert_eq!(second.len(), 7);
        assert_eq!(part_targets(&targets, 2, 2), vec![targets[6], targets[0]]);
        assert!(part_targets(&[], 3, 16).is_empty());
    }

    #[test]
    fn local_roots_are_kept_by_snapshot_and_tampered_files_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load_local(dir.path()).expect("empty").is_empty());
        let me = identity();
        let owner = ConvergenceSecret::from_bytes([9; 32]);
        let (doc, _, sealed) = document(&me, "set", ATTEST_PAGE + 1);
        let packets = encode_root(&doc, sealed, &owner).expect("encode");
        let (mut roots, _) = assemble(open_all(&packets, &owner));
        let root = roots.pop().expect("root");
        local::keep_found(dir.path(), &root).expect("keep");
        let listed = local_roots(dir.path()).expect("list");
        assert_eq!(listed, vec![(doc.snapshot, root.ids())]);
        let found = local::find_local(dir.path(), &owner, &me, &doc.snapshot)
            .expect("find")
            .expect("found");
        assert_eq!(found.doc, doc);
        assert_eq!(load_local(dir.path()).expect("load").len(), 2);
        // A damaged part: the root does not open, nothing panics.
        let path = dir
            .path()
            .join(ROOTS_DIR)
            .join(format!("{}.root", packets[1].0));
        std::fs::write(&path, b"tampered").expect("write");
        assert_eq!(load_local(dir.path()).expect("load").len(), 1);
        assert!(
            local::find_local(dir.path(), &owner, &me, &doc.snapshot)
                .expect("find")
                .is_none()
        );
        local::remove_local(dir.path(), &doc.snapshot, &root.ids()).expect("remove");
        assert!(local_roots(dir.path()).expect("list").is_empty());
        assert!(load_local(dir.path()).expect("load").is_empty());
    }
}
