//! Restoring rows into a table that exists, by key (engine::merge): the dry-run diff
//! counts exactly what a run then does and changes nothing; upsert, skip-existing and
//! replace-rows (whole table, or a key range) each leave the table in the state they
//! promise, on SQLite and on PostgreSQL.

use crate::support::*;
use engine::filter::RowFilter;
use engine::merge::MergeCounts;
use engine::progress::NoProgress;
use engine::repo::Repository;
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use std::path::Path;
use std::process::Command;

fn counts(inserted: u64, updated: u64, unchanged: u64, deleted: u64) -> MergeCounts {
    MergeCounts {
        inserted,
        updated,
        unchanged,
        deleted,
    }
}

async fn merge(repo: &Repository, opts: &RestoreOptions) -> (MergeCounts, MergeCounts) {
    let plan = engine::restore::plan(repo, opts).await.unwrap();
    let dry = engine::restore::diff(repo, &plan, &NoProgress)
        .await
        .unwrap();
    let done = engine::restore::execute(repo, &plan, &NoProgress)
        .await
        .unwrap();
    (dry[0].merge.unwrap(), done[0].merge.unwrap())
}

fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The destination: the source with rows 1–10 deleted, 11–20 changed, 0 and 101–105
/// added.
fn drift(db: &Path) {
    sqlite3(
        db,
        "DELETE FROM items WHERE id <= 10;
         UPDATE items SET qty = qty + 1000 WHERE id BETWEEN 11 AND 20;
         INSERT INTO items VALUES (0, 'zero', 0), (101, 'new', 1), (102, 'new', 2), (103, 'new', 3), (104, 'new', 4), (105, 'new', 5);",
    );
}

#[tokio::test]
async fn merges_into_a_sqlite_table_do_what_their_diff_says() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, qty REAL);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
         INSERT INTO items SELECT i, 'item ' || i, i * 0.5 FROM n;
         CREATE TABLE log (msg TEXT);",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    let all = "SELECT group_concat(id || ':' || name || ':' || qty, ' ') FROM (SELECT * FROM items ORDER BY id)";
    let backup = sqlite3(&src, all);
    let opts = |dest: &Path, mode: Mode, filter: &[&str]| {
        let mut o = restore_opts(dest);
        o.selection.include = vec!["items".into()];
        o.mode = mode;
        o.filter =
            RowFilter::parse(&filter.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        o
    };
    let fresh = |name: &str| {
        let p = dir.path().join(name);
        std::fs::copy(&src, &p).unwrap();
        drift(&p);
        p
    };

    // Upsert: the diff, then the run; rows the backup lacks stay.
    let dest = fresh("upsert.db");
    let before = sqlite3(&dest, all);
    let plan = engine::restore::plan(&repo, &opts(&dest, Mode::Upsert, &[]))
        .await
        .unwrap();
    let dry = engine::restore::diff(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(dry[0].merge, Some(counts(10, 10, 80, 0)));
    assert_eq!(sqlite3(&dest, all), before, "a dry run changes nothing");
    let (_, done) = merge(&repo, &opts(&dest, Mode::Upsert, &[])).await;
    assert_eq!(done, counts(10, 10, 80, 0));
    assert_eq!(
        sqlite3(
            &dest,
            "SELECT group_concat(id || ':' || name || ':' || qty, ' ') FROM (SELECT * FROM items WHERE id BETWEEN 1 AND 100 ORDER BY id)"
        ),
        backup
    );
    assert_eq!(
        sqlite3(&dest, "SELECT count(*) FROM items WHERE id = 0 OR id > 100"),
        "6"
    );

    // Skip-existing: only the missing rows come back; changed rows stay changed.
    let dest = fresh("skip.db");
    let (dry, done) = merge(&repo, &opts(&dest, Mode::SkipExisting, &[])).await;
    assert_eq!(dry, done);
    assert_eq!(done, counts(10, 10, 80, 0));
    assert_eq!(
        sqlite3(&dest, "SELECT count(*) FROM items WHERE qty > 1000"),
        "10"
    );
    assert_eq!(sqlite3(&dest, "SELECT count(*) FROM items"), "106");

    // Replace-rows over a key range: inside it the table is the backup's (row 0
    // deleted), outside it nothing changes (101–105 stay, and so does a changed row).
    let dest = fresh("range.db");
    let (dry, done) = merge(&repo, &opts(&dest, Mode::ReplaceRows, &["id <= 15"])).await;
    assert_eq!(dry, done);
    assert_eq!(done, counts(10, 5, 0, 1));
    assert_eq!(
        sqlite3(&dest, "SELECT count(*) FROM items WHERE id = 0"),
        "0"
    );
    assert_eq!(
        sqlite3(&dest, "SELECT count(*) FROM items WHERE qty > 1000"),
        "5"
    );
    assert_eq!(
        sqlite3(&dest, "SELECT count(*) FROM items WHERE id > 100"),
        "5"
    );
    // Replace-rows without a filter: the table is the backup's.
    let dest = fresh("whole.db");
    let (_, done) = merge(&repo, &opts(&dest, Mode::ReplaceRows, &[])).await;
    assert_eq!(done, counts(10, 10, 80, 6));
    assert_eq!(sqlite3(&dest, all), backup);

    // What cannot be merged says why.
    let e = engine::restore::plan(&repo, &opts(&dir.path().join("none.db"), Mode::Upsert, &[]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("nothing to merge into"), "{e}");
    let mut o = opts(&fresh("log.db"), Mode::Upsert, &[]);
    o.selection.include = vec!["log".into()];
    let e = engine::restore::plan(&repo, &o)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no primary key"), "{e}");
}

#[tokio::test]
async fn merges_into_a_postgres_table_do_what_their_diff_says() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("src").unwrap();
    let schema = r#"CREATE SCHEMA "Shop";
        CREATE TABLE "Shop".items (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text, qty float8, doc json, tags text[]);"#;
    psql(
        &src,
        &format!(
            r#"{schema}
            INSERT INTO "Shop".items (name, qty, doc, tags) SELECT 'item ' || g, g * 0.1, ('{{"n": ' || g || '}}')::json, ARRAY['a', g::text] FROM generate_series(1, 100) g;"#
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    engine::backup::backup(
        &mut repo,
        &engine::backup::BackupOptions {
            source: Secret::new(src.clone()),
            selection: Default::default(),
            tags: Default::default(),
        },
        &NoProgress,
    )
    .await
    .unwrap();
    let all = r#"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM "Shop".items t"#;
    let backup = psql(&src, all);
    let mut n = 0;
    let mut fresh = || {
        n += 1;
        let url = pg.create_database(&format!("dest{n}")).unwrap();
        psql(
            &url,
            &format!(
                r#"{schema}
                INSERT INTO "Shop".items (id, name, qty, doc, tags) OVERRIDING SYSTEM VALUE
                  SELECT g, 'item ' || g, g * 0.1, ('{{"n": ' || g || '}}')::json, ARRAY['a', g::text] FROM generate_series(11, 100) g;
                UPDATE "Shop".items SET doc = '{{"n":  11}}' WHERE id = 11;
                UPDATE "Shop".items SET qty = qty + 1e-15 WHERE id = 12;
                INSERT INTO "Shop".items (id, name) OVERRIDING SYSTEM VALUE VALUES (0, 'zero'), (101, 'new');"#
            ),
        );
        url
    };
    let opts = |dest: &str, mode: Mode, filter: &[&str]| RestoreOptions {
        snapshot: "latest".into(),
        dest: Secret::new(dest.to_string()),
        selection: Default::default(),
        rename: Default::default(),
        mode,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: None,
        filter: RowFilter::parse(&filter.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap(),
        objects: Default::default(),
    };

    // Upsert: a json value differing only in spacing and a float in its last digits
    // count as changed (compared exactly); the identity column is matched, not set.
    let dest = fresh();
    let before = psql(&dest, all);
    let plan = engine::restore::plan(&repo, &opts(&dest, Mode::Upsert, &[]))
        .await
        .unwrap();
    let dry = engine::restore::diff(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(dry[0].merge, Some(counts(10, 2, 88, 0)));
    assert_eq!(psql(&dest, all), before, "a dry run changes nothing");
    let done = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(done[0].merge, Some(counts(10, 2, 88, 0)));
    assert_eq!(
        psql(
            &dest,
            r#"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM "Shop".items t WHERE id BETWEEN 1 AND 100"#
        ),
        backup
    );
    assert_eq!(psql(&dest, r#"SELECT count(*) FROM "Shop".items"#), "102");

    // Skip-existing.
    let dest = fresh();
    let (dry, done) = merge(&repo, &opts(&dest, Mode::SkipExisting, &[])).await;
    assert_eq!((dry, done), (counts(10, 2, 88, 0), counts(10, 2, 88, 0)));
    assert_eq!(
        psql(&dest, r#"SELECT doc::text FROM "Shop".items WHERE id = 11"#),
        r#"{"n":  11}"#
    );

    // Replace-rows over a key range, then over the whole table.
    let dest = fresh();
    let (dry, done) = merge(&repo, &opts(&dest, Mode::ReplaceRows, &["id < 12"])).await;
    assert_eq!((dry, done), (counts(10, 1, 0, 1), counts(10, 1, 0, 1)));
    assert_eq!(
        psql(
            &dest,
            r#"SELECT count(*) FROM "Shop".items WHERE id IN (0, 101)"#
        ),
        "1"
    );
    let (_, done) = merge(&repo, &opts(&dest, Mode::ReplaceRows, &[])).await;
    assert_eq!(done, counts(0, 1, 99, 1));
    assert_eq!(psql(&dest, all), backup);
}
