//! SQLite as a backup source: one read transaction (`BEGIN` + a first read) on one
//! connection for discovery and every table.

use super::plan::{Plan, chosen_columns};
use super::values::feed_values;
use super::{SourceReader, feed::Feed};
use crate::Result;
use crate::model::{Engine, Skipped, StreamFormat};
use crate::source::DiscoveredTable;
use crate::source::sqlite::{SqliteDb, TableInfo, create_table_for};
use futures::StreamExt;
use std::path::Path;

pub(super) struct Reader {
    db: SqliteDb,
}

impl Reader {
    pub(super) async fn open(path: &Path) -> Result<Self> {
        Ok(Reader {
            db: SqliteDb::open_read(path).await?,
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

    async fn fill(&mut self, _i: usize, plan: &Plan, feed: &mut Feed<'_>) -> Result<()> {
        feed_values(self.db.rows(&plan.sql, plan.columns.len()).boxed(), feed).await
    }
}
