//! Looking inside backups from the console: browsing a table's rows (pages, filters,
//! key lookup) and downloading tables as CSV, JSON lines, SQL or SQLite, streamed from
//! the repository. Only roles that may restore, on sources they may see, without an
//! approval rule; every look and download is audited; a damaged table cuts the download
//! off instead of ending it cleanly.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, client, cookie, sqlite};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

fn query(path: &Path, sql: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall())"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Download {
    status: u16,
    headers: reqwest::header::HeaderMap,
    /// `Err` when the body was cut off.
    body: Result<Vec<u8>, String>,
}

async fn download(server: &Server, cookie: &str, id: i64, query: &str) -> Download {
    let resp = client()
        .get(server.url(&format!("/snapshots/{id}/export?{query}")))
        .header("Cookie", cookie)
        .send()
        .await
        .unwrap();
    Download {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| format!("{e:?}")),
    }
}

async fn browse(
    api: &Api<'_>,
    cookie: &str,
    id: i64,
    table: &str,
    filters: Value,
    key: Value,
    offset: u64,
) -> crate::harness::Reply {
    api.json(
        Some(cookie),
        "snapshots/browse",
        json!({"id": id, "table": table, "filters": filters, "key": key, "offset": offset}),
    )
    .await
}

#[tokio::test]
async fn backups_can_be_browsed_and_downloaded_by_those_who_may_restore() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let db = dir.path().join("crm.db");
    sqlite(
        &db,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, note TEXT, photo BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 120)
         INSERT INTO people SELECT i, 'person ' || i, CASE WHEN i % 10 = 0 THEN NULL ELSE 'n,' || i END, randomblob(3) FROM n;
         UPDATE people SET name = '', note = 'say \"hi\"' WHERE id = 7;
         CREATE TABLE log (msg TEXT);
         INSERT INTO log VALUES ('a'), ('a'), (NULL);",
    );
    let (source, _, policy) =
        add_policy(&api, &admin, "crm", &db, &dir.path().join("repo"), "", "").await;
    let policy = policy.json().as_i64().unwrap();
    api.run_policy(&admin, policy).await;
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json();
    let id = snaps[0]["id"].as_i64().unwrap();
    let short = snaps[0]["snapshot_id"].as_str().unwrap()[..12].to_string();

    // Browse: the first table by default, pages of 50, filters, a key lookup.
    let p = browse(&api, &admin, id, "", json!([]), json!([]), 0).await;
    assert!(p.ok(), "{p:?}");
    let p = p.json();
    assert_eq!(p["tables"], json!(["people", "log"]));
    assert_eq!(p["table"], "people");
    assert_eq!(p["key"], json!(["id"]));
    assert_eq!(p["rows"].as_array().unwrap().len(), 50);
    assert_eq!(p["more"], true);
    assert_eq!(
        p["rows"][6],
        json!(["7", "", "say \"hi\"", p["rows"][6][3]])
    );
    assert_eq!(p["rows"][9][2], Value::Null, "NULL stays NULL");
    let p = browse(&api, &admin, id, "people", json!([]), json!([]), 100)
        .await
        .json();
    assert_eq!(p["rows"].as_array().unwrap().len(), 20);
    assert_eq!(p["more"], false);
    let p = browse(
        &api,
        &admin,
        id,
        "people",
        json!([{"column": "note", "op": "is_null", "value": ""}, {"column": "id", "op": "gt", "value": "50"}]),
        json!([]),
        0,
    )
    .await
    .json();
    let ids: Vec<&str> = p["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["60", "70", "80", "90", "100", "110", "120"]);
    let p = browse(&api, &admin, id, "people", json!([]), json!(["42"]), 0)
        .await
        .json();
    assert_eq!(p["rows"].as_array().unwrap().len(), 1);
    assert_eq!(p["rows"][0][1], "person 42");
    let bad = browse(
        &api,
        &admin,
        id,
        "people",
        json!([{"column": "colour", "op": "eq", "value": "red"}]),
        json!([]),
        0,
    )
    .await;
    assert!(!bad.ok() && bad.body.contains("no column"), "{bad:?}");

    // Downloads: a table in each format, with a file name and type, and the whole
    // snapshot as SQL and SQLite.
    let csv = download(&server, &admin, id, "format=csv&table=people").await;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.headers["content-type"], "text/csv; charset=utf-8");
    assert_eq!(
        csv.headers["content-disposition"],
        format!("attachment; filename=\"people-{short}.csv\"").as_str()
    );
    let text = String::from_utf8(csv.body.unwrap()).unwrap();
    let lines: Vec<&str> = text.split("\r\n").collect();
    assert_eq!(lines[0], "\"id\",\"name\",\"note\",\"photo\"");
    assert!(
        lines[7].starts_with("7,\"\",\"say \"\"hi\"\"\",\\x"),
        "{}",
        lines[7]
    );
    assert!(lines[10].starts_with("10,person 10,,\\x"), "{}", lines[10]);
    assert_eq!(lines.len(), 122, "a header, 120 rows and the end");

    let jsonl = download(&server, &admin, id, "format=jsonl&table=people").await;
    let text = String::from_utf8(jsonl.body.unwrap()).unwrap();
    assert_eq!(text.lines().count(), 120);
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["id"], 1);
    assert_eq!(first["name"], "person 1");

    // A filtered download (the query the browse page's links carry).
    let filtered = download(
        &server,
        &admin,
        id,
        "format=csv&table=people&where=id%1Fge%1F115",
    )
    .await;
    let text = String::from_utf8(filtered.body.unwrap()).unwrap();
    assert_eq!(text.trim_end().split("\r\n").count(), 1 + 6);

    // The whole snapshot as SQL, loaded by sqlite3; and as a SQLite file.
    let sql = download(&server, &admin, id, "format=sql").await;
    assert_eq!(
        sql.headers["content-disposition"],
        format!("attachment; filename=\"snapshot-{short}.sql\"").as_str()
    );
    let loaded = dir.path().join("from-sql.db");
    let out = Command::new("sqlite3")
        .arg(&loaded)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&sql.body.unwrap())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success());
    let all = "SELECT id, name, note, hex(photo) FROM people ORDER BY id";
    assert_eq!(query(&loaded, all), query(&db, all));
    assert_eq!(query(&loaded, "SELECT count(*) FROM log"), "[(3,)]");
    let file = download(&server, &admin, id, "format=sqlite").await;
    assert_eq!(file.headers["content-type"], "application/vnd.sqlite3");
    let path = dir.path().join("download.sqlite");
    std::fs::write(&path, file.body.unwrap()).unwrap();
    assert_eq!(query(&path, all), query(&db, all));

    // Roles: a requester sees only granted sources; an auditor reviews history, not
    // data; nobody downloads where restores need approvals.
    for (user, role) in [("rita", "requester"), ("audrey", "auditor")] {
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", user.into()),
                    ("role", role.into()),
                    ("password", "a long enough password".into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
    }
    let rita = cookie(&server, "rita", "a long enough password").await;
    let audrey = cookie(&server, "audrey", "a long enough password").await;
    assert_eq!(
        download(&server, &rita, id, "format=csv&table=people")
            .await
            .status,
        404
    );
    assert!(
        !browse(&api, &rita, id, "people", json!([]), json!([]), 0)
            .await
            .ok()
    );
    assert_eq!(
        download(&server, &audrey, id, "format=csv&table=people")
            .await
            .status,
        403
    );
    assert!(
        browse(&api, &audrey, id, "people", json!([]), json!([]), 0)
            .await
            .forbidden()
    );
    let rita_id = api
        .form(Some(&admin), "users/list", &[])
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "rita")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = api
        .form(
            Some(&admin),
            "users/grant",
            &[
                ("user_id", rita_id.to_string()),
                ("source_id", source.to_string()),
                ("granted", "true".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let d = download(&server, &rita, id, "format=csv&table=log").await;
    assert_eq!(d.status, 200);
    assert_eq!(
        String::from_utf8(d.body.unwrap()).unwrap(),
        "\"msg\"\r\na\r\na\r\n\r\n"
    );
    assert!(
        browse(&api, &rita, id, "log", json!([]), json!([]), 0)
            .await
            .ok()
    );
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "1".into()),
                ("request_ttl_minutes", "60".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let d = download(&server, &admin, id, "format=csv&table=log").await;
    assert_eq!(d.status, 400);
    assert!(
        String::from_utf8(d.body.unwrap())
            .unwrap()
            .contains("approval")
    );
    let b = browse(&api, &rita, id, "log", json!([]), json!([]), 0).await;
    assert!(!b.ok() && b.body.contains("approval"), "{b:?}");
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "0".into()),
                ("request_ttl_minutes", "60".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    // Not logged in: no data.
    let anon = client()
        .get(server.url(&format!("/snapshots/{id}/export?format=csv&table=log")))
        .send()
        .await
        .unwrap();
    assert_ne!(anon.status().as_u16(), 200);

    // Damaged data: the download is cut off, not ended as if complete.
    for sub in std::fs::read_dir(dir.path().join("repo").join("data")).unwrap() {
        for p in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let p = p.unwrap().path();
            let mut bytes = std::fs::read(&p).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x55;
            std::fs::write(&p, bytes).unwrap();
        }
    }
    let d = download(&server, &admin, id, "format=csv&table=people").await;
    assert!(
        d.body.is_err(),
        "a damaged table must not download as a complete file"
    );
    let d = download(&server, &admin, id, "format=sqlite&table=people").await;
    assert!(
        d.body.is_err(),
        "a damaged table must not download as a complete file"
    );

    // Every look and download is in the audit log, refusals and failures included.
    let audit = api
        .form(
            Some(&admin),
            "audit/list",
            &[
                ("user", String::new()),
                ("action", "snapshot.".into()),
                ("outcome", String::new()),
            ],
        )
        .await;
    let entries = audit.json();
    let count = |action: &str, user: &str, outcome: &str| {
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action && e["username"] == user && e["outcome"] == outcome)
            .count()
    };
    assert!(count("snapshot.export", "admin", "ok") >= 5, "{audit:?}");
    assert!(
        count("snapshot.export", "admin", "failed") >= 2,
        "{audit:?}"
    );
    assert_eq!(count("snapshot.export", "audrey", "denied"), 1);
    assert_eq!(
        count("snapshot.export", "rita", "failed"),
        1,
        "not visible: refused"
    );
    assert_eq!(count("snapshot.export", "rita", "ok"), 1);
    assert_eq!(count("snapshot.browse", "admin", "ok"), 4);
    assert_eq!(
        count("snapshot.browse", "admin", "failed"),
        1,
        "the unknown column"
    );
    assert_eq!(count("snapshot.browse", "audrey", "denied"), 1);
}
