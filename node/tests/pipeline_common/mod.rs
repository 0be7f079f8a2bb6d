//! What the pipeline tests share: a restore of a sequence from a local
//! packet store with the owner's secret and default options.

use std::path::Path;

use strew_node::pipeline::restore::RestoreError;
use strew_node::pipeline::{self, Codec, RestoreOptions, RestoreProgress};
use strew_node::store::PacketStore;

pub fn restore_sequence(
    sequence: &pipeline::Sequence,
    codec: &Codec,
    store: &PacketStore,
    dest: &Path,
) -> Result<pipeline::RestoreReport, RestoreError> {
    pipeline::restore(
        sequence,
        &pipeline::RestoreKeys {
            owner: codec.secret.clone(),
            data: Vec::new(),
        },
        store,
        dest,
        &RestoreOptions::default(),
        &RestoreProgress::default(),
    )
}
