//! API tokens and the REST surface over HTTP, per role: what curl in a CI pipeline
//! would do. A token acts as its user with their role or a narrower one, is shown once
//! and stored hashed, stops working when revoked or when its user is disabled, and
//! cannot mint more tokens.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, client, cookie, sqlite};
use serde_json::{Value, json};

const PW: &str = "a long enough password";

async fn rest(
    server: &Server,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let url = server.url(path);
    let mut req = match method {
        "GET" => client().get(url),
        _ => client().post(url),
    };
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn token(api: &Api<'_>, cookie: &str, name: &str, role: &str) -> String {
    let r = api
        .form(
            Some(cookie),
            "tokens/create",
            &[
                ("name", name.into()),
                ("role", role.into()),
                ("days", "30".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let t = r.json().as_str().unwrap().to_string();
    assert!(t.starts_with("tsk_") && t.len() > 40, "{t}");
    t
}

#[tokio::test]
async fn api_tokens_drive_the_rest_surface_per_role() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
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
        ids.insert(role, r.json().as_i64().unwrap());
    }
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
    assert!(
        api.form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "1".into()),
                ("request_ttl_minutes", "60".into())
            ]
        )
        .await
        .ok()
    );

    let operator_c = cookie(&server, "operator", PW).await;
    let requester_c = cookie(&server, "requester", PW).await;
    let auditor_c = cookie(&server, "auditor", PW).await;
    let operator = token(&api, &operator_c, "ci", "").await;
    let narrow = token(&api, &operator_c, "ci-narrow", "requester").await;
    let requester = token(&api, &requester_c, "script", "").await;
    let auditor = token(&api, &auditor_c, "reports", "auditor").await;
    // Never wider than the user's own role.
    let wide = api
        .form(
            Some(&requester_c),
            "tokens/create",
            &[
                ("name", "x".into()),
                ("role", "admin".into()),
                ("days", "30".into()),
            ],
        )
        .await;
    assert!(wide.body.contains("narrower"), "{wide:?}");
    // A token cannot make tokens.
    let minted = client()
        .post(server.url("/api/tokens/create"))
        .header("Authorization", format!("Bearer {operator}"))
        .form(&[("name", "y"), ("role", ""), ("days", "30")])
        .send()
        .await
        .unwrap();
    assert_eq!(minted.status(), 403);
    assert_eq!(minted.json::<Value>().await.unwrap()["code"], "forbidden");

    // No token, a made-up one: 401.
    for t in [None, Some("tsk_not-a-real-token")] {
        let (status, body) = rest(&server, "GET", "/api/v1/policies", t, None).await;
        assert_eq!(status, 401, "{body}");
    }
    // Per role.
    assert_eq!(
        rest(&server, "GET", "/api/v1/policies", Some(&auditor), None)
            .await
            .0,
        200
    );
    assert_eq!(
        rest(&server, "GET", "/api/v1/policies", Some(&requester), None)
            .await
            .0,
        403
    );
    let run = format!("/api/v1/policies/{policy}/run");
    assert_eq!(
        rest(&server, "POST", &run, Some(&auditor), None).await.0,
        403
    );
    assert_eq!(
        rest(&server, "POST", &run, Some(&narrow), None).await.0,
        403,
        "acts as a requester"
    );
    let (status, body) = rest(&server, "POST", &run, Some(&operator), None).await;
    assert_eq!(status, 202, "{body}");
    let job = body["job"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = rest(
            &server,
            "GET",
            &format!("/api/v1/jobs/{job}"),
            Some(&auditor),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        if body["job"]["status"] == "succeeded" {
            assert!(body["log"].as_array().unwrap().len() > 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (_, snaps) = rest(&server, "GET", "/api/v1/snapshots", Some(&requester), None).await;
    let snapshot = snaps[0]["id"].as_i64().unwrap();
    assert_eq!(snaps[0]["rows"], 2);

    // The restore-request flow from a script: the requester files, the operator approves.
    let req = json!({"req": {"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"], "columns": {},
                             "rename": {"customers": "customers_api"}, "mode": "create", "confirm": ""},
                     "reason": "requested from a script"});
    let (status, body) = rest(
        &server,
        "POST",
        "/api/v1/requests",
        Some(&requester),
        Some(req.clone()),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["request"].as_i64().unwrap();
    let (status, bad) = rest(
        &server,
        "POST",
        "/api/v1/requests",
        Some(&requester),
        Some(json!({"reason": 1})),
    )
    .await;
    assert_eq!(status, 400, "{bad}");
    let (_, got) = rest(
        &server,
        "GET",
        &format!("/api/v1/requests/{id}"),
        Some(&operator),
        None,
    )
    .await;
    assert_eq!(got["request"]["state"], "requested", "{got}");
    let version = got["request"]["version"].clone();
    let approve = format!("/api/v1/requests/{id}/approve");
    let (status, _) = rest(
        &server,
        "POST",
        &approve,
        Some(&requester),
        Some(json!({"version": version})),
    )
    .await;
    assert_eq!(
        status, 403,
        "a requester approves nothing, least of all their own"
    );
    let (status, body) = rest(
        &server,
        "POST",
        &approve,
        Some(&operator),
        Some(json!({"version": version})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let job = body["job"]
        .as_i64()
        .expect("one approval needed: it starts");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, got) = rest(
            &server,
            "GET",
            &format!("/api/v1/requests/{id}"),
            Some(&requester),
            None,
        )
        .await;
        if got["request"]["state"] == "done" {
            assert_eq!(got["request"]["job_id"], job);
            assert_eq!(got["request"]["restored"], json!([["customers_api", 2]]));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{got}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The server functions take the same token (no cookie).
    let listed = client()
        .post(server.url("/api/policies/list"))
        .header("Authorization", format!("Bearer {auditor}"))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);

    // Listed with their last use; only a hash is stored.
    let mine = api.form(Some(&operator_c), "tokens/list", &[]).await.json();
    let ci = mine
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap()
        .clone();
    assert!(ci["last_used_at"].is_i64(), "{ci}");
    assert_eq!(ci["role"], "operator");
    let history = std::fs::read(data.join("history.db")).unwrap();
    let wal = std::fs::read(data.join("history.db-wal")).unwrap_or_default();
    for bytes in [&history, &wal] {
        assert!(
            !bytes
                .windows(operator.len())
                .any(|w| w == operator.as_bytes()),
            "token stored in the clear"
        );
    }
    // The audit log says who did it.
    let audit = api
        .form(
            Some(&admin),
            "audit/list",
            &[
                ("user", "operator".into()),
                ("action", "policy.run".into()),
                ("outcome", "ok".into()),
            ],
        )
        .await
        .json();
    assert!(!audit.as_array().unwrap().is_empty(), "{audit}");

    // Revoked: 401 at once.
    let r = api
        .form(
            Some(&operator_c),
            "tokens/revoke",
            &[("id", ci["id"].to_string())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(
        rest(&server, "GET", "/api/v1/jobs", Some(&operator), None)
            .await
            .0,
        401
    );
    // Another user's token cannot be revoked by someone else.
    let theirs = api
        .form(Some(&requester_c), "tokens/list", &[])
        .await
        .json()[0]["id"]
        .clone();
    assert!(
        api.form(
            Some(&operator_c),
            "tokens/revoke",
            &[("id", theirs.to_string())]
        )
        .await
        .not_found()
    );
    // A disabled user's tokens stop working.
    assert_eq!(
        rest(&server, "GET", "/api/v1/jobs", Some(&requester), None)
            .await
            .0,
        200
    );
    assert!(
        api.form(
            Some(&admin),
            "users/set_disabled",
            &[
                ("id", ids["requester"].to_string()),
                ("disabled", "true".into())
            ]
        )
        .await
        .ok()
    );
    assert_eq!(
        rest(&server, "GET", "/api/v1/jobs", Some(&requester), None)
            .await
            .0,
        401
    );
}
