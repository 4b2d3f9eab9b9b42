//! PostgreSQL: discovery from the catalogs, consistent reads with COPY, and restore.
//!
//! A backup runs in one `REPEATABLE READ READ ONLY` transaction on one connection, so all
//! tables, their schema and their sequences come from one snapshot. Rows travel in COPY
//! text format (`COPY (SELECT … ORDER BY pk) TO STDOUT`), which is lossless for every
//! type (PostgreSQL 12+ prints floats exactly) and is what `COPY … FROM STDIN` reads back.

use super::SourceDb;
use crate::error::Context;
use crate::model::{ConstraintKind, Identity, PgColumn, PgConstraint, PgEnum, PgTable};
use crate::secret::Secret;
use crate::{Error, Result};
use futures::{Stream, StreamExt};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

/// `"name"` with embedded quotes doubled.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

/// Splits `schema.table` (the name tables have in selections and manifests); a name
/// without a dot is in `public`.
pub fn split_name(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

pub struct PgDb {
    pub conn: PgConnection,
    pub display: String,
    /// What `sslmode` asked to check of the server's certificate.
    verified: super::link::Verified,
    /// Connected over a Unix socket.
    socket: bool,
}

#[derive(Debug, Clone)]
pub struct PgTableInfo {
    /// `schema.table`.
    pub name: String,
    pub table: PgTable,
    pub pk: Vec<String>,
    /// Columns with stored data (generated columns excluded).
    pub data_columns: Vec<String>,
    /// Tables this one references (`schema.table`).
    pub references: Vec<String>,
    /// `pg_class.reltuples` and `pg_relation_size` when the catalog was read, for
    /// [`super::SourceDb::estimate_rows`] without a query per table.
    pub stats: Option<(f32, i64)>,
}

/// Owned sequences whose positions one query reads (a `UNION ALL` of this many).
const SEQUENCES_PER_QUERY: usize = 500;

pub type PgCatalog = super::Catalog<PgTableInfo>;

discovered_table!(
    PgTableInfo,
    |t| key: t.pk.clone(),
    columns: t.table.columns.iter().map(|c| (c.name.clone(), c.type_sql.clone())).collect(),
);

impl super::SourceDb for PgDb {
    type Table = PgTableInfo;

    async fn begin_snapshot(&mut self) -> Result<()> {
        self.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // The snapshot is taken at the first statement.
        self.exec("SELECT 1").await
    }

    /// Reads everything with `search_path` set to `pg_catalog` alone, so every name the
    /// server prints (types, functions in defaults and checks, views' tables) is
    /// schema-qualified and means the same thing on a destination whatever its own
    /// search path (what pg_dump does).
    async fn discover(&mut self) -> Result<PgCatalog> {
        let path: String = sqlx::query_scalar("SELECT current_setting('search_path')")
            .fetch_one(&mut self.conn)
            .await
            .context(|| "reading search_path".into())?;
        self.exec("SELECT set_config('search_path', 'pg_catalog', false)")
            .await?;
        let result = self.discover_qualified().await;
        let reset = self
            .exec(&format!(
                "SELECT set_config('search_path', {}, false)",
                super::sql_string(&path)
            ))
            .await;
        let cat = result?;
        reset?;
        Ok(cat)
    }

    fn count_table(
        &mut self,
        t: &PgTableInfo,
    ) -> impl std::future::Future<Output = Result<(u64, bool)>> + Send {
        self.count_rows(&t.table.schema, &t.table.name)
    }

    /// `pg_class.reltuples`; for a table never vacuumed or analyzed (-1) a count when
    /// it is small (under 64 MB), else unknown.
    async fn estimate_rows(&mut self, t: &PgTableInfo) -> Result<Option<u64>> {
        let rel = qualified(&t.table.schema, &t.table.name);
        // Read with the catalog (one query for every table).
        if let Some((estimate, size)) = t.stats {
            return if estimate >= 0.0 {
                Ok(Some(estimate as u64))
            } else if size < 64 << 20 {
                Ok(Some(self.count_all(&rel).await?))
            } else {
                Ok(None)
            };
        }
        // to_regclass, not ::regclass: a table dropped meanwhile gives no row, never an
        // error (which would abort the backup's snapshot transaction).
        let found: Option<(f32, i64)> = sqlx::query_as(
            "SELECT reltuples, pg_relation_size(oid) FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(&rel)
        .fetch_optional(&mut self.conn)
        .await
        .context(|| format!("estimating rows of {rel}"))?;
        let Some((estimate, size)) = found else {
            return Ok(None);
        };
        if estimate >= 0.0 {
            Ok(Some(estimate as u64))
        } else if size < 64 << 20 {
            Ok(Some(self.count_all(&rel).await?))
        } else {
            Ok(None)
        }
    }
}

impl PgDb {
    async fn discover_qualified(&mut self) -> Result<PgCatalog> {
        let mut cat = PgCatalog::default();
        let rels: Vec<(i64, String, String)> = sqlx::query_as(&format!(
            "SELECT c.oid::int8, n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind = 'r' AND {USER_SCHEMAS} AND NOT EXISTS (
               SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e')
             ORDER BY 2, 3"
        ))
        .fetch_all(&mut self.conn)
        .await
        .context(|| "reading pg_class".into())?;
        let infos = self.tables(&rels).await?;
        let mut tables: Vec<(i64, PgTableInfo)> = rels.iter().map(|r| r.0).zip(infos).collect();
        let enums: Vec<(String, String, Vec<String>)> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, t.typname::text, array_agg(e.enumlabel::text ORDER BY e.enumsortorder)
             FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid JOIN pg_namespace n ON n.oid = t.typnamespace
             WHERE {USER_SCHEMAS} AND NOT EXISTS (
               SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
             GROUP BY 1, 2 ORDER BY 1, 2"
        ))
        .fetch_all(&mut self.conn)
        .await
        .context(|| "reading enum types".into())?;
        cat.enums = enums
            .into_iter()
            .map(|(schema, name, labels)| PgEnum {
                schema,
                name,
                labels,
            })
            .collect();
        cat.objects = super::pg_schema::discover(self, &mut tables, &mut cat.skipped).await?;
        cat.tables = tables.into_iter().map(|(_, t)| t).collect();
        Ok(cat)
    }
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

connection_statements!(PgDb, db => db.display);

impl PgDb {
    pub async fn connect(url: &Secret<String>, display: String) -> Result<Self> {
        // sqlx errors may quote the URL; keep the password out of messages.
        super::link::tls_ready();
        let clean = |e: sqlx::Error| {
            let msg = super::link::with_advice(e.to_string().replace(url.expose(), &display));
            Error::invalid(format!("cannot connect to {display}: {msg}"))
        };
        // A backup reads whole tables: sqlx's "slow statement" warnings would only be
        // noise in the user's terminal and logs.
        let opts = url
            .expose()
            .parse::<PgConnectOptions>()
            .map_err(clean)?
            .disable_statement_logging();
        use super::link::Verified;
        use sqlx::postgres::PgSslMode;
        let verified = match opts.get_ssl_mode() {
            PgSslMode::VerifyFull => Verified::CaAndHost,
            PgSslMode::VerifyCa => Verified::Ca,
            _ => Verified::Nothing,
        };
        let socket = opts.get_socket().is_some() || opts.get_host().starts_with('/');
        let conn = PgConnection::connect_with(&opts).await.map_err(clean)?;
        Ok(PgDb {
            conn,
            display,
            verified,
            socket,
        })
    }

    /// Whether this connection is encrypted, and what was verified of the server.
    pub async fn link(&mut self) -> Result<super::link::Link> {
        use super::link::Link;
        if self.socket {
            return Ok(Link::LocalSocket);
        }
        let ssl: Option<(bool, Option<String>)> = sqlx::query_as(
            "SELECT ssl, version::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .fetch_optional(&mut self.conn)
        .await
        .context(|| format!("reading pg_stat_ssl on {}", self.display))?;
        let protocol = match ssl {
            Some((true, version)) => Some(version.unwrap_or_else(|| "TLS".into())),
            _ => None,
        };
        Ok(Link::of_network(protocol, self.verified))
    }

    /// Like [`super::SourceDb::begin_snapshot`], and returns where the snapshot sits in the
    /// source's change history (None where the server cannot say, e.g. a standby or a
    /// PostgreSQL-compatible engine without these functions).
    pub async fn begin_snapshot_at(&mut self) -> Result<Option<crate::model::PgPoint>> {
        // Before the transaction: the WAL position and the capture slots that exist now
        // exist before the snapshot is taken.
        // The server's history, where the role may read it (PostgreSQL-compatible engines
        // and restricted roles may not): asked outside the transaction, so a refusal
        // costs nothing but the faster incremental read.
        let history: Option<(String, String)> = sqlx::query_as(
            "SELECT system_identifier::text, substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) FROM pg_control_system()",
        )
        .fetch_one(&mut self.conn)
        .await
        .ok();
        let (system_id, timeline) = match history {
            Some((id, tli)) => (id.parse().ok(), u32::from_str_radix(&tli, 16).ok()),
            None => (None, None),
        };
        let before: std::result::Result<(String, Vec<String>), sqlx::Error> = async {
            let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
                .fetch_one(&mut self.conn)
                .await?;
            let slots: Vec<String> = sqlx::query_scalar(
                "SELECT slot_name::text FROM pg_replication_slots \
                 WHERE slot_name LIKE 'tablesafe%' AND database = current_database() ORDER BY 1",
            )
            .fetch_all(&mut self.conn)
            .await?;
            Ok((lsn, slots))
        }
        .await;
        self.exec("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        // The first statement takes the snapshot; txid_current_snapshot() describes it.
        let xids: std::result::Result<String, sqlx::Error> =
            sqlx::query_scalar("SELECT txid_current_snapshot()::text")
                .fetch_one(&mut self.conn)
                .await;
        match (before, xids) {
            (Ok((lsn, slots)), Ok(xids)) => Ok(crate::capture::parse_lsn(&lsn)
                .zip(crate::model::XidSnapshot::parse(&xids).ok())
                .map(|(wal_lsn, xid_snapshot)| crate::model::PgPoint {
                    xid_snapshot,
                    wal_lsn,
                    slots,
                    system_id,
                    timeline,
                })),
            (_, Ok(_)) => Ok(None),
            (_, Err(_)) => {
                // The function is missing: the transaction is aborted; start it again.
                self.exec("ROLLBACK").await?;
                self.begin_snapshot().await?;
                Ok(None)
            }
        }
    }

    pub async fn table_exists(&mut self, schema: &str, name: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)",
        )
        .bind(schema)
        .bind(name)
        .fetch_one(&mut self.conn)
        .await
        .context(|| format!("looking up {schema}.{name}"))
    }

    /// Rows of a table: PostgreSQL's estimate for big tables (`false`), else a count.
    pub async fn count_rows(&mut self, schema: &str, name: &str) -> Result<(u64, bool)> {
        let rel = qualified(schema, name);
        let estimate: f64 =
            sqlx::query_scalar::<_, f32>("SELECT reltuples FROM pg_class WHERE oid = $1::regclass")
                .bind(&rel)
                .fetch_one(&mut self.conn)
                .await
                .context(|| format!("estimating rows of {rel}"))?
                .into();
        if estimate >= 100_000.0 {
            return Ok((estimate as u64, false));
        }
        Ok((self.count_all(&rel).await?, true))
    }

    pub async fn schema_exists(&mut self, schema: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
        )
        .bind(schema)
        .fetch_one(&mut self.conn)
        .await
        .context(|| format!("looking up schema {schema}"))
    }

    pub async fn type_exists(&mut self, schema: &str, name: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname = $1 AND t.typname = $2)",
        )
        .bind(schema)
        .bind(name)
        .fetch_one(&mut self.conn)
        .await
        .context(|| format!("looking up type {schema}.{name}"))
    }

    /// The sequence of an identity column.
    pub async fn serial_sequence(&mut self, table: &str, column: &str) -> Result<String> {
        sqlx::query_scalar::<_, Option<String>>("SELECT pg_get_serial_sequence($1, $2)")
            .bind(table)
            .bind(column)
            .fetch_one(&mut self.conn)
            .await
            .context(|| format!("finding the sequence of {table}.{column}"))?
            .ok_or_else(|| Error::Other(format!("{table}.{column} has no sequence")))
    }

    /// Whether a relation named as SQL text (`"Sales".items`) exists.
    pub async fn relation_exists(&mut self, rel: &str) -> Result<bool> {
        sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
            .bind(rel)
            .fetch_one(&mut self.conn)
            .await
            .context(|| format!("looking for {rel}"))
    }

    pub async fn count_all(&mut self, rel: &str) -> Result<u64> {
        self.count(&format!("SELECT count(*) FROM {rel}")).await
    }

    /// After captured inserts were replayed on a restored table: moves each sequence
    /// its columns own to at least the column's largest value (sequences are not
    /// captured), so the next insert does not collide.
    pub async fn catch_up_sequences(
        &mut self,
        rel: &str,
        entry: &crate::model::TableEntry,
        columns: &[String],
    ) -> Result<()> {
        let Some(def) = &entry.schema.postgres else {
            return Ok(());
        };
        for (_, column, _, _) in &def.sequences {
            if !columns.contains(column) {
                continue;
            }
            let seq = self.serial_sequence(rel, column).await?;
            let col = quote(column);
            let sql = format!(
                "SELECT setval($1::regclass, GREATEST((SELECT last_value FROM {seq}), max({col})::bigint)) \
                 FROM {rel} HAVING max({col}) IS NOT NULL"
            );
            sqlx::query(&sql)
                .bind(&seq)
                .execute(&mut self.conn)
                .await
                .context(|| format!("moving sequence {seq} past {rel}.{column}"))?;
        }
        Ok(())
    }

    pub async fn setval(&mut self, sequence: &str, value: i64, is_called: bool) -> Result<()> {
        sqlx::query("SELECT setval($1::regclass, $2, $3)")
            .bind(sequence)
            .bind(value)
            .bind(is_called)
            .execute(&mut self.conn)
            .await
            .map(|_| ())
            .context(|| format!("setting sequence {sequence}"))
    }

    pub(super) async fn table(
        &mut self,
        oid: i64,
        schema: &str,
        name: &str,
    ) -> Result<PgTableInfo> {
        let rel = [(oid, schema.to_string(), name.to_string())];
        let mut found = self.tables(&rel).await?;
        found
            .pop()
            .ok_or_else(|| Error::Other(format!("{schema}.{name} vanished while being read")))
    }

    /// The definitions of the tables `rels` (oid, schema, name), in that order. A
    /// fixed number of catalog queries whatever the number of tables (each asks for
    /// every table at once, ordered by table), plus one per [`SEQUENCES_PER_QUERY`]
    /// owned sequences for their positions: thousands of small tables cost a few round
    /// trips, not several each (issue 28).
    pub(super) async fn tables(
        &mut self,
        rels: &[(i64, String, String)],
    ) -> Result<Vec<PgTableInfo>> {
        use std::collections::HashMap;
        let what = || format!("reading the definitions of {} tables", rels.len());
        let oids: Vec<i64> = rels.iter().map(|r| r.0).collect();
        /// Rows of one catalog query grouped by table oid, in the query's order.
        fn by_table<T>(rows: Vec<(i64, T)>) -> HashMap<i64, Vec<T>> {
            let mut out: HashMap<i64, Vec<T>> = HashMap::new();
            for (oid, row) in rows {
                out.entry(oid).or_default().push(row);
            }
            out
        }
        type ColumnRow = (String, String, bool, Option<String>, String, String);
        let cols: Vec<(i64, ColumnRow)> = sqlx::query_as::<_, (i64, String, String, bool, Option<String>, String, String)>(
            "SELECT a.attrelid::int8, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid),
                    a.attidentity::text, a.attgenerated::text
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
             WHERE a.attrelid = ANY($1::int8[]::oid[]) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attrelid, a.attnum",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?
        .into_iter()
        .map(|(o, a, b, c, d, e, f)| (o, (a, b, c, d, e, f)))
        .collect();
        let mut cols = by_table(cols);
        let constraints: Vec<(i64, (String, String, String))> = sqlx::query_as::<_, (i64, String, String, String)>(
            "SELECT conrelid::int8, conname::text, contype::text, pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = ANY($1::int8[]::oid[]) AND conislocal AND conparentid = 0
             ORDER BY conrelid, CASE contype WHEN 'p' THEN 0 WHEN 'u' THEN 1 WHEN 'c' THEN 2 ELSE 3 END, conname",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?
        .into_iter()
        .map(|(o, a, b, c)| (o, (a, b, c)))
        .collect();
        let mut constraints = by_table(constraints);
        let pks: Vec<(i64, String)> = sqlx::query_as(
            "SELECT i.indrelid::int8, a.attname::text FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE i.indrelid = ANY($1::int8[]::oid[]) AND i.indisprimary ORDER BY i.indrelid, k.ord",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?;
        let mut pks = by_table(pks);
        let indexes: Vec<(i64, (String, String))> = sqlx::query_as::<_, (i64, String, String)>(
            "SELECT i.indrelid::int8, c.relname::text, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = ANY($1::int8[]::oid[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid)
               AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
             ORDER BY i.indrelid, 2",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?
        .into_iter()
        .map(|(o, a, b)| (o, (a, b)))
        .collect();
        let mut indexes = by_table(indexes);
        let references: Vec<(i64, String)> = sqlx::query_as(
            "SELECT DISTINCT k.conrelid::int8, n.nspname || '.' || c.relname FROM pg_constraint k JOIN pg_class c ON c.oid = k.confrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE k.conrelid = ANY($1::int8[]::oid[]) AND k.contype = 'f' ORDER BY 1, 2",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?;
        let mut references = by_table(references);
        let owned: Vec<(i64, (String, String))> = sqlx::query_as::<_, (i64, String, String)>(
            "SELECT d.refobjid::int8, s.oid::regclass::text, a.attname::text FROM pg_depend d
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($1::int8[]::oid[]) AND d.deptype IN ('a', 'i') ORDER BY 1, 2",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?
        .into_iter()
        .map(|(o, a, b)| (o, (a, b)))
        .collect();
        // Positions of all owned sequences, many per query (a sequence is a relation
        // of its own: no catalog lists them all at once with is_called).
        let mut positions: HashMap<String, (i64, bool)> = HashMap::new();
        let regclasses: Vec<&String> = owned.iter().map(|(_, (r, _))| r).collect();
        for group in regclasses.chunks(SEQUENCES_PER_QUERY) {
            // regclass text is already quoted and qualified as needed.
            let sql = group
                .iter()
                .enumerate()
                .map(|(i, r)| format!("SELECT {i}::int4, last_value, is_called FROM {r}"))
                .collect::<Vec<_>>()
                .join(" UNION ALL ");
            let rows: Vec<(i32, i64, bool)> = sqlx::query_as(&sql)
                .fetch_all(&mut self.conn)
                .await
                .context(what)?;
            for (i, last, called) in rows {
                positions.insert(group[i as usize].clone(), (last, called));
            }
        }
        let mut sequences: HashMap<i64, Vec<(String, String, i64, bool)>> = HashMap::new();
        for (oid, (regclass, column)) in owned {
            let (last, called) = *positions
                .get(&regclass)
                .ok_or_else(|| Error::Other(format!("no position read for sequence {regclass}")))?;
            sequences
                .entry(oid)
                .or_default()
                .push((regclass, column, last, called));
        }
        let collations: Vec<(i64, (String, String))> = sqlx::query_as::<_, (i64, String, String)>(
            "SELECT a.attrelid::int8, a.attname::text, a.attcollation::regcollation::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
             WHERE a.attrelid = ANY($1::int8[]::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
               AND a.attcollation <> 0 AND a.attcollation <> t.typcollation ORDER BY a.attrelid, a.attnum",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?
        .into_iter()
        .map(|(o, a, b)| (o, (a, b)))
        .collect();
        let mut collations = by_table(collations);
        let stats: Vec<(i64, f32, i64)> = sqlx::query_as(
            "SELECT oid::int8, reltuples, pg_relation_size(oid) FROM pg_class WHERE oid = ANY($1::int8[]::oid[])",
        )
        .bind(&oids)
        .fetch_all(&mut self.conn)
        .await
        .context(what)?;
        let stats: HashMap<i64, (f32, i64)> =
            stats.into_iter().map(|(o, t, s)| (o, (t, s))).collect();

        let mut out = Vec::with_capacity(rels.len());
        for (oid, schema, name) in rels {
            let columns: Vec<PgColumn> = cols
                .remove(oid)
                .unwrap_or_default()
                .into_iter()
                .map(|(name, type_sql, not_null, default, identity, generated)| {
                    let is_generated = generated == "s";
                    Ok(PgColumn {
                        name,
                        type_sql,
                        not_null,
                        default: if is_generated { None } else { default.clone() },
                        identity: Identity::from_catalog(&identity)?,
                        generated: if is_generated { default } else { None },
                    })
                })
                .collect::<Result<_>>()?;
            let pk = pks.remove(oid).unwrap_or_default();
            let data_columns = columns
                .iter()
                .filter(|c| c.generated.is_none())
                .map(|c| c.name.clone())
                .collect();
            out.push(PgTableInfo {
                name: format!("{schema}.{name}"),
                table: PgTable {
                    schema: schema.clone(),
                    name: name.clone(),
                    pk: pk.clone(),
                    columns,
                    constraints: constraints
                        .remove(oid)
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(name, kind, definition)| PgConstraint {
                            name,
                            kind: ConstraintKind::from_catalog(&kind),
                            definition,
                        })
                        .collect(),
                    indexes: indexes.remove(oid).unwrap_or_default(),
                    sequences: sequences.remove(oid).unwrap_or_default(),
                    needs: Vec::new(),
                    collations: collations.remove(oid).unwrap_or_default(),
                },
                pk,
                data_columns,
                references: references.remove(oid).unwrap_or_default(),
                stats: stats.get(oid).copied(),
            });
        }
        Ok(out)
    }

    /// COPY text of `columns` of a table, in primary-key order when it has one.
    pub fn copy_out_sql(t: &PgTableInfo, columns: &[String]) -> String {
        let cols = column_list(columns);
        let rel = qualified(&t.table.schema, &t.table.name);
        if t.pk.is_empty() {
            format!("COPY {rel} ({cols}) TO STDOUT")
        } else {
            let order = column_list(&t.pk);
            format!("COPY (SELECT {cols} FROM {rel} ORDER BY {order}) TO STDOUT")
        }
    }

    /// The data of `sql` (a `COPY … TO STDOUT`) as the server sends it: each piece is
    /// one message, one row (a row of many megabytes is one piece, not copied again).
    pub async fn copy_out<'a>(
        &'a mut self,
        sql: &'a str,
    ) -> Result<impl Stream<Item = Result<bytes::Bytes>> + 'a> {
        let display = self.display.clone();
        let stream = self
            .conn
            .copy_out_raw(sql)
            .await
            .context(|| format!("{sql} on {display}"))?;
        Ok(stream.map(move |b| b.context(|| format!("reading COPY data: {sql}"))))
    }
}

/// Creates the temporary table `name` with the types of `columns` (SQL list) of `rel`,
/// dropped at commit, and COPYs `lines` (COPY text) into it.
pub async fn copy_into_temp(
    conn: &mut PgConnection,
    name: &str,
    columns: &str,
    rel: &str,
    lines: &[u8],
) -> Result<()> {
    let create = format!(
        "CREATE TEMP TABLE {name} ON COMMIT DROP AS SELECT {columns} FROM {rel} WITH NO DATA"
    );
    sqlx::Executor::execute(&mut *conn, create.as_str())
        .await
        .context(|| create.clone())?;
    let what = || format!("filling {name}");
    let mut copy = conn
        .copy_in_raw(&format!("COPY {name} FROM STDIN"))
        .await
        .context(what)?;
    for piece in lines.chunks(1 << 20) {
        copy.send(piece).await.context(what)?;
    }
    copy.finish().await.map(|_| ()).context(what)
}

/// Columns quoted and separated by commas, for a select list or an ORDER BY.
pub fn column_list(columns: &[String]) -> String {
    columns
        .iter()
        .map(|c| quote(c))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CREATE TABLE` for `t` under a new name, with columns, defaults and identity, but no
/// constraints (added after the data, see [`constraint_sql`]). `seq_renames` maps old
/// sequence regclass text to new, for serial defaults.
/// The columns a restore of `columns` creates: those, plus generated columns when every
/// stored column is restored (they are computed from the others).
fn restored_columns<'a>(
    t: &'a PgTable,
    columns: &'a [String],
) -> impl Iterator<Item = &'a PgColumn> {
    let all = columns.len() == t.columns.iter().filter(|c| c.generated.is_none()).count();
    t.columns
        .iter()
        .filter(move |c| columns.contains(&c.name) || c.generated.is_some() && all)
}

/// A column's default or identity clause, with serial sequences renamed.
fn default_clause(c: &PgColumn, seq_renames: &[(String, String)]) -> Option<String> {
    match c.identity {
        Identity::Always => Some("GENERATED ALWAYS AS IDENTITY".into()),
        Identity::ByDefault => Some("GENERATED BY DEFAULT AS IDENTITY".into()),
        Identity::None => c.default.as_ref().map(|d| {
            let mut d = d.clone();
            for (old, new) in seq_renames {
                d = d.replace(
                    &format!("'{}'::regclass", old.replace('\'', "''")),
                    &format!("'{}'::regclass", new.replace('\'', "''")),
                );
            }
            format!("DEFAULT {d}")
        }),
    }
}

/// `CREATE TABLE` for a restore. `bare` leaves out defaults and identities (a staging
/// table loaded on other connections, which cannot see sequences this transaction
/// creates): [`column_defaults_sql`] adds them afterwards.
pub fn create_table_sql(
    t: &PgTable,
    schema: &str,
    name: &str,
    columns: &[String],
    seq_renames: &[(String, String)],
    bare: bool,
) -> String {
    let defs: Vec<String> = restored_columns(t, columns)
        .map(|c| {
            let mut s = format!("{} {}", quote(&c.name), c.type_sql);
            if let Some((_, collation)) = t.collations.iter().find(|(n, _)| n == &c.name) {
                s.push_str(&format!(" COLLATE {collation}"));
            }
            if let Some(g) = &c.generated {
                s.push_str(&format!(" GENERATED ALWAYS AS ({g}) STORED"));
            }
            if !bare && let Some(d) = default_clause(c, seq_renames) {
                s.push(' ');
                s.push_str(&d);
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    format!(
        "CREATE TABLE {} ({})",
        qualified(schema, name),
        defs.join(", ")
    )
}

/// The defaults and identities a `bare` table lacks, as `ALTER TABLE` statements (catalog
/// changes only: no rewrite).
pub fn column_defaults_sql(
    t: &PgTable,
    schema: &str,
    name: &str,
    columns: &[String],
    seq_renames: &[(String, String)],
) -> Vec<String> {
    restored_columns(t, columns)
        .filter_map(|c| {
            let clause = default_clause(c, seq_renames)?;
            let action = if c.identity == Identity::None {
                format!("SET {clause}")
            } else {
                format!("ADD {clause}")
            };
            Some(format!(
                "ALTER TABLE {} ALTER COLUMN {} {action}",
                qualified(schema, name),
                quote(&c.name)
            ))
        })
        .collect()
}

/// `ALTER TABLE … ADD CONSTRAINT` for one constraint, renamed when the table is.
pub fn constraint_sql(schema: &str, table: &str, name: &str, def: &str) -> String {
    format!(
        "ALTER TABLE {} ADD CONSTRAINT {} {def}",
        qualified(schema, table),
        quote(name)
    )
}

/// Rebuilds a `pg_get_indexdef` statement for another table and index name.
pub fn index_sql(def: &str, schema: &str, table: &str, name: &str) -> Option<String> {
    let unique = def.starts_with("CREATE UNIQUE INDEX");
    let using = def.find(" USING ")?;
    Some(format!(
        "CREATE {}INDEX {} ON {}{}",
        if unique { "UNIQUE " } else { "" },
        quote(name),
        qualified(schema, table),
        &def[using..]
    ))
}

/// The table a `FOREIGN KEY (…) REFERENCES rel(…)` constraint definition names, as
/// `pg_get_constraintdef` printed it (quoted and qualified as needed).
pub fn referenced_relation(condef: &str) -> Option<String> {
    let rest = &condef[condef.find(" REFERENCES ")? + " REFERENCES ".len()..];
    let mut in_quotes = false;
    for (i, c) in rest.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            '(' if !in_quotes => return Some(rest[..i].trim().to_string()),
            _ => {}
        }
    }
    None
}

/// Counts rows in COPY text: one line per row (newlines inside values are escaped).
pub fn count_lines(bytes: &[u8]) -> u64 {
    memchr::memchr_iter(b'\n', bytes).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_definitions_move_to_a_new_table() {
        let def = "CREATE UNIQUE INDEX \"odd idx\" ON \"my schema\".\"t\" USING btree (lower(name)) WHERE (x > 1)";
        assert_eq!(
            index_sql(def, "s", "t2", "t2_odd idx").unwrap(),
            "CREATE UNIQUE INDEX \"t2_odd idx\" ON \"s\".\"t2\" USING btree (lower(name)) WHERE (x > 1)"
        );
    }

    #[test]
    fn foreign_keys_name_the_table_they_reference() {
        assert_eq!(
            referenced_relation("FOREIGN KEY (item) REFERENCES \"Sales\".items(id)").as_deref(),
            Some("\"Sales\".items")
        );
        assert_eq!(
            referenced_relation(
                "FOREIGN KEY (a, b) REFERENCES \"odd (name\"(x, y) ON DELETE CASCADE"
            )
            .as_deref(),
            Some("\"odd (name\"")
        );
        assert_eq!(referenced_relation("CHECK (x > 0)"), None);
    }

    #[test]
    fn names_split_on_the_first_dot() {
        assert_eq!(
            split_name("sales.orders"),
            ("sales".into(), "orders".into())
        );
        assert_eq!(split_name("orders"), ("public".into(), "orders".into()));
    }
}
