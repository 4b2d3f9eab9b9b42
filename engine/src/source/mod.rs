//! Table stores: connection URLs and the engines behind them.

use crate::secret::Secret;
use crate::{Error, Result};

/// Statements on one engine's connection, for code written once for every engine.
pub trait RunSql: Send {
    /// Runs statements that return no rows.
    fn exec(&mut self, sql: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// The number a `SELECT count(*) …` returns.
    fn count(&mut self, sql: &str) -> impl std::future::Future<Output = Result<u64>> + Send;
}

/// [`RunSql`], and the same methods without importing it, for one engine's
/// connection struct (a `conn` field), with `$this => $label` naming the
/// database in error messages.
macro_rules! connection_statements {
    ($db:ty, $this:ident => $label:expr) => {
        impl $crate::source::RunSql for $db {
            fn exec(
                &mut self,
                sql: &str,
            ) -> impl std::future::Future<Output = $crate::Result<()>> + Send {
                <$db>::exec(self, sql)
            }

            fn count(
                &mut self,
                sql: &str,
            ) -> impl std::future::Future<Output = $crate::Result<u64>> + Send {
                <$db>::count(self, sql)
            }
        }

        impl $db {
            pub async fn exec(&mut self, sql: &str) -> $crate::Result<()> {
                use sqlx::Executor;
                use $crate::error::Context;
                let done = self.conn.execute(sql).await.map(|_| ());
                let $this = &*self;
                done.context(|| format!("{sql} on {}", $label))
            }

            pub async fn count(&mut self, sql: &str) -> $crate::Result<u64> {
                use $crate::error::Context;
                let n = sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&mut self.conn)
                    .await;
                let $this = &*self;
                n.map(|n| n.max(0) as u64)
                    .context(|| format!("{sql} on {}", $label))
            }
        }
    };
}

pub mod mysql;
pub mod postgres;
pub mod sqlite;

/// A parsed source or destination URL.
#[derive(Debug, Clone)]
pub enum SourceUrl {
    /// `sqlite:///abs/path.db` or `sqlite://relative.db`.
    Sqlite(std::path::PathBuf),
    /// `postgres://…` (kept whole: it may hold a password).
    Postgres(Secret<String>),
    /// `mysql://…` or `mariadb://…` (kept whole: it may hold a password).
    Mysql(Secret<String>),
}

impl SourceUrl {
    pub fn parse(url: &Secret<String>) -> Result<Self> {
        let raw = url.expose();
        if let Some(path) = raw.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or("");
            if path.is_empty() {
                return Err(Error::invalid(
                    "sqlite URL without a path: use sqlite:///abs/path.db or sqlite://relative.db",
                ));
            }
            return Ok(SourceUrl::Sqlite(path.into()));
        }
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(SourceUrl::Postgres(url.clone()));
        }
        if raw.starts_with("mysql://") || raw.starts_with("mariadb://") {
            return Ok(SourceUrl::Mysql(url.clone()));
        }
        Err(Error::invalid(format!(
            "unsupported database URL {:?}: use sqlite:///path.db, postgres://user@host:port/db or mysql://user@host:port/db",
            crate::secret::redact_url(raw)
        )))
    }

    /// The URL for display and manifests: no password.
    pub fn display(&self) -> String {
        match self {
            SourceUrl::Sqlite(p) => format!("sqlite://{}", p.display()),
            SourceUrl::Postgres(url) | SourceUrl::Mysql(url) => {
                crate::secret::redact_url(url.expose())
            }
        }
    }

    /// The engine behind the URL.
    pub fn engine(&self) -> crate::model::Engine {
        match self {
            SourceUrl::Sqlite(_) => crate::model::Engine::Sqlite,
            SourceUrl::Postgres(_) => crate::model::Engine::Postgres,
            SourceUrl::Mysql(_) => crate::model::Engine::Mysql,
        }
    }
}

/// A table as the console lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TableSummary {
    /// `table` (SQLite) or `schema.table` (PostgreSQL).
    pub name: String,
    pub rows: u64,
    /// False when `rows` is PostgreSQL's estimate (big tables: counting would scan them).
    pub rows_exact: bool,
    /// (name, declared type) in table order.
    pub columns: Vec<(String, String)>,
    /// Primary-key columns.
    pub key: Vec<String>,
}

/// Connects to a source and lists its tables (what a backup would take), read-only.
pub async fn inspect(url: &Secret<String>) -> Result<Vec<TableSummary>> {
    let parsed = SourceUrl::parse(url)?;
    match &parsed {
        SourceUrl::Sqlite(path) => {
            let mut db = sqlite::SqliteDb::open_read(path).await?;
            let catalog = db.discover().await?;
            let mut out = Vec::new();
            for t in catalog.tables {
                let rows = db.count_rows(&t.name).await?;
                let mut key: Vec<_> = t.schema.columns.iter().filter(|c| c.pk > 0).collect();
                key.sort_by_key(|c| c.pk);
                out.push(TableSummary {
                    name: t.name.clone(),
                    rows,
                    rows_exact: true,
                    columns: t
                        .schema
                        .columns
                        .iter()
                        .map(|c| (c.name.clone(), c.decl_type.clone()))
                        .collect(),
                    key: key.iter().map(|c| c.name.clone()).collect(),
                });
            }
            Ok(out)
        }
        SourceUrl::Mysql(secret) => {
            let mut db = mysql::MyDb::connect(secret, parsed.display()).await?;
            let catalog = db.discover().await?;
            let mut out = Vec::new();
            for t in catalog.tables {
                let rows = db.count_rows(&t.name).await?;
                out.push(TableSummary {
                    name: t.name.clone(),
                    rows,
                    rows_exact: true,
                    columns: t
                        .schema
                        .columns
                        .iter()
                        .map(|c| (c.name.clone(), c.decl_type.clone()))
                        .collect(),
                    key: t.pk.clone(),
                });
            }
            Ok(out)
        }
        SourceUrl::Postgres(secret) => {
            let mut db = postgres::PgDb::connect(secret, parsed.display()).await?;
            let catalog = db.discover().await?;
            let mut out = Vec::new();
            for t in catalog.tables {
                let (rows, rows_exact) = db.count_rows(&t.table.schema, &t.table.name).await?;
                out.push(TableSummary {
                    name: t.name.clone(),
                    rows,
                    rows_exact,
                    columns: t
                        .table
                        .columns
                        .iter()
                        .map(|c| (c.name.clone(), c.type_sql.clone()))
                        .collect(),
                    key: t.pk.clone(),
                });
            }
            Ok(out)
        }
    }
}
