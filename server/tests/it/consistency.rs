//! The console's backup path under concurrent writes (issue 10): a policy run three
//! times while writers commit transactions across tables, on a SQLite and on a
//! PostgreSQL source; every snapshot restores (from the command line) to a state the
//! source was in, checked against the workload's invariants and row for row against
//! its model (`testkit::workload`).

use crate::cli::ok;
use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy_for, cookie};
use std::path::Path;
use std::process::Command;
use testkit::workload::{Db, Workload};

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(args)
        .env("TABLESAFE_PASSWORD", "repository password")
        .output()
        .unwrap()
}

/// Runs policy `name` over `work.db` three times while `writers` writers run, then
/// restores each snapshot with `restore_into` and checks it.
async fn policy_runs_under_writes(
    api: &Api<'_>,
    admin: &str,
    name: &str,
    work: &mut Workload,
    writers: usize,
    repo: &Path,
    mut restore_into: impl FnMut(usize) -> Db,
) {
    let (_, _, policy) = add_policy_for(api, admin, name, &work.db.url(), repo, "", "UTC").await;
    let policy = policy
        .json()
        .as_i64()
        .unwrap_or_else(|| panic!("{policy:?}"));
    work.start(writers).await.unwrap();
    let mut runs = Vec::new();
    let mut last = 0;
    for _ in 0..3 {
        work.wait_for(last, 40).await;
        let before = work.committed();
        api.run_policy(admin, policy).await;
        let after = work.committed();
        last = after;
        runs.push((before, after));
    }
    work.stop().await.unwrap();
    work.check_source().await.unwrap();
    let listed = ok(&cli(&[
        "snapshots",
        "--repo",
        repo.to_str().unwrap(),
        "--json",
    ]));
    let snapshots: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let mut snapshots = snapshots.as_array().unwrap().clone();
    snapshots.sort_by_key(|s| s["time_ms"].as_i64());
    assert_eq!(snapshots.len(), 3, "{listed}");
    let kinds: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| {
            s["tables"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["segment"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert!(
        kinds[1..].iter().all(|k| k.contains(&"delta".to_string())),
        "the second and third runs store incremental layers: {kinds:?}"
    );
    for (i, (s, (before, after))) in snapshots.iter().zip(runs).enumerate() {
        let dest = restore_into(i);
        ok(&cli(&[
            "restore",
            "--repo",
            repo.to_str().unwrap(),
            "--snapshot",
            s["id"].as_str().unwrap(),
            "--dest",
            &dest.url(),
        ]));
        let clock = work
            .check(&dest)
            .await
            .unwrap_or_else(|e| panic!("{name} run {}: {e:#}", i + 1));
        assert!(
            before <= clock && clock <= after + writers as i64,
            "{name} run {} restored transaction {clock}, outside the run ({before}..={after})",
            i + 1
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_runs_under_concurrent_writes_restore_states_that_existed() {
    let dir = tempfile::tempdir().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;

    let mut lite = Workload::create(Db::Sqlite(dir.path().join("live.db")))
        .await
        .unwrap();
    policy_runs_under_writes(
        &api,
        &admin,
        "lite",
        &mut lite,
        2,
        &dir.path().join("r1"),
        |i| Db::Sqlite(dir.path().join(format!("restored-{i}.db"))),
    )
    .await;

    let mut shop = Workload::create(Db::Postgres(pg.create_database("live").unwrap()))
        .await
        .unwrap();
    policy_runs_under_writes(
        &api,
        &admin,
        "shop",
        &mut shop,
        3,
        &dir.path().join("r2"),
        |i| Db::Postgres(pg.create_database(&format!("restored{i}")).unwrap()),
    )
    .await;
}
