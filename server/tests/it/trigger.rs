//! Event-driven backups: a policy's trigger URL starts a backup with its token; wrong,
//! missing and revoked tokens are refused and audited; a second trigger while a backup
//! runs is refused rather than queued beside it.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, client, cookie, sqlite};

#[tokio::test]
async fn a_trigger_url_starts_a_backup_only_with_its_token() {
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
        "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let (_, _, policy) = add_policy(
        &api,
        &admin,
        "deploys",
        &db,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    let hook = server.url(&format!("/hooks/policies/{policy}/backup"));
    let post = |token: Option<String>| {
        let mut r = client().post(&hook);
        if let Some(t) = token {
            r = r.header("Authorization", format!("Bearer {t}"));
        }
        r.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401, "no trigger yet");

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
    assert!(token.len() >= 20);
    let listed = api.form(Some(&admin), "policies/list", &[]).await;
    assert!(
        !listed.body.contains(&token),
        "the token is shown once, never listed"
    );
    assert_eq!(listed.json()[0]["has_trigger"], true);

    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("wrong".into())).await.unwrap().status(), 401);
    let ok = post(Some(token.clone())).await.unwrap();
    assert_eq!(ok.status(), 202);
    let job = ok.json::<serde_json::Value>().await.unwrap()["job"]
        .as_i64()
        .unwrap();
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(done[0]["created_by"], "scheduler", "started by no user");
    assert!(
        done[0]["title"]
            .as_str()
            .unwrap()
            .starts_with("Triggered backup")
    );
    // While a backup of the policy runs (here: on another worker), a trigger is refused
    // rather than queued beside it.
    let history = dir.path().join("data").join("history.db");
    sqlite(
        &history,
        &format!(
            "INSERT INTO jobs (kind, status, policy_id, params, title, created_at, started_at, worker, heartbeat_at) \
         VALUES ('backup', 'running', {policy}, '{{}}', 'Backup', 1, 1, 'other', strftime('%s','now') * 1000)"
        ),
    );
    assert_eq!(post(Some(token.clone())).await.unwrap().status(), 409);
    sqlite(
        &history,
        "UPDATE jobs SET status = 'failed' WHERE worker = 'other'",
    );
    assert_eq!(post(Some(token.clone())).await.unwrap().status(), 202);

    // Revoked: the old token stops working.
    assert!(
        api.form(
            Some(&admin),
            "policies/trigger_revoke",
            &[("id", policy.to_string())]
        )
        .await
        .ok()
    );
    assert_eq!(post(Some(token)).await.unwrap().status(), 401);

    let csv = client()
        .get(server.url("/audit.csv?action=policy.trigger"))
        .header("Cookie", admin.as_str())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        csv.contains(",trigger,127.0.0.1,policy.trigger,policy #1,ok,job "),
        "{csv}"
    );
    assert!(
        csv.contains(
            ",trigger,127.0.0.1,policy.trigger,policy #1,denied,missing, wrong or revoked token"
        ) || csv.contains("denied,\"missing, wrong or revoked token\""),
        "{csv}"
    );
    assert!(
        csv.contains(",admin,127.0.0.1,policy.trigger.create,policy #1,ok,"),
        "{csv}"
    );
    assert!(
        csv.contains(",admin,127.0.0.1,policy.trigger.revoke,policy #1,ok,"),
        "{csv}"
    );
}
