//! Checking a manager's storage ticket on the target, before anything is written.
//!
//! Owns the size-bounded decode and the mapping of ticket failures to wire
//! refusals. The ticket format and its signature belong to
//! `strew_coordinator::StorageTicket`; this module must not re-implement them.

use std::collections::BTreeSet;

use strew_coordinator::{NodeId, PacketId, StorageTicket, TicketError, TicketKind};

use crate::packet::wire::{MAX_HEADER_BYTES, Refusal};

/// Encodes a ticket for the wire.
pub fn encode(ticket: &StorageTicket) -> Result<Vec<u8>, TicketError> {
    ticket.to_bytes()
}

/// Decodes a ticket from the wire.
pub fn decode(bytes: &[u8]) -> Result<StorageTicket, TicketError> {
    StorageTicket::from_bytes(bytes, MAX_HEADER_BYTES)
}

/// Verifies `ticket` permits `kind`, was signed by one of `managers`, is
/// addressed to `me`, has not expired at `now_ms`, and names `packet_id`;
/// returns the size it allows.
pub fn check(
    ticket: &[u8],
    kind: TicketKind,
    managers: &BTreeSet<NodeId>,
    me: &NodeId,
    now_ms: u64,
    packet_id: &PacketId,
) -> Result<u64, Refusal> {
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
    ticket.size_for(packet_id).ok_or(Refusal::NotInTicket)
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
    use strew_coordinator::TicketEntry;

    const NOW: u64 = 1_800_000_000_000;

    fn setup() -> (Keypair, NodeId, NodeId, PacketId) {
        let manager = Keypair::generate_ed25519();
        let manager_id = peer::node_id_of_key(&manager.public()).unwrap();
        let me = peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap();
        (manager, manager_id, me, PacketId::of(b"p"))
    }

    #[test]
    fn ticket_signed_with_the_libp2p_identity_verifies_against_its_node_id() {
        let (manager, manager_id, me, id) = setup();
        let key = signing_key(&manager).unwrap();
        let t = StorageTicket::issue(
            &key,
            me,
            vec![TicketEntry {
                packet_id: id,
                size: 1,
            }],
            NOW + 1000,
        )
        .unwrap();
        let trusted = BTreeSet::from([manager_id]);
        assert_eq!(
            check(&encode(&t).unwrap(), TicketKind::Store, &trusted, &me, NOW, &id),
            Ok(1)
        );
        // Wrong kind, untrusted issuer, expired, other packet, garbage.
        assert!(matches!(
            check(&encode(&t).unwrap(), TicketKind::Delete, &trusted, &me, NOW, &id),
            Err(Refusal::BadTicket(_))
        ));
        assert!(matches!(
            check(
                &encode(&t).unwrap(),
                TicketKind::Store,
                &BTreeSet::new(),
                &me,
                NOW,
                &id
            ),
            Err(Refusal::BadTicket(_))
        ));
        assert!(matches!(
            check(
                &encode(&t).unwrap(),
                TicketKind::Store,
                &trusted,
                &me,
                NOW + 2000,
                &id
            ),
            Err(Refusal::BadTicket(_))
        ));
        assert_eq!(
            check(
                &encode(&t).unwrap(),
                TicketKind::Store,
                &trusted,
                &me,
                NOW,
                &PacketId::of(b"q")
            ),
            Err(Refusal::NotInTicket)
        );
        assert!(matches!(
            check(b"\xff\x00", TicketKind::Store, &trusted, &me, NOW, &id),
            Err(Refusal::BadTicket(_))
        ));
    }
}
