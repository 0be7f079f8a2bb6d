//! The strew node: packet pipeline, local packet store, backup/restore, daemon
//! and the CLI's building blocks. The `strew` binary (`main.rs`) is a thin
//! dispatcher over these modules.

pub mod cli;
pub mod bench;
pub mod pipeline;
pub mod store;
pub mod verify;
pub mod progress;
pub mod config;
pub mod control;
pub mod daemon;
pub mod identity;
pub mod metrics;
