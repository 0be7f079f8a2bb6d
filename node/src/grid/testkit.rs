//! An in-process grid for tests and demos of the source-side logic: the
//! real coordinator [`Manager`] behind [`ManagerApi`], and in-memory targets
//! behind [`PacketTransport`] that check tickets (store, read, delete with
//! its generation) and PacketIds as real targets do, sign receipts with
//! their own keys, count the bytes they receive, and can be taken down or
//! made to serve corrupted packets. No sockets, no processes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use ed25519_dalek::SigningKey;
use rand::SeedableRng;
use rand::rngs::StdRng;
use strew_coordinator::manager::ReadTicketRequest;
use strew_coordinator::manager::{
    CommitOrderRequest, CommitOrderResponse, CommitRequest, CommitResponse, ForgetResponse,
    Manager, PlanDecision, PlanRequest, RetargetRequest, SnapshotSummary,
};
use strew_coordinator::records::RestoreOutcome;
use strew_coordinator::seal::SealedForRecipient;
use strew_coordinator::ticket::{StorageTicket, TicketKind};
use strew_coordinator::{DataId, NodeId, PacketId, SnapshotId, StoreReceipt};

use super::{GridError, ManagerApi, PacketTransport, TransportError};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A manager in this process, with a settable clock and a seeded RNG.
pub struct LocalManager {
    pub manager: Mutex<Manager>,
    pub now: AtomicU64,
    /// Pages of commit orders handed in (large commits come in pages).
    pub order_pages: AtomicU64,
    /// Where each sequence page asked for started, in the order asked.
    pub sequence_reads: Mutex<Vec<u64>>,
    rng: Mutex<StdRng>,
}

impl LocalManager {
    pub fn new(manager: Manager, now: u64, seed: u64) -> Self {
        LocalManager {
            manager: Mutex::new(manager),
            now: AtomicU64::new(now),
            order_pages: AtomicU64::new(0),
            sequence_reads: Mutex::new(Vec::new()),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
        }
    }

    /// The manager as seen by one requesting node.
    pub fn client(&self, requester: NodeId) -> LocalClient<'_> {
        LocalClient {
            local: self,
            requester,
        }
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }
}

pub struct LocalClient<'a> {
    local: &'a LocalManager,
    requester: NodeId,
}

fn refused(e: strew_coordinator::ManagerError) -> GridError {
    GridError::Refused(crate::wire::refusal(&e))
}

impl ManagerApi for LocalClient<'_> {
    async fn plan(&self, request: PlanRequest) -> Result<PlanDecision, GridError> {
        if request.source != self.requester {
            return Err(GridError::Refused(strew_overlay::manager::Refusal::new(
                strew_overlay::RefusalCode::NotOwner,
                "plan for another source",
            )));
        }
        let now = self.local.now();
        let mut rng = lock(&self.local.rng);
        lock(&self.local.manager)
            .plan_backup(request, now, &mut *rng)
            .map_err(refused)
    }

    async fn commit(&self, request: CommitRequest) -> Result<CommitResponse, GridError> {
        let now = self.local.now();
        let mut rng = lock(&self.local.rng);
        lock(&self.local.manager)
            .commit_backup(request, now, &mut *rng)
            .map_err(refused)
    }

    async fn fetch_sequence_page(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> Result<(SealedForRecipient, u64), GridError> {
        lock(&self.local.sequence_reads).push(from);
        let mut rng = lock(&self.local.rng);
        lock(&self.local.manager)
            .fetch_sequence_page(self.requester, snapshot, from, count, &mut *rng)
            .map(|page| (page.sealed, page.total))
            .map_err(refused)
    }

    async fn fetch_attestation(
        &self,
        snapshot: SnapshotId,
    ) -> Result<super::Attestation, GridError> {
        lock(&self.local.manager)
            .fetch_attestation(self.requester, snapshot)
            .map(|attestation| super::Attestation {
                attestation,
                cert: None,
            })
            .map_err(refused)
    }

    async fn fetch_sequence(&self, snapshot: SnapshotId) -> Result<SealedForRecipient, GridError> {
        let mut rng = lock(&self.local.rng);
        lock(&self.local.manager)
            .fetch_sequence(self.requester, snapshot, &mut *rng)
            .map_err(refused)
    }

    async fn list(&self, set: Option<String>) -> Result<Vec<SnapshotSummary>, GridError> {
        Ok(lock(&self.local.manager).list_snapshots(&self.requester, set.as_deref()))
    }

    async fn forget(&self, snapshot: SnapshotId) -> Result<ForgetResponse, GridError> {
        let now = self.local.now();
        lock(&self.local.manager)
            .forget(self.requester, snapshot, now)
            .map_err(refused)
    }

    async fn record_receipts(
        &self,
        pending_id: u64,
        receipts: Vec<StoreReceipt>,
    ) -> Result<(), GridError> {
        lock(&self.local.manager)
            .record_receipts(self.requester, pending_id, &receipts)
            .map_err(refused)
    }

    async fn retarget(&self, mut request: RetargetRequest) -> Result<PlanDecision, GridError> {
        request.source = self.requester;
        let now = self.local.now();
        let mut rng = lock(&self.local.rng);
        lock(&self.local.manager)
            .retarget(&request, now, &mut *rng)
            .map_err(refused)
    }

    async fn commit_order(
        &self,
        mut request: CommitOrderRequest,
    ) -> Result<CommitOrderResponse, GridError> {
        request.source = self.requester;
        self.local.order_pages.fetch_add(1, Ordering::Relaxed);
        lock(&self.local.manager)
            .commit_order(&request)
            .map_err(refused)
    }

    async fn abandon(&self, pending_id: u64) -> Result<Vec<StorageTicket>, GridError> {
        let now = self.local.now();
        lock(&self.local.manager)
            .abandon(self.requester, pending_id, now)
            .map_err(refused)
    }

    async fn record_restore(
        &self,
        snapshot: SnapshotId,
        outcome: RestoreOutcome,
    ) -> Result<(), GridError> {
        let now = self.local.now();
        lock(&self.local.manager)
            .record_restore(self.requester, snapshot, outcome, now)
            .map(|_| ())
            .map_err(refused)
    }

    async fn read_tickets(
        &self,
        snapshot: SnapshotId,
        from: u64,
        count: u32,
    ) -> Result<Vec<StorageTicket>, GridError> {
        let request = ReadTicketRequest {
            requester: self.requester,
            snapshot,
            from,
            count,
        };
        lock(&self.local.manager)
            .read_tickets(&request, self.local.now())
            .map_err(refused)
    }

    async fn report_bad(&self, data_id: DataId, packets: Vec<PacketId>) -> Result<(), GridError> {
        let now = self.local.now();
        let mut manager = lock(&self.local.manager);
        let commands = manager
            .decide_mark_bad(self.requester, data_id, &packets, now)
            .map_err(refused)?;
        for command in commands {
            manager.execute(command).map_err(refused)?;
        }
        Ok(())
    }
}

/// One in-memory target.
#[derive(Debug)]
pub struct MemoryTarget {
    /// Its identity: receipts are signed with it.
    pub key: SigningKey,
    pub up: bool,
    /// Serve every packet with one bit flipped (a lying target).
    pub corrupt: bool,
    pub capacity: u64,
    pub packets: BTreeMap<PacketId, Vec<u8>>,
    /// Each packet's storage generation (from its first store ticket).
    pub generations: BTreeMap<PacketId, u64>,
    pub bytes_received: u64,
    /// How long each get takes to answer (a slow or distant target).
    pub get_delay: std::time::Duration,
    /// Puts refused before this target accepts again (briefly gone).
    pub failing_puts: u32,
    /// Puts it still accepts before it goes down for good (a volunteer
    /// who leaves mid-backup); `None`: no end.
    pub puts_left: Option<u32>,
}

impl MemoryTarget {
    fn new(key: SigningKey, capacity: u64) -> Self {
        MemoryTarget {
            key,
            up: true,
            corrupt: false,
            capacity,
            packets: BTreeMap::new(),
            generations: BTreeMap::new(),
            bytes_received: 0,
            get_delay: std::time::Duration::ZERO,
            failing_puts: 0,
            puts_left: None,
        }
    }
}

/// The node id of a signing key.
pub fn node_id_of(key: &SigningKey) -> NodeId {
    NodeId(key.verifying_key().to_bytes())
}

/// A set of in-memory targets trusting one manager's tickets.
pub struct MemoryTargets {
    pub manager: NodeId,
    pub now: AtomicU64,
    pub targets: Mutex<BTreeMap<NodeId, MemoryTarget>>,
    /// Every packet served by a get, in order (tests count what was fetched).
    pub gets: Mutex<Vec<PacketId>>,
}

impl MemoryTargets {
    pub fn new(
        manager: NodeId,
        now: u64,
        keys: impl IntoIterator<Item = (SigningKey, u64)>,
    ) -> Self {
        let targets = keys
            .into_iter()
            .map(|(key, capacity)| (node_id_of(&key), MemoryTarget::new(key, capacity)))
            .collect();
        MemoryTargets {
            manager,
            now: AtomicU64::new(now),
            targets: Mutex::new(targets),
            gets: Mutex::new(Vec::new()),
        }
    }

    /// Adds a node (sources donate storage too, so they are targets as well).
    pub fn add(&self, key: SigningKey, capacity: u64) {
        lock(&self.targets).insert(node_id_of(&key), MemoryTarget::new(key, capacity));
    }

    pub fn set_up(&self, id: &NodeId, up: bool) {
        if let Some(t) = lock(&self.targets).get_mut(id) {
            t.up = up;
        }
    }

    /// Refuses the next `puts` puts to `id`, then accepts again.
    pub fn fail_puts(&self, id: &NodeId, puts: u32) {
        if let Some(t) = lock(&self.targets).get_mut(id) {
            t.failing_puts = puts;
        }
    }

    /// Accepts `puts` more puts to `id`, then it is down for good.
    pub fn go_down_after(&self, id: &NodeId, puts: u32) {
        if let Some(t) = lock(&self.targets).get_mut(id) {
            t.puts_left = Some(puts);
        }
    }

    pub fn set_corrupt(&self, id: &NodeId, corrupt: bool) {
        if let Some(t) = lock(&self.targets).get_mut(id) {
            t.corrupt = corrupt;
        }
    }

    /// Makes every get from `id` answer after `delay`.
    pub fn set_get_delay(&self, id: &NodeId, delay: std::time::Duration) {
        if let Some(t) = lock(&self.targets).get_mut(id) {
            t.get_delay = delay;
        }
    }

    /// Which targets hold at least one packet, most packets first.
    pub fn holders(&self) -> Vec<(NodeId, usize)> {
        let mut v: Vec<(NodeId, usize)> = lock(&self.targets)
            .iter()
            .filter(|(_, t)| !t.packets.is_empty())
            .map(|(id, t)| (*id, t.packets.len()))
            .collect();
        v.sort_by_key(|(id, n)| (std::cmp::Reverse(*n), *id));
        v
    }

    pub fn all_packets(&self) -> BTreeSet<PacketId> {
        lock(&self.targets)
            .values()
            .flat_map(|t| t.packets.keys().copied())
            .collect()
    }

    /// Takes the list of packets served since the last call.
    pub fn take_gets(&self) -> Vec<PacketId> {
        std::mem::take(&mut *lock(&self.gets))
    }

    pub fn bytes_received(&self) -> u64 {
        lock(&self.targets).values().map(|t| t.bytes_received).sum()
    }

    /// The target, if it is up and `ticket` is valid for it now (what a
    /// real target checks before a put or a delete).
    fn ticketed<'a>(
        &self,
        all: &'a mut BTreeMap<NodeId, MemoryTarget>,
        target: NodeId,
        ticket: &StorageTicket,
        kind: TicketKind,
    ) -> Result<&'a mut MemoryTarget, TransportError> {
        let now = self.now.load(Ordering::Relaxed);
        let t = all
            .get_mut(&target)
            .ok_or_else(|| Self::err(target, "no such node"))?;
        if !t.up {
            return Err(Self::err(target, "connection refused"));
        }
        ticket
            .verify(&self.manager, &target, now)
            .map_err(|e| Self::err(target, format!("ticket refused: {e}")))?;
        if ticket.kind != kind {
            return Err(Self::err(target, format!("a {:?} ticket", ticket.kind)));
        }
        Ok(t)
    }

    fn err(target: NodeId, detail: impl Into<String>) -> TransportError {
        let detail = detail.into();
        let kind = match detail.as_str() {
            "no such node" | "connection refused" => super::TransportFailure::Unreachable,
            "no such packet" => super::TransportFailure::Missing,
            _ => super::TransportFailure::Rejected,
        };
        TransportError::new(target, kind, detail)
    }
}

impl PacketTransport for MemoryTargets {
    async fn put(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
        bytes: Vec<u8>,
    ) -> Result<StoreReceipt, TransportError> {
        let mut all = lock(&self.targets);
        let t = self.ticketed(&mut all, target, ticket, TicketKind::Store)?;
        if t.failing_puts > 0 {
            t.failing_puts -= 1;
            return Err(Self::err(target, "briefly unreachable"));
        }
        match &mut t.puts_left {
            Some(0) => {
                t.up = false;
                return Err(Self::err(target, "connection refused"));
            }
            Some(left) => *left -= 1,
            None => {}
        }
        let Some(entry) = ticket.entry_for(&id) else {
            return Err(Self::err(target, "packet not on the ticket"));
        };
        if entry.size != bytes.len() as u64 || entry.generation == 0 {
            return Err(Self::err(
                target,
                "wrong size or no generation on the ticket",
            ));
        }
        let Some(source) = ticket.holder else {
            return Err(Self::err(target, "a store ticket names its source"));
        };
        if PacketId::of(&bytes) != id {
            return Err(Self::err(target, "bytes do not match the PacketId"));
        }
        let used: u64 = t.packets.values().map(|b| b.len() as u64).sum();
        if !t.packets.contains_key(&id) && used + bytes.len() as u64 > t.capacity {
            return Err(Self::err(target, "target full"));
        }
        t.bytes_received += bytes.len() as u64;
        let size = bytes.len() as u64;
        t.packets.insert(id, bytes);
        let generation = *t.generations.entry(id).or_insert(entry.generation);
        StoreReceipt::unsigned(target, source, id, size, generation, 0)
            .sign_with(&t.key)
            .map_err(|e| Self::err(target, format!("cannot sign a receipt: {e}")))
    }

    async fn get(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
    ) -> Result<Vec<u8>, TransportError> {
        let (bytes, delay) = {
            let mut all = lock(&self.targets);
            let t = self.ticketed(&mut all, target, ticket, TicketKind::Read)?;
            if ticket.entry_for(&id).is_none() {
                return Err(Self::err(target, "packet not on the read ticket"));
            }
            let mut bytes = t
                .packets
                .get(&id)
                .cloned()
                .ok_or_else(|| Self::err(target, "no such packet"))?;
            lock(&self.gets).push(id);
            if t.corrupt && !bytes.is_empty() {
                let at = bytes.len() / 2;
                bytes[at] ^= 0x10;
            }
            (bytes, t.get_delay)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(bytes)
    }

    async fn delete(
        &self,
        target: NodeId,
        ticket: &StorageTicket,
        id: PacketId,
    ) -> Result<(), TransportError> {
        let mut all = lock(&self.targets);
        let t = self.ticketed(&mut all, target, ticket, TicketKind::Delete)?;
        let Some(entry) = ticket.entry_for(&id) else {
            return Err(Self::err(target, "packet not on the delete ticket"));
        };
        match t.generations.get(&id) {
            Some(g) if *g != entry.generation => {
                Err(Self::err(target, "the packet has another generation"))
            }
            _ => {
                t.packets.remove(&id);
                t.generations.remove(&id);
                Ok(())
            }
        }
    }
}
