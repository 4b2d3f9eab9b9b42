//! Load (issue 13): four backups running at once (`serve --jobs 4`) while fifty console
//! clients, each with its own session, load pages and list endpoints without pause.
//! Bounded in time. No request may fail, every job must succeed, none may be lost (each
//! backup is a snapshot in the history and in its repository, which verifies), and the
//! backups must really have overlapped. Run on a SQLite and on a PostgreSQL history.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, client, cookie, sqlite};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CLIENTS: usize = 50;
const ROUNDS: usize = 3;
const PW: &str = "a long enough password";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_backups_and_fifty_clients_on_a_sqlite_history() {
    load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn four_backups_and_fifty_clients_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    load(Some(&url)).await;
}

async fn load(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_env(
        Options {
            data_dir: &data,
            database_url,
            admin_password: Some(ADMIN_PASSWORD),
        },
        &[("TABLESAFE_JOBS", "4")],
    );
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    // Four sources of 40,000 rows, each with its own policy and repository.
    let mut policies = Vec::new();
    for i in 0..4 {
        let db = dir.path().join(format!("src{i}.db"));
        sqlite(
            &db,
            "CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, body TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
             INSERT INTO events SELECT i, 'k' || (i % 13), hex(randomblob(40)) FROM n;",
        );
        let (_, _, p) = add_policy(
            &api,
            &admin,
            &format!("load{i}"),
            &db,
            &dir.path().join(format!("repo{i}")),
            "",
            "UTC",
        )
        .await;
        assert!(p.ok(), "{p:?}");
        policies.push((p.json().as_i64().unwrap(), db));
    }
    // Fifty users, one session each, logged in before the load starts.
    let mut cookies = Vec::new();
    for i in 0..CLIENTS {
        let name = format!("viewer{i}");
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", name.clone()),
                    (
                        "role",
                        if i % 2 == 0 { "operator" } else { "auditor" }.into(),
                    ),
                    ("password", PW.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        cookies.push(cookie(&server, &name, PW).await);
    }

    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for (i, c) in cookies.into_iter().enumerate() {
        let (stop, requests, failures) = (stop.clone(), requests.clone(), failures.clone());
        let base = server.base.clone();
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = match n % 6 {
                    0 => http.get(format!("{base}/")),
                    1 => http.get(format!("{base}/jobs")),
                    2 => http
                        .post(format!("{base}/api/jobs/list"))
                        .form(&[("x", "")]),
                    3 => http
                        .post(format!("{base}/api/dashboard_data"))
                        .form(&[("x", "")]),
                    4 => http
                        .post(format!("{base}/api/snapshots/list"))
                        .json(&json!({"policy_id": 0, "source_id": 0, "before": null})),
                    _ => http
                        .post(format!("{base}/api/policies/list"))
                        .form(&[("x", "")]),
                };
                let r = req
                    .header("Cookie", &c)
                    .header("Origin", &base)
                    .timeout(Duration::from_secs(30))
                    .send()
                    .await;
                requests.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                    }
                    Ok(r) => {
                        let line =
                            format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                        failures.lock().unwrap().push(line);
                    }
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }

    // Rounds of four backups queued at once; at some moment they must run together.
    let started = Instant::now();
    let mut most_running = 0;
    let mut jobs = Vec::new();
    for round in 0..ROUNDS {
        for (p, db) in &policies {
            // Each round backs up changed data.
            sqlite(
                db,
                &format!("UPDATE events SET kind = 'r{round}' WHERE id % 100 = {round}"),
            );
            let r = api
                .form(Some(&admin), "policies/run", &[("id", p.to_string())])
                .await;
            assert!(r.ok(), "{r:?}");
            jobs.push(r.json().as_i64().unwrap());
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let list = api.form(Some(&admin), "jobs/list", &[]).await.json();
            let ours: Vec<_> = list
                .as_array()
                .unwrap()
                .iter()
                .filter(|j| jobs.contains(&j["id"].as_i64().unwrap()))
                .collect();
            let running = ours.iter().filter(|j| j["status"] == "running").count();
            most_running = most_running.max(running);
            if ours.len() == jobs.len()
                && ours.iter().all(|j| {
                    ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap())
                })
            {
                for j in &ours {
                    assert_eq!(j["status"], "succeeded", "{j}");
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round} did not finish: {list}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let elapsed = started.elapsed();
    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}\n{}",
        failures.len(),
        requests.load(Ordering::Relaxed),
        &failures[..failures.len().min(5)],
        server.log()
    );
    assert!(
        requests.load(Ordering::Relaxed) > CLIENTS * 10,
        "the clients barely ran"
    );
    assert!(
        most_running >= 2,
        "the backups never overlapped (at most {most_running} running)"
    );
    eprintln!(
        "{} requests from {CLIENTS} clients and {} backups in {elapsed:?}; at most {most_running} backups at once",
        requests.load(Ordering::Relaxed),
        jobs.len()
    );

    // None lost: every job made a snapshot in the history and in its repository.
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json();
    assert_eq!(snaps.as_array().unwrap().len(), ROUNDS * 4, "{snaps}");
    for i in 0..4 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
            .args(["snapshots", "--json", "--repo"])
            .arg(dir.path().join(format!("repo{i}")))
            .env("TABLESAFE_PASSWORD", "repository password")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(list.as_array().unwrap().len(), ROUNDS, "repo{i}: {list}");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
            .args(["verify", "--read-data", "--repo"])
            .arg(dir.path().join(format!("repo{i}")))
            .env("TABLESAFE_PASSWORD", "repository password")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "repo{i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
