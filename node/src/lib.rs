//! The strew node: packet pipeline, local packet store, backup/restore, daemon
//! and the CLI's building blocks. The `strew` binary (`main.rs`) is a thin
//! dispatcher over these modules.

pub mod cli;
