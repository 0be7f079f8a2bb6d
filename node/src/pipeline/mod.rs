//! The packet pipeline (requirement R1): chunk → DataId → compress →
//! encrypt → erasure-code on the way in, and the verified way back.
//!
//! - [`chunking`]: FastCDC chunk sizes;
//! - [`secret`]: the convergence secret, chunk keys, storage indices (DataIds), convergent encryption;
//! - [`packet`]: the versioned byte layouts of blobs and packets;
//! - [`codec`]: one chunk ⇄ one stripe of packets;
//! - [`rebuild`]: lost packets of a stripe from any K others, without the key;
//! - [`exclude`]: what a backup leaves out (patterns, `.strewignore`, caches, mounts);
//! - [`manifest`]: the snapshot manifest and its safety rules;
//! - [`manifest_pieces`]: a manifest's encoding cut into pieces as it is produced;
//! - `manifest_store`: storing a backup's manifest and snapshot root from those pieces;
//! - [`select`]: `--include`, `ls`, `find` and `diff` from a manifest alone;
//! - [`sequence`]: a snapshot's ordered stripes;
//! - [`backup`] / [`restore`]: the streaming, parallel engines;
//! - [`local`]: adapters between the engines and a local [`crate::store::PacketStore`].

pub mod backup;
pub mod chunk_writes;
pub mod chunking;
pub mod codec;
pub mod exclude;
pub mod local;
pub mod manifest;
pub mod manifest_disk;
pub mod manifest_pieces;
pub mod manifest_spill;
mod manifest_store;
pub mod packet;
pub mod rebuild;
pub mod restore;
pub mod secret;
pub mod select;
pub mod sequence;

pub use backup::{
    BackupOptions, BackupReport, BackupStats, KnownChunks, NothingKnown, PacketSink, Progress,
    backup,
};
pub use chunking::ChunkSizes;
pub use codec::{Codec, EncodedStripe, PacketSource, StripeRecord};
pub use exclude::ExcludeRules;
pub use restore::{RestoreKeys, RestoreOptions, RestoreProgress, RestoreReport, restore};
pub use secret::{ChunkKey, ConvergenceSecret};
pub use sequence::Sequence;
