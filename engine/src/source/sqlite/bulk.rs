//! SQLite's bulk paths: rows read for a backup and written by a restore on one
//! rusqlite connection owned by a blocking thread, crossing to the async side in
//! batches, and the private consistent copy a backup reads.
//!
//! Why not sqlx for rows: its SQLite driver runs every connection on a worker thread and
//! sends each row (and each `INSERT`) across a channel, about four futex calls per row;
//! a 268 MB database took 94 s to restore, half of it system time. Here a whole table
//! is one job on the connection's thread: rows are read with one prepared statement and
//! encoded straight into the canonical stream (or inserted with one prepared `INSERT`),
//! and only batches of about [`BATCH_BYTES`] cross threads.
//!
//! The crate links one SQLite: rusqlite 0.32 and sqlx 0.8 share libsqlite3-sys 0.30.

use crate::model::Value;
use crate::{Error, Result};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// About how many stream bytes (backup) one batch carries across threads: the size of
/// the backup feed's pieces, so a batch becomes one piece without being copied.
pub const BATCH_BYTES: usize = 1 << 20;
/// About how many rows (restore) one batch carries, unless its bytes reach
/// [`BATCH_BYTES`] first.
pub const BATCH_ROWS: usize = 4096;

const STOPPED: &str = "the SQLite connection's thread stopped";

/// A rusqlite error with what was being done and on which file, in the shape of the
/// engine's database errors ("database: inserting into t on db.sqlite: UNIQUE …").
pub fn db_err(what: impl std::fmt::Display) -> impl FnOnce(rusqlite::Error) -> Error {
    move |e| Error::Other(format!("database: {what}: {e}"))
}

type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// A rusqlite connection that lives on one blocking thread; async code sends it jobs
/// (closures), each of which runs to completion there. Dropping it closes the
/// connection once the queued jobs have run (an open transaction is rolled back).
pub struct LiteConn {
    jobs: mpsc::Sender<Job>,
    /// The database as users know it (messages), not necessarily the file opened.
    pub label: PathBuf,
}

impl LiteConn {
    /// Opens `path` on a new blocking thread; `label` names it in messages.
    pub async fn open(path: &Path, flags: OpenFlags, label: &Path) -> Result<Self> {
        let (jobs, mut rx) = mpsc::channel::<Job>(2);
        let (ready, opened) = oneshot::channel();
        let (path, shown) = (path.to_path_buf(), label.display().to_string());
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open_with_flags(&path, flags)
                .map_err(db_err(format_args!("opening {shown}")));
            let mut conn = match conn {
                Ok(c) => {
                    let _ = ready.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            while let Some(job) = rx.blocking_recv() {
                job(&mut conn);
            }
        });
        opened.await.map_err(|_| Error::Other(STOPPED.into()))??;
        Ok(LiteConn {
            jobs,
            label: label.to_path_buf(),
        })
    }

    /// Opens (creating if needed) a database to restore into.
    pub async fn open_write(path: &Path) -> Result<Self> {
        let conn = LiteConn::open(path, OpenFlags::default(), path).await?;
        conn.call(|c| {
            // As sqlx's connections do: wait for another writer's commit rather than
            // fail at once, and enforce foreign keys (checked at the commit: the restore
            // defers them).
            c.busy_timeout(Duration::from_secs(5))
                .and_then(|_| c.pragma_update(None, "foreign_keys", "ON"))
                .and_then(|_| c.pragma_update(None, "cache_size", -65536))
                .map_err(db_err("setting up the restore connection"))
        })
        .await?;
        Ok(conn)
    }

    /// Runs `f` on the connection's thread and returns its result.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R> + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |c| {
            let _ = tx.send(f(c));
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::Other(STOPPED.into()))?;
        rx.await.map_err(|_| Error::Other(STOPPED.into()))?
    }

    /// Runs statements that return no rows.
    pub async fn exec(&self, sql: &str) -> Result<()> {
        let (sql, label) = (sql.to_string(), self.label.display().to_string());
        self.call(move |c| {
            c.execute_batch(&sql)
                .map_err(db_err(format_args!("{sql} on {label}")))
        })
        .await
    }

    pub async fn table_exists(&self, name: &str) -> Result<bool> {
        let name = name.to_string();
        self.call(move |c| {
            c.query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
                [&name],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
            .map_err(db_err(format_args!("looking up table {name}")))
        })
        .await
    }
}

/// A batch of encoded rows on its way from the reading thread to the backup's feed.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub rows: u64,
}

/// Appends one value as [`crate::model::encode_value`] does (the same bytes: checked by
/// a test), without first copying it out of SQLite.
fn encode_ref(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.push(0),
        ValueRef::Integer(i) => {
            out.push(1);
            out.extend_from_slice(&i.to_le_bytes());
        }
        ValueRef::Real(f) => {
            out.push(2);
            out.extend_from_slice(&f.to_bits().to_le_bytes());
        }
        ValueRef::Text(b) | ValueRef::Blob(b) => {
            out.push(if matches!(v, ValueRef::Text(_)) { 3 } else { 4 });
            crate::model::write_varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
    }
}

/// Reads the rows of `sql` (the first `columns` values of each) as stored, encoded into
/// the canonical stream in batches of about [`BATCH_BYTES`] sent to `out`. Stops
/// quietly when `out` is closed (the receiver wants no more rows).
pub fn encode_rows(
    c: &Connection,
    sql: &str,
    columns: usize,
    out: &mpsc::Sender<Encoded>,
) -> Result<()> {
    let what = || format!("reading rows: {sql}");
    let mut stmt = c.prepare(sql).map_err(db_err(what()))?;
    let mut rows = stmt.raw_query();
    let mut buf = Vec::with_capacity(BATCH_BYTES + 65536);
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(|e| db_err(what())(e))? {
        for i in 0..columns {
            encode_ref(&mut buf, row.get_ref(i).map_err(|e| db_err(what())(e))?);
        }
        n += 1;
        if buf.len() >= BATCH_BYTES {
            let bytes = std::mem::replace(&mut buf, Vec::with_capacity(BATCH_BYTES + 65536));
            if out.blocking_send(Encoded { bytes, rows: n }).is_err() {
                return Ok(());
            }
            n = 0;
        }
    }
    if n > 0 {
        let _ = out.blocking_send(Encoded {
            bytes: buf,
            rows: n,
        });
    }
    Ok(())
}

/// One of our values as a bound parameter, borrowed. TEXT goes in as the bytes it was
/// read as (SQLite does not check UTF-8, and neither does this).
struct Bind<'a>(&'a Value);

impl rusqlite::ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self.0 {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(b) => ValueRef::Text(b),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

/// Inserts every row of every batch received with one prepared `insert`, until the
/// sender is dropped; returns the rows inserted. Runs inside the caller's transaction.
pub fn insert_rows(
    c: &Connection,
    insert: &str,
    table: &str,
    mut batches: mpsc::Receiver<Vec<Vec<Value>>>,
) -> Result<u64> {
    let what = || format!("inserting into {table}");
    let mut stmt = c.prepare_cached(insert).map_err(db_err(what()))?;
    let mut n = 0u64;
    while let Some(batch) = batches.blocking_recv() {
        for row in &batch {
            for (i, v) in row.iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, Bind(v))
                    .map_err(|e| db_err(what())(e))?;
            }
            stmt.raw_execute().map_err(|e| db_err(what())(e))?;
        }
        n += batch.len() as u64;
    }
    Ok(n)
}

/// A consistent copy of a SQLite database in a private temporary directory (mode 0700,
/// the file 0600), removed with everything in it when this is dropped, also after an
/// error.
pub struct PrivateCopy {
    dir: tempfile::TempDir,
}

impl PrivateCopy {
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("copy.sqlite")
    }

    /// Copies `src` as it is at one instant: a rollback-journal database by copying its
    /// file under a read transaction's shared lock, a WAL database with SQLite's online
    /// backup API in a single step (which reads one snapshot). A rollback-journal
    /// database's writers wait for that file copy only, not for the whole backup (they
    /// would wait for a reader of every row); a WAL database's writers do not wait at
    /// all. Blocking: run it on a blocking thread.
    pub fn take(src: &Path) -> Result<PrivateCopy> {
        PrivateCopy::take_in(src, &std::env::temp_dir())
    }

    /// [`PrivateCopy::take`] in the directory `tmp`.
    pub fn take_in(src: &Path, tmp: &Path) -> Result<PrivateCopy> {
        let io = |what: &str, e| {
            Error::io(
                format!(
                    "{what} for a private copy of {} in {} (set TMPDIR to a directory with as much free space as the database)",
                    src.display(),
                    tmp.display()
                ),
                e,
            )
        };
        let mut dir = tempfile::Builder::new();
        dir.prefix("tablesafe-sqlite-");
        #[cfg(unix)]
        dir.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
        let dir = dir
            .tempdir_in(tmp)
            .map_err(|e| io("making a directory", e))?;
        let copy = PrivateCopy { dir };
        let path = copy.path();
        let mut file = std::fs::OpenOptions::new();
        file.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
        file.open(&path).map_err(|e| io("making a file", e))?;

        let shown = src.display().to_string();
        let from = Connection::open_with_flags(
            src,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err(format_args!("opening {shown}")))?;
        // A file that is not a database says so here (the backup API's own error
        // would read "not an error").
        from.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
            .map_err(db_err(format_args!("reading {shown}")))?;
        let wal = from
            .query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
            .map_err(db_err(format_args!("reading {shown}")))?
            .eq_ignore_ascii_case("wal");
        if !wal {
            // A rollback-journal database: while a read transaction holds its shared
            // lock no writer can change the file (a commit needs the exclusive lock), so
            // a plain copy of the file is the database at one instant, made at the file
            // system's speed. The backup API copies page by page through two page caches
            // (7 s for 1 GB here), and the writers would wait for all of it.
            from.busy_timeout(Duration::from_secs(60))
                .map_err(db_err(format_args!("reading {shown}")))?;
            from.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
                .map_err(db_err(format_args!("locking {shown} for reading")))?;
            let copied = (|| -> std::io::Result<u64> {
                let mut r = std::fs::File::open(src)?;
                let mut w = std::fs::OpenOptions::new().write(true).open(&path)?;
                std::io::copy(&mut r, &mut w)
            })();
            from.execute_batch("COMMIT")
                .map_err(db_err(format_args!("reading {shown}")))?;
            copied.map_err(|e| io("copying the file", e))?;
            return Ok(copy);
        }
        let mut to = Connection::open(&path).map_err(db_err("opening the private copy"))?;
        // The copy is scratch: no journal, no syncs.
        to.execute_batch("PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF")
            .map_err(db_err("setting up the private copy"))?;
        {
            let backup = rusqlite::backup::Backup::new(&from, &mut to)
                .map_err(db_err(format_args!("copying {shown}")))?;
            // A writer committing right now holds the lock for a moment: wait for it as
            // an application's busy timeout would, a while longer.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                use rusqlite::backup::StepResult;
                match backup
                    .step(-1)
                    .map_err(db_err(format_args!("copying {shown}")))?
                {
                    StepResult::Done => break,
                    StepResult::More => {}
                    StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        return Err(Error::Busy(format!(
                            "{shown} stayed locked by a writer for 60 s: try the backup again"
                        )));
                    }
                }
            }
        }
        // A WAL database's copy says "WAL" in its header; the copy is read with no
        // -wal or -shm file.
        to.query_row("PRAGMA journal_mode = DELETE", [], |_| Ok(()))
            .map_err(db_err("setting up the private copy"))?;
        drop(to);
        Ok(copy)
    }
}

/// Read-only: the private copy is only ever read (SQLite still takes its shared locks,
/// one per statement, which cost nothing measurable next to the rows).
pub fn copy_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_copy_is_the_database_readable_by_its_owner_only_and_goes_away() {
        let dir = tempfile::tempdir().unwrap();
        let (src, tmp) = (dir.path().join("app.db"), dir.path().join("tmp"));
        std::fs::create_dir(&tmp).unwrap();
        let c = Connection::open(&src).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL; CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             INSERT INTO t VALUES (1, 'one'), (2, 'two');",
        )
        .unwrap();
        // Still open, WAL not checkpointed: the copy must include what the WAL holds.
        let copy = PrivateCopy::take_in(&src, &tmp).unwrap();
        let path = copy.path();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(path.parent().unwrap()), 0o700);
            assert_eq!(mode(&path), 0o600);
        }
        let read = Connection::open_with_flags(&path, copy_flags()).unwrap();
        let rows: Vec<(i64, String)> = read
            .prepare("SELECT id, v FROM t ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(rows, vec![(1, "one".into()), (2, "two".into())]);
        let mode: String = read
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete", "the copy is read without -wal/-shm files");
        drop(read);
        drop(copy);
        assert_eq!(
            std::fs::read_dir(&tmp).unwrap().count(),
            0,
            "the copy is removed"
        );

        // A rollback-journal database, copied as a file under a shared lock: what a
        // writer has not committed yet is not in the copy, and the copy is the owner's.
        let plain = dir.path().join("plain.db");
        let c = Connection::open(&plain).unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO t SELECT i, 'row ' || i FROM n;",
        )
        .unwrap();
        c.execute_batch("BEGIN IMMEDIATE; DELETE FROM t WHERE id > 10;")
            .unwrap();
        let copy = PrivateCopy::take_in(&plain, &tmp).unwrap();
        c.execute_batch("COMMIT").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(copy.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let read = Connection::open_with_flags(copy.path(), copy_flags()).unwrap();
        let n: i64 = read
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            n, 5000,
            "the copy holds what was committed when it was taken"
        );
        drop(read);
        drop(copy);
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);

        // A file that is not a database: an error, and nothing left behind.
        std::fs::write(dir.path().join("junk.db"), vec![b'x'; 8192]).unwrap();
        let err = PrivateCopy::take_in(&dir.path().join("junk.db"), &tmp)
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a database"), "{err}");
        assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    }

    #[test]
    fn encodes_values_as_the_canonical_stream_does() {
        let values = [
            Value::Null,
            Value::Integer(-1),
            Value::Integer(i64::MAX),
            Value::Real(-0.0),
            Value::Real(1.5e300),
            Value::Text(b"caf\xc3\xa9".to_vec()),
            Value::Text(vec![0xff, 0]),
            Value::Blob(vec![7; 300]),
            Value::Blob(Vec::new()),
        ];
        for v in &values {
            let mut want = Vec::new();
            crate::model::encode_value(&mut want, v);
            let mut got = Vec::new();
            let r = match v {
                Value::Null => ValueRef::Null,
                Value::Integer(i) => ValueRef::Integer(*i),
                Value::Real(f) => ValueRef::Real(*f),
                Value::Text(b) => ValueRef::Text(b),
                Value::Blob(b) => ValueRef::Blob(b),
            };
            encode_ref(&mut got, r);
            assert_eq!(got, want, "{v:?}");
        }
    }
}
