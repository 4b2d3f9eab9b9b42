//! Upgrades: today's server started on a history database made at the previous schema
//! (the committed fixture in `tests/fixtures/history-0017/`, one per history engine)
//! migrates it and everything in it is there and works; a history database or a
//! repository from a newer tablesafe is refused with a message that says so.
//!
//! The fixture's history records absolute paths (its sources' SQLite files and its
//! targets' repositories), so the files are put back where they were made, under
//! [`ROOT`], with a lock file keeping two test runs on one machine apart.

use crate::harness::{
    ADMIN_PASSWORD, Api, Options, Server, USER_PASSWORD, add_policy, add_user, audit_verify,
    client, cookie, login, page_html, session_cookie, sqlite,
};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The schema the fixture was made at: 17, three before the newest migration (0019 only
/// adds indexes and a snapshot count its triggers keep, which the upgrade of this
/// fixture checks: see the fixture's README; 0020 the server key's fingerprint, which
/// the first start records once the fixture's key opened one of its secrets).
const FIXTURE_SCHEMA: i64 = 17;
/// Today's schema: the newest migration.
const SCHEMA: i64 = 20;
/// Where the fixture was made, and where its files go back for a test.
const ROOT: &str = "/tmp/tablesafe-upgrade-fixture";
/// The server key the fixture's secrets and audit chain were sealed with. Test-only:
/// committed on purpose, never used for anything but these fixtures.
const KEY_FILE: &str = "TEST-ONLY-server.key";
const OFFSITE_PASSWORD: &str = "offsite repository password";

#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        }
    }
    fn root(self) -> PathBuf {
        Path::new(ROOT).join(self.name())
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/history-00{FIXTURE_SCHEMA}"))
}

/// Holds [`ROOT`] for one test (blocking until no other test or run holds it).
fn lock_root() -> std::fs::File {
    std::fs::create_dir_all(ROOT).unwrap();
    let f = std::fs::File::create(Path::new(ROOT).join(".lock")).unwrap();
    f.lock().unwrap();
    f
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn psql(url: &str) -> Command {
    let mut cmd = Command::new(testkit::pg_bin_dir().unwrap().join("psql"));
    cmd.args([url, "-v", "ON_ERROR_STOP=1", "-q", "-At"]);
    cmd
}

/// The first column of the first row of `sql` on a SQLite file.
fn sqlite_query(db: &Path, sql: &str) -> String {
    run(Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchone()[0])",
        ])
        .arg(db)
        .arg(sql))
    .trim()
    .to_string()
}

/// "The chain is intact: N entries." → N.
fn intact_entries(report: &str) -> i64 {
    let marker = "The chain is intact: ";
    let start = report
        .find(marker)
        .unwrap_or_else(|| panic!("chain not intact: {report}"))
        + marker.len();
    report[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

async fn list(api: &Api<'_>, who: &str, endpoint: &str) -> Vec<Value> {
    let r = api.form(Some(who), endpoint, &[]).await;
    assert!(r.ok(), "{endpoint}: {r:?}");
    r.json().as_array().cloned().unwrap_or_default()
}

async fn snapshots(api: &Api<'_>, who: &str) -> Vec<Value> {
    let r = api
        .json(
            Some(who),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    r.json().as_array().cloned().unwrap()
}

async fn requests(api: &Api<'_>, who: &str) -> Vec<Value> {
    let r = api
        .form(
            Some(who),
            "requests/list",
            &[("state", String::new()), ("mine", "false".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    r.json().as_array().cloned().unwrap()
}

async fn request(api: &Api<'_>, who: &str, id: i64) -> Value {
    let r = api
        .form(Some(who), "requests/get", &[("id", id.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    r.json()
}

async fn approve(api: &Api<'_>, who: &str, id: i64) -> crate::harness::Reply {
    let version = request(api, who, id).await["request"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    api.form(
        Some(who),
        "requests/approve",
        &[("id", id.to_string()), ("version", version)],
    )
    .await
}

async fn deliveries(api: &Api<'_>, who: &str) -> Vec<Value> {
    let r = api
        .form(
            Some(who),
            "notify/deliveries",
            &[("status", String::new()), ("channel", "0".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    r.json().as_array().cloned().unwrap()
}

/// (title, status) of every job, oldest first: what the history shows of its jobs.
fn job_lines(jobs: &[Value]) -> Vec<(i64, String, String, String)> {
    let mut v: Vec<_> = jobs
        .iter()
        .map(|j| {
            (
                j["id"].as_i64().unwrap(),
                j["kind"].as_str().unwrap_or_default().to_string(),
                j["title"].as_str().unwrap().to_string(),
                j["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn bearer(server: &Server, token: &str, endpoint: &str) -> u16 {
    client()
        .post(server.url(&format!("/api/{endpoint}")))
        .header("Authorization", format!("Bearer {token}"))
        .form(&[("state", ""), ("mine", "true")])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

// ---------------------------------------------------------------------------------
// Making the fixture.
// ---------------------------------------------------------------------------------

/// Makes `tests/fixtures/history-0017/` (see its README): a console filled through its
/// own server functions on each history engine, taken back to schema 17, checked
/// against a database made by migrations 1..=17 alone.
#[tokio::test]
#[ignore = "makes the upgrade fixture; run by hand when a migration lands (tests/fixtures/history-*/README.md)"]
async fn make_history_fixture() {
    let _lock = lock_root();
    let out = fixture_dir();
    for engine in [Engine::Sqlite, Engine::Postgres] {
        let _ = std::fs::remove_dir_all(out.join(engine.name()));
    }
    std::fs::create_dir_all(&out).unwrap();
    let _ = std::fs::remove_dir_all(ROOT.to_string() + "/sqlite");
    let _ = std::fs::remove_dir_all(ROOT.to_string() + "/postgres");

    let mut facts = serde_json::Map::new();
    facts.insert("sqlite".into(), fill(Engine::Sqlite, None, None).await);
    let key = Engine::Sqlite.root().join("data/server.key");
    std::fs::copy(&key, out.join(KEY_FILE)).unwrap();

    // SQLite: the file, taken back to 17 and compacted.
    let root = Engine::Sqlite.root();
    let history = root.join("data/history.db");
    sqlite(
        &history,
        "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode = DELETE;",
    );
    let paused = sqlite_query(&history, PAUSED);
    assert_eq!(
        paused, "0",
        "a paused source or target cannot be at schema 17"
    );
    sqlite(&history, &format!("{}; VACUUM;", revert_sql()));
    check_sqlite_schema(&history);
    store(Engine::Sqlite, &out);
    std::fs::rename(
        out.join("sqlite/data/history.db"),
        out.join("sqlite/history.sqlite"),
    )
    .unwrap();

    // PostgreSQL: the same on a real server, dumped as SQL.
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    facts.insert(
        "postgres".into(),
        fill(Engine::Postgres, Some(&url), Some(&key)).await,
    );
    let paused = run(psql(&url).args(["-c", PAUSED]));
    assert_eq!(
        paused.trim(),
        "0",
        "a paused source or target cannot be at schema 17"
    );
    run(psql(&url).args(["-c", &revert_sql()]));
    let fresh = pg.create_database("fresh").unwrap();
    for file in migrations(Engine::Postgres) {
        run(psql(&fresh).arg("-1").arg("-f").arg(file));
    }
    let schema = |url: &str| {
        run(
            Command::new(testkit::pg_bin_dir().unwrap().join("pg_dump")).args([
                url,
                "--schema-only",
                "--no-owner",
                "--no-privileges",
                "-T",
                "_sqlx_migrations",
                "-T",
                "_sqlx_migrations_*",
            ]),
        )
        .lines()
        // pg_dump's \restrict key is random per dump.
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let (a, b) = (schema(&url), schema(&fresh));
    let differ: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(5).collect();
    assert!(
        a.len() == b.len() && differ.is_empty(),
        "the fixture's schema is not the one migrations 1..={FIXTURE_SCHEMA} make: {differ:?}"
    );
    store(Engine::Postgres, &out);
    let dump = run(
        Command::new(testkit::pg_bin_dir().unwrap().join("pg_dump")).args([
            &url,
            "--inserts",
            "--no-owner",
            "--no-privileges",
            "--no-comments",
        ]),
    );
    // `pg_dump` of a newer PostgreSQL writes settings an older one refuses; keep what
    // every supported version reads.
    let dump: String = dump
        .lines()
        .filter(|l| {
            !l.starts_with("SET transaction_timeout")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(out.join("postgres/history.sql"), dump).unwrap();
    assert!(
        std::fs::read(out.join(KEY_FILE)).unwrap()
            == std::fs::read(Engine::Postgres.root().join("data/server.key")).unwrap(),
        "both fixtures are sealed with one key"
    );

    std::fs::write(
        out.join("fixture.json"),
        serde_json::to_string_pretty(&Value::Object(facts)).unwrap() + "\n",
    )
    .unwrap();
}

/// The migration files of 1..=FIXTURE_SCHEMA, in order.
fn migrations(engine: Engine) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../migrations")
        .join(engine.name());
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n: i64 = p.file_name().unwrap().to_str().unwrap()[..4]
                .parse()
                .unwrap();
            n <= FIXTURE_SCHEMA
        })
        .collect();
    files.sort();
    files
}

/// Rows using what migration 18 added (a paused source or target): schema 17 cannot
/// hold them, so the fixture must have none.
const PAUSED: &str = "SELECT (SELECT count(*) FROM sources WHERE paused_at IS NOT NULL)
    + (SELECT count(*) FROM targets WHERE paused_at IS NOT NULL)";

/// Undoes migration 18 (two nullable columns, nothing paused in the fixture) and its
/// record: the database is then what schema 17 plus the same rows would be. When the
/// newest migration cannot be undone this exactly, see the README.
fn revert_sql() -> String {
    format!(
        "ALTER TABLE sources DROP COLUMN paused_at;
         ALTER TABLE targets DROP COLUMN paused_at;
         DELETE FROM _sqlx_migrations WHERE version > {FIXTURE_SCHEMA}"
    )
}

/// The fixture's schema (tables, columns, indexes, triggers) against a database made
/// by executing migrations 1..=17 alone.
fn check_sqlite_schema(history: &Path) {
    let fresh = history.with_file_name("fresh.db");
    let _ = std::fs::remove_file(&fresh);
    for file in migrations(Engine::Sqlite) {
        sqlite(&fresh, &std::fs::read_to_string(file).unwrap());
    }
    let schema = |db: &Path| {
        run(Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys,re
c=sqlite3.connect(sys.argv[1])
for t,n,s in c.execute(\"SELECT type,name,sql FROM sqlite_master WHERE name NOT LIKE '_sqlx%' AND name NOT LIKE 'sqlite_%' ORDER BY type,name\"):
    print(t,n,re.sub(r'\\s+',' ',s or '').replace('( ','(').replace(' )',')'))
    if t=='table':
        for col in c.execute('PRAGMA table_info(\"%s\")'%n): print('  ',col)",
            ])
            .arg(db))
    };
    let (a, b) = (schema(history), schema(&fresh));
    std::fs::remove_file(&fresh).unwrap();
    assert_eq!(
        a, b,
        "the fixture's schema is not the one migrations 1..={FIXTURE_SCHEMA} make"
    );
    let versions = sqlite_query(
        history,
        "SELECT max(version) || ' ' || count(*) FROM _sqlx_migrations WHERE success",
    );
    assert_eq!(versions, format!("{FIXTURE_SCHEMA} {FIXTURE_SCHEMA}"));
}

/// Copies what the fixture needs from [`ROOT`] into the fixture folder.
fn store(engine: Engine, out: &Path) {
    let root = engine.root();
    let dest = out.join(engine.name());
    for dir in ["repo", "repo-offsite", "repo-ledger"] {
        copy_tree(&root.join(dir), &dest.join(dir));
        // Locks of a stopped server are stale by definition; a repository at rest has none.
        let _ = std::fs::remove_dir_all(dest.join(dir).join("locks"));
    }
    for e in std::fs::read_dir(&root).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        // The sources, with what a capture keeps beside one (its WAL).
        if name.starts_with("shop.db") || name.starts_with("ledger.db") {
            std::fs::copy(root.join(&name), dest.join(&name)).unwrap();
        }
    }
    std::fs::create_dir_all(dest.join("data")).unwrap();
    for e in std::fs::read_dir(root.join("data")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        match name.as_str() {
            "server.key" | "history.db-wal" | "history.db-shm" | "fresh.db" => {}
            _ => {
                std::fs::copy(root.join("data").join(&name), dest.join("data").join(&name))
                    .unwrap();
            }
        }
    }
}

/// Fills a console through its server functions; what the test should find, as JSON.
async fn fill(engine: Engine, database_url: Option<&str>, key: Option<&Path>) -> Value {
    let root = engine.root();
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("data")).unwrap();
    if let Some(key) = key {
        std::fs::copy(key, root.join("data/server.key")).unwrap();
    }
    let shop = root.join("shop.db");
    sqlite(
        &shop,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers, total INTEGER);
         INSERT INTO orders VALUES (1, 1, 120), (2, 2, 80), (3, 1, 45);",
    );
    let server = Server::start(Options {
        data_dir: &root.join("data"),
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;

    // People: every role, a disabled account and a removed one.
    let adam = add_user(&api, &admin, "adam", "admin").await;
    let olga = add_user(&api, &admin, "olga", "operator").await;
    let rita = add_user(&api, &admin, "rita", "requester").await;
    add_user(&api, &admin, "audrey", "auditor").await;
    let dora = add_user(&api, &admin, "dora", "operator").await;
    let remy = add_user(&api, &admin, "remy", "requester").await;
    let r = api
        .form(
            Some(&admin),
            "users/set_disabled",
            &[("id", dora.to_string()), ("disabled", "true".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let r = api
        .form(Some(&admin), "users/remove", &[("id", remy.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    let olga_c = cookie(&server, "olga", USER_PASSWORD).await;
    let rita_c = cookie(&server, "rita", USER_PASSWORD).await;
    let adam_c = cookie(&server, "adam", USER_PASSWORD).await;

    // A policy with a schedule, a copy target, retention, a trigger and a late alert.
    let (source, _target, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &shop,
        &root.join("repo"),
        "daily at 02:00",
        "Europe/Berlin",
    )
    .await;
    assert!(policy.ok(), "{policy:?}");
    let policy = policy.json().as_i64().unwrap();
    let offsite = api
        .form(
            Some(&admin),
            "targets/add",
            &[
                ("name", "offsite".into()),
                ("location", root.join("repo-offsite").display().to_string()),
                ("password", OFFSITE_PASSWORD.into()),
            ],
        )
        .await;
    let offsite = offsite
        .json()
        .as_i64()
        .unwrap_or_else(|| panic!("{offsite:?}"));
    let r = api
        .json(
            Some(&admin),
            "policies/copies",
            json!({"id": policy, "targets": [offsite]}),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let mut retention = vec![("id", policy.to_string())];
    for (k, v) in [
        ("last", "3"),
        ("hourly", "0"),
        ("daily", "7"),
        ("weekly", "4"),
        ("monthly", "0"),
        ("yearly", "0"),
        ("floor", "1"),
    ] {
        retention.push((k, v.into()));
    }
    let r = api
        .form(Some(&admin), "policies/retention_save", &retention)
        .await;
    assert!(r.ok(), "{r:?}");
    let r = api
        .form(
            Some(&admin),
            "policies/late_alert",
            &[("id", policy.to_string()), ("minutes", "1500".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let trigger = api
        .form(
            Some(&admin),
            "policies/trigger_create",
            &[("id", policy.to_string())],
        )
        .await;
    let trigger = trigger.json().as_str().unwrap().to_string();

    // Tokens of two people.
    let mut tokens = serde_json::Map::new();
    for (who, name, role) in [(&olga_c, "ci", "operator"), (&rita_c, "reports", "")] {
        let r = api
            .form(
                Some(who),
                "tokens/create",
                &[
                    ("name", name.into()),
                    ("role", role.into()),
                    ("days", "366".into()),
                ],
            )
            .await;
        tokens.insert(
            name.into(),
            r.json().as_str().unwrap_or_else(|| panic!("{r:?}")).into(),
        );
    }

    // A notification channel (its deliveries fail: nothing listens on port 9).
    let r = api
        .json(
            Some(&admin),
            "notify/save",
            json!({"input": {"id": null, "name": "ops-hook", "kind": "webhook",
                "url": "http://127.0.0.1:9/hook", "secret": "a signing secret of some length",
                "events": ["backup.failed", "restore.requested", "restore.finished"], "enabled": true}}),
        )
        .await;
    assert!(r.ok(), "{r:?}");

    // Backups (each copied to offsite), a verify, a prune.
    api.run_policy(&admin, policy).await;
    sqlite(&shop, "INSERT INTO customers VALUES (3, 'Cid');");
    api.run_policy(&olga_c, policy).await;
    let newest = crate::harness::newest_snapshot(&api, &admin).await;
    let job = api
        .form(
            Some(&admin),
            "snapshots/verify",
            &[("id", newest.to_string())],
        )
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "succeeded");
    let job = api
        .form(
            Some(&admin),
            "policies/prune",
            &[("id", policy.to_string())],
        )
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "succeeded");

    // Drills: one that fails its assertion, one that passes.
    for (assertion, outcome) in [
        ("SELECT count(*) = 99 FROM customers", "failed"),
        ("SELECT count(*) = 3 FROM customers", "succeeded"),
    ] {
        let r = api
            .form(
                Some(&admin),
                "drills/save",
                &[
                    ("policy_id", policy.to_string()),
                    ("schedule", "0 5 * * 0".into()),
                    ("timezone", "UTC".into()),
                    ("pick", "latest".into()),
                    ("scratch_source_id", String::new()),
                    ("assertions", assertion.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        let job = api
            .form(
                Some(&admin),
                "drills/run",
                &[("policy_id", policy.to_string())],
            )
            .await;
        let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
        assert_eq!(api.wait_job(&admin, job).await[0]["status"], outcome);
    }

    // A continuous capture on a second policy (a round a second, so that its next round
    // is due whenever the fixture is used), with its state.
    let ledger = root.join("ledger.db");
    sqlite(
        &ledger,
        "CREATE TABLE entries (id INTEGER PRIMARY KEY, amount INTEGER NOT NULL);
         INSERT INTO entries VALUES (1, 10), (2, -4);",
    );
    let (_, _, continuous) = add_policy(
        &api,
        &admin,
        "ledger",
        &ledger,
        &root.join("repo-ledger"),
        "",
        "UTC",
    )
    .await;
    let continuous = continuous.json().as_i64().unwrap();
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", continuous.to_string()), ("secs", "1".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let busy = list(&api, &admin, "jobs/list")
            .await
            .iter()
            .any(|j| j["status"] == "queued" || j["status"] == "running");
        let captured = list(&api, &admin, "policies/list")
            .await
            .iter()
            .any(|p| p["id"] == continuous && !p["restorable_to"].is_null());
        if captured && !busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the capture never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // Restore requests: two approvals needed, from approvers olga and adam.
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "2".into()),
                ("request_ttl_minutes", "4320".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    for (user, endpoint, on) in [
        (olga, "users/approver", ("on", "true")),
        (adam, "users/approver", ("on", "true")),
        (rita, "users/grant", ("granted", "true")),
    ] {
        let r = api
            .form(
                Some(&admin),
                endpoint,
                &[
                    ("user_id", user.to_string()),
                    ("source_id", source.to_string()),
                    (on.0, on.1.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{endpoint}: {r:?}");
    }
    let file = |table: &str, into: &str, reason: &str| {
        let req = json!({"snapshot": newest, "dest_source_id": source, "tables": [table],
            "columns": {}, "rename": {table: into}, "mode": "create", "confirm": ""});
        let (api, rita_c, reason) = (&api, rita_c.clone(), reason.to_string());
        async move {
            let r = api
                .json(
                    Some(&rita_c),
                    "requests/file",
                    json!({"req": req, "reason": reason}),
                )
                .await;
            r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"))
        }
    };
    let done = file("customers", "customers_back", "ticket 7: compare customers").await;
    for who in [&olga_c, &adam_c] {
        let r = approve(&api, who, done).await;
        assert!(r.ok(), "{r:?}");
    }
    let rejected = file("orders", "orders_back", "ticket 8").await;
    let r = api
        .form(
            Some(&olga_c),
            "requests/reject",
            &[
                ("id", rejected.to_string()),
                ("reason", "use the reporting replica".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let waiting = file("orders", "orders_copy", "ticket 9: audit of orders").await;
    let r = approve(&api, &olga_c, waiting).await;
    assert!(r.ok(), "{r:?}");
    // The approved request's restore, if approval starts it, finishes first.
    let job = request(&api, &admin, done).await["request"]["job_id"].as_i64();
    if let Some(job) = job {
        api.wait_job(&admin, job).await;
    }

    // What the upgraded console must show.
    let jobs = list(&api, &admin, "jobs/list").await;
    let facts = json!({
        "users": list(&api, &admin, "users/list").await.iter()
            .map(|u| json!({"username": u["username"], "role": u["role"], "disabled": u["disabled"]}))
            .collect::<Vec<_>>(),
        "sources": list(&api, &admin, "sources/list").await.iter().map(|s| s["name"].clone()).collect::<Vec<_>>(),
        "targets": list(&api, &admin, "targets/list").await.iter().map(|t| t["name"].clone()).collect::<Vec<_>>(),
        "policies": list(&api, &admin, "policies/list").await,
        "jobs": job_lines(&jobs),
        "snapshots": snapshots(&api, &admin).await.iter().map(|s| s["id"].clone()).collect::<Vec<_>>(),
        "requests": requests(&api, &admin).await.iter()
            .map(|r| json!({"id": r["id"], "state": r["state"]})).collect::<Vec<_>>(),
        "waiting_request": waiting,
        "tokens": tokens,
        "trigger": trigger,
        "channels": list(&api, &admin, "notify/channels").await.iter().map(|c| c["name"].clone()).collect::<Vec<_>>(),
        "deliveries": deliveries(&api, &admin).await.len(),
        "drills": list(&api, &admin, "drills/list").await.len(),
        "source_db": shop.display().to_string(),
        "ledger_db": ledger.display().to_string(),
    });
    server.stop();
    let (holds, report) = audit_verify(&root.join("data"), database_url);
    assert!(holds, "{report}");
    let mut facts = facts;
    facts["audit_entries"] = intact_entries(&report).into();
    facts
}

// ---------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------

/// Puts the fixture of `engine` back where it was made; the history URL to start with.
fn place(engine: Engine, pg: Option<&testkit::Postgres>) -> Option<String> {
    let from = fixture_dir().join(engine.name());
    let root = engine.root();
    let _ = std::fs::remove_dir_all(&root);
    copy_tree(&from, &root);
    std::fs::copy(fixture_dir().join(KEY_FILE), root.join("data/server.key")).unwrap();
    // Time has passed since the fixture was made, and its waiting request and tokens
    // have expiry dates: the upgrade is tested as on the day it was made. This is the
    // only change made to the fixture's rows.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let fresh = format!(
        "UPDATE restore_requests SET expires_at = {} WHERE status = 'requested';
         UPDATE api_tokens SET expires_at = {};",
        now + 86_400_000,
        now + 30 * 86_400_000
    );
    match engine {
        Engine::Sqlite => {
            let history = root.join("data/history.db");
            std::fs::remove_file(root.join("history.sqlite")).ok();
            std::fs::copy(from.join("history.sqlite"), &history).unwrap();
            sqlite(&history, &fresh);
            None
        }
        Engine::Postgres => {
            std::fs::remove_file(root.join("history.sql")).ok();
            let pg = pg.unwrap();
            let url = pg.create_database("history").unwrap();
            run(psql(&url).arg("-f").arg(from.join("history.sql")));
            run(psql(&url).args(["-c", &fresh]));
            Some(url)
        }
    }
}

fn facts(engine: Engine) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join("fixture.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()[engine.name()].clone()
}

#[tokio::test]
async fn sqlite_history_from_the_previous_schema_is_migrated_and_everything_works() {
    upgrade(Engine::Sqlite).await;
}

#[tokio::test]
async fn postgres_history_from_the_previous_schema_is_migrated_and_everything_works() {
    upgrade(Engine::Postgres).await;
}

async fn upgrade(engine: Engine) {
    let _lock = lock_root();
    let pg = (engine == Engine::Postgres).then(|| testkit::Postgres::start().unwrap());
    let url = place(engine, pg.as_ref());
    let facts = facts(engine);
    let data = engine.root().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: url.as_deref(),
        admin_password: None,
    });
    let api = Api { server: &server };

    // Migrated: the dashboard names today's schema.
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let html = client()
        .get(server.url("/"))
        .header("Cookie", &admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page_html(&html).contains(&format!("(schema {SCHEMA})")),
        "{}",
        server.log()
    );

    let migrated =
        format!("migrated the history database from schema {FIXTURE_SCHEMA} to schema {SCHEMA}");
    assert!(server.log().contains(&migrated), "{}", server.log());

    // Everyone signs in with the password they had; the disabled and the removed
    // accounts stay locked out.
    for user in ["adam", "olga", "rita", "audrey"] {
        assert!(
            session_cookie(&login(&server, user, USER_PASSWORD).await).is_some(),
            "{user} cannot sign in after the upgrade"
        );
    }
    for user in ["dora", "remy"] {
        assert!(
            session_cookie(&login(&server, user, USER_PASSWORD).await).is_none(),
            "{user} signed in after the upgrade"
        );
    }
    let users: Vec<Value> = list(&api, &admin, "users/list")
        .await
        .iter()
        .map(|u| json!({"username": u["username"], "role": u["role"], "disabled": u["disabled"]}))
        .collect();
    assert_eq!(Value::from(users), facts["users"]);

    // The configuration, the history and the people's work are all there.
    let names =
        |v: Vec<Value>| Value::from(v.iter().map(|x| x["name"].clone()).collect::<Vec<_>>());
    assert_eq!(
        names(list(&api, &admin, "sources/list").await),
        facts["sources"]
    );
    assert_eq!(
        names(list(&api, &admin, "targets/list").await),
        facts["targets"]
    );
    let policies = list(&api, &admin, "policies/list").await;
    for (now, then) in policies.iter().zip(facts["policies"].as_array().unwrap()) {
        for field in [
            "name",
            "schedule",
            "timezone",
            "copy_targets",
            "retention",
            "enabled",
            "capture_secs",
        ] {
            assert_eq!(now[field], then[field], "policy {field}: {now}");
        }
    }
    assert_eq!(policies.len(), facts["policies"].as_array().unwrap().len());
    // (The capture may start new jobs and snapshots as soon as the server runs: the
    // history is compared up to the fixture's newest.)
    let last_job = facts["jobs"].as_array().unwrap().last().unwrap()[0]
        .as_i64()
        .unwrap();
    let jobs: Vec<_> = job_lines(&list(&api, &admin, "jobs/list").await)
        .into_iter()
        .filter(|j| j.0 <= last_job)
        .collect();
    assert_eq!(serde_json::to_value(&jobs).unwrap(), facts["jobs"]);
    let kinds: std::collections::BTreeSet<&str> = jobs.iter().map(|j| j.1.as_str()).collect();
    for kind in ["backup", "verify", "prune", "drill", "restore"] {
        assert!(kinds.contains(kind), "no {kind} job in {jobs:?}");
    }
    let last_snapshot = facts["snapshots"][0].as_i64().unwrap();
    let snaps: Vec<Value> = snapshots(&api, &admin)
        .await
        .into_iter()
        .filter(|s| s["id"].as_i64().unwrap() <= last_snapshot)
        .collect();
    assert_eq!(
        Value::from(snaps.iter().map(|s| s["id"].clone()).collect::<Vec<_>>()),
        facts["snapshots"]
    );
    // Each target's snapshot count (counted by migration 0019, then kept by its
    // triggers): at least the fixture's snapshots in it, at most all listed after.
    let targets = list(&api, &admin, "targets/list").await;
    let after = snapshots(&api, &admin).await;
    for t in &targets {
        let of = |v: &[Value]| v.iter().filter(|s| s["target"] == t["name"]).count() as i64;
        let count = t["snapshots"].as_i64().unwrap();
        assert!(
            of(&snaps) <= count && count <= of(&after),
            "target {}: {count} snapshots counted, {} in the fixture",
            t["name"],
            of(&snaps)
        );
    }
    // The audit search finds entries written at schema 17 (their (user, action,
    // outcome) were collected by migration 0019): adding the source is one.
    let found = api
        .form(
            Some(&admin),
            "audit/list",
            &[
                ("user", "adm".into()),
                ("action", "source.add".into()),
                ("outcome", "ok".into()),
            ],
        )
        .await;
    assert!(found.ok(), "{found:?}");
    let found = found.json().as_array().cloned().unwrap_or_default();
    assert!(
        !found.is_empty() && found.iter().all(|e| e["action"] == "source.add"),
        "{found:?}"
    );
    let reqs: Vec<Value> = requests(&api, &admin)
        .await
        .iter()
        .map(|r| json!({"id": r["id"], "state": r["state"]}))
        .collect();
    assert_eq!(Value::from(reqs), facts["requests"]);
    assert_eq!(
        names(list(&api, &admin, "notify/channels").await),
        facts["channels"]
    );
    assert!(deliveries(&api, &admin).await.len() as u64 >= facts["deliveries"].as_u64().unwrap());
    assert_eq!(
        list(&api, &admin, "drills/list").await.len() as u64,
        facts["drills"].as_u64().unwrap()
    );

    // Tokens and the policy's trigger still authenticate.
    assert_eq!(
        bearer(
            &server,
            facts["tokens"]["ci"].as_str().unwrap(),
            "sources/list"
        )
        .await,
        200
    );
    assert_eq!(
        bearer(
            &server,
            facts["tokens"]["reports"].as_str().unwrap(),
            "requests/list"
        )
        .await,
        200
    );

    // The sealed secrets open: a backup into the fixture's repository (its password
    // was sealed at schema 17) succeeds and is copied to the offsite target (another
    // sealed password).
    let by_name = |name: &str| {
        policies
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no policy {name}: {policies:?}"))
            .clone()
    };
    let policy = by_name("nightly")["id"].as_i64().unwrap();
    let shop = PathBuf::from(facts["source_db"].as_str().unwrap());
    sqlite(&shop, "INSERT INTO customers VALUES (4, 'Dee');");
    // The policy's schedule (daily at 02:00, Berlin) has passed slots since the fixture
    // was made: the scheduler queues one backup for them at the start (missed slots
    // run once). It ends before the trigger, which a queued backup would refuse.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while list(&api, &admin, "jobs/list")
        .await
        .iter()
        .any(|j| j["status"] == "queued" || j["status"] == "running")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the missed slot's backup never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let newest = snapshots(&api, &admin)
        .await
        .iter()
        .filter_map(|s| s["id"].as_i64())
        .max()
        .unwrap_or(last_snapshot);
    // Started by the policy's trigger URL: its token's hash came along too.
    let triggered = client()
        .post(server.url(&format!("/hooks/policies/{policy}/backup")))
        .header(
            "Authorization",
            format!("Bearer {}", facts["trigger"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(triggered.status(), 202);
    let job = triggered.json::<Value>().await.unwrap()["job"]
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let after: Vec<Value> = snapshots(&api, &admin)
        .await
        .into_iter()
        .filter(|s| s["id"].as_i64().unwrap() > newest && s["policy"] == "nightly")
        .collect();
    assert_eq!(after.len(), 2, "a backup and its copy: {after:?}");
    // The source's approval rule came along: its backups are not browsed directly.
    let browse = api
        .json(
            Some(&admin),
            "snapshots/browse",
            json!({"id": after[0]["id"], "table": "customers", "filters": [], "key": [], "offset": 0}),
        )
        .await;
    assert!(
        !browse.ok() && browse.body.contains("need 2 approval"),
        "{browse:?}"
    );

    // The waiting request, approved once at schema 17, takes its second approval and
    // restores from the snapshot taken at schema 17.
    let waiting = facts["waiting_request"].as_i64().unwrap();
    let adam = cookie(&server, "adam", USER_PASSWORD).await;
    let r = approve(&api, &adam, waiting).await;
    assert!(r.ok(), "{r:?}");
    let state = request(&api, &admin, waiting).await;
    assert_eq!(state["request"]["approvals"], 2, "{state}");
    let job = state["request"]["job_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("the approval started no restore: {state}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(
        sqlite_query(
            &shop,
            "SELECT count(*) || ' ' || sum(total) FROM orders_copy"
        ),
        "3 245"
    );

    // The continuous capture carries on: the restorable range moves past a change
    // made after the upgrade.
    let ledger = by_name("ledger");
    assert_eq!(ledger["capture_secs"], 1, "{ledger}");
    sqlite(
        Path::new(facts["ledger_db"].as_str().unwrap()),
        "INSERT INTO entries VALUES (3, 7);",
    );
    let changed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let now = list(&api, &admin, "policies/list").await;
        let p = now.iter().find(|p| p["name"] == "ledger").unwrap();
        if p["restorable_to"].as_i64().is_some_and(|t| t >= changed) {
            assert!(p["capture_error"].is_null(), "{p}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the capture did not resume: {p}\n{}",
            server.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    // The audit chain written at schema 17 holds, and the new entries continue it.
    server.stop();
    let (holds, report) = audit_verify(&data, url.as_deref());
    assert!(holds, "{report}");
    let entries = intact_entries(&report);
    assert!(
        entries > facts["audit_entries"].as_i64().unwrap(),
        "no new audit entries after the upgrade: {report}"
    );
}

/// A history database from before the server key's fingerprint was recorded, started
/// with a key that is not the one its secrets were sealed with, is refused with what to
/// do (and records no fingerprint); with its own key it starts and records it.
#[tokio::test]
async fn an_old_history_database_with_another_server_key_is_refused() {
    let _lock = lock_root();
    place(Engine::Sqlite, None);
    let data = Engine::Sqlite.root().join("data");
    let history = data.join("history.db");
    std::fs::write(data.join("server.key"), format!("{}\n", "cd".repeat(32))).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tablesafe"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env_remove("TABLESAFE_DATABASE_URL")
        .env_remove("TABLESAFE_KEY_FILE")
        .env("NO_COLOR", "1");
    let text = crate::harness::refused(cmd);
    assert!(
        text.contains("opens none of the secrets stored") && text.contains("--key-file"),
        "{text}"
    );
    assert_eq!(
        sqlite_query(&history, "SELECT count(*) FROM server_key"),
        "0"
    );

    std::fs::copy(fixture_dir().join(KEY_FILE), data.join("server.key")).unwrap();
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: None,
    });
    server.stop();
    assert_eq!(
        sqlite_query(&history, "SELECT count(*) FROM server_key"),
        "1"
    );
}

/// A history database a newer tablesafe has migrated (a migration this build does not
/// know) is refused at start, with the version and what to do, and left as it was.
#[tokio::test]
async fn a_history_database_from_a_newer_tablesafe_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    server.stop();
    let history = data.join("history.db");
    sqlite(
        &history,
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
         VALUES (9999, 'from the future', CURRENT_TIMESTAMP, TRUE, X'00', 1);",
    );
    let before = std::fs::read(&history).unwrap();
    let port = testkit::free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("TABLESAFE_DATABASE_URL")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("schema version 9999")
            && text.contains(&format!("up to {SCHEMA}"))
            && text.contains("upgrade tablesafe"),
        "{text}"
    );
    assert!(
        !text.contains("previously applied"),
        "sqlx's words leaked: {text}"
    );
    assert!(
        std::fs::read(&history).unwrap() == before,
        "the database was changed"
    );
}

/// Every command and the console refuse a repository a newer tablesafe wrote, name
/// both versions, and change nothing in it.
#[tokio::test]
async fn a_repository_from_a_newer_tablesafe_is_refused_everywhere() {
    use crate::cli::{PW, ok, tablesafe};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
    );
    let repo = dir.path().join("repo");
    let other = dir.path().join("other");
    let (repo_s, other_s, db_url) = (
        repo.display().to_string(),
        other.display().to_string(),
        format!("sqlite://{}", db.display()),
    );
    ok(&tablesafe(&["init", "--repo", &repo_s]));
    ok(&tablesafe(&[
        "backup", "--source", &db_url, "--repo", &repo_s,
    ]));
    ok(&tablesafe(&["init", "--repo", &other_s]));
    let newer = |repo: &Path| {
        let path = repo.join("config");
        let mut config: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(config["format"], 2);
        config["format"] = 3.into();
        config["layout"] = "sharded".into();
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
    };
    newer(&repo);
    let pw_file = dir.path().join("pw");
    std::fs::write(&pw_file, PW).unwrap();
    let pw = pw_file.display().to_string();
    let files = |dir: &Path| {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.clone(), std::fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    };
    let before = files(&repo);
    let restored = format!("sqlite://{}", dir.path().join("back.db").display());
    let message =
        "was written by a newer tablesafe (format 3); this build reads format 2: upgrade tablesafe";
    let commands: Vec<Vec<&str>> = vec![
        vec!["backup", "--source", &db_url, "--repo", &repo_s],
        vec!["snapshots", "--repo", &repo_s],
        vec![
            "restore",
            "--repo",
            &repo_s,
            "--snapshot",
            "latest",
            "--dest",
            &restored,
        ],
        vec!["verify", "--repo", &repo_s, "--read-data"],
        vec!["prune", "--repo", &repo_s, "--keep-last", "1"],
        vec!["show", "--repo", &repo_s, "--snapshot", "latest"],
        vec!["drill", "--repo", &repo_s],
        vec![
            "repair",
            "--repo",
            &repo_s,
            "--from",
            &other_s,
            "--from-password-file",
            &pw,
        ],
        vec![
            "repair",
            "--repo",
            &other_s,
            "--from",
            &repo_s,
            "--from-password-file",
            &pw,
        ],
        vec![
            "copy",
            "--from",
            &repo_s,
            "--from-password-file",
            &pw,
            "--to",
            &other_s,
            "--to-password-file",
            &pw,
        ],
        vec![
            "copy",
            "--from",
            &other_s,
            "--from-password-file",
            &pw,
            "--to",
            &repo_s,
            "--to-password-file",
            &pw,
        ],
    ];
    for args in &commands {
        let out = tablesafe(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "{args:?} worked on a newer repository"
        );
        assert!(
            err.contains(message) && err.contains(&repo_s),
            "{args:?}: {err}"
        );
    }
    assert!(
        files(&repo) == before,
        "a refused command changed the repository"
    );
    assert!(!dir.path().join("back.db").exists());

    // The console: a policy's backup fails with the message in its job, and browsing
    // a snapshot made before says the same.
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let console_repo = dir.path().join("console-repo");
    let (_, _, policy) = add_policy(&api, &admin, "shop", &db, &console_repo, "", "UTC").await;
    let policy = policy.json().as_i64().unwrap();
    api.run_policy(&admin, policy).await;
    let snapshot = crate::harness::newest_snapshot(&api, &admin).await;
    newer(&console_repo);
    let before = files(&console_repo);
    let browse = api
        .json(
            Some(&admin),
            "snapshots/browse",
            json!({"id": snapshot, "table": "customers", "filters": [], "key": [], "offset": 0}),
        )
        .await;
    assert!(!browse.ok() && browse.body.contains(message), "{browse:?}");
    let job = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "failed", "{done}");
    assert!(done.to_string().contains(message), "{done}");
    assert!(
        files(&console_repo) == before,
        "the console changed the repository"
    );
}
