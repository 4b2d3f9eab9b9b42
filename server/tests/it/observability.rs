//! `/metrics`, `/healthz` and `/readyz` after real jobs: the values a Prometheus scrape
//! reads are the ones the jobs produced.

use crate::harness::{
    ADMIN_PASSWORD, Api, Options, Server, add_policy, client, cookie, login, sqlite,
};

/// The value of the sample `name` (with its labels exactly as written), if present.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn metrics_count_real_jobs_and_the_probes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        Options {
            data_dir: &dir.path().join("data"),
            database_url: None,
            admin_password: Some(ADMIN_PASSWORD),
        },
        &[("TABLESAFE_METRICS_TOKEN", "scrape-token-123")],
    );
    let api = Api { server: &server };
    let http = client();
    for (path, body) in [("/healthz", "ok"), ("/readyz", "ready\n")] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), body);
    }
    // Without the token, or with a wrong one, nothing is shown.
    for auth in [None, Some("Bearer wrong")] {
        let mut req = http.get(server.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(!r.text().await.unwrap().contains("tablesafe_"));
    }

    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    assert!(login(&server, "admin", "wrong password").await.status() != 200);
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000) \
         INSERT INTO t SELECT i, printf('row %d of the table', i) FROM n;",
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
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    api.run_policy(&admin, policy).await;
    api.run_policy(&admin, policy).await;
    // A job that fails: its source file is gone.
    std::fs::remove_file(&db).unwrap();
    let job = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await
        .json()
        .as_i64()
        .unwrap();
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "failed");

    let text = http
        .get(server.url("/metrics"))
        .header("Authorization", "Bearer scrape-token-123")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let get = |name: &str| sample(&text, name).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    assert_eq!(
        get(r#"tablesafe_jobs_total{kind="backup",outcome="succeeded"}"#),
        2.0
    );
    assert_eq!(
        get(r#"tablesafe_jobs_total{kind="backup",outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        get(r#"tablesafe_job_duration_seconds_count{kind="backup"}"#),
        3.0
    );
    assert!(get(r#"tablesafe_job_duration_seconds_sum{kind="backup"}"#) > 0.0);
    // Two backups read the table twice; the second stored (almost) nothing new.
    let read = get("tablesafe_backup_bytes_read_total");
    let stored = get("tablesafe_backup_bytes_stored_total");
    assert!(read > 2.0 * 5000.0 * 15.0, "{read}");
    assert!(stored > 0.0 && stored < read, "{stored} of {read}");
    assert_eq!(
        get(r#"tablesafe_target_stored_bytes{target="t-nightly"}"#),
        stored
    );
    let last = get(r#"tablesafe_last_backup_success_timestamp_seconds{policy="nightly"}"#);
    assert!(
        last >= before.floor() && last <= before + 120.0,
        "{last} vs {before}"
    );
    assert_eq!(get(r#"tablesafe_jobs{status="queued"}"#), 0.0);
    assert_eq!(get(r#"tablesafe_jobs{status="running"}"#), 0.0);
    assert_eq!(get("tablesafe_login_failures_total"), 1.0);
    assert!(
        text.contains("# TYPE tablesafe_jobs_total counter"),
        "{text}"
    );
}
