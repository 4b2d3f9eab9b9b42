//! Sources, targets and notification channels have a lifecycle (issue 26): created,
//! changed with the checks of creation, paused and resumed where that applies, deleted
//! with what goes with them — each step through the server functions the pages call,
//! refused to the roles that may not, and audited. A source's password stays with its
//! server: a changed host needs it again (issue 25).

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::{Value, json};

const PW: &str = "a long enough password";

async fn audit_actions(api: &Api<'_>, admin: &str, prefix: &str) -> Vec<(String, String)> {
    let r = api
        .form(
            Some(admin),
            "audit/list",
            &[
                ("user", String::new()),
                ("action", prefix.into()),
                ("outcome", String::new()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap_or_default().to_string(),
                e["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

async fn sources(api: &Api<'_>, who: &str) -> Vec<Value> {
    let r = api.form(Some(who), "sources/list", &[]).await;
    assert!(r.ok(), "{r:?}");
    r.json().as_array().unwrap().clone()
}

async fn edit(api: &Api<'_>, who: &str, id: i64, name: &str, url: &str) -> crate::harness::Reply {
    api.form(
        Some(who),
        "sources/edit",
        &[
            ("id", id.to_string()),
            ("name", name.into()),
            ("url", url.into()),
        ],
    )
    .await
}

async fn test_source(api: &Api<'_>, who: &str, id: i64) -> crate::harness::Reply {
    api.form(Some(who), "sources/test", &[("id", id.to_string())])
        .await
}

/// A PostgreSQL login that needs its password over TCP (the testkit server trusts
/// everyone else).
fn password_login(pg: &testkit::Postgres) {
    pg.psql(
        "postgres",
        "CREATE ROLE pwuser LOGIN PASSWORD 'pw-secret-1'",
    )
    .unwrap();
    let hba = pg.psql("postgres", "SHOW hba_file").unwrap();
    let hba = hba.trim();
    pg.psql(
        "postgres",
        &format!(
            "COPY (VALUES ('local all all trust'), ('host all pwuser 127.0.0.1/32 scram-sha-256'), \
             ('host all all 127.0.0.1/32 trust')) TO '{hba}'"
        ),
    )
    .unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()").unwrap();
}

#[tokio::test]
async fn a_source_is_changed_and_deleted_and_its_password_stays_with_its_server() {
    source_lifecycle(false).await;
}

#[tokio::test]
async fn a_source_has_its_lifecycle_on_a_postgresql_history() {
    source_lifecycle(true).await;
}

/// `pg_history`: the console's history in a database on the same PostgreSQL server.
async fn source_lifecycle(pg_history: bool) {
    let pg = testkit::Postgres::start().unwrap();
    password_login(&pg);
    let port = pg.port();
    let history = pg_history.then(|| pg.create_database("history").unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: history.as_deref(),
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "olga".into()),
                ("role", "operator".into()),
                ("password", PW.into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let olga = cookie(&server, "olga", PW).await;

    // Created with its password: it connects.
    let r = api
        .form(
            Some(&olga),
            "sources/add",
            &[
                ("name", "pg".into()),
                (
                    "url",
                    format!("postgres://pwuser:pw-secret-1@127.0.0.1:{port}/postgres"),
                ),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let id = r.json().as_i64().unwrap();
    let r = test_source(&api, &olga, id).await;
    assert!(r.ok(), "{r:?}");

    // Renamed, the URL given as the form shows it (no password): the password is kept.
    let same = format!("postgres://pwuser@127.0.0.1:{port}/postgres");
    let r = edit(&api, &olga, id, "pg-main", &same).await;
    assert!(r.ok(), "{r:?}");
    let listed = sources(&api, &olga).await;
    assert_eq!(listed[0]["name"], "pg-main", "{listed:?}");
    assert!(
        !listed[0]["url"].as_str().unwrap().contains("pw-secret"),
        "{listed:?}"
    );
    let r = test_source(&api, &olga, id).await;
    assert!(r.ok(), "the password was kept: {r:?}");

    // Another host (localhost for 127.0.0.1: the same machine, but another name): the
    // stored password is not carried over, so the server refuses the login.
    let r = edit(
        &api,
        &olga,
        id,
        "pg-main",
        &format!("postgres://pwuser@localhost:{port}/postgres"),
    )
    .await;
    assert!(r.ok(), "{r:?}");
    let r = test_source(&api, &olga, id).await;
    assert!(!r.ok(), "no password after a host change: {r:?}");
    assert!(r.body.contains("password"), "{r:?}");
    // Back to the first host: the password is gone for good, not remembered.
    let r = edit(&api, &olga, id, "pg-main", &same).await;
    assert!(r.ok(), "{r:?}");
    let r = test_source(&api, &olga, id).await;
    assert!(!r.ok(), "the dropped password does not come back: {r:?}");
    // Entered again: it connects.
    let r = edit(
        &api,
        &olga,
        id,
        "pg-main",
        &format!("postgres://pwuser:pw-secret-1@127.0.0.1:{port}/postgres"),
    )
    .await;
    assert!(r.ok(), "{r:?}");
    let r = test_source(&api, &olga, id).await;
    assert!(r.ok(), "{r:?}");

    // The checks of creation hold for a change.
    let r = edit(
        &api,
        &olga,
        id,
        "pg-main",
        &format!("sqlite://{}", data.join("history.db").display()),
    )
    .await;
    assert!(
        !r.ok() && r.body.contains("url"),
        "tablesafe's own data: {r:?}"
    );
    let r = edit(
        &api,
        &olga,
        id,
        "pg-main",
        &format!("postgres://pwuser@127.0.0.1:{port}/postgres?sslmode=require&sslkey=/etc/ssl/private/key.pem"),
    )
    .await;
    assert!(
        !r.ok() && r.body.contains("sslkey"),
        "a key file, as an operator: {r:?}"
    );
    let r = edit(
        &api,
        &olga,
        id,
        "pg-main",
        "postgres://pwuser@169.254.169.254:5432/postgres",
    )
    .await;
    assert!(!r.ok(), "a metadata address: {r:?}");
    let r = edit(&api, &olga, id, "", &same).await;
    assert!(!r.ok() && r.body.contains("name"), "{r:?}");
    let r = edit(&api, &olga, 999_999, "x", &same).await;
    assert!(!r.ok(), "{r:?}");

    // A name taken by another source is refused.
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
    );
    let repo = dir.path().join("repo");
    let (shop, target, policy) = add_policy(&api, &admin, "nightly", &db, &repo, "", "UTC").await;
    assert!(policy.ok(), "{policy:?}");
    let r = edit(&api, &olga, id, "s-nightly", &same).await;
    assert!(!r.ok() && r.body.contains("name"), "{r:?}");

    // Where restores need approvals, only an admin changes or deletes the source.
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", id.to_string()),
                ("approvals_required", "1".into()),
                ("request_ttl_minutes", "60".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let r = edit(&api, &olga, id, "pg-renamed", &same).await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = api
        .form(Some(&olga), "sources/delete", &[("id", id.to_string())])
        .await;
    assert_eq!(r.status, 403, "{r:?}");
    let r = edit(&api, &admin, id, "pg-renamed", &same).await;
    assert!(r.ok(), "{r:?}");
    // Nor may an operator point another source at that database (another spelling of
    // it included): its policies would then back up guarded data.
    let r = edit(
        &api,
        &olga,
        shop,
        "s-nightly",
        &format!("postgres://pwuser@localhost:{port}/postgres"),
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    // A requester may do neither.
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "rita".into()),
                ("role", "requester".into()),
                ("password", PW.into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let rita = cookie(&server, "rita", PW).await;
    let r = edit(&api, &rita, shop, "x", "sqlite:///tmp/x.db").await;
    assert!(r.forbidden(), "{r:?}");
    let r = api
        .form(Some(&rita), "sources/delete", &[("id", shop.to_string())])
        .await;
    assert!(r.forbidden(), "{r:?}");

    // A source with a policy cannot be deleted; the message names the policy.
    let r = api
        .form(Some(&olga), "sources/delete", &[("id", shop.to_string())])
        .await;
    assert!(!r.ok() && r.body.contains("nightly"), "{r:?}");
    // Deleted (by the admin, since it is guarded), with its grants and approvers.
    let rita_id: i64 = {
        let r = api.form(Some(&admin), "users/list", &[]).await;
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "rita")
            .map(|u| u["id"].as_i64().unwrap())
            .unwrap()
    };
    let _ = rita_id;
    let r = api
        .form(Some(&admin), "sources/delete", &[("id", id.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    let names: Vec<String> = sources(&api, &admin)
        .await
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["s-nightly".to_string()]);
    let r = test_source(&api, &admin, id).await;
    assert!(!r.ok(), "{r:?}");
    let _ = target;

    let audit = audit_actions(&api, &admin, "source.").await;
    for (action, outcome) in [
        ("source.edit", "ok"),
        ("source.edit", "denied"),
        ("source.edit", "failed"),
        ("source.delete", "ok"),
        ("source.delete", "denied"),
        ("source.delete", "failed"),
    ] {
        assert!(
            audit.iter().any(|(a, o)| a == action && o == outcome),
            "{action} {outcome} in {audit:?}"
        );
    }
}

#[tokio::test]
async fn a_target_is_changed_and_removed_without_touching_its_repository() {
    target_lifecycle(None).await;
}

/// The same on a PostgreSQL history database (every query runs on both).
#[tokio::test]
async fn a_target_and_a_channel_have_their_lifecycle_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    pg.create_database("history").unwrap();
    target_lifecycle(Some((&pg, "history"))).await;
    let url = pg.create_database("history2").unwrap();
    channel_lifecycle(Some(&url)).await;
}

/// `history`: a PostgreSQL server and the database on it that holds the history.
async fn target_lifecycle(history: Option<(&testkit::Postgres, &str)>) {
    let url = history.map(|(pg, db)| pg.url(db));
    let database_url = url.as_deref();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');",
    );
    let repo = dir.path().join("repo");
    let (_source, target, policy) =
        add_policy(&api, &admin, "nightly", &db, &repo, "", "UTC").await;
    assert!(policy.ok(), "{policy:?}");
    let policy = policy.json().as_i64().unwrap();
    api.run_policy(&admin, policy).await;

    // Renamed; credentials replaced only in pairs, and only with ones that open it.
    let rename = |name: &str, key_id: &str, secret: &str| {
        vec![
            ("id", target.to_string()),
            ("name", name.to_string()),
            ("s3_access_key_id", key_id.to_string()),
            ("s3_secret_access_key", secret.to_string()),
            ("ssh_private_key", String::new()),
        ]
    };
    let r = api
        .form(Some(&admin), "targets/edit", &rename("disk", "", ""))
        .await;
    assert!(r.ok(), "{r:?}");
    let r = api
        .form(Some(&admin), "targets/edit", &rename("disk", "AKIA", ""))
        .await;
    assert!(!r.ok() && r.body.contains("s3_secret_access_key"), "{r:?}");
    let r = api
        .form(
            Some(&admin),
            "targets/edit",
            &rename("disk", "AKIA", "secret"),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let listed = api.form(Some(&admin), "targets/list", &[]).await.json();
    assert_eq!(listed[0]["name"], "disk", "{listed}");
    assert_eq!(listed[0]["snapshots"], 1, "{listed}");

    // In use by a policy: not removed, and the message says by which.
    let r = api
        .form(
            Some(&admin),
            "targets/delete",
            &[("id", target.to_string())],
        )
        .await;
    assert!(!r.ok() && r.body.contains("nightly"), "{r:?}");

    // The policy goes (through the console where it can, else in SQL), then the target:
    // its snapshot leaves the list, the repository's files stay.
    let r = api
        .form(
            Some(&admin),
            "policies/delete",
            &[("id", policy.to_string())],
        )
        .await;
    if !r.ok() {
        let sql = format!(
            "DELETE FROM policy_copy_targets WHERE policy_id = {policy}; DELETE FROM policies WHERE id = {policy};"
        );
        match history {
            None => sqlite(&data.join("history.db"), &sql),
            Some((pg, db)) => {
                pg.psql(db, &sql).unwrap();
            }
        }
    }
    let files_before = walk(&repo);
    assert!(!files_before.is_empty());
    let r = api
        .form(
            Some(&admin),
            "targets/delete",
            &[("id", target.to_string())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.json(), json!(1), "one snapshot unlisted");
    assert_eq!(walk(&repo), files_before, "the repository is untouched");
    let listed = api.form(Some(&admin), "targets/list", &[]).await.json();
    assert_eq!(listed, json!([]));
    let snaps = api.json(Some(&admin), "snapshots/list", json!({})).await;
    if snaps.ok() {
        assert!(
            !snaps.body.contains(&format!("\"target_id\":{target}")),
            "{snaps:?}"
        );
    }
    // The same repository can be added again with its password.
    let r = api
        .form(
            Some(&admin),
            "targets/add",
            &[
                ("name", "disk-again".into()),
                ("location", repo.display().to_string()),
                ("password", "repository password".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");

    let audit = audit_actions(&api, &admin, "target.").await;
    for (action, outcome) in [
        ("target.edit", "ok"),
        ("target.edit", "failed"),
        ("target.delete", "ok"),
        ("target.delete", "failed"),
    ] {
        assert!(
            audit.iter().any(|(a, o)| a == action && o == outcome),
            "{action} {outcome} in {audit:?}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path().display().to_string(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_channel_is_changed_paused_resumed_and_deleted() {
    channel_lifecycle(None).await;
}

async fn channel_lifecycle(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let input = |id: Option<i64>, name: &str| {
        json!({"input": {"id": id, "name": name, "kind": "webhook",
            "url": "http://127.0.0.1:9/hook", "secret": "a webhook secret of some length",
            "events": ["backup.failed"], "enabled": true}})
    };
    let r = api
        .json(Some(&admin), "notify/save", input(None, "ops"))
        .await;
    assert!(r.ok(), "{r:?}");
    let id = r.json().as_i64().unwrap();
    let r = api
        .json(Some(&admin), "notify/save", input(Some(id), "ops-hook"))
        .await;
    assert!(r.ok(), "{r:?}");
    let channels = || async {
        let r = api.form(Some(&admin), "notify/channels", &[]).await;
        assert!(r.ok(), "{r:?}");
        r.json()
    };
    let listed = channels().await;
    assert_eq!(listed[0]["name"], "ops-hook", "{listed}");
    assert_eq!(listed[0]["enabled"], true, "{listed}");
    for enabled in [false, true] {
        let r = api
            .form(
                Some(&admin),
                "notify/enabled",
                &[("id", id.to_string()), ("enabled", enabled.to_string())],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        let listed = channels().await;
        assert_eq!(listed[0]["enabled"], enabled, "{listed}");
    }
    // A requester may not pause one.
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "rita".into()),
                ("role", "requester".into()),
                ("password", PW.into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let rita = cookie(&server, "rita", PW).await;
    let r = api
        .form(
            Some(&rita),
            "notify/enabled",
            &[("id", id.to_string()), ("enabled", "false".into())],
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    let r = api
        .form(Some(&admin), "notify/delete", &[("id", id.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(channels().await, json!([]));
    let audit = audit_actions(&api, &admin, "channel.").await;
    for action in [
        "channel.add",
        "channel.change",
        "channel.disable",
        "channel.enable",
        "channel.delete",
    ] {
        assert!(
            audit.iter().any(|(a, o)| a == action && o == "ok"),
            "{action} in {audit:?}"
        );
    }
}

/// Pausing a source or a target (maintenance): no backup runs (not Run now, not a
/// trigger; the policy says why and is not late), copies into a paused target are
/// skipped and say so, restores keep working; resumed, backups run again. Requesters
/// may not pause; every pause and resume is audited.
#[tokio::test]
async fn a_paused_source_or_target_is_not_backed_up_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    crate::harness::add_user(&api, &admin, "rita", "requester").await;
    let rita = cookie(&server, "rita", PW).await;
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
    );
    let (source, target, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &db,
        &dir.path().join("repo"),
        "0 2 * * *",
        "UTC",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    let copy = api
        .form(
            Some(&admin),
            "targets/add",
            &[
                ("name", "offsite".into()),
                ("location", dir.path().join("copy").display().to_string()),
                ("password", "repository password".into()),
            ],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let r = api
        .json(
            Some(&admin),
            "policies/copies",
            json!({"id": policy, "targets": [copy]}),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let token = api
        .form(
            Some(&admin),
            "policies/trigger_create",
            &[("id", policy.to_string())],
        )
        .await
        .json()
        .as_str()
        .unwrap()
        .to_string();
    let set = |who: String, what: &'static str, id: i64, paused: bool| {
        let api = &api;
        async move {
            let args = [("id", id.to_string()), ("paused", paused.to_string())];
            api.form(Some(&who), &format!("{what}/set_paused"), &args)
                .await
        }
    };
    let policy_view = || async {
        api.form(Some(&admin), "policies/list", &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == policy)
            .unwrap()
            .clone()
    };

    // A requester may not pause.
    assert!(set(rita.clone(), "sources", source, true).await.forbidden());
    // Paused source: Run now and the trigger are refused, saying what to do; the
    // policy says why it is not backed up, has no next run and is not late.
    let r = set(admin.clone(), "sources", source, true).await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(sources(&api, &admin).await[0]["paused"], true);
    let r = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await;
    // A conflict with the source's state (409), not bad input.
    assert!(
        r.status == 409
            && r.body
                .contains("Source s-nightly is paused: resume it on Sources"),
        "{r:?}"
    );
    let hook = crate::harness::client()
        .post(server.url(&format!("/hooks/policies/{policy}/backup")))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status().as_u16(), 409);
    assert!(hook.text().await.unwrap().contains("is paused"));
    let p = policy_view().await;
    assert_eq!(p["held"], "source paused", "{p}");
    assert_eq!(p["next_run"], Value::Null, "{p}");
    assert_eq!(p["late"], false, "{p}");
    // Resumed: backed up again, with a next run.
    assert!(set(admin.clone(), "sources", source, false).await.ok());
    let p = policy_view().await;
    assert_eq!(p["held"], Value::Null, "{p}");
    assert!(p["next_run"].as_i64().is_some(), "{p}");

    // A paused copy target is skipped, and the job log says so; the backup succeeds.
    assert!(set(admin.clone(), "targets", copy, true).await.ok());
    let done = api.run_policy(&admin, policy).await;
    let job = done[0]["id"].as_i64().unwrap();
    let log = api
        .form(
            Some(&admin),
            "jobs/get",
            &[("id", job.to_string()), ("after_log", "0".into())],
        )
        .await
        .json();
    assert!(
        log[1]
            .to_string()
            .contains("copy to offsite: skipped, the target is paused"),
        "{log}"
    );
    // The policy's own target paused: not backed up.
    assert!(set(admin.clone(), "targets", target, true).await.ok());
    let r = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await;
    assert!(
        r.status == 409 && r.body.contains("Target t-nightly is paused"),
        "{r:?}"
    );
    assert_eq!(policy_view().await["held"], "target paused");
    // Its snapshots still restore: browse reads them.
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json();
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert!(set(admin.clone(), "targets", target, false).await.ok());
    assert!(set(admin.clone(), "targets", copy, false).await.ok());
    api.run_policy(&admin, policy).await;

    let actions = audit_actions(&api, &admin, "").await;
    for a in [
        "source.pause",
        "source.resume",
        "target.pause",
        "target.resume",
    ] {
        assert!(
            actions.iter().any(|(x, o)| x == a && o == "ok"),
            "{a}: {actions:?}"
        );
    }
}
