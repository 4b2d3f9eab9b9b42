//! MySQL and MariaDB as a backup source: one REPEATABLE READ transaction WITH
//! CONSISTENT SNAPSHOT on one connection for discovery and every table
//! (`source::mysql`), or, with `--jobs N`, N such transactions started while commits
//! are held by a brief global read lock (as mydumper does), so they all see the same
//! instant; the tables are then shared among them.

use super::plan::{Plan, chosen_columns};
use super::values::feed_values;
use super::{SourceReader, feed::Feed};
use crate::Result;
use crate::model::{Engine, Skipped, StreamFormat};
use crate::secret::Secret;
use crate::source::mysql::{MyDb, MyTableInfo, ReadAs};
use futures::StreamExt;

pub(super) struct Reader {
    db: MyDb,
    /// Per plan, how its columns are read.
    reads: Vec<Vec<ReadAs>>,
    /// Readers whose transactions started at the same instant as this one's
    /// ([`Reader::begin_together`]), until [`SourceReader::helpers`] takes them.
    joined: Vec<Reader>,
    jobs: usize,
    url: Secret<String>,
    display: String,
}

/// How long the global read lock may wait for running statements before the backup
/// gives up on parallel readers: while it waits, the server's writers wait too.
const LOCK_WAIT_SECONDS: u32 = 2;

impl Reader {
    /// `jobs`: how many connections to read with (the first is this one).
    pub(super) async fn connect(
        url: &Secret<String>,
        display: String,
        jobs: usize,
    ) -> Result<Self> {
        Ok(Reader {
            db: MyDb::connect(url, display.clone()).await?,
            reads: Vec::new(),
            joined: Vec::new(),
            jobs,
            url: url.clone(),
            display,
        })
    }

    /// Starts this reader's transaction and those of `jobs - 1` more connections at
    /// one instant: a control connection takes `FLUSH TABLES WITH READ LOCK` (no
    /// commit can happen while it is held), each reader runs `START TRANSACTION WITH
    /// CONSISTENT SNAPSHOT`, then the lock is released (it is held for the few
    /// milliseconds that takes). Without the RELOAD privilege, or when the lock cannot
    /// be had within [`LOCK_WAIT_SECONDS`] (a long statement running), or when a helper
    /// cannot connect, only this connection reads. Returns false when it did not start
    /// this reader's transaction (the caller then does, alone).
    async fn begin_together(&mut self) -> Result<bool> {
        use crate::source::SourceDb;
        let mut helpers = Vec::new();
        for _ in 1..self.jobs {
            match MyDb::connect(&self.url, self.display.clone()).await {
                Ok(db) => helpers.push(db),
                Err(_) => break,
            }
        }
        if helpers.is_empty() {
            return Ok(false);
        }
        let Ok(mut control) = MyDb::connect(&self.url, self.display.clone()).await else {
            return Ok(false);
        };
        let locked = async {
            control
                .exec(&format!(
                    "SET SESSION lock_wait_timeout = {LOCK_WAIT_SECONDS}"
                ))
                .await?;
            control.exec("FLUSH TABLES WITH READ LOCK").await
        }
        .await;
        if locked.is_err() {
            return Ok(false);
        }
        // A helper that cannot start its transaction is left out; this reader's own
        // failure fails the backup (after the lock is released).
        let started = self.db.begin_snapshot().await;
        let mut ready = Vec::new();
        if started.is_ok() {
            for mut h in helpers {
                if h.begin_snapshot().await.is_err() {
                    break;
                }
                ready.push(h);
            }
        }
        let unlocked = control.exec("UNLOCK TABLES").await;
        started?;
        unlocked?;
        let helpers = ready;
        self.joined = helpers
            .into_iter()
            .map(|db| Reader {
                db,
                reads: Vec::new(),
                joined: Vec::new(),
                jobs: 1,
                url: self.url.clone(),
                display: self.display.clone(),
            })
            .collect();
        Ok(true)
    }
}

impl SourceReader for Reader {
    const ENGINE: Engine = Engine::Mysql;
    type Db = MyDb;

    async fn begin(&mut self) -> Result<()> {
        use crate::source::SourceDb;
        if self.jobs > 1 && self.begin_together().await? {
            return Ok(());
        }
        self.db.begin_snapshot().await
    }

    fn db(&mut self) -> &mut MyDb {
        &mut self.db
    }

    /// The readers started with this one ([`Reader::begin_together`]); those not
    /// wanted end their transactions when dropped.
    async fn helpers(&mut self, n: usize) -> Result<Vec<Self>> {
        let mut taken: Vec<Reader> = std::mem::take(&mut self.joined);
        taken.truncate(n);
        for h in &mut taken {
            h.reads = self.reads.clone();
        }
        Ok(taken)
    }

    fn plan_table(
        &mut self,
        info: &MyTableInfo,
        wanted: Option<&Vec<String>>,
        skipped: &mut Vec<Skipped>,
    ) -> Result<Plan> {
        let columns = chosen_columns(&info.name, &info.data_columns, &info.pk, wanted)?;
        let mut schema = info.schema.clone();
        if columns.len() < info.data_columns.len() {
            // Defaults, indexes and foreign keys cannot come back without the rest (its
            // definition holds them all).
            schema.keep_only(&info.name, &columns, crate::source::mysql::create_table_for);
            skipped.push(Skipped {
                kind: crate::model::ObjectKind::Definition,
                name: info.name.clone(),
                reason: "only some columns were backed up: its defaults, indexes and foreign keys are not kept".into(),
            });
        }
        // Per plan, how its columns are read.
        self.reads.push(
            info.data_columns
                .iter()
                .zip(&info.reads)
                .filter(|(c, _)| columns.contains(c))
                .map(|(_, (r, _))| *r)
                .collect(),
        );
        let sql = MyDb::rows_sql(info, &columns);
        // Keyed (and so incremental) when the key's values come back in the order this
        // crate compares them; a key whose collation orders otherwise is found out while
        // reading and the table is stored whole (as with SQLite's NOCASE keys).
        Ok(Plan::new(
            info.name.clone(),
            schema,
            columns,
            StreamFormat::Values,
            sql,
        ))
    }

    async fn fill(&mut self, i: usize, plan: &Plan, feed: &mut Feed<'_>) -> Result<()> {
        feed_values(self.db.rows(&plan.sql, self.reads[i].clone()).boxed(), feed).await
    }
}
