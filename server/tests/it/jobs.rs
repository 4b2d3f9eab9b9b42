//! Jobs are durable: queued jobs survive a restart, a job that was running when the
//! server died is failed with the reason and can be retried, progress is visible while
//! a job runs, and Cancel stops it.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use std::path::Path;
use std::time::{Duration, Instant};

/// A source, a target and a policy; returns the policy id.
async fn setup(api: &Api<'_>, admin: &str, dir: &Path, db: &Path) -> i64 {
    let (_, _, policy) = add_policy(api, admin, "nightly", db, &dir.join("repo"), "", "").await;
    assert!(policy.ok(), "{policy:?}");
    policy.json().as_i64().unwrap()
}

fn start(data: &Path) -> Server {
    Server::start(Options {
        data_dir: data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    })
}

#[tokio::test]
async fn jobs_survive_a_restart_and_an_interrupted_one_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let policy = setup(&api, &admin, dir.path(), &db).await;
    server.stop();

    // While the server is down: one job was running (its worker died with it), one was
    // queued.
    sqlite(
        &data.join("history.db"),
        &format!(
            "INSERT INTO jobs (kind, status, policy_id, params, title, created_by, created_at, started_at, worker, heartbeat_at) \
             VALUES ('backup', 'running', {policy}, '{{\"kind\":\"backup\",\"policy_id\":{policy}}}', 'Backup: nightly', 1, 1, 1, 'gone-worker', 1);
             INSERT INTO jobs (kind, status, policy_id, params, title, created_by, created_at) \
             VALUES ('backup', 'queued', {policy}, '{{\"kind\":\"backup\",\"policy_id\":{policy}}}', 'Backup: nightly', 1, 2);"
        ),
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let interrupted = api.wait_job(&admin, 1).await;
    assert_eq!(interrupted[0]["status"], "failed");
    assert!(
        interrupted[0]["error"]
            .as_str()
            .unwrap()
            .contains("server stopped"),
        "{interrupted}"
    );
    let queued = api.wait_job(&admin, 2).await;
    assert_eq!(
        queued[0]["status"], "succeeded",
        "the queued job ran after the restart: {queued}"
    );

    let retry = api
        .form(Some(&admin), "jobs/retry", &[("id", "1".into())])
        .await;
    assert!(retry.ok(), "{retry:?}");
    let retried = api.wait_job(&admin, retry.json().as_i64().unwrap()).await;
    assert_eq!(retried[0]["status"], "succeeded", "{retried}");
    let logs: Vec<String> = retried[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    assert!(logs.iter().any(|l| l.starts_with("snapshot ")), "{logs:?}");
    // A finished job cannot be retried or cancelled.
    assert!(
        !api.form(Some(&admin), "jobs/retry", &[("id", "2".into())])
            .await
            .ok()
    );
    assert!(
        !api.form(Some(&admin), "jobs/cancel", &[("id", "2".into())])
            .await
            .ok()
    );
}

/// A backup no one started by hand (a scheduled slot) whose worker died is queued again
/// once, and runs; one a user started is failed for them to retry, not run again.
#[tokio::test]
async fn an_abandoned_scheduled_backup_runs_again_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let scheduled = setup(&api, &admin, dir.path(), &db).await;
    let (_, _, by_hand) = add_policy(
        &api,
        &admin,
        "by-hand",
        &db,
        &dir.path().join("repo2"),
        "",
        "",
    )
    .await;
    let by_hand = by_hand.json().as_i64().unwrap();
    server.stop();
    // Both were running when their worker died: the scheduler's (no user) and one a
    // user started.
    let job = |policy: i64, title: &str, by: &str| {
        format!(
            "INSERT INTO jobs (kind, status, policy_id, params, title, created_by, created_at, started_at, worker, heartbeat_at) \
             VALUES ('backup', 'running', {policy}, '{{\"kind\":\"backup\",\"policy_id\":{policy}}}', '{title}', {by}, 1, 1, 'gone-worker', 1);"
        )
    };
    sqlite(
        &data.join("history.db"),
        &(job(scheduled, "Scheduled backup: nightly", "NULL")
            + &job(by_hand, "Backup: by-hand", "1")),
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let again = api.wait_job(&admin, 3).await;
    assert_eq!(again[0]["status"], "succeeded", "{again}");
    assert_eq!(again[0]["title"], "Scheduled backup: nightly", "{again}");
    let mut logs = Vec::new();
    for id in [1, 2] {
        let failed = api.wait_job(&admin, id).await;
        assert_eq!(failed[0]["status"], "failed");
        logs.push(failed[1].to_string());
    }
    assert!(logs[0].contains("queued again as job 3"), "{}", logs[0]);
    assert!(!logs[1].contains("queued again"), "{}", logs[1]);
    // Once: no other job appears, for either policy.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let jobs = api.form(Some(&admin), "jobs/list", &[]).await.json();
    assert_eq!(jobs.as_array().unwrap().len(), 3, "{jobs}");
}

#[tokio::test]
async fn a_running_backup_reports_progress_and_stops_when_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("big.db");
    // Big enough that the backup runs for a while: ~300 MB of incompressible rows.
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
         INSERT INTO t SELECT i, randomblob(1000) FROM n;",
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let policy = setup(&api, &admin, dir.path(), &db).await;
    let job = api
        .form(Some(&admin), "policies/run", &[("id", policy.to_string())])
        .await
        .json()
        .as_i64()
        .unwrap();

    // Progress shows up while it runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let j = api
            .form(
                Some(&admin),
                "jobs/get",
                &[("id", job.to_string()), ("after_log", "0".into())],
            )
            .await
            .json();
        if j[0]["status"] == "running" && j[0]["rows_done"].as_i64().unwrap() > 0 {
            assert_eq!(j[0]["current_table"], "t");
            // A first backup (no earlier snapshot to compare with) still has a total:
            // the source's own count, so the page shows a percentage and time left.
            assert_eq!(j[0]["rows_total"], 300_000, "{j}");
            break;
        }
        assert!(
            j[0]["status"] != "succeeded",
            "finished before progress was seen: {j}"
        );
        assert!(Instant::now() < deadline, "no progress: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = api
        .form(Some(&admin), "jobs/cancel", &[("id", job.to_string())])
        .await;
    assert!(cancel.ok(), "{cancel:?}");
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "cancelled", "{done}");
    // It shows where it stopped: rows done short of the total.
    let stopped_at = done[0]["rows_done"].as_i64().unwrap();
    assert!(stopped_at > 0 && stopped_at < 300_000, "{done}");
    // A cancelled backup made no snapshot.
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            serde_json::json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json();
    assert_eq!(snaps.as_array().unwrap().len(), 0);
}

/// The job's status and log lines, from `jobs/get`.
async fn job_state(api: &Api<'_>, admin: &str, job: i64) -> (serde_json::Value, Vec<String>) {
    let j = api
        .form(
            Some(admin),
            "jobs/get",
            &[("id", job.to_string()), ("after_log", "0".into())],
        )
        .await
        .json();
    let logs = j[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    (j[0].clone(), logs)
}

/// Runs the policy and waits until its backup is running and has made progress.
async fn running_backup(api: &Api<'_>, admin: &str, policy: i64) -> i64 {
    let job = api
        .form(Some(admin), "policies/run", &[("id", policy.to_string())])
        .await
        .json()
        .as_i64()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (j, _) = job_state(api, admin, job).await;
        if j["status"] == "running" && j["rows_done"].as_i64().unwrap() > 0 {
            return job;
        }
        assert!(j["status"] == "queued" || j["status"] == "running", "{j}");
        assert!(Instant::now() < deadline, "no progress: {j}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the worker says it stopped the job; fails if a snapshot of it turns up
/// in the history meanwhile (the job carried on and recorded its result).
async fn wait_stopped(api: &Api<'_>, admin: &str, job: i64) -> (serde_json::Value, Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (j, logs) = job_state(api, admin, job).await;
        let snaps = api
            .json(
                Some(admin),
                "snapshots/list",
                serde_json::json!({"policy_id": 0, "source_id": 0, "before": null}),
            )
            .await
            .json();
        assert_eq!(
            snaps.as_array().unwrap().len(),
            0,
            "the job carried on and recorded a snapshot: {j} {logs:?}"
        );
        if logs.iter().any(|l| l.contains("stopped this job")) {
            return (j, logs);
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not stop: {j} {logs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

/// A running job taken away from its worker in the history database — failed as
/// abandoned by another worker's sweep (what `fail_abandoned` writes), or its lease
/// handed to another worker — is stopped by its worker at the next heartbeat: no
/// snapshot in the repository or the history, and the outcome stays the new owner's.
#[tokio::test]
async fn a_job_taken_over_by_another_worker_stops_and_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let db = dir.path().join("big.db");
    // ~300 MB of incompressible rows: the backup runs for a while.
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
         INSERT INTO t SELECT i, randomblob(1000) FROM n;",
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let policy = setup(&api, &admin, dir.path(), &db).await;
    let history = data.join("history.db");
    let repo_snapshots = || {
        std::fs::read_dir(dir.path().join("repo").join("snapshots"))
            .map(|d| d.count())
            .unwrap_or(0)
    };

    // Another worker's sweep fails it as abandoned.
    let job = running_backup(&api, &admin, policy).await;
    sqlite(
        &history,
        &format!(
            "UPDATE jobs SET status = 'failed', finished_at = {}, \
             error = 'the server stopped while this job was running; retry it' \
             WHERE id = {job} AND status = 'running'",
            now_ms()
        ),
    );
    let (j, logs) = wait_stopped(&api, &admin, job).await;
    assert_eq!(j["status"], "failed", "{j}");
    assert!(
        j["error"].as_str().unwrap().contains("server stopped"),
        "the takeover's outcome stands: {j}"
    );
    assert!(!logs.iter().any(|l| l.starts_with("snapshot ")), "{logs:?}");
    assert_eq!(repo_snapshots(), 0, "no snapshot written: {logs:?}");

    // Its lease handed to another worker: it stays that worker's.
    let job = running_backup(&api, &admin, policy).await;
    sqlite(
        &history,
        &format!(
            "UPDATE jobs SET worker = 'another-worker', heartbeat_at = {} WHERE id = {job}",
            now_ms()
        ),
    );
    let (j, logs) = wait_stopped(&api, &admin, job).await;
    // The heartbeat stopped for good: nothing this worker does touches the row.
    let before = j["rows_done"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (j, _) = job_state(&api, &admin, job).await;
    assert_eq!(j["status"], "running", "left to its new owner: {j}");
    assert_eq!(j["rows_done"].as_i64().unwrap(), before, "{j}");
    assert_eq!(repo_snapshots(), 0, "no snapshot written: {logs:?}");
    let log = server.stop();
    assert!(
        log.contains("no longer running on this worker"),
        "the server log says why: {log}"
    );
}
