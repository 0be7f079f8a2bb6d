//! Checking a manager's storage ticket on the target, before anything is written.
//!
//! Owns the size-bounded decode and the mapping of ticket failures to wire
//! refusals, and [`VerifiedTickets`]: the signatures already checked. The
//! ticket format and its signature belong to
//! `strew_coordinator::StorageTicket`; this module must not re-implement them.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use strew_coordinator::{NodeId, PacketId, StorageTicket, TicketEntry, TicketError, TicketKind};

use crate::packet::wire::{MAX_HEADER_BYTES, Refusal};

/// Encodes a ticket for the wire.
pub fn encode(ticket: &StorageTicket) -> Result<Vec<u8>, TicketError> {
    ticket.to_bytes()
}

/// Decodes a ticket from the wire.
pub fn decode(bytes: &[u8]) -> Result<StorageTicket, TicketError> {
    StorageTicket::from_bytes(bytes, MAX_HEADER_BYTES)
}

/// Who asks, and what for: the parts of a request a ticket is checked against.
#[derive(Clone, Copy, Debug)]
pub struct Asked<'a> {
    pub kind: TicketKind,
    pub me: &'a NodeId,
    /// `None` skips the holder check (the codec's put gate does not know the
    /// requester; the service checks again with it).
    pub requester: Option<&'a NodeId>,
    pub packet_id: &'a PacketId,
    pub now_ms: u64,
}

/// Tickets whose signature this node verified, by the BLAKE3 hash of
/// their bytes as received. A store ticket covers up to 32 packets, one put
/// each, and the put gate and the service both check it: without this,
/// every put cost two Ed25519 verifications of the same bytes. Only the
/// signature is skipped for a ticket seen before; its kind, issuer (trusted
/// now), addressee, expiry, holder and packet are checked every time. A
/// ticket differing in any byte is verified anew. Holds at most
/// [`VERIFIED_TICKETS`] hashes, the oldest leaving first. Cheap to clone
/// (shared).
#[derive(Clone, Debug, Default)]
pub struct VerifiedTickets(Arc<Mutex<Verified>>);

/// Most ticket hashes [`VerifiedTickets`] keeps (32 bytes each, twice).
pub const VERIFIED_TICKETS: usize = 4096;

#[derive(Debug, Default)]
struct Verified {
    set: HashSet<[u8; 32]>,
    order: VecDeque<[u8; 32]>,
}

impl VerifiedTickets {
    fn contains(&self, digest: &[u8; 32]) -> bool {
        self.0
            .lock()
            .map(|v| v.set.contains(digest))
            .unwrap_or(false)
    }

    fn insert(&self, digest: [u8; 32]) {
        let Ok(mut v) = self.0.lock() else {
            return;
        };
        if !v.set.insert(digest) {
            return;
        }
        v.order.push_back(digest);
        while v.order.len() > VERIFIED_TICKETS {
            if let Some(old) = v.order.pop_front() {
                v.set.remove(&old);
            }
        }
    }

    /// How many ticket hashes are kept.
    pub fn len(&self) -> usize {
        self.0.lock().map(|v| v.set.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Verifies `ticket` permits `asked.kind`, was signed by one of `managers`,
/// is addressed to this node, is the requester's (when it names a holder),
/// has not expired, and names the packet; returns the entry naming it (its
/// size and generation).
pub fn check(
    ticket: &[u8],
    managers: &BTreeSet<NodeId>,
    asked: Asked<'_>,
    verified: &VerifiedTickets,
) -> Result<TicketEntry, Refusal> {
    let digest = *blake3::hash(ticket).as_bytes();
    let Asked {
        kind,
        me,
        requester,
        packet_id,
        now_ms,
    } = asked;
    let ticket = decode(ticket).map_err(|e| Refusal::BadTicket(e.to_string()))?;
    if !ticket.permits(kind) {
        return Err(Refusal::BadTicket(format!(
            "a {:?} ticket does not permit {kind:?}",
            ticket.kind
        )));
    }
    if !managers.contains(&ticket.manager) {
        return Err(Refusal::BadTicket(if managers.is_empty() {
            "this node knows no sequence manager to trust yet".to_string()
        } else {
            format!(
                "issuer {} is not a sequence manager this node trusts",
                ticket.manager
            )
        }));
    }
    if verified.contains(&digest) {
        ticket.check_claims(&ticket.manager, me, now_ms)
    } else {
        ticket.verify(&ticket.manager, me, now_ms).inspect(|()| {
            verified.insert(digest);
        })
    }
    .map_err(|e| Refusal::BadTicket(e.to_string()))?;
    if let Some(requester) = requester {
        ticket
            .check_holder(requester)
            .map_err(|e| Refusal::BadTicket(e.to_string()))?;
    }
    ticket.entry_for(packet_id).ok_or(Refusal::NotInTicket)
}

/// The ticket-signing key of a manager whose identity is `key` (its libp2p
/// Ed25519 keypair), so tickets verify against the manager's NodeId.
pub fn signing_key(key: &libp2p::identity::Keypair) -> Option<ed25519_dalek::SigningKey> {
    let ed = key.clone().try_into_ed25519().ok()?;
    let bytes = ed.to_bytes();
    let secret: [u8; 32] = bytes[..32].try_into().ok()?;
    Some(ed25519_dalek::SigningKey::from_bytes(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer;
    use libp2p::identity::Keypair;

    const NOW: u64 = 1_800_000_000_000;

    fn node() -> NodeId {
        peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap()
    }

    #[test]
    fn ticket_signed_with_the_libp2p_identity_verifies_against_its_node_id() {
        let manager = Keypair::generate_ed25519();
        let manager_id = peer::node_id_of_key(&manager.public()).unwrap();
        let (me, reader, stranger) = (node(), node(), node());
        let id = PacketId::of(b"p");
        let key = signing_key(&manager).unwrap();
        let entry = TicketEntry {
            packet_id: id,
            size: 1,
            generation: 3,
        };
        let t = StorageTicket::issue_kind(
            &key,
            TicketKind::Read,
            me,
            Some(reader),
            vec![entry],
            NOW + 1000,
        )
        .unwrap();
        let bytes = encode(&t).unwrap();
        let trusted = BTreeSet::from([manager_id]);
        // One cache for every check below: once the ticket is verified,
        // everything but its signature is still checked each time.
        let verified = VerifiedTickets::default();
        let check = |bytes: &[u8], managers: &BTreeSet<NodeId>, asked| {
            check(bytes, managers, asked, &verified)
        };
        let asked = |kind, requester, packet_id, now_ms| Asked {
            kind,
            me: &me,
            requester: Some(requester),
            packet_id,
            now_ms,
        };
        assert_eq!(
            check(&bytes, &trusted, asked(TicketKind::Read, &reader, &id, NOW)),
            Ok(entry)
        );
        // Wrong kind, untrusted issuer, expired, other packet, other holder, garbage.
        for (managers, a) in [
            (&trusted, asked(TicketKind::Delete, &reader, &id, NOW)),
            (&BTreeSet::new(), asked(TicketKind::Read, &reader, &id, NOW)),
            (&trusted, asked(TicketKind::Read, &reader, &id, NOW + 2000)),
            (&trusted, asked(TicketKind::Read, &stranger, &id, NOW)),
        ] {
            assert!(matches!(
                check(&bytes, managers, a),
                Err(Refusal::BadTicket(_))
            ));
        }
        let other = PacketId::of(b"q");
        assert_eq!(
            check(
                &bytes,
                &trusted,
                asked(TicketKind::Read, &reader, &other, NOW)
            ),
            Err(Refusal::NotInTicket)
        );
        assert!(matches!(
            check(
                b"\xff\x00",
                &trusted,
                asked(TicketKind::Read, &reader, &id, NOW)
            ),
            Err(Refusal::BadTicket(_))
        ));
    }

    #[test]
    fn a_verified_tickets_signature_is_not_trusted_for_other_bytes() {
        let manager = Keypair::generate_ed25519();
        let manager_id = peer::node_id_of_key(&manager.public()).unwrap();
        let me = node();
        let id = PacketId::of(b"p");
        let entry = TicketEntry {
            packet_id: id,
            size: 1,
            generation: 3,
        };
        let key = signing_key(&manager).unwrap();
        let genuine = StorageTicket::issue(&key, me, vec![entry], NOW + 1000).unwrap();
        let trusted = BTreeSet::from([manager_id]);
        let asked = Asked {
            kind: TicketKind::Store,
            me: &me,
            requester: None,
            packet_id: &id,
            now_ms: NOW,
        };
        let verified = VerifiedTickets::default();
        let bytes = encode(&genuine).unwrap();
        assert_eq!(check(&bytes, &trusted, asked, &verified), Ok(entry));
        assert_eq!(check(&bytes, &trusted, asked, &verified), Ok(entry));
        assert_eq!(verified.len(), 1, "verified once, kept once");
        // The same claims under a broken signature, or one more entry the
        // manager never signed: other bytes, verified anew and refused.
        let mut forged = genuine.clone();
        forged.signature[0] ^= 1;
        let mut widened = genuine.clone();
        widened.entries.push(TicketEntry {
            packet_id: PacketId::of(b"q"),
            size: 1 << 20,
            generation: 3,
        });
        for ticket in [forged, widened] {
            let bytes = encode(&ticket).unwrap();
            assert!(matches!(
                check(&bytes, &trusted, asked, &verified),
                Err(Refusal::BadTicket(_))
            ));
        }
        assert_eq!(verified.len(), 1, "refused tickets are not kept");
    }

    #[test]
    fn verified_tickets_keep_a_bounded_number_of_hashes() {
        let verified = VerifiedTickets::default();
        for i in 0..VERIFIED_TICKETS + 10 {
            verified.insert(*blake3::hash(&i.to_le_bytes()).as_bytes());
        }
        assert_eq!(verified.len(), VERIFIED_TICKETS);
        assert!(!verified.contains(blake3::hash(&0usize.to_le_bytes()).as_bytes()));
        assert!(verified.contains(blake3::hash(&(VERIFIED_TICKETS + 9).to_le_bytes()).as_bytes()));
    }
}
