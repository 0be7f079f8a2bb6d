//! A manifest's bytes, arbitrary (a snapshot's owner is the only one who
//! can make them, but a bug or a damaged disk can too): the in-memory
//! decode and the restore's streamed decode into scratch files both give a
//! manifest or a typed error, never a panic, and when both give one it is
//! the same manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strew_node::pipeline::manifest::{Manifest, ManifestError};
use strew_node::pipeline::manifest_disk::DiskManifest;

fuzz_target!(|data: &[u8]| {
    let memory = Manifest::decode(data);
    let disk = DiskManifest::decode_from(data);
    match (memory, disk) {
        (Ok(m), Ok(d)) => {
            let back = d.to_manifest().expect("scratch files read back");
            assert_eq!(back, m);
        }
        // The streamed decode reads only the map form with the chunk table
        // before the entries (what every strew writes); the in-memory one
        // reads other shapes too. It must never check an entry differently.
        (Ok(_), Err(ManifestError::Decode(_) | ManifestError::Malformed(_))) => {}
        (Ok(_), Err(e)) => panic!("only the in-memory decode accepts it: {e}"),
        (Err(e), Ok(_)) => panic!("only the streamed decode accepts it: {e}"),
        (Err(_), Err(_)) => {}
    }
});
