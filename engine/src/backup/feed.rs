//! The backup's first stage for one table: its stream hashed, counted and sent to the
//! pipeline in pieces; a keyed table's key order checked and, with a parent, the stream
//! turned into a delta against the parent's rows.

use super::Plan;
use super::pipeline::{Msg, Pipeline};
use crate::Result;
use crate::model::{BlockList, ChunkId, Layer};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::rowcut::{Cut, RowCutter};
use crate::segment::{Key, KeySpec, Merged, cmp_key, push_delete, push_upsert};
use crate::source::postgres::count_lines;

pub(super) const SEND_AT: usize = 1 << 20;

/// What one table's stream produced.
pub(super) struct Streamed {
    pub(super) rows: u64,
    pub(super) bytes: u64,
    pub(super) checksum: crate::model::Checksum,
    /// The delta's base (the parent's layers), or empty for a full segment.
    pub(super) base: Vec<Layer>,
    pub(super) segment_bytes: u64,
    /// The key the stream proved to be strictly ordered by, if any.
    pub(super) key: Vec<String>,
    /// The first and last key of its rows (a keyed stream with rows): the parts of a
    /// table read in parts must follow each other in key order.
    pub(super) edges: Option<(Key, Key)>,
    /// Built from the rows changed since the parent ([`changes_only`]).
    pub(super) changes_only: bool,
    /// The block sums whose root is `checksum` (format 2, keyed tables), to be stored.
    pub(super) blocks: Option<crate::checksum::TableSum>,
    /// One key range of a table read in parts: its hasher, to be joined to the others'
    /// (`checksum` and `blocks` are then not set).
    pub(super) part: Option<crate::checksum::TableHasher>,
}

/// Turns a table's new rows into a delta against its parent's rows: both in key order,
/// merged like two sorted lists.
pub(super) struct Differ<'a> {
    parent: Merged<'a>,
    head: Option<(Key, Vec<u8>)>,
    primed: bool,
}

impl Differ<'_> {
    async fn fill(&mut self) -> Result<()> {
        if !self.primed {
            self.head = self.parent.next().await?;
            self.primed = true;
        }
        Ok(())
    }

    async fn row(&mut self, key: &Key, row: &[u8], out: &mut Vec<u8>) -> Result<()> {
        self.fill().await?;
        loop {
            let Some((pk, prow)) = &self.head else {
                push_upsert(out, row);
                return Ok(());
            };
            match cmp_key(pk, key) {
                std::cmp::Ordering::Less => {
                    push_delete(out, pk);
                    self.head = self.parent.next().await?;
                }
                std::cmp::Ordering::Equal => {
                    if prow.as_slice() != row {
                        push_upsert(out, row);
                    }
                    self.head = self.parent.next().await?;
                    return Ok(());
                }
                std::cmp::Ordering::Greater => {
                    push_upsert(out, row);
                    return Ok(());
                }
            }
        }
    }

    /// Parent rows after the last new row are gone.
    async fn finish(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.fill().await?;
        while let Some((pk, _)) = self.head.take() {
            push_delete(out, &pk);
            self.head = self.parent.next().await?;
        }
        Ok(())
    }
}

/// Row-level work on a keyed table's stream: checking its key order and, for a delta,
/// diffing it against the parent.
pub(super) struct Keyed<'a> {
    pub(super) spec: KeySpec,
    rows: RowCutter,
    /// A long row's bytes, gathered only for a delta (its differ compares whole rows).
    long: Vec<u8>,
    pub(super) order: Order<'a>,
}

/// The key order of a keyed table's rows, checked row by row.
pub(super) struct Order<'a> {
    spec: KeySpec,
    last: Key,
    key: Key,
    first: Option<Key>,
    pub(super) differ: Option<Differ<'a>>,
    pub(super) out: Vec<u8>,
}

impl<'a> Keyed<'a> {
    pub(super) fn new(spec: KeySpec, differ: Option<Differ<'a>>) -> Self {
        Keyed {
            rows: RowCutter::new(spec.clone()),
            long: Vec::new(),
            order: Order {
                spec: spec.clone(),
                last: Vec::new(),
                key: Vec::new(),
                first: None,
                differ,
                out: Vec::new(),
            },
            spec,
        }
    }

    /// Takes the rows of `data`, keeping what an unfinished one needs.
    /// `Ok(false)`: the stream is not in key order.
    async fn rows(&mut self, data: &[u8]) -> Result<bool> {
        let mut data = data;
        while let Some(cut) = self.rows.next(&mut data)? {
            let in_order = match cut {
                Cut::Row(row) => self.order.row(row, row).await?,
                Cut::Bytes(bytes) => {
                    if self.order.differ.is_some() {
                        self.long.extend_from_slice(bytes);
                    }
                    true
                }
                Cut::LongRow { keys, .. } => {
                    let row = std::mem::take(&mut self.long);
                    match keys {
                        Some(keys) => self.order.row(keys, &row).await?,
                        None => false,
                    }
                }
            };
            if !in_order {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The first and last key of the rows taken, if any.
    pub(super) fn edges(&self) -> Option<(Key, Key)> {
        let first = self.order.first.clone()?;
        Some((first, self.order.last.clone()))
    }
}

impl Order<'_> {
    /// The next row: `key_row` holds its key ([`crate::rowcut::Cut`]), `row` its bytes
    /// (a long row's only for a delta).
    async fn row(&mut self, key_row: &[u8], row: &[u8]) -> Result<bool> {
        if self.spec.key_into(key_row, &mut self.key).is_err()
            || self.first.is_some() && cmp_key(&self.last, &self.key) != std::cmp::Ordering::Less
        {
            return Ok(false);
        }
        if let Some(d) = self.differ.as_mut() {
            d.row(&self.key, row, &mut self.out).await?;
        }
        std::mem::swap(&mut self.last, &mut self.key);
        if self.first.is_none() {
            self.first = Some(self.last.clone());
        }
        Ok(true)
    }
}

/// One table's bytes on their way to the worker: hashed, counted, and sent in pieces of
/// about [`SEND_AT`] bytes. Keyed tables are also checked for key order, and a table
/// with a parent is sent as a delta.
pub(super) struct Feed<'a> {
    pub(super) pipe: &'a Pipeline,
    pub(super) progress: &'a dyn Progress,
    /// COPY text counts rows by lines; the values stream counts them as they are encoded.
    pub(super) rows_are_lines: bool,
    /// The stream's checksum: blocks of rows for a keyed table in a format 2
    /// repository, the whole stream's BLAKE3 otherwise.
    pub(super) check: crate::checksum::StreamCheck,
    /// The table's sum computed by the reader itself (a changes-only delta that rehashed
    /// only its changed blocks): `check` was not fed.
    pub(super) precomputed: Option<crate::checksum::TableSum>,
    pub(super) buf: Vec<u8>,
    pub(super) rows: u64,
    pub(super) bytes: u64,
    pub(super) unreported_rows: u64,
    pub(super) keyed: Option<Keyed<'a>>,
    pub(super) base: Vec<Layer>,
    pub(super) segment_bytes: u64,
    /// The delta could not be built (rows out of key order, unreadable parent): the
    /// table must be read again as a full segment.
    pub(super) restart: bool,
    /// The rows are known to come in strictly increasing key order and the delta
    /// records are written by the caller ([`changes_only`]): no row is parsed here.
    pub(super) order_known: bool,
}

impl<'a> Feed<'a> {
    /// `delta`: store the table as a delta against its plan's parent.
    pub(super) async fn start(
        repo: &'a Repository,
        pipe: &'a Pipeline,
        progress: &'a dyn Progress,
        plan: &'a Plan,
        rows_are_lines: bool,
        delta: bool,
    ) -> Result<Feed<'a>> {
        progress.check_abort()?;
        progress.table_started(&plan.name, None);
        pipe.send(Msg::Start).await?;
        let parent = plan.parent.as_ref().filter(|_| delta);
        let keyed = plan.key.clone().map(|spec| {
            let differ = parent.map(|p| Differ {
                parent: Merged::new(repo, &p.name, p.layers(), spec.clone()),
                head: None,
                primed: false,
            });
            Keyed::new(spec, differ)
        });
        Ok(Feed {
            pipe,
            progress,
            rows_are_lines,
            check: crate::checksum::StreamCheck::for_key(
                plan.key.clone().filter(|_| repo.config.format >= 2),
            ),
            precomputed: None,
            buf: Vec::with_capacity(SEND_AT + 65536),
            rows: 0,
            bytes: 0,
            unreported_rows: 0,
            keyed,
            base: parent.map(|p| p.layers()).unwrap_or_default(),
            segment_bytes: 0,
            restart: false,
            order_known: false,
        })
    }

    pub(super) fn count_row(&mut self) {
        self.rows += 1;
        self.unreported_rows += 1;
    }

    /// Appends `data` to the stream, sending as it fills: a piece of many megabytes
    /// (one PostgreSQL row's COPY message) goes on in pieces of [`SEND_AT`].
    pub(super) async fn push(&mut self, data: &[u8]) -> Result<()> {
        for piece in data.chunks(SEND_AT) {
            self.buf.extend_from_slice(piece);
            self.send_if_full().await?;
            if self.restart {
                break;
            }
        }
        Ok(())
    }

    pub(super) async fn send_if_full(&mut self) -> Result<()> {
        if self.buf.len() >= SEND_AT {
            self.progress.check_abort()?;
            self.send().await?;
        }
        Ok(())
    }

    /// A keyed stream that breaks key order is no longer keyed; a delta is abandoned.
    fn not_in_key_order(&mut self) {
        if self.base.is_empty() {
            self.keyed = None;
        } else {
            self.restart = true;
        }
    }

    async fn send(&mut self) -> Result<()> {
        if self.rows_are_lines {
            let n = count_lines(&self.buf);
            self.rows += n;
            self.unreported_rows += n;
        }
        self.check.update(&self.buf)?;
        self.bytes += self.buf.len() as u64;
        self.progress.advanced(
            std::mem::take(&mut self.unreported_rows),
            self.buf.len() as u64,
        );
        let mut ship = std::mem::replace(&mut self.buf, Vec::with_capacity(SEND_AT + 65536));
        if let Some(k) = &mut self.keyed
            && !self.order_known
        {
            match k.rows(&ship).await {
                Ok(true) => {}
                // An unreadable parent only costs the delta: the full table still backs up.
                Ok(false) | Err(_) => self.not_in_key_order(),
            }
        }
        if !self.base.is_empty() {
            ship = std::mem::take(&mut self.keyed.as_mut().expect("a delta is keyed").order.out);
        }
        self.ship(ship).await
    }

    /// Ships delta records written by the reader itself ([`changes_only`]).
    pub(super) async fn ship_delta(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.progress.check_abort()?;
        self.ship(bytes).await
    }

    async fn ship(&mut self, bytes: Vec<u8>) -> Result<()> {
        if self.restart || bytes.is_empty() {
            return Ok(());
        }
        self.segment_bytes += bytes.len() as u64;
        self.pipe.send(Msg::Data(bytes)).await
    }

    /// `None`: the delta was abandoned; read the table again with `delta` false.
    pub(super) async fn finish(mut self, table: &str) -> Result<Option<Streamed>> {
        self.send().await?;
        if let Some(k) = &mut self.keyed
            && !self.restart
        {
            let ended = !k.rows.in_row()
                && match &mut k.order.differ {
                    Some(d) => d.finish(&mut k.order.out).await.is_ok(),
                    None => true,
                };
            if !ended {
                self.not_in_key_order();
            } else if let Some(k) = &mut self.keyed {
                let out = std::mem::take(&mut k.order.out);
                self.ship(out).await?;
            }
        }
        if self.restart {
            return Ok(None);
        }
        self.pipe.send(Msg::End).await?;
        self.progress.table_finished(table);
        let check = std::mem::replace(&mut self.check, crate::checksum::StreamCheck::for_key(None));
        let mut part = None;
        let (checksum, blocks) = match self.precomputed.take() {
            None if check.is_part() => {
                part = Some(check.into_part()?);
                (crate::model::Checksum::of(blake3::hash(b"")), None)
            }
            Some(sum) => {
                self.rows = sum.rows;
                self.bytes = sum.bytes;
                (sum.root, Some(sum))
            }
            None => {
                let f = check.finish()?;
                (f.root, f.sum)
            }
        };
        Ok(Some(Streamed {
            rows: self.rows,
            bytes: self.bytes,
            checksum,
            blocks,
            part,
            base: self.base,
            segment_bytes: self.segment_bytes,
            edges: self.keyed.as_ref().and_then(|k| k.edges()),
            key: self.keyed.map(|k| k.spec.names).unwrap_or_default(),
            changes_only: false,
        }))
    }
}

/// Stores each table's block list (format 2) as chunks, deduplicated like a stream's:
/// per table its [`BlockList`], what was written and the bytes stored.
pub(super) async fn store_block_lists(
    repo: &Repository,
    sums: Vec<Option<crate::checksum::TableSum>>,
) -> Result<(Vec<Option<BlockList>>, super::pipeline::Written, u64)> {
    if sums.iter().all(|s| s.is_none()) {
        return Ok((sums.iter().map(|_| None).collect(), Vec::new(), 0));
    }
    let mut writer = repo.pack_writer();
    let index = repo.dedup_view();
    let params = repo.config.chunker;
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let run = || -> Result<Vec<Option<BlockList>>> {
            let mut out = Vec::with_capacity(sums.len());
            for sum in sums {
                let Some(sum) = sum else {
                    out.push(None);
                    continue;
                };
                let mut chunker = crate::chunker::Chunker::new(params);
                let mut chunks = chunker.push(&sum.list);
                chunks.extend(chunker.finish());
                let mut ids = Vec::with_capacity(chunks.len());
                for chunk in chunks {
                    let id = writer.keys().chunk_id(&chunk);
                    if !index.contains_key(&id) && !writer.is_pending(&id) {
                        writer.add(id, &chunk, &rt)?;
                    }
                    ids.push(ChunkId(id));
                }
                out.push(Some(BlockList {
                    bits: crate::checksum::BLOCK_BITS,
                    count: sum.blocks,
                    bytes: sum.list.len() as u64,
                    chunks: ids,
                }));
            }
            Ok(out)
        };
        match run() {
            Ok(lists) => {
                let (written, stored) = writer.finish(&rt)?;
                Ok((lists, written, stored))
            }
            Err(e) => {
                writer.discard(&rt);
                Err(e)
            }
        }
    })
    .await
    .map_err(|e| crate::Error::Other(format!("storing block lists: {e}")))?
}
