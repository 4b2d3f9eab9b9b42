//! `tablesafe capture` and `restore --at` from the command line, against a real
//! PostgreSQL: a workload whose invariant (the counter equals the sum of the ledger)
//! holds at every committed instant runs while the capture process is killed with
//! SIGKILL again and again and restarted; restoring to instants noted along the way
//! gives exactly the rows committed then — nothing lost, nothing applied twice.

use crate::cli::{PW, ok, tablesafe};
use sqlx::{Connection, Executor, PgConnection, Row};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

fn start_capture(repo: &str, src: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args([
            "capture",
            "--repo",
            repo,
            "--source",
            src,
            "--name",
            "ledger",
            "--interval-secs",
            "1",
        ])
        .env("TABLESAFE_PASSWORD", PW)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn rows(c: &mut PgConnection) -> (Vec<(i64, i64)>, i64) {
    let ledger = sqlx::query("SELECT id, v FROM ledger ORDER BY id")
        .fetch_all(&mut *c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let total = sqlx::query_scalar("SELECT total FROM counter")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    (ledger, total)
}

#[tokio::test]
async fn capture_survives_sigkill_and_restore_at_gives_the_committed_rows() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("bank").unwrap();
    let mut c = PgConnection::connect(&src).await.unwrap();
    c.execute(sqlx::raw_sql(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, v bigint NOT NULL);
         CREATE TABLE counter (one int PRIMARY KEY, total bigint NOT NULL);
         INSERT INTO counter VALUES (1, 0);",
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo").to_str().unwrap().to_string();

    // Writes run from before the capture starts (and during its base snapshot).
    let (paused, stop, next) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(1)),
    );
    let writer = {
        let (src, paused, stop, next) = (src.clone(), paused.clone(), stop.clone(), next.clone());
        tokio::spawn(async move {
            let mut w = PgConnection::connect(&src).await.unwrap();
            while !stop.load(Ordering::Relaxed) {
                if paused.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                // Insert, sometimes move an old row, sometimes delete one; the counter
                // follows in the same transaction.
                let sql = match n % 5 {
                    3 => format!(
                        "BEGIN; UPDATE ledger SET v = v + 1 WHERE id = {0}; UPDATE counter SET total = total + (SELECT count(*) FROM ledger WHERE id = {0}); COMMIT;",
                        n / 2
                    ),
                    4 => format!(
                        "BEGIN; UPDATE counter SET total = total - COALESCE((SELECT v FROM ledger WHERE id = {0}), 0); DELETE FROM ledger WHERE id = {0}; COMMIT;",
                        n / 3
                    ),
                    _ => format!(
                        "BEGIN; INSERT INTO ledger VALUES ({n}, {n}); UPDATE counter SET total = total + {n}; COMMIT;"
                    ),
                };
                w.execute(sqlx::raw_sql(&sql)).await.unwrap();
            }
        })
    };

    let mut capture = start_capture(&repo, &src);
    let mut instants = Vec::new();
    for round in 0..8u64 {
        // Kill the capture at an uneven moment, mid-round or between rounds.
        tokio::time::sleep(Duration::from_millis(700 + (round * 379) % 900)).await;
        capture.kill().unwrap();
        capture.wait().unwrap();
        if round % 2 == 1 {
            paused.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(30)).await;
            let at: String = sqlx::query_scalar(
                "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            let state = rows(&mut c).await;
            assert_eq!(
                state.0.iter().map(|r| r.1).sum::<i64>(),
                state.1,
                "the invariant holds in the source"
            );
            instants.push((at, state));
            tokio::time::sleep(Duration::from_millis(20)).await;
            paused.store(false, Ordering::Relaxed);
        }
        capture = start_capture(&repo, &src);
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    capture.kill().unwrap();
    capture.wait().unwrap();
    // A round stores every commit up to a second before it ran.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    ok(&tablesafe(&[
        "capture", "--repo", &repo, "--source", &src, "--name", "ledger", "--once",
    ]));

    // The range is listed per snapshot.
    let list: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", &repo, "--json"]))).unwrap();
    let to = list[0]["restorable_to"]
        .as_str()
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        to > instants.last().unwrap().0.as_str(),
        "{to} vs {:?}",
        instants.last().unwrap().0
    );

    for (i, (at, expected)) in instants.iter().enumerate() {
        let dest = pg.create_database(&format!("back{i}")).unwrap();
        let out = ok(&tablesafe(&[
            "restore", "--repo", &repo, "--at", at, "--dest", &dest, "--json",
        ]));
        assert!(out.contains("ledger"), "{out}");
        let mut d = PgConnection::connect(&dest).await.unwrap();
        let got = rows(&mut d).await;
        assert_eq!(got.1, expected.1, "instant {i} ({at}): the counter");
        assert!(
            got.0 == expected.0,
            "instant {i} ({at}): the ledger differs ({} rows restored, {} then)",
            got.0.len(),
            expected.0.len()
        );
    }
    // An instant before any snapshot is refused in one line.
    let early = tablesafe(&[
        "restore",
        "--repo",
        &repo,
        "--at",
        "2001-01-01T00:00:00Z",
        "--dest",
        &src,
    ]);
    assert!(!early.status.success());
    assert!(
        String::from_utf8_lossy(&early.stderr).contains("no snapshot of"),
        "{early:?}"
    );
    ok(&tablesafe(&[
        "capture", "--repo", &repo, "--source", &src, "--name", "ledger", "--stop",
    ]));
}

/// The same from the console: a policy made continuous captures by itself (its base
/// snapshot is queued automatically), the policy shows how far it can be restored, the
/// wizard's server functions restore to an instant, and turning it off drops the slot.
#[tokio::test]
async fn a_continuous_policy_restores_to_an_instant_from_the_console() {
    use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy_for, cookie};
    use serde_json::json;
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("bank").unwrap();
    let dest = pg.create_database("restored").unwrap();
    let mut c = PgConnection::connect(&src).await.unwrap();
    c.execute(sqlx::raw_sql(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, v text NOT NULL); INSERT INTO ledger SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let (_, _, policy) =
        add_policy_for(&api, &admin, "bank", &src, &dir.path().join("repo"), "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", policy.to_string()), ("secs", "1".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let view = |list: serde_json::Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == policy)
            .unwrap()
            .clone()
    };

    // Changes while it runs; one instant noted with the workload paused.
    let mut n = 100;
    let mut write = async |c: &mut PgConnection, k: i64| {
        for _ in 0..k {
            n += 1;
            c.execute(sqlx::raw_sql(&format!(
                "BEGIN; INSERT INTO ledger VALUES ({n}, 'v{n}'); UPDATE ledger SET v = v || '+' WHERE id = {}; DELETE FROM ledger WHERE id = {}; COMMIT;",
                n / 2,
                n - 90
            )))
            .await
            .unwrap();
        }
    };
    // The base snapshot comes first (queued by the capture).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        write(&mut c, 5).await;
        let list = api
            .json(
                Some(&admin),
                "snapshots/list",
                json!({"policy_id": 0, "source_id": 0, "before": null}),
            )
            .await
            .json();
        if let Some(id) = list[0]["id"].as_i64() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no base snapshot");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    write(&mut c, 200).await;
    let at: i64 =
        sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let expected = sqlx::query("SELECT id, v FROM ledger ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_millis(30)).await;
    write(&mut c, 100).await;

    // The policy shows the range reaching past the instant (rounds every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let p = view(api.form(Some(&admin), "policies/list", &[]).await.json());
        assert!(p["capture_error"].is_null(), "{p}");
        if p["restorable_to"].as_i64().is_some_and(|t| t > at) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the range never reached the instant: {p}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let range = api
        .form(
            Some(&admin),
            "snapshots/range",
            &[("id", snapshot.to_string())],
        )
        .await
        .json();
    assert!(
        range[0].as_i64().unwrap() <= at && range[1].as_i64().unwrap() > at,
        "{range}"
    );

    // The wizard's calls, with a point in time, into another database.
    let dest_source = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "restored".into()), ("url", dest.clone())],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let req = json!({"snapshot": snapshot, "dest_source_id": dest_source, "tables": ["public.ledger"],
                     "columns": {}, "rename": {}, "mode": "create", "confirm": "", "at_ms": at});
    let preview = api
        .json(Some(&admin), "restore/preview", json!({"req": req}))
        .await;
    assert!(preview.ok(), "{preview:?}");
    let job = api
        .json(Some(&admin), "restore/start", json!({"req": req}))
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert!(
        done[0]["title"].as_str().unwrap().contains(" as of "),
        "{done}"
    );
    let mut d = PgConnection::connect(&dest).await.unwrap();
    let got = sqlx::query("SELECT id, v FROM ledger ORDER BY id")
        .fetch_all(&mut d)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect::<Vec<_>>();
    assert!(
        got == expected,
        "restored {} rows, {} were committed then",
        got.len(),
        expected.len()
    );

    // Off: the slot is dropped on the source at once.
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", policy.to_string())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let slots: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_replication_slots")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(slots, 0);
    assert_eq!(
        view(api.form(Some(&admin), "policies/list", &[]).await.json())["capture_secs"],
        serde_json::Value::Null
    );
}

async fn sqlite_rows(db: &std::path::Path) -> Vec<(i64, String)> {
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("SELECT id, v FROM ledger ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect()
}

async fn sqlite_exec(db: &std::path::Path, sql: &str) {
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(db)
        .create_if_missing(true);
    let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    c.execute(sqlx::raw_sql(sql)).await.unwrap();
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// SQLite from the command line: `capture --once` rounds, the range `snapshots` shows,
/// and `restore --at` an instant that a later round saw unchanged gives exactly the
/// rows of that instant; a mistaken DROP afterwards does not matter.
#[tokio::test]
async fn sqlite_capture_rounds_and_restore_at_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let repo = dir.path().join("repo").display().to_string();
    let src = format!("sqlite://{}", db.display());
    sqlite_exec(&db, "PRAGMA journal_mode=WAL; CREATE TABLE ledger (id INTEGER PRIMARY KEY, v TEXT NOT NULL); INSERT INTO ledger VALUES (1, 'a'), (2, 'b');").await;
    let once = || {
        ok(&tablesafe(&[
            "capture", "--repo", &repo, "--source", &src, "--name", "app", "--once", "--json",
        ]))
    };
    let first = once();
    assert!(
        first.contains("\"seq\":0") && first.contains("\"snapshot\":\""),
        "{first}"
    );
    sqlite_exec(
        &db,
        "UPDATE ledger SET v = 'b2' WHERE id = 2; INSERT INTO ledger VALUES (3, 'c');",
    )
    .await;
    let second = once();
    assert!(second.contains("\"seq\":1"), "{second}");
    let expected = sqlite_rows(&db).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at = unix_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // A long-running capture sees nothing changed: its first round of the process is a
    // snapshot, the next ones move the head past `at`.
    let out = tablesafe(&[
        "capture", "--repo", &repo, "--source", &src, "--name", "app", "--once",
    ]);
    ok(&out);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args([
            "capture",
            "--repo",
            &repo,
            "--source",
            &src,
            "--name",
            "app",
            "--interval-secs",
            "1",
        ])
        .env("TABLESAFE_PASSWORD", PW)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    sqlite_exec(&db, "DROP TABLE ledger;").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let term = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());

    let list: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", &repo, "--json"]))).unwrap();
    let restorable_to = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["restorable_to_ms"].as_i64())
        .max()
        .unwrap_or_else(|| panic!("no range: {list}"));
    assert!(restorable_to > at + 3000, "{list}");

    let out_db = dir.path().join("at.db");
    let restored = ok(&tablesafe(&[
        "restore",
        "--repo",
        &repo,
        "--dest",
        &format!("sqlite://{}", out_db.display()),
        "--at",
        &engine::capture::rfc3339(at),
    ]));
    assert!(restored.contains("the database as of"), "{restored}");
    assert_eq!(sqlite_rows(&out_db).await, expected);
}

/// SQLite from the console: a continuous policy's rounds run by themselves, the policy
/// shows how far it can be restored, and the wizard restores an instant exactly.
#[tokio::test]
async fn a_continuous_sqlite_policy_restores_to_an_instant_from_the_console() {
    use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy_for, cookie};
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    sqlite_exec(&db, "PRAGMA journal_mode=WAL; CREATE TABLE ledger (id INTEGER PRIMARY KEY, v TEXT NOT NULL); INSERT INTO ledger VALUES (1, 'a');").await;
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let src = format!("sqlite://{}", db.display());
    let (_, _, policy) =
        add_policy_for(&api, &admin, "shop", &src, &dir.path().join("repo"), "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", policy.to_string()), ("secs", "1".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let policy_view = || async {
        api.form(Some(&admin), "policies/list", &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == policy)
            .unwrap()
            .clone()
    };
    // The base snapshot is queued by the capture.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let snapshot = loop {
        let list = api
            .json(
                Some(&admin),
                "snapshots/list",
                json!({"policy_id": 0, "source_id": 0, "before": null}),
            )
            .await
            .json();
        if let Some(id) = list[0]["id"].as_i64() {
            break id;
        }
        assert!(std::time::Instant::now() < deadline, "no base snapshot");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    for i in 2..40 {
        sqlite_exec(&db, &format!("INSERT INTO ledger VALUES ({i}, 'v{i}'); UPDATE ledger SET v = v || '+' WHERE id = {};", i / 2)).await;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let expected = sqlite_rows(&db).await;
    let last_write = unix_ms();
    // A round snapshots the last writes; the instant comes after it, and later rounds
    // see nothing changed past the instant (so restoring to it is exact); then the
    // mistake.
    let reach = async |instant: i64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let p = policy_view().await;
            assert!(p["capture_error"].is_null(), "{p}");
            if p["restorable_to"].as_i64().is_some_and(|t| t > instant) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the range never reached {instant}: {p}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    reach(last_write).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let at = unix_ms();
    reach(at).await;
    sqlite_exec(&db, "DELETE FROM ledger WHERE id > 5;").await;
    let range = api
        .form(
            Some(&admin),
            "snapshots/range",
            &[("id", snapshot.to_string())],
        )
        .await
        .json();
    assert!(range[1].as_i64().unwrap() > at, "{range}");

    let out_db = dir.path().join("restored.db");
    // The console creates no database files: an empty file is an empty database.
    std::fs::write(&out_db, b"").unwrap();
    let dest_source = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "restored".into()),
                ("url", format!("sqlite://{}", out_db.display())),
            ],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let req = json!({"snapshot": snapshot, "dest_source_id": dest_source, "tables": ["ledger"],
                     "columns": {}, "rename": {}, "mode": "create", "confirm": "", "at_ms": at});
    let job = api
        .json(Some(&admin), "restore/start", json!({"req": req}))
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(sqlite_rows(&out_db).await, expected);
}

/// Two workers on one PostgreSQL history, one of them running a policy's continuous
/// capture: killed with SIGKILL, the other takes the capture over within two capture
/// intervals (it prints how long it took), and a restore to an instant after changes
/// made meanwhile gives exactly the rows committed then.
#[tokio::test]
async fn a_killed_workers_capture_is_taken_over_without_losing_a_change() {
    use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy_for, cookie};
    use serde_json::json;
    use std::time::Instant;
    const SECS: u64 = 3;
    let pg = testkit::Postgres::start().unwrap();
    let history = pg.create_database("history").unwrap();
    let src = pg.create_database("bank").unwrap();
    let dest = pg.create_database("restored").unwrap();
    let mut c = PgConnection::connect(&src).await.unwrap();
    c.execute(sqlx::raw_sql(
        "CREATE TABLE ledger (id bigint PRIMARY KEY, v text NOT NULL); INSERT INTO ledger SELECT g, 'v' || g FROM generate_series(1, 100) g;",
    ))
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let start = |name: &str, admin: Option<&str>| {
        Server::start(Options {
            data_dir: &dir.path().join(name),
            database_url: Some(&history),
            admin_password: admin,
        })
    };
    let mut workers = vec![Some(start("one", Some(ADMIN_PASSWORD)))];
    std::fs::create_dir_all(dir.path().join("two")).unwrap();
    std::fs::copy(
        dir.path().join("one/server.key"),
        dir.path().join("two/server.key"),
    )
    .unwrap();
    workers.push(Some(start("two", None)));
    let server = workers[0].as_ref().unwrap();
    let api = Api { server };
    let admin = cookie(server, "admin", ADMIN_PASSWORD).await;
    let (_, _, policy) =
        add_policy_for(&api, &admin, "bank", &src, &dir.path().join("repo"), "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", policy.to_string()), ("secs", SECS.to_string())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let mut n = 100;
    let mut write = async |c: &mut PgConnection, k: i64| {
        for _ in 0..k {
            n += 1;
            c.execute(sqlx::raw_sql(&format!(
                "BEGIN; INSERT INTO ledger VALUES ({n}, 'v{n}'); UPDATE ledger SET v = v || '+' WHERE id = {}; DELETE FROM ledger WHERE id = {}; COMMIT;",
                n / 2,
                n - 90
            )))
            .await
            .unwrap();
        }
    };
    let now_ms = async |c: &mut PgConnection| -> i64 {
        sqlx::query_scalar("SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint")
            .fetch_one(c)
            .await
            .unwrap()
    };
    let holder = || {
        pg.psql("history", "SELECT coalesce(worker, '') FROM captures")
            .unwrap()
    };
    // Changes, and the capture past them (the base snapshot comes first).
    write(&mut c, 50).await;
    let before = now_ms(&mut c).await;
    let restorable = async |api: &Api<'_>, admin: &str| {
        api.form(Some(admin), "policies/list", &[]).await.json()[0]["restorable_to"].as_i64()
    };
    // The base snapshot recorded too (its backup is a job of either worker: killed
    // with it, it would only run again a minute later).
    let snapshots = async |api: &Api<'_>, admin: &str| {
        api.json(
            Some(admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json()
        .as_array()
        .map_or(0, |a| a.len())
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while restorable(&api, &admin).await.is_none_or(|t| t <= before)
        || snapshots(&api, &admin).await == 0
    {
        assert!(
            Instant::now() < deadline,
            "the capture never passed the first changes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Kill whichever worker holds the capture.
    let held_by = holder();
    let killed = if held_by.contains(&dir.path().join("one").display().to_string()) {
        0
    } else {
        1
    };
    assert!(
        held_by.contains(
            &dir.path()
                .join(["one", "two"][killed])
                .display()
                .to_string()
        ),
        "{held_by}"
    );
    drop(workers[killed].take()); // SIGKILL
    let kill_time = Instant::now();
    let survivor = workers[1 - killed].as_ref().unwrap();
    let api = Api { server: survivor };
    let admin = cookie(survivor, "admin", ADMIN_PASSWORD).await;
    write(&mut c, 50).await;
    let at = now_ms(&mut c).await;
    let expected = sqlx::query("SELECT id, v FROM ledger ORDER BY id")
        .fetch_all(&mut c)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect::<Vec<_>>();
    tokio::time::sleep(Duration::from_millis(30)).await;
    write(&mut c, 20).await;
    let mut took = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if took.is_none() && holder() != held_by && !holder().is_empty() {
            took = Some(kill_time.elapsed());
        }
        if took.is_some() && restorable(&api, &admin).await.is_some_and(|t| t > at) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the capture was not taken over: {}",
            holder()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = took.unwrap();
    println!(
        "capture takeover: the other worker held the capture {:.1} s after the kill (interval {SECS} s)",
        took.as_secs_f64()
    );
    assert!(took <= Duration::from_secs(2 * SECS + 1), "took {took:?}");

    // Restored to the instant: exactly the rows committed then.
    let snapshot = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["id"].as_i64())
        .min()
        .unwrap();
    let dest_source = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "restored".into()), ("url", dest.clone())],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let req = json!({"snapshot": snapshot, "dest_source_id": dest_source, "tables": ["public.ledger"],
                     "columns": {}, "rename": {}, "mode": "create", "confirm": "", "at_ms": at});
    let job = api
        .json(Some(&admin), "restore/start", json!({"req": req}))
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let mut d = PgConnection::connect(&dest).await.unwrap();
    let got = sqlx::query("SELECT id, v FROM ledger ORDER BY id")
        .fetch_all(&mut d)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>(0), r.get::<String, _>(1)))
        .collect::<Vec<_>>();
    assert!(
        got == expected,
        "restored {} rows, {} were committed then",
        got.len(),
        expected.len()
    );
}
