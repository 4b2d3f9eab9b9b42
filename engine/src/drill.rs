//! Restore drills: proof, kept as evidence, that a snapshot restores.
//!
//! A drill restores a snapshot into a **scratch** database that exists only for the
//! drill (a new SQLite file, or a database created on a PostgreSQL server and dropped
//! afterwards), then checks what arrived:
//! - every table is read back the way a backup reads it and compared with the manifest:
//!   its row count, and the BLAKE3 of its canonical stream — the same checksum the
//!   backup recorded, so a single changed value, lost row or reordered key fails. A
//!   table without a key has no order to keep (PostgreSQL loads big ones over several
//!   connections): when its checksum differs it is compared as a set (the sum of each
//!   row's hash, and the count) against the stream in the repository, on every engine;
//! - the user's SQL assertions (each returns one boolean, e.g. `SELECT count(*) > 0
//!   FROM orders`) run read-only on the scratch copy.
//!
//! The [`DrillReport`] says what was restored, how long it took, every check's outcome
//! and whether the scratch copy was removed. A failed restore or check is a report with
//! `passed: false` (the evidence an auditor wants), not an error; errors are for a drill
//! that could not start (no such snapshot, no scratch database).

use crate::model::{Engine, StreamFormat, TableEntry, encode_value};
use crate::progress::Progress;
use crate::repo::{Repository, crypto::hex, now_ms};
use crate::restore::{self, Mode, RestoreOptions};
use crate::secret::Secret;
use crate::selection::Selection;
use crate::source::mysql::{self as my, MyDb, MyTableInfo};
use crate::source::postgres::{self as pg, PgDb, PgTableInfo};
use crate::source::sqlite::{SqliteDb, TableInfo};
use crate::source::{DiscoveredTable, SourceDb};
use crate::{Error, Result};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::{Connection, Row};
use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;

/// Where a drill's scratch copy goes.
#[derive(Debug, Clone)]
pub enum Scratch {
    /// A SQLite snapshot: a new file in a private directory (0700, random name) made in
    /// this directory, the file owner-only (0600); both deleted afterwards.
    Dir(PathBuf),
    /// A PostgreSQL snapshot: a database created on this server (the URL's own database
    /// is only where `CREATE DATABASE` runs) and dropped afterwards. The URL's user
    /// needs the CREATEDB privilege.
    Postgres(Secret<String>),
    /// A MySQL snapshot: a database created on this server and dropped afterwards (the
    /// URL's user needs CREATE and DROP).
    Mysql(Secret<String>),
}

impl Scratch {
    /// `postgres://…` and `mysql://…` are servers; anything else a directory for a
    /// SQLite file.
    pub fn parse(s: &Secret<String>) -> Scratch {
        let raw = s.expose();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            Scratch::Postgres(s.clone())
        } else if raw.starts_with("mysql://") || raw.starts_with("mariadb://") {
            Scratch::Mysql(s.clone())
        } else {
            Scratch::Dir(raw.strip_prefix("sqlite://").unwrap_or(raw).into())
        }
    }
}

#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// `latest`, `random`, an id or a unique prefix.
    pub snapshot: String,
    pub scratch: Scratch,
    /// SQL queries that must each return one row whose first column is true.
    pub assertions: Vec<String>,
    /// PostgreSQL: connections that load one big table (as for a restore).
    pub jobs: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCheck {
    pub table: String,
    pub rows_expected: u64,
    pub rows_restored: u64,
    /// `exact` (the stream's checksum) or `as a set` (see the module docs).
    pub compared: String,
    pub checksum_matches: bool,
    pub passed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionCheck {
    pub sql: String,
    pub passed: bool,
    /// What it returned, or why it failed.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    pub snapshot: crate::model::SnapshotId,
    /// When the snapshot was taken (unix ms).
    pub snapshot_time_ms: i64,
    /// The source the snapshot is of (no password).
    pub source: String,
    /// The scratch database (no password).
    pub scratch: String,
    pub started_ms: i64,
    pub restore_ms: u64,
    pub check_ms: u64,
    pub duration_ms: u64,
    pub rows: u64,
    pub tables: Vec<TableCheck>,
    pub assertions: Vec<AssertionCheck>,
    /// Why the restore or the checks could not run to the end.
    pub error: Option<String>,
    /// Whether the scratch copy was removed afterwards.
    pub cleaned_up: bool,
    pub passed: bool,
}

/// The scratch database of one drill.
struct ScratchDb {
    url: Secret<String>,
    display: String,
    kind: ScratchKind,
}

enum ScratchKind {
    /// The database file, in its own private directory.
    File { dir: PathBuf, path: PathBuf },
    /// The server connection that created database `name`, kept to drop it.
    Database { admin: PgDb, name: String },
    /// The MySQL server connection that created database `name`.
    MysqlDatabase { admin: MyDb, name: String },
}

impl ScratchDb {
    async fn create(engine: Engine, scratch: &Scratch) -> Result<ScratchDb> {
        let tag = hex(&rand::random::<[u8; 6]>());
        match (engine, scratch) {
            (Engine::Sqlite, Scratch::Dir(dir)) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::invalid(format!(
                        "cannot create the scratch directory {}: {e}",
                        dir.display()
                    ))
                })?;
                // The scratch file is a whole copy of a backed-up database: another
                // local user must neither read it (the directory may be the shared
                // temporary one) nor plant a file or symlink under a name they guessed
                // (mkdir and O_EXCL fail on anything already there).
                let private = dir.join(format!("tablesafe-drill-{tag}"));
                let mut builder = std::fs::DirBuilder::new();
                let mut file = std::fs::OpenOptions::new();
                file.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
                    builder.mode(0o700);
                    file.mode(0o600);
                }
                builder.create(&private).map_err(|e| {
                    Error::invalid(format!(
                        "cannot create a scratch directory in {}: {e}",
                        dir.display()
                    ))
                })?;
                // Made empty here, with its mode: SQLite keeps it, and gives its
                // journal the same.
                let path = private.join("scratch.sqlite");
                if let Err(e) = file.open(&path) {
                    let _ = std::fs::remove_dir_all(&private);
                    return Err(Error::io(format!("creating {}", path.display()), e));
                }
                let display = format!("sqlite://{}", path.display());
                Ok(ScratchDb {
                    url: Secret::new(display.clone()),
                    display,
                    kind: ScratchKind::File { dir: private, path },
                })
            }
            (Engine::Postgres, Scratch::Postgres(server)) => {
                let server_display = crate::secret::redact_url(server.expose());
                let mut admin = PgDb::connect(server, server_display.clone()).await?;
                let name = format!("tablesafe_drill_{tag}");
                admin
                    .exec(&format!("CREATE DATABASE {}", pg::quote(&name)))
                    .await
                    .map_err(|e| {
                        Error::invalid(format!(
                            "cannot create the scratch database {name} on {server_display} \
                             (the drill's user needs the CREATEDB privilege): {e}"
                        ))
                    })?;
                let (url, display) = database_url(server, &name)?;
                Ok(ScratchDb {
                    url,
                    display,
                    kind: ScratchKind::Database { admin, name },
                })
            }
            (Engine::Mysql, Scratch::Mysql(server)) => {
                let server_display = crate::secret::redact_url(server.expose());
                let mut admin = MyDb::connect(server, server_display.clone()).await?;
                let name = format!("tablesafe_drill_{tag}");
                admin
                    .exec(&format!(
                        "CREATE DATABASE {} CHARACTER SET utf8mb4",
                        my::quote(&name)
                    ))
                    .await
                    .map_err(|e| {
                        Error::invalid(format!(
                            "cannot create the scratch database {name} on {server_display} \
                             (the drill's user needs CREATE and DROP): {e}"
                        ))
                    })?;
                let (url, display) = database_url(server, &name)?;
                Ok(ScratchDb {
                    url,
                    display,
                    kind: ScratchKind::MysqlDatabase { admin, name },
                })
            }
            (Engine::Mysql, _) => Err(Error::invalid(
                "a drill of a MySQL snapshot needs a scratch server: --scratch mysql://user:password@host/db \
                 (tablesafe creates a database there for the drill and drops it afterwards)",
            )),
            (_, Scratch::Mysql(_)) => Err(Error::invalid(
                "a MySQL scratch server takes drills of MySQL snapshots only",
            )),
            (Engine::Sqlite, Scratch::Postgres(_)) => Err(Error::invalid(
                "a drill of a SQLite snapshot restores into a scratch file: give a directory, not a PostgreSQL server",
            )),
            (Engine::Postgres, Scratch::Dir(_)) => Err(Error::invalid(
                "a drill of a PostgreSQL snapshot needs a scratch server: --scratch postgres://user@host/db \
                 (tablesafe creates a database there for the drill and drops it afterwards)",
            )),
        }
    }

    /// Removes the scratch copy; false (and a warning in `error`) when that failed.
    async fn remove(self) -> std::result::Result<(), String> {
        match self.kind {
            ScratchKind::File { dir, .. } => match std::fs::remove_dir_all(&dir) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("removing {}: {e}", dir.display())),
            },
            ScratchKind::MysqlDatabase { mut admin, name } => admin
                .exec(&format!("DROP DATABASE IF EXISTS {}", my::quote(&name)))
                .await
                .map_err(|e| format!("dropping the scratch database {name}: {e}")),
            ScratchKind::Database { mut admin, name } => {
                let q = pg::quote(&name);
                // WITH (FORCE) (PostgreSQL 13+) ends sessions a failed check left behind.
                if admin
                    .exec(&format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)"))
                    .await
                    .is_ok()
                {
                    return Ok(());
                }
                admin
                    .exec(&format!("DROP DATABASE IF EXISTS {q}"))
                    .await
                    .map_err(|e| format!("dropping the scratch database {name}: {e}"))
            }
        }
    }
}

/// The URL of database `name` on the server `server` names, and its display form.
fn database_url(server: &Secret<String>, name: &str) -> Result<(Secret<String>, String)> {
    let mut url = url::Url::parse(server.expose()).map_err(|e| {
        Error::invalid(format!(
            "scratch URL {}: {e}",
            crate::secret::redact_url(server.expose())
        ))
    })?;
    url.set_path(&format!("/{name}"));
    let url = Secret::new(url.to_string());
    let display = crate::secret::redact_url(url.expose());
    Ok((url, display))
}

/// Runs a drill: restore, check, remove the scratch copy. See the module docs.
pub async fn drill(
    repo: &Repository,
    opts: &DrillOptions,
    progress: &dyn Progress,
) -> Result<DrillReport> {
    let started_ms = now_ms();
    let t0 = Instant::now();
    let id = pick(repo, &opts.snapshot).await?;
    let (id, snapshot) = repo.find_snapshot(&id).await?;
    let scratch = ScratchDb::create(snapshot.source.engine, &opts.scratch).await?;
    let mut report = DrillReport {
        snapshot: id.clone(),
        snapshot_time_ms: snapshot.time_ms,
        source: snapshot.source.url.clone(),
        scratch: scratch.display.clone(),
        started_ms,
        restore_ms: 0,
        check_ms: 0,
        duration_ms: 0,
        rows: 0,
        tables: Vec::new(),
        assertions: Vec::new(),
        error: None,
        cleaned_up: false,
        passed: false,
    };
    let run = run_checks(repo, opts, &id, &scratch, &mut report, progress).await;
    let cancelled = matches!(run, Err(Error::Cancelled));
    if let Err(e) = run {
        report.error = Some(e.to_string());
    }
    match scratch.remove().await {
        Ok(()) => report.cleaned_up = true,
        Err(e) => {
            let previous = report.error.take();
            report.error = Some(match previous {
                Some(p) => format!("{p}; {e}"),
                None => e,
            });
        }
    }
    report.duration_ms = t0.elapsed().as_millis() as u64;
    report.passed = report.error.is_none()
        && !report.tables.is_empty()
        && report.tables.iter().all(|t| t.passed)
        && report.assertions.iter().all(|a| a.passed);
    if cancelled {
        return Err(Error::Cancelled);
    }
    Ok(report)
}

/// `random` picks any snapshot; everything else is what `find_snapshot` takes.
async fn pick(repo: &Repository, wanted: &str) -> Result<String> {
    if wanted != "random" {
        return Ok(wanted.to_string());
    }
    let all = repo.snapshots().await?;
    if all.is_empty() {
        return Err(Error::SnapshotNotFound(
            "random (the repository has no snapshot)".into(),
        ));
    }
    let i = rand::random::<u64>() as usize % all.len();
    Ok(all[i].0.to_string())
}

async fn run_checks(
    repo: &Repository,
    opts: &DrillOptions,
    id: &str,
    scratch: &ScratchDb,
    report: &mut DrillReport,
    progress: &dyn Progress,
) -> Result<()> {
    let t = Instant::now();
    let ropts = RestoreOptions {
        snapshot: id.to_string(),
        dest: scratch.url.clone(),
        selection: Selection::default(),
        rename: Default::default(),
        mode: Mode::Create,
        jobs: opts.jobs.max(1),
        parallel_min_bytes: restore::DEFAULT_PARALLEL_MIN_BYTES,
        at_ms: None,
        filter: Default::default(),
        objects: Default::default(),
    };
    let plan = restore::plan(repo, &ropts).await?;
    let restored = restore::execute(repo, &plan, progress).await?;
    report.restore_ms = t.elapsed().as_millis() as u64;
    report.rows = restored.iter().map(|r| r.rows).sum();
    let t = Instant::now();
    match &scratch.kind {
        ScratchKind::File { path, .. } => {
            let mut db = SqliteDb::open_read(path).await?;
            check_tables(repo, &plan, &mut db, report, progress).await?;
            for sql in &opts.assertions {
                let r = sqlx::query(sql).fetch_optional(&mut db.conn).await;
                let r = r.map(|row| row.map(|row| row.try_get::<bool, _>(0)));
                report.assertions.push(assertion(sql, r));
            }
        }
        ScratchKind::MysqlDatabase { .. } => {
            let mut db = MyDb::connect(&scratch.url, scratch.display.clone()).await?;
            db.begin_snapshot().await?;
            check_tables(repo, &plan, &mut db, report, progress).await?;
            db.exec("ROLLBACK").await?;
            for sql in &opts.assertions {
                let r = async {
                    sqlx::query("START TRANSACTION READ ONLY")
                        .execute(&mut db.conn)
                        .await?;
                    let row = sqlx::query(sql).fetch_optional(&mut db.conn).await;
                    let _ = sqlx::query("ROLLBACK").execute(&mut db.conn).await;
                    // MySQL has no boolean type: a true condition is a non-zero number.
                    Ok::<_, sqlx::Error>(row?.map(|row| {
                        row.try_get_unchecked::<i64, _>(0)
                            .map(|v| v != 0)
                            .or_else(|_| row.try_get_unchecked::<bool, _>(0))
                    }))
                }
                .await;
                report.assertions.push(assertion(sql, r));
            }
        }
        ScratchKind::Database { .. } => {
            let mut db = PgDb::connect(&scratch.url, scratch.display.clone()).await?;
            db.begin_snapshot().await?;
            check_tables(repo, &plan, &mut db, report, progress).await?;
            db.exec("ROLLBACK").await?;
            for sql in &opts.assertions {
                let r = async {
                    let mut tx = db.conn.begin().await?;
                    sqlx::query("SET TRANSACTION READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("SET LOCAL statement_timeout = '600s'")
                        .execute(&mut *tx)
                        .await?;
                    let row = sqlx::query(sql).fetch_optional(&mut *tx).await?;
                    let value = row.map(|row| row.try_get::<bool, _>(0));
                    tx.rollback().await?;
                    Ok::<_, sqlx::Error>(value)
                }
                .await;
                report.assertions.push(assertion(sql, r));
            }
        }
    }
    report.check_ms = t.elapsed().as_millis() as u64;
    Ok(())
}

/// Reads every restored table back the way a backup reads a source and compares it
/// with the manifest: the checksum of its stream (exact), or for a table without a key
/// whose checksum differs, its rows as a set against the stream in the repository.
async fn check_tables<D: ReadBack>(
    repo: &Repository,
    plan: &restore::RestorePlan,
    db: &mut D,
    report: &mut DrillReport,
    progress: &dyn Progress,
) -> Result<()> {
    let catalog = db.discover().await?;
    for planned in &plan.tables {
        progress.check_abort()?;
        let e = planned.entry();
        let table = catalog.table(&planned.dest_table, "after the restore")?;
        let mut read = Digest {
            hasher: Some(crate::checksum::StreamCheck::new(e)?),
            ..Digest::default()
        };
        db.read_back(table, &e.stream_columns, &mut read).await?;
        let rows = read.rows.count;
        report
            .tables
            .push(if read.hasher.take().is_some_and(|h| h.matches(e)) {
                table_check(e, rows, true, "exact")
            } else if e.key.is_empty() && table.key().is_empty() {
                // A load over several connections does not keep the physical order.
                let same = expected_rows(repo, e).await?.finish() == read.rows.finish();
                table_check(e, rows, same, "as a set")
            } else {
                table_check(e, rows, false, "exact")
            });
    }
    Ok(())
}

/// A scratch database read back in the form the backup hashed.
trait ReadBack: SourceDb {
    /// Feeds `columns` of `table`, in the snapshot's stream form, to `out`.
    fn read_back(
        &mut self,
        table: &Self::Table,
        columns: &[String],
        out: &mut Digest,
    ) -> impl Future<Output = Result<()>> + Send;
}

impl ReadBack for SqliteDb {
    async fn read_back(
        &mut self,
        table: &TableInfo,
        columns: &[String],
        out: &mut Digest,
    ) -> Result<()> {
        let sql = SqliteDb::rows_sql(table, columns);
        let mut rows = self.rows(&sql, columns.len());
        while let Some(row) = rows.next().await {
            out.values(&row?);
        }
        Ok(())
    }
}

impl ReadBack for MyDb {
    async fn read_back(
        &mut self,
        table: &MyTableInfo,
        columns: &[String],
        out: &mut Digest,
    ) -> Result<()> {
        let mut reads = Vec::new();
        for c in columns {
            let i = table
                .data_columns
                .iter()
                .position(|d| d == c)
                .ok_or_else(|| {
                    Error::invalid(format!("{} lacks column {c} after the restore", table.name))
                })?;
            reads.push(table.reads[i].0);
        }
        let sql = MyDb::rows_sql(table, columns);
        let mut rows = self.rows(&sql, reads);
        while let Some(row) = rows.next().await {
            out.values(&row?);
        }
        Ok(())
    }
}

impl ReadBack for PgDb {
    async fn read_back(
        &mut self,
        table: &PgTableInfo,
        columns: &[String],
        out: &mut Digest,
    ) -> Result<()> {
        let sql = PgDb::copy_out_sql(table, columns);
        let mut stream = self.copy_out(&sql).await?;
        while let Some(piece) = stream.next().await {
            let piece = piece?;
            out.update(&piece);
            out.rows.lines(&piece);
        }
        Ok(())
    }
}

/// A table's stream as read back: its checksum and its rows as a set.
#[derive(Default)]
struct Digest {
    /// The entry's checksum form ([`crate::checksum::StreamCheck`]).
    hasher: Option<crate::checksum::StreamCheck>,
    rows: RowSet,
}

impl Digest {
    /// Stream bytes read back (a failed update leaves a mismatch).
    fn update(&mut self, bytes: &[u8]) {
        if let Some(h) = &mut self.hasher
            && h.update(bytes).is_err()
        {
            self.hasher = None;
        }
    }

    /// One row of a `values` stream.
    fn values(&mut self, row: &[crate::model::Value]) {
        let mut buf = Vec::new();
        for v in row {
            encode_value(&mut buf, v);
        }
        self.update(&buf);
        self.rows.row(&buf);
    }
}

/// The rows of a snapshot's table as a set, from the repository.
async fn expected_rows(repo: &Repository, e: &TableEntry) -> Result<RowSet> {
    let mut set = RowSet::default();
    match &e.format {
        StreamFormat::PgCopyText => {
            let mut chunks = crate::segment::table_stream(repo, e)?;
            while let Some(piece) = chunks.next().await {
                set.lines(&piece?);
            }
        }
        StreamFormat::Values => {
            let mut reader = crate::export::TableRows::open(repo, e)?;
            while let Some((batch, _)) = reader.next_batch().await? {
                for row in batch {
                    let mut buf = Vec::new();
                    for v in &row {
                        encode_value(&mut buf, v);
                    }
                    set.row(&buf);
                }
            }
        }
        StreamFormat::Unknown(name) => return Err(crate::model::unknown_format(&e.name, name)),
    }
    Ok(set)
}

fn table_check(e: &TableEntry, rows: u64, checksum_matches: bool, compared: &str) -> TableCheck {
    TableCheck {
        table: e.name.clone(),
        rows_expected: e.rows,
        rows_restored: rows,
        compared: compared.into(),
        checksum_matches,
        passed: checksum_matches && rows == e.rows,
    }
}

/// `r`: the query's outcome, and the first column of its first row as a boolean.
type Returned = std::result::Result<Option<std::result::Result<bool, sqlx::Error>>, sqlx::Error>;

/// An assertion is a yes or no: its outcome says which way, or that the query failed
/// (with the server's SQLSTATE code), never what the server said. An error's text can
/// carry the data itself (`invalid input syntax for type integer: "s3cret"`), and a
/// drill's report is kept and shown to people who may not read that data.
fn assertion(sql: &str, r: Returned) -> AssertionCheck {
    let (passed, detail) = match r {
        Err(e) => (
            false,
            match e.as_database_error().and_then(|d| d.code()) {
                Some(code) => format!("the query failed (SQLSTATE {code})"),
                None => "the query failed".to_string(),
            },
        ),
        Ok(None) => (false, "returned no row".to_string()),
        Ok(Some(Ok(true))) => (true, "true".to_string()),
        Ok(Some(Ok(false))) => (false, "false".to_string()),
        Ok(Some(Err(_))) => (false, "the first column is not a boolean".to_string()),
    };
    AssertionCheck {
        sql: sql.to_string(),
        passed,
        detail,
    }
}

/// An order-independent digest of rows: their count and the wrapping sum of each
/// row's hash. COPY text arrives in pieces that split lines anywhere ([`RowSet::lines`]).
#[derive(Default)]
struct RowSet {
    count: u64,
    sum: u128,
    carry: Vec<u8>,
}

impl RowSet {
    fn row(&mut self, row: &[u8]) {
        let h = blake3::hash(row);
        let mut first = [0u8; 16];
        first.copy_from_slice(&h.as_bytes()[..16]);
        self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
        self.count += 1;
    }

    /// A piece of COPY text: each whole line is a row.
    fn lines(&mut self, mut piece: &[u8]) {
        while let Some(i) = memchr::memchr(b'\n', piece) {
            if self.carry.is_empty() {
                self.row(&piece[..=i]);
            } else {
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(&piece[..=i]);
                self.row(&line);
            }
            piece = &piece[i + 1..];
        }
        self.carry.extend_from_slice(piece);
    }

    /// (count, sum, a trailing partial line).
    fn finish(mut self) -> (u64, u128, Vec<u8>) {
        let rest = std::mem::take(&mut self.carry);
        (self.count, self.sum, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assertion's failure says that it failed, never what the server said: the
    /// text can carry the very data a drill's reader may not see.
    #[test]
    fn a_failed_assertion_does_not_repeat_the_server_s_words() {
        let leaked =
            sqlx::Error::Protocol("invalid input syntax for type integer: \"payroll\"".into());
        let check = assertion("SELECT CAST(secret AS INTEGER) > 0 FROM t", Err(leaked));
        assert!(!check.passed);
        assert_eq!(check.detail, "the query failed");
        let check = assertion(
            "SELECT 1",
            Ok(Some(Err(sqlx::Error::Decode("value 'payroll'".into())))),
        );
        assert!(!check.detail.contains("payroll"), "{}", check.detail);
    }

    #[test]
    fn a_row_set_ignores_order_and_piece_boundaries() {
        let mut a = RowSet::default();
        a.lines(b"1\tx\n2\ty\n3\tz\n");
        let mut b = RowSet::default();
        for piece in [&b"3\t"[..], b"z\n2", b"\ty\n1\tx", b"\n"] {
            b.lines(piece);
        }
        assert_eq!(a.finish(), b.finish());
        let mut c = RowSet::default();
        c.lines(b"1\tx\n2\ty\n3\tZ\n");
        let mut d = RowSet::default();
        d.lines(b"1\tx\n2\ty\n3\tz\n");
        assert_ne!(c.finish(), d.finish());
    }

    #[test]
    fn scratch_urls_choose_a_server_or_a_directory() {
        assert!(matches!(
            Scratch::parse(&Secret::new("postgres://u@h/db".into())),
            Scratch::Postgres(_)
        ));
        match Scratch::parse(&Secret::new("/tmp/drills".into())) {
            Scratch::Dir(d) => assert_eq!(d, PathBuf::from("/tmp/drills")),
            _ => panic!("a directory"),
        }
    }
}
