//! Repository locks: who is using a repository, so that prune knows whose work it must
//! not pull the rug from under. The protocol is described in the crate docs
//! ("Concurrency"); this module only writes, refreshes, lists and removes lock objects.
//!
//! A lock is an object `locks/<owner>-<n>` holding [`LockInfo`]. The holder writes a new
//! object every [`REFRESH`] and then deletes the previous one (objects are never
//! rewritten in place: not every target can replace a file atomically), so an owner is
//! never without a lock object while it lives. A lock whose newest object is older than
//! [`STALE_AFTER`] belongs to a process that died; it counts for nothing and prune
//! removes it.

use super::Storage;
use crate::repo::{crypto::hex, now_ms};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

pub const REFRESH: Duration = Duration::from_secs(120);
pub const STALE_AFTER: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Backups, copies, restores, verifies: any number at once.
    Shared,
    /// Prune: one at a time (it never waits for shared holders; see the crate docs).
    Prune,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockInfo {
    pub owner: String,
    pub kind: LockKind,
    pub operation: String,
    pub host: String,
    pub pid: u32,
    pub time_ms: i64,
}

impl LockInfo {
    pub fn is_stale(&self, now: i64) -> bool {
        now - self.time_ms > STALE_AFTER.as_millis() as i64
    }
}

/// A held lock; [`Lock::release`] removes it (a dropped lock is removed by its refresh
/// task ending and, failing that, goes stale).
pub struct Lock {
    storage: Storage,
    info: LockInfo,
    current: Arc<tokio::sync::Mutex<String>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

async fn write_lock(storage: &Storage, info: &LockInfo, n: u64) -> Result<String> {
    let path = format!("locks/{}-{n:08}", info.owner);
    let bytes = serde_json::to_vec(info).map_err(|e| Error::Other(e.to_string()))?;
    storage.put(&path, bytes).await?;
    Ok(path)
}

impl Lock {
    /// Writes a lock object and starts refreshing it.
    pub async fn acquire(storage: &Storage, kind: LockKind, operation: &str) -> Result<Lock> {
        let info = LockInfo {
            owner: hex(&rand::random::<[u8; 12]>()),
            kind,
            operation: operation.to_string(),
            host: host(),
            pid: std::process::id(),
            time_ms: now_ms(),
        };
        let path = write_lock(storage, &info, 0).await?;
        let current = Arc::new(tokio::sync::Mutex::new(path));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = {
            let storage = storage.clone();
            let mut info = info.clone();
            let current = current.clone();
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    tokio::select! {
                        _ = &mut stopped => break,
                        _ = tokio::time::sleep(REFRESH) => {}
                    }
                    n += 1;
                    info.time_ms = now_ms();
                    // New object first, then remove the old one: never without a lock.
                    if let Ok(path) = write_lock(&storage, &info, n).await {
                        let mut cur = current.lock().await;
                        let old = std::mem::replace(&mut *cur, path);
                        let _ = storage.delete(&old).await;
                    }
                }
                let cur = current.lock().await;
                storage.delete_best_effort(&cur).await;
            })
        };
        Ok(Lock {
            storage: storage.clone(),
            info,
            current,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn owner(&self) -> &str {
        &self.info.owner
    }

    /// Stops refreshing and deletes the lock object.
    pub async fn release(mut self) {
        self.shutdown().await;
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        } else {
            let cur = self.current.lock().await;
            self.storage.delete_best_effort(&cur).await;
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // The refresh task deletes the lock object when told to stop.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Every lock object (path, info). Unreadable objects (being written, or damaged) are
/// reported as `None` so callers can decide to be careful.
pub async fn list(storage: &Storage) -> Result<Vec<(String, Option<LockInfo>)>> {
    let mut out = Vec::new();
    for path in storage.list("locks").await? {
        let info = match storage.get(&path).await {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            // Released between the listing and the read.
            Err(Error::Damaged(_)) => continue,
            Err(e) => return Err(e),
        };
        out.push((path, info));
    }
    Ok(out)
}
