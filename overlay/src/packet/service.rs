//! The target side of the packet protocol: what a node does with one inbound
//! request — check the manager's ticket (store, read or delete, addressed to
//! this node and, when it names one, to the requester) and the size limit,
//! store through [`PacketStorage`] (which verifies the PacketId) under the
//! ticket's storage generation (recording the requester as the packet's
//! holder) and answer
//! with a signed receipt; serve a packet only under a read ticket or to its
//! holder (`holder`); delete only the generation a delete ticket names.
//!
//! Synchronous (run it through `spawn_blocking`); owns no queues or timers. It
//! must not do I/O other than through the storage trait.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use libp2p::identity::Keypair;
use strew_coordinator::{NodeId, PacketId, TicketKind};

use crate::packet::receipt::{self, Receipt};
use crate::packet::storage::{DeleteOutcome, PacketStorage, StorageError};
use crate::packet::ticket::{self, Asked};
use crate::packet::wire::{
    DeleteAnswer, MAX_DELETE_BATCH, MAX_INVENTORY_PAGE, PacketRequest, PacketResponse, Refusal,
};
use crate::packet::{holder, proof};

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
    verified: ticket::VerifiedTickets,
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
            verified: Default::default(),
        }
    }

    /// Shares the signatures verified with the put gate's checks.
    pub fn with_verified_tickets(mut self, verified: ticket::VerifiedTickets) -> Self {
        self.verified = verified;
        self
    }

    pub fn storage(&self) -> &Arc<dyn PacketStorage> {
        &self.storage
    }

    fn managers(&self) -> BTreeSet<NodeId> {
        self.managers.read().map(|m| m.clone()).unwrap_or_default()
    }

    /// Answers one request from `requester` at `now_ms` (unix ms).
    pub fn handle(&self, request: PacketRequest, requester: NodeId, now_ms: u64) -> PacketResponse {
        match request {
            PacketRequest::Put {
                packet_id,
                ticket,
                bytes,
            } => match self.put(packet_id, &ticket, &bytes, requester, now_ms) {
                Ok(receipt) => PacketResponse::Stored(receipt),
                Err(refusal) => PacketResponse::Refused(refusal),
            },
            PacketRequest::Audit { packet_id, chunk } => self.audit(&requester, &packet_id, chunk),
            PacketRequest::Get { packet_id, ticket } if ticket.is_empty() => {
                holder::read(self.storage.as_ref(), &packet_id, &requester)
            }
            PacketRequest::PutRoot { packet_id, bytes } => {
                holder::put_root(self.storage.as_ref(), packet_id, &bytes, &requester)
            }
            PacketRequest::MarkRoot { packet_id } => {
                holder::mark_root(self.storage.as_ref(), &packet_id, &requester)
            }
            PacketRequest::ListRoots { after, limit } => {
                holder::list_roots(self.storage.as_ref(), &requester, after.as_ref(), limit)
            }
            PacketRequest::DropRoot { packet_id } => {
                holder::drop_root(self.storage.as_ref(), &packet_id, &requester)
            }
            PacketRequest::Inventory { after, limit } => {
                self.inventory(&requester, after.as_ref(), limit)
            }
            PacketRequest::Get { packet_id, ticket } => {
                if let Err(refusal) =
                    self.authorise(&ticket, TicketKind::Read, &packet_id, requester, now_ms)
                {
                    return PacketResponse::Refused(refusal);
                }
                match self.storage.get(&packet_id) {
                    Ok(Some(bytes)) => PacketResponse::Found(bytes),
                    Ok(None) => PacketResponse::NotFound,
                    Err(err) => PacketResponse::Refused(refusal_of(err)),
                }
            }
            PacketRequest::DeleteMany { packets, tickets } => {
                self.delete_many(&packets, &tickets, requester, now_ms)
            }
            PacketRequest::Delete { packet_id, ticket } => {
                let entry = match self.authorise(
                    &ticket,
                    TicketKind::Delete,
                    &packet_id,
                    requester,
                    now_ms,
                ) {
                    Ok(entry) => entry,
                    Err(refusal) => return PacketResponse::Refused(refusal),
                };
                // Deleted with its generation: the same ticket never deletes
                // again, nor a copy stored again later (a new generation).
                match self.storage.delete(&packet_id, entry.generation) {
                    Ok(DeleteOutcome::Deleted) => PacketResponse::Deleted { existed: true },
                    Ok(DeleteOutcome::Absent) => PacketResponse::Deleted { existed: false },
                    Ok(DeleteOutcome::OtherGeneration) => {
                        PacketResponse::Refused(Refusal::OtherGeneration)
                    }
                    Err(err) => PacketResponse::Refused(refusal_of(err)),
                }
            }
        }
    }

    /// Answers an audit from `from`: only a trusted manager may ask (an audit
    /// costs one packet read). The answer is the chunk's proof, `NotFound`,
    /// or a refusal when the held copy is corrupt.
    pub fn audit(&self, from: &NodeId, packet_id: &PacketId, chunk: u64) -> PacketResponse {
        if !self.managers().contains(from) {
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

    /// Answers an inventory page to `from`: only a trusted manager may ask
    /// (it learns which packets this target holds, as it placed them).
    pub fn inventory(&self, from: &NodeId, after: Option<&PacketId>, limit: u32) -> PacketResponse {
        if !self.managers().contains(from) {
            return PacketResponse::Refused(Refusal::NotPermitted(
                "only the sequence manager asks for a target's inventory".into(),
            ));
        }
        let limit = (limit as usize).min(MAX_INVENTORY_PAGE);
        match self.storage.inventory(after, limit) {
            Ok(packets) => PacketResponse::Inventory(packets),
            Err(err) => PacketResponse::Refused(refusal_of(err)),
        }
    }

    /// Answers a `DeleteMany`: each packet authorised by its own ticket
    /// (a ticket's signature is verified once, however many packets name
    /// it), the authorised ones deleted together. A malformed request (too
    /// many packets or tickets, a ticket index out of range) is refused
    /// whole.
    fn delete_many(
        &self,
        packets: &[(PacketId, u32)],
        tickets: &[Vec<u8>],
        requester: NodeId,
        now_ms: u64,
    ) -> PacketResponse {
        if packets.is_empty() || packets.len() > MAX_DELETE_BATCH || tickets.len() > packets.len() {
            return PacketResponse::Refused(Refusal::NotPermitted(format!(
                "{} deletes under {} tickets in one request (1 to {MAX_DELETE_BATCH}, no more tickets than deletes)",
                packets.len(),
                tickets.len()
            )));
        }
        if packets.iter().any(|(_, t)| *t as usize >= tickets.len()) {
            return PacketResponse::Refused(Refusal::NotPermitted(
                "a delete names a ticket the request does not carry".into(),
            ));
        }
        let mut answers: Vec<Option<DeleteAnswer>> = vec![None; packets.len()];
        let mut authorised = Vec::with_capacity(packets.len());
        for (at, (packet_id, t)) in packets.iter().enumerate() {
            let ticket = &tickets[*t as usize];
            match self.authorise(ticket, TicketKind::Delete, packet_id, requester, now_ms) {
                Ok(entry) => authorised.push((at, (*packet_id, entry.generation))),
                Err(refusal) => answers[at] = Some(DeleteAnswer::Refused(refusal)),
            }
        }
        let deletes: Vec<(PacketId, u64)> = authorised.iter().map(|(_, d)| *d).collect();
        let outcomes = self.storage.delete_many(&deletes);
        for ((at, _), outcome) in authorised.iter().zip(outcomes) {
            answers[*at] = Some(match outcome {
                Ok(DeleteOutcome::Deleted) => DeleteAnswer::Deleted { existed: true },
                Ok(DeleteOutcome::Absent) => DeleteAnswer::Deleted { existed: false },
                Ok(DeleteOutcome::OtherGeneration) => {
                    DeleteAnswer::Refused(Refusal::OtherGeneration)
                }
                Err(err) => DeleteAnswer::Refused(refusal_of(err)),
            });
        }
        PacketResponse::DeletedMany(
            answers
                .into_iter()
                .map(|a| {
                    a.unwrap_or_else(|| {
                        DeleteAnswer::Refused(Refusal::StoreFailed(
                            "the store answered fewer deletes than asked".into(),
                        ))
                    })
                })
                .collect(),
        )
    }

    /// Checks the ticket names `packet_id` for this node and `requester`;
    /// returns the entry naming it.
    fn authorise(
        &self,
        ticket: &[u8],
        kind: TicketKind,
        packet_id: &PacketId,
        requester: NodeId,
        now_ms: u64,
    ) -> Result<strew_coordinator::TicketEntry, Refusal> {
        if ticket.is_empty() {
            return Err(Refusal::NoTicket);
        }
        ticket::check(
            ticket,
            &self.managers(),
            Asked {
                kind,
                me: &self.me,
                requester: Some(&requester),
                packet_id,
                now_ms,
            },
            &self.verified,
        )
    }

    fn put(
        &self,
        packet_id: PacketId,
        ticket: &[u8],
        bytes: &[u8],
        requester: NodeId,
        now_ms: u64,
    ) -> Result<Receipt, Refusal> {
        let size = bytes.len() as u64;
        if size > self.max_packet {
            return Err(Refusal::TooLarge {
                size,
                limit: self.max_packet,
            });
        }
        let entry = self.authorise(ticket, TicketKind::Store, &packet_id, requester, now_ms)?;
        if entry.size != size {
            return Err(Refusal::SizeMismatch {
                declared: size,
                ticketed: entry.size,
            });
        }
        if entry.generation == 0 {
            return Err(Refusal::BadTicket(
                "the store ticket names no storage generation".into(),
            ));
        }
        // The storage checks the body against the id (its contract): a
        // body that is not `packet_id` comes back as `WrongId`. Hashing it
        // here as well cost a quarter of a target's throughput.
        let generation = self
            .storage
            .put(packet_id, bytes, entry.generation)
            .map_err(refusal_of)?;
        self.storage
            .record_holder(&packet_id, &requester)
            .map_err(refusal_of)?;
        receipt::sign(&self.key, requester, packet_id, size, generation, now_ms)
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
        fn put(&self, id: PacketId, bytes: &[u8], generation: u64) -> Result<u64, StorageError> {
            self.0.put(id, bytes, generation)
        }
        fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
            Ok(self.0.get(id)?.map(|mut b| {
                b[0] ^= 1;
                b
            }))
        }
        fn delete(&self, id: &PacketId, generation: u64) -> Result<DeleteOutcome, StorageError> {
            self.0.delete(id, generation)
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
    fn only_the_manager_lists_a_targets_inventory_in_pages() {
        let manager = NodeId([1; 32]);
        let stranger = NodeId([2; 32]);
        let memory = MemoryStorage::new(1 << 24);
        let n = MAX_INVENTORY_PAGE + 10;
        for i in 0..n as u32 {
            let bytes = i.to_be_bytes().repeat(1 + (i % 3) as usize);
            memory
                .put(PacketId::of(&bytes), &bytes, u64::from(i) + 1)
                .expect("put");
        }
        let svc = service(Arc::new(memory), manager);
        assert!(matches!(
            svc.handle(
                PacketRequest::Inventory {
                    after: None,
                    limit: 10
                },
                stranger,
                0
            ),
            PacketResponse::Refused(Refusal::NotPermitted(_))
        ));
        let mut all = Vec::new();
        loop {
            let PacketResponse::Inventory(page) = svc.handle(
                PacketRequest::Inventory {
                    after: all.last().map(|p: &crate::packet::HeldPacket| p.packet_id),
                    limit: u32::MAX,
                },
                manager,
                0,
            ) else {
                panic!("the manager gets the inventory");
            };
            assert!(page.len() <= MAX_INVENTORY_PAGE);
            if page.is_empty() {
                break;
            }
            all.extend(page);
        }
        assert_eq!(all.len(), n);
        assert!(all.windows(2).all(|w| w[0].packet_id < w[1].packet_id));
        // Each entry is the packet's size and generation.
        for p in &all {
            assert!(p.generation >= 1 && p.size % 4 == 0 && p.size <= 12);
        }
    }

    #[test]
    fn only_the_manager_audits_and_a_corrupt_copy_cannot_prove() {
        let manager = NodeId([1; 32]);
        let stranger = NodeId([2; 32]);
        let bytes = vec![9u8; 3000];
        let id = PacketId::of(&bytes);
        let memory = MemoryStorage::new(1 << 20);
        memory.put(id, &bytes, 1).expect("put");
        let honest = service(Arc::new(memory), manager);
        let PacketResponse::Proof(p) = honest.audit(&manager, &id, 2) else {
            panic!("the manager gets a proof");
        };
        assert!(proof::verify(&id, 3000, 2, &p).is_ok());
        assert!(matches!(
            honest.audit(&stranger, &id, 2),
            PacketResponse::Refused(Refusal::NotPermitted(_))
        ));
        assert_eq!(
            honest.audit(&manager, &PacketId::of(b"other"), 0),
            PacketResponse::NotFound
        );
        // The request through `handle` is judged by its requester too.
        assert!(matches!(
            honest.handle(
                PacketRequest::Audit {
                    packet_id: id,
                    chunk: 0
                },
                stranger,
                0
            ),
            PacketResponse::Refused(Refusal::NotPermitted(_))
        ));

        let rotten = MemoryStorage::new(1 << 20);
        rotten.put(id, &bytes, 1).expect("put");
        let rotten = service(Arc::new(Rotten(rotten)), manager);
        assert!(matches!(
            rotten.audit(&manager, &id, 0),
            PacketResponse::Refused(Refusal::CannotProve(_))
        ));
    }

    #[test]
    fn only_the_storer_reads_without_a_ticket_marks_and_lists_its_roots() {
        let manager = NodeId([1; 32]);
        let owner = NodeId([3; 32]);
        let stranger = NodeId([4; 32]);
        let storage: Arc<dyn PacketStorage> = Arc::new(MemoryStorage::new(1 << 20));
        let svc = service(storage.clone(), manager);
        let bytes = b"a root packet".to_vec();
        let id = PacketId::of(&bytes);
        // As an accepted ticketed put leaves it: stored, requester recorded.
        storage.put(id, &bytes, 1).expect("put");
        storage.record_holder(&id, &owner).expect("holder");
        let get = |who| {
            svc.handle(
                PacketRequest::Get {
                    packet_id: id,
                    ticket: Vec::new(),
                },
                who,
                0,
            )
        };
        assert_eq!(get(owner), PacketResponse::Found(bytes.clone()));
        assert_eq!(
            get(stranger),
            PacketResponse::Refused(Refusal::NoTicket),
            "no holder read for another node"
        );
        let mark = |who| svc.handle(PacketRequest::MarkRoot { packet_id: id }, who, 0);
        assert_eq!(mark(stranger), PacketResponse::Marked { held: false });
        let list = |who| {
            svc.handle(
                PacketRequest::ListRoots {
                    after: None,
                    limit: u32::MAX,
                },
                who,
                0,
            )
        };
        assert_eq!(list(owner), PacketResponse::Roots(vec![]), "not marked yet");
        assert_eq!(mark(owner), PacketResponse::Marked { held: true });
        assert_eq!(list(owner), PacketResponse::Roots(vec![id]));
        assert_eq!(list(stranger), PacketResponse::Roots(vec![]));
        assert_eq!(
            svc.handle(
                PacketRequest::ListRoots {
                    after: Some(id),
                    limit: 10
                },
                owner,
                0
            ),
            PacketResponse::Roots(vec![])
        );
    }

    #[test]
    fn roots_are_put_without_a_ticket_within_the_holders_quota() {
        use crate::packet::wire::{MAX_ROOT_PACKET_BYTES, MAX_ROOTS_PER_HOLDER};
        let owner = NodeId([3; 32]);
        let stranger = NodeId([4; 32]);
        let storage: Arc<dyn PacketStorage> = Arc::new(MemoryStorage::new(1 << 24));
        let svc = service(storage.clone(), NodeId([1; 32]));
        // As an accepted ticketed put leaves it: the manager chose this target for `who`.
        let ticketed = |who: NodeId, bytes: &[u8]| {
            let id = PacketId::of(bytes);
            storage.put(id, bytes, 1).expect("put");
            storage.record_holder(&id, &who).expect("holder");
        };
        ticketed(owner, b"a data packet of the owner");
        let put = |who, bytes: Vec<u8>| {
            svc.handle(
                PacketRequest::PutRoot {
                    packet_id: PacketId::of(&bytes),
                    bytes,
                },
                who,
                0,
            )
        };
        assert!(matches!(
            svc.handle(
                PacketRequest::PutRoot {
                    packet_id: PacketId::of(b"other"),
                    bytes: b"root".to_vec()
                },
                owner,
                0
            ),
            PacketResponse::Refused(Refusal::WrongPacketId { .. })
        ));
        assert!(matches!(
            put(owner, vec![0; MAX_ROOT_PACKET_BYTES + 1]),
            PacketResponse::Refused(Refusal::TooLarge { .. })
        ));
        for n in 0..MAX_ROOTS_PER_HOLDER as u32 {
            assert_eq!(
                put(owner, n.to_be_bytes().to_vec()),
                PacketResponse::Marked { held: true }
            );
        }
        // Storing one again is a no-op; one more is over the quota.
        assert_eq!(
            put(owner, 0u32.to_be_bytes().to_vec()),
            PacketResponse::Marked { held: true }
        );
        assert!(matches!(
            put(owner, b"one too many".to_vec()),
            PacketResponse::Refused(Refusal::NotPermitted(_))
        ));
        // A node the manager never sent here keeps no roots here.
        assert!(matches!(
            put(stranger, b"mine".to_vec()),
            PacketResponse::Refused(Refusal::NotPermitted(_))
        ));
        // Once it holds a ticketed packet, it has its own quota and sees
        // none of the owner's roots.
        ticketed(stranger, b"a data packet of the stranger");
        assert_eq!(
            put(stranger, b"mine".to_vec()),
            PacketResponse::Marked { held: true }
        );
        // Every page of a holder's roots.
        let list = |who| {
            let mut all = Vec::new();
            loop {
                let PacketResponse::Roots(page) = svc.handle(
                    PacketRequest::ListRoots {
                        after: all.last().copied(),
                        limit: 1000,
                    },
                    who,
                    0,
                ) else {
                    panic!("roots are listed");
                };
                assert!(page.len() <= crate::packet::wire::MAX_ROOTS_PAGE);
                let done = page.is_empty();
                all.extend(page);
                if done {
                    return PacketResponse::Roots(all);
                }
            }
        };
        assert_eq!(
            list(stranger),
            PacketResponse::Roots(vec![PacketId::of(b"mine")])
        );
        let PacketResponse::Roots(ids) = list(owner) else {
            panic!("the owner lists its roots");
        };
        assert_eq!(ids.len(), MAX_ROOTS_PER_HOLDER);
        // The stranger cannot read the owner's roots.
        assert_eq!(
            svc.handle(
                PacketRequest::Get {
                    packet_id: ids[0],
                    ticket: Vec::new()
                },
                stranger,
                0
            ),
            PacketResponse::Refused(Refusal::NoTicket)
        );
        // Dropping a root (its snapshot was forgotten): only the owner's
        // request counts; the root packet is deleted and frees its quota.
        let drop = |who, id| svc.handle(PacketRequest::DropRoot { packet_id: id }, who, 0);
        assert_eq!(
            drop(stranger, ids[0]),
            PacketResponse::Deleted { existed: false }
        );
        assert!(storage.get(&ids[0]).expect("get").is_some());
        assert_eq!(
            drop(owner, ids[0]),
            PacketResponse::Deleted { existed: true }
        );
        assert_eq!(storage.get(&ids[0]).expect("get"), None);
        assert_eq!(
            drop(owner, ids[0]),
            PacketResponse::Deleted { existed: false }
        );
        let PacketResponse::Roots(left) = list(owner) else {
            panic!("the owner lists its roots");
        };
        assert_eq!(left.len(), MAX_ROOTS_PER_HOLDER - 1);
        assert_eq!(
            put(owner, b"room again".to_vec()),
            PacketResponse::Marked { held: true }
        );
        // A data packet marked as a root is only unmarked: the manager frees it.
        let data = PacketId::of(b"a data packet of the stranger");
        assert_eq!(
            svc.handle(PacketRequest::MarkRoot { packet_id: data }, stranger, 0),
            PacketResponse::Marked { held: true }
        );
        assert_eq!(
            drop(stranger, data),
            PacketResponse::Deleted { existed: true }
        );
        assert!(storage.get(&data).expect("get").is_some());
        assert_eq!(
            list(stranger),
            PacketResponse::Roots(vec![PacketId::of(b"mine")])
        );
    }
}
