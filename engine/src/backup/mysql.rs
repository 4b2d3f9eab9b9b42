//! MySQL and MariaDB as a backup source: one REPEATABLE READ transaction WITH
//! CONSISTENT SNAPSHOT on one connection for discovery and every table
//! (`source::mysql`).

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
}

impl Reader {
    pub(super) async fn connect(url: &Secret<String>, display: String) -> Result<Self> {
        Ok(Reader {
            db: MyDb::connect(url, display).await?,
            reads: Vec::new(),
        })
    }
}

impl SourceReader for Reader {
    const ENGINE: Engine = Engine::Mysql;
    type Db = MyDb;

    fn db(&mut self) -> &mut MyDb {
        &mut self.db
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
