//! Storage tickets: the manager's signed permission for one target to accept,
//! serve or delete specific packets.
//!
//! Version 2 (issue 11): a ticket may name its `holder` (the only peer a
//! target accepts it from: the source of a store, the reader of a read
//! ticket) and every entry carries a storage `generation`: a store ticket
//! tells the target which generation to record for a packet it does not
//! hold yet, a delete ticket names the generation it may delete (so it
//! deletes once, and never a copy stored again later).
//!
//! Owns [`StorageTicket`], its signing ([`StorageTicket::issue`]) and its
//! offline verification ([`StorageTicket::verify`]). A ticket names only the
//! PacketIds and sizes a target may accept and an expiry — never the order of
//! a sequence, the other targets, or which backup a packet belongs to. The
//! manager signs with its node's Ed25519 identity, so the manager's `NodeId`
//! is the verifying key and a target needs nobody's help to check a ticket.
//! This module must not decide which packets go where (placement does) or do
//! any I/O.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, PacketId};
use crate::units::Millis;

/// Domain separation for ticket signatures.
const TICKET_CONTEXT: &[u8] = b"strew/storage-ticket/v2\0";
pub const TICKET_VERSION: u8 = 2;
/// Most entries one ticket may carry (bounds decode and verify work).
pub const MAX_TICKET_ENTRIES: usize = 65_536;

/// Why a ticket is not honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    #[error("ticket has format version {0}, this node understands version {TICKET_VERSION}")]
    UnknownVersion(u8),
    #[error("ticket was issued by {issuer}, not by the trusted manager {trusted}")]
    WrongManager { issuer: NodeId, trusted: NodeId },
    #[error("ticket is for target {target}, not for this node {me}")]
    WrongTarget { target: NodeId, me: NodeId },
    #[error("ticket expired at {expires_at} ms (now {now} ms)")]
    Expired { expires_at: Millis, now: Millis },
    #[error("ticket signature does not verify")]
    BadSignature,
    #[error("ticket issuer {0} is not a valid Ed25519 key")]
    BadIssuerKey(NodeId),
    #[error("ticket carries {0} entries, more than {MAX_TICKET_ENTRIES}")]
    TooManyEntries(usize),
    #[error("ticket is for {holder}, not for the requester {requester}")]
    WrongHolder { holder: NodeId, requester: NodeId },
    #[error("ticket does not decode: {0}")]
    Malformed(String),
}

/// What a ticket permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketKind {
    /// Accept and store the listed packets.
    Store,
    /// Delete the listed packets (garbage collection after `forget`), each
    /// only while it still has the entry's generation.
    Delete,
    /// Serve the listed packets to the ticket's holder (restore, check, repair).
    Read,
}

/// One packet a ticket names: its exact size (stores; 0 otherwise) and its
/// storage generation (stores: the one to record; deletes: the one to
/// delete; reads: 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TicketEntry {
    pub packet_id: PacketId,
    pub size: u64,
    #[serde(default)]
    pub generation: u64,
}

/// The signed part of a ticket.
#[derive(Serialize)]
struct TicketBody<'a> {
    version: u8,
    kind: TicketKind,
    manager: &'a NodeId,
    target: &'a NodeId,
    holder: &'a Option<NodeId>,
    entries: &'a [TicketEntry],
    expires_at: Millis,
}

/// A manager-signed permission for `target` to store (or delete) `entries` until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageTicket {
    pub version: u8,
    pub kind: TicketKind,
    /// The issuing manager; its `NodeId` is the Ed25519 verifying key.
    pub manager: NodeId,
    pub target: NodeId,
    /// The only requester the target accepts the ticket from (`None`: anyone
    /// may deliver it, as for delete tickets).
    #[serde(default)]
    pub holder: Option<NodeId>,
    /// Sorted by PacketId, no duplicates.
    pub entries: Vec<TicketEntry>,
    pub expires_at: Millis,
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

impl StorageTicket {
    /// Signs a store ticket for `target` with the manager's identity key.
    pub fn issue(
        signing_key: &SigningKey,
        target: NodeId,
        entries: Vec<TicketEntry>,
        expires_at: Millis,
    ) -> Result<Self, TicketError> {
        Self::issue_kind(
            signing_key,
            TicketKind::Store,
            target,
            None,
            entries,
            expires_at,
        )
    }

    /// Signs a ticket of any kind. Entries are sorted and deduplicated.
    pub fn issue_kind(
        signing_key: &SigningKey,
        kind: TicketKind,
        target: NodeId,
        holder: Option<NodeId>,
        mut entries: Vec<TicketEntry>,
        expires_at: Millis,
    ) -> Result<Self, TicketError> {
        entries.sort_unstable();
        entries.dedup_by_key(|e| e.packet_id);
        let manager = NodeId(signing_key.verifying_key().to_bytes());
        let mut ticket = StorageTicket {
            version: TICKET_VERSION,
            kind,
            manager,
            target,
            holder,
            entries,
            expires_at,
            signature: Vec::new(),
        };
        ticket.signature = signing_key
            .sign(&ticket.signed_bytes()?)
            .to_bytes()
            .to_vec();
        Ok(ticket)
    }

    fn signed_bytes(&self) -> Result<Vec<u8>, TicketError> {
        let body = TicketBody {
            version: self.version,
            kind: self.kind,
            manager: &self.manager,
            target: &self.target,
            holder: &self.holder,
            entries: &self.entries,
            expires_at: self.expires_at,
        };
        let mut out = TICKET_CONTEXT.to_vec();
        crate::cbor::encode_into(&body, &mut out)
            .map_err(|e| TicketError::Malformed(e.to_string()))?;
        Ok(out)
    }

    /// Checks the ticket offline: issued by `trusted_manager`, addressed to `me`,
    /// not expired at `now`, signature valid over every field.
    pub fn verify(
        &self,
        trusted_manager: &NodeId,
        me: &NodeId,
        now: Millis,
    ) -> Result<(), TicketError> {
        self.check_claims(trusted_manager, me, now)?;
        self.verify_signature()
    }

    /// Everything [`verify`](Self::verify) checks but the signature: the
    /// version, the entry bound, the issuer, the addressee and the expiry.
    /// For a ticket whose exact bytes were verified before.
    pub fn check_claims(
        &self,
        trusted_manager: &NodeId,
        me: &NodeId,
        now: Millis,
    ) -> Result<(), TicketError> {
        if self.version != TICKET_VERSION {
            return Err(TicketError::UnknownVersion(self.version));
        }
        if self.entries.len() > MAX_TICKET_ENTRIES {
            return Err(TicketError::TooManyEntries(self.entries.len()));
        }
        if &self.manager != trusted_manager {
            return Err(TicketError::WrongManager {
                issuer: self.manager,
                trusted: *trusted_manager,
            });
        }
        if &self.target != me {
            return Err(TicketError::WrongTarget {
                target: self.target,
                me: *me,
            });
        }
        if now > self.expires_at {
            return Err(TicketError::Expired {
                expires_at: self.expires_at,
                now,
            });
        }
        Ok(())
    }

    /// The issuer's Ed25519 signature over the ticket's other fields.
    fn verify_signature(&self) -> Result<(), TicketError> {
        let key = VerifyingKey::from_bytes(self.manager.as_bytes())
            .map_err(|_| TicketError::BadIssuerKey(self.manager))?;
        let signature: [u8; 64] = self
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| TicketError::BadSignature)?;
        key.verify_strict(&self.signed_bytes()?, &Signature::from_bytes(&signature))
            .map_err(|_| TicketError::BadSignature)
    }

    /// The size this ticket allows for `packet_id`, if it lists it.
    pub fn size_for(&self, packet_id: &PacketId) -> Option<u64> {
        self.entry_for(packet_id).map(|e| e.size)
    }

    /// The entry naming `packet_id`, if the ticket lists it.
    pub fn entry_for(&self, packet_id: &PacketId) -> Option<TicketEntry> {
        self.entries
            .binary_search_by(|e| e.packet_id.cmp(packet_id))
            .ok()
            .map(|i| self.entries[i])
            .or_else(|| {
                // Tolerate unsorted entries from a foreign encoder (the signature still covers them).
                self.entries
                    .iter()
                    .find(|e| &e.packet_id == packet_id)
                    .copied()
            })
    }

    /// Whether `requester` may present this ticket: anyone when it names no
    /// holder, else only its holder.
    pub fn check_holder(&self, requester: &NodeId) -> Result<(), TicketError> {
        match &self.holder {
            Some(holder) if holder != requester => Err(TicketError::WrongHolder {
                holder: *holder,
                requester: *requester,
            }),
            _ => Ok(()),
        }
    }

    /// Whether the ticket permits this kind of operation.
    pub fn permits(&self, kind: TicketKind) -> bool {
        self.kind == kind
    }

    /// CBOR bytes for the wire.
    pub fn to_bytes(&self) -> Result<Vec<u8>, TicketError> {
        crate::cbor::encode(self).map_err(|e| TicketError::Malformed(e.to_string()))
    }

    /// Decodes CBOR bytes (at most `max_len`); never panics on garbage.
    pub fn from_bytes(bytes: &[u8], max_len: usize) -> Result<Self, TicketError> {
        if bytes.len() > max_len {
            return Err(TicketError::Malformed(format!(
                "{} bytes, more than {max_len}",
                bytes.len()
            )));
        }
        let ticket: StorageTicket =
            ciborium::from_reader(bytes).map_err(|e| TicketError::Malformed(e.to_string()))?;
        if ticket.entries.len() > MAX_TICKET_ENTRIES {
            return Err(TicketError::TooManyEntries(ticket.entries.len()));
        }
        Ok(ticket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager_key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn entries() -> Vec<TicketEntry> {
        (0..3u8)
            .map(|i| TicketEntry {
                packet_id: PacketId::of(&[i]),
                size: 100 * (i as u64 + 1),
                generation: 0,
            })
            .collect()
    }

    #[test]
    fn ticket_verifies_offline_and_lists_sizes() {
        let key = manager_key(1);
        let manager = NodeId(key.verifying_key().to_bytes());
        let target = NodeId([9; 32]);
        let ticket = StorageTicket::issue(&key, target, entries(), 10_000).unwrap();
        assert_eq!(ticket.verify(&manager, &target, 9_999), Ok(()));
        assert_eq!(ticket.size_for(&PacketId::of(&[1])), Some(200));
        assert_eq!(ticket.size_for(&PacketId::of(&[7])), None);
        assert!(ticket.permits(TicketKind::Store) && !ticket.permits(TicketKind::Delete));
        let decoded = StorageTicket::from_bytes(&ticket.to_bytes().unwrap(), 1 << 20).unwrap();
        assert_eq!(decoded.verify(&manager, &target, 0), Ok(()));
    }

    #[test]
    fn ticket_rejects_tamper_expiry_wrong_target_and_wrong_manager() {
        let key = manager_key(1);
        let manager = NodeId(key.verifying_key().to_bytes());
        let target = NodeId([9; 32]);
        let ticket = StorageTicket::issue(&key, target, entries(), 10_000).unwrap();

        assert_eq!(
            ticket.verify(&manager, &target, 10_001),
            Err(TicketError::Expired {
                expires_at: 10_000,
                now: 10_001
            })
        );
        let other = NodeId([8; 32]);
        assert!(matches!(
            ticket.verify(&manager, &other, 0),
            Err(TicketError::WrongTarget { .. })
        ));
        let impostor = manager_key(2);
        let impostor_id = NodeId(impostor.verifying_key().to_bytes());
        assert!(matches!(
            ticket.verify(&impostor_id, &target, 0),
            Err(TicketError::WrongManager { .. })
        ));

        let mut bigger = ticket.clone();
        bigger.entries[0].size += 1;
        assert_eq!(
            bigger.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
        let mut later = ticket.clone();
        later.expires_at += 1;
        assert_eq!(
            later.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
        let mut redirected = ticket.clone();
        redirected.target = other;
        assert_eq!(
            redirected.verify(&manager, &other, 0),
            Err(TicketError::BadSignature)
        );
        let mut as_delete = ticket.clone();
        as_delete.kind = TicketKind::Delete;
        assert_eq!(
            as_delete.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
        // A ticket re-signed by someone else but claiming the real manager fails.
        let mut forged = StorageTicket::issue(&impostor, target, entries(), 10_000).unwrap();
        forged.manager = manager;
        assert_eq!(
            forged.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
        let mut short = ticket;
        short.signature.truncate(10);
        assert_eq!(
            short.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
    }

    #[test]
    fn a_holder_bound_ticket_is_only_the_holders_and_its_generations_are_signed() {
        let key = manager_key(1);
        let manager = NodeId(key.verifying_key().to_bytes());
        let target = NodeId([9; 32]);
        let reader = NodeId([5; 32]);
        let mut listed = entries();
        listed[0].generation = 77;
        let ticket =
            StorageTicket::issue_kind(&key, TicketKind::Read, target, Some(reader), listed, 10_000)
                .unwrap();
        assert_eq!(ticket.verify(&manager, &target, 0), Ok(()));
        assert_eq!(ticket.check_holder(&reader), Ok(()));
        assert!(matches!(
            ticket.check_holder(&NodeId([6; 32])),
            Err(TicketError::WrongHolder { .. })
        ));
        let mut anyone = ticket.clone();
        anyone.holder = None;
        assert_eq!(
            anyone.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
        let mut other_generation = ticket.clone();
        other_generation.entries[0].generation = 78;
        assert_eq!(
            other_generation.verify(&manager, &target, 0),
            Err(TicketError::BadSignature)
        );
        let mut old = ticket;
        old.version = 1;
        assert_eq!(
            old.verify(&manager, &target, 0),
            Err(TicketError::UnknownVersion(1))
        );
    }

    #[test]
    fn garbage_never_decodes_as_a_ticket() {
        for bytes in [&b""[..], b"\x00", b"\xa0", &[0xbf; 64]] {
            assert!(StorageTicket::from_bytes(bytes, 1 << 20).is_err());
        }
        assert!(StorageTicket::from_bytes(&[0u8; 100], 10).is_err());
    }
}
