//! What writing a snapshot's tables as SQL or files needs to know about the engine they
//! came from: identifier quoting, how each column's values are typed, literals, and the
//! statements that recreate a table. One implementation per engine; [`of`] picks it.
//! Exports, browsing and row filters go through it instead of matching on the engine.

use crate::model::{ConstraintKind, Engine, Identity, PgColumn, PgEnum, TableEntry};
use crate::source::mysql as my;
use crate::source::postgres::{self as pg, split_name};
use crate::source::sqlite as lite;
use crate::{Error, Result};

/// How a column's values are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// SQLite: each value's own storage class decides.
    Sqlite,
    PgInteger,
    PgFloat,
    PgNumeric,
    PgBool,
    PgJson,
    PgBytea,
    PgOther,
}

/// Statements that recreate one table before its rows, and those that follow them.
pub(crate) struct TableSql {
    pub(crate) before: Vec<String>,
    pub(crate) after: Vec<String>,
    pub(crate) foreign_keys: Vec<String>,
}

/// An engine's SQL, as exports, browsing and filters write and read it.
pub(crate) trait Dialect: Sync {
    /// An identifier, quoted.
    fn quote(&self, ident: &str) -> String;

    /// A snapshot's table name (`schema.table` on PostgreSQL) as a relation.
    fn relation(&self, table: &str) -> String {
        self.quote(table)
    }

    /// How column `column` of snapshot table `e` is written and compared.
    fn column_kind(&self, e: &TableEntry, column: &str) -> Kind;

    /// A text value as a SQL literal.
    fn text_literal(&self, text: &[u8], out: &mut Vec<u8>);

    /// How a SQL script is loaded (a comment at its top).
    fn script_loader(&self) -> &'static str;

    /// A script's session settings, `BEGIN`, and what its tables need first (schemas,
    /// enum types).
    fn script_begin(&self, tables: &[&str], enums: &[PgEnum]) -> String;

    /// The statements that recreate snapshot table `e` as `table` with `columns`.
    fn table_sql(&self, e: &TableEntry, table: &str, columns: &[String]) -> Result<TableSql>;
}

/// The dialect of an engine.
pub(crate) fn of(engine: Engine) -> &'static dyn Dialect {
    match engine {
        Engine::Sqlite => &Sqlite,
        Engine::Postgres => &Postgres,
        Engine::Mysql => &Mysql,
    }
}

/// `'text'` with quotes doubled.
fn quoted_literal(text: &[u8], out: &mut Vec<u8>) {
    push_quoted(out, text, b'\'');
}

/// `text` between two `quote`s, each `quote` inside it doubled (SQL literals, CSV
/// fields).
pub(crate) fn push_quoted(out: &mut Vec<u8>, text: &[u8], quote: u8) {
    out.push(quote);
    for &b in text {
        if b == quote {
            out.push(quote);
        }
        out.push(b);
    }
    out.push(quote);
}

/// A quoted literal where it can carry the text as it is (UTF-8 without NUL), else the
/// bytes in hex between `before` and `after` (the engine's conversion to text).
fn literal_or_hex(text: &[u8], out: &mut Vec<u8>, before: &str, after: &str) {
    if !text.contains(&0) && std::str::from_utf8(text).is_ok() {
        quoted_literal(text, out);
    } else {
        out.extend_from_slice(before.as_bytes());
        out.extend_from_slice(crate::repo::crypto::hex(text).as_bytes());
        out.extend_from_slice(after.as_bytes());
    }
}

fn empty_table_sql() -> TableSql {
    TableSql {
        before: Vec::new(),
        after: Vec::new(),
        foreign_keys: Vec::new(),
    }
}

pub(crate) struct Sqlite;

impl Dialect for Sqlite {
    fn quote(&self, ident: &str) -> String {
        lite::quote(ident)
    }

    fn column_kind(&self, _e: &TableEntry, _column: &str) -> Kind {
        Kind::Sqlite
    }

    fn text_literal(&self, text: &[u8], out: &mut Vec<u8>) {
        literal_or_hex(text, out, "CAST(X'", "' AS TEXT)");
    }

    fn script_loader(&self) -> &'static str {
        "sqlite3 DB < FILE"
    }

    fn script_begin(&self, _tables: &[&str], _enums: &[PgEnum]) -> String {
        "PRAGMA foreign_keys = OFF;\nBEGIN;\n".into()
    }

    fn table_sql(&self, e: &TableEntry, table: &str, columns: &[String]) -> Result<TableSql> {
        let mut sql = empty_table_sql();
        if columns.len() == e.stream_columns.len() {
            sql.before.push(e.schema.create_sql.clone());
            for idx in &e.schema.indexes {
                sql.after.push(idx.sql.clone());
            }
        } else {
            let cols: Vec<_> = e
                .schema
                .columns
                .iter()
                .filter(|c| columns.contains(&c.name))
                .cloned()
                .collect();
            sql.before.push(lite::create_table_for(table, &cols));
        }
        Ok(sql)
    }
}

pub(crate) struct Mysql;

impl Dialect for Mysql {
    fn quote(&self, ident: &str) -> String {
        my::quote(ident)
    }

    /// MySQL keeps exact numbers as text (DECIMAL, BIGINT UNSIGNED): they are still
    /// numbers in JSON and in filters; a JSON column is JSON.
    fn column_kind(&self, e: &TableEntry, column: &str) -> Kind {
        let decl = e
            .schema
            .columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.decl_type.to_lowercase())
            .unwrap_or_default();
        if decl.starts_with("decimal") || decl.starts_with("numeric") || decl.starts_with("bigint")
        {
            Kind::PgNumeric
        } else if decl == "json"
            // MariaDB's JSON is LONGTEXT checked by json_valid().
            || e
                .schema
                .create_sql
                .contains(&format!("json_valid({})", my::quote(column)))
        {
            Kind::PgJson
        } else {
            Kind::Sqlite
        }
    }

    fn text_literal(&self, text: &[u8], out: &mut Vec<u8>) {
        literal_or_hex(text, out, "CONVERT(X'", "' USING utf8mb4)");
    }

    fn script_loader(&self) -> &'static str {
        "mysql --binary-mode DB < FILE"
    }

    fn script_begin(&self, _tables: &[&str], _enums: &[PgEnum]) -> String {
        "SET NAMES utf8mb4;\nSET time_zone = '+00:00';\n\
         SET sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,NO_BACKSLASH_ESCAPES';\n\
         SET FOREIGN_KEY_CHECKS = 0;\nSTART TRANSACTION;\n"
            .into()
    }

    /// The whole definition (foreign keys too: the script turns their checks off while
    /// it loads). Only whole tables are backed up from MySQL.
    fn table_sql(&self, e: &TableEntry, _table: &str, _columns: &[String]) -> Result<TableSql> {
        let mut sql = empty_table_sql();
        sql.before.push(e.schema.create_sql.clone());
        Ok(sql)
    }
}

pub(crate) struct Postgres;

/// How a PostgreSQL column's values are written and compared.
pub(crate) fn pg_kind(c: Option<&PgColumn>) -> Kind {
    let t = c.map(|c| c.type_sql.as_str()).unwrap_or("");
    if t.ends_with("[]") {
        return Kind::PgOther;
    }
    match t {
        "smallint" | "integer" | "bigint" => Kind::PgInteger,
        "real" | "double precision" => Kind::PgFloat,
        "boolean" => Kind::PgBool,
        "json" | "jsonb" => Kind::PgJson,
        "bytea" => Kind::PgBytea,
        t if t == "numeric" || t.starts_with("numeric(") => Kind::PgNumeric,
        _ => Kind::PgOther,
    }
}

impl Dialect for Postgres {
    fn quote(&self, ident: &str) -> String {
        pg::quote(ident)
    }

    fn relation(&self, table: &str) -> String {
        let (schema, name) = split_name(table);
        pg::qualified(&schema, &name)
    }

    fn column_kind(&self, e: &TableEntry, column: &str) -> Kind {
        pg_kind(
            e.schema
                .postgres
                .as_ref()
                .and_then(|d| d.columns.iter().find(|pc| pc.name == column)),
        )
    }

    /// PostgreSQL text is what the database's encoding allows: written as it is.
    fn text_literal(&self, text: &[u8], out: &mut Vec<u8>) {
        quoted_literal(text, out);
    }

    fn script_loader(&self) -> &'static str {
        "psql -v ON_ERROR_STOP=1 -f FILE"
    }

    fn script_begin(&self, tables: &[&str], enums: &[PgEnum]) -> String {
        let mut s = String::from(
            "SET client_encoding = 'UTF8';\nSET standard_conforming_strings = on;\nBEGIN;\n",
        );
        let mut schemas: Vec<String> = tables.iter().map(|t| split_name(t).0).collect();
        schemas.sort();
        schemas.dedup();
        for schema in schemas.iter().filter(|s| *s != "public") {
            s.push_str(&format!(
                "CREATE SCHEMA IF NOT EXISTS {};\n",
                pg::quote(schema)
            ));
        }
        // Every enum type of the snapshot (as a restore creates them), unless the
        // database has it already.
        for en in enums {
            let labels: Vec<String> = en
                .labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect();
            if en.schema != "public" {
                s.push_str(&format!(
                    "CREATE SCHEMA IF NOT EXISTS {};\n",
                    pg::quote(&en.schema)
                ));
            }
            s.push_str(&format!(
                "DO $tablesafe$ BEGIN CREATE TYPE {} AS ENUM ({}); EXCEPTION WHEN duplicate_object THEN NULL; END $tablesafe$;\n",
                pg::qualified(&en.schema, &en.name),
                labels.join(", ")
            ));
        }
        s
    }

    fn table_sql(&self, e: &TableEntry, table: &str, columns: &[String]) -> Result<TableSql> {
        let all = columns.len() == e.stream_columns.len();
        let mut sql = empty_table_sql();
        let def = e.schema.postgres.as_ref().ok_or_else(|| {
            Error::damaged(format!("table {} lacks its PostgreSQL definition", e.name))
        })?;
        let (schema, table) = split_name(table);
        let rel = pg::qualified(&schema, &table);
        for (regclass, column, last, called) in &def.sequences {
            if !columns.contains(column) {
                continue;
            }
            let identity = def
                .columns
                .iter()
                .any(|c| &c.name == column && c.identity != Identity::None);
            if identity {
                sql.after.push(format!(
                    "SELECT setval(pg_get_serial_sequence('{}', '{}'), {last}, {called});",
                    rel.replace('\'', "''"),
                    column.replace('\'', "''")
                ));
            } else {
                sql.before
                    .push(format!("CREATE SEQUENCE IF NOT EXISTS {regclass};"));
                sql.after.push(format!(
                    "ALTER SEQUENCE {regclass} OWNED BY {rel}.{};",
                    pg::quote(column)
                ));
                sql.after.push(format!(
                    "SELECT setval('{}', {last}, {called});",
                    regclass.replace('\'', "''")
                ));
            }
        }
        sql.before.push(format!(
            "{};",
            pg::create_table_sql(def, &schema, &table, columns, &[], false)
        ));
        for c in &def.constraints {
            if !all && c.kind != ConstraintKind::PrimaryKey {
                continue;
            }
            let s = format!(
                "{};",
                pg::constraint_sql(&schema, &table, &c.name, &c.definition)
            );
            if c.kind == ConstraintKind::ForeignKey {
                sql.foreign_keys.push(s);
            } else {
                sql.after.insert(0, s);
            }
        }
        if all {
            for (name, idxdef) in &def.indexes {
                if let Some(s) = pg::index_sql(idxdef, &schema, &table, name) {
                    sql.after.push(format!("{s};"));
                }
            }
        }
        Ok(sql)
    }
}
