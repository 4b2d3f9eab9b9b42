//! A MariaDB source in the console: added (its password never shown), tested, backed up
//! by a policy, and restored by the wizard's server functions into a new database whose
//! mysqldump equals the source's; a drill proves the snapshot on a scratch server; what
//! is not available for MySQL yet says so.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy_for, cookie};
use serde_json::json;
use testkit::mariadb::Mariadb;

#[tokio::test]
async fn a_mariadb_source_is_backed_up_and_restored_from_the_console() {
    let m = Mariadb::start().unwrap();
    let url = m.create_database("shop").unwrap();
    m.sql(
        "shop",
        "CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40), since DATE, balance DECIMAL(12,2));
         INSERT INTO customers VALUES (1, 'Ann', '2020-01-02', 10.50), (2, 'Bob', '0000-00-00', NULL);
         CREATE TABLE orders (id INT PRIMARY KEY, customer INT, FOREIGN KEY (customer) REFERENCES customers (id));
         INSERT INTO orders VALUES (10, 1), (11, 2);",
    )
    .unwrap();
    let copy_url = m.create_database("copy").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let (source, _, policy) = add_policy_for(
        &api,
        &admin,
        "maria",
        &url,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    let listed = api.form(Some(&admin), "sources/list", &[]).await;
    assert!(
        listed.body.contains("mysql://tablesafe:***@127.0.0.1"),
        "{listed:?}"
    );
    assert!(
        !listed.body.contains("maria%20test") && !listed.body.contains(testkit::mariadb::PASSWORD)
    );
    let tested = api
        .form(Some(&admin), "sources/test", &[("id", source.to_string())])
        .await;
    assert!(tested.body.contains("Connected: 2 tables"), "{tested:?}");
    let bad = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "nohost".into()), ("url", "mysql://user@".into())],
        )
        .await;
    assert!(
        !bad.ok() && bad.body.contains("Name the host and database"),
        "{bad:?}"
    );

    let done = api.run_policy(&admin, policy).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let dest = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "maria-copy".into()), ("url", copy_url.clone())],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let snap = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json()[0]["id"]
        .as_i64()
        .unwrap();
    let req = json!({"req": {"snapshot": snap, "dest_source_id": dest, "tables": [], "columns": {},
                             "rename": {}, "mode": "create", "confirm": "", "safety_backup": true}});
    let preview = api.json(Some(&admin), "restore/preview", req.clone()).await;
    assert!(
        preview.ok() && preview.body.contains("customers"),
        "{preview:?}"
    );
    let job = api
        .json(Some(&admin), "restore/start", req)
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(m.dump("copy", &[]).unwrap(), m.dump("shop", &[]).unwrap());

    // Not yet for MySQL, and saying so.
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", policy.to_string()), ("secs", "5".into())],
        )
        .await;
    assert!(!r.ok() && r.body.contains("not available yet"), "{r:?}");
    // A drill: a MySQL scratch server is required, then the drill proves the snapshot.
    let r = api
        .form(
            Some(&admin),
            "drills/run",
            &[("policy_id", policy.to_string())],
        )
        .await;
    assert!(!r.ok() && r.body.contains("scratch server"), "{r:?}");
    let scratch = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "maria-scratch".into()), ("url", m.url("mysql"))],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let save = |scratch: String| {
        vec![
            ("policy_id", policy.to_string()),
            ("schedule", String::new()),
            ("timezone", "UTC".to_string()),
            ("pick", "latest".to_string()),
            ("scratch_source_id", scratch),
            ("assertions", "SELECT COUNT(*) = 2 FROM orders".to_string()),
        ]
    };
    let wrong_kind = api
        .form(Some(&admin), "drills/save", &save(String::new()))
        .await;
    assert!(
        !wrong_kind.ok()
            && wrong_kind
                .body
                .contains("MySQL drill needs a scratch server"),
        "{wrong_kind:?}"
    );
    let r = api
        .form(Some(&admin), "drills/save", &save(scratch.to_string()))
        .await;
    assert!(r.ok(), "{r:?}");
    let job = api
        .form(
            Some(&admin),
            "drills/run",
            &[("policy_id", policy.to_string())],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert!(
        done[1]
            .to_string()
            .contains("orders: 2 of 2 rows, checksum matches"),
        "{done}"
    );
    assert_eq!(
        m.sql("mysql", "SHOW DATABASES LIKE 'tablesafe_drill_%'")
            .unwrap(),
        ""
    );
}
