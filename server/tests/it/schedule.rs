//! The scheduler: a cron policy runs by itself; slots missed while the server was down
//! run once; a policy never has two backups at once; bad schedules are refused.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

async fn policy(
    api: &Api<'_>,
    admin: &str,
    dir: &Path,
    schedule: &str,
    timezone: &str,
) -> Result<i64, String> {
    let db = dir.join("shop.db");
    if !db.exists() {
        sqlite(
            &db,
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
        );
    }
    let name = format!("p{}", rand_suffix());
    let (_, _, r) = add_policy(
        api,
        admin,
        &name,
        &db,
        &dir.join(format!("repo-{name}")),
        schedule,
        timezone,
    )
    .await;
    if r.ok() {
        Ok(r.json().as_i64().unwrap())
    } else {
        Err(r.body)
    }
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        % 1_000_000_007
}

async fn scheduled_jobs(api: &Api<'_>, admin: &str, policy_title: &str) -> Vec<Value> {
    api.form(Some(admin), "jobs/list", &[])
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| {
            j["title"].as_str().unwrap().starts_with("Scheduled backup")
                && j["title"].as_str().unwrap().ends_with(policy_title)
        })
        .cloned()
        .collect()
}

fn start(data: &Path) -> Server {
    Server::start(Options {
        data_dir: data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    })
}

#[tokio::test]
async fn a_cron_policy_runs_by_itself_and_shows_its_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let id = policy(&api, &admin, dir.path(), "* * * * *", "Europe/Berlin")
        .await
        .unwrap();
    let listed = api.form(Some(&admin), "policies/list", &[]).await.json();
    let p = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id)
        .unwrap()
        .clone();
    let next = p["next_run"].as_i64().expect("a next run");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        next > now && next <= now + 60_000 && next % 60_000 == 0,
        "{next} vs {now}"
    );
    let name = p["name"].as_str().unwrap().to_string();
    // Within a minute (plus a scheduler tick) the backup runs without anyone asking.
    let deadline = Instant::now() + Duration::from_secs(80);
    loop {
        let jobs = scheduled_jobs(&api, &admin, &name).await;
        if let Some(j) = jobs.first()
            && j["status"] == "succeeded"
        {
            assert_eq!(j["created_by"], "scheduler");
            break;
        }
        assert!(Instant::now() < deadline, "no scheduled backup ran");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dash = api.form(Some(&admin), "dashboard_data", &[]).await.json();
    let health = dash["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == format!("s-{name}"))
        .unwrap()
        .clone();
    assert!(health["next_run"].as_i64().unwrap() > next, "{health}");
    assert!(health["last_success_ms"].as_i64().is_some());
}

#[tokio::test]
async fn missed_slots_run_once_and_never_beside_a_running_backup() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let missed = policy(&api, &admin, dir.path(), "every 15 minutes", "UTC")
        .await
        .unwrap();
    let busy = policy(&api, &admin, dir.path(), "hourly", "UTC")
        .await
        .unwrap();
    server.stop();

    // Down for three hours: twelve slots of `missed` passed. `busy` is due too, but a
    // backup of it is still running on another worker.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    sqlite(
        &data.join("history.db"),
        &format!(
            "UPDATE policies SET next_run_at = {} WHERE id IN ({missed}, {busy});
             INSERT INTO jobs (kind, status, policy_id, params, title, created_at, started_at, worker, heartbeat_at)
             VALUES ('backup', 'running', {busy}, '{{\"kind\":\"backup\",\"policy_id\":{busy}}}', 'Backup', {now}, {now}, 'other-worker', {now});",
            now - 3 * 3_600_000
        ),
    );
    let server = start(&data);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let policies = api.form(Some(&admin), "policies/list", &[]).await.json();
    let name_of = |id: i64| {
        policies
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .unwrap()["name"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (missed_name, busy_name) = (name_of(missed), name_of(busy));
    loop {
        let jobs = scheduled_jobs(&api, &admin, &missed_name).await;
        if jobs.iter().any(|j| j["status"] == "succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "the missed slot did not run");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Two more scheduler ticks: still exactly one run for twelve missed slots, and none
    // for the policy whose backup is running. (A quarter hour that begins meanwhile is
    // a new slot, run as it should be: only jobs queued before it count.)
    tokio::time::sleep(Duration::from_secs(11)).await;
    let next_slot = (now / 900_000 + 1) * 900_000;
    let for_missed = scheduled_jobs(&api, &admin, &missed_name).await;
    assert_eq!(
        for_missed
            .iter()
            .filter(|j| j["created_at"].as_i64().unwrap() < next_slot)
            .count(),
        1,
        "{for_missed:?}"
    );
    assert_eq!(scheduled_jobs(&api, &admin, &busy_name).await.len(), 0);
    let policies = api.form(Some(&admin), "policies/list", &[]).await.json();
    let next = policies
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == missed)
        .unwrap()["next_run"]
        .as_i64()
        .unwrap();
    assert!(
        next > now && next % 900_000 == 0,
        "the next slot is after now: {next}"
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_next_to_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir.path().join("data"));
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let bad_zone = policy(&api, &admin, dir.path(), "0 2 * * *", "Mars/Olympus")
        .await
        .unwrap_err();
    assert!(
        bad_zone.contains("timezone") && bad_zone.contains("Unknown time zone"),
        "{bad_zone}"
    );
    let bad_cron = policy(&api, &admin, dir.path(), "0 25 * * *", "UTC")
        .await
        .unwrap_err();
    assert!(bad_cron.contains("schedule"), "{bad_cron}");
    assert_eq!(
        api.form(Some(&admin), "policies/list", &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .len(),
        0
    );
}
