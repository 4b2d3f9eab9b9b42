//! The destination's rows a `replace-rows` under a filter covers: their keys, found by
//! reading the destination (a plain read, no row locks) and evaluating the filter on
//! the values read the way a backup reads them, by the same code as on the backup's
//! rows, into the merge's scope table ([`MergeTable::scope`]).
//!
//! One connection cannot write while it streams a result, and a table's keys need not
//! fit in memory: they pass through a [`Spool`] (memory up to a few MiB, then a private
//! temporary file) between the read and the load.

use super::{MergeTable, join};
use crate::model::{RowDecoder, Value, encode_value};
use crate::source::mysql::{self as my, MyDb};
use crate::source::postgres::{self as pg, PgDb, split_name};
use crate::source::sqlite::{self as lite, SqliteDb};
use crate::{Error, Result};
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Where the key's columns stand in the backup's rows.
fn key_positions(t: &MergeTable<'_>) -> Vec<usize> {
    t.key
        .iter()
        .filter_map(|k| t.entry.stream_columns.iter().position(|c| c == k))
        .collect()
}

/// PostgreSQL: the destination's rows in COPY text form (as a backup reads them), the
/// matching rows' key fields spooled as COPY lines, then copied into the scope table.
pub(super) async fn postgres(db: &mut PgDb, t: &MergeTable<'_>) -> Result<()> {
    let (schema, table) = split_name(t.dest);
    let rel = pg::qualified(&schema, &table);
    let stream_cols = join(&t.entry.stream_columns, pg::quote, ", ");
    let key_pos = key_positions(t);
    let sql = format!("COPY (SELECT {stream_cols} FROM {rel}) TO STDOUT");
    let mut spool = Spool::default();
    {
        let mut out = db.conn.copy_out_raw(&sql).await.map_err(|e| {
            Error::invalid(format!(
                "{} lacks a column the filter or the backup needs ({}): {e}",
                t.dest,
                t.entry.stream_columns.join(", ")
            ))
        })?;
        let mut carry: Vec<u8> = Vec::new();
        let mut keys: Vec<u8> = Vec::new();
        while let Some(piece) = out.next().await {
            let piece = piece.map_err(|e| Error::Database {
                context: sql.clone(),
                source: e,
            })?;
            carry.extend_from_slice(&piece);
            let end = memchr::memrchr(b'\n', &carry).map(|i| i + 1).unwrap_or(0);
            if end == 0 {
                continue;
            }
            for line in carry[..end - 1].split(|&b| b == b'\n') {
                if t.filter.matches(&crate::export::copy_fields(line)) {
                    let fields: Vec<&[u8]> = line.split(|&b| b == b'\t').collect();
                    for (i, p) in key_pos.iter().enumerate() {
                        if i > 0 {
                            keys.push(b'\t');
                        }
                        keys.extend_from_slice(fields[*p]);
                    }
                    keys.push(b'\n');
                }
            }
            carry.drain(..end);
            spool.push(&keys).await?;
            keys.clear();
        }
    }
    let scope = t.scope();
    let what = |e| Error::Database {
        context: format!("filling {scope}"),
        source: e,
    };
    let mut copy = db
        .conn
        .copy_in_raw(&format!("COPY {scope} FROM STDIN"))
        .await
        .map_err(what)?;
    let mut keys = spool.read().await?;
    while let Some(piece) = keys.next().await? {
        copy.send(piece).await.map_err(what)?;
    }
    copy.finish().await.map(|_| ()).map_err(what)
}

/// SQLite: the destination's rows as values, the matching rows' keys spooled, then
/// inserted into the scope table.
pub(super) async fn sqlite(db: &mut SqliteDb, t: &MergeTable<'_>) -> Result<()> {
    let rel = lite::quote(t.dest);
    let key_pos = key_positions(t);
    let sql = format!(
        "SELECT {} FROM main.{rel}",
        join(&t.entry.stream_columns, lite::quote, ", ")
    );
    let n = t.entry.stream_columns.len();
    let mut spool = Spool::default();
    {
        let mut rows = sqlx::query(&sql).fetch(&mut db.conn);
        let mut keys = Vec::new();
        while let Some(row) = rows.next().await {
            let row = row.map_err(|e| {
                Error::invalid(format!(
                    "{} lacks a column the filter or the backup needs ({}): {e}",
                    t.dest,
                    t.entry.stream_columns.join(", ")
                ))
            })?;
            let values = lite::row_values(&row, n)?;
            if t.filter.matches(&values) {
                spool_key(&mut spool, &mut keys, &values, &key_pos).await?;
            }
        }
        spool.push(&keys).await?;
    }
    let insert = format!(
        "INSERT INTO temp.{} VALUES ({})",
        t.scope(),
        vec!["?"; t.key.len()].join(", ")
    );
    let mut keys = spool.read().await?;
    let mut decoder = RowDecoder::new(t.key.len());
    while let Some(piece) = keys.next().await? {
        decoder.push(&piece);
        while let Some(k) = decoder.next_row()? {
            db.insert(&insert, k).await?;
        }
    }
    decoder.finish()
}

/// MySQL: the destination's rows read as a backup reads them, the matching rows' keys
/// spooled, then inserted into the scope table a few hundred at a time.
pub(super) async fn mysql(db: &mut MyDb, t: &MergeTable<'_>) -> Result<()> {
    let info = db.describe(t.dest).await?;
    let mut exprs = Vec::new();
    let mut reads = Vec::new();
    for c in &t.entry.stream_columns {
        let i = info
            .data_columns
            .iter()
            .position(|d| d == c)
            .ok_or_else(|| Error::invalid(format!("{} has no column {c} to filter on", t.dest)))?;
        reads.push(info.reads[i].0);
        exprs.push(info.reads[i].1.clone());
    }
    let sql = format!("SELECT {} FROM {}", exprs.join(", "), my::quote(t.dest));
    let key_pos = key_positions(t);
    let mut spool = Spool::default();
    {
        let mut rows = db.rows(&sql, reads);
        let mut keys = Vec::new();
        while let Some(row) = rows.next().await {
            let row = row?;
            if t.filter.matches(&row) {
                spool_key(&mut spool, &mut keys, &row, &key_pos).await?;
            }
        }
        spool.push(&keys).await?;
    }
    let scope = t.scope();
    let mut keys = spool.read().await?;
    let mut decoder = RowDecoder::new(t.key.len());
    let mut batch = Vec::with_capacity(500);
    while let Some(piece) = keys.next().await? {
        decoder.push(&piece);
        while let Some(k) = decoder.next_row()? {
            batch.push(k);
            if batch.len() == 500 {
                db.insert_rows(&scope, &t.key, &batch).await?;
                batch.clear();
            }
        }
    }
    decoder.finish()?;
    db.insert_rows(&scope, &t.key, &batch).await
}

/// Appends one row's key to `keys` in the row encoding, handing `keys` to the spool
/// every 64 KiB.
async fn spool_key(
    spool: &mut Spool,
    keys: &mut Vec<u8>,
    row: &[Value],
    key_pos: &[usize],
) -> Result<()> {
    for &i in key_pos {
        encode_value(keys, &row[i]);
    }
    if keys.len() >= 64 << 10 {
        spool.push(keys).await?;
        keys.clear();
    }
    Ok(())
}

/// Bytes kept in memory before a [`Spool`] writes to a file.
const SPOOL_MEMORY: usize = 8 << 20;

/// Bytes written once and read back once, in order: in memory up to [`SPOOL_MEMORY`],
/// the rest in a temporary file readable only by this user and removed from its
/// directory as soon as it is made (it disappears with its handle).
#[derive(Default)]
pub(crate) struct Spool {
    memory: Vec<u8>,
    file: Option<tokio::fs::File>,
}

impl Spool {
    pub(crate) async fn push(&mut self, bytes: &[u8]) -> Result<()> {
        self.memory.extend_from_slice(bytes);
        if self.memory.len() >= SPOOL_MEMORY {
            let file = match &mut self.file {
                Some(f) => f,
                None => self.file.insert(private_file().await?),
            };
            file.write_all(&self.memory).await.map_err(spool_error)?;
            self.memory.clear();
        }
        Ok(())
    }

    /// The bytes pushed, from the first.
    pub(crate) async fn read(mut self) -> Result<SpoolReader> {
        if let Some(f) = &mut self.file {
            f.flush().await.map_err(spool_error)?;
            f.rewind().await.map_err(spool_error)?;
        }
        Ok(SpoolReader {
            file: self.file,
            rest: Some(self.memory),
        })
    }
}

pub(crate) struct SpoolReader {
    file: Option<tokio::fs::File>,
    rest: Option<Vec<u8>>,
}

impl SpoolReader {
    /// The next piece (at most 1 MiB from the file), or None at the end.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(f) = &mut self.file {
            let mut buf = vec![0; 1 << 20];
            let n = f.read(&mut buf).await.map_err(spool_error)?;
            if n > 0 {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            self.file = None;
        }
        Ok(self.rest.take().filter(|r| !r.is_empty()))
    }
}

fn spool_error(e: std::io::Error) -> Error {
    Error::Other(format!(
        "writing keys to a temporary file in {}: {e}",
        std::env::temp_dir().display()
    ))
}

/// A new file in the temporary directory, owner-only, already unlinked.
async fn private_file() -> Result<tokio::fs::File> {
    let path = std::env::temp_dir().join(format!(
        "tablesafe-keys-{}",
        crate::repo::crypto::hex(&rand::random::<[u8; 12]>())
    ));
    let mut opts = tokio::fs::OpenOptions::new();
    opts.read(true).write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let file = opts.open(&path).await.map_err(spool_error)?;
    // Unix keeps an unlinked file readable through its handle; elsewhere the removal
    // fails and the file stays until the temporary directory is cleaned.
    let _ = tokio::fs::remove_file(&path).await;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past its memory, a spool writes a file and reads everything back in order.
    #[tokio::test]
    async fn a_spool_gives_back_what_it_was_given_in_order() {
        let mut spool = Spool::default();
        let mut want = Vec::new();
        for i in 0..3000u32 {
            let piece: Vec<u8> = (0..7000u32).map(|j| (i * 7 + j) as u8).collect();
            spool.push(&piece).await.unwrap();
            want.extend_from_slice(&piece);
        }
        assert!(spool.file.is_some(), "20 MiB went to a file");
        let mut got = Vec::new();
        let mut r = spool.read().await.unwrap();
        while let Some(p) = r.next().await.unwrap() {
            got.extend_from_slice(&p);
        }
        assert_eq!(got.len(), want.len());
        assert!(got == want);
        let mut empty = Spool::default().read().await.unwrap();
        assert!(empty.next().await.unwrap().is_none());
    }
}
