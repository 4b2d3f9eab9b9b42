//! SQLite as a backup source: one read transaction (`BEGIN` + a first read) on one
//! connection for discovery and every table.

use super::plan::{Plan, chosen_columns, selected};
use super::values::{RowSource, read_values};
use super::{Planned, SourceReader, feed::Streamed, pipeline::Pipeline};
use crate::Result;
use crate::model::{Engine, Skipped, StreamFormat, Value};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::selection::Selection;
use crate::source::sqlite::{SqliteDb, TableInfo, create_table_for};
use futures::StreamExt;
use futures::stream::BoxStream;
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

    async fn begin(&mut self) -> Result<()> {
        self.db.begin_snapshot().await
    }

    async fn plan(&mut self, selection: &Selection) -> Result<Planned> {
        let catalog = self.db.discover().await?;
        let mut skipped = catalog.skipped.clone();
        let mut plans = Vec::new();
        for (table, columns) in selected(&catalog.tables, |t| &t.name, selection)? {
            plans.push(plan_sqlite(table, columns, &mut skipped)?);
        }
        Ok(Planned {
            plans,
            skipped,
            enums: Vec::new(),
        })
    }

    async fn read(
        &mut self,
        repo: &Repository,
        plans: &[Plan],
        pipe: &Pipeline,
        out: &mut Vec<Streamed>,
        progress: &dyn Progress,
    ) -> Result<()> {
        read_values(repo, self, plans, pipe, out, progress).await
    }

    async fn finish(&mut self) -> Result<()> {
        self.db.exec("COMMIT").await
    }
}

impl RowSource for Reader {
    fn rows<'s>(&'s mut self, _i: usize, plan: &'s Plan) -> BoxStream<'s, Result<Vec<Value>>> {
        self.db.rows(&plan.sql, plan.columns.len()).boxed()
    }
}

fn plan_sqlite(
    info: &TableInfo,
    wanted: Option<&Vec<String>>,
    skipped: &mut Vec<Skipped>,
) -> Result<Plan> {
    let pk: Vec<String> = info
        .schema
        .columns
        .iter()
        .filter(|c| c.pk > 0)
        .map(|c| c.name.clone())
        .collect();
    let columns = chosen_columns(&info.name, &info.data_columns, &pk, wanted)?;
    let mut schema = info.schema.clone();
    if columns.len() < info.data_columns.len() {
        schema.columns.retain(|c| columns.contains(&c.name));
        schema.create_sql = create_table_for(&info.name, &schema.columns);
        schema.all_columns = false;
        for idx in std::mem::take(&mut schema.indexes) {
            skipped.push(Skipped {
                kind: "index".into(),
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
