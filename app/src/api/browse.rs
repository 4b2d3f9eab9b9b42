//! Looking inside a backup without restoring it: browse a table's rows page by page
//! (filters, key lookup) and download tables as files (CSV, JSON lines, SQL, SQLite).
//!
//! Both hand out the data itself, so they need what a restore into a new table needs
//! (the `RestoreNew` permission and the snapshot's source granted, or seeing all), are
//! refused where the source's restores need approvals (the two-person rule would be
//! bypassed), and are audited (`snapshot.browse`, `snapshot.export`).

use crate::error::AppError;
use leptos::prelude::*;

#[cfg(feature = "ssr")]
use crate::api::history::Outcome;
use serde::{Deserialize, Serialize};

// The browser's copies of the engine's browse types (the engine is not compiled to
// wasm).

/// `column op value`, as `engine::filter::Condition` (op: `eq`, `ne`, `lt`, `le`, `gt`,
/// `ge`, `contains`, `is_null`, `not_null`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub column: String,
    pub op: String,
    #[serde(default)]
    pub value: String,
}

/// One page of rows, as `engine::browse::BrowsePage`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowsPage {
    pub snapshot: String,
    pub snapshot_time_ms: i64,
    pub table: String,
    pub tables: Vec<String>,
    pub columns: Vec<String>,
    pub key: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
    pub offset: u64,
    pub more: bool,
    pub table_rows: u64,
    pub scanned: u64,
}

/// Rows on one page of the browse view.
pub const PAGE_ROWS: u64 = 50;

/// The operators a filter may use, with how the page shows them.
pub const OPS: [(&str, &str); 9] = [
    ("eq", "="),
    ("ne", "≠"),
    ("lt", "<"),
    ("le", "≤"),
    ("gt", ">"),
    ("ge", "≥"),
    ("contains", "contains"),
    ("is_null", "is NULL"),
    ("not_null", "is not NULL"),
];

/// The query string of a download link: table, format and filters.
pub fn export_query(table: Option<&str>, format: &str, filters: &[Filter]) -> String {
    let mut q = format!("format={}", urlencoding(format));
    if let Some(t) = table {
        q.push_str(&format!("&table={}", urlencoding(t)));
    }
    for f in filters {
        q.push_str(&format!(
            "&where={}",
            urlencoding(&format!("{}\u{1f}{}\u{1f}{}", f.column, f.op, f.value))
        ));
    }
    q
}

/// Percent-encodes a query-string value (everything but unreserved characters).
pub fn urlencoding(s: &str) -> String {
    const VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, VALUE).to_string()
}

/// A page of a table inside a snapshot (history row `id`).
#[server(endpoint = "snapshots/browse", input = server_fn::codec::Json)]
pub async fn browse_snapshot(
    id: i64,
    table: String,
    filters: Vec<Filter>,
    key: Vec<String>,
    offset: u64,
) -> Result<RowsPage, AppError> {
    use crate::auth::Perm;
    use crate::ssr::ctx;
    let c = ctx::authorize(Perm::RestoreNew, "snapshot.browse").await?;
    let result = async {
        let opened = ssr::open_for_reading(&c, id).await?;
        // The first table when none is named yet.
        let page = engine::browse::browse(
            &opened.repo,
            &engine::browse::BrowseQuery {
                snapshot: opened.row.snapshot_id.clone(),
                table: table.clone(),
                filter: ssr::row_filter(&filters)?,
                key: key
                    .iter()
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .collect(),
                offset,
                limit: PAGE_ROWS as usize,
            },
        )
        .await
        .map_err(|e| AppError::Invalid(e.to_string()))?;
        Ok::<_, AppError>((
            format!("snapshot #{id} table {}", page.table),
            RowsPage {
                snapshot: page.snapshot.into(),
                snapshot_time_ms: page.snapshot_time_ms,
                table: page.table,
                tables: page.tables,
                columns: page.columns,
                key: page.key,
                rows: page.rows,
                offset: page.offset,
                more: page.more,
                table_rows: page.table_rows,
                scanned: page.scanned,
            },
        ))
    }
    .await;
    match result {
        Ok((target, page)) => {
            let detail = if filters.is_empty() && key.is_empty() {
                format!("rows from {}", offset + 1)
            } else {
                format!("rows from {} with filters", offset + 1)
            };
            c.audit("snapshot.browse", &target, Outcome::Ok, &detail)
                .await;
            Ok(page)
        }
        Err(e) => {
            c.audit(
                "snapshot.browse",
                &format!("snapshot #{id}"),
                Outcome::Failed,
                &e.to_string(),
            )
            .await;
            Err(e)
        }
    }
}

#[cfg(feature = "ssr")]
pub mod ssr {
    use super::Filter;
    use crate::api::history::Outcome;

    use crate::auth::Perm;
    use crate::error::AppError;
    use crate::ssr::OrInternal;
    use crate::ssr::ctx::Ctx;
    use crate::ssr::secrets::Kind;
    use crate::ssr::store;
    use axum::body::Body;
    use axum::http::header;
    use axum::response::{IntoResponse, Response};

    /// A snapshot the caller may read, with its repository open.
    pub struct Opened {
        pub row: store::SnapshotRow,
        pub repo: engine::repo::Repository,
        pub source: Option<store::SourceRow>,
    }

    /// Loads history row `id` if the caller may see it (its source granted, or seeing
    /// all) and opens its target's repository.
    pub async fn open_snapshot(c: &Ctx, id: i64) -> Result<Opened, AppError> {
        let db = &c.state.db;
        let row = store::snapshot(db, id)
            .await
            .or_internal("loading a snapshot")?
            .ok_or_else(|| AppError::NotFound("Snapshot".into()))?;
        let source = match row.source_id {
            Some(sid) => {
                let s = crate::api::sources::visible_source(c, sid).await?;
                // The database's rule, not this row's (`ssr::rules`).
                Some(
                    crate::ssr::rules::effective(&c.state, s)
                        .await
                        .or_internal("checking an approval rule")?,
                )
            }
            None if c.can(Perm::SeeAll) => None,
            None => return Err(AppError::NotFound("Snapshot".into())),
        };
        let target = store::target(db, row.target_id)
            .await
            .or_internal("loading a target")?
            .ok_or_else(|| AppError::NotFound("Target".into()))?;
        let password = c
            .state
            .secrets
            .open(Kind::RepositoryPassword, &target.sealed_password)
            .or_internal("opening a password")?;
        // (A target that cannot be opened names its place; only admins see server paths.)
        let repo = crate::ssr::open_target(&c.state, &target, &password)
            .await
            .map_err(|e| {
                AppError::Invalid(crate::ssr::words::without_paths(
                    &e.to_string(),
                    &[],
                    c.can(Perm::ManageUsers),
                ))
            })?;
        Ok(Opened { row, repo, source })
    }

    /// [`open_snapshot`] for handing out rows: refused where the source's restores need
    /// approvals.
    pub async fn open_for_reading(c: &Ctx, id: i64) -> Result<Opened, AppError> {
        let opened = open_snapshot(c, id).await?;
        if let Some(s) = &opened.source
            && s.approvals_required > 0
        {
            return Err(AppError::Invalid(format!(
                "Restores from {} need {} approval(s), so its backups cannot be browsed or downloaded directly: file a restore request into a new table instead.",
                s.name, s.approvals_required
            )));
        }
        Ok(opened)
    }

    pub fn row_filter(filters: &[Filter]) -> Result<engine::filter::RowFilter, AppError> {
        use engine::filter::{Condition, Op};
        let mut conditions = Vec::new();
        for f in filters {
            if f.column.trim().is_empty() {
                continue;
            }
            let op = match f.op.as_str() {
                "eq" => Op::Eq,
                "ne" => Op::Ne,
                "lt" => Op::Lt,
                "le" => Op::Le,
                "gt" => Op::Gt,
                "ge" => Op::Ge,
                "contains" => Op::Contains,
                "is_null" => Op::IsNull,
                "not_null" => Op::NotNull,
                other => return Err(AppError::Invalid(format!("Unknown filter {other:?}."))),
            };
            conditions.push(Condition {
                column: f.column.clone(),
                op,
                value: f.value.clone(),
            });
        }
        Ok(engine::filter::RowFilter { conditions })
    }

    /// `GET /snapshots/{id}/export?format=csv&table=T&where=…`: the rows as a file,
    /// streamed. A table that turns out damaged cuts the download off (the browser
    /// reports it failed) rather than ending it cleanly.
    /// An error in the API's shape (`crate::error`), with its status.
    fn error_response(e: AppError) -> Response {
        let body = serde_json::to_string(&e).unwrap_or_default();
        (
            e.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }

    pub async fn export_response(c: Ctx, id: i64, query: Vec<(String, String)>) -> Response {
        let get = |k: &str| {
            query
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let table = get("table").filter(|t| !t.is_empty());
        let format = get("format").unwrap_or_else(|| "csv".into());
        let filters: Vec<Filter> = query
            .iter()
            .filter(|(k, _)| k == "where")
            .filter_map(|(_, v)| {
                let mut parts = v.splitn(3, '\u{1f}');
                Some(Filter {
                    column: parts.next()?.to_string(),
                    op: parts.next()?.to_string(),
                    value: parts.next().unwrap_or("").to_string(),
                })
            })
            .collect();
        let target = format!(
            "snapshot #{id}{} ({format})",
            table
                .as_ref()
                .map(|t| format!(" table {t}"))
                .unwrap_or_default()
        );
        if !c.can(Perm::RestoreNew) {
            c.audit("snapshot.export", &target, Outcome::Denied, "")
                .await;
            return error_response(AppError::Refused(
                "Your role cannot download backups.".into(),
            ));
        }
        let prepared = async {
            let format = engine::export::FileFormat::parse(&format)
                .map_err(|e| AppError::Invalid(e.to_string()))?;
            let opened = open_for_reading(&c, id).await?;
            let selection = engine::selection::Selection {
                include: table
                    .iter()
                    .map(|t| crate::api::history::glob_literal(t))
                    .collect(),
                ..Default::default()
            };
            let plan = engine::export::plan(
                &opened.repo,
                &opened.row.snapshot_id,
                &selection,
                &row_filter(&filters)?,
                format,
            )
            .await
            .map_err(|e| AppError::Invalid(e.to_string()))?;
            Ok::<_, AppError>((opened, plan))
        }
        .await;
        let (opened, plan) = match prepared {
            Ok(p) => p,
            Err(e) => {
                c.audit("snapshot.export", &target, Outcome::Failed, &e.to_string())
                    .await;
                return error_response(e);
            }
        };
        let detail = format!(
            "{} table(s), up to {} rows{}",
            plan.tables.len(),
            plan.rows(),
            if filters.is_empty() { "" } else { ", filtered" }
        );
        c.audit("snapshot.export", &target, Outcome::Ok, &detail)
            .await;
        let name = plan.file_name();
        let content_type = plan.format.content_type();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
        let failed = {
            let c = Ctx {
                state: c.state.clone(),
                user: c.user.clone(),
                address: c.address.clone(),
            };
            move |e: engine::Error| async move {
                tracing::warn!(error = %e, "a download stopped");
                c.audit("snapshot.export", &target, Outcome::Failed, &e.to_string())
                    .await;
            }
        };
        tokio::spawn(async move {
            let repo = opened.repo;
            let progress = engine::progress::NoProgress;
            let result = if plan.format == engine::export::FileFormat::Sqlite {
                send_sqlite_file(&repo, &plan, &progress, &tx).await
            } else {
                send_stream(&repo, &plan, &progress, &tx).await
            };
            if let Err(e) = result {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                failed(e).await;
            }
        });
        let body = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        (
            [
                (header::CONTENT_TYPE, content_type.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{name}\""),
                ),
                (header::CACHE_CONTROL, "no-store".to_string()),
            ],
            Body::from_stream(body),
        )
            .into_response()
    }

    type Sender = tokio::sync::mpsc::Sender<Result<Vec<u8>, std::io::Error>>;

    async fn send_stream(
        repo: &engine::repo::Repository,
        plan: &engine::export::ExportPlan,
        progress: &dyn engine::progress::Progress,
        tx: &Sender,
    ) -> engine::Result<()> {
        use futures::TryStreamExt;
        let mut pieces = engine::export::stream(repo, plan, progress)?;
        while let Some(piece) = pieces.try_next().await? {
            if tx.send(Ok(piece)).await.is_err() {
                // The browser went away.
                return Ok(());
            }
        }
        Ok(())
    }

    /// A SQLite file is built on disk (in a private temporary directory), then sent.
    async fn send_sqlite_file(
        repo: &engine::repo::Repository,
        plan: &engine::export::ExportPlan,
        progress: &dyn engine::progress::Progress,
        tx: &Sender,
    ) -> engine::Result<()> {
        use tokio::io::AsyncReadExt;
        let (dir, path) = write_private_export(repo, plan, progress, &std::env::temp_dir()).await?;
        let opened = tokio::fs::File::open(&path).await;
        // Gone from the directory at once (the directory with it); the open handle still
        // reads it.
        drop(dir);
        let mut file = opened.map_err(|e| engine::Error::io("opening the export", e))?;
        loop {
            let mut buf = vec![0u8; 1 << 20];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| engine::Error::io("reading the export", e))?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            if tx.send(Ok(buf)).await.is_err() {
                return Ok(());
            }
        }
    }

    /// A directory only the server's user can enter (mode 0700, a random name under the
    /// temporary directory), removed with everything in it when dropped. Exports are
    /// whole tables of a backup: in the shared, world-readable temporary directory another
    /// local user could read them, or plant a file or symlink under a name they guessed.
    pub struct PrivateDir(std::path::PathBuf);

    impl PrivateDir {
        pub fn create(parent: &std::path::Path, prefix: &str) -> std::io::Result<PrivateDir> {
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            let path = parent.join(format!("{prefix}{:032x}", rand::random::<u128>()));
            // Fails if the name exists, whatever it is (mkdir follows no symlink).
            builder.create(&path)?;
            Ok(PrivateDir(path))
        }

        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for PrivateDir {
        fn drop(&mut self) {
            if let Err(e) = std::fs::remove_dir_all(&self.0) {
                tracing::warn!(dir = %self.0.display(), error = %e, "could not remove a temporary directory");
            }
        }
    }

    /// Writes a file export into a new [`PrivateDir`] under `parent`; the file is made
    /// readable by its owner only (0600). On failure nothing is left behind.
    pub async fn write_private_export(
        repo: &engine::repo::Repository,
        plan: &engine::export::ExportPlan,
        progress: &dyn engine::progress::Progress,
        parent: &std::path::Path,
    ) -> engine::Result<(PrivateDir, std::path::PathBuf)> {
        let dir = PrivateDir::create(parent, "tablesafe-export-")
            .map_err(|e| engine::Error::io("creating a private temporary directory", e))?;
        let path = dir.path().join("export");
        engine::export::write_file(repo, plan, &path, progress).await?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| engine::Error::io("making the export private", e))?;
        }
        Ok((dir, path))
    }
}

#[cfg(all(test, feature = "ssr", unix))]
mod tests {
    use super::ssr::write_private_export;
    use engine::progress::NoProgress;
    use engine::repo::{InitOptions, Repository};
    use sqlx::Connection;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A SQLite export is built inside a directory only the server's user can enter, is
    /// itself owner-only, and neither outlives the download, nor a failed one.
    #[tokio::test]
    async fn a_file_export_is_private_and_removed_afterwards() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&src)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::raw_sql(
            "CREATE TABLE payroll (id INTEGER PRIMARY KEY, salary INTEGER);
             INSERT INTO payroll VALUES (1, 100000), (2, 250000);",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let loc = dir.path().join("repo").to_str().unwrap().to_string();
        let mut repo = Repository::init(&loc, InitOptions::unencrypted())
            .await
            .unwrap();
        let backup = engine::backup::BackupOptions {
            source: engine::secret::Secret::new(format!("sqlite://{}", src.display())),
            selection: Default::default(),
            tags: Default::default(),
        };
        let id = engine::backup::backup(&mut repo, &backup, &NoProgress)
            .await
            .unwrap()
            .id;
        let plan = engine::export::plan(
            &repo,
            id.as_str(),
            &Default::default(),
            &Default::default(),
            engine::export::FileFormat::Sqlite,
        )
        .await
        .unwrap();
        // A shared temporary directory, as /tmp is.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();

        let (private, file) = write_private_export(&repo, &plan, &NoProgress, &tmp)
            .await
            .unwrap();
        assert_eq!(private.path().parent(), Some(tmp.as_path()));
        assert_eq!(mode(private.path()), 0o700, "the directory is private");
        assert_eq!(mode(&file), 0o600, "the file is owner-only");
        assert_eq!(entries(private.path()), vec!["export".to_string()]);
        assert!(std::fs::metadata(&file).unwrap().len() > 0);
        // Two exports never share a directory (no guessable name).
        let (other, _) = write_private_export(&repo, &plan, &NoProgress, &tmp)
            .await
            .unwrap();
        assert_ne!(other.path(), private.path());
        drop(other);
        drop(private);
        assert!(entries(&tmp).is_empty(), "removed: {:?}", entries(&tmp));

        // An export that fails half way (its data is gone) leaves nothing either.
        std::fs::remove_dir_all(Path::new(&loc).join("data")).unwrap();
        let e = write_private_export(&repo, &plan, &NoProgress, &tmp).await;
        assert!(e.is_err());
        assert!(entries(&tmp).is_empty(), "removed: {:?}", entries(&tmp));
    }
}
