//! Several copies per policy: every backup reaches the policy's target and each copy
//! target (a local directory and an S3 bucket here); a copy target that is down fails
//! only its copy, the history shows which copies are complete, and the next run
//! catches up. The S3 copy restores the same data as the source.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::{Value, json};
use testkit::remote::{Cut, S3Server};

fn copies(history: &Value) -> Vec<(String, Vec<(String, bool)>)> {
    history
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["copy_of"].is_null())
        .map(|s| {
            (
                s["snapshot_id"].as_str().unwrap()[..12].to_string(),
                s["copies"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| {
                        (
                            c["target"].as_str().unwrap().to_string(),
                            c["complete"].as_bool().unwrap(),
                        )
                    })
                    .collect(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_backup_reaches_every_target_and_a_missed_copy_catches_up() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("offsite").unwrap();
    let relay = Cut::start(s3.port()).unwrap();
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
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'one');",
    );
    let (_, _, policy) = add_policy(
        &api,
        &admin,
        "nightly",
        &db,
        &dir.path().join("main"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    let mut copy_targets = Vec::new();
    for (name, location) in [
        (
            "second-disk",
            dir.path().join("second").display().to_string(),
        ),
        (
            "offsite",
            format!(
                "s3://offsite/shop?endpoint=http://127.0.0.1:{}&region=eu-west-1",
                relay.port()
            ),
        ),
    ] {
        let t = api
            .form(
                Some(&admin),
                "targets/add",
                &[
                    ("name", name.to_string()),
                    ("location", location),
                    ("password", "repository password".into()),
                    // The S3 server's keys are in the server's environment.
                    ("server_identity", "on".into()),
                ],
            )
            .await;
        assert!(t.ok(), "{t:?}");
        copy_targets.push(t.json().as_i64().unwrap());
    }
    let own = api
        .json(
            Some(&admin),
            "policies/copies",
            json!({"id": policy, "targets": [1]}),
        )
        .await;
    assert!(!own.ok() && own.body.contains("own target"), "{own:?}");
    let saved = api
        .json(
            Some(&admin),
            "policies/copies",
            json!({"id": policy, "targets": copy_targets}),
        )
        .await;
    assert!(saved.ok(), "{saved:?}");
    let listed = api.form(Some(&admin), "policies/list", &[]).await.json();
    assert_eq!(
        listed[0]["copy_targets"].as_array().unwrap().len(),
        2,
        "{listed}"
    );

    let history = || async {
        api.json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": policy, "source_id": 0, "before": null}),
        )
        .await
        .json()
    };

    // 1. Everything up: one snapshot, two complete copies (three history rows).
    api.run_policy(&admin, policy).await;
    let h = history().await;
    assert_eq!(h.as_array().unwrap().len(), 3, "{h}");
    let c = copies(&h);
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].1,
        vec![
            ("second-disk".to_string(), true),
            ("offsite".to_string(), true)
        ]
    );

    // 2. The S3 target goes away: the backup still succeeds, the local copy is made,
    //    the offsite copy is reported missing.
    relay.cut();
    sqlite(&db, "INSERT INTO t VALUES (2, 'two');");
    let done = api.run_policy(&admin, policy).await;
    let log = done[1].to_string();
    assert!(log.contains("copy to offsite failed"), "{log}");
    assert!(
        log.contains("copy to second-disk: 1 snapshots copied"),
        "{log}"
    );
    let c = copies(&history().await);
    assert_eq!(c.len(), 2);
    assert_eq!(
        c[0].1,
        vec![
            ("second-disk".to_string(), true),
            ("offsite".to_string(), false)
        ],
        "newest first: {c:?}"
    );

    // 3. Back up: the next run copies the missed snapshot and the new one.
    relay.restore();
    sqlite(&db, "INSERT INTO t VALUES (3, 'three');");
    let done = api.run_policy(&admin, policy).await;
    assert!(
        done[1]
            .to_string()
            .contains("copy to offsite: 2 snapshots copied"),
        "{done}"
    );
    let c = copies(&history().await);
    assert_eq!(c.len(), 3);
    assert!(
        c.iter().all(|(_, cs)| cs.iter().all(|(_, ok)| *ok)),
        "{c:?}"
    );

    // The offsite copy restores the same rows as the source has.
    let dest = dir.path().join("from-offsite.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["restore", "--snapshot", "latest", "--repo"])
        .arg(format!(
            "s3://offsite/shop?endpoint={}&region=eu-west-1",
            s3.endpoint()
        ))
        .arg("--dest")
        .arg(format!("sqlite://{}", dest.display()))
        .env("TABLESAFE_PASSWORD", "repository password")
        .env("AWS_ACCESS_KEY_ID", "test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = std::process::Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT * FROM t ORDER BY id').fetchall())"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&rows.stdout).trim(),
        "[(1, 'one'), (2, 'two'), (3, 'three')]"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sftp_target_with_a_key_stored_in_the_console_backs_up_and_never_shows_the_key() {
    let sshd = testkit::remote::SftpServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x');",
    );
    let key = std::fs::read_to_string(sshd.key_file()).unwrap();
    let location = format!(
        "sftp://{}@127.0.0.1:{}{}?known_hosts=accept",
        sshd.user(),
        sshd.port(),
        sshd.scratch("remote-repo").display()
    );
    let add = |key: String| {
        let location = location.clone();
        let api = &api;
        let admin = &admin;
        async move {
            api.form(
                Some(admin),
                "targets/add",
                &[
                    ("name", "remote".to_string()),
                    ("location", location),
                    ("password", "repository password".into()),
                    ("ssh_private_key", key),
                ],
            )
            .await
        }
    };
    // Not a key: refused next to the field.
    let bad = add("hunter2".into()).await;
    assert!(!bad.ok() && bad.body.contains("BEGIN"), "{bad:?}");
    let target = add(key.clone()).await;
    assert!(target.ok(), "{target:?}");
    let target = target.json().as_i64().unwrap();
    assert!(
        sshd.scratch("remote-repo/config").exists(),
        "the repository is on the server"
    );
    let source = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "shop".to_string()),
                ("url", format!("sqlite://{}", db.display())),
            ],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let policy = api
        .form(
            Some(&admin),
            "policies/create",
            &[
                ("name", "remote-nightly".to_string()),
                ("source_id", source.to_string()),
                ("target_id", target.to_string()),
                ("include", String::new()),
                ("exclude", String::new()),
                ("columns", String::new()),
                ("schedule", String::new()),
                ("timezone", "UTC".into()),
                ("enabled", "on".into()),
            ],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    api.run_policy(&admin, policy).await;
    assert_eq!(
        std::fs::read_dir(sshd.scratch("remote-repo/snapshots"))
            .unwrap()
            .count(),
        1
    );
    // The key is in no answer and not in the history database in the clear.
    let body = api.form(Some(&admin), "targets/list", &[]).await.body;
    let secret_line = key.lines().nth(1).unwrap();
    assert!(!body.contains(secret_line), "{body}");
    for f in ["history.db", "history.db-wal"] {
        if let Ok(bytes) = std::fs::read(data.join(f)) {
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret_line),
                "the SSH key is readable in {f}"
            );
        }
    }
}

/// Self-heal from the console: a verify job that finds damage in the policy's target
/// repairs it from the policy's copy target, says so in its log and the audit log,
/// checks again and succeeds; the snapshot then restores.
#[tokio::test]
async fn a_verify_job_heals_damage_from_the_copy_target() {
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
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT i, randomblob(300) FROM n;",
    );
    let main = dir.path().join("main");
    let (_, _, policy) = add_policy(&api, &admin, "nightly", &db, &main, "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let t = api
        .form(
            Some(&admin),
            "targets/add",
            &[
                ("name", "second-disk".to_string()),
                ("location", dir.path().join("second").display().to_string()),
                ("password", "another password".into()),
            ],
        )
        .await;
    let second = t.json().as_i64().unwrap_or_else(|| panic!("{t:?}"));
    let saved = api
        .json(
            Some(&admin),
            "policies/copies",
            json!({"id": policy, "targets": [second]}),
        )
        .await;
    assert!(saved.ok(), "{saved:?}");
    api.run_policy(&admin, policy).await;
    let snapshot = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": policy, "source_id": 0, "before": null}),
        )
        .await
        .json()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["target_name"] != "second-disk" && s["copy_of"].is_null())
        .map(|s| s["id"].as_i64().unwrap())
        .expect("the primary snapshot");

    // Bytes flipped in every pack of the primary target.
    let mut packs = Vec::new();
    let mut dirs = vec![main.join("data")];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.path().is_dir() {
                dirs.push(e.path());
            } else {
                packs.push(e.path());
            }
        }
    }
    assert!(!packs.is_empty());
    for p in &packs {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x20;
        std::fs::write(p, bytes).unwrap();
    }
    let r = api
        .form(
            Some(&admin),
            "snapshots/verify",
            &[("id", snapshot.to_string())],
        )
        .await;
    let job = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let done = api.wait_job(&admin, job).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    let log = done[1].to_string();
    assert!(
        log.contains("self-heal from copy target second-disk: repaired"),
        "{log}"
    );
    let audit = api
        .form(
            Some(&admin),
            "audit/list",
            &[
                ("user", String::new()),
                ("action", "repository.repair".into()),
                ("outcome", String::new()),
            ],
        )
        .await;
    assert!(
        audit.body.contains("repository.repair") && audit.body.contains("second-disk"),
        "{audit:?}"
    );

    // The primary restores again.
    let restored = dir.path().join("restored.db");
    // The console creates no database files: an empty file is an empty database.
    std::fs::write(&restored, b"").unwrap();
    let dest = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "restored".into()),
                ("url", format!("sqlite://{}", restored.display())),
            ],
        )
        .await
        .json()
        .as_i64()
        .unwrap();
    let req = json!({"snapshot": snapshot, "dest_source_id": dest, "tables": ["t"],
                     "columns": {}, "rename": {}, "mode": "create", "confirm": "", "at_ms": null});
    let job = api
        .json(Some(&admin), "restore/start", json!({"req": req}))
        .await;
    let job = job.json().as_i64().unwrap_or_else(|| panic!("{job:?}"));
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "succeeded");
}
