//! MySQL and MariaDB (`mysql://user:pass@host:3306/db`, `mariadb://…`): discovery, one
//! consistent read of every table, and the statements a restore needs.
//!
//! **Consistency.** A backup reads everything in one `REPEATABLE READ` transaction
//! started `WITH CONSISTENT SNAPSHOT, READ ONLY` on one connection: InnoDB tables are
//! read as of one instant. (Tables of non-transactional engines such as MyISAM are not
//! covered by that snapshot; they are read as they are at their turn.)
//!
//! **Values.** Rows are stored in the `values` stream format (as SQLite's), each column
//! read in a form that restores exactly: integers as integers (`BIGINT UNSIGNED` as
//! decimal text, it may not fit 64 bits), `FLOAT`/`DOUBLE` as 64-bit floats, `DECIMAL`
//! and every date/time type as their text (zero dates included; the session time zone
//! is UTC, so `TIMESTAMP` values do not move), character types, `ENUM`, `SET` and
//! `JSON` as text (utf8mb4), and `BINARY`/`BLOB`/`BIT`/spatial types as bytes (spatial:
//! MySQL's internal geometry format, which it accepts back as is).
//!
//! **Schema.** `SHOW CREATE TABLE` is kept whole: types, character sets and collations,
//! defaults, generated columns, indexes, foreign keys, the engine and the next
//! `AUTO_INCREMENT` value come back as they were.

use crate::error::Context;
use crate::model::{Column, ObjectKind, Skipped, TableSchema, Value};
use crate::secret::Secret;
use crate::{Error, Result};
use futures::{Stream, StreamExt};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection, MySqlRow};
use sqlx::{ConnectOptions, Connection, Executor, Row, ValueRef};
use std::str::FromStr;

/// `` `name` `` with backticks doubled.
pub fn quote(ident: &str) -> String {
    format!("`{}`", ident.replace('`', "``"))
}

/// The session every tablesafe connection to MySQL uses: UTC, strict (an invalid value
/// is an error, never silently changed), zero dates allowed (they are data), and an
/// explicit 0 in an `AUTO_INCREMENT` column kept as 0.
const SESSION: &str = "SET time_zone = '+00:00', \
     sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION', \
     NAMES utf8mb4";

/// How one column is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadAs {
    Integer,
    Real,
    Text,
    Bytes,
}

/// A table as discovered.
#[derive(Debug, Clone)]
pub struct MyTableInfo {
    pub name: String,
    pub schema: TableSchema,
    /// Stored (non-generated) columns, in table order.
    pub data_columns: Vec<String>,
    /// How each data column is read, and the expression that reads it.
    pub reads: Vec<(ReadAs, String)>,
    pub pk: Vec<String>,
}

pub type MyCatalog = super::Catalog<MyTableInfo>;

discovered_table!(
    MyTableInfo,
    |t| key: t.pk.clone(),
    columns: super::declared_types(&t.schema.columns),
);

impl super::SourceDb for MyDb {
    type Table = MyTableInfo;

    /// Starts the one transaction every read of the backup belongs to.
    async fn begin_snapshot(&mut self) -> Result<()> {
        self.exec("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            .await?;
        self.exec("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            .await
    }

    /// Base tables of the connection's database, its routines, views, triggers and
    /// events (sequences and system-versioned tables are skipped).
    async fn discover(&mut self) -> Result<MyCatalog> {
        let all: Vec<(String, String)> = sqlx::query_as(
            "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
        )
        .fetch_all(&mut self.conn)
        .await
        .context(|| format!("listing tables of {}", self.display))?;
        let mut tables = Vec::new();
        let mut skipped = Vec::new();
        for (name, kind) in all {
            if kind == "VIEW" {
                continue; // carried as an object
            }
            if kind != "BASE TABLE" {
                skipped.push(Skipped {
                    kind: ObjectKind::of_mysql_table_type(&kind),
                    name,
                    reason: "only base tables are backed up".into(),
                });
                continue;
            }
            tables.push(self.table(&name).await?);
        }
        let names: Vec<String> = tables
            .iter()
            .map(|t: &MyTableInfo| t.name.clone())
            .collect();
        let objects = super::my_schema::discover(self, &names, &mut skipped).await?;
        Ok(MyCatalog {
            tables,
            objects,
            skipped,
            enums: Vec::new(),
        })
    }

    async fn count_table(&mut self, t: &MyTableInfo) -> Result<(u64, bool)> {
        Ok((self.count_rows(&t.name).await?, true))
    }

    /// InnoDB's estimate (`COUNT(*)` would scan the table).
    async fn estimate_rows(&mut self, t: &MyTableInfo) -> Result<Option<u64>> {
        let rows: Option<Option<i64>> = sqlx::query_scalar(
            "SELECT CAST(TABLE_ROWS AS SIGNED) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(&t.name)
        .fetch_optional(&mut self.conn)
        .await
        .context(|| format!("estimating rows of {}", t.name))?;
        Ok(rows.flatten().and_then(|n| u64::try_from(n).ok()))
    }
}

pub struct MyDb {
    pub conn: MySqlConnection,
    pub display: String,
    /// What `ssl-mode` asked to check of the server's certificate.
    verified: super::link::Verified,
    /// Connected over a Unix socket.
    socket: bool,
}

connection_statements!(MyDb, db => db.display);

impl MyDb {
    pub async fn connect(url: &Secret<String>, display: String) -> Result<Self> {
        let raw = url.expose();
        let normalized = match raw.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => raw.clone(),
        };
        let opts = MySqlConnectOptions::from_str(&normalized)
            .map_err(|e| Error::invalid(format!("bad MySQL URL {display}: {e}")))?
            .disable_statement_logging();
        use super::link::Verified;
        use sqlx::mysql::MySqlSslMode;
        let verified = match opts.get_ssl_mode() {
            MySqlSslMode::VerifyIdentity => Verified::CaAndHost,
            MySqlSslMode::VerifyCa => Verified::Ca,
            _ => Verified::Nothing,
        };
        let socket = opts.get_socket().is_some();
        super::link::tls_ready();
        let plain = matches!(opts.get_ssl_mode(), MySqlSslMode::Disabled);
        let mut conn = MySqlConnection::connect_with(&opts).await.map_err(|e| {
            let mut msg = super::link::with_advice(e.to_string().replace(raw, &display));
            // MariaDB refuses plain connections under require_secure_transport with
            // the same "Access denied" as a wrong password.
            if plain && msg.contains("Access denied") {
                msg.push_str(". If the server accepts only encrypted connections (require_secure_transport), remove ssl-mode=DISABLED from the URL, or better use ssl-mode=VERIFY_IDENTITY with ssl-ca.");
            }
            Error::invalid(format!("cannot connect to {display}: {msg}"))
        })?;
        conn.execute(SESSION)
            .await
            .context(|| format!("setting up the session on {display}"))?;
        Ok(MyDb {
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
        let version: Option<(String, String)> =
            sqlx::query_as("SHOW SESSION STATUS LIKE 'Ssl_version'")
                .fetch_optional(&mut self.conn)
                .await
                .context(|| format!("reading Ssl_version on {}", self.display))?;
        Ok(Link::of_network(version.map(|(_, v)| v), self.verified))
    }

    pub async fn table_exists(&mut self, name: &str) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
        )
        .bind(name)
        .fetch_one(&mut self.conn)
        .await
        .context(|| format!("looking for table {name}"))?;
        Ok(n > 0)
    }

    /// Tables of other names whose foreign keys reference `name`.
    pub async fn referenced_by(&mut self, name: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT DISTINCT TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND REFERENCED_TABLE_SCHEMA = DATABASE() \
             AND REFERENCED_TABLE_NAME = ? AND TABLE_NAME <> ? ORDER BY TABLE_NAME",
        )
        .bind(name)
        .bind(name)
        .fetch_all(&mut self.conn)
        .await
        .context(|| format!("looking for foreign keys to {name}"))
    }

    pub async fn count_rows(&mut self, name: &str) -> Result<u64> {
        self.count(&format!("SELECT COUNT(*) FROM {}", quote(name)))
            .await
    }

    /// One table as [`Self::discover`] describes it.
    pub async fn describe(&mut self, name: &str) -> Result<MyTableInfo> {
        self.table(name).await
    }

    async fn table(&mut self, name: &str) -> Result<MyTableInfo> {
        let cols: Vec<(String, String, String, String, Option<String>, String)> =
            sqlx::query_as(
                "SELECT COLUMN_NAME, COLUMN_TYPE, DATA_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA \
                 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? \
                 ORDER BY ORDINAL_POSITION",
            )
            .bind(name)
            .fetch_all(&mut self.conn)
            .await
            .context(|| format!("reading the columns of {name}"))?;
        let pk: Vec<String> = sqlx::query_scalar(
            "SELECT COLUMN_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = 'PRIMARY' \
             ORDER BY SEQ_IN_INDEX",
        )
        .bind(name)
        .fetch_all(&mut self.conn)
        .await
        .context(|| format!("reading the primary key of {name}"))?;
        let references: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT REFERENCED_TABLE_NAME FROM information_schema.KEY_COLUMN_USAGE \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND REFERENCED_TABLE_NAME IS NOT NULL \
             AND REFERENCED_TABLE_SCHEMA = DATABASE() ORDER BY 1",
        )
        .bind(name)
        .fetch_all(&mut self.conn)
        .await
        .context(|| format!("reading the foreign keys of {name}"))?;
        let row = sqlx::query(&format!("SHOW CREATE TABLE {}", quote(name)))
            .fetch_one(&mut self.conn)
            .await
            .context(|| format!("reading the definition of {name}"))?;
        let create_sql: String = row
            .try_get_unchecked::<Vec<u8>, _>(1)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .map_err(|e| Error::Other(format!("reading the definition of {name}: {e}")))?;
        let mut columns = Vec::new();
        let mut data_columns = Vec::new();
        let mut reads = Vec::new();
        for (cname, column_type, data_type, nullable, default, extra) in cols {
            let generated = extra.to_uppercase().contains("GENERATED");
            columns.push(Column {
                name: cname.clone(),
                decl_type: column_type.clone(),
                not_null: nullable == "NO",
                default,
                pk: pk
                    .iter()
                    .position(|k| k == &cname)
                    .map(|i| i as u32 + 1)
                    .unwrap_or(0),
            });
            if generated {
                continue;
            }
            let q = quote(&cname);
            let ty = column_type.to_lowercase();
            let read = match data_type.to_lowercase().as_str() {
                "bigint" if ty.contains("unsigned") => (ReadAs::Text, format!("CAST({q} AS CHAR)")),
                "tinyint" | "smallint" | "mediumint" | "int" | "integer" | "bigint" => {
                    (ReadAs::Integer, format!("CAST({q} AS SIGNED)"))
                }
                "float" | "double" | "real" => (ReadAs::Real, format!("CAST({q} AS DOUBLE)")),
                "decimal" | "numeric" | "date" | "datetime" | "timestamp" | "time" | "year" => {
                    (ReadAs::Text, format!("CAST({q} AS CHAR)"))
                }
                "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob"
                | "bit" | "geometry" | "point" | "linestring" | "polygon" | "multipoint"
                | "multilinestring" | "multipolygon" | "geometrycollection" => {
                    (ReadAs::Bytes, q.clone())
                }
                _ => (ReadAs::Text, q.clone()),
            };
            reads.push(read);
            data_columns.push(cname);
        }
        Ok(MyTableInfo {
            name: name.to_string(),
            schema: TableSchema {
                all_columns: true,
                columns,
                create_sql,
                indexes: Vec::new(),
                references: references.into_iter().filter(|r| r != name).collect(),
                postgres: None,
            },
            data_columns,
            reads,
            pk,
        })
    }

    /// `SELECT` of the chosen columns in stream order, in primary-key order.
    pub fn rows_sql(t: &MyTableInfo, columns: &[String]) -> String {
        let exprs: Vec<&str> = t
            .data_columns
            .iter()
            .zip(&t.reads)
            .filter(|(c, _)| columns.contains(c))
            .map(|(_, (_, e))| e.as_str())
            .collect();
        let order = if t.pk.is_empty() {
            String::new()
        } else {
            format!(
                " ORDER BY {}",
                t.pk.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ")
            )
        };
        format!("SELECT {} FROM {}{order}", exprs.join(", "), quote(&t.name))
    }

    /// The rows of `sql` (from [`Self::rows_sql`]) as values, read as `reads` say.
    pub fn rows<'a>(
        &'a mut self,
        sql: &'a str,
        reads: Vec<ReadAs>,
    ) -> impl Stream<Item = Result<Vec<Value>>> + 'a {
        sqlx::query(sql).fetch(&mut self.conn).map(move |row| {
            row.context(|| format!("reading rows: {sql}"))
                .and_then(|r| row_values(&r, &reads))
        })
    }

    /// Inserts rows with one multi-row `INSERT` (`columns` columns each), a prepared
    /// statement (cached per connection: every full batch reuses it) whose parameters
    /// borrow the rows' bytes.
    pub async fn insert_rows(
        &mut self,
        table: &str,
        columns: &[String],
        rows: &[Vec<Value>],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = insert_sql(table, columns, rows.len());
        let mut q = sqlx::query(&sql);
        for row in rows {
            for v in row {
                q = match v {
                    Value::Null => q.bind(None::<&str>),
                    Value::Integer(i) => q.bind(*i),
                    Value::Real(f) => q.bind(*f),
                    // Valid UTF-8 goes as text (the column's character set converts it);
                    // anything else as bytes, stored as they are.
                    Value::Text(t) => match std::str::from_utf8(t) {
                        Ok(s) => q.bind(s),
                        Err(_) => q.bind(t.as_slice()),
                    },
                    Value::Blob(b) => q.bind(b.as_slice()),
                };
            }
        }
        q.execute(&mut self.conn)
            .await
            .map(|_| ())
            .context(|| format!("inserting rows into {table}"))
    }
}

/// `INSERT INTO table (columns) VALUES (?, …), …` for `rows` rows.
fn insert_sql(table: &str, columns: &[String], rows: usize) -> String {
    let one = format!("({})", vec!["?"; columns.len()].join(","));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote(table),
        columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    sql.reserve((one.len() + 1) * rows);
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one);
    }
    sql
}

fn row_values(row: &MySqlRow, reads: &[ReadAs]) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(reads.len());
    for (i, read) in reads.iter().enumerate() {
        let raw = row
            .try_get_raw(i)
            .map_err(|e| Error::Other(e.to_string()))?;
        if raw.is_null() {
            out.push(Value::Null);
            continue;
        }
        let err = |e: sqlx::Error| Error::Other(format!("reading column {}: {e}", i + 1));
        out.push(match read {
            ReadAs::Integer => Value::Integer(row.try_get_unchecked::<i64, _>(i).map_err(err)?),
            ReadAs::Real => Value::Real(row.try_get_unchecked::<f64, _>(i).map_err(err)?),
            ReadAs::Text => Value::Text(row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?),
            ReadAs::Bytes => Value::Blob(row.try_get_unchecked::<Vec<u8>, _>(i).map_err(err)?),
        });
    }
    Ok(out)
}

/// `CREATE TABLE` with just `columns` (their declared types and NOT NULL, and the
/// primary key among them), for a table restored or backed up with some columns.
pub fn create_table_for(name: &str, columns: &[Column]) -> String {
    let mut parts: Vec<String> = columns
        .iter()
        .map(|c| {
            format!(
                "  {} {}{}",
                quote(&c.name),
                c.decl_type,
                if c.not_null { " NOT NULL" } else { "" }
            )
        })
        .collect();
    let pk = crate::model::key_columns(columns);
    if !pk.is_empty() {
        parts.push(format!(
            "  PRIMARY KEY ({})",
            pk.iter().map(|c| quote(c)).collect::<Vec<_>>().join(", ")
        ));
    }
    format!(
        "CREATE TABLE {} (\n{}\n) DEFAULT CHARSET=utf8mb4",
        quote(name),
        parts.join(",\n")
    )
}

/// `CREATE TABLE` of a snapshot's table under another name and without its foreign
/// keys (added once every table is in place, as [`foreign_keys`] lists them).
pub fn create_sql_without_foreign_keys(create_sql: &str, new_name: &str) -> Result<String> {
    let rest = create_sql
        .strip_prefix("CREATE TABLE ")
        .ok_or_else(|| Error::damaged(format!("cannot read table definition {create_sql:?}")))?;
    let after_name = skip_identifier(rest)
        .ok_or_else(|| Error::damaged(format!("cannot read table definition {create_sql:?}")))?;
    let mut lines: Vec<&str> = after_name.lines().collect();
    lines.retain(|l| !is_foreign_key_line(l));
    // The last definition line before `) ENGINE=…` must not end with a comma.
    let mut body = lines.join("\n");
    if let Some(close) = body.rfind("\n)") {
        let head = body[..close].trim_end_matches(',').to_string();
        body = format!("{head}{}", &body[close..]);
    }
    Ok(format!(
        "CREATE TABLE {} {}",
        quote(new_name),
        body.trim_start()
    ))
}

/// [`create_sql_without_foreign_keys`], and the table's secondary B-tree indexes
/// (`KEY`, `UNIQUE KEY`) split off as `ADD …` clauses of one `ALTER TABLE` to run once
/// the rows are in: InnoDB then builds each index by sorting, instead of inserting
/// into every one row by row, and the uniqueness of each `UNIQUE` key is still checked.
/// Indexes stay in the definition when the table has no primary key (InnoDB would
/// cluster on the first unique one) or when one holds the `AUTO_INCREMENT` column
/// (it must be part of a key); full-text and spatial ones stay too.
pub fn create_sql_for_load(create_sql: &str, new_name: &str) -> Result<(String, Vec<String>)> {
    let create = create_sql_without_foreign_keys(create_sql, new_name)?;
    let lines: Vec<&str> = create.lines().collect();
    if !lines
        .iter()
        .any(|l| l.trim_start().starts_with("PRIMARY KEY "))
    {
        return Ok((create, Vec::new()));
    }
    let auto: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("  `") && l.contains(" AUTO_INCREMENT"))
        .filter_map(|l| {
            let rest = l.trim_start();
            let after = skip_identifier(rest)?;
            Some(rest[..rest.len() - after.len()].to_string())
        })
        .collect();
    let mut kept = Vec::new();
    let mut later = Vec::new();
    for l in lines {
        let t = l.trim_start();
        let secondary =
            l.starts_with("  ") && (t.starts_with("KEY `") || t.starts_with("UNIQUE KEY `"));
        if secondary && !auto.iter().any(|a| t.contains(a.as_str())) {
            later.push(format!("ADD {}", t.trim_end_matches(',')));
        } else {
            kept.push(l);
        }
    }
    let mut body = kept.join("\n");
    if let Some(close) = body.rfind("\n)") {
        let head = body[..close].trim_end_matches(',').to_string();
        body = format!("{head}{}", &body[close..]);
    }
    Ok((body, later))
}

fn is_foreign_key_line(l: &str) -> bool {
    let t = l.trim_start();
    t.starts_with("CONSTRAINT ") && t.contains(" FOREIGN KEY ")
}

/// `(name, definition)` of each foreign key in a `SHOW CREATE TABLE` text.
pub fn foreign_keys(create_sql: &str) -> Vec<(String, String)> {
    create_sql
        .lines()
        .filter(|l| is_foreign_key_line(l))
        .filter_map(|l| {
            let t = l.trim().trim_end_matches(',');
            let rest = t.strip_prefix("CONSTRAINT ")?;
            let after = skip_identifier(rest)?;
            let name_len = rest.len() - after.len();
            let name = rest[..name_len].trim().trim_matches('`').replace("``", "`");
            Some((name, after.trim().to_string()))
        })
        .collect()
}

/// The text after a leading `` `identifier` `` (with doubled backticks inside).
fn skip_identifier(s: &str) -> Option<&str> {
    let s = s.strip_prefix('`')?;
    let mut chars = s.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c == '`' {
            if chars.peek().map(|(_, c)| *c) == Some('`') {
                chars.next();
            } else {
                return Some(&s[i + 1..]);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DDL: &str = "CREATE TABLE `odd``name` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `parent` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `parent` (`parent`),\n  CONSTRAINT `odd_fk` FOREIGN KEY (`parent`) REFERENCES `odd``name` (`id`) ON DELETE CASCADE\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci";

    #[test]
    fn secondary_indexes_wait_for_the_rows_but_not_the_auto_increment_one() {
        let ddl = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  `n` int(11) NOT NULL AUTO_INCREMENT,\n  `a` varchar(10) DEFAULT NULL,\n  `b` text DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  UNIQUE KEY `a` (`a`),\n  KEY `n` (`n`),\n  KEY `ab` (`a`,`b`(20)) COMMENT 'x',\n  FULLTEXT KEY `ft` (`b`),\n  CONSTRAINT `fk` FOREIGN KEY (`a`) REFERENCES `u` (`a`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4";
        let (create, later) = create_sql_for_load(ddl, "stage").unwrap();
        assert_eq!(
            create,
            "CREATE TABLE `stage` (\n  `id` int(11) NOT NULL,\n  `n` int(11) NOT NULL AUTO_INCREMENT,\n  `a` varchar(10) DEFAULT NULL,\n  `b` text DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `n` (`n`),\n  FULLTEXT KEY `ft` (`b`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        );
        assert_eq!(
            later,
            vec![
                "ADD UNIQUE KEY `a` (`a`)",
                "ADD KEY `ab` (`a`,`b`(20)) COMMENT 'x'"
            ]
        );
        // Without a primary key, InnoDB would cluster on the first unique index: all stay.
        let keyless =
            "CREATE TABLE `t` (\n  `a` int(11) NOT NULL,\n  UNIQUE KEY `a` (`a`)\n) ENGINE=InnoDB";
        let (create, later) = create_sql_for_load(keyless, "s").unwrap();
        assert!(
            create.contains("UNIQUE KEY `a`") && later.is_empty(),
            "{create}"
        );
    }

    #[test]
    fn definitions_move_to_a_new_name_without_foreign_keys() {
        let sql = create_sql_without_foreign_keys(DDL, "stage").unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE `stage` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `parent` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `parent` (`parent`)\n) ENGINE=InnoDB AUTO_INCREMENT=5 DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci"
        );
        assert_eq!(
            foreign_keys(DDL),
            vec![(
                "odd_fk".to_string(),
                "FOREIGN KEY (`parent`) REFERENCES `odd``name` (`id`) ON DELETE CASCADE"
                    .to_string()
            )]
        );
    }
}
