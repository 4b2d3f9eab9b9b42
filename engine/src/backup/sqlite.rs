//! SQLite as a backup source: a private copy of the database taken at one instant,
//! then discovery (sqlx) and every table's rows (rusqlite, on a blocking thread) read
//! from that copy.
//!
//! Why a copy in both journal modes. In rollback-journal mode a reader's shared lock
//! makes every writer wait until the read ends: reading all rows of a 160 MB database
//! kept a write waiting 1.3 s, and at 1 GB longer than common busy timeouts; the online
//! backup API copies the pages at file speed, and writers wait for that copy only. In
//! WAL mode readers do not block writers, but reading in place would need the schema
//! (sqlx) and the rows (rusqlite) to come from one read transaction on one connection,
//! which two drivers cannot share; and a reader held open for a whole backup stops
//! checkpoints from recycling the WAL, which then grows with every write for as long
//! as the backup runs. The copy costs one sequential read and write of the file and
//! as much free space in the temporary directory (TMPDIR); it is removed afterwards,
//! also after an error. The consistency rule (crate docs) holds trivially: the copy is
//! one instant and nothing else writes it.

use super::plan::{Plan, chosen_columns};
use super::{SourceReader, feed::Feed};
use crate::Error;
use crate::Result;
use crate::model::{Engine, Skipped, StreamFormat};
use crate::source::DiscoveredTable;
use crate::source::sqlite::bulk::{self, Encoded, LiteConn, PrivateCopy};
use crate::source::sqlite::{SqliteDb, TableInfo, create_table_for};
use std::path::Path;

pub(super) struct Reader {
    db: SqliteDb,
    rows: LiteConn,
    /// Dropped last: removes the copy once both connections are gone.
    _copy: PrivateCopy,
}

impl Reader {
    pub(super) async fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::invalid(format!(
                "SQLite database {} does not exist",
                path.display()
            )));
        }
        let src = path.to_path_buf();
        let copy = tokio::task::spawn_blocking(move || PrivateCopy::take(&src))
            .await
            .map_err(|e| Error::Other(format!("copying {}: {e}", path.display())))??;
        let copied = copy.path();
        // Read with pread(2), not mmap: a mapped copy counts whole in the process's
        // resident memory (a 250 MB database showed 307 MB instead of 107 MB), which is
        // what users watch; mmap saved about a tenth of the CPU.
        let rows = LiteConn::open(&copied, bulk::copy_flags(), path).await?;
        Ok(Reader {
            db: SqliteDb::open_copy(&copied, path).await?,
            rows,
            _copy: copy,
        })
    }
}

impl SourceReader for Reader {
    const ENGINE: Engine = Engine::Sqlite;
    type Db = SqliteDb;

    fn db(&mut self) -> &mut SqliteDb {
        &mut self.db
    }

    fn plan_table(
        &mut self,
        info: &TableInfo,
        wanted: Option<&Vec<String>>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Plan> {
        let columns = chosen_columns(&info.name, &info.data_columns, &info.key(), wanted)?;
        let mut schema = info.schema.clone();
        if columns.len() < info.data_columns.len() {
            for idx in schema.keep_only(&info.name, &columns, create_table_for) {
                skipped.push(Skipped {
                    kind: crate::model::ObjectKind::Index,
                    name: idx.name,
                    reason: format!("only some columns of {} were backed up", info.name),
                });
            }
        }
        let sql = SqliteDb::rows_sql(info, &columns);
        Ok(Plan::new(
            info.name.clone(),
            schema,
            columns,
            StreamFormat::Values,
            sql,
        ))
    }

    /// The rows come from the connection's thread already encoded, a batch at a time,
    /// and go into the feed whole rows at a time, as [`super::values::feed_values`]
    /// would put them.
    async fn fill(&mut self, _i: usize, plan: &Plan, feed: &mut Feed<'_>) -> Result<()> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Encoded>(2);
        let (sql, columns) = (plan.sql.clone(), plan.columns.len());
        let read = self
            .rows
            .call(move |c| bulk::encode_rows(c, &sql, columns, &tx));
        let fed = async move {
            while let Some(batch) = rx.recv().await {
                // A batch is about as big as the feed's pieces: taken over, not copied,
                // when the feed has just sent its buffer.
                if feed.buf.is_empty() {
                    feed.buf = batch.bytes;
                } else {
                    feed.buf.extend_from_slice(&batch.bytes);
                }
                for _ in 0..batch.rows {
                    feed.count_row();
                }
                feed.send_if_full().await?;
                if feed.restart {
                    break;
                }
            }
            // Dropping `rx` here stops the reading thread at its next batch.
            Ok::<_, Error>(())
        };
        let (read, fed) = tokio::join!(read, fed);
        fed.and(read)
    }
}
