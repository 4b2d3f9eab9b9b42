//! The audit log's head, kept outside the history database.
//!
//! Someone who can write the history database (its owner, a stolen backup of it put
//! back) can delete the newest audit entries, or edit one and re-hash the chain the
//! way entries were hashed before the chain was keyed; the chain alone cannot show
//! either. So the server writes the chain's signed [`Head`] every few minutes to a file
//! beside the server key and into every target's storage (`audit-heads/`), and a check
//! compares the database against the newest head it can read. A head is written only
//! over a chain that still matches every head already written, so an edit is never
//! papered over by a newer head.
//!
//! What this proves: every entry up to the newest head is still there, unchanged. What
//! it does not: entries written after the newest head (minutes' worth) could still be
//! removed unseen, and someone holding the server key can forge anything.

use super::audit::{self, Checked, Head};
use super::db::{Db, now_ms};
use super::secrets::SecretBox;
use super::store;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where heads go in a target's storage; one object per head, never overwritten.
pub const DIR: &str = "audit-heads";
/// Heads kept per target (older ones are deleted after a newer one is written).
const KEEP: usize = 10;
/// A target that does not answer in this long is reported, not waited for.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The file beside the server key that holds the newest head.
pub fn local_file(key_file: &Path) -> PathBuf {
    key_file
        .parent()
        .unwrap_or(Path::new("."))
        .join("audit-head.json")
}

/// What one place held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// No head written there yet.
    Missing,
    /// The newest head there, and the chain still has everything it recorded.
    Matches(Head),
    /// The newest head there, and what in the chain no longer matches it.
    Contradicted(Head, String),
    /// Something that is not a head signed with this server's key.
    Forged(String),
    /// The place could not be read (a target that is down); says nothing either way.
    Unreadable(String),
}

/// A check of the audit log: the chain, then every head.
#[derive(Debug, Clone)]
pub struct Report {
    pub chain: Checked,
    /// (place, what it held): the local file first, then each target by name.
    pub heads: Vec<(String, Status)>,
}

impl Report {
    /// The chain is intact and matches every genuine head that could be read (objects
    /// that are not genuine heads are reported, not counted: anyone who can write a
    /// bucket could plant one).
    pub fn holds(&self) -> bool {
        self.chain.broken_at.is_none()
            && self
                .heads
                .iter()
                .all(|(_, s)| !matches!(s, Status::Contradicted(..)))
    }

    /// The newest head that matches, if any.
    pub fn newest_match(&self) -> Option<&Head> {
        self.heads
            .iter()
            .filter_map(|(_, s)| match s {
                Status::Matches(h) => Some(h),
                _ => None,
            })
            .max_by_key(|h| (h.entries, h.at))
    }

    /// One paragraph for a person: what holds, what does not, what to do.
    pub fn summary(&self) -> String {
        let mut out = match self.chain.broken_at {
            None => format!("The chain is intact: {} entries.", self.chain.entries),
            Some(id) => format!(
                "The chain is broken at entry {id}: the log was edited in the database (the {} entries before it are intact).",
                self.chain.entries
            ),
        };
        for (place, status) in &self.heads {
            match status {
                Status::Contradicted(h, why) => out.push_str(&format!(
                    " The head written to {place} at {} does not match: {why}.",
                    engine::capture::rfc3339(h.at)
                )),
                Status::Forged(why) => out.push_str(&format!(" Note, {place}: {why}.")),
                _ => {}
            }
        }
        if self.holds() {
            match self.newest_match() {
                Some(h) => out.push_str(&format!(
                    " Every entry up to the head signed at {} ({} entries) is there unchanged.",
                    engine::capture::rfc3339(h.at),
                    h.entries
                )),
                None => out.push_str(
                    " No signed head has been written yet, so deleting the newest entries would not be seen.",
                ),
            }
        }
        let unreadable: Vec<&str> = self
            .heads
            .iter()
            .filter(|(_, s)| matches!(s, Status::Unreadable(_)))
            .map(|(p, _)| p.as_str())
            .collect();
        if !unreadable.is_empty() {
            out.push_str(&format!(
                " Could not read the head in: {}.",
                unreadable.join(", ")
            ));
        }
        out
    }
}

/// What a place held: the newest genuine head among `objects`, and how many objects
/// were not genuine heads (another server's, or planted). Those are reported but do
/// not hide the genuine ones: junk in a bucket must not stop the anchoring.
fn newest(keys: &super::keys::AuditKeys, objects: Vec<Vec<u8>>) -> (Option<Head>, usize) {
    let mut best: Option<Head> = None;
    let mut bad = 0;
    for bytes in objects {
        let Ok(head) = Head::parse(keys, &bytes) else {
            bad += 1;
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|b| (head.entries, head.at) > (b.entries, b.at))
        {
            best = Some(head);
        }
    }
    (best, bad)
}

/// Heads read from a target: the newest [`READ`] objects by name, each at most
/// [`MAX_HEAD`] bytes (a planted giant is skipped, not loaded).
async fn read_target(storage: &engine::repo::Storage) -> Result<(Vec<Vec<u8>>, usize)> {
    let mut paths = storage.list(DIR).await?;
    paths.sort();
    let mut out = Vec::new();
    let mut skipped = 0;
    for path in paths.iter().rev().take(READ) {
        if storage.size(path).await? > MAX_HEAD {
            skipped += 1;
            continue;
        }
        out.push(storage.get(path).await?);
    }
    Ok((out, skipped))
}

/// Heads read per target, newest first by name.
const READ: usize = 20;
/// A head is a few hundred bytes.
const MAX_HEAD: u64 = 64 * 1024;

async fn status_of(db: &Db, found: Option<Head>) -> Result<Status> {
    Ok(match found {
        None => Status::Missing,
        Some(head) => match head.check(db).await? {
            Ok(()) => Status::Matches(head),
            Err(why) => Status::Contradicted(head, why),
        },
    })
}

/// Checks the chain in `db` and compares it with the heads in `local` and in every
/// target's storage.
pub async fn check(db: &Db, secrets: &SecretBox, local: &Path) -> Result<Report> {
    let keys = db
        .audit_keys
        .clone()
        .context("checking the audit log needs the server key")?;
    let chain = audit::verify_chain(db).await?;
    let mut heads = Vec::new();
    let place = local.display().to_string();
    match std::fs::read(local) {
        Ok(bytes) => {
            let (found, bad) = newest(&keys, vec![bytes]);
            if bad > 0 {
                heads.push((
                    place.clone(),
                    Status::Forged("its signature is not this server key's".into()),
                ));
            }
            heads.push((place, status_of(db, found).await?));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            heads.push((place, Status::Missing));
        }
        Err(e) => heads.push((place, Status::Unreadable(e.to_string()))),
    }
    for target in store::targets(db).await? {
        let place = format!("target {}", target.name);
        let read = async {
            let storage = super::target_storage(secrets, &target)?;
            read_target(&storage).await
        };
        match tokio::time::timeout(TIMEOUT, read).await {
            Err(_) => heads.push((place, Status::Unreadable("did not answer in 30 s".into()))),
            Ok(Err(e)) => heads.push((place, Status::Unreadable(format!("{e:#}")))),
            Ok(Ok((objects, skipped))) => {
                let (found, bad) = newest(&keys, objects);
                if bad + skipped > 0 {
                    heads.push((
                        place.clone(),
                        Status::Forged(format!(
                            "{} object(s) in {DIR}/ are not heads signed with this server key (another server's, or planted); ignored",
                            bad + skipped
                        )),
                    ));
                }
                heads.push((place, status_of(db, found).await?));
            }
        }
    }
    Ok(Report { chain, heads })
}

/// Writes the chain's current head to `local` and every target, unless nothing was
/// added since the newest head. Refuses (and writes nothing) when the chain is broken
/// or no longer matches a head already written: that evidence must stay.
pub async fn write(db: &Db, secrets: &SecretBox, local: &Path) -> Result<Option<Head>> {
    let keys = db
        .audit_keys
        .clone()
        .context("writing the audit head needs the server key")?;
    let report = check(db, secrets, local).await?;
    if !report.holds() {
        bail!(
            "the audit log was tampered with; no new head written: {}",
            report.summary()
        );
    }
    let everywhere = report
        .heads
        .iter()
        .filter(|(_, s)| !matches!(s, Status::Forged(_)))
        .all(|(_, s)| matches!(s, Status::Matches(h) if h.entries == report.chain.entries));
    if everywhere && !report.heads.is_empty() {
        return Ok(None);
    }
    let head = Head::of(&keys, &report.chain, now_ms());
    let bytes = head.to_bytes();
    write_local(local, &bytes)?;
    for target in store::targets(db).await? {
        let put = async {
            let storage = super::target_storage(secrets, &target)?;
            let name = format!("{DIR}/head-{:015}-{:012}.json", head.at, head.entries);
            storage.put(&name, bytes.clone()).await?;
            let mut old = storage.list(DIR).await?;
            old.sort();
            if old.len() > KEEP {
                for path in &old[..old.len() - KEEP] {
                    storage.delete_best_effort(path).await;
                }
            }
            anyhow::Ok(())
        };
        match tokio::time::timeout(TIMEOUT, put).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target = %target.name, error = %format!("{e:#}"), "could not write the audit head")
            }
            Err(_) => {
                tracing::warn!(target = %target.name, "could not write the audit head: no answer in 30 s")
            }
        }
    }
    // The server's own log is outside the database too.
    tracing::info!(
        entries = head.entries,
        last_id = head.last_id,
        last_hash = %head.last_hash,
        sig = %head.sig,
        "audit log head"
    );
    Ok(Some(head))
}

fn write_local(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
