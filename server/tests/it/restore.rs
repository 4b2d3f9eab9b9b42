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

/// A key-range upsert from the console: the preview shows what it would insert, update
/// and leave (and changes nothing), a confirmation is needed, the run does exactly that
/// after a safety backup of the table, and rows outside the range stay as they are.
#[tokio::test]
async fn a_key_range_upsert_is_previewed_with_its_diff_then_run() {
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
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10)
         INSERT INTO customers SELECT i, 'c' || i FROM n;",
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
    api.run_policy(&admin, policy.json().as_i64().unwrap())
        .await;
    let snap = snapshots(&api, &admin).await[0]["id"].as_i64().unwrap();
    // Rows 2 and 3 were deleted by mistake, 4 and 9 renamed since.
    sqlite(
        &db,
        "DELETE FROM customers WHERE id IN (2, 3); UPDATE customers SET name = 'renamed' WHERE id IN (4, 9);",
    );
    let before = rows(&db);
    let req = |confirm: &str, conditions: Vec<&str>| {
        json!({"req": {"snapshot": snap, "dest_source_id": source, "tables": ["customers"], "columns": {},
                       "rename": {}, "mode": "upsert", "confirm": confirm, "safety_backup": true,
                       "conditions": conditions}})
    };
    let bad = api
        .json(Some(&admin), "restore/preview", req("", vec!["id <=> 5"]))
        .await;
    assert!(
        !bad.ok() && bad.body.contains("unclear operator"),
        "{bad:?}"
    );
    let preview = api
        .json(
            Some(&admin),
            "restore/preview",
            req("", vec!["id >= 2", "id <= 5"]),
        )
        .await;
    assert!(preview.ok(), "{preview:?}");
    let t = &preview.json()["tables"][0];
    assert_eq!(t["action"], "upsert");
    assert_eq!(
        t["diff"],
        json!({"inserted": 2, "updated": 1, "unchanged": 1, "deleted": 0})
    );
    assert_eq!(rows(&db), before, "a preview changes nothing");
    let unconfirmed = api
        .json(
            Some(&admin),
            "restore/start",
            req("", vec!["id >= 2", "id <= 5"]),
        )
        .await;
    assert!(
        unconfirmed
            .body
            .contains("Type customers to confirm changing it"),
        "{unconfirmed:?}"
    );
    let job = api
        .json(
            Some(&admin),
            "restore/start",
            req("customers", vec!["id >= 2", "id <= 5"]),
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert!(
        done[1].to_string().contains("safety backup of customers"),
        "{done}"
    );
    assert_eq!(
        rows(&db),
        "[(1, 'c1'), (2, 'c2'), (3, 'c3'), (4, 'c4'), (5, 'c5'), (6, 'c6'), (7, 'c7'), (8, 'c8'), (9, 'renamed'), (10, 'c10')]"
    );
}

/// The console's restore wizard on a schema with views and a trigger: the preview says
/// which objects come along and which stay behind, and the restore makes them after
/// the rows (the trigger does not fire on the load).
#[tokio::test]
async fn the_wizard_restores_views_and_triggers_and_names_what_stays_behind() {
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
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, total REAL);
         CREATE TABLE audit (what TEXT);
         CREATE VIEW totals AS SELECT c.name, sum(o.total) AS total FROM customers c JOIN orders o ON o.customer = c.id GROUP BY c.name;
         CREATE TRIGGER orders_audit AFTER INSERT ON orders BEGIN INSERT INTO audit VALUES ('order ' || new.id); END;
         INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');
         INSERT INTO orders VALUES (1, 1, 10), (2, 1, 5), (3, 2, 7);",
    );
    let (_, _, policy) = add_policy(
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
    let snapshot = snapshots(&api, &admin).await[0]["id"].as_i64().unwrap();
    let copy = dir.path().join("copy.db");
    // The console creates no database files: an empty file is an empty database.
    std::fs::write(&copy, b"").unwrap();
    let dest = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "copy".to_string()),
                ("url", format!("sqlite://{}", copy.display())),
            ],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let req = |tables: &[&str]| {
        json!({"req": {"snapshot": snapshot, "dest_source_id": dest, "tables": tables, "columns": {},
                       "rename": {}, "mode": "create", "confirm": "", "safety_backup": false}})
    };
    // Orders alone: the view over customers too stays behind, by name.
    let preview = api
        .json(Some(&admin), "restore/preview", req(&["orders", "audit"]))
        .await
        .json();
    assert_eq!(preview["objects"], "1 trigger", "{preview}");
    assert_eq!(
        preview["objects_left"],
        json!(["view totals not restored: it also uses customers, which is not restored"])
    );
    let all = req(&["customers", "orders", "audit"]);
    let preview = api
        .json(Some(&admin), "restore/preview", all.clone())
        .await
        .json();
    assert_eq!(preview["objects"], "1 view, 1 trigger", "{preview}");
    let job = api
        .json(Some(&admin), "restore/start", all)
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let read = |sql: &str| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall())"])
            .arg(&copy)
            .arg(sql)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        read("SELECT * FROM totals ORDER BY name"),
        "[('Ann', 15.0), ('Bob', 7.0)]"
    );
    // The source's three audit rows, not six: the trigger did not fire on the load.
    assert_eq!(read("SELECT count(*) FROM audit"), "[(3,)]");
    sqlite(&copy, "INSERT INTO orders VALUES (4, 2, 1);");
    assert_eq!(
        read("SELECT what FROM audit WHERE rowid = 4"),
        "[('order 4',)]"
    );
}

/// A new table's name follows one rule wherever it comes from — the wizard's suffix
/// (a preview, a start, a request), the API or the command line: markup or SQL in it
/// is refused before anything is made, with words the console can show. And a policy
/// whose selection matches no table fails instead of passing for a good backup.
#[tokio::test]
async fn hostile_new_table_names_are_refused_everywhere_and_empty_backups_fail() {
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
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
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
    api.run_policy(&admin, policy).await;
    let snapshot = snapshots(&api, &admin).await[0]["id"].as_i64().unwrap();
    // Restoring over an existing table without choosing a mode: refused in the
    // console's words, not the CLI's flags.
    let over = json!({"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"],
        "columns": {}, "rename": {}, "mode": "create", "confirm": ""});
    let r = api
        .json(Some(&admin), "restore/preview", json!({"req": over}))
        .await;
    assert!(
        r.status == 400 && r.body.contains("choose Replace") && !r.body.contains("--"),
        "{r:?}"
    );
    let evil = "customers<img src=x onerror=alert(1)>";
    let req = json!({"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"],
        "columns": {}, "rename": {"customers": evil}, "mode": "create", "confirm": ""});
    for (endpoint, body) in [
        ("restore/preview", json!({"req": req})),
        ("restore/start", json!({"req": req})),
        (
            "requests/file",
            json!({"req": req, "reason": "testing names"}),
        ),
    ] {
        let r = api.json(Some(&admin), endpoint, body).await;
        assert!(
            r.status == 400 && r.body.contains("cannot be a new table's name"),
            "{endpoint}: {r:?}"
        );
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["restore", "--repo"])
        .arg(dir.path().join("repo"))
        .args(["--snapshot", "latest", "--dest"])
        .arg(format!("sqlite://{}", db.display()))
        .args(["--rename", &format!("customers={evil}")])
        .env("TABLESAFE_PASSWORD", "repository password")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("cannot be a new table's name"),
        "{stderr}"
    );
    let tables = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(\"SELECT group_concat(name) FROM sqlite_master WHERE type='table'\").fetchone()[0])"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&tables.stdout).trim(), "customers");

    // A selection that matches nothing, or names a column the table lacks, is refused
    // when the policy is saved, naming the field and what the source has.
    let policy_form = |include: &str, columns: &str| {
        vec![
            ("name", "typo".to_string()),
            ("source_id", source.to_string()),
            ("target_id", "1".to_string()),
            ("include", include.to_string()),
            ("exclude", String::new()),
            ("columns", columns.to_string()),
            ("schedule", String::new()),
            ("timezone", "UTC".to_string()),
            ("enabled", "on".to_string()),
        ]
    };
    for (include, columns, field, says) in [
        (
            "nosuchtable*",
            "",
            "include",
            "take none of the source's tables (customers)",
        ),
        ("", "customers=id,nope", "columns", "Its columns: id, name."),
        ("", "orders=id", "columns", "Only some columns names table"),
    ] {
        let r = api
            .form(
                Some(&admin),
                "policies/create",
                &policy_form(include, columns),
            )
            .await;
        assert!(
            r.status == 400 && r.body.contains(field) && r.body.contains(says),
            "{include} {columns}: {r:?}"
        );
    }
    // Saved while it matched, then the source changed: the backup fails, and it is not
    // a success.
    let r = api
        .form(Some(&admin), "policies/create", &policy_form("cust*", ""))
        .await;
    let typo = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let matches = api
        .form(
            Some(&admin),
            "policies/matches",
            &[("id", typo.to_string())],
        )
        .await;
    assert!(
        matches.ok() && matches.json()["tables"][0]["name"] == "customers",
        "{matches:?}"
    );
    sqlite(&db, "ALTER TABLE customers RENAME TO clients;");
    let job = api
        .form(Some(&admin), "policies/run", &[("id", typo.to_string())])
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "failed", "{done}");
    assert!(
        done[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("matches none of the source's tables: clients"),
        "{done}"
    );
    // A source without tables: the job fails too.
    let empty = dir.path().join("empty.db");
    sqlite(&empty, "PRAGMA user_version = 1;");
    let (_, _, policy) = add_policy(
        &api,
        &admin,
        "empty",
        &empty,
        &dir.path().join("repo2"),
        "",
        "",
    )
    .await;
    let job = api
        .form(
            Some(&admin),
            "policies/run",
            &[("id", policy.json().as_i64().unwrap().to_string())],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "failed", "{done}");
    assert!(
        done[0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("no tables"),
        "{done}"
    );
}
