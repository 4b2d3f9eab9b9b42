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
        html.contains("history database: PostgreSQL (schema 19)"),
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
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| {
            Server::start(Options {
                data_dir: &dir.path().join("a"),
                database_url: Some(&url),
                admin_password: None,
            })
        });
        let b = s.spawn(|| {
            Server::start(Options {
                data_dir: &dir.path().join("b"),
                database_url: Some(&url),
                admin_password: None,
            })
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
