//! A merge's dry run (`engine::restore::diff`) changes nothing, by construction: on
//! PostgreSQL the live table's insert/update/delete statistics do not move (they count
//! rolled-back work too), no row trigger fires, no sequence moves, and the preview goes
//! through while another session holds every row `FOR UPDATE` (so it asks for no row
//! lock at all); on MariaDB an InnoDB table's triggers (writing to a MyISAM log, which
//! no rollback undoes) do not fire and its AUTO_INCREMENT does not move, and tables
//! whose engine cannot roll back are refused for merges; on SQLite the file is opened
//! read-only and the preview runs while another connection holds the write lock. Each
//! time the counts are then what the merge does. The merges have a composite key,
//! NULLs, a column subset, a renamed destination and a key-range filter.

use crate::support::*;
use engine::filter::RowFilter;
use engine::merge::MergeCounts;
use engine::progress::NoProgress;
use engine::repo::Repository;
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use sqlx::{Connection, Executor};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn counts(inserted: u64, updated: u64, unchanged: u64, deleted: u64) -> MergeCounts {
    MergeCounts {
        inserted,
        updated,
        unchanged,
        deleted,
    }
}

fn merge_opts(
    dest: &str,
    mode: Mode,
    table: &str,
    into: &str,
    columns: &[&str],
    filter: &[&str],
) -> RestoreOptions {
    let mut o = restore_opts(std::path::Path::new("unused"));
    o.dest = Secret::new(dest.to_string());
    o.mode = mode;
    o.selection.include = vec![table.into()];
    o.selection.columns = BTreeMap::from([(
        table.to_string(),
        columns.iter().map(|c| c.to_string()).collect(),
    )]);
    o.rename = BTreeMap::from([(table.to_string(), into.to_string())]);
    o.filter = RowFilter::parse(&filter.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    o
}

/// The preview's counts for one merge.
async fn preview(repo: &Repository, opts: &RestoreOptions) -> engine::Result<MergeCounts> {
    let plan = engine::restore::plan(repo, opts).await?;
    let dry = engine::restore::diff(repo, &plan, &NoProgress).await?;
    Ok(dry[0].merge.unwrap())
}

/// The run's counts for one merge.
async fn run(repo: &Repository, opts: &RestoreOptions) -> MergeCounts {
    restore(repo, opts).await.unwrap()[0].merge.unwrap()
}

/// A mode, its conditions, and the counts (inserted, updated, unchanged, deleted) it
/// must show.
type Case = (Mode, &'static [&'static str], (u64, u64, u64, u64));

/// Upsert and skip-existing over the whole table; replace-rows over `region = eu` from
/// id 2 (a key range on the composite key (region, id)).
const CASES: [Case; 3] = [
    (Mode::Upsert, &[], (2, 3, 15, 0)),
    (Mode::SkipExisting, &[], (2, 3, 15, 0)),
    (Mode::ReplaceRows, &["region = eu", "id >= 2"], (1, 2, 6, 1)),
];

mod postgres {
    use super::*;

    const SOURCE: &str = "CREATE SCHEMA shop;
        CREATE TABLE shop.items (region text, id int, name text, qty int, n serial, PRIMARY KEY (region, id));
        INSERT INTO shop.items (region, id, name, qty)
          SELECT r, i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'item ' || i END, i
          FROM unnest(ARRAY['eu', 'us']) r, generate_series(1, 10) i;";

    /// The destination: the source's rows under another name, drifted (two rows lost,
    /// a name set to NULL and one NULL set, a quantity changed, two rows added, and the
    /// unrestored column `n` changed), with a row trigger that moves a sequence.
    fn live(url: &str) {
        super::psql(
            url,
            "CREATE SCHEMA shop;
             CREATE TABLE shop.items_live (region text, id int, name text, qty int, n serial, PRIMARY KEY (region, id));
             INSERT INTO shop.items_live (region, id, name, qty)
               SELECT r, i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'item ' || i END, i
               FROM unnest(ARRAY['eu', 'us']) r, generate_series(1, 10) i;
             DELETE FROM shop.items_live WHERE region = 'eu' AND id IN (1, 2);
             UPDATE shop.items_live SET name = NULL WHERE region = 'eu' AND id = 3;
             UPDATE shop.items_live SET name = 'x' WHERE region = 'eu' AND id = 4;
             UPDATE shop.items_live SET qty = 50 WHERE region = 'us' AND id = 5;
             UPDATE shop.items_live SET n = 1000 WHERE region = 'us' AND id = 6;
             INSERT INTO shop.items_live (region, id, name, qty) VALUES ('eu', 11, 'extra', 11), ('us', 0, NULL, 0);
             CREATE SEQUENCE shop.fired;
             CREATE FUNCTION shop.fired() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN PERFORM nextval('shop.fired'); RETURN NULL; END$$;
             CREATE TRIGGER fired AFTER INSERT OR UPDATE OR DELETE ON shop.items_live
               FOR EACH ROW EXECUTE FUNCTION shop.fired();",
        );
    }

    /// Waits until no other client session is connected (a closed session's statistics
    /// reach the shared counters as its backend exits, before it leaves
    /// pg_stat_activity), then reads what `sql` returns.
    fn settled(url: &str, sql: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while super::psql(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
        ) != "0"
        {
            assert!(Instant::now() < deadline, "sessions still open");
            std::thread::sleep(Duration::from_millis(20));
        }
        super::psql(url, sql)
    }

    /// Rows inserted, updated and deleted in the live table (rolled back or not), the
    /// trigger's sequence, the serial column's sequence, and the table's rows.
    const WATCH: &str = "SELECT concat_ws(' | ',
          (SELECT concat_ws(',', n_tup_ins, n_tup_upd, n_tup_del) FROM pg_stat_user_tables WHERE relid = 'shop.items_live'::regclass),
          (SELECT concat_ws(',', last_value, is_called) FROM shop.fired),
          (SELECT concat_ws(',', last_value, is_called) FROM shop.items_live_n_seq),
          (SELECT md5(string_agg(t::text, ',' ORDER BY region, id)) FROM shop.items_live t))";

    fn stats(watch: &str) -> (i64, i64, i64) {
        let s: Vec<i64> = watch
            .split(" | ")
            .next()
            .unwrap()
            .split(',')
            .map(|n| n.parse().unwrap())
            .collect();
        (s[0], s[1], s[2])
    }

    #[tokio::test]
    async fn a_merge_preview_writes_locks_and_fires_nothing_on_postgres() {
        let pg = testkit::Postgres::start().unwrap();
        let src = pg.create_database("src").unwrap();
        super::psql(&src, SOURCE);
        let dir = tempfile::tempdir().unwrap();
        let (_, mut repo) = new_repo(dir.path()).await;
        engine::backup::backup(
            &mut repo,
            &engine::backup::BackupOptions {
                source: Secret::new(src),
                selection: Default::default(),
                tags: Default::default(),
            },
            &NoProgress,
        )
        .await
        .unwrap();
        for (i, (mode, filter, want)) in CASES.into_iter().enumerate() {
            let dest = pg.create_database(&format!("live{i}")).unwrap();
            live(&dest);
            let before = settled(&dest, WATCH);
            // Another session holds every row of the live table FOR UPDATE during the
            // preview: any row lock the preview asked for (FOR SHARE, an UPDATE's or a
            // DELETE's) would wait, and fail after the destination's lock_timeout.
            let mut holder = sqlx::PgConnection::connect(&dest).await.unwrap();
            holder.execute("BEGIN").await.unwrap();
            let locked: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM (SELECT 1 FROM shop.items_live FOR UPDATE) x",
            )
            .fetch_one(&mut holder)
            .await
            .unwrap();
            assert_eq!(locked, 20);
            let opts = merge_opts(
                &format!("{dest}?options[lock_timeout]=3000"),
                mode,
                "shop.items",
                "shop.items_live",
                &["region", "id", "name", "qty"],
                filter,
            );
            let dry = preview(&repo, &opts)
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(dry, counts(want.0, want.1, want.2, want.3), "{mode:?}");
            holder.execute("ROLLBACK").await.unwrap();
            holder.close().await.unwrap();
            assert_eq!(
                settled(&dest, WATCH),
                before,
                "{mode:?}: the preview inserted, updated or deleted rows (statistics, rolled-back work included), fired the trigger or moved a sequence"
            );
            let before_stats = stats(&before);

            // The merge then does what the preview said, which the same watch sees.
            let done = run(&repo, &opts).await;
            assert_eq!(done, dry, "{mode:?}");
            let after = settled(&dest, WATCH);
            let (ins, upd, del) = stats(&after);
            let skip = mode == Mode::SkipExisting;
            assert_eq!(
                (
                    ins - before_stats.0,
                    upd - before_stats.1,
                    del - before_stats.2
                ),
                (
                    done.inserted as i64,
                    if skip { 0 } else { done.updated as i64 },
                    done.deleted as i64
                ),
                "{mode:?}: {after}"
            );
            let fired = done.inserted + done.deleted + if skip { 0 } else { done.updated };
            assert!(
                after.contains(&format!(" | {fired},t | ")),
                "{mode:?}: the trigger fired {fired} times: {after}"
            );
        }
    }
}

mod mariadb {
    use super::*;
    use testkit::mariadb::Mariadb;

    const ROWS: &str = "INSERT INTO items (region, id, name, qty)
          SELECT r.region, s.seq, IF(s.seq % 4 = 0, NULL, CONCAT('item ', s.seq)), s.seq
          FROM (SELECT 'eu' AS region UNION ALL SELECT 'us') r, seq_1_to_10 s;";

    fn live_sql(engine: &str) -> String {
        format!(
            "CREATE TABLE items_live (region VARCHAR(8), id INT, name VARCHAR(20) NULL, qty INT,
               n INT NOT NULL AUTO_INCREMENT, PRIMARY KEY (region, id), UNIQUE KEY (n)) ENGINE={engine};
             {}
             DELETE FROM items_live WHERE region = 'eu' AND id IN (1, 2);
             UPDATE items_live SET name = NULL WHERE region = 'eu' AND id = 3;
             UPDATE items_live SET name = 'x' WHERE region = 'eu' AND id = 4;
             UPDATE items_live SET qty = 50 WHERE region = 'us' AND id = 5;
             INSERT INTO items_live (region, id, name, qty) VALUES ('eu', 11, 'extra', 11), ('us', 0, NULL, 0);",
            ROWS.replace("INTO items", "INTO items_live")
        )
    }

    /// A row trigger for each change, writing to a MyISAM table: what it writes stays
    /// even when the change is rolled back.
    const TRIGGERS: &str = "CREATE TABLE fired (what VARCHAR(3)) ENGINE=MyISAM;
        CREATE TRIGGER fired_ins AFTER INSERT ON items_live FOR EACH ROW INSERT INTO fired VALUES ('ins');
        CREATE TRIGGER fired_upd AFTER UPDATE ON items_live FOR EACH ROW INSERT INTO fired VALUES ('upd');
        CREATE TRIGGER fired_del AFTER DELETE ON items_live FOR EACH ROW INSERT INTO fired VALUES ('del');";

    /// The table's rows, its AUTO_INCREMENT and the triggers' log.
    fn watch(m: &Mariadb, db: &str) -> String {
        let rows = m
            .sql(db, "SELECT * FROM items_live ORDER BY region, id")
            .unwrap();
        let create = m.sql(db, "SHOW CREATE TABLE items_live").unwrap();
        let auto = create
            .split_whitespace()
            .find(|w| w.starts_with("AUTO_INCREMENT="))
            .unwrap_or("")
            .to_string();
        let fired = m
            .sql(
                db,
                "SELECT what, COUNT(*) FROM fired GROUP BY what ORDER BY what",
            )
            .unwrap();
        format!("{rows}\n{auto}\nfired: {fired}")
    }

    #[tokio::test]
    async fn a_merge_preview_changes_nothing_on_innodb_and_tables_that_cannot_roll_back_are_refused()
     {
        let m = Mariadb::start().unwrap();
        let src = m.create_database("src").unwrap();
        m.sql(
            "src",
            &format!(
                "CREATE TABLE items (region VARCHAR(8), id INT, name VARCHAR(20) NULL, qty INT,
                   n INT NOT NULL AUTO_INCREMENT, PRIMARY KEY (region, id), UNIQUE KEY (n)) ENGINE=InnoDB;
                 {ROWS}"
            ),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (_, mut repo) = new_repo(dir.path()).await;
        engine::backup::backup(
            &mut repo,
            &engine::backup::BackupOptions {
                source: Secret::new(src),
                selection: Default::default(),
                tags: Default::default(),
            },
            &NoProgress,
        )
        .await
        .unwrap();
        // A preview that asked for a row lock would give up after 2 s, not 50.
        m.sql("src", "SET GLOBAL innodb_lock_wait_timeout = 2")
            .unwrap();
        let columns = ["region", "id", "name", "qty"];
        for (i, (mode, filter, want)) in CASES.into_iter().enumerate() {
            let db = format!("live{i}");
            let dest = m.create_database(&db).unwrap();
            m.sql(&db, &format!("{}{TRIGGERS}", live_sql("InnoDB")))
                .unwrap();
            let opts = merge_opts(&dest, mode, "items", "items_live", &columns, filter);
            let before = watch(&m, &db);
            assert!(before.ends_with("fired: "), "{before}");
            // Another session holds every row FOR UPDATE meanwhile.
            let mut holder = sqlx::MySqlConnection::connect(&dest).await.unwrap();
            holder.execute("START TRANSACTION").await.unwrap();
            holder
                .execute("SELECT * FROM items_live FOR UPDATE")
                .await
                .unwrap();
            let dry = preview(&repo, &opts)
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(dry, counts(want.0, want.1, want.2, want.3), "{mode:?}");
            holder.execute("ROLLBACK").await.unwrap();
            holder.close().await.unwrap();
            assert_eq!(
                watch(&m, &db),
                before,
                "{mode:?}: the preview changed the table"
            );

            let done = run(&repo, &opts).await;
            assert_eq!(done, dry, "{mode:?}");
            let after = watch(&m, &db);
            let changed = done.inserted
                + done.deleted
                + if mode == Mode::SkipExisting {
                    0
                } else {
                    done.updated
                };
            assert_ne!(after, before, "{mode:?}");
            let logged: u64 = after
                .rsplit("fired: ")
                .next()
                .unwrap()
                .lines()
                .map(|l| l.split('\t').nth(1).unwrap().parse::<u64>().unwrap())
                .sum();
            assert_eq!(logged, changed, "{mode:?}: {after}");
        }

        // Tables whose engine cannot roll back: every merge (and an append) is refused
        // at plan time, saying what to do, and nothing is touched.
        for engine in ["MyISAM", "MEMORY", "Aria"] {
            let db = format!("nontx_{}", engine.to_lowercase());
            let dest = m.create_database(&db).unwrap();
            m.sql(&db, &live_sql(engine)).unwrap();
            let before = m
                .sql(&db, "SELECT * FROM items_live ORDER BY region, id")
                .unwrap();
            for mode in [
                Mode::Upsert,
                Mode::SkipExisting,
                Mode::ReplaceRows,
                Mode::Append,
            ] {
                let opts = merge_opts(&dest, mode, "items", "items_live", &columns, &[]);
                let e = engine::restore::plan(&repo, &opts)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{engine} {mode:?} was planned"))
                    .to_string();
                assert!(
                    e.contains(&format!(
                        "uses the {engine} storage engine, which cannot roll back"
                    )) && e.contains("ALTER TABLE `items_live` ENGINE=InnoDB")
                        && e.contains("restore into a new table"),
                    "{e}"
                );
            }
            assert_eq!(
                m.sql(&db, "SELECT * FROM items_live ORDER BY region, id")
                    .unwrap(),
                before
            );
        }
        // Restoring it into a new table, as the message says, works.
        let mut o = merge_opts(
            &m.url("nontx_myisam"),
            Mode::Create,
            "items",
            "items_restored",
            &columns,
            &[],
        );
        o.selection.columns.clear();
        restore(&repo, &o).await.unwrap();
    }
}

mod sqlite {
    use super::*;

    const SCHEMA: &str =
        "(region TEXT, id INTEGER, name TEXT, qty REAL, n INTEGER, PRIMARY KEY (region, id))";

    const ROWS: &str = "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 10)
        INSERT INTO TABLE SELECT r.region, s.i, CASE WHEN s.i % 4 = 0 THEN NULL ELSE 'item ' || s.i END, s.i, s.i
        FROM (SELECT 'eu' AS region UNION ALL SELECT 'us') r, s;";

    /// Triggers that would make any write by the preview fail.
    const TRIGGERS: &str = "
        CREATE TRIGGER no_insert BEFORE INSERT ON items_live BEGIN SELECT RAISE(ABORT, 'the insert trigger fired'); END;
        CREATE TRIGGER no_update BEFORE UPDATE ON items_live BEGIN SELECT RAISE(ABORT, 'the update trigger fired'); END;
        CREATE TRIGGER no_delete BEFORE DELETE ON items_live BEGIN SELECT RAISE(ABORT, 'the delete trigger fired'); END;";

    /// Changes when another connection commits to the file.
    async fn data_version(c: &mut sqlx::SqliteConnection) -> i64 {
        sqlx::query_scalar("PRAGMA data_version")
            .fetch_one(c)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_merge_preview_opens_the_file_read_only_and_fires_nothing_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.db");
        exec(
            &src,
            &format!(
                "CREATE TABLE items {SCHEMA}; {}",
                ROWS.replace("TABLE", "items")
            ),
        )
        .await;
        let (_, mut repo) = new_repo(dir.path()).await;
        backup_all(&mut repo, &src).await;
        for (i, (mode, filter, want)) in CASES.into_iter().enumerate() {
            let path = dir.path().join(format!("live{i}.db"));
            exec(
                &path,
                &format!(
                    "CREATE TABLE items_live {SCHEMA}; {}
                     DELETE FROM items_live WHERE region = 'eu' AND id IN (1, 2);
                     UPDATE items_live SET name = NULL WHERE region = 'eu' AND id = 3;
                     UPDATE items_live SET name = 'x' WHERE region = 'eu' AND id = 4;
                     UPDATE items_live SET qty = 50 WHERE region = 'us' AND id = 5;
                     UPDATE items_live SET n = 1000 WHERE region = 'us' AND id = 6;
                     INSERT INTO items_live VALUES ('eu', 11, 'extra', 11, 11), ('us', 0, NULL, 0, 0);
                     {TRIGGERS}",
                    ROWS.replace("TABLE", "items_live")
                ),
            )
            .await;
            let dest = format!("sqlite://{}", path.display());
            let opts = merge_opts(
                &dest,
                mode,
                "items",
                "items_live",
                &["region", "id", "name", "qty"],
                filter,
            );
            let bytes = std::fs::read(&path).unwrap();
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            // Another connection holds the write lock throughout (a writer in the middle
            // of its transaction): a preview that wanted to write would wait, then fail.
            let mut writer = sqlite(&path).await;
            writer.execute("BEGIN IMMEDIATE").await.unwrap();
            let v0 = data_version(&mut writer).await;
            let dry = preview(&repo, &opts)
                .await
                .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert_eq!(dry, counts(want.0, want.1, want.2, want.3), "{mode:?}");
            assert_eq!(data_version(&mut writer).await, v0, "{mode:?}");
            writer.execute("ROLLBACK").await.unwrap();
            writer.close().await.unwrap();
            assert!(
                std::fs::read(&path).unwrap() == bytes,
                "{mode:?}: the file changed"
            );
            assert_eq!(
                std::fs::metadata(&path).unwrap().modified().unwrap(),
                modified
            );

            exec(
                &path,
                "DROP TRIGGER no_insert; DROP TRIGGER no_update; DROP TRIGGER no_delete;",
            )
            .await;
            assert_eq!(run(&repo, &opts).await, dry, "{mode:?}");
        }
    }
}
