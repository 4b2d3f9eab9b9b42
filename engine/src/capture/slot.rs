//! The source's side of a PostgreSQL capture: the publication of the captured tables
//! and the logical replication slot that holds their changes until they are stored.

use super::change::{format_lsn, parse_lsn};
use super::shared::check_name;
use crate::repo::crypto::hex;
use crate::secret::Secret;
use crate::selection::{Selection, SelectionExt};
use crate::source::postgres::{PgDb, qualified, quote, split_name};
use crate::source::{SourceDb, SourceUrl};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct CaptureOptions {
    pub source: Secret<String>,
    /// The capture's name (`[a-z0-9_]`, at most 40 characters): its slot is
    /// `tablesafe_<name>_<random>`, its publication `tablesafe_<name>`.
    pub name: String,
    pub selection: Selection,
    /// Changes read per round at most (a round may end later, at its transaction's end).
    pub max_changes: i64,
    /// WAL the slot may hold back on the source before the capture gives up and drops
    /// it, rather than fill the source's disk.
    pub max_lag_bytes: u64,
    /// Without changes, a segment is still written this often, to move the end of the
    /// restorable range.
    pub idle_segment_ms: i64,
}

impl CaptureOptions {
    pub fn new(source: Secret<String>, name: &str) -> Self {
        CaptureOptions {
            source,
            name: name.to_string(),
            selection: Selection::default(),
            max_changes: 200_000,
            max_lag_bytes: 1 << 30,
            idle_segment_ms: 5_000,
        }
    }
}

/// What [`setup`] found or made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Setup {
    pub slot: String,
    pub created: bool,
    pub publication: String,
    pub tables: Vec<String>,
    /// Selected tables that cannot be captured, and why.
    pub not_captured: Vec<(String, String)>,
}

pub(super) fn connect_url(source: &Secret<String>) -> Result<(Secret<String>, String)> {
    match SourceUrl::parse(source)? {
        SourceUrl::Postgres(url) => {
            let display = SourceUrl::Postgres(url.clone()).display();
            Ok((url, display))
        }
        SourceUrl::Mysql(_) => Err(Error::invalid(
            "continuous capture of MySQL is not available yet: schedule frequent backups (they are incremental)",
        )),
        SourceUrl::Sqlite(_) => Err(Error::invalid(
            "continuous capture reads PostgreSQL's logical replication; SQLite sources get frequent incremental backups instead",
        )),
    }
}

pub(super) async fn find_slot(db: &mut PgDb, name: &str) -> Result<Option<(String, u64, u64)>> {
    let row: Option<(String, Option<String>, Option<i64>)> = sqlx::query_as(
        "SELECT slot_name::text, confirmed_flush_lsn::text, \
         pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
         FROM pg_replication_slots WHERE slot_name LIKE $1 AND database = current_database() \
         ORDER BY slot_name LIMIT 1",
    )
    .bind(format!("tablesafe\\_{name}\\_%"))
    .fetch_optional(&mut db.conn)
    .await
    .map_err(|e| Error::Database {
        context: "looking up the capture slot".into(),
        source: e,
    })?;
    Ok(row.map(|(slot, confirmed, lag)| {
        (
            slot,
            confirmed.as_deref().and_then(parse_lsn).unwrap_or(0),
            lag.unwrap_or(0).max(0) as u64,
        )
    }))
}

/// Makes sure the publication lists the selected keyed tables and the slot exists.
/// Needs a role with REPLICATION (or superuser) and ownership of the tables, and
/// `wal_level = logical` on the source.
pub async fn setup(opts: &CaptureOptions) -> Result<Setup> {
    check_name(&opts.name)?;
    let (url, display) = connect_url(&opts.source)?;
    let mut db = PgDb::connect(&url, display).await?;
    let level: String = sqlx::query_scalar("SHOW wal_level")
        .fetch_one(&mut db.conn)
        .await
        .map_err(|e| Error::Database {
            context: "reading wal_level".into(),
            source: e,
        })?;
    if level != "logical" {
        return Err(Error::invalid(format!(
            "the source has wal_level = {level}; continuous capture needs wal_level = logical (set it in postgresql.conf and restart PostgreSQL)"
        )));
    }
    let catalog = db.discover().await?;
    let chosen = opts
        .selection
        .apply(catalog.tables.iter().map(|t| t.name.as_str()))?;
    let mut tables = Vec::new();
    let mut not_captured = Vec::new();
    for t in catalog.tables.iter().filter(|t| chosen.contains(&t.name)) {
        if t.pk.is_empty() {
            not_captured.push((
                t.name.clone(),
                "no primary key: changes cannot be matched to rows".to_string(),
            ));
        } else {
            tables.push(t.name.clone());
        }
    }
    if tables.is_empty() {
        return Err(Error::invalid(
            "no selected table has a primary key: nothing can be captured",
        ));
    }
    let publication = format!("tablesafe_{}", opts.name);
    let list = tables
        .iter()
        .map(|t| {
            let (s, n) = split_name(t);
            qualified(&s, &n)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)")
            .bind(&publication)
            .fetch_one(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: "looking up the publication".into(),
                source: e,
            })?;
    let sql = if exists {
        format!("ALTER PUBLICATION {} SET TABLE {list}", quote(&publication))
    } else {
        format!(
            "CREATE PUBLICATION {} FOR TABLE {list}",
            quote(&publication)
        )
    };
    db.exec(&sql).await?;
    let (slot, created) = match find_slot(&mut db, &opts.name).await? {
        Some((slot, _, _)) => (slot, false),
        None => {
            let mut rnd = [0u8; 4];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut rnd);
            let slot = format!("tablesafe_{}_{}", opts.name, hex(&rnd));
            // Waits for transactions running now to end: every later commit is decoded.
            sqlx::query("SELECT pg_create_logical_replication_slot($1, 'pgoutput')")
                .bind(&slot)
                .execute(&mut db.conn)
                .await
                .map_err(|e| Error::Database {
                    context: "creating the capture slot (the role needs REPLICATION)".into(),
                    source: e,
                })?;
            (slot, true)
        }
    };
    Ok(Setup {
        slot,
        created,
        publication,
        tables,
        not_captured,
    })
}

/// Drops the capture's slot and publication (the source keeps no WAL for it any more).
pub async fn teardown(source: &Secret<String>, name: &str) -> Result<bool> {
    check_name(name)?;
    let (url, display) = connect_url(source)?;
    let mut db = PgDb::connect(&url, display).await?;
    let slot = find_slot(&mut db, name).await?;
    if let Some((slot, _, _)) = &slot {
        free_slot(&mut db, slot).await?;
        sqlx::query("SELECT pg_drop_replication_slot($1)")
            .bind(slot)
            .execute(&mut db.conn)
            .await
            .map_err(|e| Error::Database {
                context: "dropping the capture slot".into(),
                source: e,
            })?;
    }
    db.exec(&format!(
        "DROP PUBLICATION IF EXISTS {}",
        quote(&format!("tablesafe_{name}"))
    ))
    .await?;
    Ok(slot.is_some())
}

/// Ends a walsender still holding the slot (a capture killed a moment ago, or one
/// running elsewhere that is being stopped), so the slot can be advanced or dropped.
pub(super) async fn free_slot(db: &mut PgDb, slot: &str) -> Result<()> {
    for _ in 0..50 {
        let active: Option<Option<i32>> =
            sqlx::query_scalar("SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1")
                .bind(slot)
                .fetch_optional(&mut db.conn)
                .await
                .map_err(|e| Error::Database {
                    context: "looking up the capture slot".into(),
                    source: e,
                })?;
        let Some(Some(pid)) = active else {
            return Ok(());
        };
        let _ = sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut db.conn)
            .await;
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(Error::Other(format!(
        "the capture slot {slot} stays in use by another connection"
    )))
}

pub(super) async fn advance(db: &mut PgDb, slot: &str, lsn: u64) -> Result<()> {
    sqlx::query("SELECT pg_replication_slot_advance($1, $2::pg_lsn)")
        .bind(slot)
        .bind(format_lsn(lsn))
        .execute(&mut db.conn)
        .await
        .map(|_| ())
        .map_err(|e| Error::Database {
            context: "advancing the capture slot".into(),
            source: e,
        })
}
