//! The local journal of a running grid backup, one append-only file per
//! set and paths (`journal/<digest>.log` in the data dir): the pending
//! backup it extends, each part's plan, the packets of it moved off failing
//! targets, the part's receipts as its uploads finish, and that the part
//! was handed in. A rerun with the same
//! set and paths reads it to resume the pending backup (if the manager
//! still holds it) without uploading what targets already receipted. The
//! file is removed once the backup commits.
//!
//! Records are CBOR, each behind a 4-byte little-endian length; a torn
//! last record (a crash while appending) is ignored, and reading never
//! panics on a damaged file.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strew_coordinator::StoreReceipt;
use strew_coordinator::manager::PlanDecision;

use crate::claim_set::{ClaimSet, claim};
use crate::spill::SpillError;

/// A journal record longer than this is damage, not a record.
const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("backup journal {0}: {1}")]
    Io(PathBuf, #[source] std::io::Error),
    #[error("backup journal {0}: cannot encode a record: {1}")]
    Encode(PathBuf, String),
    #[error(
        "backup journal {0}: the chunks it lists could not be kept on disk while it is read (is the temporary directory full?): {1}"
    )]
    Scratch(PathBuf, #[source] SpillError),
}

/// Why a journal's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Scratch(#[from] SpillError),
}

/// One journal record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    /// The pending backup this run's parts extend.
    Begin { pending_id: u64 },
    /// A part's plan (the manager holds its chunks in the pending backup).
    Planned { decision: PlanDecision },
    /// Packets of the last planned part moved to other targets: the moved
    /// chunks whole and their tickets (see [`merge_moved`]).
    Moved { decision: PlanDecision },
    /// The receipts of the last planned part's uploads.
    Receipted { receipts: Vec<StoreReceipt> },
    /// The last planned part's receipts were handed in.
    Done,
}

/// What a journal says about an interrupted backup.
#[derive(Debug, Default)]
pub struct Resume {
    pub pending_id: Option<u64>,
    /// Chunks of parts planned and handed in (their [`claim`]s): not
    /// planned again.
    pub done: ClaimSet,
    /// Uploads (packet to target) of those parts (for the report).
    pub done_packets: u64,
    /// Bytes of whole, valid records: a resumed journal is cut there
    /// ([`Journal::reopen`]) before it is appended to.
    pub valid_bytes: u64,
    /// A part planned but not handed in: its plan and the receipts its
    /// finished uploads got.
    pub in_flight: Option<(PlanDecision, Vec<StoreReceipt>)>,
}

/// Merges a retarget's answer into the part's plan: each moved chunk
/// replaces the planned one (same DataId), its tickets join the plan's (a
/// later ticket for a target and packet wins, see `ticket_index`).
pub fn merge_moved(plan: &mut PlanDecision, moved: PlanDecision) {
    let mut by_id: std::collections::HashMap<_, _> =
        moved.uploads.into_iter().map(|c| (c.data_id, c)).collect();
    for chunk in &mut plan.uploads {
        if let Some(new) = by_id.remove(&chunk.data_id) {
            *chunk = new;
        }
    }
    plan.tickets.extend(moved.tickets);
    plan.target_caps.extend(moved.target_caps);
}

/// One backup's journal file.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
}

/// The journal's file name for a backup of `set` from `paths`.
pub fn journal_path(dir: &Path, set: &str, paths: &[PathBuf]) -> PathBuf {
    let mut h = blake3::Hasher::new();
    h.update(&(set.len() as u64).to_le_bytes());
    h.update(set.as_bytes());
    for p in paths {
        let text = p.to_string_lossy();
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    let digest = h.finalize();
    dir.join(format!("{}.log", &digest.to_hex()[..32]))
}

impl Journal {
    /// Reads what an earlier run left at `path` (nothing if no file), a
    /// record at a time: a journal grows with its backup, what is read
    /// from it does not (the chunks of finished parts go to a
    /// [`ClaimSet`]).
    pub fn read(path: &Path) -> Result<Resume, JournalError> {
        let io = |e| JournalError::Io(path.to_path_buf(), e);
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resume::default()),
            Err(e) => return Err(io(e)),
        };
        match Journal::decode(BufReader::new(file)) {
            Ok(resume) => Ok(resume),
            Err(ReadError::Io(e)) => Err(io(e)),
            Err(ReadError::Scratch(e)) => Err(JournalError::Scratch(path.to_path_buf(), e)),
        }
    }

    /// What a journal's bytes say, up to the first torn or damaged record
    /// (never a panic, whatever the bytes).
    pub fn decode(r: impl Read) -> Result<Resume, ReadError> {
        let mut replay = Replay::default();
        let mut failed = None;
        let valid = each_record(r, |record| {
            if failed.is_none()
                && let Err(e) = replay.feed(record)
            {
                failed = Some(e);
            }
        })?;
        match failed {
            Some(e) => Err(ReadError::Scratch(e)),
            None => Ok(Resume {
                valid_bytes: valid,
                ..replay.finish()
            }),
        }
    }

    /// Starts a new journal at `path` for pending backup `pending_id`
    /// (replacing any earlier one).
    pub fn begin(path: &Path, pending_id: u64) -> Result<Self, JournalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| JournalError::Io(dir.to_path_buf(), e))?;
        }
        let file = File::create(path).map_err(|e| JournalError::Io(path.to_path_buf(), e))?;
        let mut journal = Journal {
            path: path.to_path_buf(),
            file,
        };
        journal.append(&Record::Begin { pending_id })?;
        Ok(journal)
    }

    /// Continues the journal at `path` (a resumed backup), cutting off a
    /// torn last record first: `valid` is what [`Journal::read`] found
    /// whole ([`Resume::valid_bytes`]), so the file is not read twice.
    pub fn reopen(path: &Path, valid: u64) -> Result<Self, JournalError> {
        let io = |e| JournalError::Io(path.to_path_buf(), e);
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        file.set_len(valid).map_err(io)?;
        Ok(Journal {
            path: path.to_path_buf(),
            file,
        })
    }

    /// Appends one record and makes it durable.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let mut body = Vec::new();
        ciborium::into_writer(record, &mut body)
            .map_err(|e| JournalError::Encode(self.path.clone(), e.to_string()))?;
        let len = u32::try_from(body.len())
            .map_err(|_| JournalError::Encode(self.path.clone(), "record too large".into()))?;
        let mut framed = Vec::with_capacity(body.len() + 4);
        framed.extend_from_slice(&len.to_le_bytes());
        framed.extend_from_slice(&body);
        let io = |e| JournalError::Io(self.path.clone(), e);
        self.file.write_all(&framed).map_err(io)?;
        self.file.sync_data().map_err(io)
    }

    /// The backup committed (or was given up): the journal goes.
    pub fn remove(path: &Path) -> Result<(), JournalError> {
        match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(JournalError::Io(path.to_path_buf(), e)),
        }
    }
}

/// Hands `f` the records of a journal file one at a time, up to the first
/// torn or damaged one; returns the bytes they take.
fn each_record(mut r: impl Read, mut f: impl FnMut(Record)) -> std::io::Result<u64> {
    let mut valid = 0u64;
    let mut body = Vec::new();
    loop {
        let mut head = [0u8; 4];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(valid),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(head) as usize;
        if len > MAX_RECORD_BYTES {
            return Ok(valid);
        }
        body.clear();
        // Read what is there, not what the length claims.
        (&mut r).take(len as u64).read_to_end(&mut body)?;
        if body.len() < len {
            return Ok(valid);
        }
        match ciborium::from_reader::<Record, _>(body.as_slice()) {
            Ok(record) => f(record),
            Err(_) => return Ok(valid),
        }
        valid += 4 + len as u64;
    }
}

/// A journal's records replayed in order into what they let a rerun resume.
#[derive(Default)]
struct Replay {
    resume: Resume,
    open: Option<(PlanDecision, Vec<StoreReceipt>)>,
}

impl Replay {
    fn feed(&mut self, record: Record) -> Result<(), SpillError> {
        if self.resume.pending_id.is_none() && !matches!(record, Record::Begin { .. }) {
            // Damage: every journal starts with its pending backup.
            return Ok(());
        }
        match record {
            Record::Begin { pending_id } => {
                self.resume = Resume {
                    pending_id: Some(pending_id),
                    ..Resume::default()
                };
                self.open = None;
            }
            Record::Planned { decision } => self.open = Some((decision, Vec::new())),
            Record::Moved { decision } => {
                if let Some((open, _)) = self.open.as_mut() {
                    merge_moved(open, decision);
                }
            }
            Record::Receipted { receipts } => {
                if let Some((_, r)) = self.open.as_mut() {
                    r.extend(receipts);
                }
            }
            Record::Done => {
                if let Some((decision, _)) = self.open.take() {
                    for chunk in &decision.uploads {
                        self.resume.done.insert(claim(&chunk.data_id))?;
                        self.resume.done_packets += chunk.packets.len() as u64;
                    }
                    for id in &decision.reused {
                        self.resume.done.insert(claim(id))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Resume {
        self.resume.in_flight = self.open;
        self.resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::DataId;

    fn decision(pending_id: u64, ids: &[u8]) -> PlanDecision {
        PlanDecision {
            pending_id,
            uploads: ids
                .iter()
                .map(|n| strew_coordinator::records::PlannedChunk {
                    data_id: DataId([*n; 32]),
                    packets: Vec::new(),
                    key: None,
                })
                .collect(),
            reused: Vec::new(),
            tickets: Vec::new(),
            expires_at: 0,
            target_caps: Default::default(),
        }
    }

    #[test]
    fn a_journal_replays_done_parts_and_the_part_in_flight_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = journal_path(dir.path(), "home", &[PathBuf::from("/a")]);
        assert_ne!(
            path,
            journal_path(dir.path(), "home", &[PathBuf::from("/b")])
        );
        assert!(Journal::read(&path).unwrap().pending_id.is_none());
        let mut j = Journal::begin(&path, 7).unwrap();
        j.append(&Record::Planned {
            decision: decision(7, &[1, 2]),
        })
        .unwrap();
        j.append(&Record::Done).unwrap();
        j.append(&Record::Planned {
            decision: decision(7, &[3, 4]),
        })
        .unwrap();
        // Chunk 4's packets moved to another target.
        let mut moved = decision(7, &[4]);
        moved.uploads[0]
            .packets
            .push(strew_coordinator::records::StoredPacket {
                packet_id: strew_coordinator::PacketId([9; 32]),
                size: 10,
                target: strew_coordinator::NodeId([8; 32]),
                generation: 5,
            });
        j.append(&Record::Moved { decision: moved }).unwrap();
        drop(j);
        // A crash in the middle of an append.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2]).unwrap();
        let r = Journal::read(&path).unwrap();
        assert_eq!(r.pending_id, Some(7));
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(r.valid_bytes, len(&path) - 6);
        // Reopened, the torn tail is cut off and new records read back.
        let mut j = Journal::reopen(&path, r.valid_bytes).unwrap();
        j.append(&Record::Receipted {
            receipts: Vec::new(),
        })
        .unwrap();
        drop(j);
        let r = Journal::read(&path).unwrap();
        // Every byte is a whole record again: the torn tail was cut.
        assert_eq!(r.valid_bytes, len(&path));
        assert_eq!(r.done.len(), 2);
        assert!(r.done.contains(claim(&DataId([2; 32]))).unwrap());
        let (in_flight, receipts) = r.in_flight.unwrap();
        assert_eq!(in_flight.uploads[0].data_id, DataId([3; 32]));
        assert!(in_flight.uploads[0].packets.is_empty());
        assert_eq!(
            in_flight.uploads[1].packets[0].target,
            strew_coordinator::NodeId([8; 32]),
            "the moved chunk replaced the planned one"
        );
        assert_eq!(in_flight.uploads.len(), 2);
        assert!(receipts.is_empty());
        Journal::remove(&path).unwrap();
        assert!(Journal::read(&path).unwrap().pending_id.is_none());
        // Garbage is no journal, and no panic.
        std::fs::write(&path, [1, 0, 0, 0, 0xff, 9, 9]).unwrap();
        assert!(Journal::read(&path).unwrap().pending_id.is_none());
    }

    /// A journal's records mean something only after its `Begin`: parts
    /// without one (damage; strew never writes them) resume nothing.
    #[test]
    fn records_before_a_begin_are_ignored() {
        let frame = |r: &Record| {
            let mut body = Vec::new();
            ciborium::into_writer(r, &mut body).unwrap();
            let mut out = (body.len() as u32).to_le_bytes().to_vec();
            out.extend(body);
            out
        };
        let mut bytes = frame(&Record::Planned {
            decision: decision(3, &[1, 2]),
        });
        bytes.extend(frame(&Record::Done));
        let r = Journal::decode(bytes.as_slice()).unwrap();
        assert!(r.pending_id.is_none());
        assert!(r.done.is_empty());
        bytes.extend(frame(&Record::Begin { pending_id: 4 }));
        bytes.extend(frame(&Record::Planned {
            decision: decision(4, &[5]),
        }));
        bytes.extend(frame(&Record::Done));
        let r = Journal::decode(bytes.as_slice()).unwrap();
        assert_eq!(r.pending_id, Some(4));
        assert_eq!(r.done.len(), 1);
        assert!(r.done.contains(claim(&DataId([5; 32]))).unwrap());
        assert!(!r.done.contains(claim(&DataId([1; 32]))).unwrap());
    }
}
