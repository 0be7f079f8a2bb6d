//! The target side of the packet protocol: what a node does with one inbound
//! request — check the manager's ticket, the size limit and the PacketId, store
//! through [`PacketStorage`], and answer with a signed receipt.
//!
//! Synchronous (run it through `spawn_blocking`); owns no queues or timers. It
//! must not do I/O other than through the storage trait.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use libp2p::identity::Keypair;
use strew_coordinator::{NodeId, PacketId, TicketKind};

use crate::packet::proof;
use crate::packet::receipt::Receipt;
use crate::packet::storage::{PacketStorage, StorageError};
use crate::packet::ticket;
use crate::packet::wire::{PacketRequest, PacketResponse, Refusal};

/// The managers whose tickets this node honours (the current sequence manager,
/// as the coordinator group tells the daemon).
pub type TrustedManagers = Arc<RwLock<BTreeSet<NodeId>>>;

/// Everything a target needs to answer requests.
#[derive(Clone)]
pub struct PacketService {
    key: Keypair,
    me: NodeId,
    max_packet: u64,
    storage: Arc<dyn PacketStorage>,
    managers: TrustedManagers,
}

impl std::fmt::Debug for PacketService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketService")
            .field("me", &self.me)
            .field("max_packet", &self.max_packet)
            .finish_non_exhaustive()
    }
}

impl PacketService {
    pub fn new(
        key: Keypair,
        me: NodeId,
        max_packet: u64,
        storage: Arc<dyn PacketStorage>,
        managers: TrustedManagers,
    ) -> Self {
        PacketService {
            key,
            me,
            max_packet,
            storage,
            managers,
        }
    }

    pub fn storage(&self) -> &Arc<dyn PacketStorage> {
        &self.storage
    }

    fn managers(&self) -> BTreeSet<NodeId> {
        self.managers.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Answers one request at `now_ms` (unix ms).
    pub fn handle(&self, request: PacketRequest, now_ms: u64) -> PacketResponse {
        match request {
            PacketRequest::Put {
                packet_id,
                ticket,
                bytes,
            } => match self.put(packet_id, &ticket, &bytes, now_ms) {
                Ok(receipt) => PacketResponse::Stored(receipt),
                Err(refusal) => PacketResponse::Refused(refusal),
            },
            PacketRequest::Get { packet_id } => match self.storage.get(&packet_id) {
                Ok(Some(bytes)) => PacketResponse::Found(bytes),
                Ok(None) => PacketResponse::NotFound,
                Err(err) => PacketResponse::Refused(refusal_of(err)),
            },
            PacketRequest::Audit { .. } => PacketResponse::Refused(Refusal::NotPermitted(
                "an audit needs the requester's identity".into(),
            )),
            PacketRequest::Delete { packet_id, ticket } => {
                if let Err(refusal) =
                    self.authorise(&ticket, TicketKind::Delete, &packet_id, now_ms)
                {
                    return PacketResponse::Refused(refusal);
                }
                match self.storage.delete(&packet_id) {
                    Ok(existed) => PacketResponse::Deleted { existed },
                    Err(err) => PacketResponse::Refused(refusal_of(err)),
                }
            }
        }
    }

    /// Answers an audit from `from`: only a trusted manager may ask (an audit
    /// costs one packet read). The answer is the chunk's proof, `NotFound`,
    /// or a refusal when the held copy is corrupt.
    pub fn audit(&self, from: Option<&NodeId>, packet_id: &PacketId, chunk: u64) -> PacketResponse {
        if !from.is_some_and(|f| self.managers().contains(f)) {
            return PacketResponse::Refused(Refusal::NotPermitted(
                "only the sequence manager audits".into(),
            ));
        }
        match self.storage.get(packet_id) {
            Ok(None) => PacketResponse::NotFound,
            Ok(Some(bytes)) => match proof::prove(packet_id, &bytes, chunk) {
                Ok(proof) => PacketResponse::Proof(proof),
                Err(err) => PacketResponse::Refused(Refusal::CannotProve(err.to_string())),
            },
            Err(err) => PacketResponse::Refused(refusal_of(err)),
        }
    }

    /// Checks the ticket names `packet_id` for this node; returns the ticketed size.
    fn authorise(
        &self,
        ticket: &[u8],
        kind: TicketKind,
        packet_id: &PacketId,
        now_ms: u64,
    ) -> Result<u64, Refusal> {
        if ticket.is_empty() {
            return Err(Refusal::NoTicket);
        }
        ticket::check(ticket, kind, &self.managers(), &self.me, now_ms, packet_id)
    }

    fn put(
        &self,
        packet_id: PacketId,
        ticket: &[u8],
        bytes: &[u8],
        now_ms: u64,
    ) -> Result<Receipt, Refusal> {
        let size = bytes.len() as u64;
        if size > self.max_packet {
            return Err(Refusal::TooLarge {
                size,
                limit: self.max_packet,
            });
        }
        let ticketed = self.authorise(ticket, TicketKind::Store, &packet_id, now_ms)?;
        if ticketed != size {
            return Err(Refusal::SizeMismatch {
                declared: size,
                ticketed,
            });
        }
        let actual = PacketId::of(bytes);
        if actual != packet_id {
            return Err(Refusal::WrongPacketId { actual });
        }
        self.storage.put(packet_id, bytes).map_err(refusal_of)?;
        Receipt::sign(&self.key, packet_id, size, now_ms)
            .ok_or_else(|| Refusal::StoreFailed("cannot sign receipt".into()))
    }
}

fn refusal_of(err: StorageError) -> Refusal {
    match err {
        StorageError::Full { needed, free } => Refusal::Full { needed, free },
        StorageError::WrongId { actual } => Refusal::WrongPacketId { actual },
        StorageError::Failed(source) => Refusal::StoreFailed(source.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::storage::MemoryStorage;
    use crate::peer;

    /// Storage whose copy of every packet is rotten (bytes flipped after the id check).
    struct Rotten(MemoryStorage);

    impl PacketStorage for Rotten {
        fn put(&self, id: PacketId, bytes: &[u8]) -> Result<(), StorageError> {
            self.0.put(id, bytes)
        }
        fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(self.0.get(id)?.map(|mut b| {
                b[0] ^= 1;
                b
            }))
        }
        fn delete(&self, id: &PacketId) -> Result<bool, StorageError> {
            self.0.delete(id)
        }
        fn free_bytes(&self) -> Result<u64, StorageError> {
            self.0.free_bytes()
        }
        fn capacity(&self) -> u64 {
            self.0.capacity()
        }
    }

    fn service(storage: Arc<dyn PacketStorage>, manager: NodeId) -> PacketService {
        let key = Keypair::generate_ed25519();
        let me = peer::node_id_of_key(&key.public()).expect("ed25519");
        let managers = Arc::new(RwLock::new(BTreeSet::from([manager])));
        PacketService::new(key, me, 1 << 20, storage, managers)
    }

    #[test]
    fn only_the_manager_audits_and_a_corrupt_copy_cannot_prove() {
        let manager = NodeId([1; 32]);
        let stranger = NodeId([2; 32]);
        let bytes = vec![9u8; 3000];
        let id = PacketId::of(&bytes);
        let memory = MemoryStorage::new(1 << 20);
        memory.put(id, &bytes).expect("put");
        let honest = service(Arc::new(memory), manager);
        let PacketResponse::Proof(p) = honest.audit(Some(&manager), &id, 2) else {
            panic!("the manager gets a proof");
        };
        assert!(proof::verify(&id, 3000, 2, &p).is_ok());
        for from in [Some(&stranger), None] {
            assert!(matches!(
                honest.audit(from, &id, 2),
                PacketResponse::Refused(Refusal::NotPermitted(_))
            ));
        }
        assert_eq!(
            honest.audit(Some(&manager), &PacketId::of(b"other"), 0),
            PacketResponse::NotFound
        );
        // The request through `handle` (no identity) is refused too.
        assert!(matches!(
            honest.handle(
                PacketRequest::Audit {
                    packet_id: id,
                    chunk: 0
                },
                0
            ),
            PacketResponse::Refused(Refusal::NotPermitted(_))
        ));

        let rotten = MemoryStorage::new(1 << 20);
        rotten.put(id, &bytes).expect("put");
        let rotten = service(Arc::new(Rotten(rotten)), manager);
        assert!(matches!(
            rotten.audit(Some(&manager), &id, 0),
            PacketResponse::Refused(Refusal::CannotProve(_))
        ));
    }
}
