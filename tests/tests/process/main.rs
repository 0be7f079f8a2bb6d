//! The process tests: each module starts real `strew` processes (on
//! 127.0.0.1, or in network namespaces it makes) and checks what a user
//! would: bytes restored, bounds held under attack, metadata kept through
//! failures. One test binary for all of them: each file used to be its own
//! binary, which cost CI a link and a compile of the shared code apiece.
//! `.config/nextest.toml` groups them by module (`test(/^module::/)`).

mod adversary_big_plan;
mod adversary_connections;
mod adversary_gossip;
mod adversary_heavy_reads;
mod adversary_memory;
mod adversary_reservations;
mod adversary_sync;
mod adversary_tickets;
mod closed_grid;
mod confidentiality;
mod demo;
mod everyday;
mod grid_e2e;
mod grid_trust;
mod leave;
mod location_check;
mod manager_client;
mod manager_failover;
mod manager_membership;
mod nat_namespaces;
mod open_grid_joins;
mod overlay_bad_input;
mod overlay_cli;
mod overlay_grid;
mod rebuild;
mod recover;
mod repair;
mod resume;
mod scale;
mod seven_hosts;
mod suspend;
