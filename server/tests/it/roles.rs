//! Every server function, called as each role (and as nobody): who may and who may not,
//! enforced by the server whatever the pages show. Plus what the calls leave behind:
//! jobs that run, an audit log that records them and detects tampering, secrets that
//! never reach the browser or the history database in the clear.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, client, cookie, sqlite};
use serde_json::{Value, json};

const PW: &str = "a long enough password";
const REPO_PW: &str = "repository password 1";

#[tokio::test]
async fn every_server_function_is_enforced_per_role() {
    role_matrix(None).await;
}

/// The same calls against a PostgreSQL history database: every query of the console
/// runs on both.
#[tokio::test]
async fn every_server_function_works_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    role_matrix(Some(&url)).await;
}

async fn role_matrix(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;

    // The team: one account per role.
    let mut ids = std::collections::BTreeMap::new();
    for role in ["operator", "requester", "auditor"] {
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", role.into()),
                    ("role", role.into()),
                    ("password", PW.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        ids.insert(role, r.json().as_i64().unwrap());
    }
    let operator = cookie(&server, "operator", PW).await;
    let requester = cookie(&server, "requester", PW).await;
    let auditor = cookie(&server, "auditor", PW).await;

    // A source, a target, a policy, one backup: something to act on.
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');",
    );
    let source = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "shop".into()),
                ("url", format!("sqlite://{}", db.display())),
            ],
        )
        .await;
    assert!(source.ok(), "{source:?}");
    let source = source.json().as_i64().unwrap();
    // An operator may add sources, but not one that makes this server read a
    // certificate or key file of its own (another database's client key, say).
    let with_key = "postgres://app@db.example.com/app?sslmode=verify-full&sslkey=/var/lib/tablesafe/client.key&sslcert=/var/lib/tablesafe/client.crt";
    let refused = api
        .form(
            Some(&operator),
            "sources/add",
            &[("name", "sneaky".into()), ("url", with_key.into())],
        )
        .await;
    assert!(
        !refused.ok()
            && refused
                .body
                .contains("only an admin may add a source that uses certificate or key files"),
        "{refused:?}"
    );
    let allowed = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "with-cert".into()), ("url", with_key.into())],
        )
        .await;
    assert!(allowed.ok(), "{allowed:?}");
    let repo = dir.path().join("repo");
    let target = api
        .form(
            Some(&admin),
            "targets/add",
            &[
                ("name", "disk".into()),
                ("location", repo.display().to_string()),
                ("password", REPO_PW.into()),
            ],
        )
        .await;
    assert!(target.ok(), "{target:?}");
    let target = target.json().as_i64().unwrap();
    let policy_args = move |name: &str| {
        vec![
            ("name", name.to_string()),
            ("source_id", source.to_string()),
            ("target_id", target.to_string()),
            ("include", String::new()),
            ("exclude", String::new()),
            ("columns", String::new()),
            ("schedule", "0 2 * * *".into()),
            ("timezone", "UTC".into()),
            ("enabled", "on".into()),
        ]
    };
    let policy = api
        .form(Some(&admin), "policies/create", &policy_args("nightly"))
        .await;
    assert!(policy.ok(), "{policy:?}");
    let policy = policy.json().as_i64().unwrap();
    let job = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await;
    assert!(job.ok(), "{job:?}");
    let done = api.wait_job(&admin, job.json().as_i64().unwrap()).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await;
    let snapshot = snaps.json()[0]["id"].as_i64().unwrap();
    assert_eq!(snaps.json()[0]["rows"], 2);
    // The requester may work with the shop source.
    assert!(
        api.form(
            Some(&admin),
            "users/grant",
            &[
                ("user_id", ids["requester"].to_string()),
                ("source_id", source.to_string()),
                ("granted", "true".into())
            ]
        )
        .await
        .ok()
    );

    let restore_new = move |name: &str| {
        json!({"req": {"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"], "columns": {},
                       "rename": {"customers": name}, "mode": "create", "confirm": ""}})
    };
    let restore_replace = json!({"req": {"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"],
        "columns": {}, "rename": {}, "mode": "replace", "confirm": "customers"}});

    // (call, roles allowed). Each call is made by every role and by nobody.
    type Call = Box<dyn Fn(&str) -> (String, Vec<(&'static str, String)>, Option<Value>)>;
    let form = |e: &str, args: Vec<(&'static str, String)>| (e.to_string(), args, None);
    let calls: Vec<(Call, &[&str])> = vec![
        (Box::new(move |_| form("users/list", vec![])), &["admin"]),
        (
            Box::new(move |r| {
                form(
                    "users/create",
                    vec![
                        ("username", format!("new-{r}")),
                        ("role", "auditor".into()),
                        ("password", PW.into()),
                    ],
                )
            }),
            &["admin"],
        ),
        (
            Box::new(move |_| {
                form(
                    "users/set_disabled",
                    vec![("id", "999".into()), ("disabled", "true".into())],
                )
            }),
            &["admin"],
        ),
        (
            Box::new(move |_| form("users/sign_out", vec![("id", "999".into())])),
            &["admin"],
        ),
        (
            Box::new(move |_| {
                form(
                    "users/grant",
                    vec![
                        ("user_id", "1".into()),
                        ("source_id", source.to_string()),
                        ("granted", "false".into()),
                    ],
                )
            }),
            &["admin"],
        ),
        (
            Box::new(move |_| form("sources/list", vec![])),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |r| {
                form(
                    "sources/add",
                    vec![
                        ("name", format!("src-{r}")),
                        ("url", "sqlite:///tmp/x.db".into()),
                    ],
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("sources/test", vec![("id", source.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("sources/tables", vec![("id", source.to_string())])),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |_| form("targets/list", vec![])),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |r| {
                form(
                    "targets/add",
                    vec![
                        ("name", format!("t-{r}")),
                        (
                            "location",
                            format!("/tmp/tablesafe-roles-{}-{r}", std::process::id()),
                        ),
                        ("password", REPO_PW.into()),
                    ],
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("policies/list", vec![])),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |r| form("policies/create", policy_args(&format!("p-{r}")))),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("policies/run", vec![("id", policy.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("jobs/list", vec![])),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |_| form("jobs/retry", vec![("id", "1".into())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("snapshots/verify", vec![("id", snapshot.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                (
                    "snapshots/list".into(),
                    vec![],
                    Some(json!({"policy_id": 0, "source_id": 0, "before": null})),
                )
            }),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |r| {
                (
                    "restore/preview".into(),
                    vec![],
                    Some(restore_new(&format!("c_{r}"))),
                )
            }),
            &["admin", "operator", "requester"],
        ),
        (
            Box::new(move |r| {
                (
                    "restore/start".into(),
                    vec![],
                    Some(restore_new(&format!("c_{r}"))),
                )
            }),
            &["admin", "operator", "requester"],
        ),
        (
            Box::new(move |_| {
                (
                    "restore/start".into(),
                    vec![],
                    Some(restore_replace.clone()),
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                form(
                    "audit/list",
                    vec![
                        ("user", String::new()),
                        ("action", String::new()),
                        ("outcome", String::new()),
                    ],
                )
            }),
            &["admin", "auditor"],
        ),
        (
            Box::new(move |_| form("audit/verify", vec![])),
            &["admin", "auditor"],
        ),
        (
            Box::new(move |_| {
                form(
                    "drills/save",
                    vec![
                        ("policy_id", policy.to_string()),
                        ("schedule", "daily at 04:00".into()),
                        ("timezone", "UTC".into()),
                        ("pick", "latest".into()),
                        ("scratch_source_id", String::new()),
                        ("assertions", "SELECT count(*) = 2 FROM customers".into()),
                    ],
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("drills/plans", vec![])),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |_| form("drills/run", vec![("policy_id", policy.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("drills/list", vec![])),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |_| form("drills/proven", vec![])),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |_| form("drills/delete", vec![("policy_id", "999".into())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("dashboard_data", vec![])),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |_| form("server_info", vec![])),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |_| form("policies/trigger_create", vec![("id", policy.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("policies/trigger_revoke", vec![("id", policy.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                let mut args = vec![("id", policy.to_string())];
                for k in [
                    "last", "hourly", "daily", "weekly", "monthly", "yearly", "floor",
                ] {
                    args.push((
                        k,
                        if k == "last" {
                            "5".into()
                        } else {
                            String::new()
                        },
                    ));
                }
                form("policies/retention_preview", args)
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                let mut args = vec![("id", policy.to_string())];
                for k in [
                    "last", "hourly", "daily", "weekly", "monthly", "yearly", "floor",
                ] {
                    args.push((k, if k == "last" { "5".into() } else { "0".into() }));
                }
                form("policies/retention_save", args)
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("policies/prune", vec![("id", policy.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                (
                    "policies/copies".to_string(),
                    vec![],
                    Some(json!({"id": policy, "targets": []})),
                )
            }),
            &["admin", "operator"],
        ),
        // Restore requests: everyone who may restore files them (with no approval rule
        // they start at once); everyone sees the list (requesters their own, auditors
        // read-only); deciding needs an operator or admin (or an approver grant, which
        // nobody has here); only admins set the rule or make approvers.
        (
            Box::new(move |r| {
                (
                    "requests/file".into(),
                    vec![],
                    Some(json!({"req": restore_new(&format!("q_{r}"))["req"], "reason": "matrix"})),
                )
            }),
            &["admin", "operator", "requester"],
        ),
        (
            Box::new(move |_| {
                form(
                    "requests/list",
                    vec![("state", String::new()), ("mine", "false".into())],
                )
            }),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |_| form("requests/get", vec![("id", "999".into())])),
            &["admin", "operator", "requester", "auditor"],
        ),
        (
            Box::new(move |_| {
                form(
                    "requests/approve",
                    vec![("id", "999".into()), ("version", "v".into())],
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                form(
                    "requests/reject",
                    vec![("id", "999".into()), ("reason", "no".into())],
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("requests/cancel", vec![("id", "999".into())])),
            &["admin", "operator", "requester"],
        ),
        (
            Box::new(move |_| {
                (
                    "requests/change".into(),
                    vec![],
                    Some(json!({"id": 999, "req": restore_new("q_change")["req"], "reason": "x"})),
                )
            }),
            &["admin", "operator", "requester"],
        ),
        (
            Box::new(move |_| {
                form(
                    "sources/approval_rule",
                    vec![
                        ("id", source.to_string()),
                        ("approvals_required", "0".into()),
                        ("request_ttl_minutes", "60".into()),
                    ],
                )
            }),
            &["admin"],
        ),
        (
            Box::new(move |_| {
                form(
                    "users/approver",
                    vec![
                        ("user_id", "1".into()),
                        ("source_id", source.to_string()),
                        ("on", "false".into()),
                    ],
                )
            }),
            &["admin"],
        ),
        // Notifications: channels are configured by admins and operators, seen (without
        // secrets) by everyone who sees everything.
        (
            Box::new(move |_| form("notify/channels", vec![])),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |r| {
                (
                    "notify/save".into(),
                    vec![],
                    Some(
                        json!({"input": {"id": null, "name": format!("ch-{r}"), "kind": "webhook",
                        "url": "http://127.0.0.1:9/hook", "secret": "a webhook signing secret",
                        "events": ["backup.failed"], "enabled": false}}),
                    ),
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("notify/test", vec![("id", "999".into())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("notify/delete", vec![("id", "999".into())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                form(
                    "notify/deliveries",
                    vec![("status", String::new()), ("channel", "0".into())],
                )
            }),
            &["admin", "operator", "auditor"],
        ),
        (
            Box::new(move |_| form("notify/retry", vec![("id", "999".into())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| {
                form(
                    "policies/late_alert",
                    vec![("id", policy.to_string()), ("minutes", "60".into())],
                )
            }),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("policies/continuous", vec![("id", policy.to_string())])),
            &["admin", "operator"],
        ),
        (
            Box::new(move |_| form("snapshots/range", vec![("id", snapshot.to_string())])),
            &["admin", "operator", "requester"],
        ),
        (
            Box::new(move |_| {
                (
                    "snapshots/browse".into(),
                    vec![],
                    Some(
                        json!({"id": snapshot, "table": "", "filters": [], "key": [], "offset": 0}),
                    ),
                )
            }),
            &["admin", "operator", "requester"],
        ),
        // Everyone may change their own password (here with a wrong current one: refused
        // for that reason, not for the role).
        (
            Box::new(move |_| {
                form(
                    "users/change_password",
                    vec![
                        ("current", "wrong".into()),
                        ("new", "another long password".into()),
                    ],
                )
            }),
            &["admin", "operator", "requester", "auditor"],
        ),
    ];
    let roles = [
        ("admin", &admin),
        ("operator", &operator),
        ("requester", &requester),
        ("auditor", &auditor),
    ];
    for (call, allowed) in &calls {
        for (role, cookie) in roles {
            let (endpoint, args, body) = call(role);
            let reply = match &body {
                Some(b) => api.json(Some(cookie), &endpoint, b.clone()).await,
                None => api.form(Some(cookie), &endpoint, &args).await,
            };
            if allowed.contains(&role) {
                assert!(
                    !reply.forbidden() && !reply.unauthenticated(),
                    "{role} may call {endpoint}: {reply:?}"
                );
            } else {
                assert!(
                    reply.forbidden(),
                    "{role} must not call {endpoint}: {reply:?}"
                );
            }
        }
        let (endpoint, args, body) = call("nobody");
        let reply = match &body {
            Some(b) => api.json(None, &endpoint, b.clone()).await,
            None => api.form(None, &endpoint, &args).await,
        };
        assert!(
            reply.unauthenticated(),
            "nobody must call {endpoint}: {reply:?}"
        );
    }

    // Jobs: everyone who sees jobs may open one, requesters only their own (others do
    // not exist for them); cancelling needs RunJobs or being the requester who started it.
    let admin_job = 1.to_string();
    for (role, cookie) in roles {
        let got = api
            .form(
                Some(cookie),
                "jobs/get",
                &[("id", admin_job.clone()), ("after_log", "0".into())],
            )
            .await;
        match role {
            "requester" => assert!(got.not_found(), "{got:?}"),
            _ => assert!(got.ok(), "{role}: {got:?}"),
        }
        let cancel = api
            .form(Some(cookie), "jobs/cancel", &[("id", admin_job.clone())])
            .await;
        match role {
            "auditor" => assert!(cancel.forbidden(), "{cancel:?}"),
            "requester" => assert!(cancel.not_found(), "{cancel:?}"),
            _ => assert!(
                cancel.body.contains("already finished"),
                "{role}: {cancel:?}"
            ),
        }
    }
    for endpoint in ["jobs/get", "jobs/cancel"] {
        let r = api
            .form(
                None,
                endpoint,
                &[("id", admin_job.clone()), ("after_log", "0".into())],
            )
            .await;
        assert!(r.unauthenticated(), "{r:?}");
    }

    // The audit CSV follows the same rule.
    for (role, cookie) in roles {
        let resp = client()
            .get(server.url("/audit.csv"))
            .header("Cookie", cookie.as_str())
            .send()
            .await
            .unwrap();
        let expected = if ["admin", "auditor"].contains(&role) {
            200
        } else {
            403
        };
        assert_eq!(resp.status().as_u16(), expected, "{role} and /audit.csv");
    }
    let csv = client()
        .get(server.url("/audit.csv"))
        .header("Cookie", admin.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(csv.starts_with("id,time_utc,user,address,action,target,outcome,detail,hash\n"));
    for needle in [
        ",admin,127.0.0.1,login,user admin,ok,",
        ",requester,127.0.0.1,user.list,,denied,",
        ",admin,127.0.0.1,policy.run,policy #",
        ",auditor,127.0.0.1,source.add,,denied,",
        ",requester,127.0.0.1,restore.start,snapshot #",
        ",requester,127.0.0.1,request.file,restore request #",
        ",auditor,127.0.0.1,request.approve,restore request #999,denied,",
        ",operator,127.0.0.1,source.approval_rule,,denied,",
    ] {
        assert!(csv.contains(needle), "audit lacks {needle}:\n{csv}");
    }

    // A requester sees only their own jobs and granted sources; the rest is not there.
    let theirs = api.form(Some(&requester), "jobs/list", &[]).await.json();
    assert!(
        theirs
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["created_by"] == "requester"),
        "{theirs}"
    );
    let other_job = api
        .form(
            Some(&requester),
            "jobs/get",
            &[("id", "1".into()), ("after_log", "0".into())],
        )
        .await;
    assert!(other_job.not_found(), "{other_job:?}");

    // The requester's restore ran into a new table, with the rows.
    let mine = theirs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "restore" && j["title"].as_str().unwrap().contains("c_requester"))
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let restored = api.wait_job(&requester, mine).await;
    assert_eq!(restored[0]["status"], "succeeded", "{restored}");
    let out = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT * FROM c_requester ORDER BY id').fetchall())"])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "[(1, 'Ann'), (2, 'Bob')]"
    );

    // Secrets: not in any answer, not in the history database in the clear.
    let listed = api.form(Some(&admin), "targets/list", &[]).await.body
        + &api.form(Some(&admin), "sources/list", &[]).await.body;
    assert!(!listed.contains(REPO_PW));
    // The audit chain holds, and editing one entry breaks it.
    let check = api.form(Some(&auditor), "audit/verify", &[]).await.json();
    assert_eq!(check["holds"], Value::Bool(true), "{check}");
    assert_eq!(check["broken_at"], Value::Null, "{check}");
    if database_url.is_some() {
        return;
    }
    let history = std::fs::read(data.join("history.db")).unwrap();
    let wal = std::fs::read(data.join("history.db-wal")).unwrap_or_default();
    for bytes in [&history, &wal] {
        assert!(
            !bytes
                .windows(REPO_PW.len())
                .any(|w| w == REPO_PW.as_bytes()),
            "repository password stored in the clear"
        );
    }
    drop(server);
    sqlite(
        &data.join("history.db"),
        "DROP TRIGGER audit_log_no_update; UPDATE audit_log SET outcome = 'ok' WHERE outcome = 'denied' AND id = (SELECT MIN(id) FROM audit_log WHERE outcome = 'denied');",
    );
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: None,
    });
    let api = Api { server: &server };
    let auditor = cookie(&server, "auditor", PW).await;
    let broken = api.form(Some(&auditor), "audit/verify", &[]).await;
    assert!(
        broken.json()["broken_at"].is_i64() && broken.json()["holds"] == Value::Bool(false),
        "tampering must be found: {broken:?}"
    );
}
