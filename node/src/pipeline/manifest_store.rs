//! Storing a snapshot's manifest at the end of a backup, never holding its
//! encoding: the manifest is stored like data, chunked (never finer than the
//! default sizes), encoded in parallel and stored a batch at a time, under
//! the owner's private secret; the snapshot root (the manifest chunks' keys,
//! in order, under a key derived from the owner's secret and the manifest's
//! storage indices) comes first in the sequence. The encoding is streamed
//! twice ([`manifest_pieces`]): once for the pieces' keys and the snapshot
//! id, once to store.

use std::collections::HashSet;

use rayon::prelude::*;
use strew_coordinator::DataId;

use super::backup::{BackupError, BackupOptions, KnownChunks, PacketSink, Written};
use super::codec::{Codec, EncodedStripe, StripeRecord};
use super::manifest_pieces;
use super::manifest_spill::SpilledManifest;
use super::secret::ChunkKey;

/// Stores `manifest` through `sink` (accounted in `written`); returns the
/// snapshot id and the stripes of the root and the manifest, root first.
pub(super) fn store_manifest(
    manifest: &SpilledManifest,
    opts: &BackupOptions,
    known: &dyn KnownChunks,
    sink: &mut dyn PacketSink,
    written: &mut Written,
) -> Result<(DataId, Vec<StripeRecord>), BackupError> {
    let owner = Codec {
        secret: opts.owner.clone(),
        ..opts.codec.clone()
    };
    let sizes = opts.sizes.for_manifest();
    let mut whole = opts.owner.chunk_key_hasher();
    let mut keys: Vec<ChunkKey> = Vec::new();
    manifest_pieces::for_each_piece(manifest, sizes, &mut whole, |piece| {
        keys.push(owner.key(&piece));
        Ok::<_, BackupError>(())
    })
    .map_err(pieces_error)?;
    let snapshot = ChunkKey(*whole.finalize().as_bytes()).storage_index();
    let indices: Vec<DataId> = keys.iter().map(ChunkKey::storage_index).collect();
    let in_data = manifest_chunks_in_data(manifest, &indices, opts)?;
    let mut store = |stripe: EncodedStripe, records: &mut Vec<StripeRecord>| {
        if let Some(known) = known.known(&stripe.record.data_id) {
            records.push(known);
            return Ok(());
        }
        records.push(stripe.record.clone());
        // A manifest chunk equal to a data chunk (or to another manifest
        // chunk) of this backup is stored once.
        if in_data.contains(&stripe.record.data_id)
            || records[..records.len() - 1]
                .iter()
                .any(|r| r.data_id == stripe.record.data_id)
        {
            return Ok(());
        }
        written.account(&stripe);
        sink.store(stripe)
    };
    let mut records = Vec::with_capacity(keys.len() + 1);
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(MANIFEST_BATCH);
    let mut encode_batch = |batch: &mut Vec<Vec<u8>>, records: &mut Vec<StripeRecord>| {
        let first = records.len();
        let batch_keys = keys.get(first..first + batch.len()).ok_or_else(recut)?;
        // Each piece must be the one the first pass keyed: a piece cut
        // differently would otherwise be stored under another piece's key.
        let encoded: Vec<EncodedStripe> = batch
            .par_iter()
            .zip(batch_keys.par_iter())
            .map(|(piece, key)| {
                (owner.key(piece) == *key)
                    .then(|| owner.encode(key, piece))
                    .ok_or_else(recut)
            })
            .collect::<Result<_, _>>()?;
        batch.clear();
        for stripe in encoded {
            store(stripe, records)?;
        }
        Ok::<_, BackupError>(())
    };
    manifest_pieces::for_each_piece(manifest, sizes, &mut blake3::Hasher::new(), |piece| {
        batch.push(piece);
        if batch.len() == MANIFEST_BATCH {
            encode_batch(&mut batch, &mut records)?;
        }
        Ok(())
    })
    .map_err(pieces_error)?;
    encode_batch(&mut batch, &mut records)?;
    if records.len() != keys.len() {
        return Err(recut());
    }
    let root_plain: Vec<u8> = keys.iter().flat_map(|k| k.0).collect();
    let root = owner.encode(&opts.owner.root_key(&indices), &root_plain);
    let mut manifest_records = Vec::with_capacity(records.len() + 1);
    store(root, &mut manifest_records)?;
    manifest_records.append(&mut records);
    Ok((snapshot, manifest_records))
}

/// The manifest chunks (by storage index) that are also data chunks of
/// this backup: possible only when the data's secret is the owner's (then
/// the chunk table is read back once).
fn manifest_chunks_in_data(
    manifest: &SpilledManifest,
    indices: &[DataId],
    opts: &BackupOptions,
) -> Result<HashSet<DataId>, BackupError> {
    let mut found = HashSet::new();
    if opts.codec.secret.fingerprint() != opts.owner.fingerprint() {
        return Ok(found);
    }
    let wanted: HashSet<DataId> = indices.iter().copied().collect();
    for chunk in manifest.chunks() {
        let id = chunk?.data_id();
        if wanted.contains(&id) {
            found.insert(id);
        }
    }
    Ok(found)
}

/// Manifest chunks encoded (in parallel) and stored at once (each about
/// 1 MiB).
const MANIFEST_BATCH: usize = 8;

/// The manifest's second pass did not cut the pieces of the first.
fn recut() -> BackupError {
    BackupError::Stage(
        "the manifest's pieces differed between its two passes (a bug in strew: nothing was \
         committed; run the backup again, and report it if it happens again)"
            .into(),
    )
}

fn pieces_error(e: manifest_pieces::PiecesError<BackupError>) -> BackupError {
    match e {
        manifest_pieces::PiecesError::Caller(e) => e,
        manifest_pieces::PiecesError::Stream(why) => BackupError::Stage(why),
    }
}
