//! The engine subcommands as scripts use them: output contract, exit codes, one-line
//! errors, secrets kept out of output, and crash safety of a killed backup.

use std::path::Path;
use std::process::{Command, Output, Stdio};

pub(crate) const PW: &str = "cli test password";

/// Runs the binary with the repository password (and keys for the S3 test server, which
/// accepts any) in its environment.
pub(crate) fn tablesafe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(args)
        .env("TABLESAFE_PASSWORD", PW)
        .env("AWS_ACCESS_KEY_ID", "test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret")
        .env_remove("TABLESAFE_DATABASE_URL")
        .output()
        .unwrap()
}

pub(crate) fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// The one line a failing command prints.
fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one clear line, got: {err}"
    );
    err
}

fn sqlite(path: &Path, sql: &str) {
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn query(path: &Path, sql: &str) -> String {
    let out = Command::new("python3")
        .args(["-c", "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute(sys.argv[2]).fetchall())"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn backup_snapshots_restore_verify_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(&db, "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann'), (2, 'Bob');
                 CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id), total REAL); INSERT INTO orders VALUES (10, 1, 9.5);");
    let source = format!("sqlite://{}", db.display());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();

    // backup creates the repository and prints the snapshot id last.
    let out = ok(&tablesafe(&[
        "backup",
        "--source",
        &source,
        "--repo",
        repo,
        "--tag",
        "reason=test",
    ]));
    let id = out.lines().last().unwrap().to_string();
    assert_eq!(id.len(), 64, "{out}");
    assert!(out.contains("table customers: 2 rows"), "{out}");
    assert!(!out.contains(PW));

    let json: serde_json::Value = serde_json::from_str(&ok(&tablesafe(&[
        "backup", "--source", &source, "--repo", repo, "--json",
    ])))
    .unwrap();
    assert_eq!(json["tables"], 2);
    assert_eq!(json["rows"], 3);
    for key in ["id", "bytes_read", "bytes_stored", "seconds"] {
        assert!(json.get(key).is_some(), "--json lacks {key}: {json}");
    }
    // Nothing changed: both tables are stored as (empty) incremental segments.
    assert_eq!(json["incremental_tables"], 2, "{json}");

    let list = ok(&tablesafe(&["snapshots", "--repo", repo]));
    assert!(
        list.contains(&id[..12]) && list.contains("reason=test") && list.contains("2 snapshots"),
        "{list}"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let segments: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tables"][0]["segment"].as_str().unwrap())
        .collect();
    assert!(
        segments.contains(&"full") && segments.contains(&"delta"),
        "{listed}"
    );

    // Dry run changes nothing; the real run restores under a new name.
    let plan = ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        &id[..8],
        "--dest",
        &source,
        "--include",
        "customers",
        "--rename",
        "customers=customers_copy",
        "--dry-run",
    ]));
    assert!(
        plan.contains("create table customers_copy (from customers): 2 rows"),
        "{plan}"
    );
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name = 'customers_copy'"
        ),
        "[(0,)]"
    );
    let fresh = dir.path().join("fresh.db");
    let fresh_url = format!("sqlite://{}", fresh.display());
    let plan = ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--dest",
        &fresh_url,
        "--dry-run",
        "--json",
    ]));
    let plan: serde_json::Value = serde_json::from_str(&plan).unwrap();
    assert_eq!(plan["plan"]["tables"].as_array().unwrap().len(), 2);
    assert!(!fresh.exists(), "a dry run creates no database file");
    ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--dest",
        &source,
        "--include",
        "customers",
        "--rename",
        "customers=customers_copy",
    ]));
    assert_eq!(
        query(&db, "SELECT * FROM customers_copy ORDER BY id"),
        "[(1, 'Ann'), (2, 'Bob')]"
    );

    let v = ok(&tablesafe(&["verify", "--repo", repo, "--read-data"]));
    assert!(v.contains("no problems found"), "{v}");
}

#[test]
fn errors_are_one_clear_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let source = format!("sqlite://{}", db.display());
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    ok(&tablesafe(&["backup", "--source", &source, "--repo", repo]));

    let e = fails(&tablesafe(&[
        "backup",
        "--source",
        "oracle://root:hunter2@db/x",
        "--repo",
        repo,
    ]));
    assert!(
        e.contains("unsupported database URL") && !e.contains("hunter2"),
        "{e}"
    );
    let e = fails(&tablesafe(&[
        "backup",
        "--source",
        "mysql://root:hunter2@127.0.0.1:1/x",
        "--repo",
        repo,
    ]));
    assert!(
        e.contains("cannot connect to mysql://root:***@127.0.0.1:1/x") && !e.contains("hunter2"),
        "{e}"
    );
    let e = fails(&tablesafe(&[
        "backup",
        "--source",
        &format!("sqlite://{}/missing.db", dir.path().display()),
        "--repo",
        repo,
    ]));
    assert!(e.contains("does not exist"), "{e}");
    let e = fails(&tablesafe(&[
        "backup",
        "--source",
        &source,
        "--repo",
        repo,
        "--include",
        "nope",
    ]));
    assert!(e.contains("unknown table \"nope\""), "{e}");

    let wrong = Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["snapshots", "--repo", repo])
        .env("TABLESAFE_PASSWORD", "not it")
        .output()
        .unwrap();
    let e = fails(&wrong);
    assert!(e.contains("wrong password"), "{e}");
    let none = Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["snapshots", "--repo", repo])
        .env_remove("TABLESAFE_PASSWORD")
        .output()
        .unwrap();
    assert!(fails(&none).contains("TABLESAFE_PASSWORD"));

    // A password file works instead of the environment.
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{PW}\n")).unwrap();
    let viafile = Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["snapshots", "--repo", repo, "--password-file"])
        .arg(&pwfile)
        .env_remove("TABLESAFE_PASSWORD")
        .output()
        .unwrap();
    ok(&viafile);

    let e = fails(&tablesafe(&[
        "snapshots",
        "--repo",
        dir.path().join("nothing").to_str().unwrap(),
    ]));
    assert!(e.contains("no repository"), "{e}");
    let e = fails(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--dest",
        &source,
    ]));
    assert!(e.contains("already exists"), "{e}");
    let e = fails(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "abcdef12",
        "--dest",
        &source,
    ]));
    assert!(e.contains("not found"), "{e}");

    // Damage: verify names it and fails.
    let data = Path::new(repo).join("data");
    let sub = std::fs::read_dir(&data)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pack = std::fs::read_dir(sub)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&pack).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&pack, bytes).unwrap();
    let out = tablesafe(&["verify", "--repo", repo, "--read-data"]);
    let e = fails(&out);
    assert!(e.contains("damaged"), "{e}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("DAMAGED chunk") && stdout.contains("tables: t"),
        "{stdout}"
    );
}

#[test]
fn a_backup_killed_midway_leaves_the_repository_readable_and_the_next_backup_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    sqlite(
        &db,
        "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO small VALUES (1, 'first');",
    );
    let source = format!("sqlite://{}", db.display());
    let repo_dir = dir.path().join("repo");
    let repo = repo_dir.to_str().unwrap();
    let first = ok(&tablesafe(&["backup", "--source", &source, "--repo", repo]));
    let first_id = first.lines().last().unwrap().to_string();
    // ~80 MB of incompressible rows: several packs, long enough to kill in the middle.
    sqlite(
        &db,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000)
                 INSERT INTO big SELECT i, randomblob(2000) FROM n;",
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["backup", "--source", &source, "--repo", repo])
        .env("TABLESAFE_PASSWORD", PW)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let count_packs = || walk(&repo_dir.join("data")).len();
    let before = count_packs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count_packs() < before + 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // SIGKILL: no chance to clean up.
    let _ = Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the backup finished before it could be killed; make the table bigger"
    );
    assert!(
        count_packs() > before,
        "some packs were written before the kill"
    );

    let list: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]))).unwrap();
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![first_id.as_str()],
        "only the finished snapshot is visible"
    );
    ok(&tablesafe(&["verify", "--repo", repo, "--read-data"]));

    // The next backup works (and reuses what the killed one wrote), and restores exactly.
    let next = ok(&tablesafe(&["backup", "--source", &source, "--repo", repo]));
    let dest = dir.path().join("restored.db");
    ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        next.lines().last().unwrap(),
        "--dest",
        &format!("sqlite://{}", dest.display()),
    ]));
    let digest = "SELECT count(*), sum(length(b)), hex(max(b)) FROM big";
    assert_eq!(query(&db, digest), query(&dest, digest));
    ok(&tablesafe(&["verify", "--repo", repo, "--read-data"]));
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p))
            } else {
                out.push(p)
            }
        }
    }
    out
}

/// A full disk: one clear error, no snapshot, and the repository still usable.
/// Mounts a 3 MB tmpfs, which needs root (the CI runs as root); elsewhere set
/// TABLESAFE_SKIP_ROOT_TESTS=1 to skip it knowingly.
#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing() {
    if std::env::var("TABLESAFE_SKIP_ROOT_TESTS").is_ok() {
        eprintln!("skipped: TABLESAFE_SKIP_ROOT_TESTS is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tiny");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a tmpfs (needs root); set TABLESAFE_SKIP_ROOT_TESTS=1 to skip"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(mnt.clone());

    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "CREATE TABLE small (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO small VALUES (1, 'fits');",
    );
    let source = format!("sqlite://{}", db.display());
    let repo = mnt.join("repo");
    let repo = repo.to_str().unwrap();
    ok(&tablesafe(&["backup", "--source", &source, "--repo", repo]));
    sqlite(
        &db,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
                 INSERT INTO big SELECT i, randomblob(10000) FROM n;",
    );
    let e = fails(&tablesafe(&["backup", "--source", &source, "--repo", repo]));
    assert!(e.contains("No space left on device"), "{e}");
    let list: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]))).unwrap();
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "the failed backup left no snapshot"
    );
    ok(&tablesafe(&["verify", "--repo", repo, "--read-data"]));
    sqlite(&db, "DROP TABLE big;");
    ok(&tablesafe(&["backup", "--source", &source, "--repo", repo]));
}

#[test]
fn postgres_from_the_command_line_keeps_the_database_password_out_of_everything() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("shop").unwrap();
    let psql = |sql: &str| {
        let out = Command::new("psql")
            .args([url.as_str(), "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    psql(
        "CREATE SCHEMA sales; CREATE TABLE sales.orders (id serial PRIMARY KEY, total numeric); INSERT INTO sales.orders (total) SELECT g FROM generate_series(1, 100) g;",
    );
    // The server trusts loopback, so any password works: it must still never be shown.
    let with_pw = url.replace("postgres@", "postgres:S3cretPw@");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let out = ok(&tablesafe(&[
        "backup", "--source", &with_pw, "--repo", repo,
    ]));
    let list = ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]));
    assert!(list.contains("postgres:***@"), "{list}");
    for text in [&out, &list] {
        assert!(!text.contains("S3cretPw"), "password leaked: {text}");
    }
    let bad = with_pw.replace(&pg.port().to_string(), "1");
    let e = fails(&tablesafe(&["backup", "--source", &bad, "--repo", repo]));
    assert!(
        !e.contains("S3cretPw") && e.contains("cannot connect"),
        "{e}"
    );
    for f in walk(Path::new(repo)) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(8).any(|w| w == b"S3cretPw"),
            "password stored in {}",
            f.display()
        );
    }
    // And it restores under a new name next to the original.
    ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--dest",
        &with_pw,
        "--rename",
        "sales.orders=sales.orders_back",
    ]));
    assert_eq!(
        psql("SELECT count(*), sum(total) FROM sales.orders_back").trim(),
        "100|5050"
    );
    assert_eq!(
        psql("INSERT INTO sales.orders_back (total) VALUES (0) RETURNING id").trim(),
        "101"
    );
    // A drill into a scratch database on the same server: proven, password unseen,
    // nothing left behind.
    let server = with_pw.replace("/shop", "/postgres");
    let out = ok(&tablesafe(&[
        "drill",
        "--repo",
        repo,
        "--scratch",
        &server,
        "--assert",
        "SELECT sum(total) = 5050 FROM sales.orders",
    ]));
    assert!(
        out.contains("ok   sales.orders: 100 of 100 rows, checksum matches (exact)"),
        "{out}"
    );
    assert!(
        out.contains("drill passed") && !out.contains("S3cretPw"),
        "{out}"
    );
    assert!(out.contains("postgres:***@"), "{out}");
    assert_eq!(
        psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'tablesafe_drill_%'").trim(),
        "0"
    );
}

/// `tablesafe drill` on a SQLite snapshot: the evidence as text and JSON, a failing
/// assertion fails the command with one line, and no scratch file stays.
#[test]
fn drills_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL); INSERT INTO orders VALUES (1, 9.5), (2, 0.5);",
    );
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let scratch = dir.path().join("scratch");
    let scratch = scratch.to_str().unwrap();
    ok(&tablesafe(&[
        "backup",
        "--source",
        &format!("sqlite://{}", db.display()),
        "--repo",
        repo,
    ]));
    let out = ok(&tablesafe(&[
        "drill",
        "--repo",
        repo,
        "--scratch",
        scratch,
        "--assert",
        "SELECT sum(total) = 10 FROM orders",
    ]));
    assert!(
        out.contains("ok   orders: 2 of 2 rows, checksum matches (exact)"),
        "{out}"
    );
    assert!(
        out.contains("ok   assert SELECT sum(total) = 10 FROM orders: true"),
        "{out}"
    );
    assert!(
        out.ends_with("scratch copy removed\ndrill passed\n"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&tablesafe(&[
        "drill",
        "--repo",
        repo,
        "--scratch",
        scratch,
        "--json",
    ])))
    .unwrap();
    assert_eq!(json["passed"], true);
    assert_eq!(json["tables"][0]["rows_restored"], 2);
    let bad = tablesafe(&[
        "drill",
        "--repo",
        repo,
        "--scratch",
        scratch,
        "--assert",
        "SELECT count(*) = 3 FROM orders",
    ]);
    let e = fails(&bad);
    assert!(e.contains("the drill failed"), "{e}");
    let out = String::from_utf8(bad.stdout).unwrap();
    assert!(
        out.contains("FAIL assert SELECT count(*) = 3 FROM orders: false"),
        "{out}"
    );
    assert!(
        std::fs::read_dir(scratch).unwrap().next().is_none(),
        "scratch files left"
    );
}

/// `tablesafe repair`: bytes flipped in the repository's packs are found by verify,
/// rewritten from a copy (another password), and the restore is the source again.
#[test]
fn repair_rewrites_damage_from_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000)
         INSERT INTO t SELECT i, randomblob(300) FROM n;",
    );
    let source = format!("sqlite://{}", db.display());
    let repo = dir.path().join("repo").display().to_string();
    let copy = dir.path().join("copy").display().to_string();
    ok(&tablesafe(&[
        "backup", "--source", &source, "--repo", &repo,
    ]));
    let pw_file = dir.path().join("copy.pw");
    std::fs::write(&pw_file, "another password\n").unwrap();
    ok(&tablesafe(&[
        "copy",
        "--from",
        &repo,
        "--to",
        &copy,
        "--to-password-file",
        pw_file.to_str().unwrap(),
    ]));
    for (i, f) in walk(&Path::new(&repo).join("data")).iter().enumerate() {
        let mut bytes = std::fs::read(f).unwrap();
        for k in 1..=5 {
            let at = bytes.len() * k / 7 + i;
            bytes[at] ^= 0x10;
        }
        std::fs::write(f, bytes).unwrap();
    }
    let damaged = fails(&tablesafe(&["verify", "--repo", &repo, "--read-data"]));
    assert!(damaged.contains("damaged"), "{damaged}");
    // Without the copy's password: a clear error, nothing changed.
    let wrong = fails(&tablesafe(&["repair", "--repo", &repo, "--from", &copy]));
    assert!(wrong.to_lowercase().contains("password"), "{wrong}");
    let out = ok(&tablesafe(&[
        "repair",
        "--repo",
        &repo,
        "--from",
        &copy,
        "--from-password-file",
        pw_file.to_str().unwrap(),
    ]));
    assert!(
        out.contains("rewritten from") && out.contains("no problems found"),
        "{out}"
    );
    ok(&tablesafe(&["verify", "--repo", &repo, "--read-data"]));
    let restored = dir.path().join("restored.db");
    ok(&tablesafe(&[
        "restore",
        "--repo",
        &repo,
        "--snapshot",
        "latest",
        "--dest",
        &format!("sqlite://{}", restored.display()),
    ]));
    assert_eq!(
        query(
            &restored,
            "SELECT count(*), sum(length(b)), hex(b) FROM t WHERE id = 777"
        ),
        query(
            &db,
            "SELECT count(*), sum(length(b)), hex(b) FROM t WHERE id = 777"
        )
    );
    assert_eq!(
        query(&restored, "SELECT count(*), sum(length(b)) FROM t"),
        query(&db, "SELECT count(*), sum(length(b)) FROM t")
    );
}

/// Fault test: backups killed with SIGKILL at twenty pseudo-random moments (seeded,
/// printed) while they read and write. After every kill the repository checks clean,
/// no half snapshot is listed, and at the end the snapshot taken before the kills and
/// a new one restore exactly.
#[test]
fn backups_killed_at_twenty_random_moments_leave_the_repository_whole() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    sqlite(
        &db,
        "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000)
         INSERT INTO big SELECT i, randomblob(1500) FROM n;",
    );
    let source = format!("sqlite://{}", db.display());
    let repo = dir.path().join("repo").display().to_string();
    let digest = "SELECT count(*), sum(length(b)), hex(max(b)), hex(min(b)) FROM big";
    let started = std::time::Instant::now();
    let first = ok(&tablesafe(&[
        "backup", "--source", &source, "--repo", &repo,
    ]));
    let full_ms = started.elapsed().as_millis() as u64;
    let first_id = first.lines().last().unwrap().to_string();
    let first_digest = query(&db, digest);

    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("kill points seeded with {seed}");
    let mut state = seed | 1;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut killed = 0;
    for round in 0..20 {
        // A tenth of the rows change: every backup has new data to write.
        sqlite(
            &db,
            &format!(
                "UPDATE big SET b = randomblob(1500) WHERE id % 10 = {}",
                round % 10
            ),
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_tablesafe"))
            .args(["backup", "--source", &source, "--repo", &repo])
            .env("TABLESAFE_PASSWORD", PW)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let wait = next() % full_ms.max(50);
        std::thread::sleep(std::time::Duration::from_millis(wait));
        let _ = Command::new("kill")
            .args(["-9", &child.id().to_string()])
            .status();
        if !child.wait().unwrap().success() {
            killed += 1;
        }
        let check = tablesafe(&["verify", "--repo", &repo]);
        assert!(
            check.status.success(),
            "round {round} (killed after {wait} ms, seed {seed}): {}",
            String::from_utf8_lossy(&check.stdout)
        );
    }
    assert!(
        killed >= 10,
        "only {killed} of 20 backups were killed midway"
    );
    ok(&tablesafe(&["verify", "--repo", &repo, "--read-data"]));
    let list: serde_json::Value =
        serde_json::from_str(&ok(&tablesafe(&["snapshots", "--repo", &repo, "--json"]))).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|s| s["tables"].as_array().unwrap().len() == 1)
    );

    let restore = |id: &str, name: &str| {
        let dest = dir.path().join(name);
        ok(&tablesafe(&[
            "restore",
            "--repo",
            &repo,
            "--snapshot",
            id,
            "--dest",
            &format!("sqlite://{}", dest.display()),
        ]));
        query(&dest, digest)
    };
    assert_eq!(restore(&first_id, "first.db"), first_digest);
    let last = ok(&tablesafe(&[
        "backup", "--source", &source, "--repo", &repo,
    ]));
    assert_eq!(
        restore(last.lines().last().unwrap(), "last.db"),
        query(&db, digest)
    );
}

/// `tablesafe show` and `restore --to-file` / `--where` as a script uses them.
#[test]
fn show_and_restore_to_a_file_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60)
         INSERT INTO orders SELECT i, 'c' || (i % 4), i * 1.5 FROM n;
         UPDATE orders SET customer = NULL WHERE id = 3;
         CREATE TABLE notes (body TEXT);",
    );
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    ok(&tablesafe(&[
        "backup",
        "--source",
        &format!("sqlite://{}", db.display()),
        "--repo",
        repo,
    ]));

    let out = ok(&tablesafe(&["show", "--repo", repo]));
    assert!(
        out.contains("orders (60 rows): id, customer, total"),
        "{out}"
    );
    let out = ok(&tablesafe(&[
        "show", "--repo", repo, "--table", "orders", "--limit", "3",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "id | customer | total");
    assert_eq!(lines[2], "1  | c1       | 1.5");
    assert_eq!(lines[4], "3  | NULL     | 4.5");
    assert!(
        lines[5].contains("rows 1–3") && lines[5].ends_with("next page: --offset 3"),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&tablesafe(&[
        "show", "--repo", repo, "--table", "orders", "--key", "42", "--json",
    ])))
    .unwrap();
    assert_eq!(json["rows"], serde_json::json!([["42", "c2", "63.0"]]));
    let json: serde_json::Value = serde_json::from_str(&ok(&tablesafe(&[
        "show",
        "--repo",
        repo,
        "--table",
        "orders",
        "--where",
        "customer = c0",
        "--where",
        "total > 60",
        "--json",
    ])))
    .unwrap();
    let ids: Vec<&str> = json["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["44", "48", "52", "56", "60"]);
    let e = fails(&tablesafe(&[
        "show",
        "--repo",
        repo,
        "--table",
        "orders",
        "--where",
        "colour = red",
    ]));
    assert!(e.contains("no column \"colour\""), "{e}");

    // To a file: the format from the extension; one table per CSV; never over a file.
    let csv = dir.path().join("orders.csv");
    let out = ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--to-file",
        csv.to_str().unwrap(),
        "--include",
        "orders",
        "--where",
        "id <= 3",
    ]));
    assert!(out.contains("wrote table orders: 3 rows"), "{out}");
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "\"id\",\"customer\",\"total\"\r\n1,c1,1.5\r\n2,c2,3.0\r\n3,,4.5\r\n"
    );
    let e = fails(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--to-file",
        csv.to_str().unwrap(),
        "--include",
        "orders",
    ]));
    assert!(e.contains("already exists"), "{e}");
    let e = fails(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--to-file",
        dir.path().join("all.csv").to_str().unwrap(),
    ]));
    assert!(e.contains("one table") && e.contains("notes"), "{e}");
    let e = fails(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--to-file",
        dir.path().join("x.txt").to_str().unwrap(),
    ]));
    assert!(e.contains(".csv, .jsonl, .sql or .sqlite"), "{e}");
    let dump = dir.path().join("dump");
    let out = ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--to-file",
        dump.to_str().unwrap(),
        "--format",
        "sqlite",
        "--json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["file"]["tables"][0]["rows"], 60);
    assert_eq!(
        query(&dump, "SELECT count(*), sum(total) FROM orders"),
        "[(60, 2745.0)]"
    );

    // A key range restored into a database.
    let dest = dir.path().join("dest.db");
    let out = ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--dest",
        &format!("sqlite://{}", dest.display()),
        "--include",
        "orders",
        "--where",
        "id > 10",
        "--where",
        "id <= 20",
    ]));
    assert!(out.contains("restored table orders: 10 rows"), "{out}");
    assert_eq!(
        query(&dest, "SELECT min(id), max(id) FROM orders"),
        "[(11, 20)]"
    );
}

/// `restore --mode upsert|skip-existing|replace-rows` with its dry-run diff.
#[test]
fn merges_from_the_command_line_show_their_diff_first() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
         INSERT INTO orders SELECT i, i FROM n;",
    );
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    ok(&tablesafe(&[
        "backup",
        "--source",
        &format!("sqlite://{}", db.display()),
        "--repo",
        repo,
    ]));
    // The live table drifts: two rows lost, one changed, one added.
    sqlite(
        &db,
        "DELETE FROM orders WHERE id IN (3, 4); UPDATE orders SET total = 99 WHERE id = 5; INSERT INTO orders VALUES (21, 21);",
    );
    let dest = format!("sqlite://{}", db.display());
    let restore = |mode: &str, extra: &[&str]| {
        let mut args = vec![
            "restore",
            "--repo",
            repo,
            "--snapshot",
            "latest",
            "--dest",
            &dest,
            "--include",
            "orders",
            "--mode",
            mode,
        ];
        args.extend_from_slice(extra);
        tablesafe(&args)
    };
    let out = ok(&restore(
        "replace-rows",
        &["--where", "id <= 10", "--dry-run"],
    ));
    assert!(
        out.contains("replace rows of table orders: 2 inserted, 1 updated, 7 unchanged, 0 deleted"),
        "{out}"
    );
    assert!(out.ends_with("nothing was changed\n"), "{out}");
    assert_eq!(
        query(&db, "SELECT count(*), sum(total) FROM orders"),
        "[(19, 318.0)]"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&restore("upsert", &["--dry-run", "--json"]))).unwrap();
    assert_eq!(
        json["diff"][0]["merge"],
        serde_json::json!({"inserted": 2, "updated": 1, "unchanged": 17, "deleted": 0})
    );
    let out = ok(&restore("skip-existing", &[]));
    assert!(
        out.contains("merged into table orders: 2 inserted, 18 existing left as they are"),
        "{out}"
    );
    assert_eq!(
        query(&db, "SELECT total FROM orders WHERE id = 5"),
        "[(99.0,)]"
    );
    let out = ok(&restore("replace-rows", &[]));
    assert!(
        out.contains("merged into table orders: 0 inserted, 1 updated, 19 unchanged, 1 deleted"),
        "{out}"
    );
    assert_eq!(
        query(&db, "SELECT count(*), sum(total) FROM orders"),
        "[(20, 210.0)]"
    );
    let e = fails(&restore("merge", &[]));
    assert!(e.contains("upsert, skip-existing or replace-rows"), "{e}");
}

/// MySQL/MariaDB from the command line: backup, show, restore into another database,
/// and the password never shown (a wrong one is one clear line without it).
#[test]
fn mysql_from_the_command_line_keeps_the_database_password_out_of_everything() {
    let m = testkit::mariadb::Mariadb::start().unwrap();
    let url = m.create_database("shop").unwrap();
    m.sql(
        "shop",
        "CREATE TABLE orders (id INT PRIMARY KEY, total DECIMAL(10,2), note VARCHAR(20));
         INSERT INTO orders VALUES (1, 9.99, 'a'), (2, 0.01, NULL), (3, 5, 'c');",
    )
    .unwrap();
    let secret = testkit::mariadb::PASSWORD.replace(' ', "%20");
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo = repo.to_str().unwrap();
    let out = ok(&tablesafe(&["backup", "--source", &url, "--repo", repo]));
    let list = ok(&tablesafe(&["snapshots", "--repo", repo, "--json"]));
    assert!(list.contains("mysql://tablesafe:***@127.0.0.1"), "{list}");
    let shown = ok(&tablesafe(&["show", "--repo", repo, "--table", "orders"]));
    assert!(shown.contains("2  | 0.01  | NULL"), "{shown}");
    let copy = m.create_database("copy").unwrap();
    let restored = ok(&tablesafe(&[
        "restore",
        "--repo",
        repo,
        "--snapshot",
        "latest",
        "--dest",
        &copy,
    ]));
    assert!(
        restored.contains("restored table orders: 3 rows"),
        "{restored}"
    );
    assert_eq!(m.dump("copy", &[]).unwrap(), m.dump("shop", &[]).unwrap());
    let wrong = url.replace(&secret, "wrong%20password");
    let e = fails(&tablesafe(&["backup", "--source", &wrong, "--repo", repo]));
    assert!(e.contains("Access denied"), "{e}");
    for text in [&out, &list, &shown, &restored, &e] {
        assert!(
            !text.contains(&secret)
                && !text.contains(testkit::mariadb::PASSWORD)
                && !text.contains("wrong%20password"),
            "password leaked: {text}"
        );
    }
    for f in walk(Path::new(repo)) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "password in {}",
            f.display()
        );
    }
}
