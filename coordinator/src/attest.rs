//! Snapshot attestations (issue 18, SPEC R15): the sequence manager's signed
//! statement "snapshot S of source X (set, time, bytes, manifest) has exactly
//! this sequence", which a source keeps inside the snapshot's root.
//!
//! A coordinator group rebuilt after the whole group was lost believes a
//! source's re-registered root only through it: the attestation is signed by
//! a certified member of the old group (its node key), whose grid-key
//! certificate travels with it, and binds the sequence by its BLAKE3 digest.
//! A source therefore cannot register packets it never backed up (someone
//! else's, to have them deleted by a forget), nor another source's snapshot.
//!
//! Owns [`SnapshotAttestation`] (signing, offline verification against the
//! grid id) and [`Registration`], what a source hands a rebuilt group. This
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
/// Format version of [`SnapshotAttestation`].
pub const ATTEST_VERSION: u8 = 1;

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
}

/// What a sequence manager attests about one committed snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotAttestation {
    pub version: u8,
    pub what: Attested,
    /// BLAKE3 of the sequence's CBOR ([`sequence_digest`]).
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

/// The digest an attestation binds a sequence by.
pub fn sequence_digest(sequence: &Sequence) -> Result<[u8; 32], AttestError> {
    let bytes = sequence
        .to_bytes()
        .map_err(|e| AttestError::Malformed(e.to_string()))?;
    Ok(*blake3::hash(&bytes).as_bytes())
}

impl SnapshotAttestation {
    /// Signs `what` and `sequence` with a member's node key.
    pub fn issue(
        key: &SigningKey,
        what: Attested,
        sequence: &Sequence,
    ) -> Result<Self, AttestError> {
        let mut attestation = SnapshotAttestation {
            version: ATTEST_VERSION,
            what,
            sequence: sequence_digest(sequence)?,
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
    /// `grid`; the signature covers every field; `sequence` is the one
    /// attested.
    pub fn verify(
        &self,
        cert: &MemberCert,
        grid: &GridId,
        sequence: &Sequence,
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
        if sequence.snapshot != self.what.snapshot || sequence_digest(sequence)? != self.sequence {
            return Err(AttestError::WrongSequence);
        }
        Ok(())
    }
}

/// A snapshot a source hands a rebuilt coordinator group: the sequence from
/// its root, the old group's attestation of it and the signer's
/// certificate, and the set's backup parameters (repair needs them).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub attestation: SnapshotAttestation,
    pub cert: MemberCert,
    pub sequence: Sequence,
    pub params: BackupParams,
}

impl Registration {
    /// Checks the registration is `requester`'s own, attested by a
    /// certified member of grid `grid`, for exactly this sequence.
    pub fn verify(&self, requester: &NodeId, grid: &GridId) -> Result<(), AttestError> {
        if self.attestation.what.source != *requester {
            return Err(AttestError::NotYours {
                attested: self.attestation.what.source,
                requester: *requester,
            });
        }
        self.attestation.verify(&self.cert, grid, &self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PacketId;
    use crate::seal::{SequenceEntry, SequenceStripe};
    use crate::trust::grid_id_of;

    fn sequence() -> Sequence {
        Sequence {
            snapshot: SnapshotId([1; 32]),
            manifest: DataId([2; 32]),
            manifest_chunks: vec![DataId([2; 32])],
            stripes: vec![SequenceStripe {
                data_id: DataId([2; 32]),
                packets: vec![SequenceEntry {
                    packet_id: PacketId([3; 32]),
                    size: 10,
                    targets: vec![NodeId([4; 32])],
                    generation: 7,
                }],
            }],
        }
    }

    fn attested(source: NodeId) -> Attested {
        Attested {
            snapshot: SnapshotId([1; 32]),
            source,
            set: "home".into(),
            created_at: 5,
            bytes: 100,
            manifest: DataId([2; 32]),
        }
    }

    #[test]
    fn an_attestation_verifies_only_for_its_sequence_signer_and_grid() {
        let grid_key = SigningKey::from_bytes(&[9; 32]);
        let grid = grid_id_of(&grid_key);
        let member = SigningKey::from_bytes(&[8; 32]);
        let member_id = NodeId(member.verifying_key().to_bytes());
        let cert = MemberCert::issue(&grid_key, member_id, 1).unwrap();
        let source = NodeId([5; 32]);
        let seq = sequence();
        let a = SnapshotAttestation::issue(&member, attested(source), &seq).unwrap();
        a.verify(&cert, &grid, &seq).unwrap();

        // Another sequence (a packet moved to the attacker's liking).
        let mut other = seq.clone();
        other.stripes[0].packets[0].packet_id = PacketId([6; 32]);
        assert_eq!(
            a.verify(&cert, &grid, &other),
            Err(AttestError::WrongSequence)
        );
        // A changed field breaks the signature.
        let mut forged = a.clone();
        forged.what.bytes += 1;
        assert_eq!(
            forged.verify(&cert, &grid, &seq),
            Err(AttestError::BadSignature)
        );
        // Signed by a node the grid key never certified.
        let stranger = SigningKey::from_bytes(&[7; 32]);
        let b = SnapshotAttestation::issue(&stranger, attested(source), &seq).unwrap();
        assert!(matches!(
            b.verify(&cert, &grid, &seq),
            Err(AttestError::Uncertified(..))
        ));
        let self_cert = MemberCert::issue(&stranger, b.signer, 1).unwrap();
        assert!(matches!(
            b.verify(&self_cert, &grid, &seq),
            Err(AttestError::Uncertified(..))
        ));
        // Registered by another node than its source.
        let registration = Registration {
            attestation: a,
            cert,
            sequence: seq,
            params: crate::records::BackupParams {
                backup_distance: crate::units::DistanceRange::km(None, None).unwrap(),
                spread: crate::units::DistanceRange::km(None, None).unwrap(),
                redundancy: crate::units::Redundancy::Replicas { n: 1 },
                compression: crate::records::Compression::None,
                encryption: crate::records::Encryption {
                    cipher: "chacha20poly1305".into(),
                    convergence: crate::records::ConvergenceScope::Private,
                },
                sync_interval_secs: None,
            },
        };
        registration.verify(&source, &grid).unwrap();
        assert!(matches!(
            registration.verify(&NodeId([6; 32]), &grid),
            Err(AttestError::NotYours { .. })
        ));
    }
}
