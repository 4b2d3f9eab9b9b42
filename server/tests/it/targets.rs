//! Targets and retention from the command line, against real servers: one backup lands
//! on a local directory, an S3 bucket (moto) and an SFTP path (OpenSSH), each copy
//! restores identical data; `prune --dry-run` shows exactly what `prune` then does.

use crate::cli::{PW, ok, tablesafe};
use crate::harness::sqlite as script;
use std::path::Path;
use std::process::Command;
use testkit::remote::{S3Server, SftpServer};

fn python(args: &[&str]) -> String {
    let out = Command::new("python3").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every row of every table, as text: the independent comparison.
fn contents(db: &Path) -> String {
    python(&[
        "-c",
        "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nfor (t,) in c.execute(\"SELECT name FROM sqlite_schema WHERE type='table' ORDER BY name\"):\n  print(t, c.execute(f'SELECT * FROM \"{t}\" ORDER BY 1').fetchall())",
        db.to_str().unwrap(),
    ])
}

#[test]
fn one_backup_on_local_s3_and_sftp_restores_identically_everywhere() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("team-backups").unwrap();
    let sshd = SftpServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    script(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);
         INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob'), (3, 'Zoë');
         CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, total REAL, note BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
         INSERT INTO orders SELECT i, i % 3 + 1, i * 0.25, randomblob(64) FROM n;",
    );
    let want = contents(&db);
    let source = format!("sqlite://{}", db.display());
    let local = dir.path().join("local-repo");
    let local = local.to_str().unwrap();
    let s3_repo = format!(
        "s3://team-backups/shop?endpoint={}&region=eu-central-1",
        s3.endpoint()
    );
    let sftp_repo = format!(
        "sftp://{}@127.0.0.1:{}{}?known_hosts=accept&key={}",
        sshd.user(),
        sshd.port(),
        sshd.scratch("srv/backups/shop").display(),
        sshd.key_file().display()
    );

    let id = ok(&tablesafe(&[
        "backup", "--source", &source, "--repo", local,
    ]))
    .lines()
    .last()
    .unwrap()
    .to_string();
    // Written once, copied twice; a second copy finds nothing to do.
    for to in [&s3_repo, &sftp_repo] {
        let out = ok(&tablesafe(&["copy", "--from", local, "--to", to]));
        assert!(out.contains("1 snapshots copied, 0 already there"), "{out}");
        let again = ok(&tablesafe(&["copy", "--from", local, "--to", to, "--json"]));
        let again: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(again["copied"].as_array().unwrap().len(), 0, "{again}");
        assert_eq!(again["already_there"][0], id.as_str());
    }
    // A backup straight to S3 works too (the repository there already exists).
    ok(&tablesafe(&[
        "backup", "--source", &source, "--repo", &s3_repo,
    ]));

    for (name, repo) in [
        ("local", local),
        ("s3", s3_repo.as_str()),
        ("sftp", sftp_repo.as_str()),
    ] {
        let verify = ok(&tablesafe(&["verify", "--repo", repo, "--read-data"]));
        assert!(verify.contains("no problems found"), "{name}: {verify}");
        let dest = dir.path().join(format!("restored-{name}.db"));
        let dest_url = format!("sqlite://{}", dest.display());
        ok(&tablesafe(&[
            "restore",
            "--repo",
            repo,
            "--snapshot",
            "latest",
            "--dest",
            &dest_url,
        ]));
        assert_eq!(contents(&dest), want, "{name} copy differs");
        let listed = ok(&tablesafe(&["snapshots", "--repo", repo]));
        assert!(
            !listed.contains(PW) && !listed.contains("test-secret"),
            "{listed}"
        );
    }
    // The SFTP copy really is on the server's disk.
    assert!(sshd.scratch("srv/backups/shop/config").exists());
}

#[test]
fn prune_dry_run_shows_what_prune_then_does() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let source = format!("sqlite://{}", db.display());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        // A new table each time: the snapshots share no data.
        script(
            &db,
            &format!(
                "DROP TABLE IF EXISTS t_{prev}; CREATE TABLE t_{i} (id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                 INSERT INTO t_{i} SELECT i, randomblob(300) FROM n;",
                prev = i.max(1) - 1
            ),
        );
        let out = ok(&tablesafe(&[
            "backup",
            "--source",
            &source,
            "--repo",
            repo,
            "--tag",
            "policy=nightly",
        ]));
        ids.push(out.lines().last().unwrap().to_string());
    }
    let dry: serde_json::Value = serde_json::from_str(&ok(&tablesafe(&[
        "prune",
        "--repo",
        repo,
        "--keep-last",
        "1",
        "--keep-floor",
        "2",
        "--dry-run",
        "--json",
    ])))
    .unwrap();
    let kept: Vec<&str> = dry["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == true)
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(kept, vec![ids[3].as_str(), ids[2].as_str()]);
    assert_eq!(
        dry["decisions"][0]["reasons"],
        serde_json::json!(["last #1", "floor"])
    );
    assert_eq!(dry["decisions"][1]["reasons"], serde_json::json!(["floor"]));
    assert!(
        dry["bytes_unreferenced"].as_u64().unwrap() > 1_000_000,
        "{dry}"
    );
    let text = ok(&tablesafe(&[
        "prune",
        "--repo",
        repo,
        "--keep-last",
        "1",
        "--keep-floor",
        "2",
        "--dry-run",
    ]));
    assert!(text.contains("would remove 2 snapshots"), "{text}");
    assert_eq!(
        ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]))
            .matches("\"id\"")
            .count(),
        4
    );

    let done = ok(&tablesafe(&[
        "prune",
        "--repo",
        repo,
        "--keep-last",
        "1",
        "--keep-floor",
        "2",
    ]));
    assert!(done.contains("removed 2 snapshots"), "{done}");
    let left: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]))).unwrap();
    let mut left: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    left.sort();
    let mut want = kept.clone();
    want.sort();
    assert_eq!(left, want, "prune kept exactly what the dry run said");
    assert!(
        ok(&tablesafe(&["verify", "--repo", repo, "--read-data"])).contains("no problems found")
    );

    // No rule: refused, nothing removed.
    let out = tablesafe(&["prune", "--repo", repo]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no retention rule"));
    let out = tablesafe(&[
        "prune",
        "--repo",
        repo,
        "--keep-daily",
        "3",
        "--time-zone",
        "Mars/Olympus",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an IANA time zone"));
}
