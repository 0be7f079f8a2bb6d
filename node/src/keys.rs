//! The user's secrets and their export: the node identity (Ed25519; the
//! X25519 key sequences are sealed to is derived from it) and the private
//! convergence secret (random per user, kept in the data dir). `strew key
//! export` writes both (and the grid's convergence secret, when the node has
//! one) to one file; `strew key import` installs them in a new
//! data dir, which is all a fresh machine needs to restore every snapshot.
//! The grid-scope convergence secret is the grid's, not the user's: a random
//! secret kept in `grid-convergence.key` (64 hex digits), made when the grid
//! is created and handed to members when they join. Without that file, a
//! `grid`-scope set is keyed under the private secret (no cross-source
//! dedup), never under a public constant. On a grid's founding
//! node the export also carries the grid key (the grid's trust root), so the
//! founder can back it up.

use std::fs;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::identity;
use crate::pipeline::ConvergenceSecret;

const SECRET_FILE: &str = "convergence.key";
/// The grid's convergence secret in a data dir: 64 hex digits.
pub const GRID_SECRET_FILE: &str = "grid-convergence.key";
const EXPORT_VERSION: u32 = 1;

/// Printed by `strew key export`.
pub const SAFETY_WARNING: &str = "This file restores every backup of this node on any machine, and \
lets whoever holds it read them. Keep it offline or encrypted (a password manager, a USB key in a \
drawer), never on the machine it protects, and never in the grid.";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a strew key export ({why})")]
    Malformed { path: PathBuf, why: String },
    #[error(
        "{path}: key export version {found} is newer than this strew understands ({EXPORT_VERSION})"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(
        "{0} already holds a node identity; import into a new data dir (--data-dir), or move the old one away first"
    )]
    WouldOverwrite(PathBuf),
    #[error(transparent)]
    Grid(#[from] crate::trust::TrustFileError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The private convergence secret of this data dir, created on first use.
pub fn private_secret(data_dir: &Path) -> Result<ConvergenceSecret, KeyError> {
    let path = data_dir.join(SECRET_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let arr: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| KeyError::Malformed {
                    path: path.clone(),
                    why: format!("{} bytes, expected 32", bytes.len()),
                })?;
            Ok(ConvergenceSecret::from_bytes(arr))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = ConvergenceSecret::random();
            write_private(&path, secret.as_bytes())?;
            Ok(secret)
        }
        Err(e) => Err(io(&path)(e)),
    }
}

/// The grid's convergence secret of this data dir (`grid-convergence.key`),
/// or `None` when this node has not been given one.
pub fn grid_secret(data_dir: &Path) -> Result<Option<ConvergenceSecret>, KeyError> {
    let path = data_dir.join(GRID_SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: [u8; 32] =
                unhex(&text)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| KeyError::Malformed {
                        path: path.clone(),
                        why: "expected 64 hex digits".into(),
                    })?;
            Ok(Some(ConvergenceSecret::from_bytes(bytes)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    crate::private_file::write_private(path, bytes).map_err(|e| io(&e.path)(e.source))
}

/// The export file: TOML, hex-encoded secrets.
#[derive(Debug, Serialize, Deserialize)]
struct Export {
    strew_key_export: u32,
    node_id: String,
    /// libp2p protobuf encoding of the Ed25519 keypair.
    identity: String,
    /// The private convergence secret.
    convergence_secret: String,
    /// The grid key (64 hex digits), when this node founded its grid: with
    /// it a new machine can admit and remove coordinators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grid_key: Option<String>,
    /// With the grid key: whether the grid is open (a group founded again
    /// from this export keeps the grid's mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grid_open: Option<bool>,
    /// The grid's convergence secret (64 hex digits), when this node has
    /// one: grid-scope snapshots are keyed under it, so a restore on a new
    /// machine (with the coordinators gone, too) needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    grid_convergence_secret: Option<String>,
}

/// Writes the identity and the private convergence secret of `data_dir` to `file`.
pub fn export(data_dir: &Path, file: &Path) -> Result<String, KeyError> {
    let key = identity::load(data_dir)?;
    let secret = private_secret(data_dir)?;
    let node = identity::node_id(&key)
        .map(|n| n.to_string())
        .unwrap_or_default();
    let encoded = key
        .to_protobuf_encoding()
        .map_err(|_| KeyError::Malformed {
            path: identity::path(data_dir),
            why: "the identity is not an Ed25519 key".into(),
        })?;
    let local = crate::trust::load(data_dir)?;
    let has_key = local.key.is_some();
    let export = Export {
        strew_key_export: EXPORT_VERSION,
        node_id: node.clone(),
        identity: hex(&encoded),
        convergence_secret: hex(secret.as_bytes()),
        grid_key: local.key.map(|k| hex(k.to_bytes().as_slice())),
        grid_open: local.open.filter(|_| has_key),
        grid_convergence_secret: grid_secret(data_dir)?.map(|s| hex(s.as_bytes())),
    };
    let text = format!(
        "# strew key export — {SAFETY_WARNING}\n{}",
        toml::to_string(&export).map_err(|e| KeyError::Malformed {
            path: file.to_path_buf(),
            why: e.to_string(),
        })?
    );
    write_private(file, text.as_bytes())?;
    Ok(node)
}

/// Installs an exported key into `data_dir` (which must not hold an identity).
pub fn import(data_dir: &Path, file: &Path) -> Result<String, KeyError> {
    if identity::path(data_dir).exists() {
        return Err(KeyError::WouldOverwrite(data_dir.to_path_buf()));
    }
    let text = fs::read_to_string(file).map_err(io(file))?;
    let bad = |why: String| KeyError::Malformed {
        path: file.to_path_buf(),
        why,
    };
    let export: Export = toml::from_str(&text).map_err(|e| bad(e.message().to_string()))?;
    if export.strew_key_export > EXPORT_VERSION {
        return Err(KeyError::Version {
            path: file.to_path_buf(),
            found: export.strew_key_export,
        });
    }
    let key_bytes = unhex(&export.identity).ok_or_else(|| bad("identity is not hex".into()))?;
    let key = identity::decode(&key_bytes, file)?;
    let secret: [u8; 32] = unhex(&export.convergence_secret)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("convergence_secret is not 32 hex-encoded bytes".into()))?;
    let node = identity::node_id(&key)
        .map(|n| n.to_string())
        .unwrap_or_default();
    if !export.node_id.is_empty() && export.node_id != node {
        return Err(bad(format!(
            "node_id {} does not match the identity ({node})",
            export.node_id
        )));
    }
    let grid_secret =
        match &export.grid_convergence_secret {
            Some(text) => Some(unhex(text).filter(|b| b.len() == 32).ok_or_else(|| {
                bad("grid_convergence_secret is not 32 hex-encoded bytes".into())
            })?),
            None => None,
        };
    let grid_key = match &export.grid_key {
        Some(text) => Some(
            crate::trust::unhex32(text)
                .ok_or_else(|| bad("grid_key is not 32 hex-encoded bytes".into()))?,
        ),
        None => None,
    };
    identity::save(data_dir, &key)?;
    write_private(&data_dir.join(SECRET_FILE), &secret)?;
    if let Some(bytes) = grid_secret {
        let text = format!("{}\n", hex(&bytes));
        write_private(&data_dir.join(GRID_SECRET_FILE), text.as_bytes())?;
    }
    if let Some(seed) = grid_key {
        crate::trust::install_grid_key(data_dir, &seed, export.grid_open)?;
    }
    Ok(node)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let text = text.trim();
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_grid_secret_file_is_optional_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::grid_secret(dir.path()).unwrap().is_none());
        let path = dir.path().join(super::GRID_SECRET_FILE);
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        let secret = super::grid_secret(dir.path()).unwrap().unwrap();
        assert_eq!(secret.as_bytes(), &[0xab; 32]);
        std::fs::write(&path, "abcd").unwrap();
        assert!(matches!(
            super::grid_secret(dir.path()),
            Err(super::KeyError::Malformed { .. })
        ));
    }

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn export_then_import_reproduces_identity_and_secret() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (key, _) = identity::load_or_create(a.path()).unwrap();
        let secret = private_secret(a.path()).unwrap();
        // A grid-scope snapshot needs the grid's convergence secret too.
        let grid = a.path().join(GRID_SECRET_FILE);
        fs::write(&grid, format!("{}\n", "cd".repeat(32))).unwrap();
        let file = a.path().join("export.toml");
        let node = export(a.path(), &file).unwrap();
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let imported = import(b.path(), &file).unwrap();
        assert_eq!(node, imported);
        assert_eq!(
            identity::node_id(&identity::load(b.path()).unwrap()),
            identity::node_id(&key)
        );
        assert_eq!(private_secret(b.path()).unwrap(), secret);
        assert_eq!(
            grid_secret(b.path()).unwrap().map(|s| *s.as_bytes()),
            Some([0xcd; 32])
        );
        assert_eq!(
            identity::x25519_secret(&identity::load(b.path()).unwrap()),
            identity::x25519_secret(&key)
        );
        assert!(!fs::read_to_string(&file).unwrap().contains("grid_key"));
        // Never over an existing identity.
        assert!(matches!(
            import(b.path(), &file),
            Err(KeyError::WouldOverwrite(_))
        ));
    }

    #[test]
    fn the_founders_export_carries_the_grid_key() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        identity::load_or_create(a.path()).unwrap();
        let root = crate::trust::create(a.path(), false).unwrap();
        let file = a.path().join("export.toml");
        export(a.path(), &file).unwrap();
        import(b.path(), &file).unwrap();
        let local = crate::trust::load(b.path()).unwrap();
        assert_eq!(local.grid, Some(root.grid));
        let key = local.key.expect("the grid key came along");
        assert_eq!(strew_coordinator::trust::grid_id_of(&key), root.grid);
    }

    #[test]
    fn garbage_and_tampered_exports_are_refused() {
        let a = tempfile::tempdir().unwrap();
        let file = a.path().join("bad.toml");
        fs::write(&file, "not = [toml").unwrap();
        assert!(matches!(
            import(a.path(), &file),
            Err(KeyError::Malformed { .. })
        ));
        let src = tempfile::tempdir().unwrap();
        identity::load_or_create(src.path()).unwrap();
        let good = src.path().join("k.toml");
        export(src.path(), &good).unwrap();
        let text = fs::read_to_string(&good)
            .unwrap()
            .replace("convergence_secret = \"", "convergence_secret = \"zz");
        fs::write(&file, text).unwrap();
        assert!(matches!(
            import(a.path(), &file),
            Err(KeyError::Malformed { .. })
        ));
        assert!(!identity::path(a.path()).exists(), "nothing installed");
    }
}
