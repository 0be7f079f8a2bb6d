//! The strew node: packet pipeline, local packet store, backup/restore, daemon
//! and the CLI's building blocks. The `strew` binary (`main.rs`) is a thin
//! dispatcher over these modules.

pub mod bench;
pub mod claim_set;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod control;
pub mod daemon;
pub mod dashboard;
pub mod demo;
pub mod grid;
pub mod http;
pub mod identity;
pub mod keys;
pub mod map;
pub mod metrics;
pub mod metrics_text;
pub mod peer_cache;
pub mod pipeline;
pub mod private_file;
pub mod progress;
pub mod redb_cache;
pub mod spill;
pub mod spill_table;
pub mod store;
pub mod sync;
pub mod trust;
pub mod verify;
pub mod wire;
pub mod work_stamp;
