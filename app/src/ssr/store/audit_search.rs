//! The audit page's search, at any size of the log.
//!
//! Filters are a prefix of the user name, a prefix of the action and the exact outcome.
//! Read newest first and filtered as it went, a search that matches rarely read the
//! whole log (5 M entries: seconds) before answering. The distinct (user, action,
//! outcome) triples are few and kept in `audit_kinds` (migration 0019, by trigger): the
//! filters are matched against those first. None matches: nothing to read. A few
//! match: each one's newest entries come from the index `audit_kind_recent` and are
//! merged. Many match (a broad filter): its entries are dense, and the newest-first
//! read ends soon. (An entry edited behind the append-only triggers' back may then be
//! missed by a search: the chain check, not the search, is what finds such edits.)

use super::*;
use crate::ssr::audit::{COLUMNS, Row};

/// Up to this many matching triples are merged from the index; beyond, the log is
/// read newest first.
const MERGE_AT_MOST: usize = 100;

/// A filter's `LIKE` pattern: the prefix, without wildcards of its own, at most 64
/// characters.
fn prefix(s: &str) -> String {
    let clean: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, '%' | '_'))
        .take(64)
        .collect();
    format!("{clean}%")
}

/// Entries newest first: user name and action by prefix, outcome exactly (empty = any),
/// `id < before`, at most `limit`.
pub async fn audit_search(
    db: &Db,
    user: &str,
    action: &str,
    outcome: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Row>> {
    let (user, action, outcome) = (prefix(user), prefix(action), outcome.trim());
    let before = before.unwrap_or(i64::MAX);
    let scan = || async {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM audit_log WHERE id < $1 AND username LIKE $2 AND action LIKE $3 \
             AND ($4 = '' OR outcome = $4) ORDER BY id DESC LIMIT $5"
        ))
        .bind(before)
        .bind(&user)
        .bind(&action)
        .bind(outcome)
        .bind(limit)
        .fetch_all(&db.pool)
        .await?)
    };
    if user == "%" && action == "%" && outcome.is_empty() {
        return scan().await;
    }
    let kinds: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT username, action, outcome FROM audit_kinds WHERE username LIKE $1 AND action LIKE $2 \
         AND ($3 = '' OR outcome = $3)",
    )
    .bind(&user)
    .bind(&action)
    .bind(outcome)
    .fetch_all(&db.pool)
    .await?;
    if kinds.is_empty() {
        return Ok(Vec::new());
    }
    if kinds.len() > MERGE_AT_MOST {
        return scan().await;
    }
    merge_sql(&kinds)
        .bind_all(before, limit)
        .fetch_all(db)
        .await
}

/// The newest `limit` entries below `$1` of each triple (`$2` is the limit), merged.
fn merge_sql(kinds: &[(String, String, String)]) -> Sql {
    let mut sql = Sql::new(format!("SELECT {COLUMNS} FROM ("));
    sql.binds.push(Bind::Int(0)); // $1: before, set by bind_all
    sql.binds.push(Bind::Int(0)); // $2: limit
    for (i, (u, a, o)) in kinds.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push(&format!(
            "SELECT * FROM (SELECT {COLUMNS} FROM audit_log WHERE"
        ))
        .push_bind(" username = ", Bind::Text(u.clone()), "")
        .push_bind(" AND action = ", Bind::Text(a.clone()), "")
        .push_bind(" AND outcome = ", Bind::Text(o.clone()), "")
        .push(&format!(" AND id < $1 ORDER BY id DESC LIMIT $2) k{i}"));
    }
    sql.push(") m ORDER BY id DESC LIMIT $2");
    sql
}

impl Sql {
    fn bind_all(mut self, before: i64, limit: i64) -> Sql {
        self.binds[0] = Bind::Int(before);
        self.binds[1] = Bind::Int(limit);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Outcome;
    use crate::ssr::audit::{Event, append};
    use engine::secret::Secret;

    fn event(user: &str, action: &str, outcome: Outcome) -> Event {
        Event {
            user_id: None,
            username: user.into(),
            address: "127.0.0.1".into(),
            action: action.into(),
            target: String::new(),
            outcome,
            detail: String::new(),
        }
    }

    /// The same answers as reading the whole log and filtering, for filters that match
    /// nothing, a few triples, many, and pages below an entry.
    async fn finds_what_a_full_read_finds(db: &Db) {
        let users = ["ann", "anna", "bob"];
        let actions = ["login", "policy.run", "policy.create", "restore.start"];
        let outcomes = [Outcome::Ok, Outcome::Denied, Outcome::Failed];
        for i in 0..400usize {
            let e = event(
                users[i % 3],
                actions[(i / 3) % 4],
                outcomes[(i * 7 / 5) % 3],
            );
            append(db, &e).await.unwrap();
        }
        let ids = |rows: Vec<Row>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();
        let all = ids(audit_search(db, "", "", "", None, i64::MAX).await.unwrap());
        assert_eq!(all.len(), 400);
        for (user, action, outcome, before) in [
            ("ann", "", "", None),
            ("anna", "policy.", "denied", None),
            ("bob", "restore", "failed", Some(200)),
            ("", "policy.c", "", Some(350)),
            ("", "", "ok", None),
            ("nobody", "", "", None),
            ("ann", "login", "nonsense", None),
        ] {
            let rows = audit_search(db, user, action, outcome, before, 50)
                .await
                .unwrap();
            let expected: Vec<i64> = sqlx::query_scalar(
                "SELECT id FROM audit_log WHERE id < $1 AND username LIKE $2 AND action LIKE $3 \
                 AND ($4 = '' OR outcome = $4) ORDER BY id DESC LIMIT 50",
            )
            .bind(before.unwrap_or(i64::MAX))
            .bind(format!("{user}%"))
            .bind(format!("{action}%"))
            .bind(outcome)
            .fetch_all(&db.pool)
            .await
            .unwrap();
            assert_eq!(
                ids(rows),
                expected,
                "{user:?} {action:?} {outcome:?} {before:?}"
            );
        }
        // The triples kept by the trigger are exactly those in the log.
        let triples = |sql: &'static str| async move {
            let mut v: Vec<(String, String, String)> =
                sqlx::query_as(sql).fetch_all(&db.pool).await.unwrap();
            v.sort();
            v
        };
        let kept = triples("SELECT username, action, outcome FROM audit_kinds").await;
        let used = triples("SELECT DISTINCT username, action, outcome FROM audit_log").await;
        assert_eq!(kept, used);
        assert!(kept.len() > 20, "{kept:?}");
    }

    #[tokio::test]
    async fn audit_search_on_a_sqlite_history() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::super::db::sqlite_url(dir.path()).unwrap();
        let db = Db::open(&Secret::new(url))
            .await
            .unwrap()
            .with_server_key(&Secret::new([5; 32]));
        finds_what_a_full_read_finds(&db).await;
        // The merge seeks each triple's newest entries in the index.
        let sql = merge_sql(&[("ann".into(), "login".into(), "ok".into())]);
        let text = format!("EXPLAIN QUERY PLAN {}", sql.text);
        let mut q = sqlx::query_as::<_, (i64, i64, i64, String)>(&text)
            .bind(1_000i64)
            .bind(50i64);
        for b in &sql.binds[2..] {
            if let Bind::Text(t) = b {
                q = q.bind(t.as_str());
            }
        }
        let plan: Vec<String> = q
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.3)
            .collect();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX audit_kind_recent")),
            "{plan:?}"
        );
    }

    #[tokio::test]
    async fn audit_search_on_a_postgres_history() {
        sqlx::any::install_default_drivers();
        let pg = testkit::Postgres::start().unwrap();
        let url = pg.create_database("history").unwrap();
        let db = Db::open(&Secret::new(url))
            .await
            .unwrap()
            .with_server_key(&Secret::new([5; 32]));
        finds_what_a_full_read_finds(&db).await;
    }
}
