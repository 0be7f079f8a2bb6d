//! Checking a manager's storage ticket on the target, before anything is written.
//!
//! Owns the size-bounded decode and the mapping of ticket failures to wire
//! refusals. The ticket format and its signature belong to
//! `strew_coordinator::StorageTicket`; this module must not re-implement them.

use std::collections::BTreeSet;

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

/// Verifies `ticket` permits `asked.kind`, was signed by one of `managers`,
/// is addressed to this node, is the requester's (when it names a holder),
/// has not expired, and names the packet; returns the entry naming it (its
/// size and generation).
pub fn check(
    ticket: &[u8],
    managers: &BTreeSet<NodeId>,
    asked: Asked<'_>,
) -> Result<TicketEntry, Refusal> {
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
    ticket
        .verify(&ticket.manager, me, now_ms)
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
}
