//! The console's own files — its data directory (history database, server key), the
//! key file's directory and a SQLite history database elsewhere — which no SQLite
//! source or restore destination may point into: backing one up would hand the sealed
//! secrets and the audit log to whoever may restore it, and restoring into one would
//! rewrite them.

use std::path::{Path, PathBuf};

/// Directories and files a SQLite source or destination may not resolve into.
#[derive(Debug, Clone, Default)]
pub struct Protected {
    /// Canonical directories: nothing inside them.
    dirs: Vec<PathBuf>,
    /// Canonical files (with their `-wal`, `-shm` and `-journal` companions).
    files: Vec<PathBuf>,
    /// Where SQLite databases may be, when an admin said (`--sqlite-dirs`); empty:
    /// anywhere but the above.
    allowed: Vec<PathBuf>,
}

impl Protected {
    /// `dirs` and `files` as given; those that do not exist yet are taken as written
    /// (made absolute).
    pub fn new(dirs: &[&Path], files: &[&Path]) -> Protected {
        Protected {
            dirs: dirs.iter().map(|d| resolve(d)).collect(),
            files: files.iter().map(|f| resolve(f)).collect(),
            allowed: Vec::new(),
        }
    }

    /// The protected file or directory holding the same file (device and inode) as
    /// `path`, if `path` exists: a hard link has no path in common with what it links.
    fn hard_link_to(&self, path: &Path) -> Option<&Path> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        let same = |other: &Path| {
            std::fs::metadata(other).is_ok_and(|o| o.dev() == m.dev() && o.ino() == m.ino())
        };
        if let Some(f) = self.files.iter().find(|f| same(f)) {
            return Some(f);
        }
        self.dirs.iter().map(PathBuf::as_path).find(|d| {
            std::fs::read_dir(d).is_ok_and(|entries| {
                entries
                    .flatten()
                    .any(|e| e.file_type().is_ok_and(|t| t.is_file()) && same(&e.path()))
            })
        })
    }

    /// Confines SQLite sources and destinations to `dirs` (and below).
    pub fn allowing_only(mut self, dirs: &[PathBuf]) -> Protected {
        self.allowed = dirs.iter().map(|d| resolve(d)).collect();
        self
    }

    /// The directories SQLite databases are confined to (empty: not confined).
    pub fn allowed(&self) -> &[PathBuf] {
        &self.allowed
    }

    /// Whether `path` (resolved as [`Self::contains`] does) is outside the directories an
    /// admin allowed; never when none were set.
    pub fn outside_allowed(&self, path: &Path) -> bool {
        if self.allowed.is_empty() {
            return false;
        }
        let p = resolve(path);
        !self.allowed.iter().any(|d| p.starts_with(d))
    }

    /// The protected place `path` resolves into (symlinks followed, `..` resolved),
    /// if any; or whose file it is under another name (a hard link).
    pub fn contains(&self, path: &Path) -> Option<&Path> {
        let p = resolve(path);
        if let Some(d) = self.dirs.iter().find(|d| p.starts_with(d)) {
            return Some(d);
        }
        if let Some(place) = self.hard_link_to(&p) {
            return Some(place);
        }
        let name = p.to_string_lossy();
        self.files
            .iter()
            .find(|f| {
                let f = f.to_string_lossy();
                name == f
                    || ["-wal", "-shm", "-journal"]
                        .iter()
                        .any(|s| name == format!("{f}{s}"))
            })
            .map(PathBuf::as_path)
    }
}

/// `path` made absolute, symlinks resolved and `..` taken in order (the engine's rule
/// for which file a SQLite URL names).
fn resolve(path: &Path) -> PathBuf {
    engine::source::identity::resolve_path(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_into_the_console_data_are_found_through_links_and_dots() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("history.db"), b"").unwrap();
        let elsewhere = dir.path().join("history-elsewhere.db");
        let p = Protected::new(&[&data], &[&elsewhere]);
        let link = dir.path().join("innocent");
        std::os::unix::fs::symlink(&data, &link).unwrap();
        assert!(p.contains(&data.join("history.db")).is_some());
        assert!(
            p.contains(&link.join("history.db")).is_some(),
            "through a symlink"
        );
        assert!(
            p.contains(&dir.path().join("x/../data/new.db")).is_some(),
            "through .."
        );
        assert!(
            p.contains(&data.join("not-yet/deeper.db")).is_some(),
            "a file to be made"
        );
        assert!(
            p.contains(&PathBuf::from(format!("{}-wal", elsewhere.display())))
                .is_some()
        );
        assert!(p.contains(&dir.path().join("app.db")).is_none());
    }

    #[test]
    fn allowed_directories_confine_sqlite_paths_through_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let ok = dir.path().join("databases");
        std::fs::create_dir(&ok).unwrap();
        let open = Protected::new(&[], &[]);
        assert!(
            !open.outside_allowed(Path::new("/etc/passwd")),
            "no list: anywhere"
        );
        let p = Protected::new(&[], &[]).allowing_only(std::slice::from_ref(&ok));
        assert!(!p.outside_allowed(&ok.join("app.db")));
        assert!(!p.outside_allowed(&ok.join("new/app.db")));
        assert!(p.outside_allowed(Path::new("/etc/passwd")));
        assert!(p.outside_allowed(&ok.join("../elsewhere.db")));
        let link = ok.join("escape");
        std::os::unix::fs::symlink("/etc", &link).unwrap();
        assert!(
            p.outside_allowed(&link.join("passwd")),
            "a symlink out of the list"
        );
    }

    #[test]
    fn a_hard_link_to_a_protected_file_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("history.db"), b"x").unwrap();
        let link = dir.path().join("innocent.db");
        std::fs::hard_link(data.join("history.db"), &link).unwrap();
        let p = Protected::new(&[data.as_path()], &[]);
        assert!(p.contains(&link).is_some());
        std::fs::write(dir.path().join("other.db"), b"x").unwrap();
        assert!(p.contains(&dir.path().join("other.db")).is_none());
    }
}
