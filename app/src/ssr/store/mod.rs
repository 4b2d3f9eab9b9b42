//! The console's tables in the history database (schema: migrations/*/0002_console.sql).
//! Plain functions over [`Db`]; authorization and auditing happen in the server
//! functions that call them.

use super::db::{Db, now_ms};
use anyhow::Result;

mod audit_search;
mod captures;
mod jobs;
mod overview;
#[cfg(test)]
mod plans;
mod policies;
mod snapshots;
mod sources;
mod targets;
mod users;

pub use audit_search::*;
pub use captures::*;
pub use jobs::*;
pub use overview::*;
pub use policies::*;
pub use snapshots::*;
pub use sources::*;
pub use targets::*;
pub use users::*;

/// Dynamic SQL with numbered placeholders. sqlx's `QueryBuilder` cannot be used on the
/// history database: over the `Any` driver it writes `?`, which PostgreSQL rejects
/// (launchbadge/sqlx#3000), while `$N` works on both SQLite and PostgreSQL.
struct Sql {
    text: String,
    binds: Vec<Bind>,
}

enum Bind {
    Int(i64),
    Text(String),
}

impl Sql {
    fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            binds: Vec::new(),
        }
    }

    /// Appends `before`, a placeholder for `value`, then `after`.
    fn push_bind(&mut self, before: &str, value: Bind, after: &str) -> &mut Sql {
        self.binds.push(value);
        self.text
            .push_str(&format!("{before}${}{after}", self.binds.len()));
        self
    }

    fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    async fn fetch_all<T>(&self, db: &Db) -> Result<Vec<T>>
    where
        T: Send + Unpin + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>,
    {
        let mut q = sqlx::query_as::<_, T>(&self.text);
        for b in &self.binds {
            q = match b {
                Bind::Int(i) => q.bind(*i),
                Bind::Text(t) => q.bind(t.as_str()),
            };
        }
        Ok(q.fetch_all(&db.pool).await?)
    }
}

fn unique_or(r: Result<i64, sqlx::Error>) -> Result<Option<i64>> {
    match r {
        Ok(id) => Ok(Some(id)),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobStatus::{Failed, Succeeded};
    use engine::secret::Secret;

    fn job(title: &str) -> NewJob {
        NewJob {
            policy_id: None,
            source_id: None,
            target_id: None,
            params: crate::model::JobParams::Verify {
                target_id: 1,
                snapshot_id: "0".repeat(64),
            },
            title: title.into(),
            created_by: None,
            rows_total: None,
            bytes_total: None,
            retry_of: None,
        }
    }

    /// Two workers on one queue: each job is claimed once; a worker that went silent
    /// has its job failed by the other, and its late outcome does not overwrite that.
    async fn two_workers_share_one_queue(db: &Db) {
        let a = enqueue(db, job("first")).await.unwrap();
        let b = enqueue(db, job("second")).await.unwrap();
        let (one, two) = tokio::join!(claim(db, "worker-1"), claim(db, "worker-2"));
        let (one, two) = (one.unwrap().unwrap(), two.unwrap().unwrap());
        let mut ids = [one.id, two.id];
        ids.sort();
        assert_eq!(ids, [a, b], "each job claimed by exactly one worker");
        assert!(claim(db, "worker-1").await.unwrap().is_none());
        // worker-1 went silent ten minutes ago; worker-2 just reported progress.
        sqlx::query("UPDATE jobs SET heartbeat_at = $1 WHERE id = $2")
            .bind(now_ms() - 600_000)
            .bind(one.id)
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            heartbeat(db, two.id, "worker-2", 0, 0, None).await.unwrap(),
            Beat::Owned
        );
        let failed = fail_abandoned(db, "", 60_000).await.unwrap();
        assert_eq!(failed, vec![one.id]);
        // worker-1 comes back: its heartbeat learns the job is no longer its own (and
        // changes nothing), so it stops; so does a worker whose job was reassigned.
        assert_eq!(
            heartbeat(db, one.id, "worker-1", 5, 5, Some("t"))
                .await
                .unwrap(),
            Beat::Lost
        );
        assert_eq!(
            heartbeat(db, two.id, "worker-1", 5, 5, Some("t"))
                .await
                .unwrap(),
            Beat::Lost
        );
        let row = super::job(db, two.id).await.unwrap().unwrap();
        assert_eq!((row.rows_done, row.current_table), (0, None));
        assert!(request_cancel(db, two.id).await.unwrap());
        assert_eq!(
            heartbeat(db, two.id, "worker-2", 0, 0, None).await.unwrap(),
            Beat::CancelRequested
        );
        // worker-1 comes back and finishes: refused, the failure stands.
        let recorded = finish(db, one.id, "worker-1", Succeeded, None, Some("{}"), None)
            .await
            .unwrap();
        assert!(!recorded);
        let row = super::job(db, one.id).await.unwrap().unwrap();
        assert_eq!(row.status, crate::model::JobStatus::Failed);
        // worker-2 records its own job; a second finish changes nothing.
        assert!(
            finish(db, two.id, "worker-2", Succeeded, None, Some("{}"), None)
                .await
                .unwrap()
        );
        assert!(
            !finish(db, two.id, "worker-2", Failed, Some("late"), None, None)
                .await
                .unwrap()
        );
        assert_eq!(
            super::job(db, two.id).await.unwrap().unwrap().status,
            crate::model::JobStatus::Succeeded
        );
    }

    #[tokio::test]
    async fn two_workers_on_a_sqlite_history() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::db::sqlite_url(dir.path()).unwrap();
        let db = Db::open(&Secret::new(url)).await.unwrap();
        two_workers_share_one_queue(&db).await;
    }

    #[tokio::test]
    async fn two_workers_on_a_postgres_history() {
        sqlx::any::install_default_drivers();
        let pg = testkit::Postgres::start().unwrap();
        let url = pg.create_database("history").unwrap();
        let db = Db::open(&Secret::new(url)).await.unwrap();
        two_workers_share_one_queue(&db).await;
    }

    /// The scheduler and the late alert skip a policy whose source or target is paused,
    /// and take it again once resumed.
    #[tokio::test]
    async fn paused_sources_and_targets_hold_their_policies() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let url = super::super::db::sqlite_url(dir.path()).unwrap();
        let db = Db::open(&Secret::new(url)).await.unwrap();
        let s = insert_source(&db, "shop", "sqlite", "/x.db", "sealed", 1)
            .await
            .unwrap()
            .unwrap();
        let t = insert_target(&db, "local", "/repo", "sealed", "", 1)
            .await
            .unwrap()
            .unwrap();
        let due_at = now_ms() - 1_000;
        let p = insert_policy(
            &db,
            "nightly",
            s,
            t,
            "{}",
            "hourly",
            "UTC",
            true,
            Some(due_at),
            1,
        )
        .await
        .unwrap()
        .unwrap();
        let ids = |v: Vec<PolicyRow>| v.into_iter().map(|p| p.id).collect::<Vec<_>>();
        let now = now_ms();
        assert_eq!(ids(due_policies(&db, now).await.unwrap()), [p]);
        assert_eq!(ids(watched_policies(&db).await.unwrap()), [p]);
        for what in [Paused::Source, Paused::Target] {
            let id = if what == Paused::Source { s } else { t };
            assert!(set_paused(&db, what, id, true).await.unwrap());
            assert!(due_policies(&db, now).await.unwrap().is_empty(), "{what:?}");
            assert!(watched_policies(&db).await.unwrap().is_empty(), "{what:?}");
            let row = policy(&db, p).await.unwrap().unwrap();
            assert!(policy_hold(&db, &row).await.unwrap().is_some(), "{what:?}");
            assert!(set_paused(&db, what, id, false).await.unwrap());
            assert_eq!(ids(due_policies(&db, now).await.unwrap()), [p]);
        }
        assert!(!set_paused(&db, Paused::Source, 999, true).await.unwrap());
    }
}
