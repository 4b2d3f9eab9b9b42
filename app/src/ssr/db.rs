//! The history database: SQLite in the data directory by default, or PostgreSQL when
//! several workers share one job queue. Both run the same schema (one migration folder
//! per engine, `migrations/sqlite` and `migrations/postgres`, kept in step) and are
//! reached through sqlx's `Any` driver, so every query here is written once in the
//! common SQL subset: `$1…$n` placeholders in order, BIGINT unix milliseconds for time,
//! TEXT for enums. Migrations run on every start, before anything else touches the
//! database; a second worker starting at the same time waits on sqlx's migration lock.

use anyhow::{Context, Result, bail};
use engine::secret::{Secret, redact_url};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use std::path::Path;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn label(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

#[derive(Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// Keys the audit log is written and checked with; `None` until
    /// [`Db::with_server_key`] (appending to the audit log needs them).
    pub audit_keys: Option<std::sync::Arc<super::keys::AuditKeys>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("backend", &self.backend)
            .finish()
    }
}

/// The URL of the default SQLite history database inside `data_dir`.
pub fn sqlite_url(data_dir: &Path) -> Result<String> {
    let path = std::path::absolute(data_dir.join("history.db"))?;
    let path = path.to_str().context("data directory path is not UTF-8")?;
    // Percent-encode what would end the path part of the URL.
    const PATH: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
        .add(b'%')
        .add(b'?')
        .add(b'#')
        .add(b' ');
    let encoded = percent_encoding::utf8_percent_encode(path, PATH);
    Ok(format!("sqlite://{encoded}?mode=rwc"))
}

impl Db {
    /// Connects and migrates. `url` is `sqlite://…` or `postgres://…`.
    pub async fn open(url: &Secret<String>) -> Result<Db> {
        sqlx::any::install_default_drivers();
        // A PostgreSQL history may be reached over TLS (sslmode in the URL, as for
        // sources).
        engine::source::link::tls_ready();
        let raw = url.expose();
        let backend = if raw.starts_with("sqlite:") {
            Backend::Sqlite
        } else if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            bail!(
                "unsupported history database URL {:?}: use sqlite://PATH or postgres://USER@HOST/DB",
                redact_url(raw)
            );
        };
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(raw)
            .await
            // sqlx errors can quote the URL; show the redacted form instead.
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}",
                    engine::source::link::with_advice(scrub(&e.to_string(), raw))
                )
            })
            .with_context(|| format!("cannot open history database {}", redact_url(raw)))?;
        if backend == Backend::Sqlite {
            // WAL lets the console read while a job writes; it persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        let before = applied_schema(&pool).await;
        migrator
            .run(&pool)
            .await
            .map_err(|e| migrate_error(e, migrator, backend, raw))?;
        let after = applied_schema(&pool).await.unwrap_or(0);
        match before {
            Some(before) if before > 0 && before != after => tracing::info!(
                "migrated the history database from schema {before} to schema {after}"
            ),
            Some(before) if before > 0 => {}
            _ => tracing::info!("created the history database at schema {after}"),
        }
        Ok(Db {
            pool,
            backend,
            audit_keys: None,
        })
    }

    /// This database with the audit keys derived from `server_key`.
    pub fn with_server_key(mut self, server_key: &Secret<[u8; super::keys::KEY_LEN]>) -> Db {
        self.audit_keys = Some(std::sync::Arc::new(super::keys::AuditKeys::new(server_key)));
        self
    }

    /// The schema version: the number of the last applied migration.
    pub async fn schema_version(&self) -> Result<i64> {
        Ok(sqlx::query_scalar::<_, i64>(
            "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE",
        )
        .fetch_one(&self.pool)
        .await?)
    }
}

/// The newest applied migration, `None` before the first start (no migrations table).
async fn applied_schema(pool: &AnyPool) -> Option<i64> {
    sqlx::query_scalar::<_, i64>(
        "SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations WHERE success = TRUE",
    )
    .fetch_one(pool)
    .await
    .ok()
}

/// What a failed migration means for the operator. sqlx refuses a database that
/// records a migration this build does not have ("migration 19 was previously applied
/// but is missing in the resolved migrations") before changing anything: that is a
/// history database a newer tablesafe has already upgraded, and the fix is to run that
/// newer tablesafe (or this one on a backup taken before the upgrade).
fn migrate_error(
    e: sqlx::migrate::MigrateError,
    migrator: &sqlx::migrate::Migrator,
    backend: Backend,
    url: &str,
) -> anyhow::Error {
    use sqlx::migrate::MigrateError;
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let db = redact_url(url);
    match e {
        MigrateError::VersionMissing(found) if found > known => anyhow::anyhow!(
            "the {} history database {db} has schema version {found}, written by a newer \
             tablesafe; this build knows schema versions up to {known}: upgrade tablesafe \
             (or run this version on a copy of the history database saved before the \
             upgrade). Nothing was changed.",
            backend.label()
        ),
        MigrateError::VersionMissing(found) => anyhow::anyhow!(
            "the {} history database {db} records schema migration {found}, which this \
             build of tablesafe does not have (it knows versions up to {known}): it was \
             made by a different build; run the tablesafe that made it. Nothing was changed.",
            backend.label()
        ),
        MigrateError::VersionMismatch(version) => anyhow::anyhow!(
            "the {} history database {db} applied schema migration {version} with different \
             contents than this build's: it was made by a different build of tablesafe; \
             run the tablesafe that made it. Nothing was changed.",
            backend.label()
        ),
        MigrateError::Dirty(version) => anyhow::anyhow!(
            "the {} history database {db} has schema migration {version} half applied (an \
             earlier start stopped during it); restore the history database from the \
             backup taken before upgrading, then start tablesafe again",
            backend.label()
        ),
        other => anyhow::Error::new(other).context(format!("migrating the history database {db}")),
    }
}

fn scrub(message: &str, url: &str) -> String {
    message.replace(url, &redact_url(url))
}

/// How long a worker keeps retrying a write it must not lose (a job's end, its
/// snapshot) while the history database does not answer: a PostgreSQL history's restart
/// or failover. Shorter than the silence after which other workers fail a job as
/// abandoned (60 s), so the two never both record one.
pub const OUTAGE: std::time::Duration = std::time::Duration::from_secs(45);

/// Whether `e` says the history database could not be reached (connection refused or
/// cut, the server shutting down or starting up) rather than refusing the statement.
pub fn is_unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| match c.downcast_ref::<sqlx::Error>() {
        Some(
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed,
        ) => true,
        // SQLSTATE class 08 (connection exception) and 57P01–57P03 (admin shutdown,
        // crash shutdown, cannot connect now).
        Some(sqlx::Error::Database(d)) => d
            .code()
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P0")),
        _ => false,
    })
}

/// Runs `op` until it succeeds, fails for another reason than an unreachable history
/// database ([`is_unreachable`]), or [`OUTAGE`] has passed. `op` is told whether it is
/// a retry: a write whose first attempt may have been applied before the connection
/// broke checks for that first.
pub async fn through_outage<T, F, Fut>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(250);
    let mut retry = false;
    loop {
        match op(retry).await {
            Err(e) if is_unreachable(&e) && started.elapsed() < OUTAGE => {
                if !retry {
                    tracing::warn!(
                        error = %format!("{e:#}"),
                        "the history database does not answer; {what} is retried until it does"
                    );
                }
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(std::time::Duration::from_secs(4));
                retry = true;
            }
            Ok(v) if retry => {
                tracing::info!(
                    waited_s = started.elapsed().as_secs(),
                    "the history database answers again: {what} went through"
                );
                return Ok(v);
            }
            r => return r,
        }
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A console account as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub disabled_at: Option<i64>,
    /// Session cookies name the epoch they were issued in; see [`bump_session_epoch`].
    pub session_epoch: i64,
}

const USER_COLUMNS: &str = "id, username, password_hash, role, disabled_at, session_epoch";

pub async fn user_by_name(db: &Db, username: &str) -> Result<Option<UserRow>> {
    Ok(sqlx::query_as::<_, UserRow>(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
    ))
    .bind(username)
    .fetch_optional(&db.pool)
    .await?)
}

pub async fn user_by_id(db: &Db, id: i64) -> Result<Option<UserRow>> {
    Ok(
        sqlx::query_as::<_, UserRow>(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Outcome of [`ensure_admin`].
#[derive(Debug)]
pub enum Bootstrap {
    /// Accounts already existed; nothing was changed.
    Existing,
    /// The `admin` account was created with this password.
    Created {
        generated: bool,
        password: Secret<String>,
    },
}

/// On the very first start (no account at all), creates `admin` with `password` or a
/// generated one. Safe when several workers start at once: the unique user name lets
/// exactly one insert win.
pub async fn ensure_admin(db: &Db, password: Option<Secret<String>>) -> Result<Bootstrap> {
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&db.pool)
        .await?;
    if count > 0 {
        return Ok(Bootstrap::Existing);
    }
    let generated = password.is_none();
    let password = password.unwrap_or_else(super::password::generate);
    let phc = super::password::hash(password.clone()).await?;
    let inserted = sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_at) \
         SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM users)",
    )
    .bind("admin")
    .bind(phc)
    .bind("admin")
    .bind(now_ms())
    .execute(&db.pool)
    .await;
    match inserted {
        Ok(r) if r.rows_affected() == 1 => Ok(Bootstrap::Created {
            generated,
            password,
        }),
        Ok(_) => Ok(Bootstrap::Existing),
        // Another worker inserted `admin` between our check and our insert.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(Bootstrap::Existing),
        Err(e) => Err(e.into()),
    }
}

/// Sets a new password for `username` (the `reset-password` subcommand).
/// Sets `username`'s password and ends every session they have (see
/// [`bump_session_epoch`]). `false`: no such account.
/// `false` when there is no such account, or it was removed (a removed account stays
/// removed: its name is kept for the history only).
pub async fn set_password(db: &Db, username: &str, password: Secret<String>) -> Result<bool> {
    let phc = super::password::hash(password).await?;
    let r = sqlx::query(
        "UPDATE users SET password_hash = $1, session_epoch = session_epoch + 1 WHERE username = $2 AND removed_at IS NULL",
    )
    .bind(phc)
    .bind(username)
    .execute(&db.pool)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Ends every console session of user `id` at once: cookies carry the epoch they were
/// issued in, and this moves the user to the next one. Returns the new epoch (`None`:
/// no such user).
pub async fn bump_session_epoch(db: &Db, id: i64) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1 RETURNING session_epoch",
    )
    .bind(id)
    .fetch_optional(&db.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A history database made by the previous release (migrations 1–5) with jobs, their
    /// logs, a target and a policy keeps all of it through migration 6, which rebuilds
    /// `jobs` and `targets` (SQLite cannot change a CHECK constraint).
    #[tokio::test]
    async fn upgrading_a_sqlite_history_keeps_jobs_logs_targets_and_policies() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        let all = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite");
        for e in std::fs::read_dir(all).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            if name.as_str() < "0006" {
                std::fs::copy(e.path(), old.join(&name)).unwrap();
            }
        }
        let url = sqlite_url(dir.path()).unwrap();
        {
            let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
            sqlx::migrate::Migrator::new(old.as_path())
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            for sql in [
                "INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('s', 'sqlite', 'sqlite:///x.db', 'sealed', 1)",
                "INSERT INTO targets (name, kind, location, sealed_password, created_at) VALUES ('t', 'local', '/srv/t', 'sealed', 1)",
                "INSERT INTO policies (name, source_id, target_id, selection, created_at) VALUES ('p', 1, 1, '{}', 1)",
                "INSERT INTO jobs (kind, status, policy_id, params, title, created_at) VALUES ('backup', 'succeeded', 1, '{}', 'old job', 1)",
                "INSERT INTO jobs (kind, status, params, title, created_at) VALUES ('verify', 'queued', '{}', 'queued job', 2)",
                "INSERT INTO job_logs (job_id, at, level, message) VALUES (1, 1, 'info', 'first line')",
                "INSERT INTO job_logs (job_id, at, level, message) VALUES (1, 2, 'info', 'second line')",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let db = Db::open(&Secret::new(url)).await.unwrap();
        let count = |sql: &'static str| {
            let pool = db.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(count("SELECT COUNT(*) FROM jobs").await, 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM job_logs WHERE job_id = 1").await,
            2
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM targets WHERE location = '/srv/t'").await,
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM policies WHERE retention = ''").await,
            1
        );
        // New kinds are accepted, ids continue after the old ones, foreign keys still hold.
        sqlx::query("INSERT INTO jobs (kind, status, params, title, created_at) VALUES ('prune', 'queued', '{}', 'new', 3)")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(count("SELECT MAX(id) FROM jobs").await, 3);
        sqlx::query("INSERT INTO targets (name, kind, location, sealed_password, created_at) VALUES ('s3', 's3', 's3://b/p', 'sealed', 1)")
            .execute(&db.pool)
            .await
            .unwrap();
        let orphan = sqlx::query(
            "INSERT INTO job_logs (job_id, at, level, message) VALUES (99, 1, 'info', 'x')",
        )
        .execute(&db.pool)
        .await;
        assert!(orphan.is_err(), "job_logs still references jobs");
        sqlx::query("DELETE FROM jobs WHERE id = 1")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            count("SELECT COUNT(*) FROM job_logs").await,
            0,
            "cascade still works"
        );
    }

    /// A history made by the previous release (migrations 1–13) keeps its sources, the
    /// grants and approvers on them, policies and drill plans' scratch servers through
    /// migration 14, which rebuilds `sources` to accept MySQL.
    #[tokio::test]
    async fn upgrading_a_sqlite_history_keeps_sources_and_what_hangs_on_them() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        let all = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations/sqlite");
        for e in std::fs::read_dir(all).unwrap().flatten() {
            let name = e.file_name().into_string().unwrap();
            if name.as_str() < "0014" {
                std::fs::copy(e.path(), old.join(&name)).unwrap();
            }
        }
        let url = sqlite_url(dir.path()).unwrap();
        {
            let pool = AnyPoolOptions::new().connect(&url).await.unwrap();
            sqlx::migrate::Migrator::new(old.as_path())
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            for sql in [
                "INSERT INTO users (username, password_hash, role, created_at) VALUES ('rita', 'x', 'requester', 1)",
                "INSERT INTO sources (name, engine, display_url, sealed_url, created_at, approvals_required) VALUES ('shop', 'postgres', 'postgres://h/shop', 'sealed', 1, 2)",
                "INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('scratch', 'postgres', 'postgres://h/postgres', 'sealed', 1)",
                "INSERT INTO targets (name, kind, location, sealed_password, created_at) VALUES ('t', 'local', '/srv/t', 'sealed', 1)",
                "INSERT INTO policies (name, source_id, target_id, selection, created_at) VALUES ('p', 1, 1, '{}', 1)",
                "INSERT INTO source_grants (source_id, user_id) VALUES (1, 1)",
                "INSERT INTO source_approvers (source_id, user_id) VALUES (1, 1)",
                "INSERT INTO drill_plans (policy_id, scratch_source_id, updated_at) VALUES (1, 2, 1)",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let db = Db::open(&Secret::new(url)).await.unwrap();
        let one = |sql: &'static str| {
            let pool = db.pool.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(one("SELECT COUNT(*) FROM sources").await, 2);
        assert_eq!(
            one("SELECT approvals_required FROM sources WHERE name = 'shop'").await,
            2
        );
        assert_eq!(one("SELECT COUNT(*) FROM source_grants").await, 1);
        assert_eq!(one("SELECT COUNT(*) FROM source_approvers").await, 1);
        assert_eq!(
            one("SELECT COUNT(*) FROM policies WHERE source_id = 1").await,
            1
        );
        assert_eq!(
            one("SELECT scratch_source_id FROM drill_plans WHERE policy_id = 1").await,
            2
        );
        // MySQL is accepted now; ids continue; foreign keys and cascades still hold.
        sqlx::query("INSERT INTO sources (name, engine, display_url, sealed_url, created_at) VALUES ('my', 'mysql', 'mysql://h/db', 'sealed', 1)")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(one("SELECT MAX(id) FROM sources").await, 3);
        let orphan = sqlx::query("INSERT INTO source_grants (source_id, user_id) VALUES (99, 1)")
            .execute(&db.pool)
            .await;
        assert!(orphan.is_err(), "grants still reference sources");
        sqlx::query("DELETE FROM drill_plans")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM policies")
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query("DELETE FROM sources WHERE id = 1")
            .execute(&db.pool)
            .await
            .unwrap();
        assert_eq!(
            one("SELECT COUNT(*) FROM source_grants").await,
            0,
            "cascade still works"
        );
    }
}
