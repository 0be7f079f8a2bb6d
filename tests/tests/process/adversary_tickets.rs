//! Adversary: tickets, receipts and dedup on one live grid (issue 11).
//! A coordinator, four targets, a victim source and a hostile node whose
//! identity an in-test client takes over once it has joined. The victim
//! backs up a tree; the test reads the victim's committed chunks (DataIds
//! and PacketIds) from its index while it is stopped, as anyone holding the
//! grid-scope secret could compute them. Then, each of these fails:
//! - an orphan commit: planning the victim's PacketIds under another chunk
//!   is refused (no plan, so no delete ticket), and the victim restores;
//! - a GET without a read ticket is refused by every target;
//! - a commit naming PacketIds without receipts, or with forged ones;
//! - a poisoned chunk: garbage registered under the victim's DataIds (after
//!   the victim forgot them) is not reused by a later honest backup of the
//!   same tree, which restores byte-identical;
//! - a replayed delete ticket: once used, it is refused for the packet
//!   stored again (a new storage generation).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, noise, request_response, tcp, yamux};
use strew_coordinator::{
    DataId, GeoPoint, NodeId, PacketId, Redundancy, StorageTicket, StoreReceipt,
};
use strew_overlay::budget::InboundBudget;
use strew_overlay::manager::wire::{
    BackupParams, ChunkPlan, CommitRequest, Compression, ConvergenceScope, PacketSpec,
    PlanDecision, PlanRequest, RefusalCode,
};
use strew_overlay::manager::{MANAGER_PROTOCOL, ManagerCodec};
use strew_overlay::packet::{PACKET_PROTOCOL, PacketCodec, PacketRequest, PacketResponse, ticket};
use strew_overlay::{ManagerRequest, ManagerResponse, Refusal, peer};
use strew_tests::{Node, NodeOptions, cities, noise as random_bytes};

const TARGETS: usize = 4;

fn options(location: String) -> NodeOptions {
    let mut o = NodeOptions::at(location);
    o.storage = "256MiB".into();
    o.announce_interval = "1s".into();
    o.peer_ttl = "6s".into();
    o
}

/// The hostile client: both protocols under the hostile node's identity.
#[derive(NetworkBehaviour)]
struct Hostile {
    manager: request_response::Behaviour<ManagerCodec>,
    packets: request_response::Behaviour<PacketCodec>,
}

struct Client {
    swarm: Swarm<Hostile>,
    manager: PeerId,
    me: NodeId,
}

impl Client {
    fn new(key: Keypair, manager: PeerId, addrs: &[(PeerId, Multiaddr)]) -> Result<Self> {
        let me = peer::node_id_of_key(&key.public()).context("an ed25519 identity")?;
        let config =
            || request_response::Config::default().with_request_timeout(Duration::from_secs(30));
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| Hostile {
                manager: request_response::Behaviour::with_codec(
                    ManagerCodec::new(InboundBudget::new(64 << 20)),
                    [(
                        StreamProtocol::new(MANAGER_PROTOCOL),
                        request_response::ProtocolSupport::Outbound,
                    )],
                    config(),
                ),
                packets: request_response::Behaviour::with_codec(
                    PacketCodec::default(),
                    [(
                        StreamProtocol::new(PACKET_PROTOCOL),
                        request_response::ProtocolSupport::Outbound,
                    )],
                    config(),
                ),
            })?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(120)))
            .build();
        for (peer, addr) in addrs {
            swarm.add_peer_address(*peer, addr.clone());
        }
        Ok(Client { swarm, manager, me })
    }

    async fn call(&mut self, request: ManagerRequest) -> Result<ManagerResponse> {
        let manager = self.manager;
        self.swarm
            .behaviour_mut()
            .manager
            .send_request(&manager, request);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            ensure!(Instant::now() < deadline, "no manager answer in time");
            let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(500), self.swarm.next()).await
            else {
                continue;
            };
            match event {
                SwarmEvent::Behaviour(HostileEvent::Manager(
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    },
                )) => return Ok(response),
                SwarmEvent::Behaviour(HostileEvent::Manager(
                    request_response::Event::OutboundFailure { error, .. },
                )) => bail!("manager call failed: {error}"),
                _ => {}
            }
        }
    }

    async fn packet(&mut self, target: NodeId, request: PacketRequest) -> Result<PacketResponse> {
        let peer = peer::peer_id_of(&target).context("a target's peer id")?;
        self.swarm
            .behaviour_mut()
            .packets
            .send_request(&peer, request);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            ensure!(Instant::now() < deadline, "no target answer in time");
            let Ok(Some(event)) =
                tokio::time::timeout(Duration::from_millis(500), self.swarm.next()).await
            else {
                continue;
            };
            match event {
                SwarmEvent::Behaviour(HostileEvent::Packets(
                    request_response::Event::Message {
                        message: request_response::Message::Response { response, .. },
                        ..
                    },
                )) => return Ok(response),
                SwarmEvent::Behaviour(HostileEvent::Packets(
                    request_response::Event::OutboundFailure { error, .. },
                )) => bail!("packet call to {target} failed: {error}"),
                _ => {}
            }
        }
    }

    async fn plan(
        &mut self,
        chunks: Vec<ChunkPlan>,
        location: GeoPoint,
        exclude: Vec<NodeId>,
    ) -> Result<ManagerResponse> {
        self.call(ManagerRequest::Plan(PlanRequest {
            set: "hostile".into(),
            location,
            params: BackupParams {
                backup_distance: "..".parse()?,
                spread: "..".parse()?,
                redundancy: Redundancy::Erasure { k: 2, m: 1 },
                compression: Compression::None,
                cipher: "chacha20poly1305".into(),
                convergence: ConvergenceScope::Grid,
                sync_interval_secs: None,
            },
            chunks,
            exclude,
            extend: None,
        }))
        .await
    }

    /// Puts every upload of `decision` (bytes from `bodies`); returns the receipts.
    async fn upload(
        &mut self,
        decision: &PlanDecision,
        bodies: &BTreeMap<PacketId, Vec<u8>>,
    ) -> Result<Vec<StoreReceipt>> {
        let mut receipts = Vec::new();
        for p in decision.uploads.iter().flat_map(|c| &c.packets) {
            let t = decision
                .tickets
                .iter()
                .find(|t| {
                    t.target == p.target && t.entries.iter().any(|e| e.packet_id == p.packet_id)
                })
                .context("a store ticket for every upload")?;
            let bytes = bodies
                .get(&p.packet_id)
                .context("the packet's bytes")?
                .clone();
            let request = PacketRequest::Put {
                packet_id: p.packet_id,
                ticket: ticket::encode(t)?,
                bytes,
            };
            match self.packet(p.target, request).await? {
                PacketResponse::Stored(receipt) => receipts.push(receipt),
                other => bail!("put refused: {other:?}"),
            }
        }
        Ok(receipts)
    }

    async fn commit(
        &mut self,
        decision: &PlanDecision,
        receipts: Vec<StoreReceipt>,
        chunks: Vec<DataId>,
    ) -> Result<ManagerResponse> {
        self.call(ManagerRequest::Commit(CommitRequest {
            pending_id: decision.pending_id,
            receipts,
            manifest: chunks.first().copied().unwrap_or(DataId([0; 32])),
            manifest_chunks: Vec::new(),
            chunks,
            bytes: 1,
        }))
        .await
    }
}

/// Garbage chunks: `ids` as DataIds, each with three packets of noise.
fn garbage(ids: &[DataId], seed: u64) -> (Vec<ChunkPlan>, BTreeMap<PacketId, Vec<u8>>) {
    let mut bodies = BTreeMap::new();
    let chunks = ids
        .iter()
        .enumerate()
        .map(|(i, data_id)| ChunkPlan {
            data_id: *data_id,
            packets: (0..3u64)
                .map(|j| {
                    let bytes = random_bytes(4096, seed * 1000 + i as u64 * 10 + j);
                    let packet_id = PacketId::of(&bytes);
                    let size = bytes.len() as u64;
                    bodies.insert(packet_id, bytes);
                    PacketSpec { packet_id, size }
                })
                .collect(),
        })
        .collect();
    (chunks, bodies)
}

#[derive(serde::Deserialize)]
struct KnownStripe {
    data_id: DataId,
    packets: Vec<PacketId>,
}

/// The chunks a stopped source committed (its `known.redb`).
fn known_chunks(data_dir: &Path) -> Result<Vec<KnownStripe>> {
    use redb::{ReadableDatabase, ReadableTable};
    let path = data_dir.join("known-chunks.redb");
    let db = redb::Database::open(&path)?;
    let txn = db.begin_read()?;
    let table: redb::TableDefinition<&[u8; 32], &[u8]> =
        redb::TableDefinition::new("known-chunks-v1");
    let table = txn.open_table(table)?;
    let mut out = Vec::new();
    for entry in table.iter()? {
        let (_, value) = entry?;
        out.push(ciborium::from_reader(value.value())?);
    }
    Ok(out)
}

fn same_tree(a: &Path, b: &Path) -> Result<()> {
    for entry in fs::read_dir(a)? {
        let entry = entry?;
        let other = b.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            same_tree(&entry.path(), &other)?;
        } else {
            ensure!(
                fs::read(entry.path())? == fs::read(&other)?,
                "{} differs after the restore",
                other.display()
            );
        }
    }
    Ok(())
}

fn restore_and_compare(node: &Node, snapshot: &str, tree: &Path, dest: &Path) -> Result<()> {
    let r = node.cli_json(&[
        "restore",
        snapshot,
        dest.to_str().context("utf-8")?,
        "--json",
    ])?;
    ensure!(r["snapshot"].as_str().is_some(), "restore failed: {r}");
    same_tree(tree, &dest.join(tree.file_name().context("a tree name")?))
}

fn backup(node: &Node, tree: &Path, name: &str) -> Result<serde_json::Value> {
    node.cli_json(&[
        "backup",
        tree.to_str().context("utf-8 path")?,
        "--backup-distance",
        "..",
        "--spread",
        "..",
        "--redundancy",
        "erasure:2+1",
        "--name",
        name,
        "--json",
    ])
}

#[test]
fn tickets_and_receipts_stop_orphan_deletes_ticketless_reads_unreceipted_commits_poison_and_replays()
-> Result<()> {
    let started = Instant::now();
    let places = cities(3 + TARGETS)?;
    let mut first = options(places[0].location());
    first.found_grid = true;
    first.extra.push("--coordinator".into());
    let coordinator = Node::start(first)?;
    let boot = coordinator.bootstrap_addr()?;
    let manager_id = coordinator.node_id()?;
    let mut nodes = Vec::new();
    for city in &places[1..] {
        nodes.push(Node::start(
            options(city.location()).bootstrap(boot.clone()),
        )?);
    }
    coordinator.wait_for_manager_view(nodes.len() as u64 + 1, Duration::from_secs(90))?;
    let mut hostile = nodes.pop().context("a hostile node")?;
    let mut victim = nodes.pop().context("a victim node")?;
    let hostile_location = GeoPoint::new(places[2 + TARGETS].lat, places[2 + TARGETS].lon)?;
    // The victim backs up a tree; its committed chunks are read while it is stopped.
    let work = tempfile::tempdir()?;
    let tree = work.path().join("victim");
    fs::create_dir_all(&tree)?;
    fs::write(tree.join("a.bin"), random_bytes(700_000, 1))?;
    fs::write(tree.join("b.txt"), b"the victim's notes\n".repeat(2000))?;
    let snapshot = backup(&victim, &tree, "victim")?["snapshot"]
        .as_str()
        .context("the victim's snapshot")?
        .to_string();
    victim.kill();
    let known = known_chunks(victim.data_dir())?;
    ensure!(!known.is_empty(), "the victim committed no chunk");
    victim.restart()?;
    let targets: Vec<(NodeId, Multiaddr)> = nodes
        .iter()
        .chain([&coordinator, &victim])
        .map(|n| {
            let id: NodeId = n.node_id()?.parse()?;
            let addr: Multiaddr = n.listen_addr("tcp")?.parse()?;
            Ok((id, addr))
        })
        .collect::<Result<_>>()?;

    let hostile_key =
        Keypair::from_protobuf_encoding(&fs::read(hostile.data_dir().join("identity.key"))?)?;
    hostile.kill();
    let manager_peer: PeerId = manager_id.parse()?;
    let mut addrs: Vec<(PeerId, Multiaddr)> = targets
        .iter()
        .map(|(id, addr)| Ok((peer::peer_id_of(id).context("peer id")?, addr.clone())))
        .collect::<Result<_>>()?;
    let coordinator_addr: Multiaddr = coordinator.listen_addr("tcp")?.parse()?;
    addrs.push((manager_peer, coordinator_addr));
    let runtime = tokio::runtime::Runtime::new()?;
    let mut client = Client::new(hostile_key, manager_peer, &addrs)?;

    runtime.block_on(async {
        // 1. Orphan: the victim's PacketIds planned under another chunk.
        let victim_packets: Vec<PacketId> = known[0].packets.clone();
        let orphan = ChunkPlan {
            data_id: DataId([0xee; 32]),
            packets: victim_packets
                .iter()
                .map(|packet_id| PacketSpec {
                    packet_id: *packet_id,
                    size: 1,
                })
                .collect(),
        };
        match client
            .plan(vec![orphan], hostile_location, Vec::new())
            .await?
        {
            ManagerResponse::Refused(r) => {
                ensure!(r.detail.contains("already stored"), "{r:?}");
                eprintln!("orphan plan refused: {}", r.detail);
            }
            other => bail!("a plan naming the victim's packets was not refused: {other:?}"),
        }

        // 2. GET without a read ticket: every target refuses before looking.
        for (target, _) in &targets {
            let answer = client
                .packet(
                    *target,
                    PacketRequest::Get {
                        packet_id: victim_packets[0],
                        ticket: Vec::new(),
                    },
                )
                .await?;
            ensure!(
                answer == PacketResponse::Refused(Refusal::NoTicket),
                "{target} answered a GET without a read ticket: {answer:?}"
            );
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let dest = work.path().join("victim-restored");
    restore_and_compare(&victim, &snapshot, &tree, &dest)?;

    // The victim forgets its snapshot: its DataIds are free again.
    victim.cli_json(&["forget", &snapshot, "--json"])?;
    let data_ids: Vec<DataId> = known.iter().map(|k| k.data_id).collect();
    let (poison, bodies) = garbage(&data_ids, 7);
    let replay = runtime.block_on(async {
        // 3. Poison, and 4. commits without (valid) receipts on the way.
        let ManagerResponse::Planned(decision) =
            client.plan(poison, hostile_location, Vec::new()).await?
        else {
            bail!("the poison plan was refused");
        };
        match client
            .commit(&decision, Vec::new(), data_ids.clone())
            .await?
        {
            ManagerResponse::Refused(r) if r.code == RefusalCode::MissingUploads => {}
            other => bail!("a commit without receipts was not refused: {other:?}"),
        }
        let mut receipts = client.upload(&decision, &bodies).await?;
        let mut forged = receipts.clone();
        forged[0].generation ^= 1;
        match client.commit(&decision, forged, data_ids.clone()).await? {
            ManagerResponse::Refused(r) if r.code == RefusalCode::Invalid => {}
            other => bail!("a commit with a forged receipt was not refused: {other:?}"),
        }
        let ManagerResponse::Committed(committed) = client
            .commit(&decision, std::mem::take(&mut receipts), data_ids.clone())
            .await?
        else {
            bail!("the poison commit failed");
        };
        Ok::<_, anyhow::Error>(committed.snapshot)
    })?;

    // An honest source backs up the victim's tree again: the garbage is not
    // reused, the backup restores byte-identical.
    let honest = backup(&coordinator, &tree, "honest")?;
    let honest_snapshot = honest["snapshot"].as_str().context("honest snapshot")?;
    ensure!(
        honest["deduplicated_chunks"].as_u64() == Some(0)
            && honest["uploaded_packets"].as_u64() > Some(0),
        "the honest backup reused the garbage registered under its chunks: {honest}"
    );
    let dest = work.path().join("honest-restored");
    restore_and_compare(&coordinator, honest_snapshot, &tree, &dest)?;

    // 5. Replay: the hostile source forgets its snapshot and uses its delete
    // tickets, stores one packet again (a new plan, a new generation), then
    // replays the old ticket: refused, the packet stays.
    runtime.block_on(async {
        let ManagerResponse::Forgotten(forgot) = client
            .call(ManagerRequest::Forget { snapshot: replay })
            .await?
        else {
            bail!("the hostile forget failed");
        };
        let first: &StorageTicket = forgot.delete_tickets.first().context("delete tickets")?;
        let packet = first.entries[0].packet_id;
        let delete = PacketRequest::Delete {
            packet_id: packet,
            ticket: ticket::encode(first)?,
        };
        let answer = client.packet(first.target, delete.clone()).await?;
        ensure!(
            answer == PacketResponse::Deleted { existed: true },
            "{answer:?}"
        );
        // One packet on three targets (as replicas are).
        let spec = PacketSpec {
            packet_id: packet,
            size: bodies.get(&packet).context("bytes")?.len() as u64,
        };
        let chunk = ChunkPlan {
            data_id: DataId([0xaa; 32]),
            packets: vec![spec; 3],
        };
        let all = bodies.clone();
        // Only the old target and two others may take it: the packet lands
        // where the old ticket points, under a new generation.
        let others: Vec<NodeId> = targets
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| id != &first.target)
            .collect();
        let mut placed = None;
        for shift in 0..others.len() {
            let keep: Vec<NodeId> = others.iter().cycle().skip(shift).take(2).copied().collect();
            let mut ex: Vec<NodeId> = others
                .iter()
                .filter(|id| !keep.contains(id))
                .copied()
                .collect();
            ex.push(client.me);
            if let ManagerResponse::Planned(decision) = client
                .plan(vec![chunk.clone()], hostile_location, ex)
                .await?
            {
                placed = Some(decision);
                break;
            }
        }
        let decision = placed.context("re-planning the deleted packet failed")?;
        ensure!(
            decision
                .uploads
                .iter()
                .flat_map(|c| &c.packets)
                .any(|p| p.packet_id == packet && p.target == first.target),
            "the re-planned packet is not on the old target"
        );
        client.upload(&decision, &all).await?;
        let answer = client.packet(first.target, delete).await?;
        ensure!(
            answer == PacketResponse::Refused(Refusal::OtherGeneration),
            "a replayed delete ticket was honoured: {answer:?}"
        );
        Ok::<_, anyhow::Error>(())
    })?;
    runtime.shutdown_background();
    eprintln!(
        "FIGURE tickets adversary: {} checks on one grid of {} nodes in {:?}",
        5,
        TARGETS + 3,
        started.elapsed()
    );
    Ok(())
}
