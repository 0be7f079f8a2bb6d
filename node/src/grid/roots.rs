//! Snapshot roots (issue 18, SPEC R15): what a source keeps so its snapshots
//! outlive the coordinator group. After a commit, the snapshot's sequence
//! as the manager sealed it to the owner (it carries the stripe → target map
//! a restore needs) is wrapped with the snapshot's listing (id, set, time,
//! bytes) into a [`RootDocument`], encrypted with the chunk AEAD under a key
//! derived from the owner's private secret, and framed as an ordinary
//! replica packet (the data packet format). That packet is kept in the
//! source's data dir (`roots/`) and is what goes to targets marked as a root
//! (`MarkRoot`, found again with `ListRoots` by the same node id).
//!
//! Nothing in a root packet is readable without the owner's private secret:
//! the set name, the snapshot id and the sequence are inside the AEAD, and
//! the sequence is sealed to the owner's X25519 key as well. Owns the
//! document, its packet and the local copies; finding and fetching roots on
//! the grid is `recover`'s.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strew_coordinator::seal::{SealedForRecipient, Sequence as SealedSequence, open_as_recipient};
use strew_coordinator::units::Redundancy;
use strew_coordinator::{BackupParams, MemberCert, PacketId, SnapshotAttestation, SnapshotId};

use super::{ManagerApi, SourceIdentity};
use crate::pipeline::codec::{Codec, StripeError};
use crate::pipeline::packet::{self, FormatError};
use crate::pipeline::secret::{ChunkKey, ConvergenceSecret};

/// The data dir's folder of this source's root packets (one file per snapshot).
pub const ROOTS_DIR: &str = "roots";
/// Version of the [`RootDocument`] layout.
pub const ROOT_VERSION: u8 = 1;
/// Largest root packet (what a target takes with `PutRoot`). A larger
/// sequence gets no root (a warning in the backup's answer).
pub const MAX_ROOT_BYTES: usize = strew_overlay::packet::MAX_ROOT_PACKET_BYTES;
/// Copies of each root kept on distinct targets.
pub const ROOT_COPIES: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("cannot fetch the snapshot's sequence: {0}")]
    Sequence(String),
    #[error("root document encoding: {0}")]
    Encode(String),
    #[error("the root document of {bytes} bytes exceeds the root limit of {MAX_ROOT_BYTES}")]
    TooLarge { bytes: usize },
    #[error("not a root packet: {0}")]
    Format(#[from] FormatError),
    #[error("the root does not open with this owner's secret")]
    NotOurs(#[source] StripeError),
    #[error("the root's sequence does not open with this node's key")]
    Seal(#[source] strew_coordinator::seal::SealError),
    #[error("unknown root document version {0}")]
    Version(u8),
    #[error("local roots folder {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Everything needed to list and restore one snapshot without a manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootDocument {
    pub version: u8,
    pub snapshot: SnapshotId,
    pub set: String,
    pub time_ms: u64,
    pub bytes: u64,
    /// The sequence as the manager sealed it to the owner (AAD: the snapshot id).
    pub sealed: SealedForRecipient,
    /// The set's backup parameters (a rebuilt group's repair needs them).
    #[serde(default)]
    pub params: Option<BackupParams>,
    /// The manager's signed attestation of the sequence and the signer's
    /// grid-key certificate: what a rebuilt coordinator group believes when
    /// the owner re-registers the snapshot (`crate::grid::rebuild`).
    #[serde(default)]
    pub attestation: Option<SnapshotAttestation>,
    #[serde(default)]
    pub cert: Option<MemberCert>,
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

/// The root packet of `doc`: one replica packet in the data packet format.
pub fn encode_root(
    doc: &RootDocument,
    owner: &ConvergenceSecret,
) -> Result<(PacketId, Vec<u8>), RootError> {
    let plain =
        strew_coordinator::cbor::encode(doc).map_err(|e| RootError::Encode(e.to_string()))?;
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

/// Opens a root packet with the owner's secret (the document) and this
/// node's X25519 secret (its sequence).
pub fn open_root(
    bytes: &[u8],
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
) -> Result<(RootDocument, SealedSequence), RootError> {
    let (_, shard) = packet::decode_packet(bytes)?;
    let key = root_document_key(owner);
    let plain = codec(owner)
        .open_blob(&key, shard, false)
        .map_err(RootError::NotOurs)?;
    let doc: RootDocument =
        strew_coordinator::cbor::decode(&plain).map_err(|e| RootError::Encode(e.to_string()))?;
    if doc.version != ROOT_VERSION {
        return Err(RootError::Version(doc.version));
    }
    let secret = x25519_dalek::StaticSecret::from(me.x25519_secret);
    let seq_bytes = open_as_recipient(&secret, doc.snapshot.as_bytes(), &doc.sealed)
        .map_err(RootError::Seal)?;
    let seq = SealedSequence::from_bytes(&seq_bytes).map_err(RootError::Seal)?;
    Ok((doc, seq))
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

/// After a commit: fetches the snapshot's sealed sequence (with the
/// manager's attestation of it) and builds its root packet.
pub async fn make_root<M: ManagerApi>(
    manager: &M,
    owner: &ConvergenceSecret,
    listing: RootListing,
) -> Result<(PacketId, Vec<u8>), RootError> {
    let attested = manager
        .fetch_attested_sequence(listing.snapshot)
        .await
        .map_err(|e| RootError::Sequence(e.to_string()))?;
    encode_root(
        &RootDocument {
            version: ROOT_VERSION,
            snapshot: listing.snapshot,
            set: listing.set,
            time_ms: listing.time_ms,
            bytes: listing.bytes,
            sealed: attested.sealed,
            params: Some(listing.params),
            attestation: attested.attestation,
            cert: attested.cert,
        },
        owner,
    )
}

/// Where a snapshot's root went.
#[derive(Debug, Clone)]
pub struct RootKept {
    pub id: PacketId,
    /// Targets that took a copy (`PutRoot`).
    pub copies: Vec<strew_coordinator::NodeId>,
}

/// The snapshot's own targets, those holding most of its packets first:
/// where its root copies go (placement follows the snapshot's constraints).
pub fn root_targets(seq: &SealedSequence) -> Vec<strew_coordinator::NodeId> {
    let mut count: std::collections::BTreeMap<strew_coordinator::NodeId, u64> =
        std::collections::BTreeMap::new();
    for t in seq
        .stripes
        .iter()
        .flat_map(|s| &s.packets)
        .flat_map(|e| &e.targets)
    {
        *count.entry(*t).or_default() += 1;
    }
    let mut targets: Vec<_> = count.into_iter().collect();
    targets.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    targets.into_iter().map(|(t, _)| t).collect()
}

/// After a commit: builds the snapshot's root, keeps it in
/// `data_dir/roots/` and stores up to [`ROOT_COPIES`] copies on the
/// snapshot's own targets.
pub async fn keep_root<M: ManagerApi>(
    manager: &M,
    overlay: &strew_overlay::OverlayHandle,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
    listing: RootListing,
) -> Result<RootKept, RootError> {
    let snapshot = listing.snapshot;
    let (id, bytes) = make_root(manager, owner, listing).await?;
    let (dir, local) = (data_dir.to_path_buf(), bytes.clone());
    tokio::task::spawn_blocking(move || {
        save_local(&dir, &id, &local)?;
        save_name(&dir, &snapshot, &id)
    })
    .await
    .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    let (_, seq) = open_root(&bytes, owner, me)?;
    let mut copies = Vec::new();
    for target in root_targets(&seq) {
        if copies.len() >= usize::from(ROOT_COPIES) {
            break;
        }
        match overlay.put_root(target, bytes.clone()).await {
            Ok(()) => copies.push(target),
            Err(err) => tracing::warn!(%target, %err, "a snapshot root copy was refused"),
        }
    }
    Ok(RootKept { id, copies })
}

/// Targets asked to drop a forgotten snapshot's root at most (its copies
/// went to the first of its targets that took one).
const MAX_DROP_ASKS: usize = 16;

/// What dropping a forgotten snapshot's root did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RootDropped {
    /// The root packet, if this node kept one for the snapshot.
    pub root: Option<PacketId>,
    /// Targets that held a copy and dropped it.
    pub copies_dropped: usize,
}

/// After a forget: finds the snapshot's root among this node's local roots,
/// asks the targets that may hold a copy (the snapshot's targets, in the
/// order [`keep_root`] tried them, until [`ROOT_COPIES`] confirmed or
/// [`MAX_DROP_ASKS`] were asked) to drop it, and deletes the local copy.
/// Without this, every target keeps at most `MAX_ROOTS_PER_HOLDER` roots of
/// a node and refuses new ones once forgotten snapshots fill them. A target
/// that cannot be reached keeps its copy (recovery may list the forgotten
/// snapshot from it).
pub async fn drop_root(
    overlay: &strew_overlay::OverlayHandle,
    me: &SourceIdentity,
    owner: &ConvergenceSecret,
    data_dir: &Path,
    snapshot: SnapshotId,
) -> Result<RootDropped, RootError> {
    let (dir, owner_, me_) = (data_dir.to_path_buf(), owner.clone(), me.clone());
    let found = tokio::task::spawn_blocking(move || find_local(&dir, &owner_, &me_, &snapshot))
        .await
        .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    let Some((id, seq)) = found else {
        return Ok(RootDropped::default());
    };
    let mut dropped = 0;
    for target in root_targets(&seq).into_iter().take(MAX_DROP_ASKS) {
        if dropped >= usize::from(ROOT_COPIES) {
            break;
        }
        match overlay.drop_root(target, id).await {
            Ok(true) => dropped += 1,
            Ok(false) => {}
            Err(err) => tracing::debug!(%target, %err, "a snapshot root copy was not dropped"),
        }
    }
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || remove_local(&dir, &snapshot, &id))
        .await
        .map_err(|e| RootError::Encode(format!("root task failed: {e}")))??;
    Ok(RootDropped {
        root: Some(id),
        copies_dropped: dropped,
    })
}

/// The local root of `snapshot` and its sequence: by the name file
/// [`keep_root`] wrote, else by opening every local root.
fn find_local(
    data_dir: &Path,
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
    snapshot: &SnapshotId,
) -> Result<Option<(PacketId, SealedSequence)>, RootError> {
    let dir = data_dir.join(ROOTS_DIR);
    let named = std::fs::read_to_string(name_path(data_dir, snapshot))
        .ok()
        .and_then(|text| text.trim().parse::<PacketId>().ok());
    if let Some(id) = named
        && let Ok(bytes) = std::fs::read(dir.join(format!("{id}.root")))
        && let Ok((doc, seq)) = open_root(&bytes, owner, me)
        && &doc.snapshot == snapshot
    {
        return Ok(Some((id, seq)));
    }
    for (id, bytes) in load_local(data_dir)? {
        if let Ok((doc, seq)) = open_root(&bytes, owner, me)
            && &doc.snapshot == snapshot
        {
            return Ok(Some((id, seq)));
        }
    }
    Ok(None)
}

/// `roots/<snapshot>.of`: the id of the snapshot's root packet.
fn name_path(data_dir: &Path, snapshot: &SnapshotId) -> PathBuf {
    data_dir.join(ROOTS_DIR).join(format!("{snapshot}.of"))
}

fn save_name(data_dir: &Path, snapshot: &SnapshotId, id: &PacketId) -> Result<(), RootError> {
    let path = name_path(data_dir, snapshot);
    std::fs::write(&path, id.to_string()).map_err(io(&path))
}

fn remove_local(data_dir: &Path, snapshot: &SnapshotId, id: &PacketId) -> Result<(), RootError> {
    for path in [
        data_dir.join(ROOTS_DIR).join(format!("{id}.root")),
        name_path(data_dir, snapshot),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Keeps a root packet in `data_dir/roots/` (named by its packet id).
pub fn save_local(data_dir: &Path, id: &PacketId, bytes: &[u8]) -> Result<PathBuf, RootError> {
    let dir = data_dir.join(ROOTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = dir.join(format!("{id}.root"));
    let tmp = dir.join(format!("{id}.root.tmp"));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// Keeps a root found on the grid in `data_dir/roots/` with its name file
/// (as [`keep_root`] would have), so a fresh machine's daemon upkeeps it
/// and re-registers it with a rebuilt group.
pub fn keep_found(
    data_dir: &Path,
    snapshot: &SnapshotId,
    id: &PacketId,
    bytes: &[u8],
) -> Result<(), RootError> {
    save_local(data_dir, id, bytes)?;
    save_name(data_dir, snapshot, id)
}

/// Every root packet kept in `data_dir/roots/` whose bytes still hash to
/// its name (others are skipped).
pub fn load_local(data_dir: &Path) -> Result<Vec<(PacketId, Vec<u8>)>, RootError> {
    let dir = data_dir.join(ROOTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(&dir))?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("root") {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let id = PacketId::of(&bytes);
        if path.file_stem().and_then(|s| s.to_str()) == Some(id.to_string().as_str()) {
            out.push((id, bytes));
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use strew_coordinator::seal::{SequenceEntry, SequenceStripe, seal_to_recipient};
    use strew_coordinator::{DataId, NodeId};

    use super::*;

    fn identity() -> SourceIdentity {
        SourceIdentity {
            node_id: NodeId([7; 32]),
            location: strew_coordinator::units::GeoPoint { lat: 0.0, lon: 0.0 },
            x25519_secret: [5; 32],
        }
    }

    fn document(me: &SourceIdentity, set: &str) -> (RootDocument, SealedSequence) {
        let snapshot = SnapshotId([0xab; 32]);
        let seq = SealedSequence {
            snapshot,
            manifest: DataId([1; 32]),
            manifest_chunks: vec![DataId([1; 32])],
            stripes: vec![SequenceStripe {
                data_id: DataId([1; 32]),
                packets: vec![SequenceEntry {
                    packet_id: PacketId([2; 32]),
                    size: 100,
                    targets: vec![NodeId([3; 32])],
                    generation: 0,
                }],
            }],
        };
        let public =
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(me.x25519_secret));
        let sealed = seal_to_recipient(
            public.as_bytes(),
            snapshot.as_bytes(),
            &seq.to_bytes().expect("sequence"),
            &mut rand::rngs::StdRng::seed_from_u64(3),
        )
        .expect("seal");
        let doc = RootDocument {
            version: ROOT_VERSION,
            snapshot,
            set: set.into(),
            time_ms: 1_700_000_000_000,
            bytes: 12345,
            sealed,
            params: None,
            attestation: None,
            cert: None,
        };
        (doc, seq)
    }

    #[test]
    fn a_root_opens_with_the_owners_secret_only_and_shows_no_names() {
        let me = identity();
        let owner = ConvergenceSecret::from_bytes([9; 32]);
        let set = "holiday-photos-of-the-owner";
        let (doc, seq) = document(&me, set);
        let (id, bytes) = encode_root(&doc, &owner).expect("encode");
        assert_eq!(id, PacketId::of(&bytes));
        let (opened, opened_seq) = open_root(&bytes, &owner, &me).expect("open");
        assert_eq!(opened, doc);
        assert_eq!(opened_seq, seq);

        // A target holding the packet sees no set name, snapshot id or owner id.
        let contains = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(set.as_bytes()));
        assert!(!contains(&doc.snapshot.0));
        assert!(!contains(doc.snapshot.to_string().as_bytes()));
        assert!(!contains(&me.node_id.0));

        // Another secret cannot open it.
        let other = ConvergenceSecret::from_bytes([8; 32]);
        assert!(matches!(
            open_root(&bytes, &other, &me),
            Err(RootError::NotOurs(_))
        ));
        // Garbage is refused, never a panic.
        for n in [0, 1, 10, bytes.len() / 2] {
            assert!(open_root(&bytes[..n], &owner, &me).is_err());
        }
    }

    #[test]
    fn local_roots_are_kept_by_id_and_tampered_files_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load_local(dir.path()).expect("empty").is_empty());
        let me = identity();
        let owner = ConvergenceSecret::from_bytes([9; 32]);
        let (doc, _) = document(&me, "set");
        let (id, bytes) = encode_root(&doc, &owner).expect("encode");
        let path = save_local(dir.path(), &id, &bytes).expect("save");
        assert_eq!(load_local(dir.path()).expect("load"), vec![(id, bytes)]);
        std::fs::write(&path, b"tampered").expect("write");
        assert!(load_local(dir.path()).expect("load").is_empty());
    }
}
