//! How outbound requests fail, between in-process overlays on 127.0.0.1: a
//! peer nobody knows an address for is unreachable, a target slower than
//! the request timeout times out, and a call to a stopped overlay says so.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{config, start, wait_for};
use strew_coordinator::PacketId;
use strew_coordinator::{StorageTicket, TicketEntry, TicketKind};
use strew_overlay::libp2p::identity::Keypair;
use strew_overlay::packet::ticket;
use strew_overlay::{
    DeleteOutcome, MemoryStorage, OverlayError, PacketStorage, RequestFailure, StorageError, peer,
};

fn failure(err: OverlayError) -> RequestFailure {
    match err {
        OverlayError::Request { failure, .. } => failure,
        other => panic!("expected a transport failure, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_without_a_known_address_is_unreachable() {
    let source = start(config(52.52, 13.40, vec![]), 1 << 20);
    let nobody = peer::node_id_of_key(&Keypair::generate_ed25519().public()).unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        source
            .handle
            .get_packet(nobody, PacketId::of(b"x"), Vec::new()),
    )
    .await
    .expect("a dial failure is reported at once")
    .unwrap_err();
    let failure = failure(err);
    assert!(
        matches!(failure, RequestFailure::Unreachable(_)),
        "{failure:?}"
    );
}

/// A store that takes two seconds to read.
struct SlowReads(MemoryStorage);

impl PacketStorage for SlowReads {
    fn put(&self, id: PacketId, bytes: &[u8], generation: u64) -> Result<u64, StorageError> {
        self.0.put(id, bytes, generation)
    }
    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, StorageError> {
        std::thread::sleep(Duration::from_secs(2));
        self.0.get(id)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_slower_than_the_timeout_times_out_and_a_stopped_overlay_says_so() {
    let (target, task) = strew_overlay::start(
        Keypair::generate_ed25519(),
        config(48.85, 2.35, vec![]),
        Arc::new(SlowReads(MemoryStorage::new(1 << 20))),
        None,
    )
    .unwrap();
    wait_for("a listen address", Duration::from_secs(10), || {
        !target.listen_addrs().is_empty()
    })
    .await;
    let mut source_cfg = config(52.52, 13.40, vec![target.listen_addrs()[0].clone()]);
    source_cfg.request_timeout = Duration::from_millis(500);
    let source = start(source_cfg, 1 << 20);
    wait_for("a connection", Duration::from_secs(20), || {
        source.handle.connected_peers() > 0
    })
    .await;

    // A valid read ticket, so the target gets as far as its slow store.
    let manager = Keypair::generate_ed25519();
    target.set_trusted_managers(std::collections::BTreeSet::from([peer::node_id_of_key(
        &manager.public(),
    )
    .unwrap()]));
    let read = StorageTicket::issue_kind(
        &ticket::signing_key(&manager).unwrap(),
        TicketKind::Read,
        target.node_id(),
        Some(source.handle.node_id()),
        vec![TicketEntry {
            packet_id: PacketId::of(b"x"),
            size: 0,
            generation: 0,
        }],
        strew_overlay::now_ms() + 60_000,
    )
    .unwrap();
    let read = ticket::encode(&read).unwrap();
    let err = source
        .handle
        .get_packet(target.node_id(), PacketId::of(b"x"), read.clone())
        .await
        .unwrap_err();
    let failure = failure(err);
    assert!(
        matches!(failure, RequestFailure::TimedOut(_)),
        "{failure:?}"
    );

    source.handle.shutdown();
    wait_for("the source to stop", Duration::from_secs(10), || {
        source.task.is_finished()
    })
    .await;
    let err = source
        .handle
        .get_packet(target.node_id(), PacketId::of(b"x"), read)
        .await
        .unwrap_err();
    assert!(matches!(err, OverlayError::Stopped), "{err}");
    target.shutdown();
    task.abort();
}
