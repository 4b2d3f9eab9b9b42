//! `/api/v1` against its own description: every route is called for real with tokens
//! of each role, in success and in each error its description lists (401 without a
//! token, 403 for a role without the right, 404 for an unknown id, 400 for a bad id,
//! query or body, 409 for a conflict), and each real answer's status and body are
//! checked against the served `/api/v1/openapi.json` (JSON Schema 2020-12, its `$ref`s
//! resolved in the document). A route, or a status of a route, that is described but
//! never answered here fails the test, as does an answer that is not described.
//! Beside it: what a script meets outside the routes (an unknown path, a wrong
//! method, a server function's refusal) has the same error shape; a restore request
//! needs only its required fields; a refusal names the API's fields, not the command
//! line's flags, and shows a requester no file path of the server.

use crate::harness::{
    ADMIN_PASSWORD, Api, Options, Server, USER_PASSWORD, add_policy, add_user, client, cookie,
    sqlite,
};
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// The served description and what the test has seen answered.
struct Checked {
    doc: Value,
    /// (method, path template, status) of every checked answer.
    seen: BTreeSet<(String, String, u16)>,
}

impl Checked {
    /// The JSON Schema of `schema` (a part of the description), with the description's
    /// components beside it so `#/components/schemas/…` resolves.
    fn validator(&self, schema: &Value) -> jsonschema::Validator {
        let mut root = schema.clone();
        if let Value::Object(map) = &mut root {
            map.insert("components".into(), self.doc["components"].clone());
        } else {
            panic!("not a schema: {schema}");
        }
        jsonschema::draft202012::new(&root).unwrap_or_else(|e| panic!("{e}: {root}"))
    }

    fn assert_valid(&self, schema: &Value, body: &Value, what: &str) {
        let validator = self.validator(schema);
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match its description: {errors:?}\nbody: {body}\nschema: {schema}"
        );
    }

    /// Calls `method path` (the concrete path; `template` is the description's) and
    /// checks the answer against the description; returns (status, body).
    async fn call(
        &mut self,
        server: &Server,
        (method, template, path): (&str, &str, &str),
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
        let content_type = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let text = resp.text().await.unwrap();
        let what = format!("{method} {path} → {status}");
        assert!(
            content_type.starts_with("application/json"),
            "{what}: content-type {content_type:?}: {text}"
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not described");
        let described = &op["responses"][status.to_string()];
        assert!(
            described.is_object(),
            "{what}: status {status} is not described for {method} {template}: {body}"
        );
        let schema = &described["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{what}: no schema described");
        self.assert_valid(schema, &body, &what);
        self.seen
            .insert((method.to_string(), template.to_string(), status));
        (status, body)
    }

    /// The error body's schema, for answers outside the described routes.
    fn assert_error_body(&self, body: &Value, what: &str) {
        let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
        self.assert_valid(&schema, body, what);
    }
}

async fn token(api: &Api<'_>, cookie: &str, name: &str) -> String {
    let r = api
        .form(
            Some(cookie),
            "tokens/create",
            &[
                ("name", name.into()),
                ("role", String::new()),
                ("days", "30".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    r.json().as_str().unwrap().to_string()
}

#[tokio::test]
async fn every_route_answers_as_its_openapi_description_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let requester_id = add_user(&api, &admin, "requester", "requester").await;
    add_user(&api, &admin, "operator", "operator").await;
    add_user(&api, &admin, "auditor", "auditor").await;
    let operator = token(
        &api,
        &cookie(&server, "operator", USER_PASSWORD).await,
        "ci",
    )
    .await;
    let requester = token(
        &api,
        &cookie(&server, "requester", USER_PASSWORD).await,
        "script",
    )
    .await;
    let auditor = token(
        &api,
        &cookie(&server, "auditor", USER_PASSWORD).await,
        "reports",
    )
    .await;

    // A source with a table, a target and a policy; an empty database to restore into,
    // and one whose file will be gone. The requester may use all three sources.
    let shop = dir.path().join("shop.db");
    sqlite(
        &shop,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');",
    );
    let (source, _, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &shop,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    let mut sources = vec![source];
    for name in ["scratch", "gone"] {
        let file = dir.path().join(format!("{name}.db"));
        std::fs::write(&file, b"").unwrap();
        let r = api
            .form(
                Some(&admin),
                "sources/add",
                &[
                    ("name", name.into()),
                    ("url", format!("sqlite://{}", file.display())),
                ],
            )
            .await;
        sources.push(r.json().as_i64().unwrap_or_else(|| panic!("{r:?}")));
    }
    let (scratch, gone) = (sources[1], sources[2]);
    for s in &sources {
        let r = api
            .form(
                Some(&admin),
                "users/grant",
                &[
                    ("user_id", requester_id.to_string()),
                    ("source_id", s.to_string()),
                    ("granted", "true".into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
    }
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

    // The description itself, without a token.
    let resp = client()
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"], "bearer",
        "{}",
        doc["components"]
    );
    let mut c = Checked {
        doc,
        seen: BTreeSet::new(),
    };
    // The checks bite: a body the description does not allow fails them.
    let error_body = json!({"$ref": "#/components/schemas/ErrorBody"});
    assert!(
        !c.validator(&error_body)
            .is_valid(&json!({"error": "x", "code": "teapot"}))
    );
    assert!(!c.validator(&error_body).is_valid(&json!({"message": "x"})));
    c.call(
        &server,
        ("GET", "/api/v1/openapi.json", "/api/v1/openapi.json"),
        None,
        None,
    )
    .await;

    // Policies: 200, 401 without a token or with a made-up one, 403 for a requester.
    let list = ("GET", "/api/v1/policies", "/api/v1/policies");
    let (_, policies) = c.call(&server, list, Some(&auditor), None).await;
    assert_eq!(policies[0]["name"], "nightly");
    for t in [None, Some("tsk_not-a-real-token")] {
        let (status, body) = c.call(&server, list, t, None).await;
        assert_eq!(
            (status, &body["code"]),
            (401, &json!("unauthenticated")),
            "{body}"
        );
    }
    let (status, body) = c.call(&server, list, Some(&requester), None).await;
    assert_eq!(
        (status, &body["code"]),
        (403, &json!("forbidden")),
        "{body}"
    );

    // Run: 202, 400 for an id that is not a number, 403, 404, 409 while paused.
    let run_t = "/api/v1/policies/{id}/run";
    let run = format!("/api/v1/policies/{policy}/run");
    let (status, started) = c
        .call(&server, ("POST", run_t, &run), Some(&operator), None)
        .await;
    assert_eq!(status, 202, "{started}");
    let job = started["job"].as_i64().unwrap();
    c.call(&server, ("POST", run_t, &run), None, None).await;
    let (status, _) = c
        .call(&server, ("POST", run_t, &run), Some(&auditor), None)
        .await;
    assert_eq!(status, 403);
    let (status, body) = c
        .call(
            &server,
            ("POST", run_t, "/api/v1/policies/abc/run"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("id")), "{body}");
    let (status, _) = c
        .call(
            &server,
            ("POST", run_t, "/api/v1/policies/999999/run"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let pause = |paused: bool| {
        let api = &api;
        let admin = &admin;
        async move {
            let r = api
                .form(
                    Some(admin),
                    "sources/set_paused",
                    &[("id", source.to_string()), ("paused", paused.to_string())],
                )
                .await;
            assert!(r.ok(), "{r:?}");
        }
    };
    pause(true).await;
    let (status, body) = c
        .call(&server, ("POST", run_t, &run), Some(&operator), None)
        .await;
    assert_eq!((status, &body["code"]), (409, &json!("conflict")), "{body}");
    pause(false).await;

    // Jobs and one job: 200 (waiting for the backup), 400 for a bad query or status,
    // 401, 404, 400 for an id that is not a number.
    let job_t = "/api/v1/jobs/{id}";
    let job_path = format!("/api/v1/jobs/{job}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (status, body) = c
            .call(&server, ("GET", job_t, &job_path), Some(&auditor), None)
            .await;
        assert_eq!(status, 200, "{body}");
        if body["job"]["status"] == "succeeded" {
            assert!(!body["log"].as_array().unwrap().is_empty(), "{body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    c.call(&server, ("GET", job_t, &job_path), None, None).await;
    let (status, _) = c
        .call(
            &server,
            ("GET", job_t, "/api/v1/jobs/999999"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = c
        .call(
            &server,
            ("GET", job_t, "/api/v1/jobs/x1"),
            Some(&auditor),
            None,
        )
        .await;
    assert_eq!(status, 400);
    let jobs_t = "/api/v1/jobs";
    let (_, jobs) = c
        .call(
            &server,
            ("GET", jobs_t, "/api/v1/jobs?status=succeeded"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(jobs[0]["id"], job, "{jobs}");
    c.call(&server, ("GET", jobs_t, jobs_t), None, None).await;
    let (status, body) = c
        .call(
            &server,
            ("GET", jobs_t, "/api/v1/jobs?status=lost"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!((status, &body["field"]), (400, &json!("status")), "{body}");
    let (status, _) = c
        .call(
            &server,
            ("GET", jobs_t, "/api/v1/jobs?before=yesterday"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // Snapshots: 200 (the requester sees the granted source's), 400, 401.
    let snaps_t = "/api/v1/snapshots";
    let (_, snaps) = c
        .call(&server, ("GET", snaps_t, snaps_t), Some(&requester), None)
        .await;
    let snapshot = snaps[0]["id"].as_i64().unwrap();
    assert_eq!(snaps[0]["rows"], 2, "{snaps}");
    c.call(&server, ("GET", snaps_t, snaps_t), None, None).await;
    let (status, _) = c
        .call(
            &server,
            ("GET", snaps_t, "/api/v1/snapshots?policy_id=all"),
            Some(&requester),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // Filing: only the required fields (columns, rename, confirm, tables take their
    // defaults), 201.
    let file = ("POST", "/api/v1/requests", "/api/v1/requests");
    let minimal = json!({"req": {"snapshot": snapshot, "dest_source_id": scratch, "mode": "create"},
                         "reason": "a copy to look at"});
    let (status, body) = c.call(&server, file, Some(&requester), Some(minimal)).await;
    assert_eq!(status, 201, "{body}");
    let (status, filed) = c
        .call(
            &server,
            file,
            Some(&requester),
            Some(
                json!({"req": {"snapshot": snapshot, "dest_source_id": source, "mode": "create",
                                "rename": {"customers": "customers_api"}},
                        "reason": "requested from a script"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{filed}");
    let id = filed["request"].as_i64().unwrap();
    // 400: a body that is not the request's shape, and one that is not JSON at all.
    let (status, body) = c
        .call(&server, file, Some(&requester), Some(json!({"reason": 1})))
        .await;
    assert_eq!(status, 400, "{body}");
    let raw = client()
        .post(server.url("/api/v1/requests"))
        .header("Authorization", format!("Bearer {requester}"))
        .header("Content-Type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let raw: Value = raw.json().await.unwrap();
    c.assert_error_body(&raw, "a body that is not JSON");
    assert!(raw["error"].as_str().unwrap().contains("JSON"), "{raw}");
    // 400 that names the API's fields: the table exists and no new name was given.
    let (status, body) = c
        .call(
            &server,
            file,
            Some(&requester),
            Some(
                json!({"req": {"snapshot": snapshot, "dest_source_id": source, "mode": "create"},
                        "reason": "over the top"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("\"mode\": \"replace\"")
            && message.contains("\"rename\": {\"customers\": \"NEW\"}")
            && message.contains("source \"s-nightly\""),
        "{message}"
    );
    for cli_or_console in ["--", "wizard", "suffix"] {
        assert!(!message.contains(cli_or_console), "{message}");
    }
    // …and no file path of the server, to a requester: not the source's file, nor,
    // when a destination's file is gone, that file.
    std::fs::remove_file(dir.path().join("gone.db")).unwrap();
    let (status, body) = c
        .call(
            &server,
            file,
            Some(&requester),
            Some(
                json!({"req": {"snapshot": snapshot, "dest_source_id": gone, "mode": "create"},
                        "reason": "into a file that is gone"}),
            ),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let shown = body["error"].as_str().unwrap();
    let tmp = dir.path().display().to_string();
    assert!(
        !shown.contains(&tmp) && !message.contains(&tmp) && shown.contains("source \"gone\""),
        "a path reached a requester: {shown}"
    );
    // 403: an auditor files nothing; 404: a snapshot that does not exist; 401.
    let (status, _) = c
        .call(
            &server,
            file,
            Some(&auditor),
            Some(
                json!({"req": {"snapshot": snapshot, "dest_source_id": scratch, "mode": "create"},
                        "reason": "x"}),
            ),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = c
        .call(
            &server,
            file,
            Some(&requester),
            Some(
                json!({"req": {"snapshot": 999999, "dest_source_id": scratch, "mode": "create"},
                        "reason": "x"}),
            ),
        )
        .await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("not_found")),
        "{body}"
    );
    c.call(
        &server,
        file,
        None,
        Some(
            json!({"req": {"snapshot": snapshot, "dest_source_id": scratch, "mode": "create"},
                    "reason": "x"}),
        ),
    )
    .await;

    // One request: 200, 400, 401, 404.
    let req_t = "/api/v1/requests/{id}";
    let req_path = format!("/api/v1/requests/{id}");
    let (_, got) = c
        .call(&server, ("GET", req_t, &req_path), Some(&operator), None)
        .await;
    assert_eq!(got["request"]["state"], "requested", "{got}");
    let version = got["request"]["version"].clone();
    c.call(&server, ("GET", req_t, &req_path), None, None).await;
    let (status, _) = c
        .call(
            &server,
            ("GET", req_t, "/api/v1/requests/999999"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _) = c
        .call(
            &server,
            ("GET", req_t, "/api/v1/requests/first"),
            Some(&operator),
            None,
        )
        .await;
    assert_eq!(status, 400);

    // Approving: 403 for the requester, 400 for a bad body, 404, 401, 200 (the last
    // approval starts the restore), then 409: already decided.
    let ap_t = "/api/v1/requests/{id}/approve";
    let ap = format!("/api/v1/requests/{id}/approve");
    let (status, _) = c
        .call(
            &server,
            ("POST", ap_t, &ap),
            Some(&requester),
            Some(json!({"version": version})),
        )
        .await;
    assert_eq!(status, 403);
    let (status, _) = c
        .call(
            &server,
            ("POST", ap_t, &ap),
            Some(&operator),
            Some(json!({"v": 1})),
        )
        .await;
    assert_eq!(status, 400);
    let (status, _) = c
        .call(
            &server,
            ("POST", ap_t, "/api/v1/requests/999999/approve"),
            Some(&operator),
            Some(json!({"version": version})),
        )
        .await;
    assert_eq!(status, 404);
    c.call(
        &server,
        ("POST", ap_t, &ap),
        None,
        Some(json!({"version": version})),
    )
    .await;
    let (status, body) = c
        .call(
            &server,
            ("POST", ap_t, &ap),
            Some(&operator),
            Some(json!({"version": version})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["job"].is_i64(),
        "one approval needed: it starts: {body}"
    );
    let (status, body) = c
        .call(
            &server,
            ("POST", ap_t, &ap),
            Some(&operator),
            Some(json!({"version": version})),
        )
        .await;
    assert_eq!((status, &body["code"]), (409, &json!("conflict")), "{body}");

    // Every described route and status (but 500, a fault of the server) was answered.
    let mut missing = Vec::new();
    for (path, item) in c.doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for status in op["responses"].as_object().unwrap().keys() {
                let key = (method.to_uppercase(), path.clone(), status.parse().unwrap());
                if status != "500" && !c.seen.contains(&key) {
                    missing.push(key);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "described but never answered: {missing:?}"
    );

    // Outside the routes, the same error shape: an unknown path, a wrong method, a
    // server function's refusal and its bad arguments.
    for (method, path, status) in [
        ("GET", "/api/v1/backups", 404),
        ("GET", "/api/no-such-function", 404),
        ("POST", "/api/no-such-function", 404),
        ("GET", "/api/v1/requests", 405),
        ("POST", "/api/policies/list", 403),
        ("POST", "/api/jobs/get", 400),
    ] {
        let req = match method {
            "GET" => client().get(server.url(path)),
            _ => client().post(server.url(path)).form(&[("id", "x")]),
        };
        let resp = req
            .header("Authorization", format!("Bearer {requester}"))
            .send()
            .await
            .unwrap();
        let what = format!("{method} {path}");
        assert_eq!(resp.status().as_u16(), status, "{what}");
        let body: Value = resp.json().await.unwrap();
        c.assert_error_body(&body, &what);
    }
}
