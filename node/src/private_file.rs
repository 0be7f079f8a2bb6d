//! Writing files only this user may read (identity, keys, the control
//! endpoint's token, the group's sealing key): the one helper for it.
//!
//! The bytes go to a `.tmp` sibling created with mode 0600, are fsynced and
//! renamed over the target, so a crash leaves the old file or the new one,
//! never a torn or world-readable one.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A private file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}")]
pub struct PrivateFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` to `path` atomically with mode 0600, creating its directory.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PrivateFileError> {
    let fail = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PrivateFileError { path, source }
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(fail(dir))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail(&tmp))?;
        // An existing tmp file keeps its old mode: set it again.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(fail(&tmp))?;
        f.write_all(bytes).map_err(fail(&tmp))?;
        f.sync_all().map_err(fail(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(fail(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_replace_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/secret.key");
        write_private(&path, b"one").expect("first write");
        write_private(&path, b"two").expect("second write");
        assert_eq!(fs::read(&path).expect("read"), b"two");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("sub/secret.key.tmp").exists());
        let blocked = dir.path().join("file-not-dir");
        fs::write(&blocked, b"x").expect("write");
        assert!(write_private(&blocked.join("x"), b"y").is_err());
    }
}
