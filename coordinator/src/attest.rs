//! Snapshot attestations (issue 18, SPEC R15): the sequence manager's signed
//! statement "snapshot S of source X (set, time, bytes, manifest) has exactly
//! this sequence", which a source keeps inside the snapshot's root.
//!
//! A coordinator group rebuilt after the whole group was lost believes a
//! source's re-registered root only through it: the attestation is signed by
//! a certified member of the old group (its node key), whose grid-key
//! certificate travels with it, and binds the sequence by a BLAKE3 digest.
//! A source therefore cannot register packets it never backed up (someone
//! else's, to have them deleted by a forget), nor another source's snapshot.
//!
//! A sequence is attested in pages of at most [`ATTEST_PAGE`] stripes, fewer
//! for wide stripes ([`attest_page_len`]; each page is the sequence's header
//! with a run of its stripes, as `FetchSequencePage` answers it): the signed
//! digest is over the pages' digests, so one page can be checked on its
//! own, and neither a root packet nor a re-registration (one raft entry)
//! grows with the snapshot or its stripes' width.
//!
//! Owns [`SnapshotAttestation`] (signing, offline verification against the
//! grid id), the paging, and [`Registration`], what a source hands a
//! rebuilt group one page at a time. This
//! module must not decide whether a group accepts registrations (the
//! state's rebuild mark does) nor do I/O.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{DataId, GridId, NodeId, SnapshotId};
use crate::records::BackupParams;
use crate::seal::Sequence;
use crate::trust::MemberCert;
use crate::units::Millis;

/// Domain separation for attestation signatures.
const ATTEST_CONTEXT: &[u8] = b"strew/snapshot-attestation/v1\0";
/// Domain separation for the digest over a sequence's page digests.
const PAGES_CONTEXT: &str = "strew snapshot attestation pages v2";
/// Format version of [`SnapshotAttestation`] (1 attested a whole sequence
/// by one digest; such roots still restore but are not believed).
pub const ATTEST_VERSION: u8 = 2;
/// Most stripes in one attested page (at width 6 and less).
pub const ATTEST_PAGE: usize = 512;
/// Encoded bytes a page aims at: well under one root packet and one raft
/// entry (1 MiB each) with the header and the sealing around it.
const PAGE_BUDGET: usize = 600_000;

/// Stripes per attested page for stripes of `width` packets: a sequence
/// entry is about 120 bytes encoded, so a page stays near [`PAGE_BUDGET`]
/// (512 at width 6 and less, 311 at width 16, 62 at width 80).
pub fn attest_page_len(width: usize) -> u32 {
    let per_stripe = width.max(1).saturating_mul(120).saturating_add(40);
    (PAGE_BUDGET / per_stripe).clamp(1, ATTEST_PAGE) as u32
}

/// Why an attestation or a registration is not believed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AttestError {
    #[error("attestation has format version {0}, this node understands {ATTEST_VERSION}")]
    UnknownVersion(u8),
    #[error("the attestation's signer {0} holds no valid certificate of this grid: {1}")]
    Uncertified(NodeId, String),
    #[error("the attestation's signature does not verify")]
    BadSignature,
    #[error("the sequence is not the one attested (digest differs)")]
    WrongSequence,
    #[error("page {page} of {pages} is not the one attested: {why}")]
    WrongPage { page: u32, pages: u32, why: String },
    #[error("the attestation is for {attested}, not for {requester}")]
    NotYours { attested: NodeId, requester: NodeId },
    #[error("attestation does not encode: {0}")]
    Malformed(String),
}

/// The snapshot fields an attestation states besides its sequence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attested {
    pub snapshot: SnapshotId,
    pub source: NodeId,
    pub set: String,
    pub created_at: Millis,
    /// Plaintext bytes of the files backed up.
    pub bytes: u64,
    /// DataId of the snapshot's manifest.
    pub manifest: DataId,
    /// Stripes in the whole sequence.
    pub stripes: u64,
    /// Stripes per attested page (1 to [`ATTEST_PAGE`]; the last page may
    /// have fewer).
    pub page: u32,
}

impl Attested {
    /// Pages of the sequence attested.
    pub fn pages(&self) -> u32 {
        page_count(self.stripes, self.page)
    }

    /// The stripes of page `page`.
    pub fn range(&self, page: u32) -> std::ops::Range<u64> {
        page_range(self.stripes, self.page, page)
    }
}

/// What a sequence manager attests about one committed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAttestation {
    pub version: u8,
    pub what: Attested,
    /// The digest of the sequence's page digests ([`sequence_digest`]).
    pub sequence: [u8; 32],
    /// The member that signed (its node id is its Ed25519 key).
    pub signer: NodeId,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

#[derive(Serialize)]
struct Body<'a> {
    version: u8,
    what: &'a Attested,
    sequence: &'a [u8; 32],
    signer: &'a NodeId,
}

/// Pages of `page_len` stripes of a sequence of `stripes` stripes (an empty
/// one has one page).
pub fn page_count(stripes: u64, page_len: u32) -> u32 {
    let pages = stripes.div_ceil(u64::from(page_len.max(1))).max(1);
    u32::try_from(pages).unwrap_or(u32::MAX)
}

/// The stripes of page `page` (of `page_len` stripes) of a sequence of
/// `stripes` stripes.
pub fn page_range(stripes: u64, page_len: u32, page: u32) -> std::ops::Range<u64> {
    let len = u64::from(page_len.max(1));
    let start = u64::from(page).saturating_mul(len).min(stripes);
    start..start.saturating_add(len).min(stripes)
}

/// A whole sequence cut into its pages of `page_len` stripes.
pub fn pages_of(sequence: &Sequence, page_len: u32) -> Vec<Sequence> {
    let header = |stripes: &[crate::seal::SequenceStripe]| Sequence {
        snapshot: sequence.snapshot,
        manifest: sequence.manifest,
        manifest_chunks: sequence.manifest_chunks.clone(),
        stripes: stripes.to_vec(),
    };
    if sequence.stripes.is_empty() {
        return vec![header(&[])];
    }
    sequence
        .stripes
        .chunks(page_len.max(1) as usize)
        .map(header)
        .collect()
}

/// The digest of one page (its CBOR).
pub fn page_digest(page: &Sequence) -> Result<[u8; 32], AttestError> {
    let bytes = page
        .to_bytes()
        .map_err(|e| AttestError::Malformed(e.to_string()))?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

/// The digest an attestation binds a sequence by: over its pages' digests,
/// in order.
pub fn sequence_digest(pages: &[[u8; 32]]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(PAGES_CONTEXT);
    hasher.update(&(pages.len() as u64).to_le_bytes());
    for page in pages {
        hasher.update(page);
    }
    *hasher.finalize().as_bytes()
}

/// The digests of a whole sequence's pages of `page_len` stripes.
pub fn page_digests(sequence: &Sequence, page_len: u32) -> Result<Vec<[u8; 32]>, AttestError> {
    pages_of(sequence, page_len)
        .iter()
        .map(page_digest)
        .collect()
}

impl SnapshotAttestation {
    /// Signs `what` and the sequence whose pages have `pages` digests with
    /// a member's node key.
    pub fn issue(
        key: &SigningKey,
        what: Attested,
        pages: &[[u8; 32]],
    ) -> Result<Self, AttestError> {
        if what.page == 0 || what.page as usize > ATTEST_PAGE {
            return Err(AttestError::Malformed(format!(
                "pages of {} stripes",
                what.page
            )));
        }
        if pages.len() != what.pages() as usize {
            return Err(AttestError::Malformed(format!(
                "{} page digests for {} stripes",
                pages.len(),
                what.stripes
            )));
        }
        let mut attestation = SnapshotAttestation {
            version: ATTEST_VERSION,
            what,
            sequence: sequence_digest(pages),
            signer: NodeId(key.verifying_key().to_bytes()),
            signature: Vec::new(),
        };
        attestation.signature = key.sign(&attestation.signed_bytes()?).to_bytes().to_vec();
        Ok(attestation)
    }

    fn signed_bytes(&self) -> Result<Vec<u8>, AttestError> {
        let body = Body {
            version: self.version,
            what: &self.what,
            sequence: &self.sequence,
            signer: &self.signer,
        };
        let mut out = ATTEST_CONTEXT.to_vec();
        crate::cbor::encode_into(&body, &mut out)
            .map_err(|e| AttestError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Checks offline: the signer holds `cert`, a certificate of grid
    /// `grid`; the signature covers every field; `pages` are the digests of
    /// the pages attested.
    pub fn verify(
        &self,
        cert: &MemberCert,
        grid: &GridId,
        pages: &[[u8; 32]],
    ) -> Result<(), AttestError> {
        if self.version != ATTEST_VERSION {
            return Err(AttestError::UnknownVersion(self.version));
        }
        if cert.node != self.signer {
            return Err(AttestError::Uncertified(
                self.signer,
                format!("the certificate is for {}", cert.node),
            ));
        }
        cert.verify(grid)
            .map_err(|e| AttestError::Uncertified(self.signer, e.to_string()))?;
        let key = VerifyingKey::from_bytes(self.signer.as_bytes())
            .map_err(|_| AttestError::BadSignature)?;
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| AttestError::BadSignature)?;
        key.verify_strict(&self.signed_bytes()?, &Signature::from_bytes(&signature))
            .map_err(|_| AttestError::BadSignature)?;
        if self.what.page == 0
            || self.what.page as usize > ATTEST_PAGE
            || pages.len() != self.what.pages() as usize
            || sequence_digest(pages) != self.sequence
        {
            return Err(AttestError::WrongSequence);
        }
        Ok(())
    }

    /// Checks `sequence` is page `page` of the sequence attested, given the
    /// page digests [`verify`](Self::verify) accepted.
    pub fn verify_page(
        &self,
        pages: &[[u8; 32]],
        page: u32,
        sequence: &Sequence,
    ) -> Result<(), AttestError> {
        let wrong = |why: &str| AttestError::WrongPage {
            page,
            pages: pages.len() as u32,
            why: why.into(),
        };
        let expected = pages
            .get(page as usize)
            .ok_or_else(|| wrong("no such page"))?;
        if sequence.snapshot != self.what.snapshot || sequence.manifest != self.what.manifest {
            return Err(wrong("another snapshot's"));
        }
        let range = self.what.range(page);
        if sequence.stripes.len() as u64 != range.end - range.start {
            return Err(wrong("it has another number of stripes"));
        }
        if page_digest(sequence)? != *expected {
            return Err(wrong("its digest differs"));
        }
        Ok(())
    }
}

/// One page of a snapshot a source hands a rebuilt coordinator group: the
/// old group's attestation and the signer's certificate, the digests of
/// every page of the sequence (from its root), the page itself, and the
/// set's backup parameters (repair needs them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub attestation: SnapshotAttestation,
    pub cert: MemberCert,
    pub pages: Vec<[u8; 32]>,
    pub page: u32,
    pub sequence: Sequence,
    pub params: BackupParams,
}

impl Registration {
    /// Checks the registration is `requester`'s own, attested by a
    /// certified member of grid `grid`, and that its page is exactly the
    /// one attested.
    pub fn verify(&self, requester: &NodeId, grid: &GridId) -> Result<(), AttestError> {
        if self.attestation.what.source != *requester {
            return Err(AttestError::NotYours {
                attested: self.attestation.what.source,
                requester: *requester,
            });
        }
        self.attestation.verify(&self.cert, grid, &self.pages)?;
        self.attestation
            .verify_page(&self.pages, self.page, &self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PacketId;
    use crate::seal::{SequenceEntry, SequenceStripe};
    use crate::trust::grid_id_of;

    /// A sequence of `n` stripes (chunk `i` on packet `i`).
    fn sequence(n: usize) -> Sequence {
        let stripe = |i: usize| SequenceStripe {
            data_id: DataId(blake3::hash(&i.to_le_bytes()).into()),
            packets: vec![SequenceEntry {
                packet_id: PacketId(blake3::hash(&(i + 1).to_le_bytes()).into()),
                size: 10,
                targets: vec![NodeId([4; 32])],
                generation: 7,
            }],
        };
        Sequence {
            snapshot: SnapshotId([1; 32]),
            manifest: DataId([2; 32]),
            manifest_chunks: vec![DataId([2; 32])],
            stripes: (0..n).map(stripe).collect(),
        }
    }

    fn attested(source: NodeId, stripes: usize) -> Attested {
        Attested {
            snapshot: SnapshotId([1; 32]),
            source,
            set: "home".into(),
            created_at: 5,
            bytes: 100,
            manifest: DataId([2; 32]),
            stripes: stripes as u64,
            page: ATTEST_PAGE as u32,
        }
    }

    fn params() -> BackupParams {
        crate::records::BackupParams {
            backup_distance: crate::units::DistanceRange::km(None, None).unwrap(),
            spread: crate::units::DistanceRange::km(None, None).unwrap(),
            redundancy: crate::units::Redundancy::Replicas { n: 1 },
            compression: crate::records::Compression::None,
            encryption: crate::records::Encryption {
                cipher: "chacha20poly1305".into(),
                convergence: crate::records::ConvergenceScope::Private,
            },
            sync_interval_secs: None,
        }
    }

    #[test]
    fn pages_cover_the_sequence_in_order() {
        let len = ATTEST_PAGE as u32;
        assert_eq!(page_count(0, len), 1);
        assert_eq!(page_count(ATTEST_PAGE as u64, len), 1);
        assert_eq!(page_count(ATTEST_PAGE as u64 + 1, len), 2);
        assert_eq!(attest_page_len(6), 512);
        assert!(attest_page_len(16) < 512 && attest_page_len(16) * 16 * 120 <= 600_000);
        assert!(attest_page_len(255) >= 1);
        let n = 2 * ATTEST_PAGE + 3;
        let seq = sequence(n);
        let pages = pages_of(&seq, len);
        assert_eq!(pages.len(), page_count(n as u64, len) as usize);
        let joined: Vec<_> = pages.iter().flat_map(|p| p.stripes.clone()).collect();
        assert_eq!(joined, seq.stripes);
        for (i, page) in pages.iter().enumerate() {
            let range = page_range(n as u64, len, i as u32);
            assert_eq!(page.stripes.len() as u64, range.end - range.start);
            assert_eq!(page.manifest_chunks, seq.manifest_chunks);
        }
        assert_eq!(pages_of(&sequence(0), len).len(), 1);
        assert_eq!(pages_of(&seq, 7).len(), n.div_ceil(7));
    }

    #[test]
    fn an_attestation_verifies_only_for_its_sequence_signer_and_grid() {
        let grid_key = SigningKey::from_bytes(&[9; 32]);
        let grid = grid_id_of(&grid_key);
        let member = SigningKey::from_bytes(&[8; 32]);
        let member_id = NodeId(member.verifying_key().to_bytes());
        let cert = MemberCert::issue(&grid_key, member_id, 1).unwrap();
        let source = NodeId([5; 32]);
        let n = ATTEST_PAGE + 7;
        let seq = sequence(n);
        let digests = page_digests(&seq, ATTEST_PAGE as u32).unwrap();
        let a = SnapshotAttestation::issue(&member, attested(source, n), &digests).unwrap();
        a.verify(&cert, &grid, &digests).unwrap();
        let pages = pages_of(&seq, ATTEST_PAGE as u32);
        for (i, page) in pages.iter().enumerate() {
            a.verify_page(&digests, i as u32, page).unwrap();
        }

        // Another sequence (a packet moved to the attacker's liking).
        let mut other = seq.clone();
        other.stripes[n - 1].packets[0].packet_id = PacketId([6; 32]);
        let other_digests = page_digests(&other, ATTEST_PAGE as u32).unwrap();
        assert_eq!(
            a.verify(&cert, &grid, &other_digests),
            Err(AttestError::WrongSequence)
        );
        // The right digests, a page that is not the one attested.
        let forged_page = &pages_of(&other, ATTEST_PAGE as u32)[1];
        assert!(matches!(
            a.verify_page(&digests, 1, forged_page),
            Err(AttestError::WrongPage { .. })
        ));
        // A page given for another index, or a page with a stripe left out.
        assert!(matches!(
            a.verify_page(&digests, 0, &pages[1]),
            Err(AttestError::WrongPage { .. })
        ));
        let mut short = pages[0].clone();
        short.stripes.pop();
        assert!(matches!(
            a.verify_page(&digests, 0, &short),
            Err(AttestError::WrongPage { .. })
        ));
        assert!(matches!(
            a.verify_page(&digests, 2, &pages[1]),
            Err(AttestError::WrongPage { .. })
        ));
        // A page digest list with one page dropped.
        assert_eq!(
            a.verify(&cert, &grid, &digests[..1]),
            Err(AttestError::WrongSequence)
        );
        // A changed field breaks the signature.
        let mut forged = a.clone();
        forged.what.bytes += 1;
        assert_eq!(
            forged.verify(&cert, &grid, &digests),
            Err(AttestError::BadSignature)
        );
        let mut fewer = a.clone();
        fewer.what.stripes = 1;
        assert_eq!(
            fewer.verify(&cert, &grid, &digests[..1]),
            Err(AttestError::BadSignature)
        );
        // Signed by a node the grid key never certified.
        let stranger = SigningKey::from_bytes(&[7; 32]);
        let b = SnapshotAttestation::issue(&stranger, attested(source, n), &digests).unwrap();
        assert!(matches!(
            b.verify(&cert, &grid, &digests),
            Err(AttestError::Uncertified(..))
        ));
        let self_cert = MemberCert::issue(&stranger, b.signer, 1).unwrap();
        assert!(matches!(
            b.verify(&self_cert, &grid, &digests),
            Err(AttestError::Uncertified(..))
        ));
        // Registered by another node than its source.
        let registration = Registration {
            attestation: a,
            cert,
            pages: digests,
            page: 1,
            sequence: pages[1].clone(),
            params: params(),
        };
        registration.verify(&source, &grid).unwrap();
        assert!(matches!(
            registration.verify(&NodeId([6; 32]), &grid),
            Err(AttestError::NotYours { .. })
        ));
        let mut wrong_page = registration.clone();
        wrong_page.page = 0;
        assert!(matches!(
            wrong_page.verify(&source, &grid),
            Err(AttestError::WrongPage { .. })
        ));
    }
}
