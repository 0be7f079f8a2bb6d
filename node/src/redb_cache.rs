//! Opening redb databases with a bounded page cache. redb's default cache
//! is 1 GiB per database, a ceiling it fills as a database is read through:
//! a node opens five (manager state, raft log, packet index, holders, known
//! chunks), so a coordinator that had applied a 212,000-chunk snapshot sat
//! at 902 MB resident and its source at 414 MB. Each database here gets a
//! cache sized for what it serves: B-tree interior pages and recent writes,
//! not the whole file.
//!
//! Owns the cache sizes and [`create`]; the tables are their modules'.

use std::path::Path;

use redb::{Database, DatabaseError};

/// The manager's state database: written a batch per applied entry, read
/// whole only at start (the state lives in memory).
pub const MANAGER_CACHE: usize = 32 << 20;
/// The raft log: appended and trimmed, read back by followers catching up.
pub const RAFT_LOG_CACHE: usize = 16 << 20;
/// A packet store's index (targets' packets, a source's outbox): one
/// lookup per put, get and delete.
pub const PACKET_INDEX_CACHE: usize = 32 << 20;
/// Who stored which packet on this target.
pub const HOLDERS_CACHE: usize = 16 << 20;
/// The chunks a source knows the grid holds.
pub const KNOWN_CACHE: usize = 16 << 20;

/// Opens (or creates) the database at `path` with a page cache of at most
/// `cache` bytes.
pub fn create(path: impl AsRef<Path>, cache: usize) -> Result<Database, DatabaseError> {
    redb::Builder::new().set_cache_size(cache).create(path)
}
