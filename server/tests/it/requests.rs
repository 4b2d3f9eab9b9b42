//! Restore requests with approval, over HTTP as the pages call them, on both history
//! databases: the two-person rule, approvals bound to one version of a request, the
//! requester never approving their own, approvers granted per source, rejections,
//! withdrawals, expiry, two approvers racing, and the restore that runs at the end.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::{Value, json};

const PW: &str = "a long enough password";

#[tokio::test]
async fn requests_and_approvals_on_a_sqlite_history() {
    flow(None).await;
}

#[tokio::test]
async fn requests_and_approvals_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    flow(Some(&url)).await;
}

fn rows(db: &std::path::Path, table: &str) -> String {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT * FROM ' + sys.argv[2] + ' ORDER BY id').fetchall())",
        ])
        .arg(db)
        .arg(table)
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

struct Team<'a> {
    api: Api<'a>,
    admin: String,
    operator: String,
    rita: String,
    reed: String,
    auditor: String,
}

impl Team<'_> {
    async fn get(&self, who: &str, id: i64) -> Value {
        let r = self
            .api
            .form(Some(who), "requests/get", &[("id", id.to_string())])
            .await;
        assert!(r.ok(), "{r:?}");
        r.json()
    }

    async fn approve(&self, who: &str, id: i64, version: &str) -> crate::harness::Reply {
        self.api
            .form(
                Some(who),
                "requests/approve",
                &[("id", id.to_string()), ("version", version.to_string())],
            )
            .await
    }

    async fn file(&self, who: &str, req: Value, reason: &str) -> crate::harness::Reply {
        self.api
            .json(
                Some(who),
                "requests/file",
                json!({"req": req, "reason": reason}),
            )
            .await
    }

    async fn grant(&self, user: i64, source: i64, endpoint: &str, flag: &str) {
        let r = self
            .api
            .form(
                Some(&self.admin),
                endpoint,
                &[
                    ("user_id", user.to_string()),
                    ("source_id", source.to_string()),
                    (flag, "true".into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
    }

    async fn set_rule(&self, source: i64, n: i64, ttl_minutes: i64) {
        let r = self
            .api
            .form(
                Some(&self.admin),
                "sources/approval_rule",
                &[
                    ("id", source.to_string()),
                    ("approvals_required", n.to_string()),
                    ("request_ttl_minutes", ttl_minutes.to_string()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
    }
}

async fn flow(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let mut ids = std::collections::BTreeMap::new();
    for (name, role) in [
        ("operator", "operator"),
        ("rita", "requester"),
        ("reed", "requester"),
        ("auditor", "auditor"),
    ] {
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", name.into()),
                    ("role", role.into()),
                    ("password", PW.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        ids.insert(name, r.json().as_i64().unwrap());
    }
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');",
    );
    let (source, _, policy) =
        add_policy(&api, &admin, "shop", &db, &dir.path().join("repo"), "", "").await;
    api.run_policy(&admin, policy.json().as_i64().unwrap())
        .await;
    let snapshot = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json()[0]["id"]
        .as_i64()
        .unwrap();
    let team = Team {
        operator: cookie(&server, "operator", PW).await,
        rita: cookie(&server, "rita", PW).await,
        reed: cookie(&server, "reed", PW).await,
        auditor: cookie(&server, "auditor", PW).await,
        admin,
        api,
    };
    let api = &team.api;
    team.grant(ids["rita"], source, "users/grant", "granted")
        .await;
    let create = |into: &str| {
        json!({"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"], "columns": {},
               "rename": {"customers": into}, "mode": "create", "confirm": ""})
    };

    // No approval rule: a requester's request starts at once (today's self-service).
    let r = team
        .file(&team.rita, create("self_service"), "ticket 1")
        .await;
    let id = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let got = team.get(&team.rita, id).await;
    let job = got["request"]["job_id"].as_i64().expect("started at once");
    assert_eq!(
        api.wait_job(&team.rita, job).await[0]["status"],
        "succeeded"
    );
    assert_eq!(rows(&db, "self_service"), "[(1, 'Ann'), (2, 'Bob')]");
    assert_eq!(team.get(&team.rita, id).await["request"]["state"], "done");
    // A request needs a reason.
    let r = team.file(&team.rita, create("no_reason"), "  ").await;
    assert!(r.body.contains("Say why"), "{r:?}");

    // Only admins set the rule: the two-person rule on the shop.
    let r = api
        .form(
            Some(&team.operator),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "0".into()),
                ("request_ttl_minutes", "60".into()),
            ],
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    team.set_rule(source, 2, 60).await;

    // Restoring directly is refused now, for everyone; the wizard files a request.
    for who in [&team.rita, &team.admin] {
        let r = api
            .json(Some(who), "restore/start", json!({"req": create("direct")}))
            .await;
        assert!(r.body.contains("needs 2 approval"), "{r:?}");
    }
    let preview = api
        .json(
            Some(&team.rita),
            "restore/preview",
            json!({"req": create("x")}),
        )
        .await;
    assert_eq!(preview.json()["approvals_required"], 2, "{preview:?}");

    let r = team
        .file(&team.rita, create("approved_twice"), "ticket 42: lost rows")
        .await;
    let id = r.json().as_i64().unwrap();
    let first = team.get(&team.rita, id).await["request"].clone();
    assert_eq!(first["state"], "requested");
    assert_eq!(first["approvals_required"], 2);
    let v1 = first["version"].as_str().unwrap().to_string();

    // A requester may not approve at all (not being an approver of the source); an
    // operator, who may approve others' requests, never their own; an auditor cannot
    // approve (but sees it); a requester who is not an approver of the source cannot
    // see it.
    assert!(team.approve(&team.rita, id, &v1).await.forbidden());
    let op_own = team
        .file(&team.operator, create("operator_own"), "my own")
        .await
        .json()
        .as_i64()
        .unwrap();
    let op_version = team.get(&team.operator, op_own).await["request"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        team.get(&team.operator, op_own).await["request"]["can_approve"],
        false
    );
    let own = team.approve(&team.operator, op_own, &op_version).await;
    assert!(own.body.contains("someone else"), "{own:?}");
    assert_eq!(
        team.get(&team.operator, op_own).await["request"]["approvals"],
        0
    );
    assert!(team.approve(&team.auditor, id, &v1).await.forbidden());
    assert_eq!(
        team.get(&team.auditor, id).await["request"]["can_approve"],
        false
    );
    assert!(team.approve(&team.reed, id, &v1).await.forbidden());
    let hidden = api
        .form(Some(&team.reed), "requests/get", &[("id", id.to_string())])
        .await;
    assert!(hidden.not_found(), "{hidden:?}");

    // An approval names the version its approver read.
    let stale = team.approve(&team.operator, id, "not-this-version").await;
    assert!(
        stale.body.contains("changed after you opened it"),
        "{stale:?}"
    );
    let r = team.approve(&team.operator, id, &v1).await;
    assert!(r.ok() && r.json().is_null(), "{r:?}");
    let twice = team.approve(&team.operator, id, &v1).await;
    assert!(
        twice.body.contains("approved this version already"),
        "{twice:?}"
    );
    assert_eq!(team.get(&team.rita, id).await["request"]["approvals"], 1);

    // The requester changes the request: the approval given so far stops counting.
    let changed = api
        .json(
            Some(&team.rita),
            "requests/change",
            json!({"id": id, "req": create("approved_twice"), "reason": "ticket 42: lost rows since Monday"}),
        )
        .await;
    assert!(changed.ok(), "{changed:?}");
    let second = team.get(&team.rita, id).await["request"].clone();
    let v2 = second["version"].as_str().unwrap().to_string();
    assert_ne!(v1, v2);
    assert_eq!(second["approvals"], 0, "{second}");
    assert_eq!(second["state"], "requested");
    let old = team.approve(&team.admin, id, &v1).await;
    assert!(old.body.contains("changed after you opened it"), "{old:?}");

    // Two different people approve the current version: the restore runs.
    assert!(team.approve(&team.operator, id, &v2).await.json().is_null());
    assert!(rows(&db, "approved_twice").contains("no such table"));
    let r = team.approve(&team.admin, id, &v2).await;
    let job = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(
        api.wait_job(&team.admin, job).await[0]["status"],
        "succeeded"
    );
    assert_eq!(rows(&db, "approved_twice"), "[(1, 'Ann'), (2, 'Bob')]");
    let done = team.get(&team.rita, id).await;
    assert_eq!(done["request"]["state"], "done", "{done}");
    assert_eq!(done["request"]["job_id"], job);
    assert_eq!(done["request"]["restored"], json!([["approved_twice", 2]]));
    assert_eq!(done["request"]["approvers"], json!(["operator", "admin"]));
    let history: Vec<String> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{} {} {}",
                h["username"].as_str().unwrap(),
                h["action"].as_str().unwrap(),
                h["outcome"].as_str().unwrap()
            )
        })
        .collect();
    for needle in [
        "rita request.file ok",
        "rita request.approve denied",
        "auditor request.approve denied",
        "operator request.approve ok",
        "rita request.change ok",
        "admin request.approve ok",
        "admin request.start ok",
    ] {
        assert!(
            history.contains(&needle.to_string()),
            "history lacks {needle}: {history:?}"
        );
    }
    // After it ran, nobody can approve or change it.
    assert!(
        team.approve(&team.operator, id, &v2)
            .await
            .body
            .contains("can no longer be approved")
    );

    // Rejected, with a reason the requester reads; then it cannot be approved.
    let id = team
        .file(&team.rita, create("rejected"), "please")
        .await
        .json()
        .as_i64()
        .unwrap();
    let no_reason = api
        .form(
            Some(&team.admin),
            "requests/reject",
            &[("id", id.to_string()), ("reason", "".into())],
        )
        .await;
    assert!(no_reason.body.contains("Say why"), "{no_reason:?}");
    let r = api
        .form(
            Some(&team.admin),
            "requests/reject",
            &[
                ("id", id.to_string()),
                ("reason", "use last week's snapshot".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let got = team.get(&team.rita, id).await["request"].clone();
    assert_eq!(got["state"], "rejected");
    assert_eq!(got["reject_reason"], "use last week's snapshot");
    assert_eq!(got["decided_by"], "admin");
    let v = got["version"].as_str().unwrap().to_string();
    assert!(
        team.approve(&team.operator, id, &v)
            .await
            .body
            .contains("rejected")
    );

    // Withdrawn by the requester (and only by them).
    let id = team
        .file(&team.rita, create("withdrawn"), "oops")
        .await
        .json()
        .as_i64()
        .unwrap();
    assert!(
        api.form(
            Some(&team.operator),
            "requests/cancel",
            &[("id", id.to_string())]
        )
        .await
        .forbidden()
    );
    assert!(
        api.form(
            Some(&team.rita),
            "requests/cancel",
            &[("id", id.to_string())]
        )
        .await
        .ok()
    );
    assert_eq!(
        team.get(&team.rita, id).await["request"]["state"],
        "cancelled"
    );

    // A requester made approver of the shop may approve restores into new tables there
    // (never their own, never a replace), and then sees those requests.
    team.grant(ids["reed"], source, "users/approver", "on")
        .await;
    let id = team
        .file(&team.rita, create("raced"), "two approvers at once")
        .await
        .json()
        .as_i64()
        .unwrap();
    let v = team.get(&team.reed, id).await["request"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        team.get(&team.reed, id).await["request"]["can_approve"],
        true
    );
    assert!(team.approve(&team.operator, id, &v).await.ok());
    // The last two approvals arrive together: exactly one restore job starts.
    let (a, b) = tokio::join!(
        team.approve(&team.admin, id, &v),
        team.approve(&team.reed, id, &v)
    );
    // The one that did not start the job either counted too (and found it started) or
    // came after it started and was told so; neither failed in the server.
    for r in [&a, &b] {
        assert!(
            (r.ok() && (r.json().is_null() || r.json().is_i64())) || r.body.contains("no longer"),
            "{r:?}"
        );
    }
    let jobs: Vec<i64> = [a.json(), b.json()]
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    assert_eq!(
        jobs.len(),
        1,
        "one job from two final approvals: {a:?} {b:?}"
    );
    assert_eq!(
        api.wait_job(&team.admin, jobs[0]).await[0]["status"],
        "succeeded"
    );
    let restore_jobs = api.form(Some(&team.admin), "jobs/list", &[]).await.json();
    let raced = restore_jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["title"].as_str().unwrap_or("").contains("raced"))
        .count();
    assert_eq!(raced, 1);

    let replace = json!({"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"], "columns": {},
                         "rename": {}, "mode": "replace", "confirm": "customers"});
    let r = team.file(&team.rita, replace, "roll the table back").await;
    let id = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let v = team.get(&team.reed, id).await["request"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        team.approve(&team.reed, id, &v).await.forbidden(),
        "a replace needs an operator or admin"
    );

    // Expiry: a request past its time cannot be approved, and says so.
    team.set_rule(source, 1, 1).await;
    let id = team
        .file(&team.rita, create("late"), "slow approvers")
        .await
        .json()
        .as_i64()
        .unwrap();
    let v = team.get(&team.rita, id).await["request"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let past = "UPDATE restore_requests SET expires_at = 1 WHERE id = ";
    match database_url {
        None => sqlite(&data.join("history.db"), &format!("{past}{id};")),
        Some(url) => {
            let out = std::process::Command::new("psql")
                .args([url, "-v", "ON_ERROR_STOP=1", "-c", &format!("{past}{id}")])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(
        team.get(&team.rita, id).await["request"]["state"],
        "expired"
    );
    let late = team.approve(&team.admin, id, &v).await;
    assert!(late.body.contains("expired"), "{late:?}");
    let expired = api
        .form(
            Some(&team.auditor),
            "requests/list",
            &[("state", "expired".into()), ("mine", "false".into())],
        )
        .await
        .json();
    assert_eq!(expired.as_array().unwrap().len(), 1, "{expired}");

    // Lists: rita sees her own; reed, as approver of the shop, sees them too; auditors
    // see all, read-only.
    let all = api
        .form(
            Some(&team.auditor),
            "requests/list",
            &[("state", "".into()), ("mine", "false".into())],
        )
        .await
        .json();
    assert!(all.as_array().unwrap().len() >= 7, "{all}");
    assert!(
        all.as_array()
            .unwrap()
            .iter()
            .all(|r| r["can_approve"] == false)
    );
    let mine = api
        .form(
            Some(&team.rita),
            "requests/list",
            &[("state", "done".into()), ("mine", "true".into())],
        )
        .await
        .json();
    assert!(
        mine.as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "done" && r["requester"] == "rita"),
        "{mine}"
    );
    assert!(mine.as_array().unwrap().len() >= 3, "{mine}");
}
