//! One server key per history database (issue 29). The secrets sealed in the history
//! database, the session signatures and the audit chain are all made with keys derived
//! from `server.key`; a worker started with another key would start, report ready, and
//! then fail every job and *Test connection* ("a stored secret cannot be opened") and
//! reject every session the others issued. So the database records the key's
//! [`fingerprint`](super::keys::fingerprint) on first start, and a worker whose key does
//! not match refuses to start, saying which key it needs and how to bring it.
//!
//! A database set up before the fingerprint was recorded gets it on its first start
//! with this check, and only from a key that opens a secret stored in it or made its
//! newest audit entry (when it holds either).
//!
//! This guards against a misconfigured worker, not against whoever can write the
//! history database: such a writer can edit the recorded fingerprint and stop workers
//! from starting (they then say the database may have been edited), but gains no
//! secret, session or audit entry by it.

use super::audit;
use super::db::{Db, now_ms};
use super::keys::{self, AuditKeys, KEY_LEN};
use super::secrets::{Kind, SecretBox};
use anyhow::{Result, bail};
use engine::secret::Secret;
use std::path::Path;

/// The fingerprint this history database recorded, if any yet.
pub async fn recorded(db: &Db) -> Result<Option<String>> {
    let found = sqlx::query_scalar::<_, String>("SELECT fingerprint FROM server_key WHERE id = 1")
        .fetch_optional(&db.pool)
        .await?;
    match found {
        Some(f) if f.len() != 16 || !f.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => {
            bail!(
                "the server key fingerprint recorded in the history database (table \
                 server_key) is not one tablesafe writes: the database was edited outside \
                 tablesafe. Restore it from a backup, or, if you know this worker's key is \
                 the right one, delete that row and start again."
            )
        }
        found => Ok(found),
    }
}

/// Whether `key` is the one the database records: `None` before one is recorded.
pub async fn matches(db: &Db, key: &Secret<[u8; KEY_LEN]>) -> Result<Option<bool>> {
    Ok(recorded(db)
        .await?
        .map(|theirs| theirs == keys::fingerprint(key)))
}

/// Before a missing key file is created: refuses when the database already belongs to
/// a key (recorded, or shown by secrets sealed or audit entries made with one), since a
/// new key would open none of it. Nothing is created then.
pub async fn refuse_new_key(db: &Db, key_file: &Path) -> Result<()> {
    if key_file.exists() {
        return Ok(());
    }
    if let Some(theirs) = recorded(db).await? {
        bail!(
            "this history database was set up with a server key (fingerprint {theirs}) and \
             there is no key file at {}: copy the server.key of a worker already using this \
             database there (mode 0600), or start with --key-file naming a copy of it. No \
             new key was made: it would open none of the stored secrets.",
            key_file.display()
        );
    }
    if holds_keyed_data(db).await? {
        bail!(
            "this history database holds secrets or audit entries made with a server key, \
             and there is no key file at {}: copy the server.key it was set up with there \
             (mode 0600), or start with --key-file naming it. No new key was made: it \
             would open none of the stored secrets.",
            key_file.display()
        );
    }
    Ok(())
}

/// Checks `key` against the database's key, recording it on the first start.
pub async fn check(db: &Db, key: &Secret<[u8; KEY_LEN]>, key_file: &Path) -> Result<()> {
    let mine = keys::fingerprint(key);
    let theirs = match recorded(db).await? {
        Some(theirs) => theirs,
        None => {
            if !made_with(db, key).await? {
                bail!(
                    "the server key in {} (fingerprint {mine}) opens none of the secrets \
                     stored in this history database and did not make its newest audit \
                     entry: it is not the key they were made with. Start with the \
                     server.key this database was set up with (copy it to {} or pass \
                     --key-file naming it).",
                    key_file.display(),
                    key_file.display()
                );
            }
            sqlx::query(
                "INSERT INTO server_key (id, fingerprint, recorded_at) VALUES (1, $1, $2) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&mine)
            .bind(now_ms())
            .execute(&db.pool)
            .await?;
            // Two workers starting at once with different keys: one row wins, and the
            // other is refused below.
            recorded(db).await?.unwrap_or_default()
        }
    };
    if theirs != mine {
        bail!(
            "the server key in {} (fingerprint {mine}) is not the key this history database \
             was set up with (fingerprint {theirs}), or the database was edited; with this \
             key no stored secret, session or audit entry would open. Every worker on one \
             history database needs the same key: copy the server.key of a worker already \
             using this database to {} (mode 0600), or start with --key-file naming a copy \
             of it.",
            key_file.display(),
            key_file.display()
        );
    }
    tracing::info!(fingerprint = %mine, "server key matches the history database");
    Ok(())
}

/// Secrets sealed in the database, a few of each kind (more than one: a damaged value
/// proves nothing).
const SEALED: [(Kind, &str); 3] = [
    (
        Kind::SourceUrl,
        "SELECT sealed_url FROM sources ORDER BY id LIMIT 5",
    ),
    (
        Kind::RepositoryPassword,
        "SELECT sealed_password FROM targets WHERE sealed_password <> '' ORDER BY id LIMIT 5",
    ),
    (
        Kind::NotifyChannel,
        "SELECT sealed_config FROM notify_channels ORDER BY id LIMIT 5",
    ),
];

/// Whether the database holds anything made with a server key.
async fn holds_keyed_data(db: &Db) -> Result<bool> {
    for (_, sql) in SEALED {
        if !sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&db.pool)
            .await?
            .is_empty()
        {
            return Ok(true);
        }
    }
    let entries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log")
        .fetch_one(&db.pool)
        .await?;
    Ok(entries > 0)
}

/// Whether `key` made what the database holds: true when a stored secret opens with it
/// or its newest audit entry is a MAC under it, and when there is nothing to tell by
/// (a new database); false when there is, and none of it matches.
async fn made_with(db: &Db, key: &Secret<[u8; KEY_LEN]>) -> Result<bool> {
    let secrets = SecretBox::new(key);
    let mut evidence = false;
    for (kind, sql) in SEALED {
        for sealed in sqlx::query_scalar::<_, String>(sql)
            .fetch_all(&db.pool)
            .await?
        {
            // A value that is not even hex was damaged: it tells nothing of the key.
            if engine::repo::crypto::unhex(&sealed).is_none_or(|b| b.len() <= 24) {
                continue;
            }
            if secrets.open(kind, &sealed).is_ok() {
                return Ok(true);
            }
            evidence = true;
        }
    }
    match audit::newest_entry_made_with(db, &AuditKeys::new(key)).await? {
        Some(true) => Ok(true),
        Some(false) => Ok(false),
        None => Ok(!evidence),
    }
}
