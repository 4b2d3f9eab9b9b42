//! A SQLite source not in WAL mode makes the application's writers wait while a backup
//! copies the file: *Test connection* says so and how to switch (issue 28).

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, cookie, sqlite};

#[tokio::test]
async fn test_connection_says_when_a_sqlite_source_is_not_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let added = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "app".into()),
                ("url", format!("sqlite://{}", db.display())),
            ],
        )
        .await;
    assert!(added.ok(), "{added:?}");
    let id = added.json().as_i64().unwrap().to_string();
    let fields = [("id", id)];
    let test = || api.form(Some(&admin), "sources/test", &fields);

    let tested = test().await;
    assert!(tested.ok(), "{tested:?}");
    assert!(tested.body.contains("Connected: 1 tables"), "{tested:?}");
    assert!(
        tested
            .body
            .contains("Not in WAL mode (journal_mode=delete)")
            && tested.body.contains("writes wait"),
        "{tested:?}"
    );
    assert!(
        tested.body.contains(&format!(
            "sqlite3 {} 'PRAGMA journal_mode=WAL'",
            db.display()
        )),
        "the note says how to switch: {tested:?}"
    );

    sqlite(&db, "PRAGMA journal_mode=WAL");
    let tested = test().await;
    assert!(tested.ok(), "{tested:?}");
    assert!(tested.body.contains("Connected: 1 tables"), "{tested:?}");
    assert!(
        !tested.body.contains("WAL"),
        "no note in WAL mode: {tested:?}"
    );
}
