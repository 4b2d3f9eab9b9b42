//! A PostgreSQL changes-only delta that reads from the parent only its block list
//! (format 2, [`crate::checksum`]), not its rows.
//!
//! In the backup's one transaction, one scan: every current key in key order, each with
//! whether its row was written since the parent (by `xmin`, as in
//! [`super::postgres`]'s `changes_only`). The keys alone say where the current blocks
//! end; a block is *known* when the parent has
//! one with the same first and last keys, row count and key fingerprint and none of
//! its rows changed: its sum is the parent's. Every other block is read again by its
//! keys (`WHERE key = ANY(…)`, same transaction) and hashed. A block whose keys are the
//! parent's gets the changed rows as upserts; one whose keys differ (rows deleted or
//! inserted) is replaced in the delta: a range delete of its key range, then all its
//! rows (or, for an integer key with few values missing from the block's range, a
//! delete of each missing value and the changed rows). So the cost is one scan of the
//! keys on the server plus the changed blocks' rows; the parent's rows are never
//! decoded.

use super::feed::{Feed, SEND_AT};
use super::plan::Plan;
use crate::checksum::{BlockSum, ListReader, TableHasher, boundary_of, key_bytes};
use crate::model::{StreamFormat, Value, decode_value};
use crate::repo::Repository;
use crate::segment::{Key, KeySpec, cmp_key, push_delete, push_range_delete, push_upsert};
use crate::source::postgres::PgDb;
use crate::{Error, Result};
use futures::StreamExt;
use std::cmp::Ordering;

/// A block whose integer key range misses at most this many values (beyond its rows)
/// lists them as deletes rather than being stored whole.
const MAX_GAPS: u64 = 32;

/// Changed blocks holding more than 1/SCAN_ABOVE of the rows are read in one
/// sequential scan rather than by index lookups.
const SCAN_ABOVE: u64 = 50;

/// Keys of changed blocks fetched per statement.
const FETCH_KEYS: usize = 50_000;

/// The parent-merge way ([`super::postgres`]'s `changes_only`) holds at most this many
/// bytes of changed rows to build a table's stream from them; more changes than that
/// and the table is read whole.
pub(super) const MAX_CHANGED_BYTES: usize = 64 << 20;

/// The rows of the parent's blocks that written rows fall in, above which the
/// parent-merge way is taken instead (1/MERGE_ABOVE of the table's rows, and at least
/// [`MERGE_MIN_ROWS`]).
const MERGE_ABOVE: u64 = 50;
const MERGE_MIN_ROWS: u64 = 64;

/// One current block, as the key scan found it.
enum Block {
    /// Unchanged since the parent: its sum.
    Known(BlockSum),
    /// To read again: its keys; `replace` when its key set differs from the parent's
    /// (the delta replaces its whole key range `(lo, hi]`).
    Dirty {
        keys: Vec<Key>,
        /// Per key: its row was written since the parent.
        changed: Vec<bool>,
        lo: Option<Key>,
        replace: bool,
    },
}

/// `None`: not possible this way (the caller tries the parent's rows); `Some(false)`:
/// the source and the parent disagree, read the table whole; `Some(true)`: the delta and
/// the table's sum are in `feed`.
pub(super) async fn changed_blocks(
    repo: &Repository,
    db: &mut PgDb,
    plan: &Plan,
    since: u64,
    feed: &mut Feed<'_>,
) -> Result<Option<bool>> {
    let (Some(spec), Some(parent), Some(def)) =
        (&plan.key, &plan.parent, plan.schema.postgres.as_ref())
    else {
        return Ok(None);
    };
    if !feed.check.is_blocks() || spec.names.len() != 1 {
        return Ok(None);
    }
    let Some(mut parent_list) = ListReader::new(repo, parent) else {
        return Ok(None);
    };
    let key_type = match def.columns.iter().find(|c| c.name == spec.names[0]) {
        Some(c)
            if matches!(
                c.type_sql.as_str(),
                "smallint" | "integer" | "bigint" | "uuid"
            ) =>
        {
            c.type_sql.clone()
        }
        _ => return Ok(None),
    };
    use crate::source::postgres::{column_list, qualified};
    let rel = qualified(&def.schema, &def.name);
    let (cols, order) = (column_list(&plan.columns), column_list(&spec.names));

    // 1. Every current key in key order, with whether its row was written since the
    // parent (see `changes_only` for the xmin test): one scan.
    let mut scan_columns = spec.names.clone();
    scan_columns.push("\0changed".into());
    let Some(key_spec) = KeySpec::new(&StreamFormat::PgCopyText, &scan_columns, &plan.schema)
    else {
        return Ok(None);
    };
    let xmin = since & 0xffff_ffff;
    // 0. Worth it? The blocks the written rows fall in are read again whole, so changes
    // scattered over the table (1 % of rows, one in each of 15 % of the blocks) would
    // cost a scan of every key plus a scan of the rows: then the parent's rows, merged
    // with the changed ones, cost less (the caller's way). Not when the parent's rows
    // are remote (reading them all is a download of the table), nor when the changed
    // rows are more than that way holds (it would then read the table whole).
    if repo.storage.kind() == crate::repo::storage::Kind::Local
        && !few_blocks_touched(repo, db, plan, parent, &rel, &order, xmin).await?
    {
        return Ok(None);
    }
    // 2. Every current key: the current blocks, matched against the parent's.
    let mut blocks: Vec<Block> = Vec::new();
    let mut parent_head: Option<(BlockSum, Key)> = None;
    let mut parent_prev: Option<Vec<u8>> = None;
    let mut parent_done = false;
    let mut cur_keys: Vec<Key> = Vec::new();
    let mut cur_fp = 0u64;
    let mut cur_changed = false;
    let mut prev_last: Option<(Vec<u8>, Key)> = None;
    let mut boundary = Vec::new();
    let mut ok = true;
    let mut cur_flags: Vec<bool> = Vec::new();
    let mut rows_now = 0u64;
    let keys_sql = format!(
        "COPY (SELECT {order}, age(xmin) <= age('{xmin}'::xid) FROM {rel} ORDER BY {order}) TO STDOUT"
    );
    let mut stream = db.copy_out(&keys_sql).await?;
    let mut carry: Vec<u8> = Vec::new();
    let mut key = Key::new();
    'read: while let Some(piece) = stream.next().await {
        carry.extend_from_slice(&piece?);
        let mut at = 0;
        while let Some(n) = key_spec.row_len(&carry[at..])? {
            let line = &carry[at..at + n];
            at += n;
            if key_spec.key_into(line, &mut key).is_err()
                || cur_keys
                    .last()
                    .or(prev_last.as_ref().map(|(_, k)| k))
                    .is_some_and(|l| cmp_key(l, &key).is_ge())
            {
                ok = false;
                break 'read;
            }
            let changed = line.ends_with(b"\tt\n");
            cur_changed |= changed;
            cur_flags.push(changed);
            rows_now += 1;
            key_bytes(&key, &mut boundary);
            let (ends, hash) = boundary_of(&boundary);
            cur_fp = cur_fp.wrapping_add(hash);
            cur_keys.push(std::mem::take(&mut key));
            if ends {
                let last = (boundary.clone(), cur_keys.last().expect("a key").clone());
                let b = match settle(
                    &mut parent_list,
                    &mut parent_head,
                    &mut parent_prev,
                    &mut parent_done,
                    &last.1,
                )
                .await
                {
                    Ok(p) => classify(
                        p,
                        prev_last.as_ref(),
                        &last.0,
                        std::mem::take(&mut cur_keys),
                        std::mem::take(&mut cur_flags),
                        cur_fp,
                        cur_changed,
                    ),
                    Err(_) => {
                        ok = false;
                        break 'read;
                    }
                };
                blocks.push(b);
                prev_last = Some(last);
                cur_fp = 0;
                cur_changed = false;
            }
        }
        carry.drain(..at);
    }
    if !ok {
        while stream.next().await.is_some() {}
        return Ok(Some(false));
    }
    drop(stream);
    if !carry.is_empty() {
        return Ok(Some(false));
    }
    // The last block ends at the last key (no boundary after it).
    if let Some(last_key) = cur_keys.last().cloned() {
        key_bytes(&last_key, &mut boundary);
        let p = match settle(
            &mut parent_list,
            &mut parent_head,
            &mut parent_prev,
            &mut parent_done,
            &last_key,
        )
        .await
        {
            Ok(p) => p,
            Err(_) => return Ok(Some(false)),
        };
        blocks.push(classify(
            p,
            prev_last.as_ref(),
            &boundary,
            std::mem::take(&mut cur_keys),
            std::mem::take(&mut cur_flags),
            cur_fp,
            cur_changed,
        ));
        prev_last = Some((boundary.clone(), last_key));
    }
    // Parent keys after the last current key are gone.
    let mut tail_gone = parent_head.is_some();
    loop {
        match parent_list.next().await {
            Ok(Some(_)) => tail_gone = true,
            Ok(None) => break,
            Err(_) => return Ok(Some(false)),
        }
    }

    // 3. Changed blocks read again, in batches; sums and delta records in key order.
    // Few keys are looked up in the key's index; many (their blocks then touch most of
    // the table's pages anyway) in one sequential scan that tests each key against a
    // hashed list, which costs one pass instead of a probe per row.
    feed.keyed.as_mut().expect("a keyed plan").order.differ = None;
    feed.order_known = true;
    let dirty_rows: usize = blocks
        .iter()
        .map(|b| match b {
            Block::Dirty { keys, .. } => keys.len(),
            Block::Known(_) => 0,
        })
        .sum();
    let scan = dirty_rows as u64 > rows_now / SCAN_ABOVE;
    let batch = if scan { usize::MAX } else { FETCH_KEYS };
    let mut hasher = TableHasher::new();
    let mut delta: Vec<u8> = Vec::new();
    let mut start = 0;
    while start < blocks.len() {
        // The blocks up to the batch's end, and the keys to fetch for them.
        let mut end = start;
        let mut wanted: Vec<&Key> = Vec::new();
        while end < blocks.len() && wanted.len() < batch {
            if let Block::Dirty { keys, .. } = &blocks[end] {
                wanted.extend(keys.iter());
            }
            end += 1;
        }
        let sql = if wanted.is_empty() {
            None
        } else {
            let list = array_literal(&wanted)?;
            Some(format!(
                "COPY (SELECT {cols} FROM {rel} WHERE {order} = ANY('{list}'::{key_type}[]) ORDER BY {order}) TO STDOUT"
            ))
        };
        drop(wanted);
        if scan && sql.is_some() {
            db.exec("SET LOCAL enable_indexscan = off").await?;
            db.exec("SET LOCAL enable_bitmapscan = off").await?;
        }
        let mut rows = match &sql {
            Some(sql) => Some(Rows {
                stream: db.copy_out(sql).await?.boxed(),
                buf: Vec::new(),
                pos: 0,
            }),
            None => None,
        };
        let mut row_key = Key::new();
        let mut fetched = 0u64;
        let mut ok = true;
        'blocks: for b in &blocks[start..end] {
            match b {
                Block::Known(sum) => hasher.block(sum)?,
                Block::Dirty {
                    keys,
                    changed,
                    lo,
                    replace,
                } => {
                    let hi = keys.last().expect("a block has rows");
                    // An integer key range with few values missing: a delete of each
                    // missing value (some may never have existed: harmless) instead of
                    // storing the whole block again.
                    let mut gaps = match (*replace, lo.as_deref(), hi.as_slice()) {
                        (true, Some([Value::Integer(l)]), [Value::Integer(h)])
                            if h.checked_sub(*l)
                                .is_some_and(|d| d as u64 <= keys.len() as u64 + MAX_GAPS) =>
                        {
                            Some(*l + 1)
                        }
                        _ => None,
                    };
                    let replace = *replace && gaps.is_none();
                    if replace {
                        push_range_delete(&mut delta, lo.as_deref(), Some(hi));
                    }
                    let source = rows.as_mut().expect("a dirty block's rows are fetched");
                    for (k, is_changed) in keys.iter().zip(changed) {
                        if let (Some(next), [Value::Integer(v)]) = (gaps.as_mut(), k.as_slice()) {
                            while *next < *v {
                                push_delete(&mut delta, &[Value::Integer(*next)]);
                                *next += 1;
                            }
                            *next = v.saturating_add(1);
                        }
                        let Some(row) = source.next(spec).await? else {
                            ok = false;
                            break 'blocks;
                        };
                        fetched += row.len() as u64;
                        if spec.key_into(&row, &mut row_key).is_err()
                            || cmp_key(&row_key, k) != Ordering::Equal
                        {
                            ok = false;
                            break 'blocks;
                        }
                        if replace || *is_changed {
                            push_upsert(&mut delta, &row);
                        }
                        key_bytes(k, &mut boundary);
                        hasher.row(&boundary, &row);
                    }
                }
            }
            if delta.len() >= SEND_AT {
                feed.ship_delta(std::mem::take(&mut delta)).await?;
            }
        }
        if let Some(mut source) = rows.take() {
            // Every row fetched was used, and the COPY is finished before the
            // connection is used again.
            let rest = if ok { source.next(spec).await? } else { None };
            while source.stream.next().await.is_some() {}
            if !ok || rest.is_some() || source.pos != source.buf.len() {
                return Ok(Some(false));
            }
        }
        drop(rows);
        if scan && sql.is_some() {
            db.exec("SET LOCAL enable_indexscan = on").await?;
            db.exec("SET LOCAL enable_bitmapscan = on").await?;
        }
        feed.progress.advanced(0, fetched);
        start = end;
    }
    if tail_gone {
        let lo = prev_last.as_ref().map(|(_, k)| k.as_slice());
        push_range_delete(&mut delta, lo, None);
    }
    feed.ship_delta(delta).await?;
    let sum = hasher.finish();
    feed.progress.advanced(sum.rows, 0);
    feed.precomputed = Some(sum);
    Ok(Some(true))
}

/// Whether the rows written since the parent fall in few of its blocks (in total at
/// most [`MERGE_ABOVE`]'s share of its rows; written rows after its last key count one
/// each), or are more than the merge way holds ([`MAX_CHANGED_BYTES`], estimated from
/// the parent's mean row size).
/// One scan of the table on the server that sends only the written rows' keys, and a
/// read of the parent's block list. Deleted rows are not seen here (they leave no
/// `xmin`); the key scan finds them later.
async fn few_blocks_touched(
    repo: &Repository,
    db: &mut PgDb,
    plan: &Plan,
    parent: &crate::model::TableEntry,
    rel: &str,
    order: &str,
    xmin: u64,
) -> Result<bool> {
    let Some(spec) = &plan.key else {
        return Ok(false);
    };
    let Some(key_spec) = KeySpec::new(&StreamFormat::PgCopyText, &spec.names, &plan.schema) else {
        return Ok(false);
    };
    let Some(mut list) = ListReader::new(repo, parent) else {
        return Ok(false);
    };
    let budget = (parent.rows / MERGE_ABOVE).max(MERGE_MIN_ROWS);
    // Changed rows beyond what the merge way holds: this way after all.
    let too_many = (MAX_CHANGED_BYTES as u64 * parent.rows.max(1)) / parent.bytes.max(1);
    let sql = format!(
        "COPY (SELECT {order} FROM {rel} WHERE age(xmin) <= age('{xmin}'::xid) ORDER BY {order}) TO STDOUT"
    );
    let mut stream = db.copy_out(&sql).await?;
    let mut carry: Vec<u8> = Vec::new();
    let mut key = Key::new();
    let mut head: Option<(u64, Key)> = None;
    let mut list_done = false;
    let mut touched = 0u64;
    let mut written = 0u64;
    let mut head_counted = false;
    let mut few = true;
    'read: while let Some(piece) = stream.next().await {
        carry.extend_from_slice(&piece?);
        let mut at = 0;
        while let Some(n) = key_spec.row_len(&carry[at..])? {
            if key_spec.key_into(&carry[at..at + n], &mut key).is_err() {
                few = false;
                break 'read;
            }
            at += n;
            written += 1;
            if written > too_many {
                few = true;
                break 'read;
            }
            if !few {
                // Too many blocks already: only the count of written rows is still
                // wanted.
                continue;
            }
            // The parent's first block whose last key is at least this key.
            loop {
                if head.is_none() && !list_done {
                    match list.next().await {
                        Ok(Some(b)) => match decode_key(&b.last) {
                            Ok(k) => {
                                head = Some((b.rows, k));
                                head_counted = false;
                            }
                            Err(_) => {
                                few = false;
                                break 'read;
                            }
                        },
                        Ok(None) => list_done = true,
                        Err(_) => {
                            few = false;
                            break 'read;
                        }
                    }
                }
                match &head {
                    Some((_, last)) if cmp_key(last, &key).is_lt() => head = None,
                    _ => break,
                }
            }
            match &head {
                Some((rows, _)) if !head_counted => {
                    touched += rows;
                    head_counted = true;
                }
                Some(_) => {}
                None => touched += 1,
            }
            if touched > budget {
                few = false;
            }
        }
        carry.drain(..at);
    }
    // The COPY is finished before the connection is used again.
    while stream.next().await.is_some() {}
    Ok(few)
}

/// Moves the parent's list to its first block whose last key is at least `last`;
/// returns that block if its last key is exactly `last` (with `parent_prev` the last
/// boundary before it).
async fn settle(
    list: &mut ListReader<'_>,
    head: &mut Option<(BlockSum, Key)>,
    prev: &mut Option<Vec<u8>>,
    done: &mut bool,
    last: &Key,
) -> Result<Option<(BlockSum, Option<Vec<u8>>)>> {
    loop {
        if head.is_none() && !*done {
            match list.next().await? {
                Some(b) => {
                    let k = decode_key(&b.last)?;
                    *head = Some((b, k));
                }
                None => *done = true,
            }
        }
        let Some((b, k)) = head else {
            return Ok(None);
        };
        match cmp_key(k, last) {
            Ordering::Less => {
                *prev = Some(b.last.clone());
                *head = None;
            }
            Ordering::Equal => {
                let b = b.clone();
                let before = prev.replace(b.last.clone());
                *head = None;
                return Ok(Some((b, before)));
            }
            Ordering::Greater => return Ok(None),
        }
    }
}

/// A current block `(prev_last, last]` against the parent's block ending at the same
/// key, if any (with the boundary before it): the same key set when both ends, the row
/// count and the key fingerprint agree.
fn classify(
    parent: Option<(BlockSum, Option<Vec<u8>>)>,
    prev_last: Option<&(Vec<u8>, Key)>,
    last: &[u8],
    keys: Vec<Key>,
    flags: Vec<bool>,
    fingerprint: u64,
    changed: bool,
) -> Block {
    let lo = prev_last.map(|(_, k)| k.clone());
    let same_keys = parent.as_ref().is_some_and(|(p, before)| {
        p.rows == keys.len() as u64
            && p.keys == fingerprint
            && p.last == last
            && before.as_deref() == prev_last.map(|(b, _)| b.as_slice())
    });
    match parent {
        Some((p, _)) if same_keys && !changed => Block::Known(p),
        _ => Block::Dirty {
            keys,
            changed: flags,
            lo,
            replace: !same_keys,
        },
    }
}

fn decode_key(bytes: &[u8]) -> Result<Key> {
    let mut key = Key::new();
    let mut at = 0;
    while at < bytes.len() {
        let (v, n) = decode_value(&bytes[at..])?
            .ok_or_else(|| Error::damaged("a block's last key ends inside a value"))?;
        key.push(v);
        at += n;
    }
    Ok(key)
}

/// A PostgreSQL array literal of single-column keys (integers, or uuids as text).
fn array_literal(keys: &[&Key]) -> Result<String> {
    let mut out = String::with_capacity(keys.len() * 12 + 2);
    out.push('{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match k.as_slice() {
            [Value::Integer(v)] => out.push_str(&v.to_string()),
            [Value::Text(t)] if t.iter().all(|b| b.is_ascii_hexdigit() || *b == b'-') => {
                out.push_str(std::str::from_utf8(t).expect("ascii"))
            }
            _ => return Err(Error::Other("a key that cannot be listed".into())),
        }
    }
    out.push('}');
    Ok(out)
}

/// Rows of a COPY, one at a time.
struct Rows<'a> {
    stream: futures::stream::BoxStream<'a, Result<bytes::Bytes>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Rows<'_> {
    async fn next(&mut self, spec: &KeySpec) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(n) = spec.row_len(&self.buf[self.pos..])? {
                let row = self.buf[self.pos..self.pos + n].to_vec();
                self.pos += n;
                return Ok(Some(row));
            }
            match self.stream.next().await {
                Some(piece) => {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                    self.buf.extend_from_slice(&piece?);
                }
                None => return Ok(None),
            }
        }
    }
}
