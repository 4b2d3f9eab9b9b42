//! The audit log: append-only and hash-chained.
//!
//! Each entry's `hash` is a MAC (BLAKE3 in keyed mode, with a key derived from the
//! server key; see `keys::AuditKeys`) over the previous entry's hash and every field of
//! the entry (length-prefixed), so changing, removing or reordering an entry breaks
//! every hash after it, which [`verify_chain`] finds — and someone who can write the
//! history database but does not hold the server key cannot compute new hashes for a
//! rewritten chain. `prev_hash` is UNIQUE: two writers racing to extend the same entry
//! cannot both succeed; the loser re-reads and retries. Triggers refuse UPDATE and
//! DELETE on the table (migration 0016), against mistakes; the database's owner can
//! drop them, which is what the chain and the head are for.
//!
//! Entries written before the chain was keyed (the "v1" hash, unkeyed BLAKE3) stay
//! valid, but only before the first keyed entry. What a chain check alone cannot see
//! is the newest entries being deleted, or the whole chain being re-hashed the v1 way:
//! for that, [`Head`] — the count and last hash, signed — is written outside the
//! database (`ssr::anchor`), and a later check compares the database against it.

use super::db::{Db, now_ms};
use super::keys::AuditKeys;
use crate::model::Outcome;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

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

/// An entry's hash: keyed (v2) with `key`, else the unkeyed v1 hash of entries written
/// before the chain was keyed.
fn entry_hash(key: Option<&[u8; 32]>, prev: &str, at: i64, e: &Event) -> String {
    let mut h = match key {
        Some(key) => {
            let mut h = blake3::Hasher::new_keyed(key);
            h.update(b"tablesafe audit v2");
            h
        }
        None => {
            let mut h = blake3::Hasher::new();
            h.update(b"tablesafe audit v1");
            h
        }
    };
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

fn keys(db: &Db) -> Result<&AuditKeys> {
    db.audit_keys
        .as_deref()
        .context("the audit log is written and checked with the server key; open the history database with it")
}

/// Appends `event`; retries when another writer extended the chain first.
pub async fn append(db: &Db, event: &Event) -> Result<()> {
    let key = keys(db)?.entry.expose();
    for _ in 0..50 {
        let prev: Option<String> =
            sqlx::query_scalar("SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&db.pool)
                .await?;
        let prev = prev.unwrap_or_else(|| GENESIS.to_string());
        let at = now_ms();
        let hash = entry_hash(Some(key), &prev, at, event);
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

/// What walking the chain found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The first entry whose hash or link does not match; `None`: intact.
    pub broken_at: Option<i64>,
    /// Entries that matched (all of them when intact).
    pub entries: i64,
    /// Of those, entries from before the chain was keyed.
    pub legacy: i64,
    /// The last matching entry's id and hash.
    pub last: Option<(i64, String)>,
}

/// Walks the chain from the start, with the keys of `db` (see [`Checked`]). An unkeyed
/// (v1) entry is accepted only before the first keyed one.
pub async fn verify_chain(db: &Db) -> Result<Checked> {
    let key = keys(db)?.entry.expose();
    let mut prev = GENESIS.to_string();
    // From the very first id: a row written with id 0 or below must be walked too.
    let mut after = i64::MIN;
    let mut checked = Checked {
        broken_at: None,
        entries: 0,
        legacy: 0,
        last: None,
    };
    let mut keyed_seen = false;
    loop {
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE id > $1 ORDER BY id LIMIT 1000"
        ))
        .bind(after)
        .fetch_all(&db.pool)
        .await?;
        if rows.is_empty() {
            return Ok(checked);
        }
        for r in rows {
            let broken = Checked {
                broken_at: Some(r.id),
                ..checked.clone()
            };
            // A word no writer uses is a change made outside tablesafe.
            let Some(e) = event_of(&r) else {
                return Ok(broken);
            };
            if r.prev_hash != prev {
                return Ok(broken);
            }
            if same_hash(&entry_hash(Some(key), &prev, r.at, &e), &r.hash) {
                keyed_seen = true;
            } else if !keyed_seen && same_hash(&entry_hash(None, &prev, r.at, &e), &r.hash) {
                checked.legacy += 1;
            } else {
                return Ok(broken);
            }
            checked.entries += 1;
            checked.last = Some((r.id, r.hash.clone()));
            prev = r.hash;
            after = r.id;
        }
    }
}

/// The event an entry records, `None` when its outcome is a word no writer uses.
fn event_of(r: &Row) -> Option<Event> {
    Some(Event {
        user_id: r.user_id,
        username: r.username.clone(),
        address: r.address.clone(),
        action: r.action.clone(),
        target: r.target.clone(),
        outcome: Outcome::parse(&r.outcome)?,
        detail: r.detail.clone(),
    })
}

/// Whether the newest entry of the log is a MAC under `keys`: `None` when it cannot
/// tell (no entry, one from before the chain was keyed, or one no writer made).
pub async fn newest_entry_made_with(db: &Db, keys: &AuditKeys) -> Result<Option<bool>> {
    let newest: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_log ORDER BY id DESC LIMIT 1"
    ))
    .fetch_optional(&db.pool)
    .await?;
    let Some((r, e)) = newest.and_then(|r| event_of(&r).map(|e| (r, e))) else {
        return Ok(None);
    };
    if same_hash(
        &entry_hash(Some(keys.entry.expose()), &r.prev_hash, r.at, &e),
        &r.hash,
    ) {
        Ok(Some(true))
    } else if same_hash(&entry_hash(None, &r.prev_hash, r.at, &e), &r.hash) {
        Ok(None)
    } else {
        Ok(Some(false))
    }
}

/// Compares two hex hashes in constant time (a stored hash is not secret, but a MAC
/// comparison that leaks timing is a bad habit to keep).
fn same_hash(a: &str, b: &str) -> bool {
    match (blake3::Hash::from_hex(a), blake3::Hash::from_hex(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The chain's head: how many entries it had and the last one's id and hash, at a
/// time, signed with the server's audit head key. Written outside the history database
/// (`ssr::anchor`): deleting entries up to the head, or rewriting any, no longer
/// matches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub entries: i64,
    pub last_id: i64,
    pub last_hash: String,
    pub at: i64,
    pub sig: String,
}

impl Head {
    fn mac(keys: &AuditKeys, entries: i64, last_id: i64, last_hash: &str, at: i64) -> String {
        let mut h = blake3::Hasher::new_keyed(keys.head.expose());
        h.update(
            format!("tablesafe audit head v1\n{entries}\n{last_id}\n{last_hash}\n{at}").as_bytes(),
        );
        h.finalize().to_hex().to_string()
    }

    /// The signed head of a chain that [`verify_chain`] found intact.
    pub fn of(keys: &AuditKeys, checked: &Checked, at: i64) -> Head {
        let (last_id, last_hash) = checked.last.clone().unwrap_or((0, GENESIS.to_string()));
        Head {
            entries: checked.entries,
            sig: Self::mac(keys, checked.entries, last_id, &last_hash, at),
            last_id,
            last_hash,
            at,
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// A head read back; refused unless its signature is the server's.
    pub fn parse(keys: &AuditKeys, bytes: &[u8]) -> Result<Head> {
        let head: Head = serde_json::from_slice(bytes).context("not an audit head")?;
        let mac = Self::mac(keys, head.entries, head.last_id, &head.last_hash, head.at);
        if !same_hash(&mac, &head.sig) {
            bail!("its signature is not this server key's: forged, or written by another server");
        }
        Ok(head)
    }

    /// Whether the chain in `db` still has everything this head recorded: the entry
    /// `last_id` with `last_hash`, and exactly `entries` entries up to it. `Err` says
    /// what no longer matches.
    pub async fn check(&self, db: &Db) -> Result<std::result::Result<(), String>> {
        if self.entries == 0 {
            return Ok(Ok(()));
        }
        let hash: Option<String> = sqlx::query_scalar("SELECT hash FROM audit_log WHERE id = $1")
            .bind(self.last_id)
            .fetch_optional(&db.pool)
            .await?;
        let up_to: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE id <= $1")
            .bind(self.last_id)
            .fetch_one(&db.pool)
            .await?;
        Ok(match hash {
            None => Err(format!(
                "entry {} is gone: entries were deleted (the head recorded {} entries)",
                self.last_id, self.entries
            )),
            Some(h) if !same_hash(&h, &self.last_hash) => Err(format!(
                "entry {} has another hash than the head recorded: the chain was rewritten",
                self.last_id
            )),
            Some(_) if up_to != self.entries => Err(format!(
                "{up_to} entries up to entry {} where the head recorded {}: entries were {}",
                self.last_id,
                self.entries,
                if up_to < self.entries {
                    "deleted"
                } else {
                    "inserted"
                }
            )),
            Some(_) => Ok(()),
        })
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
    // Matched against the distinct (user, action, outcome) first: see store::audit_search.
    super::store::audit_search(db, user, action, outcome, before, limit).await
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

    async fn history(dir: &std::path::Path) -> Db {
        sqlx::any::install_default_drivers();
        let url = super::super::db::sqlite_url(dir).unwrap();
        Db::open(&Secret::new(url))
            .await
            .unwrap()
            .with_server_key(&Secret::new([5; 32]))
    }

    fn event(action: &str, outcome: Outcome) -> Event {
        Event {
            user_id: None,
            username: "ann".into(),
            address: "127.0.0.1".into(),
            action: action.into(),
            target: String::new(),
            outcome,
            detail: String::new(),
        }
    }

    /// What someone who can write the database does to an entry: the triggers that
    /// refuse it go first.
    async fn sql(db: &Db, sql: &str) {
        for statement in [
            "DROP TRIGGER IF EXISTS audit_log_no_update",
            "DROP TRIGGER IF EXISTS audit_log_no_delete",
            sql,
        ] {
            sqlx::query(statement).execute(&db.pool).await.unwrap();
        }
    }

    /// A changed outcome breaks the chain at that entry, whether the new word is one
    /// tablesafe writes or not; and the table refuses the change unless its triggers
    /// are dropped first.
    #[tokio::test]
    async fn a_changed_outcome_is_found_at_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = history(dir.path()).await;
        for (action, outcome) in [("login", Outcome::Ok), ("source.add", Outcome::Denied)] {
            append(&db, &event(action, outcome)).await.unwrap();
        }
        let intact = verify_chain(&db).await.unwrap();
        assert_eq!(
            (intact.broken_at, intact.entries, intact.legacy),
            (None, 2, 0)
        );
        let refused = sqlx::query("UPDATE audit_log SET outcome = 'ok'")
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
        assert!(
            sqlx::query("DELETE FROM audit_log")
                .execute(&db.pool)
                .await
                .is_err()
        );
        let second: i64 = sqlx::query_scalar("SELECT MAX(id) FROM audit_log")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        for word in ["ok", "maybe"] {
            sql(
                &db,
                &format!("UPDATE audit_log SET outcome = '{word}' WHERE id = {second}"),
            )
            .await;
            assert_eq!(
                verify_chain(&db).await.unwrap().broken_at,
                Some(second),
                "{word}"
            );
        }
    }

    /// A chain written before it was keyed stays valid; after the first keyed entry an
    /// unkeyed one is a forgery.
    #[tokio::test]
    async fn unkeyed_entries_count_only_before_the_first_keyed_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = history(dir.path()).await;
        // Two entries the way the previous release wrote them.
        let mut prev = GENESIS.to_string();
        for action in ["login", "source.add"] {
            let e = event(action, Outcome::Ok);
            let hash = entry_hash(None, &prev, 1000, &e);
            sqlx::query("INSERT INTO audit_log (at, user_id, username, address, action, target, outcome, detail, prev_hash, hash) VALUES (1000, NULL, 'ann', '127.0.0.1', $1, '', 'ok', '', $2, $3)")
                .bind(action).bind(&prev).bind(&hash)
                .execute(&db.pool).await.unwrap();
            prev = hash;
        }
        append(&db, &event("logout", Outcome::Ok)).await.unwrap();
        let checked = verify_chain(&db).await.unwrap();
        assert_eq!(
            (checked.broken_at, checked.entries, checked.legacy),
            (None, 3, 2)
        );
        // An unkeyed entry after a keyed one: what someone without the key would add.
        let e = event("user.create", Outcome::Ok);
        let last = checked.last.unwrap().1;
        let forged = entry_hash(None, &last, 2000, &e);
        sqlx::query("INSERT INTO audit_log (at, user_id, username, address, action, target, outcome, detail, prev_hash, hash) VALUES (2000, NULL, 'ann', '127.0.0.1', 'user.create', '', 'ok', '', $1, $2)")
            .bind(&last).bind(&forged)
            .execute(&db.pool).await.unwrap();
        let checked = verify_chain(&db).await.unwrap();
        assert!(
            checked.broken_at.is_some() && checked.entries == 3,
            "{checked:?}"
        );
    }

    /// The attacks the chain alone cannot see — the newest entries deleted, or every
    /// entry re-hashed the unkeyed way after an edit — no longer match a head written
    /// before; and a head signed with another key is refused.
    #[tokio::test]
    async fn a_head_finds_deleted_and_rehashed_entries() {
        let dir = tempfile::tempdir().unwrap();
        let db = history(dir.path()).await;
        for i in 0..5 {
            append(&db, &event(&format!("job.run.{i}"), Outcome::Ok))
                .await
                .unwrap();
        }
        let keys = db.audit_keys.clone().unwrap();
        let head = Head::of(&keys, &verify_chain(&db).await.unwrap(), now_ms());
        let read = Head::parse(&keys, &head.to_bytes()).unwrap();
        assert_eq!(read, head);
        assert_eq!(read.check(&db).await.unwrap(), Ok(()));
        let other = AuditKeys::new(&Secret::new([6; 32]));
        assert!(
            Head::parse(&other, &head.to_bytes()).is_err(),
            "a head signed with another key"
        );

        // Later entries do not disturb an older head.
        append(&db, &event("later", Outcome::Ok)).await.unwrap();
        assert_eq!(head.check(&db).await.unwrap(), Ok(()));

        // Deleting the newest entries (the chain itself still verifies).
        let copy = tempfile::tempdir().unwrap();
        std::fs::copy(
            dir.path().join("history.db"),
            copy.path().join("history.db"),
        )
        .unwrap();
        let db2 = history(copy.path()).await;
        sql(
            &db2,
            &format!("DELETE FROM audit_log WHERE id >= {}", head.last_id),
        )
        .await;
        assert_eq!(verify_chain(&db2).await.unwrap().broken_at, None);
        let found = head.check(&db2).await.unwrap().unwrap_err();
        assert!(found.contains("deleted"), "{found}");

        // Editing one entry and re-hashing everything after it the unkeyed way.
        sql(&db, "UPDATE audit_log SET action = 'nothing' WHERE id = 2").await;
        let rows: Vec<Row> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM audit_log ORDER BY id"))
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let mut prev = GENESIS.to_string();
        for r in rows {
            let e = Event {
                user_id: r.user_id,
                username: r.username,
                address: r.address,
                action: r.action,
                target: r.target,
                outcome: Outcome::parse(&r.outcome).unwrap(),
                detail: r.detail,
            };
            let hash = entry_hash(None, &prev, r.at, &e);
            sql(
                &db,
                &format!(
                    "UPDATE audit_log SET prev_hash = '{prev}-', hash = '{hash}' WHERE id = {}",
                    r.id
                ),
            )
            .await;
            prev = hash;
        }
        sql(
            &db,
            "UPDATE audit_log SET prev_hash = substr(prev_hash, 1, 64)",
        )
        .await;
        let rehashed = verify_chain(&db).await.unwrap();
        assert_eq!(
            rehashed.broken_at, None,
            "an all-v1 chain verifies on its own"
        );
        let found = head.check(&db).await.unwrap().unwrap_err();
        assert!(found.contains("rewritten"), "{found}");
    }
}
