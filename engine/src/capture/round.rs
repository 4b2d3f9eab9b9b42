//! Capture rounds: each stores the transactions committed since the last one as a
//! segment, then lets the slot forget them.

use super::change::{Txn, parse_lsn};
use super::segment::{SEGMENT_FORMAT, encode, segments, store_stream};
use super::shared::check_name;
use super::slot::{CaptureOptions, advance, connect_url, find_slot, free_slot};
use super::stream;
use crate::model::{ChangeSegment, Checksum, Engine, SnapshotSource};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::repo::lock::LockKind;
use crate::source::SourceUrl;
use crate::source::postgres::PgDb;
use crate::{Error, Result};

/// How long one [`capture_round`] keeps storing segments while catching up.
const MAX_ROUND: std::time::Duration = std::time::Duration::from_secs(5);

/// What one round of [`capture_once`] did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Round {
    pub slot: String,
    /// The segment written, if any.
    pub segment: Option<String>,
    pub transactions: u64,
    pub changes: u64,
    /// Every commit up to this time (unix ms) is stored.
    pub covers_until_ms: Option<i64>,
    /// WAL the slot holds back on the source, in bytes.
    pub lag_bytes: u64,
    /// Everything committed when the round began is stored (false: a backlog remains
    /// for the next round).
    pub drained: bool,
}

/// What a long-running capture keeps between rounds: where the last stored segment of
/// the slot ended (slot, end position, covered until), so it need not list every
/// segment, and the open replication stream.
#[derive(Default)]
pub struct Position {
    last: Option<(String, u64, i64)>,
    stream: Option<stream::ChangeStream>,
    sql: Option<PgDb>,
}

impl Position {
    /// Ends the replication stream, if one is open (the slot is then free).
    pub async fn close(&mut self) {
        if let Some(s) = self.stream.take() {
            s.shutdown().await;
        }
        self.sql = None;
    }
}

/// One round: stores the transactions committed since the last round as a segment,
/// then advances the slot past them.
pub async fn capture_once(
    repo: &mut Repository,
    opts: &CaptureOptions,
    progress: &dyn Progress,
) -> Result<Round> {
    let mut pos = Position::default();
    let result = until_drained(repo, opts, &mut pos, progress).await;
    pos.close().await;
    result
}

/// Rounds until one has stored everything committed when it began (a capture that
/// was down catches up), for at most ten minutes.
pub async fn until_drained(
    repo: &mut Repository,
    opts: &CaptureOptions,
    pos: &mut Position,
    progress: &dyn Progress,
) -> Result<Round> {
    let started = std::time::Instant::now();
    loop {
        let round = capture_round(repo, opts, pos, progress).await?;
        if round.drained || started.elapsed() > std::time::Duration::from_secs(600) {
            return Ok(round);
        }
    }
}

/// [`capture_once`] for a capture that runs round after round: `pos` carries the last
/// segment's end from one round to the next (empty: read from the repository).
pub async fn capture_round(
    repo: &mut Repository,
    opts: &CaptureOptions,
    pos: &mut Position,
    progress: &dyn Progress,
) -> Result<Round> {
    let _lock = repo.lock(LockKind::Shared, "capture").await?;
    check_name(&opts.name)?;
    let (url, display) = connect_url(&opts.source)?;
    // The SQL connection stays open between rounds too (a new backend each round cost
    // the source more CPU than decoding the changes); after an error it is reopened.
    let mut db = match pos.sql.take() {
        Some(db) => db,
        None => PgDb::connect(&url, display.clone()).await?,
    };
    let Some((slot, confirmed, lag)) = find_slot(&mut db, &opts.name).await? else {
        return Err(Error::invalid(format!(
            "no capture slot for {:?} on {display}: it was never set up or was dropped",
            opts.name
        )));
    };
    if lag > opts.max_lag_bytes {
        pos.close().await;
        free_slot(&mut db, &slot).await?;
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(&slot)
            .execute(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: "dropping a capture slot that fell behind".into(),
                source: e,
            })?;
        return Err(Error::Other(format!(
            "capture {:?} fell behind: its slot held {} MB of WAL on the source (limit {} MB), so it was dropped before it could fill the source's disk. Point-in-time restore stays possible up to the last stored change; take a new backup and start the capture again.",
            opts.name,
            lag >> 20,
            opts.max_lag_bytes >> 20
        )));
    }
    let (prev_end, prev_covers) = match &pos.last {
        Some((s, end, covers)) if *s == slot => (Some(*end), Some(*covers)),
        _ => {
            let previous = segments(repo, &slot).await?;
            (
                previous.last().map(|(_, s)| s.end_lsn),
                previous.last().map(|(_, s)| s.covers_until_ms),
            )
        }
    };
    let publication = format!("tablesafe_{}", opts.name);
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1 ORDER BY 1",
    )
    .bind(&publication)
    .fetch_all(&mut db.conn)
    .await
    .map_err(|e| Error::Database {
        context: "reading the publication".into(),
        source: e,
    })?;
    let mut prev_end = prev_end;
    let mut prev_covers = prev_covers;
    let mut confirmed = confirmed;
    // A segment stored by a round that stopped before advancing the slot (tablesafe was
    // killed): the slot may forget what it holds now.
    if let Some(end) = prev_end
        && end > confirmed
    {
        match pos.stream.as_mut() {
            Some(stream) => stream.confirm(end),
            None => {
                free_slot(&mut db, &slot).await?;
                advance(&mut db, &slot, end).await?;
            }
        }
        confirmed = end;
    }
    if pos
        .stream
        .as_ref()
        .is_some_and(|_| pos.last.as_ref().is_none_or(|l| l.0 != slot))
    {
        pos.close().await; // a stream of another (dropped) slot
    }
    if pos.stream.is_none() {
        pos.stream = Some(
            stream::ChangeStream::start(
                &url,
                &slot,
                &format!("tablesafe_{}", opts.name),
                confirmed,
                std::time::Duration::from_secs(15),
            )
            .await?,
        );
    }
    let started = std::time::Instant::now();
    let mut round = Round {
        slot: slot.clone(),
        segment: None,
        transactions: 0,
        changes: 0,
        covers_until_ms: prev_covers,
        lag_bytes: lag,
        drained: false,
    };
    // Segments of at most `max_changes` each, until the slot is drained: a capture that
    // fell behind catches up in one call.
    loop {
        // Read before peeking: the peek decodes flushed WAL, so every transaction whose
        // commit is flushed before this position is in it (with synchronous_commit = off
        // a commit can be written but not yet flushed: the write position would skip
        // it). One source clock reading for the covered range.
        let (now_lsn, now_ms): (String, i64) = sqlx::query_as(
            "SELECT pg_current_wal_flush_lsn()::text, (extract(epoch from clock_timestamp()) * 1000)::bigint",
        )
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: "reading the WAL position".into(),
            source: e,
        })?;
        let now_lsn = parse_lsn(&now_lsn).unwrap_or(0);
        let stream = pos.stream.as_mut().expect("started above");
        let wait = MAX_ROUND
            .saturating_sub(started.elapsed())
            .max(std::time::Duration::from_millis(500));
        let received = stream
            .receive_until(now_lsn, opts.max_changes as usize, wait)
            .await;
        let drained = match received {
            Ok(d) => d,
            Err(e) => {
                pos.close().await;
                return Err(e);
            }
        };
        progress.check_abort()?;
        // Transactions a stored segment already holds (stored, then the slot not advanced
        // because tablesafe stopped) are dropped: nothing is applied twice.
        let txns: Vec<Txn> = stream
            .take_done()
            .into_iter()
            .filter(|t| prev_end.is_none_or(|p| t.end_lsn > p))
            .collect();
        let start = prev_end.unwrap_or(confirmed);
        let last_end = txns.last().map(|t| t.end_lsn);
        let end = if drained {
            last_end.unwrap_or(0).max(now_lsn).max(start)
        } else {
            last_end.unwrap_or(start).max(start)
        };
        // Commits are stamped before their WAL is written, so one stamped earlier can
        // come later in the stream: a second's margin either way. Short of the flush
        // position, only what the received commits prove (never more than before).
        let covers = if drained {
            now_ms - 1000
        } else {
            txns.iter()
                .map(|t| t.commit_ms)
                .max()
                .map_or(i64::MIN, |c| c - 1000)
        }
        .max(prev_covers.unwrap_or(i64::MIN));
        let changes: u64 = txns.iter().map(|t| t.ops.len() as u64).sum();
        let idle_due = drained && prev_covers.is_none_or(|c| covers - c >= opts.idle_segment_ms);
        let mut written = None;
        if !txns.is_empty() || idle_due {
            let stream = encode(&txns);
            let bytes = stream.len() as u64;
            let checksum = Checksum::of(blake3::hash(&stream));
            let chunks = store_stream(repo, stream).await?;
            let segment = ChangeSegment {
                format: SEGMENT_FORMAT,
                source: SnapshotSource {
                    engine: Engine::Postgres,
                    url: SourceUrl::Postgres(url.clone()).display(),
                },
                slot: slot.clone(),
                start_lsn: start,
                end_lsn: end,
                covers_until_ms: covers,
                first_commit_ms: txns.iter().map(|t| t.commit_ms).min(),
                last_commit_ms: txns.iter().map(|t| t.commit_ms).max(),
                transactions: txns.len() as u64,
                changes,
                bytes,
                checksum,
                chunks,
                time_ms: crate::repo::now_ms(),
                tables: tables.clone(),
            };
            written = Some(repo.save_change_segment(&segment).await?);
        }
        // Only now, with the segment stored, may the source forget these changes.
        if written.is_some()
            && end > confirmed
            && let Some(stream) = pos.stream.as_mut()
        {
            stream.confirm(end);
        }
        let stored = written.is_some();
        if stored {
            prev_end = Some(end);
            prev_covers = Some(covers);
            pos.last = Some((slot.clone(), end, covers));
            round.covers_until_ms = Some(covers);
            round.segment = written;
            if end > confirmed {
                confirmed = end;
            }
        }
        round.transactions += txns.len() as u64;
        round.changes += changes;
        // A call that catches up returns now and then (the caller checks for a stop).
        round.drained = drained;
        if drained || !stored || started.elapsed() > MAX_ROUND {
            pos.sql = Some(db);
            return Ok(round);
        }
    }
}
