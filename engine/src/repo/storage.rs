//! Where repository objects live, through Apache OpenDAL.
//!
//! Contract: `put` is atomic (readers see the whole object or none) and, in the local
//! backend, goes through a temp file and a rename; `get` of a missing object is
//! [`crate::Error::Storage`] with kind NotFound; `list` returns the object paths under a
//! prefix in no particular order. Objects are never overwritten with other content
//! (their names are content hashes), so a repeated `put` is harmless.

use crate::error::Context;
use crate::{Error, Result};
use opendal::Operator;

#[derive(Clone, Debug)]
pub struct Storage {
    op: Operator,
    /// The local directory where atomic writes stage their temp files.
    tmp_dir: std::path::PathBuf,
    /// How to name this repository in messages (no secrets).
    pub display: String,
}

impl Storage {
    /// Opens a repository location: a path, or `file:///path`.
    pub fn open(location: &str) -> Result<Self> {
        let path = if let Some(rest) = location.strip_prefix("file://") {
            rest.to_string()
        } else if location.contains("://") {
            return Err(Error::invalid(format!(
                "unsupported repository location {location:?}: use a path or file:///path (S3 and SFTP come later)"
            )));
        } else {
            location.to_string()
        };
        if path.is_empty() {
            return Err(Error::invalid("empty repository path"));
        }
        let abs = std::path::absolute(&path).map_err(|e| Error::invalid(format!("{path}: {e}")))?;
        let root = abs
            .to_str()
            .ok_or_else(|| Error::invalid("repository path is not UTF-8"))?;
        let tmp = format!("{}/.tmp", root.trim_end_matches('/'));
        let builder = opendal::services::Fs::default()
            .root(root)
            .atomic_write_dir(&tmp);
        let op = Operator::new(builder)
            .context(|| format!("opening {root}"))?
            .finish();
        Ok(Storage {
            op,
            tmp_dir: tmp.into(),
            display: root.to_string(),
        })
    }

    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        let result = self.op.write(path, bytes).await;
        if result.is_err() {
            // A failed write (disk full) leaves its staged temp file behind: remove it so
            // the space comes back. Temp files are named `<object name>.<random>`.
            let base = format!("{}.", path.rsplit('/').next().unwrap_or(path));
            if let Ok(entries) = std::fs::read_dir(&self.tmp_dir) {
                for e in entries.flatten() {
                    if e.file_name().to_string_lossy().starts_with(&base) {
                        let _ = std::fs::remove_file(e.path());
                    }
                }
            }
        }
        result
            .map(|_| ())
            .context(|| format!("writing {path} in {}", self.display))
    }

    pub async fn get(&self, path: &str) -> Result<Vec<u8>> {
        match self.op.read(path).await {
            Ok(buf) => Ok(buf.to_vec()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(Error::damaged(format!(
                "{path} is missing from {}",
                self.display
            ))),
            Err(e) => Err(e).context(|| format!("reading {path} in {}", self.display)),
        }
    }

    pub async fn get_range(&self, path: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        match self.op.read_with(path).range(offset..offset + len).await {
            Ok(buf) if buf.len() as u64 == len => Ok(buf.to_vec()),
            Ok(buf) => Err(Error::damaged(format!(
                "{path} in {} is truncated ({} of {len} bytes at offset {offset})",
                self.display,
                buf.len()
            ))),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(Error::damaged(format!(
                "{path} is missing from {}",
                self.display
            ))),
            Err(e) if e.kind() == opendal::ErrorKind::RangeNotSatisfied => {
                Err(Error::damaged(format!(
                    "{path} in {} is truncated (wanted {len} bytes at offset {offset})",
                    self.display
                )))
            }
            Err(e) => Err(e).context(|| format!("reading {path} in {}", self.display)),
        }
    }

    pub async fn exists(&self, path: &str) -> Result<bool> {
        self.op
            .exists(path)
            .await
            .context(|| format!("checking {path} in {}", self.display))
    }

    /// Object paths (relative to the root) under `dir/`, recursively.
    pub async fn list(&self, dir: &str) -> Result<Vec<String>> {
        let dir = format!("{}/", dir.trim_end_matches('/'));
        match self.op.list_with(&dir).recursive(true).await {
            Ok(entries) => Ok(entries
                .into_iter()
                .filter(|e| e.metadata().is_file())
                .map(|e| e.path().to_string())
                .collect()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).context(|| format!("listing {dir} in {}", self.display)),
        }
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, path: &str) -> Result<()> {
        self.op
            .delete(path)
            .await
            .context(|| format!("deleting {path} in {}", self.display))
    }

    pub async fn size(&self, path: &str) -> Result<u64> {
        match self.op.stat(path).await {
            Ok(m) => Ok(m.content_length()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Err(Error::damaged(format!(
                "{path} is missing from {}",
                self.display
            ))),
            Err(e) => Err(e).context(|| format!("checking {path} in {}", self.display)),
        }
    }
}
