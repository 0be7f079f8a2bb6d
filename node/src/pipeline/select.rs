//! Questions answered from a snapshot manifest alone: which entries a
//! partial restore takes (`--include`), what `ls` lists, what `find`
//! matches and what `diff` reports between two snapshots. No packet is read
//! here: the caller has the manifest already.
//!
//! `--include` and `find` take a path inside the snapshot (`home/docs`, an
//! entry and everything under it) or a gitignore-style pattern (`*.jpg`,
//! `home/**/report.pdf`), matched by the `ignore` crate as excludes are.

use std::collections::HashMap;

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::Serialize;

use super::manifest::{Entry, EntryKind, Manifest, path_hash};

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("{pattern:?} is not a valid path or pattern")]
    Pattern {
        pattern: String,
        #[source]
        source: ignore::Error,
    },
    #[error("nothing in the snapshot matches {0}")]
    NoMatch(String),
}

/// An entry's path as text (non-UTF-8 bytes shown as U+FFFD).
pub fn path_text(e: &Entry) -> String {
    String::from_utf8_lossy(&e.path).into_owned()
}

/// Paths and patterns naming entries of a snapshot.
pub struct Selector {
    literal: Vec<String>,
    patterns: Gitignore,
}

impl Selector {
    pub fn new(items: &[String]) -> Result<Selector, SelectError> {
        let mut builder = GitignoreBuilder::new("/");
        let mut literal = Vec::new();
        for item in items {
            let trimmed = item.trim_matches('/').to_string();
            builder
                .add_line(None, item)
                .map_err(|source| SelectError::Pattern {
                    pattern: item.clone(),
                    source,
                })?;
            literal.push(trimmed);
        }
        let patterns = builder.build().map_err(|source| SelectError::Pattern {
            pattern: items.join(" "),
            source,
        })?;
        Ok(Selector { literal, patterns })
    }

    /// Whether `path` is named, or lies under something named.
    pub fn matches(&self, path: &str, is_dir: bool) -> bool {
        if self.literal.iter().any(|l| {
            path == l
                || path
                    .strip_prefix(l.as_str())
                    .is_some_and(|r| r.starts_with('/'))
        }) {
            return true;
        }
        self.patterns
            .matched_path_or_any_parents(format!("/{path}"), is_dir)
            .is_ignore()
    }
}

/// Which entries of a manifest `include` names, with the directories above
/// them (so what is taken is a valid manifest over the same chunk table),
/// worked out as the entries pass in manifest order: a directory comes
/// before what it holds. Holds a bit an entry and a 16-byte hash a
/// directory, not the paths.
pub struct Wanting {
    selector: Selector,
    wanted: Vec<bool>,
    dirs: HashMap<u128, u32>,
    include: String,
}

impl Wanting {
    pub fn new(include: &[String]) -> Result<Wanting, SelectError> {
        Ok(Wanting {
            selector: Selector::new(include)?,
            wanted: Vec::new(),
            dirs: HashMap::new(),
            include: include.join(", "),
        })
    }

    /// The next entry, in manifest order.
    pub fn push(&mut self, e: &Entry) {
        let i = self.wanted.len() as u32;
        let is_dir = matches!(e.kind, EntryKind::Dir);
        let path: &[u8] = &e.path;
        if is_dir {
            self.dirs.insert(path_hash(path), i);
        }
        let wanted = self.selector.matches(&path_text(e), is_dir);
        self.wanted.push(wanted);
        if !wanted {
            return;
        }
        // Every directory above a wanted entry comes along.
        let mut cut = path.len();
        while let Some(slash) = path[..cut].iter().rposition(|b| *b == b'/') {
            if let Some(&parent) = self.dirs.get(&path_hash(&path[..slash]))
                && let Some(w) = self.wanted.get_mut(parent as usize)
            {
                *w = true;
            }
            cut = slash;
        }
    }

    /// A flag an entry: whether the restore takes it.
    pub fn finish(self) -> Result<Vec<bool>, SelectError> {
        if !self.wanted.iter().any(|w| *w) {
            return Err(SelectError::NoMatch(self.include));
        }
        Ok(self.wanted)
    }
}

/// The part of `manifest` that `include` names, with the directories above
/// it (so the result is a valid manifest over the same chunk table).
pub fn select(manifest: &Manifest, include: &[String]) -> Result<Manifest, SelectError> {
    let mut wanting = Wanting::new(include)?;
    for e in &manifest.entries {
        wanting.push(e);
    }
    let entries = manifest
        .entries
        .iter()
        .zip(wanting.finish()?)
        .filter(|(_, w)| *w)
        .map(|(e, _)| e.clone())
        .collect();
    Ok(Manifest {
        entries,
        ..manifest.clone()
    })
}

/// One line of `strew ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listed {
    pub path: String,
    /// `dir`, `file` or `symlink`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub mode: u32,
    pub size: u64,
    /// Unix seconds.
    pub mtime: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

fn listed(e: &Entry) -> Listed {
    let (kind, size, target) = match &e.kind {
        EntryKind::Dir => ("dir", 0, None),
        EntryKind::File { size, .. } => ("file", *size, None),
        EntryKind::Symlink { target } => (
            "symlink",
            target.len() as u64,
            Some(String::from_utf8_lossy(target).into_owned()),
        ),
    };
    Listed {
        path: path_text(e),
        kind,
        mode: e.mode,
        size,
        mtime: e.mtime_s,
        target,
    }
}

/// Entries at or under `under` (all when `None`), in manifest order, of
/// `entries` as they stream (only the answer is held).
pub fn list<E>(
    entries: impl IntoIterator<Item = Result<Entry, E>>,
    under: Option<&str>,
) -> Result<Vec<Listed>, E> {
    let under = under.map(|u| u.trim_matches('/')).filter(|u| !u.is_empty());
    let mut out = Vec::new();
    for e in entries {
        let l = listed(&e?);
        if under.is_none_or(|u| {
            l.path == u || l.path.strip_prefix(u).is_some_and(|r| r.starts_with('/'))
        }) {
            out.push(l);
        }
    }
    Ok(out)
}

/// What `find` matches: a path inside the snapshot or a gitignore-style
/// pattern.
pub struct Finder {
    gi: Gitignore,
    literal: String,
}

impl Finder {
    pub fn new(pattern: &str) -> Result<Finder, SelectError> {
        let mut builder = GitignoreBuilder::new("/");
        builder
            .add_line(None, pattern)
            .map_err(|source| SelectError::Pattern {
                pattern: pattern.into(),
                source,
            })?;
        let gi = builder.build().map_err(|source| SelectError::Pattern {
            pattern: pattern.into(),
            source,
        })?;
        Ok(Finder {
            gi,
            literal: pattern.trim_matches('/').to_string(),
        })
    }

    /// The entries of `entries` (as they stream) that match.
    pub fn find<E>(
        &self,
        entries: impl IntoIterator<Item = Result<Entry, E>>,
    ) -> Result<Vec<Listed>, E> {
        let mut out = Vec::new();
        for e in entries {
            let e = e?;
            let p = path_text(&e);
            if p == self.literal
                || self
                    .gi
                    .matched(format!("/{p}"), matches!(e.kind, EntryKind::Dir))
                    .is_ignore()
            {
                out.push(listed(&e));
            }
        }
        Ok(out)
    }
}

/// What changed from snapshot A to snapshot B, by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Same path, different kind, contents, mode, mtime or link target.
    pub changed: Vec<String>,
}

/// Compares two manifests entry by entry (contents by their DataIds), as
/// their entries stream: `a` is read twice, `b` once. What is held is 32
/// bytes an entry of A (a hash of its path and one of what it
/// compares: kind, contents, mode, mtime), and the answer; each list in
/// path order.
pub fn diff<E, A, B>(a: impl Fn() -> A, b: B) -> Result<Diff, E>
where
    A: Iterator<Item = Result<Entry, E>>,
    B: Iterator<Item = Result<Entry, E>>,
{
    let mut left: HashMap<u128, u128> = HashMap::new();
    for e in a() {
        let e = e?;
        left.insert(path_hash(&e.path), compared(&e));
    }
    let mut out = Diff::default();
    for e in b {
        let e = e?;
        match left.remove(&path_hash(&e.path)) {
            None => out.added.push(path_text(&e)),
            Some(was) if was != compared(&e) => out.changed.push(path_text(&e)),
            Some(_) => {}
        }
    }
    if !left.is_empty() {
        for e in a() {
            let e = e?;
            if left.contains_key(&path_hash(&e.path)) {
                out.removed.push(path_text(&e));
            }
        }
    }
    out.added.sort();
    out.removed.sort();
    out.changed.sort();
    Ok(out)
}

/// A hash of what a diff compares: kind, contents (size and DataId), link
/// target, mode, and mtime but a directory's: two entries of one path
/// differ exactly when these differ (but for a 2^-128 chance).
fn compared(e: &Entry) -> u128 {
    let mut h = blake3::Hasher::new();
    match &e.kind {
        EntryKind::Dir => {
            h.update(b"d");
        }
        EntryKind::File { size, data_id, .. } => {
            h.update(b"f");
            h.update(&size.to_le_bytes());
            h.update(&data_id.0);
        }
        EntryKind::Symlink { target } => {
            h.update(b"l");
            h.update(&(target.len() as u64).to_le_bytes());
            h.update(target);
        }
    }
    h.update(&e.mode.to_le_bytes());
    // A directory's mtime changes whenever its listing does: not a change of its own.
    if !matches!(e.kind, EntryKind::Dir) {
        h.update(&e.mtime_s.to_le_bytes());
        h.update(&e.mtime_ns.to_le_bytes());
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    u128::from_le_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::manifest::{ChunkRef, Extent};
    use serde_bytes::ByteBuf;
    use strew_coordinator::DataId;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: ByteBuf::from(path.as_bytes().to_vec()),
            mode: 0o644,
            mtime_s: 1,
            mtime_ns: 0,
            kind,
        }
    }

    fn file(id: u8, len: u32) -> EntryKind {
        EntryKind::File {
            size: u64::from(len),
            data_id: DataId([id; 32]),
            extents: vec![Extent {
                chunk: 0,
                offset: 0,
                len,
            }],
        }
    }

    fn manifest(entries: Vec<Entry>) -> Manifest {
        Manifest {
            version: super::super::manifest::MANIFEST_VERSION,
            name: "t".into(),
            time_ms: 0,
            roots: vec![],
            secret: [0; 32],
            chunks: vec![ChunkRef {
                key: crate::pipeline::ChunkKey([0; 32]),
                len: 100,
            }],
            entries,
        }
    }

    fn tree() -> Manifest {
        manifest(vec![
            entry("home", EntryKind::Dir),
            entry("home/docs", EntryKind::Dir),
            entry("home/docs/a.txt", file(1, 10)),
            entry("home/docs/b.jpg", file(2, 20)),
            entry("home/pics", EntryKind::Dir),
            entry("home/pics/c.jpg", file(3, 30)),
            entry("home/readme", file(4, 5)),
        ])
    }

    fn paths(m: &Manifest) -> Vec<String> {
        m.entries.iter().map(path_text).collect()
    }

    #[test]
    fn include_takes_what_it_names_and_the_directories_above() {
        let m = tree();
        let one = select(&m, &["home/docs/a.txt".into()]).unwrap();
        assert_eq!(paths(&one), ["home", "home/docs", "home/docs/a.txt"]);
        one.validate().unwrap();
        let jpgs = select(&m, &["*.jpg".into()]).unwrap();
        assert_eq!(
            paths(&jpgs),
            [
                "home",
                "home/docs",
                "home/docs/b.jpg",
                "home/pics",
                "home/pics/c.jpg"
            ]
        );
        let dir = select(&m, &["home/pics".into()]).unwrap();
        assert_eq!(paths(&dir), ["home", "home/pics", "home/pics/c.jpg"]);
        assert!(matches!(
            select(&m, &["nothing/here".into()]),
            Err(SelectError::NoMatch(_))
        ));
    }

    /// Entries as a manifest streams them.
    fn all(m: &Manifest) -> impl Iterator<Item = Result<Entry, std::convert::Infallible>> + '_ {
        m.entries.iter().cloned().map(Ok)
    }

    fn list(m: &Manifest, under: Option<&str>) -> Vec<Listed> {
        super::list(all(m), under).unwrap_or_default()
    }

    fn find(m: &Manifest, pattern: &str) -> Result<Vec<Listed>, SelectError> {
        Ok(Finder::new(pattern)?.find(all(m)).unwrap_or_default())
    }

    fn diff(a: &Manifest, b: &Manifest) -> Diff {
        super::diff(|| all(a), all(b)).unwrap_or_default()
    }

    /// What a diff compares, field by field: the hashes must agree with it.
    fn differs(a: &Entry, b: &Entry) -> bool {
        let kind = match (&a.kind, &b.kind) {
            (EntryKind::Dir, EntryKind::Dir) => false,
            (
                EntryKind::File {
                    size: sa,
                    data_id: da,
                    ..
                },
                EntryKind::File {
                    size: sb,
                    data_id: db,
                    ..
                },
            ) => sa != sb || da != db,
            (EntryKind::Symlink { target: ta }, EntryKind::Symlink { target: tb }) => ta != tb,
            _ => true,
        };
        // A directory's mtime changes whenever its listing does: not a change of its own.
        kind || a.mode != b.mode
            || (!matches!(a.kind, EntryKind::Dir)
                && (a.mtime_s, a.mtime_ns) != (b.mtime_s, b.mtime_ns))
    }

    proptest::proptest! {
        #[test]
        fn the_compared_hash_differs_exactly_when_the_fields_do(
            kinds in proptest::collection::vec((0u8..3, 0u64..3, 0u8..3, 0u32..2, 0i64..2, 0u32..2), 2)
        ) {
            let make = |(k, size, id, mode, s, ns): (u8, u64, u8, u32, i64, u32)| Entry {
                path: ByteBuf::from(b"p".to_vec()),
                mode,
                mtime_s: s,
                mtime_ns: ns,
                kind: match k {
                    0 => EntryKind::Dir,
                    1 => EntryKind::File { size, data_id: DataId([id; 32]), extents: Vec::new() },
                    _ => EntryKind::Symlink { target: ByteBuf::from(vec![id; size as usize]) },
                },
            };
            let (a, b) = (make(kinds[0]), make(kinds[1]));
            proptest::prop_assert_eq!(compared(&a) != compared(&b), differs(&a, &b));
        }
    }

    #[test]
    fn ls_find_and_diff_read_the_manifest() {
        let m = tree();
        let under: Vec<String> = list(&m, Some("home/docs"))
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(under, ["home/docs", "home/docs/a.txt", "home/docs/b.jpg"]);
        assert_eq!(list(&m, None).len(), 7);
        assert_eq!(list(&m, Some("home/docs/a.txt"))[0].size, 10);
        let found: Vec<String> = find(&m, "*.jpg")
            .unwrap()
            .into_iter()
            .map(|l| l.path)
            .collect();
        assert_eq!(found, ["home/docs/b.jpg", "home/pics/c.jpg"]);
        let mut b = tree();
        b.entries.retain(|e| path_text(e) != "home/readme");
        b.entries.push(entry("home/new", file(5, 1)));
        b.entries[2].kind = file(9, 10); // a.txt's contents changed
        b.entries[3].mode = 0o600; // b.jpg's mode changed
        let d = diff(&m, &b);
        assert_eq!(d.added, ["home/new"]);
        assert_eq!(d.removed, ["home/readme"]);
        assert_eq!(d.changed, ["home/docs/a.txt", "home/docs/b.jpg"]);
        assert_eq!(diff(&m, &m), Diff::default());
    }
}
