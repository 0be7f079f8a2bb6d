//! Packet exchange between two in-process overlays over TCP on 127.0.0.1:
//! stored and fetched back identical with a valid ticket; refused without one,
//! with a wrong PacketId, over the size limit, when the target is full; deleted
//! only under a delete ticket.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{addr_of, config, start, wait_for};
use strew_coordinator::{NodeId, PacketId, StorageTicket, TicketEntry, TicketKind};
use strew_overlay::libp2p::identity::Keypair;
use strew_overlay::packet::{PacketRequest, PacketResponse, ticket};
use strew_overlay::{MAX_PACKET_BYTES, OverlayError, Refusal, peer};

const NOW_SLACK_MS: u64 = 60_000;

fn issue(manager: &Keypair, kind: TicketKind, target: NodeId, packets: &[&[u8]]) -> Vec<u8> {
    issue_with(manager, kind, target, packets, 1)
}

/// A ticket naming `generation` for every packet.
fn issue_with(
    manager: &Keypair,
    kind: TicketKind,
    target: NodeId,
    packets: &[&[u8]],
    generation: u64,
) -> Vec<u8> {
    let entries = packets
        .iter()
        .map(|p| TicketEntry {
            packet_id: PacketId::of(p),
            size: p.len() as u64,
            generation,
        })
        .collect();
    let key = ticket::signing_key(manager).unwrap();
    let t = StorageTicket::issue_kind(
        &key,
        kind,
        target,
        None,
        entries,
        strew_overlay::now_ms() + NOW_SLACK_MS,
    )
    .unwrap();
    ticket::encode(&t).unwrap()
}

/// A read ticket for one packet.
fn read(manager: &Keypair, target: NodeId, packet_id: PacketId) -> Vec<u8> {
    let key = ticket::signing_key(manager).unwrap();
    let entry = TicketEntry {
        packet_id,
        size: 0,
        generation: 0,
    };
    let t = StorageTicket::issue_kind(
        &key,
        TicketKind::Read,
        target,
        None,
        vec![entry],
        strew_overlay::now_ms() + NOW_SLACK_MS,
    )
    .unwrap();
    ticket::encode(&t).unwrap()
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A target (`target_cfg`, `capacity` bytes) trusting a fresh manager key,
/// and a source connected to it; returns both and the manager's key.
async fn target_and_source(
    target_cfg: strew_overlay::OverlayConfig,
    capacity: u64,
) -> (common::Started, common::Started, Keypair) {
    let target = start(target_cfg, capacity);
    let bootstrap = addr_of(&target).await;
    let source = start(config(52.52, 13.40, vec![bootstrap]), 1 << 20);
    wait_for("a connection", Duration::from_secs(20), || {
        source.handle.connected_peers() > 0
    })
    .await;
    let manager = Keypair::generate_ed25519();
    let manager_id = peer::node_id_of_key(&manager.public()).unwrap();
    target
        .handle
        .set_trusted_managers(BTreeSet::from([manager_id]));
    (target, source, manager)
}

fn refusal(err: OverlayError) -> Refusal {
    match err {
        OverlayError::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packets_are_stored_fetched_and_refused_for_the_right_reasons() {
    let mut target_cfg = config(48.85, 2.35, vec![]);
    target_cfg.max_packet_bytes = 2 << 20;
    let (target, source, manager) = target_and_source(target_cfg, 3 << 20).await;
    let t = target.handle.node_id();
    let s = &source.handle;

    // Stored with a valid ticket, receipt signed by the target, fetched back identical.
    let a = bytes(1_500_000, 1);
    let receipt = s
        .put_packet(
            t,
            issue(&manager, TicketKind::Store, t, &[&a]),
            PacketId::of(&a),
            a.clone(),
        )
        .await
        .unwrap();
    assert!(receipt.verify().is_ok());
    assert_eq!((receipt.source, receipt.generation), (s.node_id(), 1));
    assert_eq!(
        (receipt.target, receipt.packet_id, receipt.size),
        (t, PacketId::of(&a), a.len() as u64)
    );
    assert_eq!(
        s.get_packet(t, PacketId::of(&a), read(&manager, t, PacketId::of(&a)))
            .await
            .unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        s.get_packet(
            t,
            PacketId::of(b"absent"),
            read(&manager, t, PacketId::of(b"absent"))
        )
        .await
        .unwrap(),
        None
    );

    // No ticket.
    let b = bytes(1000, 2);
    assert_eq!(
        refusal(
            s.put_packet(t, vec![], PacketId::of(&b), b.clone())
                .await
                .unwrap_err()
        ),
        Refusal::NoTicket
    );
    // A ticket from someone who is not the manager.
    let forger = Keypair::generate_ed25519();
    let r = refusal(
        s.put_packet(
            t,
            issue(&forger, TicketKind::Store, t, &[&b]),
            PacketId::of(&b),
            b.clone(),
        )
        .await
        .unwrap_err(),
    );
    assert!(matches!(r, Refusal::BadTicket(_)), "{r:?}");
    // A ticket for another target.
    let r = refusal(
        s.put_packet(
            t,
            issue(&manager, TicketKind::Store, s.node_id(), &[&b]),
            PacketId::of(&b),
            b.clone(),
        )
        .await
        .unwrap_err(),
    );
    assert!(matches!(r, Refusal::BadTicket(_)), "{r:?}");
    // A ticket for other bytes.
    let r = refusal(
        s.put_packet(
            t,
            issue(&manager, TicketKind::Store, t, &[b"zz"]),
            PacketId::of(&b),
            b.clone(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(r, Refusal::NotInTicket);

    // Wrong PacketId: the ticket and header name `c`, the bytes are `d` (same length).
    let c = bytes(4096, 3);
    let d = bytes(4096, 4);
    let answer = s
        .request(
            t,
            PacketRequest::Put {
                packet_id: PacketId::of(&c),
                ticket: issue(&manager, TicketKind::Store, t, &[&c]),
                bytes: d.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        answer,
        PacketResponse::Refused(Refusal::WrongPacketId {
            actual: PacketId::of(&d)
        })
    );
    assert_eq!(
        s.get_packet(t, PacketId::of(&c), read(&manager, t, PacketId::of(&c)))
            .await
            .unwrap(),
        None,
        "nothing stored"
    );

    // Over this target's limit (2 MiB) but within the protocol's: a clean refusal.
    let big = bytes(2_500_000, 5);
    let r = refusal(
        s.put_packet(
            t,
            issue(&manager, TicketKind::Store, t, &[&big]),
            PacketId::of(&big),
            big,
        )
        .await
        .unwrap_err(),
    );
    assert!(
        matches!(r, Refusal::TooLarge { limit, .. } if limit == 2 << 20),
        "{r:?}"
    );
    // Over the protocol's limit: refused before sending.
    let huge = vec![0u8; MAX_PACKET_BYTES + 1];
    assert!(matches!(
        s.put_packet(t, vec![1], PacketId::of(b"huge"), huge).await,
        Err(OverlayError::TooLarge { .. })
    ));

    // Target full: 3 MiB donated, 1.5 MB used, 1.8 MB more does not fit.
    let e = bytes(1_800_000, 6);
    let r = refusal(
        s.put_packet(
            t,
            issue(&manager, TicketKind::Store, t, &[&e]),
            PacketId::of(&e),
            e,
        )
        .await
        .unwrap_err(),
    );
    assert!(matches!(r, Refusal::Full { .. }), "{r:?}");

    // Delete needs a delete ticket.
    let id = PacketId::of(&a);
    let r = refusal(
        s.delete_packet(t, id, issue(&manager, TicketKind::Store, t, &[&a]))
            .await
            .unwrap_err(),
    );
    assert!(matches!(r, Refusal::BadTicket(_)), "{r:?}");
    // GET without a ticket is a holder read: the node that stored the packet
    // gets it (packet/3; another node is refused, `packet::service` tests).
    assert_eq!(s.get_held_packet(t, id).await.unwrap(), Some(a.clone()));
    // Otherwise GET needs a read ticket naming the packet.
    let r = refusal(
        s.get_packet(t, id, issue(&manager, TicketKind::Store, t, &[&a]))
            .await
            .unwrap_err(),
    );
    assert!(matches!(r, Refusal::BadTicket(_)), "{r:?}");
    let delete = issue(&manager, TicketKind::Delete, t, &[&a]);
    assert!(s.delete_packet(t, id, delete.clone()).await.unwrap());
    assert_eq!(
        s.get_packet(t, id, read(&manager, t, id)).await.unwrap(),
        None
    );
    // Stored again (a new generation): the old delete ticket is refused.
    let again = issue_with(&manager, TicketKind::Store, t, &[&a], 2);
    assert_eq!(
        s.put_packet(t, again, id, a.clone())
            .await
            .unwrap()
            .generation,
        2
    );
    let r = refusal(s.delete_packet(t, id, delete).await.unwrap_err());
    assert_eq!(r, Refusal::OtherGeneration);
    assert!(
        s.get_packet(t, id, read(&manager, t, id))
            .await
            .unwrap()
            .is_some()
    );
    assert!(
        s.delete_packet(t, id, issue_with(&manager, TicketKind::Delete, t, &[&a], 2))
            .await
            .unwrap()
    );

    // Eight parallel puts all land (per-peer concurrency limits queue, they do not fail).
    let packets: Vec<Vec<u8>> = (0..8).map(|i| bytes(200_000, 10 + i)).collect();
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let tk = issue(&manager, TicketKind::Store, t, &refs);
    let puts = packets
        .iter()
        .map(|p| s.put_packet(t, tk.clone(), PacketId::of(p), p.clone()));
    for r in futures::future::join_all(puts).await {
        r.unwrap();
    }
    for p in &packets {
        assert_eq!(
            s.get_packet(t, PacketId::of(p), read(&manager, t, PacketId::of(p)))
                .await
                .unwrap()
                .as_deref(),
            Some(p.as_slice())
        );
    }
    let m = target.handle.metrics();
    assert!(
        m.packets
            .get_or_create(&strew_overlay::metrics::PacketLabel {
                direction: "in",
                op: "put",
                result: "ok"
            })
            .get()
            >= 9
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bandwidth_limit_paces_packet_transfer() {
    // The target moves at most 2 MB/s: 3 MB cannot arrive in under ~1.2 s
    // (burst 0.5 MB). Only a lower bound is asserted: it holds however slow the machine.
    let mut target_cfg = config(48.85, 2.35, vec![]);
    target_cfg.bandwidth = 2_000_000;
    let (target, source, manager) = target_and_source(target_cfg, 16 << 20).await;
    let t = target.handle.node_id();
    let p = bytes(3_000_000, 9);
    let start_at = std::time::Instant::now();
    source
        .handle
        .put_packet(
            t,
            issue(&manager, TicketKind::Store, t, &[&p]),
            PacketId::of(&p),
            p,
        )
        .await
        .unwrap();
    let took = start_at.elapsed();
    assert!(
        took >= Duration::from_millis(1_200),
        "3 MB at 2 MB/s took only {took:?}"
    );
}

/// A store that takes 200 ms per write, so concurrent requests overlap.
struct SlowStorage(strew_overlay::MemoryStorage);

impl strew_overlay::PacketStorage for SlowStorage {
    fn put(
        &self,
        id: PacketId,
        bytes: &[u8],
        generation: u64,
    ) -> Result<u64, strew_overlay::StorageError> {
        std::thread::sleep(Duration::from_millis(200));
        self.0.put(id, bytes, generation)
    }
    fn get(&self, id: &PacketId) -> Result<Option<Vec<u8>>, strew_overlay::StorageError> {
        self.0.get(id)
    }
    fn delete(
        &self,
        id: &PacketId,
        generation: u64,
    ) -> Result<strew_overlay::DeleteOutcome, strew_overlay::StorageError> {
        self.0.delete(id, generation)
    }
    fn free_bytes(&self) -> Result<u64, strew_overlay::StorageError> {
        self.0.free_bytes()
    }
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saturated_target_answers_busy_and_sources_back_off_until_stored() {
    let mut target_cfg = config(48.85, 2.35, vec![]);
    target_cfg.max_inflight_per_peer = 1;
    target_cfg.max_inflight_total = 1;
    let key = Keypair::generate_ed25519();
    let (target, task) = strew_overlay::start(
        key,
        target_cfg,
        std::sync::Arc::new(SlowStorage(strew_overlay::MemoryStorage::new(1 << 20))),
        None,
    )
    .unwrap();
    wait_for("a listen address", Duration::from_secs(10), || {
        !target.listen_addrs().is_empty()
    })
    .await;
    let source = start(
        config(52.52, 13.40, vec![target.listen_addrs()[0].clone()]),
        1 << 20,
    );
    wait_for("a connection", Duration::from_secs(20), || {
        source.handle.connected_peers() > 0
    })
    .await;
    let manager = Keypair::generate_ed25519();
    target.set_trusted_managers(BTreeSet::from([
        peer::node_id_of_key(&manager.public()).unwrap()
    ]));
    let t = target.node_id();
    let packets: Vec<Vec<u8>> = (0..4).map(|i| bytes(1000, 40 + i)).collect();
    let refs: Vec<&[u8]> = packets.iter().map(Vec::as_slice).collect();
    let tk = issue(&manager, TicketKind::Store, t, &refs);
    let puts = packets.iter().map(|p| {
        source
            .handle
            .put_packet(t, tk.clone(), PacketId::of(p), p.clone())
    });
    for r in futures::future::join_all(puts).await {
        r.unwrap();
    }
    let busy = target
        .metrics()
        .packets
        .get_or_create(&strew_overlay::metrics::PacketLabel {
            direction: "in",
            op: "put",
            result: "busy",
        })
        .get();
    assert!(
        busy >= 1,
        "four concurrent puts against an in-flight limit of one met no Busy"
    );
    for p in &packets {
        assert_eq!(
            source
                .handle
                .get_packet(t, PacketId::of(p), read(&manager, t, PacketId::of(p)))
                .await
                .unwrap()
                .as_deref(),
            Some(p.as_slice())
        );
    }
    target.shutdown();
    task.abort();
}

/// `DeleteMany` (issue 14): 600 deletes on one target go as batches under
/// their tickets, each answered for itself: deleted, already absent, live
/// under another generation, or refused for a ticket that does not name
/// it; a malformed request is refused whole and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_deletes_go_in_batches_each_answered_for_itself() {
    use strew_overlay::packet::{DeleteAnswer, MAX_DELETE_BATCH, PacketStorage, delete_batches};

    let (target, source, manager) = target_and_source(config(48.85, 2.35, vec![]), 64 << 20).await;
    let t = target.handle.node_id();
    let s = &source.handle;
    let held = |packets: &[Vec<u8>]| {
        packets
            .iter()
            .filter(|p| target.storage.get(&PacketId::of(p)).unwrap().is_some())
            .count()
    };

    // 600 packets stored at generation 1 (straight into the target's
    // storage: the puts are tested above), deleted under tickets of 32.
    let packets: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_be_bytes().repeat(16)).collect();
    for p in &packets {
        target.storage.put(PacketId::of(p), p, 1).unwrap();
    }
    // Packet 7 is stored again (generation 2): its old ticket must not
    // delete the live copy. Packet 9 is gone already.
    target
        .storage
        .put(PacketId::of(&packets[7]), &packets[7], 2)
        .unwrap();
    target
        .storage
        .delete(&PacketId::of(&packets[9]), 1)
        .unwrap();
    let tickets: Vec<Vec<u8>> = packets
        .chunks(32)
        .map(|c| {
            let refs: Vec<&[u8]> = c.iter().map(Vec::as_slice).collect();
            issue(&manager, TicketKind::Delete, t, &refs)
        })
        .collect();
    // Packet 11 is sent under the next chunk's ticket, which does not name it.
    let mut deletes: Vec<(PacketId, &[u8])> = packets
        .iter()
        .enumerate()
        .map(|(i, p)| (PacketId::of(p), tickets[i / 32].as_slice()))
        .collect();
    deletes[11].1 = tickets[1].as_slice();

    // A malformed request is refused whole: a ticket index out of range.
    let bad = PacketRequest::DeleteMany {
        packets: vec![(PacketId::of(&packets[0]), 1)],
        tickets: vec![tickets[0].clone()],
    };
    assert!(matches!(
        s.request(t, bad).await.unwrap(),
        PacketResponse::Refused(Refusal::NotPermitted(_))
    ));
    let too_many = PacketRequest::DeleteMany {
        packets: vec![(PacketId::of(&packets[0]), 0); MAX_DELETE_BATCH + 1],
        tickets: vec![tickets[0].clone()],
    };
    assert!(matches!(
        s.request(t, too_many).await.unwrap(),
        PacketResponse::Refused(Refusal::NotPermitted(_))
    ));
    assert_eq!(held(&packets), 599, "nothing deleted by them");

    let batches = delete_batches(&deletes);
    assert_eq!(batches.len(), 3, "600 deletes under 19 tickets: 3 batches");
    let mut answers = Vec::new();
    for batch in &batches {
        answers.extend(s.delete_packets(t, batch).await.unwrap());
    }
    assert_eq!(answers.len(), 600);
    for (i, answer) in answers.iter().enumerate() {
        let want = match i {
            7 => DeleteAnswer::Refused(Refusal::OtherGeneration),
            9 => DeleteAnswer::Deleted { existed: false },
            11 => DeleteAnswer::Refused(Refusal::NotInTicket),
            _ => DeleteAnswer::Deleted { existed: true },
        };
        assert_eq!(answer, &want, "packet {i}");
    }
    // Left: the live copy of 7 and the one no ticket covered, 11.
    assert_eq!(held(&packets), 2);
    assert_eq!(held(&[packets[7].clone(), packets[11].clone()]), 2);
    let m = source.handle.metrics();
    let ok = m
        .packets
        .get_or_create(&strew_overlay::metrics::PacketLabel {
            direction: "out",
            op: "delete_many",
            result: "ok",
        })
        .get();
    assert_eq!(ok, 3, "one request a batch");
}
