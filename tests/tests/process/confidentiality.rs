//! Confidentiality against metadata on real processes (issue 11, SPEC R9):
//! a source backs up on a 4-node grid; every node is then stopped, and the
//! attacker takes the coordinator's whole metadata database
//! (`manager/manager.redb`, read with the node's own code), every target's
//! packet store, and — as a grid member would hold it — the grid's
//! convergence secret. Every id the database holds and every 32-byte window
//! of its records is tried as a chunk key, as a raw ChaCha20-Poly1305 key
//! and through the old (v1) derivation from the grid secret and the DataId:
//! no blob opens, and no stored packet contains a 32-byte piece of the
//! plaintext. The control: the holder of a file's plaintext and the grid
//! secret derives that chunk's key, finds it by its DataId and opens it, so
//! the blobs the attacker tried are the real ones.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use strew_coordinator::{DataId, ManagerState};
use strew_node::consensus::manager_db::ManagerDb;
use strew_node::pipeline::ChunkKey;
use strew_node::pipeline::packet::{BlobHeader, decode_packet};
use strew_node::store::PacketStore;
use strew_tests::{Node, NodeOptions, cities, noise};

/// Whether `key` opens `blob` (an AEAD check: any wrong key fails).
fn opens(blob: &[u8], key: &ChunkKey) -> bool {
    BlobHeader::decode(blob)
        .ok()
        .is_some_and(|(header, head, ct)| key.decrypt(&header.nonce, head, ct).is_some())
}

/// Whether `raw` opens `blob` as a chunk key or used directly as the
/// ChaCha20-Poly1305 key.
fn opens_raw(blob: &[u8], raw: &[u8; 32]) -> bool {
    opens(blob, &ChunkKey(*raw)) || {
        use chacha20poly1305::aead::{Aead, KeyInit, Payload};
        BlobHeader::decode(blob)
            .ok()
            .is_some_and(|(header, head, ct)| {
                chacha20poly1305::ChaCha20Poly1305::new(&(*raw).into())
                    .decrypt(&header.nonce.into(), Payload { msg: ct, aad: head })
                    .is_ok()
            })
    }
}

/// A chunk's encrypted blob, put back together from its data shares in
/// whichever stores hold them.
fn blob_of(state: &ManagerState, key: &DataId, stores: &[PacketStore]) -> Result<Vec<u8>> {
    let record = state.chunks.get(key).context("chunk record")?;
    let mut shares: Vec<(u8, Vec<u8>, usize)> = Vec::new();
    for p in &record.packets {
        let Some(bytes) = stores
            .iter()
            .find_map(|s| s.get(&p.packet_id).ok().flatten())
        else {
            continue;
        };
        let (h, shard) = decode_packet(&bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        if h.index < h.k && !shares.iter().any(|s| s.0 == h.index) {
            shares.push((h.index, shard.to_vec(), h.blob_len as usize));
        }
    }
    shares.sort();
    let len = shares.first().context("no data share stored")?.2;
    let mut blob: Vec<u8> = shares.into_iter().flat_map(|(_, s, _)| s).collect();
    blob.truncate(len);
    Ok(blob)
}

#[test]
fn the_coordinators_database_and_every_stored_packet_decrypt_nothing() -> Result<()> {
    let places = cities(4)?;
    let first = Node::start(NodeOptions::at(places[0].location()).founder())?;
    let boot = first.bootstrap_addr()?;
    let manager = first.node_id()?;
    let mut nodes = vec![first];
    for city in &places[1..] {
        nodes.push(Node::start(
            NodeOptions::at(city.location()).bootstrap(boot.clone()),
        )?);
    }
    strew_tests::wait_for_grid(&nodes, &manager)?;
    let source = 1;
    nodes[source].wait_for_grid_secret(Duration::from_secs(60))?;

    // One backup of a single small file (one chunk: the control), one of
    // several files (more chunks, manifests, text and noise).
    let work = tempfile::tempdir()?;
    let known = b"the plaintext a grid member could hold\n".repeat(2_000);
    let one = work.path().join("one");
    fs::create_dir_all(&one)?;
    fs::write(one.join("known.txt"), &known)?;
    let many = work.path().join("many");
    fs::create_dir_all(&many)?;
    let mut plaintexts = vec![known.clone()];
    for i in 0..6u64 {
        let text = format!("private letter {i}: nobody but its owner reads this.\n")
            .repeat(300 + 50 * i as usize)
            .into_bytes();
        fs::write(many.join(format!("letter-{i}.txt")), &text)?;
        plaintexts.push(text);
    }
    let bulk = noise(1_500_000, 7);
    fs::write(many.join("bulk.bin"), &bulk)?;
    plaintexts.push(bulk);
    for tree in [&one, &many] {
        let path = tree.to_str().context("utf-8 path")?;
        nodes[source].cli_json(&["backup", path, "--redundancy", "erasure:2+1", "--json"])?;
    }

    // The attacker's haul, with every node stopped.
    for node in &mut nodes {
        node.kill();
    }
    let grid_secret = strew_node::keys::grid_secret(nodes[0].data_dir())?
        .context("the founder holds the grid's convergence secret")?;
    let (_, loaded) = ManagerDb::open(&nodes[0].data_dir().join("manager").join("manager.redb"))?;
    let state = loaded.state;
    let mut database = Vec::new();
    ciborium::into_writer(&state, &mut database)?;
    let stores: Vec<PacketStore> = nodes
        .iter()
        .map(|n| PacketStore::open(&n.data_dir().join("packets"), u64::MAX))
        .collect::<Result<_, _>>()?;
    let mut blobs: Vec<Vec<u8>> = state
        .chunks
        .keys()
        .map(|k| blob_of(&state, k, &stores))
        .collect::<Result<_>>()?;
    blobs.sort_by_key(Vec::len);
    blobs.dedup();
    ensure!(blobs.len() >= 8, "{} blobs", blobs.len());

    // The control: plaintext plus grid secret give the key, its storage
    // index finds the chunk, and the key opens the blob.
    let key = grid_secret.chunk_key(&known);
    let control = blob_of(&state, &key.storage_index(), &stores)
        .context("the known file's chunk is recorded under its storage index")?;
    ensure!(
        opens(&control, &key),
        "the plaintext holder opens its chunk"
    );

    // Every id the database holds, against every blob.
    let mut ids: BTreeSet<[u8; 32]> = BTreeSet::new();
    for (key, record) in &state.chunks {
        ids.insert(key.0);
        ids.insert(record.data_id.0);
        ids.extend(record.packets.iter().map(|p| p.packet_id.0));
    }
    for (id, snapshot) in &state.snapshots {
        ids.insert(id.0);
        ids.insert(snapshot.data_id.0);
    }
    let v1 = |c: &[u8; 32]| {
        let mut h = blake3::Hasher::new_derive_key("strew chunk key v1");
        h.update(grid_secret.as_bytes());
        h.update(c);
        *h.finalize().as_bytes()
    };
    for blob in &blobs {
        ensure!(
            !ids.iter()
                .any(|c| opens_raw(blob, c) || opens_raw(blob, &v1(c))),
            "an id of the database opens a blob"
        );
    }
    // Every 32-byte window of the database, against the smallest blob.
    let windows: BTreeSet<[u8; 32]> = database
        .windows(32)
        .filter_map(|w| w.try_into().ok())
        .collect();
    ensure!(windows.len() > 1000, "{} windows", windows.len());
    ensure!(
        !windows.iter().any(|c| opens_raw(&blobs[0], c)),
        "a window of the database opens a blob"
    );

    // No stored packet carries a 32-byte piece of any plaintext.
    let pieces: HashSet<&[u8]> = plaintexts
        .iter()
        .flat_map(|t| t.chunks(4096))
        .filter(|c| c.len() >= 32)
        .map(|c| &c[..32])
        .collect();
    let mut packets = 0usize;
    for record in state.chunks.values() {
        for p in &record.packets {
            if let Some(bytes) = stores
                .iter()
                .find_map(|s| s.get(&p.packet_id).ok().flatten())
            {
                packets += 1;
                ensure!(
                    !bytes.windows(32).any(|w| pieces.contains(w)),
                    "a stored packet holds plaintext"
                );
            }
        }
    }
    eprintln!(
        "confidentiality: {} chunk blobs ({packets} packets) tried against {} ids and {} database windows; none opened",
        blobs.len(),
        ids.len(),
        windows.len()
    );
    Ok(())
}
