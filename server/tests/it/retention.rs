//! Retention in the console: the preview lists, per snapshot of the policy, kept or
//! removed and by which rule; applying the saved rules removes exactly what it showed
//! (from the repository and the history); later backups prune by themselves.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::{Value, json};

const RULES: [&str; 7] = [
    "last", "hourly", "daily", "weekly", "monthly", "yearly", "floor",
];

fn rules(last: &str, floor: &str) -> Vec<(&'static str, String)> {
    RULES
        .iter()
        .map(|k| {
            (
                *k,
                match *k {
                    "last" => last.to_string(),
                    "floor" => floor.to_string(),
                    _ => String::new(),
                },
            )
        })
        .collect()
}

fn repo_snapshots(repo: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["snapshots", "--json", "--repo", repo.to_str().unwrap()])
        .env("TABLESAFE_PASSWORD", "repository password")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn the_preview_is_what_retention_then_removes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let db = dir.path().join("shop.db");
    let repo = dir.path().join("repo");
    sqlite(&db, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);");
    let (_, _, policy) = add_policy(&api, &admin, "nightly", &db, &repo, "", "").await;
    let policy = policy.json().as_i64().unwrap();
    for i in 0..4 {
        sqlite(&db, &format!("INSERT INTO t VALUES ({i}, 'row {i}');"));
        api.run_policy(&admin, policy).await;
    }
    assert_eq!(repo_snapshots(&repo).len(), 4);

    // Bad input is refused next to its field.
    let mut bad = vec![("id", policy.to_string())];
    bad.extend(rules("-3", ""));
    let r = api
        .form(Some(&admin), "policies/retention_preview", &bad)
        .await;
    assert!(
        !r.ok() && r.body.contains("last") && r.body.contains("whole number"),
        "{r:?}"
    );

    // Preview: the newest by `last 1`, the next by the floor of 2; two removed.
    let mut args = vec![("id", policy.to_string())];
    args.extend(rules("1", "2"));
    let preview = api
        .form(Some(&admin), "policies/retention_preview", &args)
        .await;
    assert!(preview.ok(), "{preview:?}");
    let rows = preview.json()["rows"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["reasons"], json!(["last #1", "floor"]));
    assert_eq!(rows[1]["reasons"], json!(["floor"]));
    assert_eq!(rows[2]["keep"], false);
    let mut kept: Vec<String> = rows
        .iter()
        .filter(|r| r["keep"] == true)
        .map(|r| r["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    kept.sort();
    // Previewing changed nothing.
    assert_eq!(repo_snapshots(&repo).len(), 4);

    // Applying needs saved rules.
    let early = api
        .form(
            Some(&admin),
            "policies/prune",
            &[("id", policy.to_string())],
        )
        .await;
    assert!(
        !early.ok() && early.body.contains("save retention rules first"),
        "{early:?}"
    );
    let mut save = vec![("id", policy.to_string())];
    for k in RULES {
        save.push((
            k,
            match k {
                "last" => "1",
                "floor" => "2",
                _ => "0",
            }
            .to_string(),
        ));
    }
    assert!(
        api.form(Some(&admin), "policies/retention_save", &save)
            .await
            .ok()
    );
    let listed = api.form(Some(&admin), "policies/list", &[]).await.json();
    assert_eq!(listed[0]["retention"]["last"], 1);
    assert_eq!(listed[0]["retention"]["floor"], 2);

    let job = api
        .form(
            Some(&admin),
            "policies/prune",
            &[("id", policy.to_string())],
        )
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    assert_eq!(repo_snapshots(&repo), kept, "exactly what the preview kept");
    let log = done[1].to_string();
    assert!(
        log.contains("retention (last 1, floor 2) in t-nightly: kept 2, removed 2"),
        "{log}"
    );
    // The history lists only what is left.
    let history = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": policy, "source_id": 0, "before": null}),
        )
        .await
        .json();
    let mut listed: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, kept);

    // The next backup prunes by itself: the oldest of the two goes.
    sqlite(&db, "INSERT INTO t VALUES (99, 'late');");
    let done = api.run_policy(&admin, policy).await;
    let result: Value = serde_json::from_str(done[0]["result"].as_str().unwrap()).unwrap();
    assert_eq!(
        result["retention"]["removed"].as_array().unwrap().len(),
        1,
        "{result}"
    );
    assert_eq!(repo_snapshots(&repo).len(), 2);
}
