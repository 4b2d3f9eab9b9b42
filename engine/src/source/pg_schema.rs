//! PostgreSQL schema objects besides tables: extensions, schemas, domains, composite
//! and range types, collations, functions and procedures, standalone sequences,
//! partitioned tables and their partitions, views and materialized views, triggers,
//! rules, row-level security and policies, comments and grants.
//!
//! Each becomes a [`SchemaObject`] whose statements are printed by the server itself
//! (`pg_get_functiondef`, `pg_get_viewdef`, `pg_get_triggerdef`, `pg_get_ruledef`,
//! `pg_get_constraintdef`, `pg_get_expr`, `format_type`), read with `search_path` set to
//! `pg_catalog` alone so that every name in them is schema-qualified (what pg_dump
//! does). What needs what comes from `pg_depend`: an object's direct dependencies on
//! tables and on other objects are recorded, and the list is in dependency order. An
//! extension's own member objects are never listed: `CREATE EXTENSION` makes them.

use super::postgres::{PgDb, PgTableInfo, create_table_sql, qualified, quote};
use crate::Result;
use crate::error::Context;
use crate::model::{ObjectKind, Phase, SchemaObject, Skipped};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// User schemas (as in [`super::postgres`]), for a relation or object in namespace `n`.
const USER: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

/// Not a member of an extension (`CREATE EXTENSION` makes those).
fn not_member(class: &str, oid: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = '{class}'::regclass AND e.objid = {oid} AND e.deptype = 'e')"
    )
}

/// A node of the dependency graph: a table of the snapshot or one of its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Table(String),
    Object(usize),
}

struct Found {
    objects: Vec<SchemaObject>,
    /// (catalog, oid) → the node it belongs to.
    nodes: HashMap<(String, i64), Node>,
}

impl Found {
    fn add(&mut self, class: &str, oid: i64, object: SchemaObject) -> usize {
        let i = self.objects.len();
        self.objects.push(object);
        self.nodes.insert((class.to_string(), oid), Node::Object(i));
        i
    }

    fn object_of(&self, class: &str, oid: i64) -> Option<usize> {
        match self.nodes.get(&(class.to_string(), oid)) {
            Some(Node::Object(i)) => Some(*i),
            _ => None,
        }
    }
}

/// Reads every schema object of the database inside the backup's snapshot, records in
/// `tables` which objects each one needs, and adds what is not carried to `skipped`.
/// (Called with `search_path` set to `pg_catalog`, see [`super::postgres`].)
pub(super) async fn discover(
    db: &mut PgDb,
    tables: &mut [(i64, PgTableInfo)],
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<SchemaObject>> {
    let mut f = Found {
        objects: Vec::new(),
        nodes: HashMap::new(),
    };
    for (oid, t) in tables.iter() {
        f.nodes
            .insert(("pg_class".into(), *oid), Node::Table(t.name.clone()));
    }
    let schema_of = schemas(db, &mut f).await?;
    extensions(db, &mut f).await?;
    collations(db, &mut f).await?;
    types(db, &mut f).await?;
    functions(db, &mut f, skipped).await?;
    sequences(db, &mut f, skipped).await?;
    relations(db, &mut f, skipped).await?;
    triggers(db, &mut f).await?;
    rules(db, &mut f).await?;
    row_security(db, &mut f).await?;
    comments(db, &mut f).await?;
    grants(db, &mut f).await?;
    let others: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT 'event trigger', evtname::text FROM pg_event_trigger
         UNION ALL SELECT 'foreign table', n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'f' AND {USER}
         ORDER BY 1, 2"
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading event triggers and foreign tables".into())?;
    skipped.extend(others.into_iter().map(|(kind, name)| Skipped {
        kind: kind.as_str().into(),
        name,
        reason: "not carried yet".into(),
    }));
    link(db, &mut f, tables, &schema_of).await?;
    Ok(crate::objects::order(f.objects))
}

/// Every user schema, so that empty ones and their grants and comments come back.
/// Returns schema name → object index.
async fn schemas(db: &mut PgDb, f: &mut Found) -> Result<HashMap<String, usize>> {
    let rows: Vec<(i64, String)> = sqlx::query_as(&format!(
        "SELECT n.oid::int8, n.nspname::text FROM pg_namespace n WHERE {USER} AND {} ORDER BY 2",
        not_member("pg_namespace", "n.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading schemas".into())?;
    let mut out = HashMap::new();
    for (oid, name) in rows {
        let mut o = SchemaObject::new(
            ObjectKind::Schema,
            name.clone(),
            Phase::Before,
            // Plain CREATE: a schema the destination has (public) keeps its own
            // grants and comment.
            vec![format!("CREATE SCHEMA {}", quote(&name))],
        );
        o.drop = Some(format!("DROP SCHEMA IF EXISTS {}", quote(&name)));
        out.insert(name, f.add("pg_namespace", oid, o));
    }
    Ok(out)
}

async fn extensions(db: &mut PgDb, f: &mut Found) -> Result<()> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT e.oid::int8, e.extname::text, n.nspname::text, e.extversion::text
         FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
         WHERE e.extname <> 'plpgsql' ORDER BY 2",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading extensions".into())?;
    for (oid, name, schema, version) in rows {
        let mut o = SchemaObject::new(
            ObjectKind::Extension,
            name.clone(),
            Phase::Before,
            // Plain CREATE: an extension the destination has is kept (and never
            // dropped again by a failed restore).
            vec![format!(
                "CREATE EXTENSION {} WITH SCHEMA {}",
                quote(&name),
                quote(&schema)
            )],
        );
        o.drop = Some(format!("DROP EXTENSION IF EXISTS {}", quote(&name)));
        o.version = Some(version);
        let i = f.add("pg_extension", oid, o);
        // Member objects belong to the extension.
        let members: Vec<(String, i64)> = sqlx::query_as(
            "SELECT classid::regclass::text, objid::int8 FROM pg_depend
             WHERE refclassid = 'pg_extension'::regclass AND refobjid = $1::int8::oid AND deptype = 'e'",
        )
        .bind(oid)
        .fetch_all(&mut db.conn)
        .await
        .context(|| format!("reading the members of extension {name}"))?;
        for m in members {
            f.nodes.insert(m, Node::Object(i));
        }
    }
    Ok(())
}

async fn collations(db: &mut PgDb, f: &mut Found) -> Result<()> {
    // As JSON: the columns differ between versions (colliculocale in 15, colllocale in 17).
    let rows: Vec<(i64, String, String, serde_json::Value)> = sqlx::query_as(&format!(
        "SELECT c.oid::int8, n.nspname::text, c.collname::text, to_jsonb(c)
         FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace
         WHERE {USER} AND {} ORDER BY 2, 3",
        not_member("pg_collation", "c.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading collations".into())?;
    for (oid, schema, name, c) in rows {
        let text = |k: &str| c.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let mut opts = Vec::new();
        match text("collprovider").as_deref() {
            Some("i") => {
                opts.push("provider = icu".to_string());
                let locale = text("colllocale").or_else(|| text("colliculocale"));
                opts.push(format!(
                    "locale = {}",
                    super::sql_string(&locale.unwrap_or_default())
                ));
            }
            _ => {
                opts.push("provider = libc".to_string());
                opts.push(format!(
                    "lc_collate = {}",
                    super::sql_string(&text("collcollate").unwrap_or_default())
                ));
                opts.push(format!(
                    "lc_ctype = {}",
                    super::sql_string(&text("collctype").unwrap_or_default())
                ));
            }
        }
        if c.get("collisdeterministic").and_then(|v| v.as_bool()) == Some(false) {
            opts.push("deterministic = false".into());
        }
        let q = qualified(&schema, &name);
        let mut o = SchemaObject::new(
            ObjectKind::Collation,
            format!("{schema}.{name}"),
            Phase::Before,
            vec![format!("CREATE COLLATION {q} ({})", opts.join(", "))],
        );
        o.drop = Some(format!("DROP COLLATION IF EXISTS {q}"));
        f.add("pg_collation", oid, o);
    }
    Ok(())
}

/// Domains, composite and range types (enums are the snapshot's `enums`).
async fn types(db: &mut PgDb, f: &mut Found) -> Result<()> {
    type Row = (
        i64,
        String,
        String,
        String,
        Option<String>,
        bool,
        Option<String>,
        Option<String>,
        i64,
    );
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT t.oid::int8, n.nspname::text, t.typname::text, t.typtype::text,
                CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
                t.typnotnull, t.typdefault,
                CASE WHEN t.typcollation <> 0 AND t.typcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = t.typbasetype)
                     THEN t.typcollation::regcollation::text END,
                t.typrelid::int8
         FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
         WHERE {USER} AND {} AND (t.typtype IN ('d', 'r')
               OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))
         ORDER BY 2, 3",
        not_member("pg_type", "t.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading types".into())?;
    for (oid, schema, name, typtype, base, not_null, default, collation, relid) in rows {
        let q = qualified(&schema, &name);
        let display = format!("{schema}.{name}");
        let (kind, sql) = match typtype.as_str() {
            "d" => {
                let mut s = format!("CREATE DOMAIN {q} AS {}", base.unwrap_or_default());
                if let Some(c) = collation {
                    s.push_str(&format!(" COLLATE {c}"));
                }
                if let Some(d) = default {
                    s.push_str(&format!(" DEFAULT {d}"));
                }
                if not_null {
                    s.push_str(" NOT NULL");
                }
                let checks: Vec<(String, String)> = sqlx::query_as(
                    "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint
                     WHERE contypid = $1::int8::oid ORDER BY conname",
                )
                .bind(oid)
                .fetch_all(&mut db.conn)
                .await
                .context(|| format!("reading the constraints of domain {display}"))?;
                let mut sql = vec![s];
                for (cname, def) in checks {
                    sql.push(format!(
                        "ALTER DOMAIN {q} ADD CONSTRAINT {} {def}",
                        quote(&cname)
                    ));
                }
                (ObjectKind::Domain, sql)
            }
            "c" => {
                let attrs: Vec<(String, String, Option<String>)> = sqlx::query_as(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod),
                            CASE WHEN a.attcollation <> 0 AND a.attcollation <> (SELECT b.typcollation FROM pg_type b WHERE b.oid = a.atttypid)
                                 THEN a.attcollation::regcollation::text END
                     FROM pg_attribute a WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped
                     ORDER BY a.attnum",
                )
                .bind(relid)
                .fetch_all(&mut db.conn)
                .await
                .context(|| format!("reading the attributes of type {display}"))?;
                let list: Vec<String> = attrs
                    .into_iter()
                    .map(|(a, t, c)| match c {
                        Some(c) => format!("{} {t} COLLATE {c}", quote(&a)),
                        None => format!("{} {t}", quote(&a)),
                    })
                    .collect();
                // Functions taking the type depend on its relation's row type.
                f.nodes
                    .insert(("pg_class".into(), relid), Node::Object(f.objects.len()));
                (
                    ObjectKind::Type,
                    vec![format!("CREATE TYPE {q} AS ({})", list.join(", "))],
                )
            }
            _ => {
                let (subtype, diff, multi): (String, Option<String>, Option<String>) =
                    sqlx::query_as(
                        "SELECT format_type(r.rngsubtype, NULL),
                                CASE WHEN r.rngsubdiff <> 0 THEN r.rngsubdiff::regproc::text END,
                                CASE WHEN r.rngmultitypid <> 0 THEN r.rngmultitypid::regtype::text END
                         FROM pg_range r WHERE r.rngtypid = $1::int8::oid",
                    )
                    .bind(oid)
                    .fetch_one(&mut db.conn)
                    .await
                    .context(|| format!("reading range type {display}"))?;
                let mut opts = vec![format!("subtype = {subtype}")];
                if let Some(d) = diff {
                    opts.push(format!("subtype_diff = {d}"));
                }
                if let Some(m) = multi {
                    opts.push(format!("multirange_type_name = {m}"));
                }
                (
                    ObjectKind::Type,
                    vec![format!("CREATE TYPE {q} AS RANGE ({})", opts.join(", "))],
                )
            }
        };
        let word = if kind == ObjectKind::Domain {
            "DOMAIN"
        } else {
            "TYPE"
        };
        let mut o = SchemaObject::new(kind, display, Phase::Before, sql);
        o.drop = Some(format!("DROP {word} IF EXISTS {q}"));
        f.add("pg_type", oid, o);
    }
    // Array types stand for their element type; row types of tables for the table.
    let aliases: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT t.oid::int8, CASE WHEN t.typelem <> 0 AND t.typcategory = 'A' THEN 'pg_type' ELSE 'pg_class' END,
                CASE WHEN t.typelem <> 0 AND t.typcategory = 'A' THEN t.typelem ELSE t.typrelid END::int8
         FROM pg_type t WHERE t.oid >= 16384 AND ((t.typelem <> 0 AND t.typcategory = 'A') OR t.typrelid <> 0)",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading array and row types".into())?;
    // Two passes: an array of a table's row type resolves through the row type.
    for _ in 0..2 {
        for (oid, class, target) in &aliases {
            if let Some(n) = f.nodes.get(&(class.clone(), *target)).cloned() {
                f.nodes.entry(("pg_type".into(), *oid)).or_insert(n);
            }
        }
    }
    Ok(())
}

async fn functions(db: &mut PgDb, f: &mut Found, skipped: &mut Vec<Skipped>) -> Result<()> {
    let rows: Vec<(i64, String, String, String, String, Option<String>)> =
        sqlx::query_as(&format!(
            "SELECT p.oid::int8, n.nspname::text, p.proname::text, p.prokind::text,
                    pg_get_function_identity_arguments(p.oid),
                    CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END
             FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
             WHERE {USER} AND {} AND NOT EXISTS (
               SELECT 1 FROM pg_depend i WHERE i.classid = 'pg_proc'::regclass AND i.objid = p.oid AND i.deptype = 'i')
             ORDER BY 2, 3, 5",
            not_member("pg_proc", "p.oid")
        ))
        .fetch_all(&mut db.conn)
        .await
        .context(|| "reading functions".into())?;
    for (oid, schema, name, kind, args, def) in rows {
        let display = format!("{schema}.{name}({args})");
        let Some(def) = def else {
            skipped.push(Skipped {
                kind: ObjectKind::Aggregate,
                name: display,
                reason: "not carried yet".into(),
            });
            continue;
        };
        let (kind, word) = if kind == "p" {
            (ObjectKind::Procedure, "PROCEDURE")
        } else {
            (ObjectKind::Function, "FUNCTION")
        };
        // Never `CREATE OR REPLACE`: a restore does not change a function the
        // destination has (it is kept, with a note).
        let def = match def.strip_prefix("CREATE OR REPLACE ") {
            Some(rest) => format!("CREATE {rest}"),
            None => def,
        };
        let mut o = SchemaObject::new(kind, display, Phase::Before, vec![def]);
        o.drop = Some(format!(
            "DROP {word} IF EXISTS {}({args})",
            qualified(&schema, &name)
        ));
        f.add("pg_proc", oid, o);
    }
    Ok(())
}

/// Sequences no column owns (owned ones are part of their table), with their position.
async fn sequences(db: &mut PgDb, f: &mut Found, skipped: &mut Vec<Skipped>) -> Result<()> {
    type Row = (i64, String, String, String, i64, i64, i64, i64, i64, bool);
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT c.oid::int8, n.nspname::text, c.relname::text, format_type(s.seqtypid, NULL),
                s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle
         FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {USER} AND {} AND NOT EXISTS (
           SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i'))
         ORDER BY 2, 3",
        not_member("pg_class", "c.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading sequences".into())?;
    for (oid, schema, name, ty, start, inc, min, max, cache, cycle) in rows {
        let q = qualified(&schema, &name);
        // A role without SELECT on it cannot read its position: skipped, not fatal
        // (the read runs under a savepoint, the backup's transaction goes on).
        db.exec("SAVEPOINT tablesafe_sequence").await?;
        let read: std::result::Result<(i64, bool), sqlx::Error> =
            sqlx::query_as(&format!("SELECT last_value, is_called FROM {q}"))
                .fetch_one(&mut db.conn)
                .await;
        let (last, called) = match read {
            Ok(r) => {
                db.exec("RELEASE SAVEPOINT tablesafe_sequence").await?;
                r
            }
            Err(e) => {
                db.exec("ROLLBACK TO SAVEPOINT tablesafe_sequence").await?;
                skipped.push(Skipped {
                    kind: ObjectKind::Sequence,
                    name: format!("{schema}.{name}"),
                    reason: format!("its position cannot be read by this role ({e})"),
                });
                continue;
            }
        };
        let mut o = SchemaObject::new(
            ObjectKind::Sequence,
            format!("{schema}.{name}"),
            Phase::Before,
            vec![
                format!(
                    "CREATE SEQUENCE {q} AS {ty} START WITH {start} INCREMENT BY {inc} MINVALUE {min} MAXVALUE {max} CACHE {cache}{}",
                    if cycle { " CYCLE" } else { "" }
                ),
                format!(
                    "SELECT pg_catalog.setval({}, {last}, {called})",
                    super::sql_string(&q)
                ),
            ],
        );
        o.drop = Some(format!("DROP SEQUENCE IF EXISTS {q}"));
        f.add("pg_class", oid, o);
    }
    Ok(())
}

/// Views, materialized views, partitioned tables and partitions' attachments.
async fn relations(db: &mut PgDb, f: &mut Found, skipped: &mut Vec<Skipped>) -> Result<()> {
    type Row = (
        i64,
        String,
        String,
        String,
        Option<Vec<String>>,
        bool,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text, c.reloptions::text[], c.relispopulated,
                CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END,
                CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('v', 'm', 'p') AND {USER} AND {} ORDER BY 2, 3",
        not_member("pg_class", "c.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading views and partitioned tables".into())?;
    for (oid, schema, name, kind, options, populated, viewdef, partkey) in rows {
        let q = qualified(&schema, &name);
        let display = format!("{schema}.{name}");
        let with = match options {
            Some(o) if !o.is_empty() => format!(" WITH ({})", o.join(", ")),
            _ => String::new(),
        };
        match kind.as_str() {
            "v" => {
                let def = viewdef.unwrap_or_default();
                let def = def.trim().trim_end_matches(';');
                let mut o = SchemaObject::new(
                    ObjectKind::View,
                    display,
                    Phase::After,
                    vec![format!("CREATE VIEW {q}{with} AS {def}")],
                );
                o.drop = Some(format!("DROP VIEW IF EXISTS {q}"));
                f.add("pg_class", oid, o);
            }
            "m" => {
                let def = viewdef.unwrap_or_default();
                let def = def.trim().trim_end_matches(';');
                let mut sql = vec![format!(
                    "CREATE MATERIALIZED VIEW {q}{with} AS {def} WITH NO DATA"
                )];
                sql.extend(index_definitions(db, oid, &display).await?);
                if populated {
                    sql.push(format!("REFRESH MATERIALIZED VIEW {q}"));
                }
                f.add(
                    "pg_class",
                    oid,
                    SchemaObject::new(ObjectKind::MaterializedView, display, Phase::After, sql),
                );
            }
            _ => {
                // The partitioned table itself holds no rows: made before the tables,
                // its constraints and indexes once every partition is attached.
                let t = db.table(oid, &schema, &name).await?;
                let cols: Vec<String> = t.data_columns.clone();
                let identity = |column: &str| {
                    t.table
                        .columns
                        .iter()
                        .any(|c| c.name == column && c.identity != crate::model::Identity::None)
                };
                let mut sql = Vec::new();
                for (regclass, column, _, _) in &t.table.sequences {
                    if !identity(column) {
                        sql.push(format!("CREATE SEQUENCE {regclass}"));
                    }
                }
                sql.push(format!(
                    "{} PARTITION BY {}",
                    create_table_sql(&t.table, &schema, &name, &cols, &[], false),
                    partkey.unwrap_or_default()
                ));
                for (regclass, column, last, called) in &t.table.sequences {
                    // An identity column makes its own sequence; a serial one is owned.
                    let seq = if identity(column) {
                        format!(
                            "pg_catalog.pg_get_serial_sequence({}, {})",
                            super::sql_string(&q),
                            super::sql_string(column)
                        )
                    } else {
                        sql.push(format!(
                            "ALTER SEQUENCE {regclass} OWNED BY {q}.{}",
                            quote(column)
                        ));
                        super::sql_string(regclass)
                    };
                    sql.push(format!("SELECT pg_catalog.setval({seq}, {last}, {called})"));
                }
                let mut o = SchemaObject::new(
                    ObjectKind::PartitionedTable,
                    display.clone(),
                    Phase::Before,
                    sql,
                );
                o.drop = Some(format!("DROP TABLE IF EXISTS {q}"));
                let parent = f.add("pg_class", oid, o);
                let mut after = Vec::new();
                for c in &t.table.constraints {
                    after.push(format!(
                        "ALTER TABLE {q} ADD CONSTRAINT {} {}",
                        quote(&c.name),
                        c.definition
                    ));
                }
                // Made on the parent alone they would not reach the partitions: made
                // on the whole tree, they attach the partitions' matching indexes and
                // create the missing ones (named as PostgreSQL named the originals).
                for (_, def) in &t.table.indexes {
                    after.push(def.replacen(" ON ONLY ", " ON ", 1));
                }
                // Always made (even empty): a parent's definition comes after those of
                // its partitioned partitions, which come after their own partitions.
                let mut d = SchemaObject::new(ObjectKind::Definition, display, Phase::After, after);
                d.needs.push(f.objects[parent].key());
                f.objects.push(d);
            }
        }
    }
    // Partitions: attached to their parent once loaded.
    let parts: Vec<(i64, String, String, i64, String, String)> = sqlx::query_as(&format!(
        "SELECT c.oid::int8, n.nspname::text, c.relname::text, i.inhparent::int8, i.inhparent::regclass::text,
                pg_get_expr(c.relpartbound, c.oid)
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_inherits i ON i.inhrelid = c.oid
         WHERE c.relispartition AND c.relkind IN ('r', 'p') AND {USER} ORDER BY 2, 3"
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading partitions".into())?;
    for (oid, schema, name, parent_oid, parent, bound) in parts {
        let Some(parent_i) = f.object_of("pg_class", parent_oid) else {
            continue;
        };
        let mut o = SchemaObject::new(
            ObjectKind::Partition,
            format!("{schema}.{name}"),
            Phase::After,
            vec![format!(
                "ALTER TABLE {parent} ATTACH PARTITION {} {bound}",
                qualified(&schema, &name)
            )],
        );
        o.needs.push(f.objects[parent_i].key());
        let definition_of = |f: &Found, key: &str| {
            f.objects.iter().position(|d| {
                d.kind == ObjectKind::Definition && d.needs.first().map(String::as_str) == Some(key)
            })
        };
        // The parent's constraints and indexes come after every attachment below it.
        let mut after = vec![o.key()];
        match f.nodes.get(&("pg_class".to_string(), oid)).cloned() {
            Some(Node::Table(t)) => o.tables.push(t),
            Some(Node::Object(sub)) => {
                let sub_key = f.objects[sub].key();
                if let Some(d) = definition_of(f, &sub_key) {
                    after.push(f.objects[d].key());
                }
                o.needs.push(sub_key);
            }
            None => continue,
        }
        f.objects.push(o);
        if let Some(d) = definition_of(f, &f.objects[parent_i].key()) {
            f.objects[d].needs.extend(after);
        }
    }
    let _ = skipped;
    Ok(())
}

async fn index_definitions(db: &mut PgDb, oid: i64, display: &str) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid = $1::int8::oid ORDER BY c.relname",
    )
    .bind(oid)
    .fetch_all(&mut db.conn)
    .await
    .context(|| format!("reading the indexes of {display}"))
}

async fn triggers(db: &mut PgDb, f: &mut Found) -> Result<()> {
    let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(&format!(
        "SELECT t.oid::int8, t.tgname::text, n.nspname || '.' || c.relname, pg_get_triggerdef(t.oid), t.tgenabled::text
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {USER} AND {} ORDER BY 3, 2",
        not_member("pg_trigger", "t.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading triggers".into())?;
    for (oid, name, table, def, enabled) in rows {
        let (schema, rel) = super::postgres::split_name(&table);
        let q = qualified(&schema, &rel);
        let mut sql = vec![def];
        let state = match enabled.as_str() {
            "D" => Some("DISABLE"),
            "A" => Some("ENABLE ALWAYS"),
            "R" => Some("ENABLE REPLICA"),
            _ => None,
        };
        if let Some(state) = state {
            sql.push(format!("ALTER TABLE {q} {state} TRIGGER {}", quote(&name)));
        }
        let mut o = SchemaObject::new(
            ObjectKind::Trigger,
            format!("{name} on {table}"),
            Phase::After,
            sql,
        );
        o.drop = Some(format!("DROP TRIGGER IF EXISTS {} ON {q}", quote(&name)));
        f.add("pg_trigger", oid, o);
    }
    Ok(())
}

async fn rules(db: &mut PgDb, f: &mut Found) -> Result<()> {
    let rows: Vec<(i64, String, String, String)> = sqlx::query_as(&format!(
        "SELECT r.oid::int8, r.rulename::text, n.nspname || '.' || c.relname, pg_get_ruledef(r.oid)
         FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE r.rulename <> '_RETURN' AND {USER} AND {} ORDER BY 3, 2",
        not_member("pg_rewrite", "r.oid")
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading rules".into())?;
    for (oid, name, table, def) in rows {
        let def = def.trim().trim_end_matches(';').to_string();
        f.add(
            "pg_rewrite",
            oid,
            SchemaObject::new(
                ObjectKind::Rule,
                format!("{name} on {table}"),
                Phase::After,
                vec![def],
            ),
        );
    }
    // A view's own rule stands for the view.
    let returns: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT oid::int8, ev_class::int8 FROM pg_rewrite WHERE rulename = '_RETURN' AND ev_class >= 16384",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading view rules".into())?;
    for (oid, rel) in returns {
        if let Some(n) = f.nodes.get(&("pg_class".to_string(), rel)).cloned() {
            f.nodes.insert(("pg_rewrite".into(), oid), n);
        }
    }
    Ok(())
}

/// `ENABLE`/`FORCE ROW LEVEL SECURITY` per table, and the policies.
async fn row_security(db: &mut PgDb, f: &mut Found) -> Result<()> {
    let rows: Vec<(i64, String, bool, bool)> = sqlx::query_as(&format!(
        "SELECT c.oid::int8, n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND (c.relrowsecurity OR c.relforcerowsecurity) AND {USER} ORDER BY 2"
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading row-level security".into())?;
    for (oid, table, enable, force) in rows {
        let (schema, rel) = super::postgres::split_name(&table);
        let q = qualified(&schema, &rel);
        let mut sql = Vec::new();
        if enable {
            sql.push(format!("ALTER TABLE {q} ENABLE ROW LEVEL SECURITY"));
        }
        if force {
            sql.push(format!("ALTER TABLE {q} FORCE ROW LEVEL SECURITY"));
        }
        let mut o = SchemaObject::new(ObjectKind::RowSecurity, table, Phase::After, sql);
        attach_to_relation(f, oid, &mut o);
        f.objects.push(o);
    }
    type Row = (
        i64,
        String,
        String,
        String,
        bool,
        Vec<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT p.oid::int8, p.polname::text, n.nspname || '.' || c.relname, p.polcmd::text, p.polpermissive,
                ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END FROM unnest(p.polroles) r ORDER BY 1),
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)
         FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE {USER} ORDER BY 3, 2"
    ))
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading policies".into())?;
    for (oid, name, table, cmd, permissive, roles, qual, check) in rows {
        let (schema, rel) = super::postgres::split_name(&table);
        let mut s = format!(
            "CREATE POLICY {} ON {}",
            quote(&name),
            qualified(&schema, &rel)
        );
        if !permissive {
            s.push_str(" AS RESTRICTIVE");
        }
        s.push_str(match cmd.as_str() {
            "r" => " FOR SELECT",
            "a" => " FOR INSERT",
            "w" => " FOR UPDATE",
            "d" => " FOR DELETE",
            _ => " FOR ALL",
        });
        s.push_str(&format!(" TO {}", roles.join(", ")));
        if let Some(q) = qual {
            s.push_str(&format!(" USING ({q})"));
        }
        if let Some(c) = check {
            s.push_str(&format!(" WITH CHECK ({c})"));
        }
        f.add(
            "pg_policy",
            oid,
            SchemaObject::new(
                ObjectKind::Policy,
                format!("{name} on {table}"),
                Phase::After,
                vec![s],
            ),
        );
    }
    Ok(())
}

/// Makes `o` depend on relation `oid` (a table of the snapshot or an object).
fn attach_to_relation(f: &Found, oid: i64, o: &mut SchemaObject) {
    match f.nodes.get(&("pg_class".to_string(), oid)) {
        Some(Node::Table(t)) => o.tables.push(t.clone()),
        Some(Node::Object(i)) => o.needs.push(f.objects[*i].key()),
        None => {}
    }
}

/// `COMMENT ON` statements: on objects, added to the object; on tables (and their
/// columns, constraints and indexes), one comment object per table.
async fn comments(db: &mut PgDb, f: &mut Found) -> Result<()> {
    let rows: Vec<(String, i64, String, Option<String>)> = sqlx::query_as(
        "SELECT CASE WHEN d.classoid = 'pg_constraint'::regclass AND k.conrelid = 0 THEN 'pg_type'
                     WHEN d.classoid = 'pg_constraint'::regclass THEN 'pg_class'
                     ELSE d.classoid::regclass::text END,
                CASE d.classoid
                  WHEN 'pg_class'::regclass THEN COALESCE(i.indrelid, d.objoid)
                  WHEN 'pg_constraint'::regclass THEN COALESCE(NULLIF(k.conrelid, 0), k.contypid)
                  ELSE d.objoid END::int8,
                d.description,
                CASE d.classoid
                  WHEN 'pg_class'::regclass THEN
                    CASE WHEN d.objsubid > 0 THEN 'COLUMN ' || d.objoid::regclass::text || '.' || quote_ident(a.attname)
                    ELSE CASE c.relkind WHEN 'v' THEN 'VIEW ' WHEN 'm' THEN 'MATERIALIZED VIEW ' WHEN 'S' THEN 'SEQUENCE '
                           WHEN 'i' THEN 'INDEX ' WHEN 'I' THEN 'INDEX ' WHEN 'c' THEN 'TYPE ' ELSE 'TABLE ' END
                         || CASE WHEN c.relkind = 'c' THEN (SELECT t.oid::regtype::text FROM pg_type t WHERE t.typrelid = c.oid) ELSE d.objoid::regclass::text END END
                  WHEN 'pg_proc'::regclass THEN
                    CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' ELSE 'FUNCTION ' END || d.objoid::regprocedure::text
                  WHEN 'pg_type'::regclass THEN
                    CASE ty.typtype WHEN 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || d.objoid::regtype::text
                  WHEN 'pg_namespace'::regclass THEN 'SCHEMA ' || quote_ident(ns.nspname)
                  WHEN 'pg_constraint'::regclass THEN
                    'CONSTRAINT ' || quote_ident(k.conname) || ' ON '
                    || CASE WHEN k.conrelid <> 0 THEN k.conrelid::regclass::text ELSE 'DOMAIN ' || k.contypid::regtype::text END
                  WHEN 'pg_trigger'::regclass THEN
                    'TRIGGER ' || quote_ident(tg.tgname) || ' ON ' || tg.tgrelid::regclass::text
                  WHEN 'pg_policy'::regclass THEN
                    'POLICY ' || quote_ident(po.polname) || ' ON ' || po.polrelid::regclass::text
                  WHEN 'pg_collation'::regclass THEN 'COLLATION ' || d.objoid::regcollation::text
                  WHEN 'pg_rewrite'::regclass THEN
                    'RULE ' || quote_ident(rw.rulename) || ' ON ' || rw.ev_class::regclass::text
                END
         FROM pg_description d
         LEFT JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND c.oid = d.objoid
         LEFT JOIN pg_index i ON d.classoid = 'pg_class'::regclass AND i.indexrelid = d.objoid
         LEFT JOIN pg_attribute a ON d.classoid = 'pg_class'::regclass AND a.attrelid = d.objoid AND a.attnum = d.objsubid AND d.objsubid > 0
         LEFT JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND p.oid = d.objoid
         LEFT JOIN pg_type ty ON d.classoid = 'pg_type'::regclass AND ty.oid = d.objoid
         LEFT JOIN pg_namespace ns ON d.classoid = 'pg_namespace'::regclass AND ns.oid = d.objoid
         LEFT JOIN pg_constraint k ON d.classoid = 'pg_constraint'::regclass AND k.oid = d.objoid
         LEFT JOIN pg_trigger tg ON d.classoid = 'pg_trigger'::regclass AND tg.oid = d.objoid
         LEFT JOIN pg_policy po ON d.classoid = 'pg_policy'::regclass AND po.oid = d.objoid
         LEFT JOIN pg_rewrite rw ON d.classoid = 'pg_rewrite'::regclass AND rw.oid = d.objoid
         WHERE d.objoid >= 16384 ORDER BY 4, 1, 2",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading comments".into())?;
    let mut per_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (class, owner, text, target) in rows {
        let Some(target) = target else { continue };
        let sql = format!("COMMENT ON {target} IS {}", super::sql_string(&text));
        match f.nodes.get(&(class, owner)).cloned() {
            Some(Node::Object(i)) => f.objects[i].sql.push(sql),
            Some(Node::Table(t)) => per_table.entry(t).or_default().push(sql),
            None => {}
        }
    }
    for (table, sql) in per_table {
        let mut o = SchemaObject::new(ObjectKind::Comment, table.clone(), Phase::After, sql);
        o.tables.push(table);
        f.objects.push(o);
    }
    Ok(())
}

/// `GRANT`s on tables, views, sequences, functions, schemas and types, to roles other
/// than the owner (a restore's objects belong to the role restoring them).
async fn grants(db: &mut PgDb, f: &mut Found) -> Result<()> {
    let rows: Vec<(String, i64, String, String, String, bool)> = sqlx::query_as(
        "WITH acl AS (
           SELECT 'pg_class' AS class, c.oid, CASE WHEN c.relkind = 'S' THEN 'SEQUENCE ' ELSE 'TABLE ' END || c.oid::regclass::text AS target,
                  c.relowner AS owner, c.relacl AS acl FROM pg_class c WHERE c.relacl IS NOT NULL AND c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
           UNION ALL SELECT 'pg_proc', p.oid, CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' ELSE 'FUNCTION ' END || p.oid::regprocedure::text,
                  p.proowner, p.proacl FROM pg_proc p WHERE p.proacl IS NOT NULL AND p.oid >= 16384
           UNION ALL SELECT 'pg_namespace', n.oid, 'SCHEMA ' || quote_ident(n.nspname), n.nspowner, n.nspacl
                  FROM pg_namespace n WHERE n.nspacl IS NOT NULL AND n.oid >= 16384
           UNION ALL SELECT 'pg_type', t.oid, CASE t.typtype WHEN 'd' THEN 'DOMAIN ' ELSE 'TYPE ' END || t.oid::regtype::text,
                  t.typowner, t.typacl FROM pg_type t WHERE t.typacl IS NOT NULL AND t.oid >= 16384
         )
         SELECT acl.class, acl.oid::int8, acl.target,
                CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(x.grantee)) END,
                x.privilege_type, x.is_grantable
         FROM acl CROSS JOIN LATERAL aclexplode(acl.acl) x
         WHERE x.grantee <> acl.owner
         ORDER BY 1, 2, 4, 5",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading grants".into())?;
    // (class, oid, target, grantee, grantable) → privileges
    let mut grouped: BTreeMap<(String, i64, String, String, bool), Vec<String>> = BTreeMap::new();
    for (class, oid, target, grantee, privilege, grantable) in rows {
        grouped
            .entry((class, oid, target, grantee, grantable))
            .or_default()
            .push(privilege);
    }
    // Functions: EXECUTE for PUBLIC is the default; an ACL without it was revoked.
    let revoked: Vec<(i64, String)> = sqlx::query_as(
        "SELECT p.oid::int8, CASE p.prokind WHEN 'p' THEN 'PROCEDURE ' ELSE 'FUNCTION ' END || p.oid::regprocedure::text
         FROM pg_proc p WHERE p.proacl IS NOT NULL AND p.oid >= 16384
           AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) x WHERE x.grantee = 0)",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading revoked function privileges".into())?;
    for (oid, target) in revoked {
        if let Some(i) = f.object_of("pg_proc", oid) {
            f.objects[i]
                .sql
                .push(format!("REVOKE ALL ON {target} FROM PUBLIC"));
        }
    }
    let mut per_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for ((class, oid, target, grantee, grantable), privileges) in grouped {
        let sql = format!(
            "GRANT {} ON {target} TO {grantee}{}",
            privileges.join(", "),
            if grantable { " WITH GRANT OPTION" } else { "" }
        );
        match f.nodes.get(&(class, oid)).cloned() {
            Some(Node::Object(i)) => f.objects[i].sql.push(sql),
            Some(Node::Table(t)) => per_table.entry(t).or_default().push(sql),
            None => {}
        }
    }
    for (table, sql) in per_table {
        let mut o = SchemaObject::new(ObjectKind::Grant, table.clone(), Phase::After, sql);
        o.tables.push(table);
        f.objects.push(o);
    }
    Ok(())
}

/// Reads `pg_depend` into the objects' `tables` and `needs` and the tables' `needs`.
async fn link(
    db: &mut PgDb,
    f: &mut Found,
    tables: &mut [(i64, PgTableInfo)],
    schema_of: &HashMap<String, usize>,
) -> Result<()> {
    // Parts of tables and objects stand for them.
    let parts: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT 'pg_class', indexrelid::int8, indrelid::int8 FROM pg_index WHERE indrelid >= 16384
         UNION ALL SELECT 'pg_attrdef', oid::int8, adrelid::int8 FROM pg_attrdef WHERE adrelid >= 16384
         UNION ALL SELECT 'pg_constraint', oid::int8, conrelid::int8 FROM pg_constraint WHERE conrelid >= 16384",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading index and constraint owners".into())?;
    for (class, oid, rel) in parts {
        if let Some(n) = f.nodes.get(&("pg_class".to_string(), rel)).cloned() {
            f.nodes.entry((class, oid)).or_insert(n);
        }
    }
    let domain_checks: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT oid::int8, contypid::int8 FROM pg_constraint WHERE contypid >= 16384",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading domain constraints".into())?;
    for (oid, ty) in domain_checks {
        if let Some(n) = f.nodes.get(&("pg_type".to_string(), ty)).cloned() {
            f.nodes.entry(("pg_constraint".into(), oid)).or_insert(n);
        }
    }
    let deps: Vec<(String, i64, String, i64)> = sqlx::query_as(
        "SELECT classid::regclass::text, objid::int8, refclassid::regclass::text, refobjid::int8
         FROM pg_depend WHERE deptype IN ('n', 'a') AND objid >= 16384 AND refobjid >= 16384",
    )
    .fetch_all(&mut db.conn)
    .await
    .context(|| "reading pg_depend".into())?;
    let mut table_needs: HashMap<String, BTreeSet<usize>> = HashMap::new();
    let mut obj_tables: Vec<BTreeSet<String>> = vec![BTreeSet::new(); f.objects.len()];
    let mut obj_needs: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); f.objects.len()];
    for (class, oid, refclass, refoid) in deps {
        let (Some(from), Some(to)) = (
            f.nodes.get(&(class, oid)).cloned(),
            f.nodes.get(&(refclass, refoid)).cloned(),
        ) else {
            continue;
        };
        match (from, to) {
            (Node::Table(t), Node::Object(o)) => {
                table_needs.entry(t).or_default().insert(o);
            }
            (Node::Object(o), Node::Table(t)) => {
                obj_tables[o].insert(t);
            }
            (Node::Object(a), Node::Object(b)) if a != b => {
                obj_needs[a].insert(b);
            }
            _ => {}
        }
    }
    // Objects in a schema need it (it may be empty of tables).
    for (i, o) in f.objects.iter().enumerate() {
        if o.kind == ObjectKind::Schema || o.kind == ObjectKind::Extension {
            continue;
        }
        if let Some((schema, _)) = o.name.split_once('.')
            && let Some(&s) = schema_of.get(schema)
            && s != i
        {
            obj_needs[i].insert(s);
        }
    }
    for (i, o) in f.objects.iter_mut().enumerate() {
        for t in &obj_tables[i] {
            if !o.tables.contains(t) {
                o.tables.push(t.clone());
            }
        }
    }
    let keys: Vec<String> = f.objects.iter().map(|o| o.key()).collect();
    for (i, o) in f.objects.iter_mut().enumerate() {
        for &n in &obj_needs[i] {
            if !o.needs.contains(&keys[n]) {
                o.needs.push(keys[n].clone());
            }
        }
    }
    for (_, t) in tables.iter_mut() {
        let (schema, _) = super::postgres::split_name(&t.name);
        let mut needs: BTreeSet<String> = table_needs
            .get(&t.name)
            .map(|s| s.iter().map(|&i| keys[i].clone()).collect())
            .unwrap_or_default();
        if let Some(&s) = schema_of.get(&schema) {
            needs.insert(keys[s].clone());
        }
        t.table.needs = needs.into_iter().collect();
    }
    // An object made before the tables cannot need a table or a later object.
    loop {
        let after: BTreeSet<String> = f
            .objects
            .iter()
            .filter(|o| o.phase == Phase::After)
            .map(|o| o.key())
            .collect();
        let mut moved = false;
        for o in f.objects.iter_mut() {
            if o.phase == Phase::Before
                && (!o.tables.is_empty() || o.needs.iter().any(|n| after.contains(n)))
            {
                o.phase = Phase::After;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    Ok(())
}
