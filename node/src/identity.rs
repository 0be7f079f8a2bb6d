//! The node's persisted identity: one Ed25519 keypair (its NodeId and libp2p
//! PeerId) in `DATA_DIR/identity.key`, libp2p's protobuf key encoding, file mode
//! 0600; and the X25519 key sequences are sealed to, derived from it.
//!
//! Owns creating, loading and exporting the key file. It must not print or log
//! secret material.

use std::fs;

use std::path::{Path, PathBuf};

use strew_coordinator::NodeId;
use strew_overlay::Keypair;
use strew_overlay::peer;

/// File name of the identity inside the data dir.
pub const IDENTITY_FILE: &str = "identity.key";
/// Domain of the X25519 secret derived from the identity.
const X25519_DOMAIN: &[u8] = b"strew/x25519/v1";

/// Errors loading or creating the identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read or write the identity file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the identity file {path} is corrupt (not a libp2p protobuf keypair)")]
    Corrupt { path: PathBuf },
    #[error("the identity in {path} is not an Ed25519 key; strew node ids are Ed25519")]
    NotEd25519 { path: PathBuf },
}

/// Path of the identity file in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

/// Loads the identity, creating (and persisting) a new one if there is none.
/// Returns the key and whether it was created now.
pub fn load_or_create(data_dir: &Path) -> Result<(Keypair, bool), IdentityError> {
    let file = path(data_dir);
    if file.exists() {
        return load(data_dir).map(|k| (k, false));
    }
    let key = Keypair::generate_ed25519();
    save(data_dir, &key)?;
    Ok((key, true))
}

/// Loads the identity from `data_dir`.
pub fn load(data_dir: &Path) -> Result<Keypair, IdentityError> {
    let file = path(data_dir);
    let bytes = fs::read(&file).map_err(|source| IdentityError::Io {
        path: file.clone(),
        source,
    })?;
    decode(&bytes, &file)
}

/// Decodes key-file bytes (also used by key import).
pub fn decode(bytes: &[u8], origin: &Path) -> Result<Keypair, IdentityError> {
    let key = Keypair::from_protobuf_encoding(bytes).map_err(|_| IdentityError::Corrupt {
        path: origin.to_path_buf(),
    })?;
    if peer::node_id_of_key(&key.public()).is_none() {
        return Err(IdentityError::NotEd25519 {
            path: origin.to_path_buf(),
        });
    }
    Ok(key)
}

/// Writes the identity to `data_dir` (mode 0600, atomically via a temp file).
pub fn save(data_dir: &Path, key: &Keypair) -> Result<(), IdentityError> {
    let file = path(data_dir);
    let io = |source| IdentityError::Io {
        path: file.clone(),
        source,
    };
    fs::create_dir_all(data_dir).map_err(io)?;
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|_| IdentityError::NotEd25519 { path: file.clone() })?;
    crate::private_file::write_private(&file, &bytes).map_err(|e| IdentityError::Io {
        path: e.path,
        source: e.source,
    })
}

/// The NodeId of a key (every key this module hands out is Ed25519).
pub fn node_id(key: &Keypair) -> Option<NodeId> {
    peer::node_id_of_key(&key.public())
}

/// The X25519 static secret sequences are sealed to, derived (HKDF-SHA256)
/// from the identity so an exported identity restores it too.
pub fn x25519_secret(key: &Keypair) -> Option<[u8; 32]> {
    key.derive_secret(X25519_DOMAIN)
}

/// The X25519 public key matching [`x25519_secret`].
pub fn x25519_public(key: &Keypair) -> Option<[u8; 32]> {
    let secret = x25519_dalek::StaticSecret::from(x25519_secret(key)?);
    Some(x25519_dalek::PublicKey::from(&secret).to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn identity_persists_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let (key, created) = load_or_create(dir.path()).unwrap();
        assert!(created);
        let (again, created) = load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(node_id(&key), node_id(&again));
        assert_eq!(x25519_public(&key), x25519_public(&again));
        let mode = fs::metadata(path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_identity_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), b"garbage").unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
    }
}
