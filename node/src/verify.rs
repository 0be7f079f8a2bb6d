//! Tree comparison: are two directory trees byte-identical in contents,
//! types, permission bits, mtimes and symlink targets? Used by
//! `strew bench pipeline`, `strew demo` and the tests to check restores.
//! Reads both trees; writes nothing.

use std::fs::{self, File};
use std::io::{BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Lists the differences between `a` and `b` (at most `limit` of them).
/// An empty list means the trees are identical.
pub fn diff_trees(a: &Path, b: &Path, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    compare(a, b, Path::new(""), &mut out, limit);
    out
}

fn compare(a: &Path, b: &Path, rel: &Path, out: &mut Vec<String>, limit: usize) {
    if out.len() >= limit {
        return;
    }
    let (ma, mb) = match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(x), Ok(y)) => (x, y),
        (Err(e), _) => return out.push(format!("{}: unreadable in original: {e}", rel.display())),
        (_, Err(e)) => return out.push(format!("{}: missing in copy: {e}", rel.display())),
    };
    let (ta, tb) = (ma.file_type(), mb.file_type());
    if ta.is_dir() != tb.is_dir()
        || ta.is_file() != tb.is_file()
        || ta.is_symlink() != tb.is_symlink()
    {
        return out.push(format!("{}: type differs", rel.display()));
    }
    if !ta.is_symlink() && ma.mode() & 0o7777 != mb.mode() & 0o7777 {
        out.push(format!(
            "{}: mode {:o} vs {:o}",
            rel.display(),
            ma.mode() & 0o7777,
            mb.mode() & 0o7777
        ));
    }
    if (ma.mtime(), ma.mtime_nsec()) != (mb.mtime(), mb.mtime_nsec()) {
        out.push(format!("{}: mtime differs", rel.display()));
    }
    if ta.is_symlink() {
        if fs::read_link(a).ok() != fs::read_link(b).ok() {
            out.push(format!("{}: symlink target differs", rel.display()));
        }
    } else if ta.is_file() {
        if ma.len() != mb.len() {
            out.push(format!(
                "{}: size {} vs {}",
                rel.display(),
                ma.len(),
                mb.len()
            ));
        } else if !same_contents(a, b) {
            out.push(format!("{}: contents differ", rel.display()));
        }
    } else if ta.is_dir() {
        let names = |p: &Path| -> Vec<std::ffi::OsString> {
            let mut v: Vec<_> = fs::read_dir(p)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default();
            v.sort();
            v
        };
        let (na, nb) = (names(a), names(b));
        if na != nb {
            out.push(format!("{}: entries differ", rel.display()));
            return;
        }
        for n in na {
            compare(&a.join(&n), &b.join(&n), &rel.join(&n), out, limit);
        }
    }
}

fn same_contents(a: &Path, b: &Path) -> bool {
    let (Ok(fa), Ok(fb)) = (File::open(a), File::open(b)) else {
        return false;
    };
    let (mut ra, mut rb) = (
        BufReader::with_capacity(1 << 20, fa),
        BufReader::with_capacity(1 << 20, fb),
    );
    let (mut ba, mut bb) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let Ok(n) = read_full(&mut ra, &mut ba) else {
            return false;
        };
        let Ok(m) = read_full(&mut rb, &mut bb) else {
            return false;
        };
        if n != m || ba[..n] != bb[..m] {
            return false;
        }
        if n == 0 {
            return true;
        }
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn every_kind_of_difference_is_reported() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a"), t.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("sub/f"), b"same").unwrap();
            std::os::unix::fs::symlink("x", d.join("l")).unwrap();
            let t0 = filetime::FileTime::from_unix_time(1_000, 0);
            filetime::set_file_mtime(d.join("sub/f"), t0).unwrap();
            filetime::set_symlink_file_times(d.join("l"), t0, t0).unwrap();
            filetime::set_file_mtime(d.join("sub"), t0).unwrap();
        }
        filetime::set_file_mtime(
            &b,
            filetime::FileTime::from_last_modification_time(&fs::metadata(&a).unwrap()),
        )
        .unwrap();
        assert!(
            diff_trees(&a, &b, 10).is_empty(),
            "{:?}",
            diff_trees(&a, &b, 10)
        );
        fs::write(b.join("sub/f"), b"diff").unwrap();
        filetime::set_file_mtime(
            b.join("sub/f"),
            filetime::FileTime::from_unix_time(1_000, 0),
        )
        .unwrap();
        assert_eq!(
            diff_trees(&a, &b, 10),
            vec!["sub/f: contents differ".to_string()]
        );
        fs::set_permissions(b.join("sub/f"), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(diff_trees(&a, &b, 10).iter().any(|d| d.contains("mode")));
        filetime::set_file_mtime(
            b.join("sub/f"),
            filetime::FileTime::from_unix_time(2_000, 0),
        )
        .unwrap();
        assert!(diff_trees(&a, &b, 10).iter().any(|d| d.contains("mtime")));
        fs::remove_file(b.join("l")).unwrap();
        std::os::unix::fs::symlink("y", b.join("l")).unwrap();
        assert!(
            diff_trees(&a, &b, 10)
                .iter()
                .any(|d| d.contains("symlink target"))
        );
        fs::write(b.join("extra"), b"").unwrap();
        assert!(
            diff_trees(&a, &b, 10)
                .iter()
                .any(|d| d.contains("entries differ"))
        );
    }
}
