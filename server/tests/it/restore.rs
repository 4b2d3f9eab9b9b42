//! Restoring over the original: the wizard's safety backup keeps what was replaced, and
//! restoring that safety snapshot undoes the restore.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::json;

fn rows(db: &std::path::Path) -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT * FROM customers ORDER BY id').fetchall())"])
        .arg(db)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

async fn snapshots(api: &Api<'_>, admin: &str) -> serde_json::Value {
    api.json(
        Some(admin),
        "snapshots/list",
        json!({"policy_id": 0, "source_id": 0, "before": null}),
    )
    .await
    .json()
}

#[tokio::test]
async fn a_replace_restore_backs_up_what_it_replaces_and_that_can_be_restored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');",
    );
    let (source, _, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &db,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    let job = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await
        .json()
        .as_i64()
        .unwrap();
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "succeeded");
    let first = snapshots(&api, &admin).await[0]["id"].as_i64().unwrap();

    // Life goes on; then someone restores last night's table over it.
    sqlite(&db, "INSERT INTO customers VALUES (3, 'Cy');");
    let restore = |snapshot: i64, safety: bool| {
        json!({"req": {"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"], "columns": {},
                       "rename": {}, "mode": "replace", "confirm": "customers", "safety_backup": safety}})
    };
    let unconfirmed = api
        .json(Some(&admin), "restore/start", json!({"req": {"snapshot": first, "dest_source_id": source, "tables": ["customers"], "columns": {}, "rename": {}, "mode": "replace", "confirm": "", "safety_backup": true}}))
        .await;
    assert!(
        unconfirmed.body.contains("Type customers to confirm"),
        "{unconfirmed:?}"
    );
    let job = api
        .json(Some(&admin), "restore/start", restore(first, true))
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(rows(&db), "[(1, 'Ann'), (2, 'Bob')]");
    let logs = done[1].to_string();
    assert!(
        logs.contains("safety backup of customers: snapshot"),
        "{logs}"
    );

    // The safety snapshot holds the three rows that were replaced; restoring it undoes
    // the restore.
    let list = snapshots(&api, &admin).await;
    let safety = list
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] != first && s["rows"] == 3)
        .expect("a safety snapshot")
        .clone();
    assert_eq!(safety["tables"], 1);
    let job = api
        .json(
            Some(&admin),
            "restore/start",
            restore(safety["id"].as_i64().unwrap(), false),
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "succeeded");
    assert_eq!(rows(&db), "[(1, 'Ann'), (2, 'Bob'), (3, 'Cy')]");
    // Without the safety backup, no new snapshot was made.
    assert_eq!(snapshots(&api, &admin).await.as_array().unwrap().len(), 2);
}
