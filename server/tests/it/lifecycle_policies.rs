//! The lifecycle of policies and users through the server functions the pages call:
//! a policy is created, edited (checked as on create), paused (the scheduler leaves
//! it), resumed and deleted (its snapshots stay listed and restorable); a user's role
//! changes (it applies at their next request, wider tokens stop working, the last
//! admin stays). Each change is audited and refused to roles that may not make it.

use crate::harness::{
    ADMIN_PASSWORD, Api, Options, Server, add_policy, add_user, client, cookie, sqlite,
};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const PW: &str = "a long enough password";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn listed(api: &Api<'_>, who: &str, id: i64) -> Option<Value> {
    api.form(Some(who), "policies/list", &[])
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .cloned()
}

async fn audit(api: &Api<'_>, admin: &str, action: &str) -> String {
    api.form(
        Some(admin),
        "audit/list",
        &[
            ("user", String::new()),
            ("action", action.into()),
            ("outcome", String::new()),
        ],
    )
    .await
    .body
}

fn edit(
    id: i64,
    name: &str,
    include: &str,
    schedule: &str,
    tz: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("id", id.to_string()),
        ("name", name.into()),
        ("include", include.into()),
        ("exclude", String::new()),
        ("columns", String::new()),
        ("schedule", schedule.into()),
        ("timezone", tz.into()),
    ]
}

#[tokio::test]
async fn a_policy_is_edited_paused_resumed_and_deleted_and_its_snapshots_stay() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    add_user(&api, &admin, "oscar", "operator").await;
    add_user(&api, &admin, "rita", "requester").await;
    let operator = cookie(&server, "oscar", PW).await;
    let requester = cookie(&server, "rita", PW).await;

    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER); INSERT INTO orders VALUES (1, 1);",
    );
    let (source, _target, r) = add_policy(
        &api,
        &admin,
        "nightly",
        &db,
        &dir.path().join("repo"),
        "0 2 * * *",
        "UTC",
    )
    .await;
    assert!(r.ok(), "{r:?}");
    let id = r.json().as_i64().unwrap();
    let other = api
        .form(
            Some(&admin),
            "policies/create",
            &[
                ("name", "other".into()),
                ("source_id", source.to_string()),
                ("target_id", _target.to_string()),
                ("include", String::new()),
                ("exclude", String::new()),
                ("columns", String::new()),
                ("schedule", String::new()),
                ("timezone", "UTC".into()),
                ("enabled", "on".into()),
            ],
        )
        .await;
    assert!(other.ok(), "{other:?}");

    // Edit: the same checks as create, field by field.
    for (args, field) in [
        (edit(id, "", "", "", "UTC"), "name"),
        (
            edit(id, "hourly-shop", "", "every 5 fortnights", "UTC"),
            "schedule",
        ),
        (
            edit(id, "hourly-shop", "", "hourly", "Mars/Olympus"),
            "timezone",
        ),
        (edit(id, "other", "", "hourly", "UTC"), "name"),
    ] {
        let r = api.form(Some(&admin), "policies/update", &args).await;
        assert!(!r.ok(), "{args:?} was accepted");
        assert!(
            r.body.contains(field) || r.body.contains("taken"),
            "{field}: {r:?}"
        );
    }
    // A requester may not edit; an operator may.
    let r = api
        .form(
            Some(&requester),
            "policies/update",
            &edit(id, "x", "", "", "UTC"),
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    let r = api
        .form(
            Some(&operator),
            "policies/update",
            &edit(
                id,
                "every-minute",
                "customers",
                "every 1 minutes",
                "Europe/Berlin",
            ),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let p = listed(&api, &admin, id).await.unwrap();
    assert_eq!(p["name"], "every-minute");
    assert_eq!(p["include"], json!(["customers"]));
    assert_eq!(p["schedule"], "every 1 minutes");
    assert_eq!(p["timezone"], "Europe/Berlin");
    // The next run follows the new schedule: within the minute.
    let next = p["next_run"].as_i64().expect("a next run");
    assert!(next > now_ms() - 10_000 && next <= now_ms() + 60_000, "{p}");
    // A run backs up only what the edited selection names.
    let done = api.run_policy(&admin, id).await;
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": id, "source_id": 0, "before": null}),
        )
        .await
        .json();
    // (The scheduler may have made one too: every one has the one table.)
    assert!(!snaps.as_array().unwrap().is_empty(), "{snaps} {done}");
    assert!(
        snaps.as_array().unwrap().iter().all(|s| s["tables"] == 1),
        "{snaps}"
    );
    let snapshot = snaps[0]["id"].as_i64().unwrap();

    // Pause: the scheduler leaves it (no next run, never late), and the page says so.
    let r = api
        .form(
            Some(&requester),
            "policies/set_enabled",
            &[("id", id.to_string()), ("enabled", "false".into())],
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    let r = api
        .form(
            Some(&operator),
            "policies/set_enabled",
            &[("id", id.to_string()), ("enabled", "false".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let p = listed(&api, &admin, id).await.unwrap();
    assert_eq!(p["enabled"], false, "{p}");
    assert!(p["next_run"].is_null(), "{p}");
    assert!(p["late_after_minutes"].is_null(), "{p}");
    // Made due in the past while paused: still not queued (the scheduler ticks every 5 s).
    let scheduled = |jobs: &Value| {
        jobs.as_array()
            .unwrap()
            .iter()
            .filter(|j| j["title"].as_str().unwrap().starts_with("Scheduled backup"))
            .count()
    };
    let before = scheduled(&api.form(Some(&admin), "jobs/list", &[]).await.json());
    let hist = dir.path().join("data").join("history.db");
    assert!(hist.exists());
    sqlite(
        &hist,
        &format!("UPDATE policies SET next_run_at = 1000 WHERE id = {id}"),
    );
    tokio::time::sleep(Duration::from_secs(7)).await;
    let jobs = api.form(Some(&admin), "jobs/list", &[]).await.json();
    assert_eq!(
        scheduled(&jobs),
        before,
        "a paused policy was scheduled: {jobs}"
    );
    // Resume: the next slot from now (not the missed ones), then the scheduler runs it.
    let r = api
        .form(
            Some(&operator),
            "policies/set_enabled",
            &[("id", id.to_string()), ("enabled", "true".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let p = listed(&api, &admin, id).await.unwrap();
    assert_eq!(p["enabled"], true, "{p}");
    let next = p["next_run"].as_i64().expect("a next run once resumed");
    assert!(next > now_ms() - 10_000, "{p}");
    let deadline = Instant::now() + Duration::from_secs(80);
    while scheduled(&api.form(Some(&admin), "jobs/list", &[]).await.json()) == before {
        assert!(Instant::now() < deadline, "the resumed policy never ran");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Pause again so nothing is queued while it is deleted below.
    let r = api
        .form(
            Some(&admin),
            "policies/set_enabled",
            &[("id", id.to_string()), ("enabled", "false".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");

    // Delete while a job of it is queued or running: refused, nothing goes.
    let running = api
        .form(Some(&admin), "policies/run", &[("id", id.to_string())])
        .await
        .json()
        .as_i64()
        .unwrap();
    let r = api
        .form(Some(&admin), "policies/delete", &[("id", id.to_string())])
        .await;
    let finished = api.wait_job(&admin, running).await;
    assert!(!r.ok() && r.body.contains("queued or running"), "{r:?}");
    assert!(listed(&api, &admin, id).await.is_some());
    assert_eq!(finished[0]["status"], "succeeded", "{finished}");
    // Every scheduled job has finished too before deleting.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs = api.form(Some(&admin), "jobs/list", &[]).await.json();
        if jobs
            .as_array()
            .unwrap()
            .iter()
            .all(|j| !["queued", "running"].contains(&j["status"].as_str().unwrap()))
        {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish: {jobs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The confirmation says what goes and what stays.
    let trig = api
        .form(
            Some(&admin),
            "policies/trigger_create",
            &[("id", id.to_string())],
        )
        .await;
    assert!(trig.ok(), "{trig:?}");
    let token = trig.json().as_str().unwrap().to_string();
    let plan = api
        .form(
            Some(&operator),
            "policies/deletion",
            &[("id", id.to_string())],
        )
        .await;
    assert!(plan.ok(), "{plan:?}");
    let plan = plan.json();
    assert!(plan["blocked"].is_null(), "{plan}");
    assert!(plan["snapshots"].as_i64().unwrap() >= 2, "{plan}");
    let goes = plan["goes"].to_string();
    assert!(
        goes.contains("every 1 minutes") && goes.contains("trigger"),
        "{plan}"
    );
    let r = api
        .form(
            Some(&requester),
            "policies/delete",
            &[("id", id.to_string())],
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    let r = api
        .form(
            Some(&operator),
            "policies/delete",
            &[("id", id.to_string())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert!(listed(&api, &admin, id).await.is_none());
    let r = api
        .form(
            Some(&operator),
            "policies/delete",
            &[("id", id.to_string())],
        )
        .await;
    assert!(r.not_found(), "{r:?}");
    // Its trigger URL no longer starts anything.
    let hook = client()
        .post(server.url(&format!("/hooks/policies/{id}/backup")))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status().as_u16(), 401);

    // Its snapshots stay in the history, with the policy's id, and restore.
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json();
    let kept: Vec<&Value> = snaps
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["policy_id"] == id)
        .collect();
    assert!(kept.len() >= 2, "{snaps}");
    assert!(kept.iter().any(|s| s["id"] == snapshot), "{snaps}");
    let job = api
        .json(
            Some(&admin),
            "restore/start",
            json!({"req": {"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"],
                   "columns": {}, "rename": {"customers": "customers_back"}, "mode": "create", "confirm": ""}}),
        )
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT COUNT(*) FROM customers_back').fetchone()[0])",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    // Every change is in the audit log, with who made it.
    for action in [
        "policy.update",
        "policy.disable",
        "policy.enable",
        "policy.delete",
    ] {
        let log = audit(&api, &admin, action).await;
        assert!(log.contains(action), "{action}: {log}");
        assert!(log.contains("oscar"), "{action}: {log}");
    }
    assert!(
        audit(&api, &admin, "policy.delete")
            .await
            .contains("denied")
    );
}

/// Where a source's restores need approvals, only an admin may change its policies.
#[tokio::test]
async fn a_guarded_sources_policy_is_changed_only_by_an_admin() {
    guarded(None).await;
}

/// The same on a PostgreSQL history: edit, pause and delete run on both.
#[tokio::test]
async fn a_policy_lifecycle_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    guarded(Some(&url)).await;
}

async fn guarded(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    add_user(&api, &admin, "oscar", "operator").await;
    let operator = cookie(&server, "oscar", PW).await;
    let db = dir.path().join("shop.db");
    sqlite(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY);");
    let (source, _, r) = add_policy(
        &api,
        &admin,
        "guarded",
        &db,
        &dir.path().join("repo"),
        "hourly",
        "UTC",
    )
    .await;
    let id = r.json().as_i64().unwrap();
    let rule = api
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
    assert!(rule.ok(), "{rule:?}");
    for (endpoint, args) in [
        ("policies/update", edit(id, "renamed", "", "", "UTC")),
        (
            "policies/set_enabled",
            vec![("id", id.to_string()), ("enabled", "false".into())],
        ),
        ("policies/delete", vec![("id", id.to_string())]),
    ] {
        let r = api.form(Some(&operator), endpoint, &args).await;
        assert!(
            !r.ok() && r.body.contains("only an admin"),
            "{endpoint}: {r:?}"
        );
    }
    let p = listed(&api, &admin, id).await.unwrap();
    assert_eq!(
        (p["name"].as_str(), p["enabled"].as_bool()),
        (Some("guarded"), Some(true))
    );
    for (endpoint, args) in [
        ("policies/update", edit(id, "renamed", "", "", "UTC")),
        (
            "policies/set_enabled",
            vec![("id", id.to_string()), ("enabled", "false".into())],
        ),
        ("policies/delete", vec![("id", id.to_string())]),
    ] {
        let r = api.form(Some(&admin), endpoint, &args).await;
        assert!(r.ok(), "{endpoint}: {r:?}");
    }
    assert!(listed(&api, &admin, id).await.is_none());
}

#[tokio::test]
async fn a_users_role_changes_at_their_next_request_and_the_last_admin_stays() {
    role_change(None).await;
}

#[tokio::test]
async fn a_users_role_changes_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    role_change(Some(&url)).await;
}

async fn role_change(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let admin_id = api.form(Some(&admin), "users/list", &[]).await.json()[0]["id"]
        .as_i64()
        .unwrap();
    let olga = add_user(&api, &admin, "olga", "operator").await;
    let olga_cookie = cookie(&server, "olga", PW).await;
    // Olga's tokens: one with her role, one narrower.
    let mut tokens = Vec::new();
    for role in ["operator", "requester"] {
        let r = api
            .form(
                Some(&olga_cookie),
                "tokens/create",
                &[
                    ("name", role.into()),
                    ("role", role.into()),
                    ("days", "30".into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        tokens.push(r.json().as_str().unwrap().to_string());
    }
    let with_token = |t: String| {
        let server = &server;
        async move {
            let r = client()
                .post(server.url("/api/snapshots/list"))
                .header("Authorization", format!("Bearer {t}"))
                .json(&json!({"policy_id": 0, "source_id": 0, "before": null}))
                .send()
                .await
                .unwrap();
            r.status().as_u16()
        }
    };
    assert_eq!(with_token(tokens[0].clone()).await, 200);
    assert!(
        api.form(Some(&olga_cookie), "policies/list", &[])
            .await
            .ok()
    );

    // Only an admin changes roles; the role must be one of the four.
    let r = api
        .form(
            Some(&olga_cookie),
            "users/set_role",
            &[("id", olga.to_string()), ("role", "admin".into())],
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    let r = api
        .form(
            Some(&admin),
            "users/set_role",
            &[("id", olga.to_string()), ("role", "root".into())],
        )
        .await;
    assert!(!r.ok() && r.body.contains("Choose admin"), "{r:?}");

    // Operator → requester: her session ends (the new role applies once she logs in
    // again), her operator token stops working, her requester token keeps working.
    let r = api
        .form(
            Some(&admin),
            "users/set_role",
            &[("id", olga.to_string()), ("role", "requester".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let r = api.form(Some(&olga_cookie), "policies/list", &[]).await;
    assert!(r.unauthenticated(), "{r:?}");
    let again = cookie(&server, "olga", PW).await;
    let r = api.form(Some(&again), "policies/list", &[]).await;
    assert!(r.forbidden(), "{r:?}");
    assert_eq!(with_token(tokens[0].clone()).await, 401);
    assert_eq!(with_token(tokens[1].clone()).await, 200);
    let users = api.form(Some(&admin), "users/list", &[]).await.json();
    let row = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["id"] == olga)
        .unwrap()
        .clone();
    assert_eq!(row["role"], "requester", "{row}");

    // The last active admin cannot stop being admin…
    let r = api
        .form(
            Some(&admin),
            "users/set_role",
            &[("id", admin_id.to_string()), ("role", "operator".into())],
        )
        .await;
    assert!(!r.ok() && r.body.contains("last active admin"), "{r:?}");
    assert!(api.form(Some(&admin), "users/list", &[]).await.ok());
    // …but may once another admin exists; then the first one is an operator.
    let r = api
        .form(
            Some(&admin),
            "users/set_role",
            &[("id", olga.to_string()), ("role", "admin".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let r = api
        .form(
            Some(&admin),
            "users/set_role",
            &[("id", admin_id.to_string()), ("role", "operator".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert!(
        api.form(Some(&admin), "users/list", &[])
            .await
            .unauthenticated()
    );
    let demoted = cookie(&server, "admin", ADMIN_PASSWORD).await;
    assert!(
        api.form(Some(&demoted), "users/list", &[])
            .await
            .forbidden()
    );
    let olga_admin = cookie(&server, "olga", PW).await;
    assert!(api.form(Some(&olga_admin), "users/list", &[]).await.ok());

    // Two admins demoting each other at the same moment: one of them stays admin.
    for _ in 0..3 {
        let olga_admin = cookie(&server, "olga", PW).await;
        let r = api
            .form(
                Some(&olga_admin),
                "users/set_role",
                &[("id", admin_id.to_string()), ("role", "admin".into())],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        let first = cookie(&server, "admin", ADMIN_PASSWORD).await;
        let olga_now = cookie(&server, "olga", PW).await;
        let a_args = [("id", olga.to_string()), ("role", "operator".to_string())];
        let o_args = [
            ("id", admin_id.to_string()),
            ("role", "operator".to_string()),
        ];
        let (a, o) = tokio::join!(
            api.form(Some(&first), "users/set_role", &a_args),
            api.form(Some(&olga_now), "users/set_role", &o_args),
        );
        assert!(a.ok() != o.ok(), "both or neither demoted: {a:?} {o:?}");
        let admins: Vec<Value> = api
            .form(
                Some(
                    &cookie(
                        &server,
                        if a.ok() { "admin" } else { "olga" },
                        if a.ok() { ADMIN_PASSWORD } else { PW },
                    )
                    .await,
                ),
                "users/list",
                &[],
            )
            .await
            .json()
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["role"] == "admin")
            .cloned()
            .collect();
        assert_eq!(admins.len(), 1, "{admins:?}");
        // Back to: olga admin, the first account operator.
        if a.ok() {
            let first = cookie(&server, "admin", ADMIN_PASSWORD).await;
            let r = api
                .form(
                    Some(&first),
                    "users/set_role",
                    &[("id", olga.to_string()), ("role", "admin".into())],
                )
                .await;
            assert!(r.ok(), "{r:?}");
            let olga_now = cookie(&server, "olga", PW).await;
            let r = api
                .form(
                    Some(&olga_now),
                    "users/set_role",
                    &[("id", admin_id.to_string()), ("role", "operator".into())],
                )
                .await;
            assert!(r.ok(), "{r:?}");
        }
    }
    let olga_admin = cookie(&server, "olga", PW).await;
    let log = audit(&api, &olga_admin, "user.role").await;
    assert!(log.contains("olga: operator → requester"), "{log}");
    assert!(log.contains("admin: admin → operator"), "{log}");
    assert!(log.contains("denied"), "{log}");
}
