use engine::backup::{BackupOptions, BackupSummary, backup};
use engine::progress::NoProgress;
use engine::repo::crypto::KdfParams;
use engine::repo::{InitOptions, Repository};
use engine::restore::{Mode, RestoreOptions, RestoredTable};
use engine::secret::Secret;
use engine::selection::Selection;
use sqlx::{Connection, Executor, SqliteConnection};
use std::path::{Path, PathBuf};

pub const PASSWORD: &str = "test password";

pub fn password() -> Secret<String> {
    Secret::new(PASSWORD.to_string())
}

/// An encrypted repository with a cheap KDF (tests open it many times).
pub async fn new_repo(dir: &Path) -> (String, Repository) {
    let location = dir.join("repo").to_str().unwrap().to_string();
    let mut opts = InitOptions::encrypted(password());
    opts.kdf = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let repo = Repository::init(&location, opts).await.unwrap();
    (location, repo)
}

pub async fn open_repo(location: &str) -> Repository {
    Repository::open(location, Some(&password())).await.unwrap()
}

pub async fn sqlite(path: &Path) -> SqliteConnection {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    SqliteConnection::connect_with(&opts).await.unwrap()
}

/// Runs a script of statements on a new or existing SQLite file.
pub async fn exec(path: &Path, script: &str) {
    let mut c = sqlite(path).await;
    c.execute(sqlx::raw_sql(script)).await.unwrap();
    c.close().await.unwrap();
}

pub fn url(path: &Path) -> Secret<String> {
    Secret::new(format!("sqlite://{}", path.display()))
}

pub async fn backup_all(repo: &mut Repository, db: &Path) -> BackupSummary {
    let opts = BackupOptions {
        source: url(db),
        selection: Selection::default(),
        tags: Default::default(),
    };
    backup(repo, &opts, &NoProgress).await.unwrap()
}

pub fn restore_opts(dest: &Path) -> RestoreOptions {
    RestoreOptions {
        snapshot: "latest".into(),
        dest: url(dest),
        selection: Selection::default(),
        rename: Default::default(),
        mode: Mode::Create,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: None,
        filter: Default::default(),
        objects: Default::default(),
    }
}

pub async fn restore(
    repo: &Repository,
    opts: &RestoreOptions,
) -> engine::Result<Vec<RestoredTable>> {
    let plan = engine::restore::plan(repo, opts).await?;
    engine::restore::execute(repo, &plan, &NoProgress).await
}

/// The independent dump of `tables` (all when empty).
pub fn dump(db: &Path, tables: &[&str]) -> serde_json::Value {
    let script: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "it", "dump_sqlite.py"]
        .iter()
        .collect();
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(db)
        .args(tables)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Rows of one table from a dump, for renamed-table comparisons.
pub fn rows(dump: &serde_json::Value, table: &str) -> serde_json::Value {
    dump[table]["rows"].clone()
}

/// Fails with the first lines where two dumps differ (whole dumps are too long to
/// read in a failure).
pub fn same_text(restored: &str, source: &str) {
    if restored == source {
        return;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (restored.lines().collect(), source.lines().collect());
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let from = first.saturating_sub(3);
    panic!(
        "dumps differ at line {}:\nrestored:\n{}\nsource:\n{}",
        first + 1,
        a[from..(first + 8).min(a.len())].join("\n"),
        b[from..(first + 8).min(b.len())].join("\n")
    );
}

/// Prune options that keep the last `n` snapshots of every source, nothing else.
pub fn keep_last(n: u32) -> engine::prune::PruneOptions {
    engine::prune::PruneOptions {
        rules: engine::retention::KeepRules {
            last: n,
            ..Default::default()
        },
        tz: chrono_tz::UTC,
        only_tags: Default::default(),
        dry_run: false,
    }
}

/// Verifies every snapshot of the repository, reading all its data, and fails on any
/// problem found.
pub async fn verify_ok(location: &str) {
    verify_data(&open_repo(location).await).await;
}

/// [`verify_ok`] on an open repository.
pub async fn verify_data(repo: &Repository) {
    let report = engine::verify::verify(
        repo,
        &engine::verify::VerifyOptions {
            snapshot: None,
            read_data: true,
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(report.ok(), "verify: {:?}", report.problems);
}

/// Runs SQL with the test server's `psql` and returns its unaligned output, trimmed.
pub fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new(testkit::pg_bin_dir().unwrap().join("psql"))
        .args([url, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every table's rows, by `pg_dump --data-only`, with the rows of each table sorted
/// (their physical order is not data) and comments and blank lines left out.
pub fn pg_rows(url: &str) -> String {
    let bin = testkit::pg_bin_dir().unwrap().join("pg_dump");
    let out = std::process::Command::new(bin)
        .args(["--data-only", "--no-owner", url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut out = Vec::new();
    let mut block: Option<Vec<&str>> = None;
    for l in text.lines() {
        // \restrict lines carry a random token per run.
        if l.starts_with("--")
            || l.starts_with("\\restrict")
            || l.starts_with("\\unrestrict")
            || l.is_empty()
        {
            continue;
        }
        match block.as_mut() {
            Some(rows) if l == "\\." => {
                rows.sort_unstable();
                out.append(rows);
                out.push(l);
                block = None;
            }
            Some(rows) => rows.push(l),
            None => {
                out.push(l);
                if l.starts_with("COPY ") {
                    block = Some(Vec::new());
                }
            }
        }
    }
    out.join("\n")
}
