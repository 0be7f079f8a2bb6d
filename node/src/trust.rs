//! This node's side of the grid's trust root, as files in the data dir: the
//! pinned grid id (`grid.toml`), the grid key on the founding node
//! (`grid.key`, private) and the grid-scope convergence secret once this
//! node has it (`grid-convergence.key`, private, 64 hex digits).
//!
//! Owns creating a grid (`strew grid create`: a new Ed25519 grid key and a
//! random convergence secret), pinning a grid id (`init --grid`, or trust on
//! first use from the first grid this node joins), and the shared in-memory
//! copy the daemon's tasks consult ([`GridTrust`]). Every write is atomic and
//! private. It must not decide who is a member (the replicated
//! `TrustState` does) nor talk to other nodes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};
use strew_coordinator::trust::grid_id_of;
use strew_coordinator::{
    GridId, GridRoot, Invite, MemberCert, NodeId, Renewal, Revocation, Subscription, TrustError,
};

use crate::sync::lock;

/// The pinned grid id (and whether the grid is open), not secret.
pub const GRID_FILE: &str = "grid.toml";
/// The grid key (64 hex digits of its Ed25519 seed), founding node only.
pub const GRID_KEY_FILE: &str = "grid.key";
/// The grid-scope convergence secret (64 hex digits).
pub const CONVERGENCE_FILE: &str = crate::keys::GRID_SECRET_FILE;
/// A join token not yet redeemed (`strew init --join`), private.
pub const JOIN_FILE: &str = "join-token";
/// Where a redeemed join token is kept.
pub const JOINED_FILE: &str = "join-token.redeemed";
/// What every join token starts with.
pub const TOKEN_PREFIX: &str = "strew-join-";
/// Longest join token accepted (hex of the CBOR invitation).
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// Failures of the trust files.
#[derive(Debug, thiserror::Error)]
pub enum TrustFileError {
    #[error("cannot read or write {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error(
        "this node already holds the key of grid {0}; a node founds one grid (move the data dir away to found another)"
    )]
    AlreadyFounded(GridId),
    #[error("this node is pinned to grid {pinned}, not {other}")]
    PinnedElsewhere { pinned: GridId, other: GridId },
    #[error("signing with the grid key failed")]
    Sign(#[source] TrustError),
    #[error("this is not a valid strew join token: {0}")]
    Token(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrustFileError + '_ {
    move |source| TrustFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TrustFileError> {
    crate::private_file::write_private(path, bytes).map_err(|e| io(&e.path)(e.source))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 bytes from 64 hex digits (surrounding whitespace ignored).
pub fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Reads a file of 64 hex digits; `None` when it does not exist.
fn read_hex32(path: &Path) -> Result<Option<[u8; 32]>, TrustFileError> {
    match fs::read_to_string(path) {
        Ok(text) => unhex32(&text)
            .map(Some)
            .ok_or_else(|| TrustFileError::Malformed {
                path: path.to_path_buf(),
                why: "expected 64 hex digits".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// `grid.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct GridFile {
    grid_id: String,
    /// Whether the grid was created open (known on the founder and on nodes
    /// that learnt it; absent: unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    open: Option<bool>,
}

/// What the data dir says about the grid.
#[derive(Clone, Default)]
pub struct LocalGrid {
    /// The pinned grid id (none: pin on first join).
    pub grid: Option<GridId>,
    pub open: Option<bool>,
    /// The grid key (founding node only).
    pub key: Option<SigningKey>,
    /// The grid-scope convergence secret, once this node has it.
    pub convergence: Option<[u8; 32]>,
}

impl std::fmt::Debug for LocalGrid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalGrid")
            .field("grid", &self.grid)
            .field("open", &self.open)
            .field("holds_key", &self.key.is_some())
            .field("has_convergence", &self.convergence.is_some())
            .finish()
    }
}

/// Reads the trust files of `data_dir` (absent files: nothing known).
pub fn load(data_dir: &Path) -> Result<LocalGrid, TrustFileError> {
    let path = data_dir.join(GRID_FILE);
    let file: Option<GridFile> = match fs::read_to_string(&path) {
        Ok(text) => Some(
            toml::from_str(&text).map_err(|e| TrustFileError::Malformed {
                path: path.clone(),
                why: e.message().to_string(),
            })?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&path)(e)),
    };
    let grid = match &file {
        Some(f) => Some(
            f.grid_id
                .parse::<GridId>()
                .map_err(|_| TrustFileError::Malformed {
                    path: path.clone(),
                    why: format!("grid_id {:?} is not 64 hex digits", f.grid_id),
                })?,
        ),
        None => None,
    };
    let key = read_hex32(&data_dir.join(GRID_KEY_FILE))?.map(|seed| SigningKey::from_bytes(&seed));
    if let (Some(key), Some(grid)) = (&key, grid)
        && grid_id_of(key) != grid
    {
        return Err(TrustFileError::Malformed {
            path: data_dir.join(GRID_KEY_FILE),
            why: format!("the grid key is not the key of the pinned grid {grid}"),
        });
    }
    Ok(LocalGrid {
        grid: grid.or_else(|| key.as_ref().map(grid_id_of)),
        open: file.and_then(|f| f.open),
        key,
        convergence: read_convergence(data_dir)?,
    })
}

fn write_grid_file(
    data_dir: &Path,
    grid: GridId,
    open: Option<bool>,
) -> Result<(), TrustFileError> {
    let path = data_dir.join(GRID_FILE);
    let text = toml::to_string(&GridFile {
        grid_id: grid.to_string(),
        open,
    })
    .map_err(|e| TrustFileError::Malformed {
        path: path.clone(),
        why: e.to_string(),
    })?;
    let text =
        format!("# the grid this node belongs to (its trust root); see docs/security.md\n{text}");
    crate::private_file::write_private(&path, text.as_bytes()).map_err(|e| io(&e.path)(e.source))
}

/// Pins `grid` in `data_dir` (a no-op when it is pinned already; refused
/// when another grid is).
pub fn pin(data_dir: &Path, grid: GridId, open: Option<bool>) -> Result<(), TrustFileError> {
    let local = load(data_dir)?;
    match local.grid {
        Some(pinned) if pinned != grid => Err(TrustFileError::PinnedElsewhere {
            pinned,
            other: grid,
        }),
        Some(_) if open.is_none() || local.open == open => Ok(()),
        _ => write_grid_file(data_dir, grid, open.or(local.open)),
    }
}

/// The grid-scope convergence secret of `data_dir`, if this node has it.
pub fn read_convergence(data_dir: &Path) -> Result<Option<[u8; 32]>, TrustFileError> {
    read_hex32(&data_dir.join(CONVERGENCE_FILE))
}

/// Stores the grid-scope convergence secret (private file).
pub fn write_convergence(data_dir: &Path, secret: &[u8; 32]) -> Result<(), TrustFileError> {
    write_private(&data_dir.join(CONVERGENCE_FILE), hex(secret).as_bytes())
}

/// The text of a join token: [`TOKEN_PREFIX`] and the hex of the
/// invitation's CBOR.
pub fn encode_token(invite: &Invite) -> Result<String, TrustFileError> {
    let bytes = strew_coordinator::cbor::encode(invite)
        .map_err(|e| TrustFileError::Token(e.to_string()))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Reads a join token (never panics; bounded).
pub fn decode_token(text: &str) -> Result<Invite, TrustFileError> {
    let text = text.trim();
    if text.len() > MAX_TOKEN_CHARS {
        return Err(TrustFileError::Token(format!(
            "longer than {MAX_TOKEN_CHARS} characters"
        )));
    }
    let body = text
        .strip_prefix(TOKEN_PREFIX)
        .ok_or_else(|| TrustFileError::Token(format!("it does not start with {TOKEN_PREFIX}")))?;
    if !body.len().is_multiple_of(2) || !body.is_ascii() {
        return Err(TrustFileError::Token("not hex".into()));
    }
    let bytes = (0..body.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&body[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| TrustFileError::Token("not hex".into()))?;
    let invite: Invite = strew_coordinator::cbor::decode(&bytes)
        .map_err(|e| TrustFileError::Token(e.to_string()))?;
    invite
        .verify(&invite.grid)
        .map_err(|e| TrustFileError::Token(e.to_string()))?;
    Ok(invite)
}

/// `strew init --join TOKEN`: pins the invitation's grid, stores its
/// convergence secret and keeps the token until the manager redeems it.
/// Returns the invitation.
pub fn join(data_dir: &Path, token: &str) -> Result<Invite, TrustFileError> {
    let invite = decode_token(token)?;
    pin(data_dir, invite.grid, Some(false))?;
    write_convergence(data_dir, &invite.convergence)?;
    write_private(&data_dir.join(JOIN_FILE), token.trim().as_bytes())?;
    Ok(invite)
}

/// The join token waiting to be redeemed, if any.
pub fn pending_join(data_dir: &Path) -> Result<Option<Invite>, TrustFileError> {
    let path = data_dir.join(JOIN_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => decode_token(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Marks the join token redeemed.
pub fn joined(data_dir: &Path) -> Result<(), TrustFileError> {
    let from = data_dir.join(JOIN_FILE);
    let to = data_dir.join(JOINED_FILE);
    fs::rename(&from, &to).map_err(io(&from))
}

/// Installs a grid key (from `strew key import`): writes it and pins its
/// grid (open or closed as the export says, if it does).
pub fn install_grid_key(
    data_dir: &Path,
    seed: &[u8; 32],
    open: Option<bool>,
) -> Result<GridId, TrustFileError> {
    let grid = grid_id_of(&SigningKey::from_bytes(seed));
    pin(data_dir, grid, open)?;
    write_private(&data_dir.join(GRID_KEY_FILE), hex(seed).as_bytes())?;
    Ok(grid)
}

/// `strew grid create`: makes the grid key and the convergence secret,
/// pins the new grid. Refused when this node holds a grid key already or is
/// pinned to another grid.
pub fn create(data_dir: &Path, open: bool) -> Result<GridRoot, TrustFileError> {
    let local = load(data_dir)?;
    if let Some(key) = &local.key {
        return Err(TrustFileError::AlreadyFounded(grid_id_of(key)));
    }
    let seed: [u8; 32] = rand::random();
    let grid = grid_id_of(&SigningKey::from_bytes(&seed));
    if let Some(pinned) = local.grid {
        return Err(TrustFileError::PinnedElsewhere {
            pinned,
            other: grid,
        });
    }
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    let convergence: [u8; 32] = rand::random();
    write_private(&data_dir.join(GRID_KEY_FILE), hex(&seed).as_bytes())?;
    write_convergence(data_dir, &convergence)?;
    write_grid_file(data_dir, grid, Some(open))?;
    Ok(GridRoot {
        grid,
        open,
        convergence,
    })
}

/// The daemon's shared copy of [`LocalGrid`], re-read when `strew grid
/// create` or a join changes the files.
#[derive(Clone, Debug)]
pub struct GridTrust {
    data_dir: PathBuf,
    local: Arc<Mutex<LocalGrid>>,
}

impl GridTrust {
    pub fn open(data_dir: &Path) -> Result<Self, TrustFileError> {
        Ok(GridTrust {
            data_dir: data_dir.to_path_buf(),
            local: Arc::new(Mutex::new(load(data_dir)?)),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// What is known now.
    pub fn local(&self) -> LocalGrid {
        lock(&self.local).clone()
    }

    pub fn grid(&self) -> Option<GridId> {
        lock(&self.local).grid
    }

    /// Re-reads the files (after `grid create` wrote them).
    pub fn reload(&self) -> Result<LocalGrid, TrustFileError> {
        let local = load(&self.data_dir)?;
        *lock(&self.local) = local.clone();
        Ok(local)
    }

    /// Creates the grid (see [`create`]) and loads it.
    pub fn create(&self, open: bool) -> Result<GridRoot, TrustFileError> {
        let root = create(&self.data_dir, open)?;
        self.reload()?;
        Ok(root)
    }

    /// Pins `grid` on first use; `Ok(false)` when another grid is pinned.
    pub fn pin_first_use(&self, grid: GridId) -> Result<bool, TrustFileError> {
        match self.grid() {
            Some(pinned) => Ok(pinned == grid),
            None => {
                pin(&self.data_dir, grid, None)?;
                self.reload()?;
                Ok(true)
            }
        }
    }

    /// Records the grid's convergence secret (once).
    pub fn learn_convergence(&self, secret: &[u8; 32], open: bool) -> Result<(), TrustFileError> {
        let local = self.local();
        if local.convergence.as_ref() == Some(secret) && local.open == Some(open) {
            return Ok(());
        }
        write_convergence(&self.data_dir, secret)?;
        if let Some(grid) = local.grid {
            pin(&self.data_dir, grid, Some(open))?;
        }
        self.reload().map(|_| ())
    }

    /// Revokes `node`'s certificates (signed now), if this node holds the grid key.
    pub fn revoke(&self, node: NodeId, now: u64) -> Option<Result<Revocation, TrustFileError>> {
        let key = lock(&self.local).key.clone()?;
        Some(Revocation::issue(&key, node, now).map_err(TrustFileError::Sign))
    }

    /// A join token for `subscription`, valid until `valid_until`, naming
    /// `bootstrap`, if this node holds the grid key and the convergence secret.
    pub fn invite(
        &self,
        subscription: Subscription,
        valid_until: u64,
        bootstrap: Vec<String>,
    ) -> Option<Result<Invite, TrustFileError>> {
        let local = self.local();
        let key = local.key?;
        let convergence = local.convergence?;
        Some(
            Invite::issue(
                &key,
                rand::random(),
                subscription,
                valid_until,
                bootstrap,
                convergence,
            )
            .map_err(TrustFileError::Sign),
        )
    }

    /// A renewal of `node`'s subscription, if this node holds the grid key.
    pub fn renew(
        &self,
        node: NodeId,
        expires_at: Option<u64>,
        now: u64,
    ) -> Option<Result<Renewal, TrustFileError>> {
        let key = lock(&self.local).key.clone()?;
        Some(Renewal::issue(&key, node, expires_at, now).map_err(TrustFileError::Sign))
    }

    /// A certificate for `node`, signed now, if this node holds the grid key.
    pub fn certify(&self, node: NodeId, now: u64) -> Option<Result<MemberCert, TrustFileError>> {
        let key = lock(&self.local).key.clone()?;
        Some(MemberCert::issue(&key, node, now).map_err(TrustFileError::Sign))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creating_a_grid_writes_private_files_and_pins_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = create(dir.path(), false).unwrap();
        let local = load(dir.path()).unwrap();
        assert_eq!(local.grid, Some(root.grid));
        assert_eq!(local.open, Some(false));
        assert_eq!(local.convergence, Some(root.convergence));
        assert_eq!(local.key.as_ref().map(grid_id_of), Some(root.grid));
        for file in [GRID_KEY_FILE, CONVERGENCE_FILE] {
            let meta = fs::metadata(dir.path().join(file)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        }
        let text = fs::read_to_string(dir.path().join(CONVERGENCE_FILE)).unwrap();
        assert_eq!(text.len(), 64);
        assert!(matches!(
            create(dir.path(), true),
            Err(TrustFileError::AlreadyFounded(_))
        ));
    }

    #[test]
    fn a_join_token_round_trips_and_garbage_is_refused() {
        let founder = tempfile::tempdir().unwrap();
        let joiner = tempfile::tempdir().unwrap();
        let root = create(founder.path(), false).unwrap();
        let trust = GridTrust::open(founder.path()).unwrap();
        let invite = trust
            .invite(
                Subscription::default_plan(),
                99,
                vec!["/ip4/127.0.0.1/tcp/1".into()],
            )
            .expect("holds the key")
            .unwrap();
        let token = encode_token(&invite).unwrap();
        let got = join(joiner.path(), &token).unwrap();
        assert_eq!(got, invite);
        let local = load(joiner.path()).unwrap();
        assert_eq!(local.grid, Some(root.grid));
        assert_eq!(local.convergence, Some(root.convergence));
        assert_eq!(pending_join(joiner.path()).unwrap(), Some(invite));
        joined(joiner.path()).unwrap();
        assert_eq!(pending_join(joiner.path()).unwrap(), None);
        for bad in [
            "",
            "strew-join-",
            "strew-join-zz",
            "strew-join-00ff",
            "hello",
        ] {
            assert!(
                matches!(decode_token(bad), Err(TrustFileError::Token(_))),
                "{bad}"
            );
        }
        // A token altered after signing.
        let mut flipped = token.into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert!(decode_token(&flipped).is_err());
    }

    #[test]
    fn a_pinned_node_refuses_another_grid_and_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = GridId([1; 32]);
        pin(dir.path(), a, None).unwrap();
        pin(dir.path(), a, Some(true)).unwrap();
        assert_eq!(load(dir.path()).unwrap().open, Some(true));
        assert!(matches!(
            pin(dir.path(), GridId([2; 32]), None),
            Err(TrustFileError::PinnedElsewhere { .. })
        ));
        assert!(matches!(
            create(dir.path(), false),
            Err(TrustFileError::PinnedElsewhere { .. })
        ));
        let trust = GridTrust::open(dir.path()).unwrap();
        assert!(!trust.pin_first_use(GridId([2; 32])).unwrap());
        assert!(trust.pin_first_use(a).unwrap());
        fs::write(dir.path().join(CONVERGENCE_FILE), "zz").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(TrustFileError::Malformed { .. })
        ));
        fs::write(dir.path().join(GRID_FILE), "grid_id = 3").unwrap();
        assert!(matches!(
            load(dir.path()),
            Err(TrustFileError::Malformed { .. })
        ));
    }
}
