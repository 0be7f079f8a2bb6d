//! What a backup leaves out: gitignore-style patterns (`--exclude`,
//! `--exclude-file`), a `.strewignore` file in any backed-up directory,
//! directories tagged as caches (`CACHEDIR.TAG`, `--exclude-caches`) and
//! other file systems (`--one-file-system`).
//!
//! Patterns are matched by the `ignore` crate's gitignore matcher: a pattern
//! without a `/` matches a name at any depth (`node_modules`, `*.tmp`), one
//! with a `/` is anchored at the backed-up root (`/build`, `src/gen/**`), a
//! trailing `/` matches directories only, `!` re-includes. A `.strewignore`
//! applies to its directory and everything under it, the deepest file that
//! has an opinion deciding. An excluded directory is skipped whole.
//!
//! Owns the rules and the decision for one path; it does not walk the tree
//! (the backup's reader does, asking [`Excluder::excluded`] for each entry).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use serde::{Deserialize, Serialize};

/// Name of the per-directory ignore file.
pub const IGNORE_FILE: &str = ".strewignore";
/// Name of the cache-directory tag (<https://bford.info/cachedir/>).
pub const CACHE_TAG: &str = "CACHEDIR.TAG";
/// What a valid `CACHEDIR.TAG` starts with.
const CACHE_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

/// The exclude options of a backup, as the user gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludeRules {
    /// Gitignore-style patterns (`--exclude`, repeatable).
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Files of patterns, one a line, `#` comments (`--exclude-file`); absolute paths.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Leave out directories holding a valid `CACHEDIR.TAG`.
    #[serde(default)]
    pub exclude_caches: bool,
    /// Do not cross into other file systems below each backed-up root.
    #[serde(default)]
    pub one_file_system: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ExcludeError {
    #[error("--exclude {pattern:?} is not a valid pattern")]
    Pattern {
        pattern: String,
        #[source]
        source: ignore::Error,
    },
    #[error("cannot read the exclude file {path}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a path is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Pattern,
    IgnoreFile,
    Cache,
    OtherFileSystem,
}

/// Decides, path by path, what a backup leaves out. The default leaves out
/// only what `.strewignore` files say.
#[derive(Default)]
pub struct Excluder {
    rules: ExcludeRules,
    /// The user's patterns, in their text form (re-rooted per backed-up root).
    lines: Vec<String>,
    /// Per backed-up root: its matcher and its device.
    roots: Vec<(PathBuf, Gitignore, u64)>,
    /// `.strewignore` matchers by directory (directories without one are absent).
    ignore_files: HashMap<PathBuf, Gitignore>,
}

impl Excluder {
    /// Reads the exclude files and checks every pattern.
    pub fn new(rules: &ExcludeRules) -> Result<Excluder, ExcludeError> {
        let mut lines: Vec<String> = rules.patterns.clone();
        for file in &rules.files {
            let text = std::fs::read_to_string(file).map_err(|source| ExcludeError::File {
                path: file.clone(),
                source,
            })?;
            lines.extend(
                text.lines()
                    .map(str::trim_end)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        // Check the patterns once, so a bad one is refused before any work.
        matcher(Path::new("/"), &lines)?;
        Ok(Excluder {
            rules: rules.clone(),
            lines,
            roots: Vec::new(),
            ignore_files: HashMap::new(),
        })
    }

    /// Starts a backed-up root: patterns anchored with `/` are relative to it.
    pub fn enter_root(&mut self, root: &Path, meta: &std::fs::Metadata) {
        let parent = root.parent().unwrap_or(root).to_path_buf();
        // Anchored at the root's parent: an anchored pattern reads as a path
        // inside the snapshot, which starts with the root's name (`/home/build`).
        let gi = matcher(&parent, &self.lines).unwrap_or_else(|_| Gitignore::empty());
        self.roots.push((root.to_path_buf(), gi, meta.dev()));
    }

    /// Reads `dir/.strewignore` if there is one (call when entering `dir`).
    pub fn enter_dir(&mut self, dir: &Path) -> Option<String> {
        let file = dir.join(IGNORE_FILE);
        if std::fs::symlink_metadata(&file).map_or(true, |m| !m.is_file()) {
            return None;
        }
        let mut builder = GitignoreBuilder::new(dir);
        let problem = builder.add(&file).map(|e| e.to_string());
        match builder.build() {
            Ok(gi) => {
                self.ignore_files.insert(dir.to_path_buf(), gi);
                problem
            }
            Err(e) => Some(e.to_string()),
        }
    }

    /// Whether `path` (below the root entered last, or the root itself) is left out, and why.
    pub fn excluded(&self, path: &Path, meta: &std::fs::Metadata) -> Option<Reason> {
        let is_dir = meta.is_dir();
        if let Some((root, gi, dev)) = self.roots.last() {
            if path != root && self.rules.one_file_system && meta.dev() != *dev {
                return Some(Reason::OtherFileSystem);
            }
            if gi.matched(path, is_dir).is_ignore() {
                return Some(Reason::Pattern);
            }
            // Each .strewignore from the deepest directory up: the first with an opinion decides.
            let mut dir = path.parent();
            while let Some(d) = dir {
                if let Some(gi) = self.ignore_files.get(d) {
                    match gi.matched(path, is_dir) {
                        Match::Ignore(_) => return Some(Reason::IgnoreFile),
                        Match::Whitelist(_) => break,
                        Match::None => {}
                    }
                }
                if d == root.as_path() {
                    break;
                }
                dir = d.parent();
            }
        }
        if is_dir && self.rules.exclude_caches && is_cache_dir(path) {
            return Some(Reason::Cache);
        }
        None
    }
}

/// A gitignore matcher rooted at `root` for `lines`.
fn matcher(root: &Path, lines: &[String]) -> Result<Gitignore, ExcludeError> {
    let mut builder = GitignoreBuilder::new(root);
    for line in lines {
        builder
            .add_line(None, line)
            .map_err(|source| ExcludeError::Pattern {
                pattern: line.clone(),
                source,
            })?;
    }
    builder.build().map_err(|source| ExcludeError::Pattern {
        pattern: lines.join(" "),
        source,
    })
}

/// Whether `dir` holds a `CACHEDIR.TAG` with the standard signature.
fn is_cache_dir(dir: &Path) -> bool {
    use std::io::Read;
    let Ok(mut f) = std::fs::File::open(dir.join(CACHE_TAG)) else {
        return false;
    };
    let mut head = [0u8; CACHE_SIGNATURE.len()];
    f.read_exact(&mut head).is_ok() && head == CACHE_SIGNATURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn check(ex: &Excluder, path: &Path) -> Option<Reason> {
        ex.excluded(path, &fs::symlink_metadata(path).unwrap())
    }

    #[test]
    fn patterns_ignore_files_and_cache_tags_decide() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("home");
        for d in [
            "src/node_modules/x",
            "build",
            "cache",
            "docs",
            "docs/drafts",
        ] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["a.tmp", "src/main.rs", "docs/keep.tmp", "docs/secret.txt"] {
            fs::write(root.join(f), b"x").unwrap();
        }
        fs::write(root.join("cache/CACHEDIR.TAG"), CACHE_SIGNATURE).unwrap();
        fs::write(
            root.join("docs/.strewignore"),
            "secret.txt\n!keep.tmp\ndrafts/\n",
        )
        .unwrap();
        let excludes = dir.path().join("excludes");
        fs::write(&excludes, "# comment\n/home/build\n").unwrap();
        let rules = ExcludeRules {
            patterns: vec!["node_modules".into(), "*.tmp".into()],
            files: vec![excludes],
            exclude_caches: true,
            one_file_system: true,
        };
        let mut ex = Excluder::new(&rules).unwrap();
        ex.enter_root(&root, &fs::metadata(&root).unwrap());
        ex.enter_dir(&root.join("docs"));
        assert_eq!(check(&ex, &root), None);
        assert_eq!(check(&ex, &root.join("a.tmp")), Some(Reason::Pattern));
        assert_eq!(
            check(&ex, &root.join("src/node_modules")),
            Some(Reason::Pattern)
        );
        assert_eq!(check(&ex, &root.join("build")), Some(Reason::Pattern));
        assert_eq!(check(&ex, &root.join("cache")), Some(Reason::Cache));
        assert_eq!(
            check(&ex, &root.join("docs/secret.txt")),
            Some(Reason::IgnoreFile)
        );
        assert_eq!(
            check(&ex, &root.join("docs/drafts")),
            Some(Reason::IgnoreFile)
        );
        assert_eq!(check(&ex, &root.join("src/main.rs")), None);
        // The user's `*.tmp` wins over a `.strewignore` re-include only where
        // the user's pattern is consulted first: patterns are global.
        assert_eq!(
            check(&ex, &root.join("docs/keep.tmp")),
            Some(Reason::Pattern)
        );
    }

    #[test]
    fn a_bad_pattern_or_a_missing_file_is_refused_up_front() {
        let bad = ExcludeRules {
            patterns: vec!["{a,b".into()],
            ..ExcludeRules::default()
        };
        assert!(matches!(
            Excluder::new(&bad),
            Err(ExcludeError::Pattern { .. })
        ));
        let missing = ExcludeRules {
            files: vec!["/nonexistent/strew-excludes".into()],
            ..ExcludeRules::default()
        };
        assert!(matches!(
            Excluder::new(&missing),
            Err(ExcludeError::File { .. })
        ));
    }
}
