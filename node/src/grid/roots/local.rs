//! A source's own copies of its snapshot roots, in `data_dir/roots/`: one
//! file per root packet (`<packet id>.root`, written through a temporary
//! file) and one name file per snapshot (`<snapshot id>.of`) listing its
//! root's packets in part order. Roots are opened one snapshot at a time,
//! so a pass over them holds one root in memory. Owns the files only; the
//! format is the parent's.

use std::path::{Path, PathBuf};

use strew_coordinator::{PacketId, SnapshotId};

use super::{Root, RootError, assemble, open_part};
use crate::grid::SourceIdentity;
use crate::pipeline::secret::ConvergenceSecret;

/// The data dir's folder of this source's root packets.
pub const ROOTS_DIR: &str = "roots";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RootError + '_ {
    move |source| RootError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `roots/<snapshot>.of`: the ids of the snapshot's root packets.
fn name_path(data_dir: &Path, snapshot: &SnapshotId) -> PathBuf {
    data_dir.join(ROOTS_DIR).join(format!("{snapshot}.of"))
}

fn packet_path(data_dir: &Path, id: &PacketId) -> PathBuf {
    data_dir.join(ROOTS_DIR).join(format!("{id}.root"))
}

/// Keeps a root packet in `data_dir/roots/` (named by its packet id).
pub fn save_local(data_dir: &Path, id: &PacketId, bytes: &[u8]) -> Result<PathBuf, RootError> {
    let dir = data_dir.join(ROOTS_DIR);
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let path = packet_path(data_dir, id);
    let tmp = dir.join(format!("{id}.root.tmp"));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(path)
}

/// One root packet kept in `data_dir/roots/`.
pub fn read_local(data_dir: &Path, id: &PacketId) -> Result<Vec<u8>, RootError> {
    let path = packet_path(data_dir, id);
    std::fs::read(&path).map_err(io(&path))
}

/// Writes the snapshot's name file (its root's packets, part order).
pub fn save_name(
    data_dir: &Path,
    snapshot: &SnapshotId,
    ids: &[PacketId],
) -> Result<(), RootError> {
    let path = name_path(data_dir, snapshot);
    let tmp = path.with_extension("of.tmp");
    let text: String = ids.iter().map(|id| format!("{id}\n")).collect();
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Deletes a snapshot's root packets and name file (absent ones are fine).
pub fn remove_local(
    data_dir: &Path,
    snapshot: &SnapshotId,
    ids: &[PacketId],
) -> Result<(), RootError> {
    let paths = ids
        .iter()
        .map(|id| packet_path(data_dir, id))
        .chain([name_path(data_dir, snapshot)]);
    for path in paths {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    Ok(())
}

/// Keeps a root found on the grid in `data_dir/roots/` with its name file
/// (as `keep_root` would have), so a fresh machine's daemon upkeeps it and
/// re-registers it with a rebuilt group.
pub fn keep_found(data_dir: &Path, root: &Root) -> Result<(), RootError> {
    for part in &root.parts {
        if !packet_path(data_dir, &part.id).exists() {
            save_local(data_dir, &part.id, &part.bytes)?;
        }
    }
    save_name(data_dir, &root.doc.snapshot, &root.ids())
}

/// The files of `data_dir/roots/` with extension `ext` (none if the folder
/// does not exist).
fn files_ending(data_dir: &Path, ext: &str) -> Result<Vec<PathBuf>, RootError> {
    let dir = data_dir.join(ROOTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(&dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry.map_err(io(&dir))?.path();
        if path.extension().and_then(|e| e.to_str()) == Some(ext) {
            out.push(path);
        }
    }
    Ok(out)
}

/// The snapshots this data dir keeps a root of, with their packets' ids
/// (from the name files; unreadable ones are skipped).
pub fn local_roots(data_dir: &Path) -> Result<Vec<(SnapshotId, Vec<PacketId>)>, RootError> {
    let mut out = Vec::new();
    for path in files_ending(data_dir, "of")? {
        let Some(snapshot) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<SnapshotId>().ok())
        else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ids: Option<Vec<PacketId>> = text.lines().map(|l| l.trim().parse().ok()).collect();
        if let Some(ids) = ids.filter(|ids| !ids.is_empty()) {
            out.push((snapshot, ids));
        }
    }
    out.sort();
    Ok(out)
}

/// The local root made of packets `ids`, opened; `None` when a packet is
/// missing, damaged, not this owner's or the parts do not make one root.
pub fn open_local(
    data_dir: &Path,
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
    ids: &[PacketId],
) -> Option<Root> {
    let mut parts = Vec::with_capacity(ids.len());
    for id in ids {
        let bytes = std::fs::read(packet_path(data_dir, id)).ok()?;
        if PacketId::of(&bytes) != *id {
            return None;
        }
        parts.push(open_part(bytes, owner, me).ok()?);
    }
    let (mut roots, _) = assemble(parts);
    roots
        .pop()
        .filter(|r| roots.is_empty() && r.parts.len() == ids.len())
}

/// The local root of `snapshot`, by its name file.
pub fn find_local(
    data_dir: &Path,
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
    snapshot: &SnapshotId,
) -> Result<Option<Root>, RootError> {
    Ok(local_roots(data_dir)?
        .into_iter()
        .find(|(s, _)| s == snapshot)
        .and_then(|(_, ids)| open_local(data_dir, owner, me, &ids))
        .filter(|root| &root.doc.snapshot == snapshot))
}

/// Every root packet kept in `data_dir/roots/` whose bytes still hash to
/// its name (others are skipped).
pub fn load_local(data_dir: &Path) -> Result<Vec<(PacketId, Vec<u8>)>, RootError> {
    let mut out = Vec::new();
    for path in files_ending(data_dir, "root")? {
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let id = PacketId::of(&bytes);
        if path.file_stem().and_then(|s| s.to_str()) == Some(id.to_string().as_str()) {
            out.push((id, bytes));
        }
    }
    out.sort_by_key(|(id, _)| *id);
    Ok(out)
}

/// [`local_roots`] on a blocking thread.
pub async fn names(data_dir: &Path) -> Result<Vec<(SnapshotId, Vec<PacketId>)>, RootError> {
    let dir = data_dir.to_path_buf();
    tokio::task::spawn_blocking(move || local_roots(&dir))
        .await
        .map_err(|e| RootError::Encode(format!("root task failed: {e}")))?
}

/// [`open_local`] on a blocking thread.
pub async fn open(
    data_dir: &Path,
    owner: &ConvergenceSecret,
    me: &SourceIdentity,
    ids: Vec<PacketId>,
) -> Result<Option<Root>, RootError> {
    let (dir, owner, me) = (data_dir.to_path_buf(), owner.clone(), me.clone());
    tokio::task::spawn_blocking(move || open_local(&dir, &owner, &me, &ids))
        .await
        .map_err(|e| RootError::Encode(format!("root task failed: {e}")))
}
