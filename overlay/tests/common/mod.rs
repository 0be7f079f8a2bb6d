//! Helpers for in-process overlay tests: start overlays on 127.0.0.1 with
//! in-memory stores and wait for conditions with deadlines.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use strew_overlay::libp2p::identity::Keypair;
use strew_overlay::{LocalProfile, MemoryStorage, OverlayConfig, OverlayHandle};

pub fn config(lat: f64, lon: f64, bootstrap: Vec<strew_overlay::Multiaddr>) -> OverlayConfig {
    let mut c = OverlayConfig::new(LocalProfile {
        lat,
        lon,
        storage_allocated: 64 << 20,
        bandwidth_limit: 0,
        coordinator_eligible: false,
        x25519_public: [7; 32],
    });
    c.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
    c.bootstrap = bootstrap;
    c.announce_interval = Duration::from_secs(1);
    c.peer_ttl = Duration::from_secs(5);
    c
}

pub struct Started {
    pub handle: OverlayHandle,
    pub storage: Arc<MemoryStorage>,
    pub task: tokio::task::JoinHandle<()>,
    pub key: Keypair,
}

impl Drop for Started {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.task.abort();
    }
}

pub fn start(config: OverlayConfig, capacity: u64) -> Started {
    let key = Keypair::generate_ed25519();
    let storage = Arc::new(MemoryStorage::new(capacity));
    let (handle, task) = strew_overlay::start(key.clone(), config, storage.clone(), None).unwrap();
    Started {
        handle,
        storage,
        task,
        key,
    }
}

pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first listen address (with `/p2p/`), once the listener is up.
pub async fn addr_of(node: &Started) -> strew_overlay::Multiaddr {
    wait_for("a listen address", Duration::from_secs(10), || {
        !node.handle.listen_addrs().is_empty()
    })
    .await;
    node.handle.listen_addrs()[0].clone()
}
