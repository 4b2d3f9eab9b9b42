//! Backup: one consistent read of the source, streamed through chunking, dedup,
//! compression and encryption into packs, then the snapshot manifest.
//!
//! Two stages run in parallel: the async reader (rows → canonical stream → checksum)
//! and a blocking worker (FastCDC → chunk id → dedup → zstd → seal → pack writes), joined
//! by a bounded channel so memory stays flat whatever the table size.

use crate::chunker::Chunker;
use crate::model::{Engine, Skipped, Snapshot, SnapshotSource, TableEntry, encode_value};
use crate::progress::Progress;
use crate::repo::crypto::hex;
use crate::repo::{Repository, now_ms};
use crate::secret::Secret;
use crate::selection::Selection;
use crate::source::SourceUrl;
use crate::source::sqlite::{SqliteDb, TableInfo, create_table_for};
use crate::{Error, Result};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct BackupOptions {
    pub source: Secret<String>,
    pub selection: Selection,
    pub tags: BTreeMap<String, String>,
}

/// What a finished backup reports.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    pub id: String,
    pub snapshot: Snapshot,
}

enum Msg {
    Start,
    Data(Vec<u8>),
    End,
}

const SEND_AT: usize = 1 << 20;

pub async fn backup(
    repo: &mut Repository,
    opts: &BackupOptions,
    progress: &dyn Progress,
) -> Result<BackupSummary> {
    let started = Instant::now();
    let url = SourceUrl::parse(&opts.source)?;
    let SourceUrl::Sqlite(path) = &url else {
        return Err(SourceUrl::postgres_not_yet());
    };
    let mut db = SqliteDb::open_read(path).await?;
    db.begin_snapshot().await?;
    let time_ms = now_ms();
    let catalog = db.discover().await?;
    let chosen = opts
        .selection
        .apply(catalog.tables.iter().map(|t| t.name.as_str()))?;
    let mut skipped = catalog.skipped.clone();
    let mut plans = Vec::new();
    for name in &chosen {
        let table = catalog
            .tables
            .iter()
            .find(|t| &t.name == name)
            .expect("chosen from catalog");
        plans.push(plan_table(
            table,
            opts.selection.columns.get(name),
            &mut skipped,
        )?);
    }

    // The worker: chunk, dedup, compress, encrypt, pack.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(4);
    let rt = tokio::runtime::Handle::current();
    let index = repo.index_view();
    let mut writer = repo.pack_writer();
    let params = repo.config.chunker;
    let worker = tokio::task::spawn_blocking(move || -> Result<_> {
        let mut tables: Vec<Vec<String>> = Vec::new();
        let mut chunker = Chunker::new(params);
        let mut current = Vec::new();
        let handle = |chunk: Vec<u8>,
                      current: &mut Vec<String>,
                      writer: &mut crate::repo::PackWriter|
         -> Result<()> {
            let id = writer.keys().chunk_id(&chunk);
            if !index.contains_key(&id) && !writer.is_pending(&id) {
                writer.add(id, &chunk, &rt)?;
            }
            current.push(hex(&id));
            Ok(())
        };
        while let Some(msg) = rx.blocking_recv() {
            match msg {
                Msg::Start => {
                    chunker = Chunker::new(params);
                    current = Vec::new();
                }
                Msg::Data(bytes) => {
                    for chunk in chunker.push(&bytes) {
                        handle(chunk, &mut current, &mut writer)?;
                    }
                }
                Msg::End => {
                    for chunk in chunker.finish() {
                        handle(chunk, &mut current, &mut writer)?;
                    }
                    tables.push(std::mem::take(&mut current));
                }
            }
        }
        let (written, stored) = writer.finish(&rt)?;
        Ok((tables, written, stored))
    });

    let read = read_tables(&mut db, &mut plans, &tx, progress).await;
    drop(tx);
    let joined = worker
        .await
        .map_err(|e| Error::Other(format!("backup worker: {e}")))?;
    // A worker error explains a failed send better than the send error itself.
    let (chunk_lists, written, bytes_stored) = match (read, joined) {
        (_, Err(e)) => return Err(e),
        (Err(e), _) => return Err(e),
        (Ok(_), Ok(v)) => v,
    };
    db.exec("COMMIT").await?;
    repo.absorb(written);

    let tables: Vec<TableEntry> = plans
        .into_iter()
        .zip(chunk_lists)
        .map(|(p, chunks)| TableEntry {
            name: p.info.name.clone(),
            schema: p.schema,
            segment: "full".into(),
            stream_columns: p.columns,
            rows: p.rows,
            bytes: p.bytes,
            checksum: p.checksum,
            chunks,
        })
        .collect();
    let snapshot = Snapshot {
        format: crate::repo::FORMAT_VERSION,
        time_ms,
        source: SnapshotSource {
            engine: Engine::Sqlite,
            url: url.display(),
        },
        selection: opts.selection.record(),
        tags: opts.tags.clone(),
        tables,
        skipped,
        bytes_stored,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let id = repo.save_snapshot(&snapshot).await?;
    Ok(BackupSummary { id, snapshot })
}

struct TablePlan<'a> {
    info: &'a TableInfo,
    schema: crate::model::TableSchema,
    columns: Vec<String>,
    sql: String,
    rows: u64,
    bytes: u64,
    checksum: String,
}

fn plan_table<'a>(
    info: &'a TableInfo,
    wanted: Option<&Vec<String>>,
    skipped: &mut Vec<Skipped>,
) -> Result<TablePlan<'a>> {
    let mut schema = info.schema.clone();
    let columns = match wanted {
        None => info.data_columns.clone(),
        Some(wanted) => {
            for c in wanted {
                if !info.data_columns.contains(c) {
                    return Err(Error::invalid(format!(
                        "table {:?} has no column {c:?}",
                        info.name
                    )));
                }
            }
            // Table order; primary-key columns always kept.
            let keep: Vec<String> = info
                .schema
                .columns
                .iter()
                .filter(|c| {
                    info.data_columns.contains(&c.name) && (wanted.contains(&c.name) || c.pk > 0)
                })
                .map(|c| c.name.clone())
                .collect();
            if keep.len() < info.data_columns.len() {
                schema.columns.retain(|c| keep.contains(&c.name));
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
            keep
        }
    };
    let sql = SqliteDb::rows_sql(info, &columns);
    Ok(TablePlan {
        info,
        schema,
        columns,
        sql,
        rows: 0,
        bytes: 0,
        checksum: String::new(),
    })
}

async fn read_tables(
    db: &mut SqliteDb,
    plans: &mut [TablePlan<'_>],
    tx: &tokio::sync::mpsc::Sender<Msg>,
    progress: &dyn Progress,
) -> Result<()> {
    let closed = || Error::Other("backup worker stopped".into());
    for plan in plans.iter_mut() {
        progress.check_abort()?;
        progress.table_started(&plan.info.name, None);
        tx.send(Msg::Start).await.map_err(|_| closed())?;
        let mut hasher = blake3::Hasher::new();
        let mut buf = Vec::with_capacity(SEND_AT + 4096);
        let (mut rows, mut bytes, mut pending_rows) = (0u64, 0u64, 0u64);
        let sql = plan.sql.clone();
        let mut stream = db.rows(&sql, plan.columns.len());
        while let Some(row) = stream.next().await {
            for v in &row? {
                encode_value(&mut buf, v);
            }
            rows += 1;
            pending_rows += 1;
            if buf.len() >= SEND_AT {
                progress.check_abort()?;
                hasher.update(&buf);
                bytes += buf.len() as u64;
                progress.advanced(pending_rows, buf.len() as u64);
                pending_rows = 0;
                tx.send(Msg::Data(std::mem::replace(
                    &mut buf,
                    Vec::with_capacity(SEND_AT + 4096),
                )))
                .await
                .map_err(|_| closed())?;
            }
        }
        drop(stream);
        hasher.update(&buf);
        bytes += buf.len() as u64;
        progress.advanced(pending_rows, buf.len() as u64);
        if !buf.is_empty() {
            tx.send(Msg::Data(buf)).await.map_err(|_| closed())?;
        }
        tx.send(Msg::End).await.map_err(|_| closed())?;
        plan.rows = rows;
        plan.bytes = bytes;
        plan.checksum = hasher.finalize().to_hex().to_string();
        progress.table_finished(&plan.info.name);
    }
    Ok(())
}
