//! The audit log: append-only and hash-chained.
//!
//! Each entry's `hash` is BLAKE3 over the previous entry's hash and every field of the
//! entry (length-prefixed), so changing, removing or reordering an entry breaks every
//! hash after it, which [`verify_chain`] finds. `prev_hash` is UNIQUE: two writers
//! racing to extend the same entry cannot both succeed; the loser re-reads and retries.
//! (A rewrite of the whole chain by someone with write access to the database is not
//! detectable from inside it; export the latest hash elsewhere to anchor it.)

use super::db::{Db, now_ms};
use crate::api::history::Outcome;
use anyhow::{Result, bail};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One thing that happened.
#[derive(Debug, Clone)]
pub struct Event {
    pub user_id: Option<i64>,
    pub username: String,
    pub address: String,
    /// What was done: `login`, `source.add`, `job.cancel`, …
    pub action: String,
    /// What it was done to: `source shop`, `job 17`, …
    pub target: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Row {
    pub id: i64,
    pub at: i64,
    pub user_id: Option<i64>,
    pub username: String,
    pub address: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

pub const COLUMNS: &str =
    "id, at, user_id, username, address, action, target, outcome, detail, prev_hash, hash";

fn entry_hash(prev: &str, at: i64, e: &Event) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"tablesafe audit v1");
    let uid = e.user_id.map(|i| i.to_string()).unwrap_or_default();
    let at = at.to_string();
    for field in [
        prev,
        &at,
        &uid,
        &e.username,
        &e.address,
        &e.action,
        &e.target,
        e.outcome.as_str(),
        &e.detail,
    ] {
        h.update(&(field.len() as u64).to_le_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// Appends `event`; retries when another writer extended the chain first.
pub async fn append(db: &Db, event: &Event) -> Result<()> {
    for _ in 0..50 {
        let prev: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&db.pool)
                .await?;
        let prev = prev.unwrap_or_else(|| GENESIS.to_string());
        let at = now_ms();
        let hash = entry_hash(&prev, at, event);
        let inserted = sqlx::query(
            "INSERT INTO audit_log (at, user_id, username, address, action, target, outcome, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(at)
        .bind(event.user_id)
        .bind(&event.username)
        .bind(&event.address)
        .bind(&event.action)
        .bind(&event.target)
        .bind(event.outcome.as_str())
        .bind(&event.detail)
        .bind(&prev)
        .bind(&hash)
        .execute(&db.pool)
        .await;
        match inserted {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("could not append to the audit log: too much contention")
}

/// Walks the chain from the start. `Ok(None)`: intact; `Ok(Some(id))`: the first entry
/// whose hash or link does not match.
pub async fn verify_chain(db: &Db) -> Result<Option<i64>> {
    let mut prev = GENESIS.to_string();
    let mut after = 0i64;
    loop {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000"
        ))
        .bind(after)
        .fetch_all(&db.pool)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        for r in rows {
            // A word no writer uses is a change made outside tablesafe.
            let Some(outcome) = Outcome::parse(&r.outcome) else {
                return Ok(Some(r.id));
            };
            let e = Event {
                user_id: r.user_id,
                username: r.username.clone(),
                address: r.address.clone(),
                action: r.action.clone(),
                target: r.target.clone(),
                outcome,
                detail: r.detail.clone(),
            };
            if r.prev_hash != prev || entry_hash(&prev, r.at, &e) != r.hash {
                return Ok(Some(r.id));
            }
            prev = r.hash;
            after = r.id;
        }
    }
}

/// Entries newest first: user name and action by prefix, outcome exactly (empty = any),
/// `id < before`, at most `limit`.
pub async fn search(
    db: &Db,
    user: &str,
    action: &str,
    outcome: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Row>> {
    let prefix = |s: &str| {
        let clean: String = s
            .trim()
            .chars()
            .filter(|c| !matches!(c, '%' | '_'))
            .take(64)
            .collect();
        format!("{clean}%")
    };
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE id < $1 AND username LIKE $2 AND action LIKE $3 AND ($4 = '' OR outcome = $4) ORDER BY id DESC LIMIT $5"
    ))
    .bind(before.unwrap_or(i64::MAX))
    .bind(prefix(user))
    .bind(prefix(action))
    .bind(outcome.trim())
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

/// Every entry about one thing (`target` exactly), oldest first: a restore request's
/// history, say. At most 1000.
pub async fn for_target(db: &Db, target: &str) -> Result<Vec<Row>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_log WHERE target = $1 ORDER BY id LIMIT 1000"
    ))
    .bind(target)
    .fetch_all(&db.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use engine::secret::Secret;

    /// A changed outcome breaks the chain at that entry, whether the new word is one
    /// tablesafe writes or not.
    #[tokio::test]
    async fn a_changed_outcome_is_found_at_its_entry() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::db::sqlite_url(dir.path()).unwrap();
        let db = Db::open(&Secret::new(url)).await.unwrap();
        for (action, outcome) in [("login", Outcome::Ok), ("source.add", Outcome::Denied)] {
            let event = Event {
                user_id: None,
                username: "ann".into(),
                address: "127.0.0.1".into(),
                action: action.into(),
                target: String::new(),
                outcome,
                detail: String::new(),
            };
            append(&db, &event).await.unwrap();
        }
        assert_eq!(verify_chain(&db).await.unwrap(), None);
        let second: i64 = sqlx::query_scalar("SELECT MAX(id) FROM audit_log")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        for word in ["ok", "maybe"] {
            sqlx::query("UPDATE audit_log SET outcome = $1 WHERE id = $2")
                .bind(word)
                .bind(second)
                .execute(&db.pool)
                .await
                .unwrap();
            assert_eq!(verify_chain(&db).await.unwrap(), Some(second), "{word}");
        }
    }
}
