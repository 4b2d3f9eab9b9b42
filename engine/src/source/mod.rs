//! Table stores: connection URLs and the engines behind them.

use crate::secret::Secret;
use crate::{Error, Result};
use std::future::Future;

/// Statements on one engine's connection, for code written once for every engine.
pub trait RunSql: Send {
    /// Runs statements that return no rows.
    fn exec(&mut self, sql: &str) -> impl std::future::Future<Output = Result<()>> + Send;
    /// The number a `SELECT count(*) …` returns.
    fn count(&mut self, sql: &str) -> impl std::future::Future<Output = Result<u64>> + Send;
}

/// [`DiscoveredTable`] for an engine's table struct with `name` and `data_columns`
/// fields; `$key` gives its primary key and `$columns` its declared column types
/// (`$t` names the table in both).
macro_rules! discovered_table {
    ($ty:ty, |$t:ident| key: $key:expr, columns: $columns:expr $(,)?) => {
        impl $crate::source::DiscoveredTable for $ty {
            fn name(&self) -> &String {
                &self.name
            }

            fn key(&self) -> Vec<String> {
                let $t = self;
                $key
            }

            fn data_columns(&self) -> &[String] {
                &self.data_columns
            }

            fn column_types(&self) -> Vec<(String, String)> {
                let $t = self;
                $columns
            }
        }
    };
}

/// (name, declared type) of SQLite and MySQL columns.
fn declared_types(columns: &[crate::model::Column]) -> Vec<(String, String)> {
    columns
        .iter()
        .map(|c| (c.name.clone(), c.decl_type.clone()))
        .collect()
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

/// `'text'` with single quotes doubled: a SQL string literal for the settings and
/// names the catalog readers write into statements.
pub(crate) fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

pub mod identity;
pub mod link;
mod my_schema;
pub mod mysql;
mod pg_schema;
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

pub use tablesafe_types::TableSummary;

/// What [`inspect`] finds: the tables a backup would take, and how the connection to
/// the source is protected.
#[derive(Debug)]
pub struct Inspection {
    pub tables: Vec<TableSummary>,
    pub link: link::Link,
}

/// Connects to a source and lists its tables (what a backup would take), read-only.
pub async fn inspect(url: &Secret<String>) -> Result<Inspection> {
    inspect_counting(url, Count::Rows).await
}

/// How [`inspect_counting`] finds each table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Counted (PostgreSQL estimates big tables): the console's table list.
    Rows,
    /// The database's statistics only, never a scan of a big table: for checking what
    /// a selection takes, which must not scan every table of a big database.
    Estimate,
}

/// [`inspect`], with rows found as `count` says.
pub async fn inspect_counting(url: &Secret<String>, count: Count) -> Result<Inspection> {
    let parsed = SourceUrl::parse(url)?;
    match &parsed {
        SourceUrl::Sqlite(path) => Ok(Inspection {
            tables: summarize(&mut sqlite::SqliteDb::open_read(path).await?, count).await?,
            link: link::Link::LocalFile,
        }),
        SourceUrl::Mysql(secret) => {
            let mut db = mysql::MyDb::connect(secret, parsed.display()).await?;
            Ok(Inspection {
                link: db.link().await?,
                tables: summarize(&mut db, count).await?,
            })
        }
        SourceUrl::Postgres(secret) => {
            let mut db = postgres::PgDb::connect(secret, parsed.display()).await?;
            Ok(Inspection {
                link: db.link().await?,
                tables: summarize(&mut db, count).await?,
            })
        }
    }
}

async fn summarize<D: SourceDb>(db: &mut D, count: Count) -> Result<Vec<TableSummary>> {
    let catalog = db.discover().await?;
    let mut out = Vec::new();
    for t in &catalog.tables {
        let (rows, rows_exact) = match count {
            Count::Rows => db.count_table(t).await?,
            Count::Estimate => (
                db.estimate_rows(t).await?.unwrap_or(0),
                D::ESTIMATE_IS_COUNT,
            ),
        };
        out.push(TableSummary {
            name: t.name().clone(),
            rows,
            rows_exact,
            columns: t.column_types(),
            key: t.key(),
        });
    }
    Ok(out)
}

/// What discovery finds in a source: its tables, in catalog order, its other schema
/// objects in the order a restore makes them, the objects a backup does not carry
/// (with the reason), and PostgreSQL's enum types.
#[derive(Debug)]
pub struct Catalog<T> {
    pub tables: Vec<T>,
    pub objects: Vec<crate::model::SchemaObject>,
    pub skipped: Vec<crate::model::Skipped>,
    pub enums: Vec<crate::model::PgEnum>,
}

impl<T> Default for Catalog<T> {
    fn default() -> Self {
        Catalog {
            tables: Vec::new(),
            objects: Vec::new(),
            skipped: Vec::new(),
            enums: Vec::new(),
        }
    }
}

impl<T: DiscoveredTable> Catalog<T> {
    /// The table of that name, or an error saying `what` misses it.
    pub fn table(&self, name: &str, what: &str) -> Result<&T> {
        self.tables
            .iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| Error::invalid(format!("table {name} is missing {what}")))
    }
}

/// A table as one engine's discovery describes it.
pub trait DiscoveredTable: Send + Sync {
    /// `table` (SQLite, MySQL) or `schema.table` (PostgreSQL).
    fn name(&self) -> &String;
    /// Primary-key columns in key order.
    fn key(&self) -> Vec<String>;
    /// Columns with stored data (generated columns excluded), in table order.
    fn data_columns(&self) -> &[String];
    /// (name, declared type) of every column, in table order.
    fn column_types(&self) -> Vec<(String, String)>;
}

/// One engine's connection, as discovery and the console's table list use it.
pub trait SourceDb: RunSql {
    type Table: DiscoveredTable;
    /// Starts the read transaction (a consistent snapshot) every later read belongs to.
    fn begin_snapshot(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Tables with their definitions; what is not carried goes to `skipped`.
    fn discover(&mut self) -> impl Future<Output = Result<Catalog<Self::Table>>> + Send;
    /// Rows of a table, and whether that is a count (PostgreSQL estimates big tables).
    fn count_table(&mut self, t: &Self::Table) -> impl Future<Output = Result<(u64, bool)>> + Send;
    /// Whether [`Self::estimate_rows`] is an exact count.
    const ESTIMATE_IS_COUNT: bool = false;
    /// Rows of a table from the database's statistics, cheaply (no scan of a big
    /// table): what a backup's progress counts against. None: no statistics.
    fn estimate_rows(
        &mut self,
        t: &Self::Table,
    ) -> impl Future<Output = Result<Option<u64>>> + Send;
}
