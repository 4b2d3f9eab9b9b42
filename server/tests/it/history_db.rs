//! The history database on PostgreSQL: migrated on start, shared by several servers.

use crate::harness::{ADMIN_PASSWORD, Options, Server, client, login, page_html, session_cookie};

#[tokio::test]
async fn postgres_history_database_is_migrated_and_serves_the_console() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: Some(&url),
        admin_password: Some(ADMIN_PASSWORD),
    });
    let cookie = session_cookie(&login(&server, "admin", ADMIN_PASSWORD).await).expect("login");
    let resp = client()
        .get(server.url("/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    let html = page_html(&resp.text().await.unwrap());
    assert!(
        html.contains("history database: PostgreSQL (schema 20)"),
        "dashboard names the history backend: {html}"
    );
    assert!(
        !dir.path().join("data/history.db").exists(),
        "no SQLite file when PostgreSQL is used"
    );

    // The schema is really in PostgreSQL.
    let out = std::process::Command::new("psql")
        .args([
            &url,
            "-At",
            "-c",
            "SELECT username || ':' || role FROM users",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "admin:admin");
}

#[tokio::test]
async fn two_servers_starting_together_on_one_postgres_create_one_admin() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("shared").unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Workers on one history database share one server key (made by whichever starts
    // first).
    let key = dir.path().join("server.key");
    let key_env = [("TABLESAFE_KEY_FILE", key.to_str().unwrap())];
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            Server::start_with_env(
                Options {
                    data_dir: &dir.path().join("a"),
                    database_url: Some(&url),
                    admin_password: None,
                },
                &key_env,
            )
        });
        let b = s.spawn(|| {
            Server::start_with_env(
                Options {
                    data_dir: &dir.path().join("b"),
                    database_url: Some(&url),
                    admin_password: None,
                },
                &key_env,
            )
        });
        (a.join().unwrap(), b.join().unwrap())
    });
    let passwords: Vec<String> = [a.log(), b.log()]
        .iter()
        .filter_map(|l| crate::harness::generated_password(l))
        .collect();
    assert_eq!(
        passwords.len(),
        1,
        "exactly one server creates admin:\n{}\n{}",
        a.log(),
        b.log()
    );
    // Both servers accept that password (they share the accounts).
    for server in [&a, &b] {
        assert!(session_cookie(&login(server, "admin", &passwords[0]).await).is_some());
    }
}

/// The history database on a PostgreSQL server that accepts only TLS, reached over
/// verified TLS; with a CA that did not sign its certificate the server refuses to
/// start and says why.
#[tokio::test]
async fn postgres_history_database_over_verified_tls() {
    let ca = testkit::tls::TestCa::new("right").unwrap();
    let wrong = testkit::tls::TestCa::new("wrong").unwrap();
    let pg = testkit::Postgres::start_tls(&ca).unwrap();
    pg.psql("postgres", "CREATE DATABASE history").unwrap();
    let url = |ca: &testkit::tls::TestCa| {
        format!(
            "postgres://postgres@localhost:{}/history?sslmode=verify-full&sslrootcert={}",
            pg.port(),
            testkit::tls::url_path(&ca.ca_cert())
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("refused"))
        .env("TABLESAFE_DATABASE_URL", url(&wrong))
        .env_remove("TABLESAFE_LISTEN")
        .env_remove("TABLESAFE_DATA_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("not signed by the CA"), "{err}");

    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: Some(&url(&ca)),
        admin_password: Some(ADMIN_PASSWORD),
    });
    let cookie = session_cookie(&login(&server, "admin", ADMIN_PASSWORD).await).expect("login");
    assert!(!cookie.is_empty());
    assert_ne!(
        pg.psql(
            "history",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'history' AND s.ssl"
        )
        .unwrap()
        .trim(),
        "0",
        "the console's connections are there, encrypted"
    );
    assert_eq!(
        pg.psql(
            "history",
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'history' AND a.client_addr IS NOT NULL AND NOT s.ssl"
        )
        .unwrap()
        .trim(),
        "0",
        "every connection to the history database is encrypted"
    );
}

/// `tablesafe serve` on `data_dir` and `database_url`, which must refuse to start: what
/// it said.
fn refused_serve(data_dir: &std::path::Path, database_url: &str) -> String {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("TABLESAFE_DATABASE_URL", database_url)
        .env("NO_COLOR", "1")
        .env_remove("TABLESAFE_LISTEN")
        .env_remove("TABLESAFE_DATA_DIR")
        .env_remove("TABLESAFE_KEY_FILE");
    crate::harness::refused(cmd)
}

/// A second worker on one PostgreSQL history database without the first's server key
/// refuses to start and says which key it needs (by fingerprint) and how to bring it,
/// instead of starting and then failing every job; without any key file it makes none.
/// With a copy of the first worker's key it starts, and the sessions one issues hold
/// on the other.
#[tokio::test]
async fn a_worker_with_another_server_key_refuses_to_start() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("keyed").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(Options {
        data_dir: &dir.path().join("first"),
        database_url: Some(&url),
        admin_password: Some(ADMIN_PASSWORD),
    });
    let first_key = dir.path().join("first").join("server.key");
    let recorded = pg
        .psql("keyed", "SELECT fingerprint FROM server_key")
        .unwrap()
        .trim()
        .to_string();
    assert_eq!(recorded.len(), 16, "{recorded}");
    assert!(
        !std::fs::read_to_string(&first_key)
            .unwrap()
            .contains(&recorded),
        "the fingerprint is not part of the key"
    );

    // No key file at all: refused, and no key is made.
    let second = dir.path().join("second");
    let err = refused_serve(&second, &url);
    assert!(err.contains(&recorded), "{err}");
    assert!(err.contains("--key-file"), "{err}");
    assert!(!second.join("server.key").exists(), "a new key was made");

    // Another key: refused, naming both fingerprints.
    std::fs::write(second.join("server.key"), format!("{}\n", "ab".repeat(32))).unwrap();
    let err = refused_serve(&second, &url);
    assert!(err.contains(&recorded), "{err}");
    assert!(
        err.contains("is not the key this history database"),
        "{err}"
    );
    assert_eq!(
        pg.psql("keyed", "SELECT fingerprint FROM server_key")
            .unwrap()
            .trim(),
        recorded,
        "the refused worker changed nothing"
    );

    // The first worker's key, copied: it starts, and a session from the first holds.
    std::fs::copy(&first_key, second.join("server.key")).unwrap();
    let second = Server::start(Options {
        data_dir: &second,
        database_url: Some(&url),
        admin_password: None,
    });
    let cookie = session_cookie(&login(&first, "admin", ADMIN_PASSWORD).await).expect("login");
    let page = client()
        .get(second.url("/jobs"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page_html(&page.text().await.unwrap()).contains("<h1>Jobs</h1>"));
    drop(second);

    // Someone who can write the history database deletes the record to start a worker
    // with a key of their own: still refused, since the audit log was made with the
    // first key (and nothing is recorded for the rogue key).
    let rogue = dir.path().join("rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    std::fs::write(rogue.join("server.key"), format!("{}\n", "cd".repeat(32))).unwrap();
    pg.psql("keyed", "DELETE FROM server_key").unwrap();
    let err = refused_serve(&rogue, &url);
    assert!(err.contains("opens none of the secrets"), "{err}");
    assert_eq!(
        pg.psql("keyed", "SELECT count(*) FROM server_key")
            .unwrap()
            .trim(),
        "0"
    );
    // A record that tablesafe never writes is named as an edit, with the way out.
    pg.psql(
        "keyed",
        "INSERT INTO server_key VALUES (1, 'not a fingerprint', 0)",
    )
    .unwrap();
    let err = refused_serve(&rogue, &url);
    assert!(err.contains("edited outside tablesafe"), "{err}");
    assert!(err.contains("delete that row"), "{err}");
    // Following it with the right key: the worker starts and records that key again.
    pg.psql("keyed", "DELETE FROM server_key").unwrap();
    let third = dir.path().join("third");
    std::fs::create_dir_all(&third).unwrap();
    std::fs::copy(&first_key, third.join("server.key")).unwrap();
    let _third = Server::start(Options {
        data_dir: &third,
        database_url: Some(&url),
        admin_password: None,
    });
    assert_eq!(
        pg.psql("keyed", "SELECT fingerprint FROM server_key")
            .unwrap()
            .trim(),
        recorded
    );
}

/// A PostgreSQL history database that goes away in the middle of a backup (a failover
/// or a crash: every connection cut, nothing answering) and comes back: `readyz` says
/// so while it lasts, and the job's end and its snapshot, which came during the outage,
/// are recorded once it is back — the job is not left `running`, and nothing is
/// recorded twice.
#[tokio::test]
async fn a_history_database_that_goes_away_mid_job_loses_nothing() {
    use crate::harness::{Api, add_policy, cookie, sqlite};
    use std::time::{Duration, Instant};
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("failover").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: Some(&url),
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let shop = dir.path().join("shop.db");
    sqlite(
        &shop,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT);
         INSERT INTO orders (item) VALUES ('tea'), ('cake');",
    );
    let (_, _, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &shop,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().expect("a policy");
    let ready = || async {
        client()
            .get(server.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(ready().await, 200);

    // The source is locked by its application, so the backup waits (SQLite's busy
    // timeout) while the history database goes away.
    let app = SourceLock::hold(&shop);
    let r = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await;
    let job = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api
            .form(
                Some(&admin),
                "jobs/get",
                &[("id", job.to_string()), ("after_log", "0".into())],
            )
            .await;
        if r.json()[0]["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "the job never ran: {r:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.stop().unwrap();
    // The application commits: the backup runs to its end while nothing answers.
    app.release();
    assert_eq!(
        ready().await,
        503,
        "not ready while the history database is gone"
    );
    // Each call to the gone database waits for a connection (10 s) before it fails:
    // the backup's progress, its heartbeat, then the first try at recording its end.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !server.log().contains("is retried until it does") {
        assert!(
            Instant::now() < deadline,
            "the job's end was not waited for:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    pg.start_again().unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(ready().await, 200);
    assert!(server.log().contains("answers again"), "{}", server.log());
    let count = |sql: &str| pg.psql("failover", sql).unwrap().trim().to_string();
    assert_eq!(
        count(&format!(
            "SELECT count(*) FROM snapshots WHERE job_id = {job}"
        )),
        "1"
    );
    assert_eq!(
        count("SELECT count(*) FROM jobs WHERE status = 'running'"),
        "0"
    );
    assert_eq!(
        count("SELECT count(*) FROM jobs"),
        "1",
        "no job was run twice"
    );
}

/// A worker killed (SIGKILL) in the middle of a backup: another worker on the same
/// PostgreSQL history fails the job with the reason within 90 s (it prints how long it
/// took), its console shows it, and the job retried there succeeds.
#[tokio::test]
async fn a_killed_workers_job_is_failed_by_another_and_retried_there() {
    use crate::harness::{Api, add_policy, cookie, sqlite};
    use std::time::{Duration, Instant};
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("takeover").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first = Server::start(Options {
        data_dir: &dir.path().join("first"),
        database_url: Some(&url),
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &first };
    let admin = cookie(&first, "admin", ADMIN_PASSWORD).await;
    let shop = dir.path().join("shop.db");
    sqlite(
        &shop,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT);
         INSERT INTO orders (item) VALUES ('tea'), ('cake');",
    );
    let (_, _, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &shop,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().expect("a policy");
    // The source is locked by its application: the backup waits, and is killed waiting.
    let app = SourceLock::hold(&shop);
    let r = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await;
    let job = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while job_status(&api, &admin, job).await["status"] != "running" {
        assert!(Instant::now() < deadline, "the job never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(first); // SIGKILL, mid-job
    let killed = Instant::now();
    app.release();

    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    std::fs::copy(
        dir.path().join("first").join("server.key"),
        second_dir.join("server.key"),
    )
    .unwrap();
    let second = Server::start(Options {
        data_dir: &second_dir,
        database_url: Some(&url),
        admin_password: None,
    });
    let api = Api { server: &second };
    let admin = cookie(&second, "admin", ADMIN_PASSWORD).await;
    let failed = loop {
        let j = job_status(&api, &admin, job).await;
        if j["status"] != "running" {
            break j;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(90),
            "the killed worker's job was not taken over within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    println!(
        "takeover: the killed worker's job was failed by another {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(failed["status"], "failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or_default()
            .contains("retry it"),
        "{failed}"
    );
    let r = api
        .form(Some(&admin), "jobs/retry", &[("id", job.to_string())])
        .await;
    let retried = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let done = api.wait_job(&admin, retried).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(
        pg.psql("takeover", "SELECT count(*) FROM snapshots")
            .unwrap()
            .trim(),
        "1",
        "one snapshot, from the retry"
    );
}

/// A job as `jobs/get` shows it.
async fn job_status(api: &crate::harness::Api<'_>, cookie: &str, job: i64) -> serde_json::Value {
    api.form(
        Some(cookie),
        "jobs/get",
        &[("id", job.to_string()), ("after_log", "0".into())],
    )
    .await
    .json()[0]
        .clone()
}

/// An application's exclusive lock on a SQLite source, held until released: a backup
/// of it waits (SQLite's busy timeout, 5 s) meanwhile.
struct SourceLock(std::process::Child);

impl SourceLock {
    fn hold(db: &std::path::Path) -> Self {
        use std::io::BufRead;
        let mut app = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], isolation_level=None); \
                 c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); \
                 sys.stdin.readline(); c.execute('COMMIT')",
            ])
            .arg(db)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(app.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        SourceLock(app)
    }

    /// The application commits.
    fn release(mut self) {
        use std::io::Write;
        self.0.stdin.take().unwrap().write_all(b"\n").unwrap();
        assert!(self.0.wait().unwrap().success());
    }
}
