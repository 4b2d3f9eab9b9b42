//! Restoring into PostgreSQL: COPY into new or staging tables, constraints, indexes
//! and sequence values after the data, all made visible at one commit.

use super::*;
use crate::source::postgres::column_list;

/// A PostgreSQL database (or a PG-compatible engine).
pub(super) struct Postgres {
    pub(super) db: PgDb,
    /// For the extra connections that load big tables.
    pub(super) url: Secret<String>,
}

impl Destination for Postgres {
    fn loads_in_parallel(&self) -> bool {
        true
    }

    fn table_exists<'a>(&'a mut self, name: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move {
            let (schema, table) = split_name(name);
            self.db.table_exists(&schema, &table).await
        })
    }

    /// One query for all of them.
    fn tables_exist<'a>(
        &'a mut self,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<std::collections::HashSet<String>>> {
        Box::pin(async move {
            let (schemas, tables): (Vec<String>, Vec<String>) =
                names.iter().map(|n| split_name(n)).unzip();
            let found: Vec<(String, String)> = sqlx::query_as(
                "SELECT u.s, u.t FROM unnest($1::text[], $2::text[]) AS u(s, t) WHERE EXISTS (
                   SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = u.s AND c.relname = u.t)",
            )
            .bind(&schemas)
            .bind(&tables)
            .fetch_all(&mut self.db.conn)
            .await
            .map_err(|e| Error::Database {
                context: format!("looking up {} tables on {}", names.len(), self.db.display),
                source: e,
            })?;
            let found: std::collections::HashSet<(String, String)> = found.into_iter().collect();
            Ok(names
                .iter()
                .filter(|n| found.contains(&split_name(n)))
                .cloned()
                .collect())
        })
    }

    fn execute<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(async move { execute(run, self.db, &self.url).await })
    }

    fn preview<'a>(self: Box<Self>, run: Run<'a>) -> BoxFuture<'a, Result<Vec<RestoredTable>>> {
        Box::pin(preview(run, self.db))
    }
}

/// The counts of the plan's merges ([`super::diff`]). One `REPEATABLE READ` transaction,
/// so every count sees the destination at one instant: the temporary tables first,
/// then `SET TRANSACTION READ ONLY` — from there PostgreSQL refuses any change but to
/// temporary tables — then the backup's rows load into them and are compared with the
/// destination's by `SELECT`s; rolled back, which drops the temporary tables.
async fn preview(run: Run<'_>, mut db: PgDb) -> Result<Vec<RestoredTable>> {
    let (repo, _, progress) = run.parts();
    let merges = run.merges();
    db.exec("BEGIN ISOLATION LEVEL REPEATABLE READ").await?;
    let result = async {
        for (_, m) in &merges {
            crate::merge::prepare_postgres(&mut db, m).await?;
        }
        db.exec("SET TRANSACTION READ ONLY").await?;
        let mut done = Vec::new();
        for (t, m) in &merges {
            progress.table_started(&t.dest_table, Some(t.rows));
            let stage = m.stage();
            let sql = format!("COPY {stage} ({}) FROM STDIN", column_list(&t.columns));
            let rows = load(repo, t, vec![&mut db.conn], &sql, &stage, progress).await?;
            progress.table_finished(&t.dest_table);
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes: Vec::new(),
                merge: Some(crate::merge::count(&mut db, m).await?),
            });
        }
        Ok(done)
    }
    .await;
    let _ = db.exec("ROLLBACK").await;
    result
}

/// What a PostgreSQL restore created outside its transaction (schemas and enum types
/// that staging tables need, the staging tables): dropped again if the restore fails.
#[derive(Default)]
struct Outside {
    schemas: Vec<String>,
    types: Vec<String>,
    stages: Vec<String>,
    /// `DROP` statements of the schema objects made, in the order they were made.
    objects: Vec<String>,
}

impl Outside {
    async fn undo(self, db: &mut PgDb) {
        // One statement: staging tables may reference each other.
        if !self.stages.is_empty() {
            let _ = db
                .exec(&format!("DROP TABLE IF EXISTS {}", self.stages.join(", ")))
                .await;
        }
        for d in self.objects.into_iter().rev() {
            let _ = db.exec(&d).await;
        }
        for t in self.types {
            let _ = db.exec(&format!("DROP TYPE IF EXISTS {t}")).await;
        }
        for s in self.schemas.into_iter().rev() {
            let _ = db.exec(&format!("DROP SCHEMA IF EXISTS {s}")).await;
        }
    }
}

/// Creates the schemas and enum types the plan needs and the destination lacks; when
/// `outside` is given they are committed now and recorded there.
async fn create_schemas_and_types(
    db: &mut PgDb,
    plan: &RestorePlan,
    mut outside: Option<&mut Outside>,
) -> Result<()> {
    let mut schemas: Vec<String> = plan
        .tables
        .iter()
        .map(|t| split_name(&t.dest_table).0)
        .chain(plan.enums.iter().map(|e| e.schema.clone()))
        .collect();
    schemas.sort();
    schemas.dedup();
    for s in &schemas {
        if !db.schema_exists(s).await? {
            db.exec(&format!("CREATE SCHEMA {}", pg::quote(s))).await?;
            if let Some(o) = outside.as_deref_mut() {
                o.schemas.push(pg::quote(s));
            }
        }
    }
    for e in &plan.enums {
        if !db.type_exists(&e.schema, &e.name).await? {
            let labels: Vec<String> = e
                .labels
                .iter()
                .map(|l| format!("'{}'", l.replace('\'', "''")))
                .collect();
            let name = pg::qualified(&e.schema, &e.name);
            db.exec(&format!(
                "CREATE TYPE {name} AS ENUM ({})",
                labels.join(", ")
            ))
            .await?;
            if let Some(o) = outside.as_deref_mut() {
                o.types.push(name);
            }
        }
    }
    Ok(())
}

async fn execute(
    run: Run<'_>,
    mut db: PgDb,
    secret: &Secret<String>,
) -> Result<Vec<RestoredTable>> {
    let (repo, plan, progress) = run.parts();
    let mut outside = Outside::default();
    let mut in_transaction = false;
    let mut object_notes: Vec<(Option<String>, String)> = Vec::new();
    // Before anything changes: the extensions the objects need must be installable.
    check_extensions(&mut db, plan).await?;
    let result = async {
        // Big tables first load, over several connections, into staging tables; those
        // connections can only use committed schemas, types and other objects. Then,
        // when there are many tables, the small ones load the same way, several at a
        // time ([`stage_small_tables`]).
        let mut staged: BTreeMap<String, Staged> = BTreeMap::new();
        let small = small_tables(plan);
        if plan.tables.iter().any(|t| t.loaders > 1) || !small.is_empty() {
            db.exec("SET check_function_bodies = false").await?;
            db.exec("SET standard_conforming_strings = on").await?;
            // Schemas first (with their comments and grants), then enums, then the
            // rest of what the tables need.
            for schemas in [true, false] {
                if !schemas {
                    create_schemas_and_types(&mut db, plan, Some(&mut outside)).await?;
                }
                for o in plan.made.iter().filter(|o| {
                    o.phase == Phase::Before && (o.kind == ObjectKind::Schema) == schemas
                }) {
                    if make_object(&mut db, o, plan.object_opts, false, &mut Vec::new()).await?
                        && let Some(d) = &o.drop
                    {
                        outside.objects.push(d.clone());
                    }
                }
            }
            for t in plan.tables.iter().filter(|t| t.loaders > 1) {
                let (stage, rows) =
                    stage_table(repo, secret, plan, t, &mut db, &mut outside, progress).await?;
                staged.insert(
                    t.dest_table.clone(),
                    Staged {
                        stage,
                        rows,
                        made: false,
                        foreign_keys: Vec::new(),
                    },
                );
            }
            stage_small_tables(
                repo,
                secret,
                plan,
                &small,
                &mut staged,
                &mut outside,
                progress,
            )
            .await?;
        }
        db.exec("BEGIN").await?;
        in_transaction = true;
        // As pg_dump's scripts do: a function's body may name tables made later.
        db.exec("SET LOCAL check_function_bodies = false").await?;
        // Literals in the objects' statements are written for it.
        db.exec("SET LOCAL standard_conforming_strings = on")
            .await?;
        for schemas in [true, false] {
            if !schemas {
                create_schemas_and_types(&mut db, plan, None).await?;
            }
            for o in plan
                .made
                .iter()
                .filter(|o| o.phase == Phase::Before && (o.kind == ObjectKind::Schema) == schemas)
            {
                make_object(&mut db, o, plan.object_opts, true, &mut object_notes).await?;
            }
        }
        let mut done = Vec::new();
        let mut foreign_keys = Vec::new();
        // Statements of several tables go in one round trip (sent before any COPY).
        let mut batch = Vec::new();
        for (i, t) in plan.tables.iter().enumerate() {
            if let Some(m) = t.merge_table(i) {
                run_batch(&mut db, &mut batch, "tables").await?;
                crate::merge::prepare_postgres(&mut db, &m).await?;
                progress.table_started(&t.dest_table, Some(t.rows));
                let stage = m.stage();
                let sql = format!("COPY {stage} ({}) FROM STDIN", column_list(&t.columns));
                let rows = load(repo, t, vec![&mut db.conn], &sql, &stage, progress).await?;
                progress.table_finished(&t.dest_table);
                let counts = crate::merge::apply(&mut db, &m).await?;
                done.push(RestoredTable {
                    table: t.dest_table.clone(),
                    rows,
                    notes: Vec::new(),
                    merge: Some(counts),
                });
                continue;
            }
            let stage = staged.get(&t.dest_table);
            let (rows, keys) =
                restore_pg_table(repo, &mut db, t, stage, &mut batch, progress).await?;
            foreign_keys.extend(keys.into_iter().map(|(name, sql, def)| (i, name, sql, def)));
            done.push(RestoredTable {
                table: t.dest_table.clone(),
                rows,
                notes: Vec::new(),
                merge: None,
            });
        }
        run_batch(&mut db, &mut batch, "tables").await?;
        if let Some(base) = &plan.pitr {
            // Captured changes on top of the snapshot's rows, before foreign keys are
            // checked (the source ran them in this order, with its constraints).
            let mut targets = std::collections::HashMap::new();
            for t in &plan.tables {
                let (schema, table) = split_name(&t.dest_table);
                targets.insert(
                    t.source_table.clone(),
                    crate::capture::ReplayTarget {
                        rel: pg::qualified(&schema, &table),
                        columns: t.columns.clone(),
                    },
                );
            }
            db.exec("SET LOCAL standard_conforming_strings = on")
                .await?;
            crate::capture::replay(repo, base, &targets, &mut db.conn, progress).await?;
            for (i, t) in plan.tables.iter().enumerate() {
                let (schema, table) = split_name(&t.dest_table);
                let rel = pg::qualified(&schema, &table);
                done[i].rows = db.count_all(&rel).await?;
                db.catch_up_sequences(&rel, &t.entry, &t.columns).await?;
            }
        }
        // A foreign key to a table that is neither restored nor in the destination
        // cannot be added: the table comes back without it, and says so. (Which
        // tables are missing is one query; the keys go a few hundred per round trip.)
        let mut referenced: Vec<String> = foreign_keys
            .iter()
            .filter_map(|(_, _, _, condef)| pg::referenced_relation(condef))
            .collect();
        referenced.sort();
        referenced.dedup();
        let missing: Vec<String> = if referenced.is_empty() {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT r FROM unnest($1::text[]) AS r WHERE to_regclass(r) IS NULL")
                .bind(&referenced)
                .fetch_all(&mut db.conn)
                .await
                .map_err(|e| Error::Database {
                    context: format!(
                        "looking for the tables foreign keys reference in {}",
                        plan.dest
                    ),
                    source: e,
                })?
        };
        let mut batch = Vec::new();
        for (i, name, sql, condef) in foreign_keys {
            if let Some(rel) = pg::referenced_relation(&condef)
                && missing.contains(&rel)
            {
                done[i].notes.push(format!(
                    "foreign key {name} not restored: {rel} does not exist in the destination"
                ));
                continue;
            }
            batch.push(sql);
            if batch.len() >= STATEMENTS_PER_BATCH {
                run_batch(&mut db, &mut batch, "foreign keys").await?;
            }
        }
        run_batch(&mut db, &mut batch, "foreign keys").await?;
        // Views, triggers, policies, grants… once the rows are in: triggers do not fire
        // on restored rows, materialized views are refreshed from them.
        for o in plan.made.iter().filter(|o| o.phase == Phase::After) {
            make_object(&mut db, o, plan.object_opts, true, &mut object_notes).await?;
        }
        attach_notes(&mut done, object_notes);
        db.exec("COMMIT").await?;
        Ok(done)
    }
    .await;
    if result.is_err() {
        if in_transaction {
            let _ = db.exec("ROLLBACK").await;
        }
        outside.undo(&mut db).await;
    }
    result
}

/// The extensions the plan's objects need that the destination server cannot install:
/// an error naming them and the package that provides each, before anything changes.
async fn check_extensions(db: &mut PgDb, plan: &RestorePlan) -> Result<()> {
    let mut missing = Vec::new();
    for o in plan.made.iter().filter(|o| o.kind == ObjectKind::Extension) {
        let available: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1)",
        )
        .bind(&o.name)
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: format!("looking for extension {} on {}", o.name, plan.dest),
            source: e,
        })?;
        if !available {
            let version = o.version.as_deref().unwrap_or("?");
            missing.push(format!(
                "{} (version {version} in the backup; {})",
                o.name,
                extension_package(&o.name)
            ));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "the destination {} cannot install the extension(s) the backup's objects use: {}. Install them on the destination server, then restore again; nothing was changed",
        plan.dest,
        missing.join("; ")
    )))
}

/// Where an extension comes from, for the message that it is missing.
fn extension_package(name: &str) -> &'static str {
    match name {
        "postgis"
        | "postgis_topology"
        | "postgis_raster"
        | "postgis_tiger_geocoder"
        | "address_standardizer" => "Debian/Ubuntu package postgresql-NN-postgis-3",
        "vector" => "Debian/Ubuntu package postgresql-NN-pgvector",
        "timescaledb" => "package timescaledb-2-postgresql-NN from Timescale",
        "pg_cron" => "Debian/Ubuntu package postgresql-NN-cron",
        "pg_partman" => "Debian/Ubuntu package postgresql-NN-partman",
        "citext" | "hstore" | "pg_trgm" | "pgcrypto" | "uuid-ossp" | "btree_gin" | "btree_gist"
        | "ltree" | "cube" | "earthdistance" | "fuzzystrmatch" | "intarray" | "tablefunc"
        | "unaccent" | "pg_stat_statements" | "postgres_fdw" | "isn" | "seg"
        | "tsm_system_rows" | "bloom" | "lo" => {
            "part of PostgreSQL's contrib modules (postgresql-contrib, included in Debian's postgresql-NN)"
        }
        _ => "install the package that provides it",
    }
}

/// Makes one schema object. Inside the restore's transaction (`in_tx`) each statement
/// runs under a savepoint: an object the destination already has is kept (its first
/// statement fails as a duplicate), a grant to a role the destination lacks is left
/// out with a note; any other failure fails the restore. Returns whether it was made.
async fn make_object(
    db: &mut PgDb,
    o: &SchemaObject,
    opts: crate::objects::ObjectOptions,
    in_tx: bool,
    notes: &mut Vec<(Option<String>, String)>,
) -> Result<bool> {
    let table = o.tables.first().cloned();
    if let Some(why) = untrusted(db, o).await? {
        notes.push((table, format!("{} {} not made: {why}", o.kind, o.name)));
        return Ok(false);
    }
    for (i, sql) in o.sql.iter().enumerate() {
        // Snapshots written before 2026-12-07 hold `CREATE OR REPLACE FUNCTION`: a
        // restore never replaces the destination's function.
        let sql = match sql.strip_prefix("CREATE OR REPLACE ") {
            Some(rest) => format!("CREATE {rest}"),
            None => sql.clone(),
        };
        let grant = sql.starts_with("GRANT ") || sql.starts_with("REVOKE ");
        if (grant && !opts.acl) || (!opts.refresh && sql.starts_with("REFRESH MATERIALIZED VIEW")) {
            continue;
        }
        if !ALLOWED.iter().any(|p| sql.starts_with(p)) {
            return Err(Error::damaged(format!(
                "{} {} holds a statement a schema object cannot have ({}…): nothing was restored",
                o.kind,
                o.name,
                sql.chars().take(40).collect::<String>()
            )));
        }
        if in_tx {
            db.exec("SAVEPOINT tablesafe_object").await?;
        }
        // One statement, through the extended protocol: text from a snapshot cannot
        // carry a second statement along.
        let result = sqlx::query(&sql)
            .persistent(false)
            .execute(&mut db.conn)
            .await;
        let code = match &result {
            Ok(_) => None,
            Err(e) => Some(
                e.as_database_error()
                    .and_then(|d| d.code())
                    .map(|c| c.to_string())
                    .unwrap_or_default(),
            ),
        };
        if in_tx {
            db.exec(if code.is_some() {
                "ROLLBACK TO SAVEPOINT tablesafe_object"
            } else {
                "RELEASE SAVEPOINT tablesafe_object"
            })
            .await?;
        }
        let Err(e) = result else { continue };
        let code = code.unwrap_or_default();
        let duplicate = matches!(code.as_str(), "42710" | "42723" | "42P07" | "42P06");
        if i == 0 && duplicate {
            if !matches!(o.kind, ObjectKind::Schema | ObjectKind::Extension) {
                notes.push((
                    table,
                    format!("kept the destination's existing {} {}", o.kind, o.name),
                ));
            }
            return Ok(false);
        }
        if (grant || o.kind == ObjectKind::Policy)
            && code == "42704"
            && e.to_string().contains("role \"")
        {
            notes.push((
                table.clone(),
                format!("not restored: {sql} ({e}); create the role and grant again, or restore without grants"),
            ));
            continue;
        }
        return Err(Error::Database {
            context: format!("making {} {}: {sql}", o.kind, o.name),
            source: e,
        });
    }
    // It now runs as the role that restored it, whoever wrote it on the source.
    if matches!(o.kind, ObjectKind::Function | ObjectKind::Procedure)
        && o.sql
            .first()
            .is_some_and(|d| d.contains(" SECURITY DEFINER"))
    {
        notes.push((
            table,
            format!(
                "{} {} is SECURITY DEFINER: it runs with the privileges of the role that restored it; review it, or change its owner",
                o.kind, o.name
            ),
        ));
    }
    Ok(true)
}

/// How the statements of a PostgreSQL schema object begin (what the catalog reader
/// writes); anything else in a snapshot is refused.
const ALLOWED: &[&str] = &[
    "CREATE ",
    "ALTER ",
    "COMMENT ON ",
    "GRANT ",
    "REVOKE ",
    "REFRESH MATERIALIZED VIEW ",
    "SELECT pg_catalog.setval(",
];

/// Procedural languages that reach the operating system (PostgreSQL calls them
/// untrusted: only superusers may write in them).
const UNTRUSTED_LANGUAGE_EXTENSIONS: &[&str] =
    &["plpython3u", "plpythonu", "plpython2u", "plperlu", "pltclu"];

/// Why an object is not made by a restore, for a function in an untrusted language or
/// the extension that installs one: its code would run with the database server's
/// operating-system rights under the restoring role, whoever wrote it on the source.
async fn untrusted(db: &mut PgDb, o: &SchemaObject) -> Result<Option<String>> {
    if o.kind == ObjectKind::Extension && UNTRUSTED_LANGUAGE_EXTENSIONS.contains(&o.name.as_str()) {
        return Ok(Some(format!(
            "{} is an untrusted language (its code runs with the server's operating-system rights); install it yourself if you trust the functions written in it",
            o.name
        )));
    }
    if !matches!(o.kind, ObjectKind::Function | ObjectKind::Procedure) {
        return Ok(None);
    }
    let Some(language) = o.sql.first().and_then(|d| {
        let at = d.find(" LANGUAGE ")? + " LANGUAGE ".len();
        d[at..].split_whitespace().next().map(str::to_string)
    }) else {
        return Ok(None);
    };
    let trusted: Option<bool> =
        sqlx::query_scalar("SELECT lanpltrusted FROM pg_language WHERE lanname = $1")
            .bind(&language)
            .fetch_optional(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: format!("looking up language {language}"),
                source: e,
            })?;
    Ok(match trusted {
        Some(false) => Some(format!(
            "it is written in {language}, an untrusted language (its code runs with the server's operating-system rights); review it and create it yourself"
        )),
        _ => None,
    })
}

/// Loads a big table over several connections into a new staging table next to its
/// destination, committed but not yet in place. Returns its name and row count.
async fn stage_table(
    repo: &Repository,
    secret: &Secret<String>,
    plan: &RestorePlan,
    t: &PlannedTable,
    db: &mut PgDb,
    outside: &mut Outside,
    progress: &dyn Progress,
) -> Result<(String, u64)> {
    let def = pg_definition(&t.entry)?;
    let (schema, _) = split_name(&t.dest_table);
    let stage = format!(
        "tablesafe_stage_{}",
        crate::repo::crypto::hex(&rand::random::<[u8; 6]>())
    );
    db.exec(&pg::create_table_sql(
        def,
        &schema,
        &stage,
        &t.columns,
        &[],
        true,
    ))
    .await?;
    let rel = pg::qualified(&schema, &stage);
    outside.stages.push(rel.clone());
    let mut loaders = Vec::with_capacity(t.loaders);
    for _ in 0..t.loaders {
        loaders.push(PgDb::connect(secret, plan.dest.clone()).await?);
    }
    progress.table_started(&t.dest_table, Some(t.rows));
    let sql = format!("COPY {rel} ({}) FROM STDIN", column_list(&t.columns));
    let rows = load(
        repo,
        t,
        loaders.iter_mut().map(|l| &mut l.conn).collect(),
        &sql,
        &rel,
        progress,
    )
    .await?;
    progress.table_finished(&t.dest_table);
    Ok((stage, rows))
}

fn pg_definition(e: &TableEntry) -> Result<&crate::model::PgTable> {
    e.schema
        .postgres
        .as_ref()
        .ok_or_else(|| Error::damaged(format!("table {} lacks its PostgreSQL definition", e.name)))
}

/// Keeps the tab-separated fields of a COPY text line whose flag is set (tabs inside
/// values are escaped as `\t`, so a raw tab always separates fields).
fn project_copy_line(line: &[u8], keep: &[bool], out: &mut Vec<u8>) {
    let mut first = true;
    for (field, k) in line.split(|&b| b == b'\t').zip(keep) {
        if *k {
            if !first {
                out.push(b'\t');
            }
            out.extend_from_slice(field);
            first = false;
        }
    }
    out.push(b'\n');
}

/// Rows on their way to one COPY.
enum Piece {
    Rows(Vec<u8>),
    /// The rows turned out damaged: abort the COPY.
    Abort,
}

/// Streams a table's rows (projected to the restored columns) into one `COPY … FROM
/// STDIN` per connection, whole rows at a time, and checks them against the table's
/// checksum. Returns the row count; on damage the COPYs are aborted.
async fn load(
    repo: &Repository,
    t: &PlannedTable,
    conns: Vec<&mut sqlx::PgConnection>,
    sql: &str,
    rel: &str,
    progress: &dyn Progress,
) -> Result<u64> {
    let db_err = |err| Error::Database {
        context: format!("COPY into {rel}"),
        source: err,
    };
    let mut senders = Vec::new();
    let mut consumers = Vec::new();
    for conn in conns {
        let mut copy = conn.copy_in_raw(sql).await.map_err(db_err)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Piece>(2);
        senders.push(tx);
        consumers.push(async move {
            while let Some(piece) = rx.recv().await {
                match piece {
                    Piece::Rows(rows) => {
                        copy.send(rows.as_slice()).await.map_err(db_err)?;
                    }
                    Piece::Abort => {
                        let _ = copy.abort("tablesafe: restore aborted").await;
                        return Ok(());
                    }
                }
            }
            copy.finish().await.map(|_| ()).map_err(db_err)
        });
    }
    let produce = async {
        let result = produce_rows(repo, t, &senders, progress).await;
        if result.is_err() {
            for tx in &senders {
                let _ = tx.send(Piece::Abort).await;
            }
        }
        drop(senders);
        result
    };
    let (produced, consumed) = futures::join!(produce, futures::future::join_all(consumers));
    let consumed: Result<Vec<()>> = consumed.into_iter().collect();
    match (produced, consumed) {
        (Ok(rows), Ok(_)) => Ok(rows),
        // A loader that failed explains a producer that could not hand it rows.
        (Err(e), _) if matches!(e, Error::Damaged(_) | Error::Cancelled) => Err(e),
        (_, Err(e)) => Err(e),
        (Err(e), Ok(_)) => Err(e),
    }
}

async fn produce_rows(
    repo: &Repository,
    t: &PlannedTable,
    senders: &[tokio::sync::mpsc::Sender<Piece>],
    progress: &dyn Progress,
) -> Result<u64> {
    let e = &t.entry;
    let all = t.columns.len() == e.stream_columns.len();
    let keep: Vec<bool> = e
        .stream_columns
        .iter()
        .map(|c| t.columns.contains(c))
        .collect();
    let filtered = !t.filter.is_empty();
    let mut hasher = crate::checksum::StreamCheck::new(e)?;
    let mut rows = 0u64;
    let mut kept = 0u64;
    let mut carry: Vec<u8> = Vec::new();
    let mut next = 0;
    // A long row (more than LONG_ROW bytes) is being sent, piece by piece, to
    // `senders[next]`, so it is never held whole (only without a filter or a column
    // choice, which need whole rows).
    let mut long = false;
    let send = |to: usize, buf: Vec<u8>| {
        let tx = senders[to % senders.len()].clone();
        let table = &t.dest_table;
        async move {
            tx.send(Piece::Rows(buf))
                .await
                .map_err(|_| Error::Other(format!("loading {table} stopped")))
        }
    };
    let mut stream = crate::segment::table_stream(repo, e)?;
    while let Some(piece) = stream.next().await {
        progress.check_abort()?;
        let mut piece = piece?;
        hasher.update(&piece)?;
        let mut n = count_lines(&piece);
        rows += n;
        progress.advanced(n, piece.len() as u64);
        if long {
            let Some(i) = memchr::memchr(b'\n', &piece) else {
                send(next, piece).await?;
                continue;
            };
            // The long row ends here; what follows are whole rows for any connection.
            let rest = piece.split_off(i + 1);
            send(next, piece).await?;
            next += 1;
            long = false;
            kept += 1;
            n -= 1;
            piece = rest;
        }
        // Whole rows only, so pieces can go to different connections. The carry never
        // holds a row end, so only the new piece is searched for one; a piece that ends
        // no row joins the carry whole (moved, not copied: a row of many pieces would
        // otherwise be copied again with each one).
        let last_end = memchr::memrchr(b'\n', &piece);
        let piece_len = piece.len();
        let mut buf = if carry.is_empty() {
            piece
        } else {
            let mut c = std::mem::take(&mut carry);
            c.extend_from_slice(&piece);
            c
        };
        let Some(i) = last_end else {
            carry = buf;
            if all && !filtered && carry.len() > crate::rowcut::LONG_ROW {
                // The start of a long row: sent on now, the rest follows it.
                send(next, std::mem::take(&mut carry)).await?;
                long = true;
            }
            continue;
        };
        carry = buf.split_off(buf.len() - piece_len + i + 1);
        if filtered {
            let mut out = Vec::with_capacity(buf.len());
            if !buf.is_empty() {
                for line in buf[..buf.len() - 1].split(|&b| b == b'\n') {
                    if t.filter.matches(&crate::export::copy_fields(line)) {
                        kept += 1;
                        if all {
                            out.extend_from_slice(line);
                            out.push(b'\n');
                        } else {
                            project_copy_line(line, &keep, &mut out);
                        }
                    }
                }
            }
            buf = out;
        } else if !all {
            kept += n;
            let mut out = Vec::with_capacity(buf.len());
            for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                project_copy_line(line, &keep, &mut out);
            }
            buf = out;
        } else {
            kept += n;
        }
        if !buf.is_empty() {
            send(next, buf).await?;
            next += 1;
        }
    }
    if !hasher.matches(e) || rows != e.rows || !carry.is_empty() || long {
        return Err(Error::damaged(format!(
            "table {} does not match its checksum ({rows} of {} rows read); nothing was restored",
            e.name, e.rows
        )));
    }
    Ok(kept)
}

/// A table loaded before the restore's transaction into a committed staging table
/// next to its destination, which that transaction renames into place.
struct Staged {
    stage: String,
    rows: u64,
    /// Its primary key, unique and check constraints and its indexes are made
    /// already (under their final names: only for a table the restore creates new).
    made: bool,
    /// Foreign keys (by their name in the snapshot) made already, to other staged
    /// tables.
    foreign_keys: Vec<String>,
}

/// Below this many tables, everything loads on the restore's own connection.
const PARALLEL_MIN_TABLES: usize = 8;

/// Statements sent in one round trip (a simple query of several statements).
const STATEMENTS_PER_BATCH: usize = 200;

/// The tables [`stage_small_tables`] loads: with `--jobs` above 1 and at least
/// [`PARALLEL_MIN_TABLES`] of them, every table the restore creates or replaces that is
/// not already loaded over several connections.
fn small_tables(plan: &RestorePlan) -> Vec<usize> {
    if plan.jobs < 2 {
        return Vec::new();
    }
    let picks: Vec<usize> = plan
        .tables
        .iter()
        .enumerate()
        .filter(|(_, t)| t.loaders <= 1 && t.action.creates())
        .map(|(i, _)| i)
        .collect();
    if picks.len() < PARALLEL_MIN_TABLES {
        return Vec::new();
    }
    picks
}

/// Loads many small tables at once over `--jobs` connections, each into a staging
/// table of its own in a transaction of its own: `CREATE TABLE`, `COPY … (FREEZE)`, then
/// (for a new table) its primary key, unique and check constraints and indexes, then
/// `COMMIT`. The server builds several tables at once instead of one after the other,
/// which is where the time of a restore of thousands of small tables goes (issue 28).
///
/// Visibility and failure are those of the big tables' staging: what a staging table
/// holds is committed but under a `tablesafe_stage_…` name nobody uses; the restore's
/// one transaction renames each into place (with its defaults, sequences and foreign
/// keys), so the tables appear together at its commit, or not at all. A failure
/// anywhere — one loader, the data's checksum, the rename transaction — drops every
/// staging table made ([`Outside::undo`]), and the destination is as before.
async fn stage_small_tables(
    repo: &Repository,
    secret: &Secret<String>,
    plan: &RestorePlan,
    picks: &[usize],
    staged: &mut BTreeMap<String, Staged>,
    outside: &mut Outside,
    progress: &dyn Progress,
) -> Result<()> {
    if picks.is_empty() {
        return Ok(());
    }
    let mut conns = Vec::new();
    for _ in 0..plan.jobs.min(picks.len()) {
        conns.push(PgDb::connect(secret, plan.dest.clone()).await?);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    // Every staging table is recorded before it is made, so a failure drops it.
    let stages = std::sync::Mutex::new(Vec::new());
    let loaded = std::sync::Mutex::new(Vec::new());
    let workers = conns.iter_mut().map(|conn: &mut PgDb| {
        let (next, failed, stages, loaded) = (&next, &failed, &stages, &loaded);
        async move {
            use std::sync::atomic::Ordering;
            while !failed.load(Ordering::Relaxed) {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = picks.get(k) else { break };
                let t = &plan.tables[i];
                let done = stage_small(repo, conn, t, stages, progress).await;
                match done {
                    Ok(s) => loaded.lock().expect("not poisoned").push((i, s)),
                    Err(e) => {
                        failed.store(true, Ordering::Relaxed);
                        let _ = conn.exec("ROLLBACK").await;
                        return Err(e);
                    }
                }
            }
            Ok(())
        }
    });
    let results = futures::future::join_all(workers).await;
    outside
        .stages
        .extend(stages.into_inner().expect("not poisoned"));
    first_error(results)?;
    for (i, s) in loaded.into_inner().expect("not poisoned") {
        staged.insert(plan.tables[i].dest_table.clone(), s);
    }

    // Then the foreign keys between them, validated several at a time too: each in a
    // transaction of its own that locks both tables in name order first (two keys
    // between the same tables then wait for each other instead of deadlocking).
    let keys = staged_foreign_keys(plan, picks, staged);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let workers = conns.iter_mut().map(|conn: &mut PgDb| {
        let (next, failed, keys) = (&next, &failed, &keys);
        async move {
            use std::sync::atomic::Ordering;
            while !failed.load(Ordering::Relaxed) {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((table, _, sql)) = keys.get(k) else {
                    break;
                };
                progress.check_abort()?;
                if let Err(e) = run_batch(conn, &mut vec![sql.clone()], table).await {
                    failed.store(true, Ordering::Relaxed);
                    let _ = conn.exec("ROLLBACK").await;
                    return Err(e);
                }
            }
            Ok(())
        }
    });
    let results = futures::future::join_all(workers).await;
    first_error(results)?;
    for (table, name, _) in keys {
        if let Some(s) = staged.get_mut(&table) {
            s.foreign_keys.push(name);
        }
    }
    Ok(())
}

/// The first error of parallel loaders that is not a cancellation (another loader's
/// failure cancels the rest).
fn first_error(results: Vec<Result<()>>) -> Result<()> {
    match results
        .into_iter()
        .filter_map(|r| r.err())
        .min_by_key(|e| matches!(e, Error::Cancelled))
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The foreign keys of the staged new tables `picks` that reference another staged
/// new table by its destination name (as the restore's transaction would find it), as
/// (table, constraint name, transaction adding it to the staging tables). Other keys
/// are added by the restore's transaction.
fn staged_foreign_keys(
    plan: &RestorePlan,
    picks: &[usize],
    staged: &BTreeMap<String, Staged>,
) -> Vec<(String, String, String)> {
    // Staging tables of new tables by the name the server prints for the table.
    let by_printed: std::collections::HashMap<String, String> = staged
        .iter()
        .filter(|(_, s)| s.made)
        .map(|(dest, s)| {
            let (schema, _) = split_name(dest);
            (printed(dest), pg::qualified(&schema, &s.stage))
        })
        .collect();
    let mut out = Vec::new();
    for &i in picks {
        let t = &plan.tables[i];
        let (Some(s), Ok(def)) = (staged.get(&t.dest_table), pg_definition(&t.entry)) else {
            continue;
        };
        if !s.made || t.columns.len() != t.entry.stream_columns.len() {
            continue;
        }
        let (schema, table) = split_name(&t.dest_table);
        let child = pg::qualified(&schema, &s.stage);
        let renamed = t.dest_table != t.entry.name;
        for c in def
            .constraints
            .iter()
            .filter(|c| c.kind == ConstraintKind::ForeignKey)
        {
            let Some(parent) = pg::referenced_relation(&c.definition) else {
                continue;
            };
            let Some(parent_stage) = by_printed.get(&parent) else {
                continue;
            };
            let definition = c.definition.replacen(
                &format!(" REFERENCES {parent}("),
                &format!(" REFERENCES {parent_stage}("),
                1,
            );
            let name = if renamed {
                format!("{table}_{}", c.name)
            } else {
                c.name.clone()
            };
            let mut locks = vec![child.clone(), parent_stage.clone()];
            locks.sort();
            locks.dedup();
            out.push((
                t.dest_table.clone(),
                c.name.clone(),
                format!(
                    "BEGIN; LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE; {}; COMMIT",
                    locks.join(", "),
                    pg::constraint_sql(&schema, &s.stage, &name, &definition)
                ),
            ));
        }
    }
    out
}

/// How `pg_get_constraintdef` (with `search_path` = `pg_catalog`) prints the table
/// `schema.table`: each part quoted only when it must be.
fn printed(dest: &str) -> String {
    let (schema, table) = split_name(dest);
    let part = |p: &str| {
        let plain = p
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !RESERVED.contains(&p);
        if plain { p.to_string() } else { pg::quote(p) }
    };
    format!("{}.{}", part(&schema), part(&table))
}

/// Keywords `quote_ident` quotes (PostgreSQL's reserved and column-name keywords a
/// table or schema could be named): a name among them never matches, and its key is
/// then added by the restore's transaction, as before.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "between",
    "bigint",
    "binary",
    "bit",
    "boolean",
    "both",
    "case",
    "cast",
    "char",
    "character",
    "check",
    "coalesce",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "dec",
    "decimal",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "exists",
    "extract",
    "false",
    "fetch",
    "float",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "greatest",
    "group",
    "grouping",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "inout",
    "int",
    "integer",
    "intersect",
    "interval",
    "into",
    "is",
    "isnull",
    "join",
    "json",
    "lateral",
    "leading",
    "least",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "national",
    "natural",
    "nchar",
    "none",
    "normalize",
    "not",
    "notnull",
    "null",
    "nullif",
    "numeric",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "out",
    "outer",
    "overlaps",
    "overlay",
    "placing",
    "position",
    "precision",
    "primary",
    "real",
    "references",
    "returning",
    "right",
    "row",
    "select",
    "session_user",
    "setof",
    "similar",
    "smallint",
    "some",
    "substring",
    "symmetric",
    "system_user",
    "table",
    "tablesample",
    "then",
    "time",
    "timestamp",
    "to",
    "trailing",
    "treat",
    "trim",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "values",
    "varchar",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
    "xmlattributes",
    "xmlconcat",
    "xmlelement",
    "xmlexists",
    "xmlforest",
    "xmlnamespaces",
    "xmlparse",
    "xmlpi",
    "xmlroot",
    "xmlserialize",
    "xmltable",
];

/// One table of [`stage_small_tables`], on one loader connection.
async fn stage_small(
    repo: &Repository,
    conn: &mut PgDb,
    t: &PlannedTable,
    stages: &std::sync::Mutex<Vec<String>>,
    progress: &dyn Progress,
) -> Result<Staged> {
    let def = pg_definition(&t.entry)?;
    let (schema, table) = split_name(&t.dest_table);
    let stage = format!(
        "tablesafe_stage_{}",
        crate::repo::crypto::hex(&rand::random::<[u8; 6]>())
    );
    let rel = pg::qualified(&schema, &stage);
    stages.lock().expect("not poisoned").push(rel.clone());
    let mut batch = vec![
        "BEGIN".to_string(),
        pg::create_table_sql(def, &schema, &stage, &t.columns, &[], true),
    ];
    run_batch(conn, &mut batch, &t.dest_table).await?;
    progress.table_started(&t.dest_table, Some(t.rows));
    let sql = format!(
        "COPY {rel} ({}) FROM STDIN (FREEZE)",
        column_list(&t.columns)
    );
    let rows = load(repo, t, vec![&mut conn.conn], &sql, &rel, progress).await?;
    progress.table_finished(&t.dest_table);
    // A replaced table's constraints and indexes are made after the old one is dropped
    // (their names are taken until then).
    let made = matches!(t.action, Action::Create);
    if made {
        batch.extend(constraints_and_indexes(t, def, &schema, &stage, &table));
    }
    batch.push("COMMIT".into());
    run_batch(conn, &mut batch, &t.dest_table).await?;
    Ok(Staged {
        stage,
        rows,
        made,
        foreign_keys: Vec::new(),
    })
}

/// The primary key, unique and check constraints and the indexes of `t`, made on
/// `on` (the table, or its staging table) under the names they have on `table`.
fn constraints_and_indexes(
    t: &PlannedTable,
    def: &crate::model::PgTable,
    schema: &str,
    on: &str,
    table: &str,
) -> Vec<String> {
    let e = &t.entry;
    let all = t.columns.len() == e.stream_columns.len();
    let renamed = t.dest_table != e.name;
    let new_name = |old: &str| {
        if renamed {
            format!("{table}_{old}")
        } else {
            old.to_string()
        }
    };
    let mut out = Vec::new();
    for c in &def.constraints {
        // Constraints on columns that were left out cannot come back.
        if c.kind == ConstraintKind::ForeignKey || (!all && c.kind != ConstraintKind::PrimaryKey) {
            continue;
        }
        out.push(pg::constraint_sql(
            schema,
            on,
            &new_name(&c.name),
            &c.definition,
        ));
    }
    if all {
        for (name, idxdef) in &def.indexes {
            if let Some(sql) = pg::index_sql(idxdef, schema, on, &new_name(name)) {
                out.push(sql);
            }
        }
    }
    out
}

/// Runs `stmts` as one simple query (one round trip) and empties it.
async fn run_batch(db: &mut PgDb, stmts: &mut Vec<String>, what: &str) -> Result<()> {
    if stmts.is_empty() {
        return Ok(());
    }
    let sql = stmts.join(";\n");
    stmts.clear();
    sqlx::Executor::execute(&mut db.conn, sql.as_str())
        .await
        .map(|_| ())
        .map_err(|e| Error::Database {
            context: format!("restoring {what} into {}", db.display),
            source: e,
        })
}

/// Restores one table inside the restore's transaction: creates it (or renames its
/// staging table into place), loads the rows unless staged, then adds constraints,
/// indexes and sequence values; returns the rows and the foreign keys to add. Its
/// statements join `batch`, sent before any COPY and
/// whenever it holds [`STATEMENTS_PER_BATCH`]: one round trip for many tables.
async fn restore_pg_table(
    repo: &Repository,
    db: &mut PgDb,
    t: &PlannedTable,
    staged: Option<&Staged>,
    batch: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<(u64, Vec<(String, String, String)>)> {
    let e = &t.entry;
    let def = pg_definition(e)?;
    let (schema, table) = split_name(&t.dest_table);
    let renamed = t.dest_table != e.name;
    let rel = pg::qualified(&schema, &table);
    let new_name = |old: &str| {
        if renamed {
            format!("{table}_{old}")
        } else {
            old.to_string()
        }
    };
    let creates = matches!(t.action, Action::Create | Action::Replace);
    // Added by the caller once every table is in (name, statement, definition).
    let mut foreign_keys = Vec::new();
    let mut seq_targets: Vec<(String, String, i64, bool)> = Vec::new();
    if creates {
        if matches!(t.action, Action::Replace) {
            batch.push(format!("DROP TABLE {rel}"));
        }
        // Serial columns: their sequence first (renamed along with the table).
        let mut renames = Vec::new();
        for (regclass, column, last, called) in &def.sequences {
            let col = def.columns.iter().find(|c| &c.name == column);
            if col.is_some_and(|c| c.identity == Identity::None) && t.columns.contains(column) {
                let target = if renamed {
                    pg::qualified(&schema, &format!("{table}_{column}_seq"))
                } else {
                    regclass.clone()
                };
                // A serial's sequence has the column's type (serial: integer).
                let ty = col
                    .map(|c| c.type_sql.as_str())
                    .filter(|t| matches!(*t, "smallint" | "integer" | "bigint"))
                    .map(|t| format!(" AS {t}"))
                    .unwrap_or_default();
                batch.push(format!("CREATE SEQUENCE IF NOT EXISTS {target}{ty}"));
                renames.push((regclass.clone(), target.clone()));
                seq_targets.push((target, String::new(), *last, *called));
            } else if t.columns.contains(column) {
                seq_targets.push((String::new(), column.clone(), *last, *called));
            }
        }
        match staged {
            Some(s) => {
                batch.push(format!(
                    "ALTER TABLE {} RENAME TO {}",
                    pg::qualified(&schema, &s.stage),
                    pg::quote(&table)
                ));
                batch.extend(pg::column_defaults_sql(
                    def, &schema, &table, &t.columns, &renames,
                ));
            }
            None => batch.push(pg::create_table_sql(
                def, &schema, &table, &t.columns, &renames, false,
            )),
        }
        for (target, column, _, _) in &seq_targets {
            if column.is_empty() {
                let col = def
                    .sequences
                    .iter()
                    .find(|s| renames.iter().any(|(o, n)| n == target && o == &s.0))
                    .map(|s| s.1.clone());
                if let Some(col) = col {
                    batch.push(format!(
                        "ALTER SEQUENCE {target} OWNED BY {rel}.{}",
                        pg::quote(&col)
                    ));
                }
            }
        }
    }
    let rows = match staged {
        Some(s) => s.rows,
        None => {
            run_batch(db, batch, &t.dest_table).await?;
            progress.table_started(&t.dest_table, Some(t.rows));
            // FREEZE (allowed because the table was created in this transaction) writes
            // the rows already frozen, sparing the first VACUUM a pass over them.
            let sql = format!(
                "COPY {rel} ({}) FROM STDIN{}",
                column_list(&t.columns),
                if creates { " (FREEZE)" } else { "" }
            );
            let rows = load(repo, t, vec![&mut db.conn], &sql, &rel, progress).await?;
            progress.table_finished(&t.dest_table);
            rows
        }
    };

    if creates {
        if !staged.is_some_and(|s| s.made) {
            batch.extend(constraints_and_indexes(t, def, &schema, &table, &table));
        }
        let all = t.columns.len() == e.stream_columns.len();
        for c in def.constraints.iter().filter(|c| {
            c.kind == ConstraintKind::ForeignKey
                && all
                && !staged.is_some_and(|s| s.foreign_keys.contains(&c.name))
        }) {
            let sql = pg::constraint_sql(&schema, &table, &new_name(&c.name), &c.definition);
            foreign_keys.push((new_name(&c.name), sql, c.definition.clone()));
        }
        for (target, column, last, called) in &seq_targets {
            // The sequence of an identity column is found by the server in the same
            // statement (setval ignores none: an identity column always has one).
            let seq = if column.is_empty() {
                crate::source::sql_string(target)
            } else {
                format!(
                    "pg_catalog.pg_get_serial_sequence({}, {})",
                    crate::source::sql_string(&rel),
                    crate::source::sql_string(column)
                )
            };
            batch.push(format!("SELECT pg_catalog.setval({seq}, {last}, {called})"));
        }
    }
    if batch.len() >= STATEMENTS_PER_BATCH {
        run_batch(db, batch, "tables").await?;
    }
    Ok((rows, foreign_keys))
}
