//! The peer cache: nodes this node knew, kept in the data dir (`peers.json`)
//! so a restarted node rejoins the grid without `--bootstrap`, and so targets
//! that left the grid view keep a location in `status` and on the map.
//!
//! Owns the file format, its bounds (at most [`MAX_CACHED`] nodes, newest
//! first) and the merge of what the overlay sees now into what was cached.
//! A missing or unreadable cache is an empty one (it is only a hint): it must
//! never stop the node from starting.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use strew_overlay::{Multiaddr, PeerInfo};
use tracing::warn;

/// File name of the cache in the data dir.
pub const PEER_CACHE_FILE: &str = "peers.json";
/// Nodes kept at most (the most recently seen).
pub const MAX_CACHED: usize = 256;
/// Cached nodes dialled at startup at most (the most recently seen).
pub const MAX_STARTUP_DIALS: usize = 16;
/// Largest cache file read (a bigger file is ignored).
const MAX_FILE_BYTES: u64 = 4 << 20;

/// One node as last seen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedPeer {
    pub node_id: String,
    pub lat: f64,
    pub lon: f64,
    /// Addresses it announced (without `/p2p/`).
    pub addrs: Vec<String>,
    /// Unix ms when this node last saw it online.
    pub last_seen: u64,
    pub coordinator_eligible: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheFile {
    version: u32,
    peers: Vec<CachedPeer>,
}

/// The cached peers of a data dir.
#[derive(Debug, Clone, Default)]
pub struct PeerCache {
    peers: BTreeMap<String, CachedPeer>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(PEER_CACHE_FILE)
}

impl PeerCache {
    /// Reads the cache; a missing, oversized or corrupt file gives an empty
    /// cache (logged).
    pub fn load(data_dir: &Path) -> PeerCache {
        let file = path(data_dir);
        let bytes = match std::fs::metadata(&file) {
            Ok(m) if m.len() > MAX_FILE_BYTES => {
                warn!(path = %file.display(), "peer cache too large; ignored");
                return PeerCache::default();
            }
            Ok(_) => match std::fs::read(&file) {
                Ok(b) => b,
                Err(error) => {
                    warn!(path = %file.display(), %error, "cannot read the peer cache; ignored");
                    return PeerCache::default();
                }
            },
            Err(_) => return PeerCache::default(),
        };
        match serde_json::from_slice::<CacheFile>(&bytes) {
            Ok(f) => {
                let mut cache = PeerCache::default();
                for p in f
                    .peers
                    .into_iter()
                    .filter(|p| p.lat.is_finite() && p.lon.is_finite())
                {
                    cache.peers.insert(p.node_id.clone(), p);
                }
                cache.trim();
                cache
            }
            Err(error) => {
                warn!(path = %file.display(), %error, "peer cache unreadable; ignored");
                PeerCache::default()
            }
        }
    }

    /// Writes the cache atomically (a crash leaves the old or the new file).
    pub fn save(&self, data_dir: &Path) -> std::io::Result<()> {
        let mut peers: Vec<CachedPeer> = self.peers.values().cloned().collect();
        peers.sort_by_key(|p| std::cmp::Reverse(p.last_seen));
        let bytes = serde_json::to_vec_pretty(&CacheFile { version: 1, peers })
            .map_err(std::io::Error::other)?;
        crate::private_file::write_private(&path(data_dir), &bytes)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }

    /// Merges what the overlay sees now: online peers are (re)recorded as seen at `now_ms`.
    pub fn update(&mut self, peers: &[PeerInfo], now_ms: u64) {
        for p in peers
            .iter()
            .filter(|p| p.online && !p.listen_addrs.is_empty())
        {
            self.peers.insert(
                p.node_id.to_string(),
                CachedPeer {
                    node_id: p.node_id.to_string(),
                    lat: p.lat,
                    lon: p.lon,
                    addrs: p.listen_addrs.clone(),
                    last_seen: now_ms,
                    coordinator_eligible: p.coordinator_eligible,
                },
            );
        }
        self.trim();
    }

    fn trim(&mut self) {
        if self.peers.len() <= MAX_CACHED {
            return;
        }
        let mut by_age: Vec<(u64, String)> = self
            .peers
            .values()
            .map(|p| (p.last_seen, p.node_id.clone()))
            .collect();
        by_age.sort();
        let drop = by_age.len() - MAX_CACHED;
        for (_, id) in by_age.into_iter().take(drop) {
            self.peers.remove(&id);
        }
    }

    /// A cached node by its id text.
    pub fn get(&self, node_id: &str) -> Option<&CachedPeer> {
        self.peers.get(node_id)
    }

    pub fn len(&self) -> usize {
        self.peers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Addresses to dial at startup: of the most recently seen nodes
    /// (coordinator-eligible ones first), each ending in `/p2p/<node_id>`.
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        let mut peers: Vec<&CachedPeer> = self.peers.values().collect();
        peers.sort_by(|a, b| {
            b.coordinator_eligible
                .cmp(&a.coordinator_eligible)
                .then(b.last_seen.cmp(&a.last_seen))
        });
        let mut out = Vec::new();
        for p in peers.into_iter().take(MAX_STARTUP_DIALS) {
            for a in &p.addrs {
                if let Ok(addr) = format!("{a}/p2p/{}", p.node_id).parse::<Multiaddr>() {
                    out.push(addr);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strew_coordinator::NodeId;

    fn peer(n: u8, seen_online: bool) -> PeerInfo {
        let key = strew_overlay::Keypair::generate_ed25519();
        let node_id = strew_overlay::peer::node_id_of_key(&key.public()).expect("ed25519");
        let _ = n;
        PeerInfo {
            node_id,
            lat: 48.0 + f64::from(n),
            lon: 2.0,
            storage_allocated: 1,
            free_bytes: 1,
            bandwidth_limit: 0,
            load: 0.0,
            uptime_secs: 1,
            coordinator_eligible: n == 0,
            protocol_version: 1,
            listen_addrs: vec![format!("/ip4/10.0.0.{n}/tcp/4000")],
            announced_at: 1,
            expires_at: 2,
            online: seen_online,
        }
    }

    #[test]
    fn the_cache_survives_a_restart_and_gives_dialable_addresses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cache = PeerCache::load(dir.path());
        assert!(cache.is_empty());
        let peers = vec![peer(0, true), peer(1, true), peer(2, false)];
        cache.update(&peers, 1000);
        cache.save(dir.path()).expect("save");
        let again = PeerCache::load(dir.path());
        assert_eq!(again.len(), 2, "offline peers are not recorded");
        let addrs = again.dial_addrs();
        assert_eq!(addrs.len(), 2);
        let first = addrs[0].to_string();
        assert!(
            first.starts_with("/ip4/10.0.0.0/tcp/4000/p2p/"),
            "coordinator first: {first}"
        );
        let id = NodeId::from_peer_id_bytes(
            &strew_overlay::peer::peer_id_of(&peers[1].node_id)
                .expect("peer id")
                .to_bytes(),
        )
        .expect("node id");
        assert!(again.get(&id.to_string()).is_some());
    }

    #[test]
    fn a_corrupt_cache_is_empty_not_fatal() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join(PEER_CACHE_FILE), b"{not json").expect("write");
        assert!(PeerCache::load(dir.path()).is_empty());
    }

    #[test]
    fn the_cache_keeps_only_the_most_recently_seen() {
        let mut cache = PeerCache::default();
        for i in 0..(MAX_CACHED + 10) {
            cache.update(&[peer(1, true)], i as u64);
        }
        assert_eq!(cache.len(), MAX_CACHED);
        assert!(cache.dial_addrs().len() <= MAX_STARTUP_DIALS);
    }
}
