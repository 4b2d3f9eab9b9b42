//! Names and gauges for lists, the dashboard and metrics.

use super::*;

/// Display names of everything lists refer to by id, in one query.
#[derive(Debug, Default)]
pub struct Names {
    pub sources: std::collections::HashMap<i64, String>,
    pub targets: std::collections::HashMap<i64, String>,
    pub policies: std::collections::HashMap<i64, String>,
    pub users: std::collections::HashMap<i64, String>,
}

pub async fn names(db: &Db) -> Result<Names> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT 's', id, name FROM sources UNION ALL SELECT 't', id, name FROM targets \
         UNION ALL SELECT 'p', id, name FROM policies UNION ALL SELECT 'u', id, username FROM users",
    )
    .fetch_all(&db.pool)
    .await?;
    let mut n = Names::default();
    for (kind, id, name) in rows {
        let map = match kind.as_str() {
            "s" => &mut n.sources,
            "t" => &mut n.targets,
            "p" => &mut n.policies,
            _ => &mut n.users,
        };
        map.insert(id, name);
    }
    Ok(n)
}

/// A source's line on the dashboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// When its last successful backup finished.
    pub last_success: Option<i64>,
    /// Whether its latest finished backup (succeeded or failed) failed.
    pub last_backup_failed: bool,
    /// The next scheduled run of any of its enabled policies.
    pub next_run: Option<i64>,
    /// Backups and other jobs of it that failed since `since`.
    pub failures: i64,
}

/// Per source: the last successful and the last failed backup (index
/// `jobs_source_last`: two descents, not a sort of every backup of the source), the
/// failures since `since` (`jobs_source_failed`) and the next run, in one query
/// whatever the number of sources.
pub const SOURCE_HEALTH: &str = "SELECT s.id, \
     (SELECT MAX(j.finished_at) FROM jobs j WHERE j.source_id = s.id AND j.kind = 'backup' AND j.status = 'succeeded'), \
     (SELECT MAX(j.finished_at) FROM jobs j WHERE j.source_id = s.id AND j.kind = 'backup' AND j.status = 'failed'), \
     (SELECT COUNT(*) FROM jobs j WHERE j.source_id = s.id AND j.status = 'failed' AND j.created_at > $1), \
     (SELECT MIN(p.next_run_at) FROM policies p WHERE p.source_id = s.id AND p.enabled = 1) \
     FROM sources s";

type HealthRow = (i64, Option<i64>, Option<i64>, i64, Option<i64>);

/// [`Health`] of every source, by id; failures counted since `since` (unix ms).
pub async fn source_health(db: &Db, since: i64) -> Result<std::collections::HashMap<i64, Health>> {
    let rows: Vec<HealthRow> = sqlx::query_as(SOURCE_HEALTH)
        .bind(since)
        .fetch_all(&db.pool)
        .await?;
    let mut out = std::collections::HashMap::new();
    for (id, ok, failed, failures, next_run) in rows {
        // Every way a job ends sets `finished_at`, so the latest of the two is the
        // latest finished backup; on a tie (the same millisecond) the later job counts.
        let last_backup_failed = match (ok, failed) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(a), Some(b)) if a != b => b > a,
            (Some(a), Some(_)) => {
                let status: Option<String> = sqlx::query_scalar(
                    "SELECT status FROM jobs WHERE source_id = $1 AND kind = 'backup' \
                     AND status IN ('succeeded', 'failed') AND finished_at = $2 ORDER BY id DESC LIMIT 1",
                )
                .bind(id)
                .bind(a)
                .fetch_optional(&db.pool)
                .await?;
                status.as_deref() == Some("failed")
            }
        };
        out.insert(
            id,
            Health {
                last_success: ok,
                last_backup_failed,
                next_run,
                failures,
            },
        );
    }
    Ok(out)
}

/// What `/metrics` reads from the history (the same for every worker sharing it).
pub struct Gauges {
    /// Jobs per status, for the statuses that have any.
    pub jobs_by_status: Vec<(String, i64)>,
    /// Per policy name: when its last successful backup finished (unix ms).
    pub last_success: Vec<(String, i64)>,
    /// Per target name: the bytes its snapshots in the history added to its repository.
    pub stored_bytes: Vec<(String, i64)>,
    /// Notifications waiting or given up, per status.
    pub outbox_by_status: Vec<(String, i64)>,
}

pub async fn gauges(db: &Db) -> Result<Gauges> {
    Ok(Gauges {
        jobs_by_status: sqlx::query_as(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status",
        )
        .fetch_all(&db.pool)
        .await?,
        // Per policy, as `last_successes` (one index descent each, not a GROUP BY over
        // every job).
        last_success: {
            let last = super::last_successes(db).await?;
            sqlx::query_as::<_, (i64, String)>("SELECT id, name FROM policies")
                .fetch_all(&db.pool)
                .await?
                .into_iter()
                .filter_map(|(id, name)| Some((name, *last.get(&id)?)))
                .collect()
        },
        outbox_by_status: sqlx::query_as(
            "SELECT status, COUNT(*) FROM notify_outbox WHERE status IN ('pending', 'sending', 'failed') GROUP BY status",
        )
        .fetch_all(&db.pool)
        .await?,
        stored_bytes: sqlx::query_as(
            "SELECT t.name, CAST(COALESCE(SUM(s.bytes_stored), 0) AS BIGINT) FROM targets t \
             LEFT JOIN snapshots s ON s.target_id = t.id GROUP BY t.name",
        )
        .fetch_all(&db.pool)
        .await?,
    })
}

/// Whether the history database answers.
pub async fn ping(db: &Db) -> Result<()> {
    let _: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
        .fetch_one(&db.pool)
        .await?;
    Ok(())
}
