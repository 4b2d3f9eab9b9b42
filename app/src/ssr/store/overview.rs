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
        last_success: sqlx::query_as(
            "SELECT p.name, MAX(j.finished_at) FROM jobs j JOIN policies p ON p.id = j.policy_id \
             WHERE j.kind = 'backup' AND j.status = 'succeeded' AND j.finished_at IS NOT NULL GROUP BY p.name",
        )
        .fetch_all(&db.pool)
        .await?,
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
