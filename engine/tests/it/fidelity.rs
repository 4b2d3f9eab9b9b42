//! Exact round trips of everything SQLite can store.

use crate::support::*;
use engine::restore::Mode;

const EDGES: &str = r#"
CREATE TABLE classes (id INTEGER PRIMARY KEY, v);
INSERT INTO classes (v) VALUES
  (NULL), (0), (-1), (9223372036854775807), (-9223372036854775808),
  (0.0), (-0.0), (1e308), (-1e308), (4.9e-324), (9e999), (-9e999), (0.1),
  (''), ('plain'), ('unicode: Ωμέγα 漢字 🦀 é'), ('nul:' || char(0) || ':inside'), ('line
break'), (' leading and trailing '),
  (x''), (x'00'), (x'00ff00ff'), (zeroblob(3)),
  ('42'), (42), (42.0), (x'3432');
CREATE TABLE typed (i INTEGER, r REAL, t TEXT, b BLOB, n NUMERIC, any_col ANY);
INSERT INTO typed VALUES (1, 1.5, 'x', x'01', 10, 'mixed'), ('text in int', 'text in real', 7, 3.25, 'n', x'ff'),
  (NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE wr (a TEXT, b INTEGER, c, PRIMARY KEY (a, b)) WITHOUT ROWID;
INSERT INTO wr VALUES ('b', 2, 'x'), ('a', 1, NULL), ('a', 2, 3.5);
CREATE TABLE nopk (a, b);
INSERT INTO nopk VALUES (1, 'dup'), (1, 'dup'), (1, 'dup'), (NULL, NULL);
CREATE TABLE empty_table (id INTEGER PRIMARY KEY, x TEXT NOT NULL DEFAULT 'd' CHECK (length(x) < 10));
CREATE TABLE "select" ("from" INTEGER PRIMARY KEY, "we""ird col" TEXT, "Ünïcode 列" BLOB, "with space" REAL);
INSERT INTO "select" VALUES (1, 'q"uote', x'01', -0.0);
"#;

#[tokio::test]
async fn every_sqlite_storage_class_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(&src, EDGES).await;
    let (_, mut repo) = new_repo(dir.path()).await;
    let s = backup_all(&mut repo, &src).await;
    assert_eq!(s.snapshot.tables.len(), 6);
    let dest = dir.path().join("dest.db");
    let restored = restore(&repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(
        restored.iter().map(|t| t.rows).sum::<u64>(),
        s.snapshot.total_rows()
    );
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
    // The restored tables keep their definitions (constraints, WITHOUT ROWID).
    let mut c = sqlite(&dest).await;
    let sql: String =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'empty_table'")
            .fetch_one(&mut c)
            .await
            .unwrap();
    assert!(sql.contains("CHECK (length(x) < 10)"), "{sql}");
    let bad = sqlx::query("INSERT INTO empty_table (x) VALUES ('far too long for the check')")
        .execute(&mut c)
        .await;
    assert!(bad.is_err(), "the CHECK constraint came back");
    let wr: String = sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'wr'")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert!(wr.ends_with("WITHOUT ROWID"));
}

#[tokio::test]
async fn multi_megabyte_values_span_chunks_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("big.db");
    exec(&src, "CREATE TABLE big (id INTEGER PRIMARY KEY, b BLOB, t TEXT);
                INSERT INTO big (b, t) VALUES (randomblob(5000000), hex(randomblob(1500000))), (randomblob(10), 'small'), (zeroblob(4000000), NULL);").await;
    let (_, mut repo) = new_repo(dir.path()).await;
    let s = backup_all(&mut repo, &src).await;
    assert!(
        s.snapshot.tables[0].chunks.len() > 4,
        "a 12 MB table spans several chunks"
    );
    let dest = dir.path().join("dest.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
}

#[tokio::test]
async fn indexes_and_foreign_keys_come_back_and_are_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("fk.db");
    // Child created before parent: restore must still order them validly.
    exec(&src, "CREATE TABLE child (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL REFERENCES parent(id), name TEXT);
                CREATE TABLE parent (id INTEGER PRIMARY KEY, name TEXT UNIQUE);
                CREATE INDEX child_by_parent ON child (parent_id, name);
                INSERT INTO parent VALUES (1, 'a'), (2, 'b');
                INSERT INTO child VALUES (10, 1, 'x'), (11, 2, 'y'), (12, 2, 'z');").await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    let dest = dir.path().join("dest.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
    let mut c = sqlite(&dest).await;
    let idx: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sqlite_master WHERE type='index' AND name='child_by_parent'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(idx, 1);
    let orphan = sqlx::query("INSERT INTO child VALUES (13, 99, 'orphan')")
        .execute(&mut c)
        .await;
    assert!(orphan.is_err(), "foreign key is enforced after restore");
    // The next rowid does not collide.
    sqlx::query("INSERT INTO parent (name) VALUES ('c')")
        .execute(&mut c)
        .await
        .unwrap();
    let max: i64 = sqlx::query_scalar("SELECT max(id) FROM parent")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(max, 3);
}

#[tokio::test]
async fn selection_rename_modes_and_columns() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT, secret TEXT);
                CREATE TABLE logs (id INTEGER PRIMARY KEY, line TEXT);
                CREATE TABLE log_archive (id INTEGER PRIMARY KEY, line TEXT);
                INSERT INTO users VALUES (1, 'ann', 's1'), (2, 'bob', 's2');
                INSERT INTO logs VALUES (1, 'l1');
                INSERT INTO log_archive VALUES (1, 'old');",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    let opts = engine::backup::BackupOptions {
        source: url(&src),
        selection: engine::selection::Selection {
            include: vec!["users".into(), "log*".into()],
            exclude: vec!["*_archive".into()],
            columns:
                <engine::selection::Selection as engine::selection::SelectionExt>::parse_columns(&[
                    "users=name".into(),
                ])
                .unwrap(),
        },
        tags: Default::default(),
    };
    let s = engine::backup::backup(&mut repo, &opts, &engine::progress::NoProgress)
        .await
        .unwrap();
    let names: Vec<&str> = s.snapshot.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["users", "logs"]);
    assert_eq!(
        s.snapshot.tables[0].stream_columns,
        vec!["id", "name"],
        "primary key kept, secret left out"
    );

    // Restore users into the source under a new name: the original stays as it was.
    let mut o = restore_opts(&src);
    o.selection.include = vec!["users".into()];
    o.rename.insert("users".into(), "users_restored".into());
    restore(&repo, &o).await.unwrap();
    let d = dump(&src, &["users_restored"]);
    assert_eq!(
        d["users_restored"]["columns"],
        serde_json::json!(["id", "name"])
    );
    assert_eq!(d["users_restored"]["rows"].as_array().unwrap().len(), 2);

    // create refuses an existing table and changes nothing.
    let before = dump(&src, &[]);
    let err = restore(&repo, &restore_opts(&src)).await.unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(before, dump(&src, &[]));

    // replace drops and recreates; append adds.
    exec(&src, "INSERT INTO logs VALUES (2, 'new since backup');").await;
    let mut r = restore_opts(&src);
    r.selection.include = vec!["logs".into()];
    r.mode = Mode::Replace;
    restore(&repo, &r).await.unwrap();
    assert_eq!(
        rows(&dump(&src, &["logs"]), "logs")
            .as_array()
            .unwrap()
            .len(),
        1
    );
    r.mode = Mode::Append;
    r.rename.insert("logs".into(), "log_archive".into());
    let mut c = sqlite(&src).await;
    sqlx::query("DELETE FROM log_archive")
        .execute(&mut c)
        .await
        .unwrap();
    restore(&repo, &r).await.unwrap();
    assert_eq!(
        rows(&dump(&src, &["log_archive"]), "log_archive"),
        rows(&dump(&src, &["logs"]), "logs")
    );

    // Typos are errors, not smaller restores.
    let mut bad = restore_opts(&src);
    bad.selection.include = vec!["userz".into()];
    assert!(
        restore(&repo, &bad)
            .await
            .unwrap_err()
            .to_string()
            .contains("unknown table")
    );
}

/// A backup that would take no table fails, saying what the source has: a typo'd
/// pattern must not pass for a good backup (it would count as the policy's last
/// success while protecting nothing).
#[tokio::test]
async fn a_backup_that_selects_no_table_fails_and_says_what_there_is() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(&src, "CREATE TABLE customers (id INTEGER PRIMARY KEY); CREATE TABLE orders (id INTEGER PRIMARY KEY);").await;
    let (_, mut repo) = new_repo(dir.path()).await;
    for (include, exclude) in [
        (vec!["nosuchtable*".to_string()], vec![]),
        (vec![], vec!["*".to_string()]),
    ] {
        let opts = engine::backup::BackupOptions {
            source: url(&src),
            selection: engine::selection::Selection {
                include,
                exclude,
                columns: Default::default(),
            },
            tags: Default::default(),
        };
        let e = engine::backup::backup(&mut repo, &opts, &engine::progress::NoProgress)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("matches none of the source's tables: customers, orders"),
            "{e}"
        );
    }
    assert!(
        repo.snapshots().await.unwrap().is_empty(),
        "no snapshot of nothing"
    );
    let empty = dir.path().join("empty.db");
    exec(&empty, "PRAGMA user_version = 1;").await;
    let opts = engine::backup::BackupOptions {
        source: url(&empty),
        selection: Default::default(),
        tags: Default::default(),
    };
    // A source without tables is an empty snapshot here (capture rounds need it); the
    // console's scheduled backups refuse it themselves.
    let summary = engine::backup::backup(&mut repo, &opts, &engine::progress::NoProgress)
        .await
        .unwrap();
    assert_eq!(summary.snapshot.tables.len(), 0);
}

#[tokio::test]
async fn unchanged_data_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000)
                INSERT INTO t SELECT i, randomblob(400) FROM n;",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    let first = backup_all(&mut repo, &src).await;
    exec(
        &src,
        "UPDATE t SET b = randomblob(400) WHERE id BETWEEN 50000 AND 50050;",
    )
    .await;
    let second = backup_all(&mut open_repo(&loc).await, &src).await;
    // A local edit dirties the chunk it falls in and, at worst, the few after it
    // until the cut points line up again; each chunk is at most 1 MiB.
    assert!(first.snapshot.bytes_stored > 40_000_000);
    assert!(
        second.snapshot.bytes_stored < 4 * 1024 * 1024,
        "second backup stored {} of {} bytes",
        second.snapshot.bytes_stored,
        first.snapshot.bytes_stored
    );
    let repo = open_repo(&loc).await;
    assert_eq!(repo.snapshots().await.unwrap().len(), 2);
    let dest = dir.path().join("dest.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
}

#[tokio::test]
async fn views_triggers_counters_and_pragmas_come_back_and_triggers_do_not_fire_on_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, a); CREATE TABLE log (x);
         CREATE VIEW v AS SELECT a FROM t; CREATE VIEW \"v v\" AS SELECT count(*) AS n FROM v;
         CREATE TRIGGER tr AFTER INSERT ON t BEGIN INSERT INTO log VALUES (new.a); END;
         INSERT INTO t (a) VALUES ('one'), ('two'), ('three'); DELETE FROM t WHERE a = 'three';
         PRAGMA user_version = 42; PRAGMA application_id = 7;",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    let s = backup_all(&mut repo, &src).await;
    assert!(s.snapshot.skipped.is_empty(), "{:?}", s.snapshot.skipped);
    let dest = dir.path().join("dest.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    // The dumps of the sqlite3 shell are equal: schema, rows (log holds the source's
    // three rows, not six: the trigger did not fire on the load), sqlite_sequence.
    let shell = |db: &std::path::Path, cmd: &str| {
        let out = std::process::Command::new("sqlite3")
            .arg(db)
            .arg(cmd)
            .output()
            .expect("the sqlite3 shell (apt-get install sqlite3)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(shell(&dest, ".dump"), shell(&src, ".dump"));
    assert_eq!(shell(&dest, "PRAGMA user_version"), "42\n");
    assert_eq!(shell(&dest, "PRAGMA application_id"), "7\n");
    // The counter continues past the deleted row, the trigger fires on new rows.
    assert_eq!(
        shell(&dest, "INSERT INTO t (a) VALUES ('four') RETURNING id"),
        "4\n"
    );
    assert_eq!(shell(&dest, "SELECT count(*) FROM log"), "4\n");
    assert_eq!(shell(&dest, "SELECT n FROM \"v v\""), "3\n");

    // Only log: the trigger that writes to it from t stays behind, by name (the views
    // over t alone are not about log at all).
    let only_log = dir.path().join("only_log.db");
    let mut o = restore_opts(&only_log);
    o.selection.include = vec!["log".into()];
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    assert_eq!(
        plan.objects_left,
        ["trigger tr not restored: it also uses t, which is not restored"]
    );
    // Only t: the views come along, and the trigger (it also writes to log) does not.
    let only_t = dir.path().join("only_t.db");
    let mut o = restore_opts(&only_t);
    o.selection.include = vec!["t".into()];
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    assert_eq!(plan.objects, ["view v", "view v v", "sequence t"]);
    restore(&repo, &o).await.unwrap();
    assert_eq!(shell(&only_t, "SELECT n FROM \"v v\""), "2\n");
}

#[tokio::test]
async fn a_wrong_password_is_refused_and_an_unencrypted_repository_needs_none() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = new_repo(dir.path()).await;
    let err =
        engine::repo::Repository::open(&loc, Some(&engine::secret::Secret::new("nope".into())))
            .await
            .err()
            .unwrap();
    assert!(matches!(err, engine::Error::WrongPassword { .. }), "{err}");
    let plain = dir.path().join("plain").to_str().unwrap().to_string();
    engine::repo::Repository::init(&plain, engine::repo::InitOptions::unencrypted())
        .await
        .unwrap();
    assert!(engine::repo::Repository::open(&plain, None).await.is_ok());
    assert!(matches!(
        engine::repo::Repository::init(&plain, engine::repo::InitOptions::unencrypted())
            .await
            .err()
            .unwrap(),
        engine::Error::RepositoryExists(_)
    ));
}

/// `orders` alone into a new file: its foreign key to `customers` (neither restored nor
/// in the file) cannot hold, so the table comes back without it — rows and checks
/// intact, a note saying so — instead of the restore failing. Restored together, the
/// foreign key stays.
#[tokio::test]
async fn a_table_restored_without_its_parent_loses_only_that_foreign_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("shop.db");
    exec(
        &src,
        "PRAGMA foreign_keys = ON;
         CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE products (id INTEGER PRIMARY KEY);
         CREATE TABLE orders (
           id INTEGER PRIMARY KEY,
           customer_id INTEGER REFERENCES \"Customers\"(id) NOT NULL,
           product_id INTEGER,
           total REAL NOT NULL CHECK (total >= 0),
           CONSTRAINT orders_product FOREIGN KEY (product_id) REFERENCES [products] (id) ON DELETE SET NULL
         );
         INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
         INSERT INTO products VALUES (7);
         INSERT INTO orders VALUES (1, 1, 7, 9.5), (2, 2, NULL, 20), (3, 1, 7, 0);",
    )
    .await;
    let (_location, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;

    // Only orders, into a file that has products but not customers.
    let dest = dir.path().join("orders.db");
    exec(
        &dest,
        "CREATE TABLE products (id INTEGER PRIMARY KEY); INSERT INTO products VALUES (7);",
    )
    .await;
    let mut o = restore_opts(&dest);
    o.selection.include = vec!["orders".into()];
    let done = restore(&repo, &o).await.unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].rows, 3);
    assert_eq!(
        done[0].notes,
        ["foreign key to Customers not restored: Customers does not exist in the destination"]
    );
    assert_eq!(
        rows(&dump(&dest, &["orders"]), "orders"),
        rows(&dump(&src, &["orders"]), "orders")
    );
    let mut c = sqlite(&dest).await;
    let fks: Vec<(String,)> =
        sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_list('orders')")
            .fetch_all(&mut c)
            .await
            .unwrap();
    assert_eq!(
        fks,
        [("products".to_string(),)],
        "only the foreign key to the missing table goes"
    );
    let err = sqlx::query("INSERT INTO orders VALUES (4, 1, 7, -1)")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("CHECK constraint failed"), "{err}");
    let err = sqlx::query("INSERT INTO orders VALUES (4, NULL, 7, 1)")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("NOT NULL constraint failed"),
        "{err}"
    );
    sqlx::Connection::close(c).await.unwrap();

    // Both tables into a new file: the foreign key stays, and holds.
    let dest = dir.path().join("both.db");
    let mut o = restore_opts(&dest);
    o.selection.include = vec!["customers".into(), "orders".into(), "products".into()];
    let done = restore(&repo, &o).await.unwrap();
    assert!(done.iter().all(|d| d.notes.is_empty()), "{done:?}");
    let mut c = sqlite(&dest).await;
    let fks: Vec<(String,)> = sqlx::query_as(
        "SELECT \"table\" FROM pragma_foreign_key_list('orders') ORDER BY \"table\"",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(fks, [("Customers".to_string(),), ("products".to_string(),)]);
    sqlx::query("PRAGMA foreign_keys = ON")
        .execute(&mut c)
        .await
        .unwrap();
    let err = sqlx::query("INSERT INTO orders VALUES (4, 99, 7, 1)")
        .execute(&mut c)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("FOREIGN KEY constraint failed"),
        "{err}"
    );
    sqlx::Connection::close(c).await.unwrap();
}
