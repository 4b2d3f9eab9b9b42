//! A local cache of immutable repository objects: snapshot manifests and index files,
//! as they are stored (sealed), so that listing a repository's snapshots or loading its
//! index reads each object from the target once, not on every operation.
//!
//! Why this is safe: these objects are written once and never modified (crate docs,
//! invariant 1); a manifest's name is the BLAKE3 of its bytes and an index file's is the
//! id of the pack it describes, and a deleted object is never re-created with other
//! content. The cache holds objects under those names only, so an entry can become
//! *stale* (its object deleted by a prune) but never *different*: callers list the
//! target first and read only what the listing names, exactly as without a cache, and a
//! backup that needs an index file to still exist asks the target (see
//! [`super::Repository::prepare_backup`]).
//!
//! Each entry is `tag ‖ sealed bytes`, the tag a BLAKE3 keyed by a key derived from the
//! repository's master key over the object's path and bytes. An entry that fails its tag
//! (damaged, truncated, or written by someone without the key) is deleted and the object
//! read again from the target; a manifest is also checked against its name, and every
//! entry is decrypted and authenticated like an object read from the target.
//!
//! Where: `<cache dir>/<repository id>/`, directories mode 0700. A cache directory that
//! another user owns or may write to is not used (the operation runs uncached, with a
//! warning on standard error): another user could not forge an entry without the key,
//! but could fill the disk or delete entries. The command line uses
//! `$XDG_CACHE_HOME/tablesafe` (`~/.cache/tablesafe`), the server `<data_dir>/cache`;
//! `--no-cache` turns it off.

use super::crypto::{Keys, hex};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

/// Which objects may be cached (immutable and named for good).
fn cacheable(object: &str) -> bool {
    let mut parts = object.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some("snapshots" | "index"), Some(name), None)
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
    )
}

static DEFAULT_DIR: RwLock<Option<PathBuf>> = RwLock::new(None);

/// Sets the cache directory repositories opened from now on use (`None`: no cache).
/// The command line and the server call this once at start; the library default is no
/// cache.
pub fn set_default_dir(dir: Option<PathBuf>) {
    *DEFAULT_DIR.write().unwrap_or_else(|e| e.into_inner()) = dir;
}

pub fn default_dir() -> Option<PathBuf> {
    DEFAULT_DIR
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The command line's cache directory: `$XDG_CACHE_HOME/tablesafe`, else
/// `$HOME/.cache/tablesafe`.
pub fn user_cache_dir() -> Option<PathBuf> {
    let xdg = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    xdg.or_else(|| {
        std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .map(|h| PathBuf::from(h).join(".cache"))
    })
    .map(|p| p.join("tablesafe"))
}

/// The cache of one repository.
#[derive(Debug)]
pub struct ObjectCache {
    dir: PathBuf,
    tag_key: [u8; 32],
}

/// Whether `dir` is a directory only this process's user may write to.
#[cfg(unix)]
fn private(dir: &Path, mode_mask: u32) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(false);
    }
    // A file created now belongs to this process's user.
    let probe = tempfile::NamedTempFile::new_in(dir)?;
    let me = probe.as_file().metadata()?.uid();
    Ok(meta.uid() == me && meta.mode() & mode_mask == 0)
}

#[cfg(not(unix))]
fn private(dir: &Path, _mode_mask: u32) -> std::io::Result<bool> {
    Ok(std::fs::symlink_metadata(dir)?.is_dir())
}

fn create_private(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

impl ObjectCache {
    /// The cache of repository `repo_id` under `root`, created if needed; `Err` with
    /// the reason when the place is not private to this user.
    pub fn open(root: &Path, repo_id: &str, keys: &Keys) -> Result<ObjectCache, String> {
        if repo_id.is_empty() || !repo_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("repository id {repo_id:?} is not a cache name"));
        }
        let dir = root.join(repo_id);
        create_private(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // The root may be shared with other repositories but not writable by others;
        // the repository's own directory is this user's alone.
        let ok = private(root, 0o022).and_then(|a| Ok(a && private(&dir, 0o077)?));
        match ok {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "{} is not a directory only this user can write to",
                    dir.display()
                ));
            }
            Err(e) => return Err(format!("cannot use {}: {e}", dir.display())),
        }
        for sub in ["snapshots", "index"] {
            create_private(&dir.join(sub))
                .map_err(|e| format!("cannot create {}: {e}", dir.join(sub).display()))?;
        }
        Ok(ObjectCache {
            dir,
            tag_key: keys.chunk_id(b"tablesafe local cache tag key v1"),
        })
    }

    /// The default cache of a repository ([`set_default_dir`]), if any and usable.
    pub fn default_for(repo_id: &str, keys: &Keys) -> Option<ObjectCache> {
        let root = default_dir()?;
        match ObjectCache::open(&root, repo_id, keys) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("warning: running without the local cache: {e}");
                None
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn tag(&self, object: &str, sealed: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new_keyed(&self.tag_key);
        h.update(&(object.len() as u64).to_le_bytes());
        h.update(object.as_bytes());
        h.update(sealed);
        *h.finalize().as_bytes()
    }

    fn path(&self, object: &str) -> PathBuf {
        self.dir.join(object)
    }

    /// The sealed bytes of `object`, if cached and intact. An entry that fails its tag
    /// is deleted (the caller then reads the target).
    pub fn get(&self, object: &str) -> Option<Vec<u8>> {
        if !cacheable(object) {
            return None;
        }
        let path = self.path(object);
        let mut bytes = std::fs::read(&path).ok()?;
        if bytes.len() >= 32 && bytes[..32] == self.tag(object, &bytes[32..]) {
            bytes.drain(..32);
            Some(bytes)
        } else {
            let _ = std::fs::remove_file(&path);
            None
        }
    }

    /// Stores an object read from (or written to) the target. Best effort: a cache that
    /// cannot be written only makes the next read go to the target.
    pub fn put(&self, object: &str, sealed: &[u8]) {
        if !cacheable(object) {
            return;
        }
        let path = self.path(object);
        let Some(parent) = path.parent() else { return };
        let Ok(mut tmp) = tempfile::NamedTempFile::new_in(parent) else {
            return;
        };
        let mut data = Vec::with_capacity(32 + sealed.len());
        data.extend_from_slice(&self.tag(object, sealed));
        data.extend_from_slice(sealed);
        if std::io::Write::write_all(&mut tmp, &data).is_ok() {
            let _ = tmp.persist(&path);
        }
    }

    /// Forgets an object (deleted from the target, or found damaged).
    pub fn remove(&self, object: &str) {
        if cacheable(object) {
            let _ = std::fs::remove_file(self.path(object));
        }
    }

    /// Deletes the entries of objects the target no longer lists (`listed`: the names
    /// under `dir`, e.g. `snapshots`): keeps the cache as small as the repository.
    pub fn retain(&self, dir: &str, listed: &std::collections::HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(self.dir.join(dir)) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !listed.contains(&name) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// The name of a source's hint directory (`hints/<this>`): a keyed hash of its URL, so
/// the names say nothing about the sources without the key.
pub fn hint_name(keys: &Keys, source_url: &str) -> String {
    let mut text = b"tablesafe source hint v1\0".to_vec();
    text.extend_from_slice(source_url.as_bytes());
    hex(&keys.chunk_id(&text)[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u8) -> Keys {
        Keys::from_master(&crate::secret::Secret::new([n; 32]), true)
    }

    #[test]
    fn only_content_named_objects_are_cached() {
        let h = "ab".repeat(32);
        assert!(cacheable(&format!("snapshots/{h}")));
        assert!(cacheable(&format!("index/{h}")));
        assert!(!cacheable(&format!("locks/{h}")));
        assert!(!cacheable("snapshots/../config"));
        assert!(!cacheable(&format!("index/{h}/x")));
    }

    #[test]
    fn an_entry_tampered_with_or_written_with_another_key_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let c = ObjectCache::open(root.path(), "0123abcd", &keys(1)).unwrap();
        let name = format!("snapshots/{}", "cd".repeat(32));
        c.put(&name, b"sealed bytes");
        assert_eq!(c.get(&name).as_deref(), Some(&b"sealed bytes"[..]));
        // Flip one byte of the stored object.
        let path = c.dir().join(&name);
        let mut raw = std::fs::read(&path).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        std::fs::write(&path, raw).unwrap();
        assert_eq!(c.get(&name), None);
        assert!(!path.exists(), "a damaged entry is deleted");
        // Same repository id, another key: its entries are not believed.
        c.put(&name, b"sealed bytes");
        let other = ObjectCache::open(root.path(), "0123abcd", &keys(2)).unwrap();
        assert_eq!(other.get(&name), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_cache_directory_others_can_write_to_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = ObjectCache::open(root.path(), "0123abcd", &keys(1)).unwrap_err();
        assert!(e.contains("only this user"), "{e}");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(ObjectCache::open(root.path(), "0123abcd", &keys(1)).is_ok());
        let dir = root.path().join("0123abcd");
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}
