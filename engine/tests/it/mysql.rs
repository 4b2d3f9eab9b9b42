//! MySQL/MariaDB sources and destinations against a real MariaDB server started by the
//! test: every column type the issue names round-trips (compared with `mysqldump` of the
//! source and of the restore), incremental snapshots restore the same, backups taken
//! while transfers run restore states that existed, SQL exports load back with the
//! `mariadb` client, and what is not available yet says so.

use crate::export::export;
use crate::support::*;
use engine::backup::{BackupOptions, backup};
use engine::export::FileFormat;
use engine::model::{ObjectKind, SegmentKind};
use engine::progress::NoProgress;
use engine::repo::Repository;
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use sqlx::{Connection, Executor};
use std::process::{Command, Stdio};
use testkit::mariadb::Mariadb;

const SCHEMA: &str = r#"
CREATE TABLE customers (
  id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(50) COLLATE utf8mb4_bin NOT NULL,
  latin VARCHAR(20) CHARACTER SET latin1,
  balance DECIMAL(20,6), big BIGINT UNSIGNED, tiny TINYINT, f FLOAT, d DOUBLE,
  flag BIT(3), mood ENUM('ok','meh'), tags SET('a','b','c'), doc JSON,
  born DATE, seen DATETIME(6), ts TIMESTAMP NULL DEFAULT NULL, t TIME, y YEAR,
  photo BLOB, bin BINARY(4), pt POINT,
  full_name VARCHAR(60) AS (CONCAT(name, '!')) VIRTUAL,
  KEY by_name (name)) ENGINE=InnoDB AUTO_INCREMENT=100;
INSERT INTO customers (id, name, latin, balance, big, tiny, f, d, flag, mood, tags, doc, born, seen, ts, t, y, photo, bin, pt) VALUES
 (1, 'Zoë ✓', 'café', 12345678901234.123456, 18446744073709551615, -128, 0.1, 1e300, b'101', 'meh', 'a,c', '{"k": [1, 2]}', '0000-00-00', '2026-12-01 14:06:59.123456', '2026-12-01 14:07:00', '-838:59:59', 2026, x'00ff10', x'01020304', ST_GeomFromText('POINT(1 2)')),
 (2, 'quote '' and \\ backslash', NULL, -0.000001, 0, 127, -1.5, -2.5e-300, b'000', 'ok', '', '"str"', '1999-12-31', '0000-00-00 00:00:00', NULL, '00:00:00', 1901, '', NULL, NULL),
 (3, 'tab	and
newline', 'x', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
CREATE TABLE orders (id INT PRIMARY KEY, customer INT UNSIGNED, total DECIMAL(10,2),
  CONSTRAINT orders_customer FOREIGN KEY (customer) REFERENCES customers (id) ON DELETE CASCADE);
INSERT INTO orders VALUES (1, 1, 9.99), (2, 2, 0.01), (3, NULL, 5);
CREATE TABLE nokey (msg TEXT);
INSERT INTO nokey VALUES ('same'), ('same'), (NULL);
CREATE VIEW v AS SELECT id FROM customers;
"#;

async fn backup_of(repo: &mut Repository, url: &str) -> engine::backup::BackupSummary {
    backup(
        repo,
        &BackupOptions {
            source: Secret::new(url.to_string()),
            selection: Default::default(),
            tags: Default::default(),
        },
        &NoProgress,
    )
    .await
    .unwrap()
}

fn restore_into(url: &str, snapshot: &str, mode: Mode) -> RestoreOptions {
    RestoreOptions {
        snapshot: snapshot.into(),
        dest: Secret::new(url.to_string()),
        selection: Default::default(),
        rename: Default::default(),
        mode,
        jobs: 1,
        parallel_min_bytes: u64::MAX,
        at_ms: None,
        filter: Default::default(),
        objects: Default::default(),
    }
}

#[tokio::test]
async fn a_mariadb_database_round_trips_identically() {
    let m = Mariadb::start().unwrap();
    let src = m.create_database("shop").unwrap();
    m.sql("shop", SCHEMA).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let first = backup_of(&mut repo, &src).await;
    assert!(
        first.snapshot.skipped.is_empty(),
        "{:?}",
        first.snapshot.skipped
    );
    assert!(
        first
            .snapshot
            .objects
            .iter()
            .any(|o| o.kind == ObjectKind::View && o.name == "v")
    );
    // The view comes back too.
    let source_dump = m.dump("shop", &[]).unwrap();
    assert!(source_dump.contains("AUTO_INCREMENT=100"), "{source_dump}");

    // A new database: mysqldump of it is mysqldump of the source.
    let copy = m.create_database("copy").unwrap();
    let done = restore(&repo, &restore_into(&copy, "latest", Mode::Create))
        .await
        .unwrap();
    assert_eq!(done.iter().map(|t| t.rows).sum::<u64>(), 9);
    same_text(&m.dump("copy", &[]).unwrap(), &source_dump);

    // Changes, an incremental snapshot, and a replace of the copy.
    m.sql(
        "shop",
        "UPDATE customers SET name = 'changed', doc = '[]' WHERE id = 2;
         INSERT INTO customers (name) VALUES ('auto');
         DELETE FROM orders WHERE id = 3; INSERT INTO orders VALUES (4, 100, 1.50);",
    )
    .unwrap();
    let second = backup_of(&mut repo, &src).await;
    let segments: Vec<(&str, SegmentKind)> = second
        .snapshot
        .tables
        .iter()
        .map(|t| (t.name.as_str(), t.segment))
        .collect();
    assert_eq!(
        segments,
        [
            ("customers", SegmentKind::Delta),
            ("nokey", SegmentKind::Full),
            ("orders", SegmentKind::Delta)
        ]
    );
    restore(&repo, &restore_into(&copy, "latest", Mode::Replace))
        .await
        .unwrap();
    same_text(&m.dump("copy", &[]).unwrap(), &m.dump("shop", &[]).unwrap());
    // The first snapshot still restores as it was.
    let old = m.create_database("old").unwrap();
    restore(&repo, &restore_into(&old, &first.id, Mode::Create))
        .await
        .unwrap();
    same_text(&m.dump("old", &[]).unwrap(), &source_dump);

    // Append adds rows in one transaction: a duplicate key changes nothing.
    let e = restore(&repo, &restore_into(&copy, "latest", Mode::Append))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("Duplicate entry"), "{e}");
    assert_eq!(
        m.sql("copy", "SELECT COUNT(*) FROM nokey").unwrap().trim(),
        "3"
    );

    // A SQL export loads back with the mariadb client.
    let sql = dir.path().join("shop.sql");
    export(&repo, &[], &[], FileFormat::Sql, &sql)
        .await
        .unwrap();
    m.create_database("from_sql").unwrap();
    let out = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h127.0.0.1", "-u", testkit::mariadb::USER, "--binary-mode"])
        .arg(format!("-P{}", m.port()))
        .arg(format!("-p{}", testkit::mariadb::PASSWORD))
        .arg("from_sql")
        .stdin(Stdio::from(std::fs::File::open(&sql).unwrap()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        m.dump("from_sql", &[]).unwrap(),
        m.dump("shop", &["v"]).unwrap()
    );

    // JSON lines: exact numbers are numbers, JSON is JSON.
    let jsonl = dir.path().join("customers.jsonl");
    export(&repo, &["customers"], &[], FileFormat::Jsonl, &jsonl)
        .await
        .unwrap();
    let line = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        line.contains("\"balance\":12345678901234.123456,")
            && line.contains("\"big\":18446744073709551615,")
            && line.contains("\"doc\":{\"k\": [1, 2]}"),
        "{line}"
    );

    // A CSV of one table.
    let csv = dir.path().join("orders.csv");
    export(&repo, &["orders"], &[], FileFormat::Csv, &csv)
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&csv).unwrap(),
        "\"id\",\"customer\",\"total\"\r\n1,1,9.99\r\n2,2,0.01\r\n4,100,1.50\r\n"
    );

    // Merges by key, with the dry run's counts equal to the run's: the copy drifts
    // (a row lost, a name's case changed in a case-insensitive column, a row added).
    m.sql(
        "copy",
        "DELETE FROM orders WHERE id = 1; UPDATE nokey SET msg = 'x';
         INSERT INTO orders VALUES (9, 1, 3.00);",
    )
    .unwrap();
    m.sql("copy", "UPDATE customers SET latin = 'CAFÉ' WHERE id = 1")
        .unwrap();
    let mut o = restore_into(&copy, "latest", Mode::Upsert);
    o.selection.include = vec!["orders".into(), "customers".into()];
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    let dry = engine::restore::diff(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let counts = |r: &[engine::restore::RestoredTable], t: &str| {
        let m = r.iter().find(|x| x.table == t).unwrap().merge.unwrap();
        (m.inserted, m.updated, m.unchanged, m.deleted)
    };
    assert_eq!(counts(&dry, "orders"), (1, 0, 2, 0));
    assert_eq!(
        counts(&dry, "customers"),
        (0, 1, 3, 0),
        "a case change is a change"
    );
    assert!(
        m.sql("copy", "SELECT COUNT(*) FROM orders WHERE id = 1")
            .unwrap()
            .starts_with('0')
    );
    let done = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(counts(&done, "orders"), (1, 0, 2, 0));
    assert_eq!(
        m.sql("copy", "SELECT latin FROM customers WHERE id = 1")
            .unwrap()
            .trim(),
        "café"
    );
    assert_eq!(
        m.sql("copy", "SELECT COUNT(*) FROM orders").unwrap().trim(),
        "4"
    );
    // replace-rows over a key range removes the extra row inside it only.
    let mut o = restore_into(&copy, "latest", Mode::ReplaceRows);
    o.selection.include = vec!["orders".into()];
    o.filter = engine::filter::RowFilter::parse(&["id >= 5".into()]).unwrap();
    let done = restore(&repo, &o).await.unwrap();
    assert_eq!(done[0].merge.map(|m| (m.inserted, m.deleted)), Some((0, 1)));
    assert!(
        !m.dump("copy", &[]).unwrap().contains("(9,"),
        "row 9 deleted"
    );
    let nokey = restore_into(&copy, "latest", Mode::Upsert);
    let e = restore(&repo, &nokey).await.unwrap_err().to_string();
    assert!(e.contains("no primary key"), "{e}");

    // Some columns: at restore time, and in a backup.
    let some = m.create_database("some").unwrap();
    let mut o = restore_into(&some, &first.id, Mode::Create);
    o.selection.include = vec!["orders".into()];
    o.selection.columns = [("orders".to_string(), vec!["total".to_string()])].into();
    restore(&repo, &o).await.unwrap();
    assert_eq!(
        m.sql("some", "SELECT id, total FROM orders ORDER BY id")
            .unwrap(),
        "1\t9.99\n2\t0.01\n3\t5.00\n"
    );
    let narrow = backup(
        &mut repo,
        &BackupOptions {
            source: Secret::new(src.clone()),
            selection: engine::selection::Selection {
                include: vec!["customers".into()],
                exclude: Vec::new(),
                columns: [(
                    "customers".to_string(),
                    vec!["name".to_string(), "balance".to_string()],
                )]
                .into(),
            },
            tags: Default::default(),
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(
        narrow
            .snapshot
            .skipped
            .iter()
            .any(|s| s.kind == ObjectKind::Definition && s.name == "customers")
    );
    let narrow_db = m.create_database("narrow").unwrap();
    restore(&repo, &restore_into(&narrow_db, &narrow.id, Mode::Create))
        .await
        .unwrap();
    assert_eq!(
        m.sql(
            "narrow",
            "SELECT id, name, balance FROM customers ORDER BY id"
        )
        .unwrap(),
        m.sql(
            "shop",
            "SELECT id, name, balance FROM customers ORDER BY id"
        )
        .unwrap()
    );

    // A drill restores into a scratch database on the server, checks every table and
    // the assertions, and drops it.
    let drill = |assertions: Vec<&str>| engine::drill::DrillOptions {
        snapshot: second.id.to_string(),
        scratch: engine::drill::Scratch::parse(&Secret::new(m.url("mysql"))),
        assertions: assertions.into_iter().map(String::from).collect(),
        jobs: 1,
    };
    let r = engine::drill::drill(
        &repo,
        &drill(vec!["SELECT COUNT(*) = 3 FROM orders"]),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(r.passed, "{r:#?}");
    assert_eq!(r.tables.len(), 3);
    assert!(r.tables.iter().any(|t| t.table == "nokey" && t.passed));
    assert!(r.cleaned_up);
    let r = engine::drill::drill(
        &repo,
        &drill(vec!["SELECT COUNT(*) = 99 FROM orders"]),
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(!r.passed && !r.assertions[0].passed, "{r:#?}");
    assert_eq!(
        m.sql("mysql", "SHOW DATABASES LIKE 'tablesafe_drill_%'")
            .unwrap(),
        "",
        "no scratch database left"
    );

    // Not available yet, and saying so.
    let mut o = restore_into(&copy, "latest", Mode::Create);
    o.at_ms = Some(1);
    assert!(
        restore(&repo, &o)
            .await
            .unwrap_err()
            .to_string()
            .contains("MySQL")
    );
    // A replace of a table other tables reference (and are not restored) is refused.
    let mut o = restore_into(&copy, "latest", Mode::Replace);
    o.selection.include = vec!["customers".into()];
    let e = restore(&repo, &o).await.unwrap_err().to_string();
    assert!(e.contains("referenced by foreign keys of orders"), "{e}");
}

/// Backups taken while transfers run restore a state that existed: the money in all
/// accounts is the same in every restore, for full and incremental snapshots.
#[tokio::test]
async fn backups_under_concurrent_transfers_restore_consistent_states() {
    let m = Mariadb::start().unwrap();
    let src = m.create_database("bank").unwrap();
    m.sql(
        "bank",
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
         CREATE TABLE transfers (id INT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, amount BIGINT);
         INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_500;",
    )
    .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (src, stop) = (src.clone(), stop.clone());
        tokio::spawn(async move {
            let mut c = sqlx::MySqlConnection::connect(&src).await.unwrap();
            let mut n: u64 = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let (a, b) = ((n * 7919) % 500 + 1, (n * 104729) % 500 + 1);
                let mut tx = c.begin().await.unwrap();
                tx.execute(
                    sqlx::query("UPDATE accounts SET balance = balance - 3 WHERE id = ?")
                        .bind(a as i64),
                )
                .await
                .unwrap();
                tx.execute(
                    sqlx::query("UPDATE accounts SET balance = balance + 3 WHERE id = ?")
                        .bind(b as i64),
                )
                .await
                .unwrap();
                tx.execute(
                    sqlx::query("INSERT INTO transfers (src, dst, amount) VALUES (?, ?, 3)")
                        .bind(a as i64)
                        .bind(b as i64),
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            }
            n
        })
    };
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        ids.push(backup_of(&mut repo, &src).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let transfers = writer.await.unwrap();
    assert!(transfers > 20, "the writer ran ({transfers} transfers)");
    assert!(
        ids[1..].iter().any(|s| s
            .snapshot
            .tables
            .iter()
            .any(|t| t.segment == SegmentKind::Delta)),
        "later backups are incremental"
    );
    for (i, s) in ids.iter().enumerate() {
        let name = format!("r{i}");
        let url = m.create_database(&name).unwrap();
        restore(&repo, &restore_into(&url, &s.id, Mode::Create))
            .await
            .unwrap();
        let out = m
            .sql(
                &name,
                "SELECT SUM(balance), COUNT(*) FROM accounts;
                 SELECT COUNT(*) FROM transfers;
                 SELECT COUNT(*) FROM accounts a WHERE a.balance <> 1000
                   + 3 * (SELECT COUNT(*) FROM transfers t WHERE t.dst = a.id)
                   - 3 * (SELECT COUNT(*) FROM transfers t WHERE t.src = a.id)",
            )
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "500000\t500", "snapshot {i}: money is conserved");
        assert_eq!(
            lines[2], "0",
            "snapshot {i}: every balance is its transfers (the tables are of one instant)"
        );
        let moved: u64 = lines[1].trim().parse().unwrap();
        assert!(moved <= transfers);
    }
}

/// Tables load into staging tables with their secondary and unique indexes built once
/// the rows are in: the restore is still identical to the source (definitions, index
/// order, rows, `AUTO_INCREMENT`), wide rows go in batches small enough for the
/// server's packet limit, and a damaged repository fails it with nothing left in the
/// destination.
#[tokio::test]
async fn indexes_built_after_the_rows_restore_identically() {
    let m = Mariadb::start().unwrap();
    let src = m.create_database("big").unwrap();
    m.sql(
        "big",
        "CREATE TABLE events (
           id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
           code VARCHAR(40) NOT NULL, at DATETIME(3), amount DECIMAL(12,2), body TEXT,
           seq INT NOT NULL, UNIQUE KEY code (code), KEY at_amount (at, amount),
           KEY seq (seq)) ENGINE=InnoDB AUTO_INCREMENT=50000;
         INSERT INTO events (id, code, at, amount, body, seq)
           SELECT seq, concat('c', md5(seq)), '2026-01-01' + INTERVAL seq MINUTE, seq / 7,
                  IF(seq % 5 = 0, NULL, repeat(char(65 + seq % 26), seq % 300)), 20000 - seq
           FROM seq_1_to_20000;
         CREATE TABLE items (event BIGINT NOT NULL, k INT NOT NULL, PRIMARY KEY (event, k),
           CONSTRAINT items_event FOREIGN KEY (event) REFERENCES events (id));
         INSERT INTO items SELECT seq DIV 3 + 1, seq % 3 FROM seq_0_to_29999;
         CREATE TABLE heap (msg TEXT, KEY msg (msg(10)));
         INSERT INTO heap SELECT concat('m', seq % 100) FROM seq_1_to_3000;
         CREATE TABLE wide (id INT PRIMARY KEY, doc MEDIUMTEXT);
         INSERT INTO wide SELECT seq, repeat(md5(seq), 3200) FROM seq_1_to_200;",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (loc, mut repo) = new_repo(dir.path()).await;
    backup_of(&mut repo, &src).await;
    let source_dump = m.dump("big", &[]).unwrap();

    let copy = m.create_database("copy").unwrap();
    let done = restore(&repo, &restore_into(&copy, "latest", Mode::Create))
        .await
        .unwrap();
    // (200 rows of 100 kB: more than MariaDB's 16 MiB max_allowed_packet in one batch.)
    assert_eq!(done.iter().map(|t| t.rows).sum::<u64>(), 53_200);
    same_text(&m.dump("copy", &[]).unwrap(), &source_dump);
    // The unique key built after the rows refuses a duplicate.
    let dup = m.sql(
        "copy",
        "INSERT INTO events (code, seq) SELECT code, 0 FROM events LIMIT 1",
    );
    assert!(dup.is_err(), "the unique key is in place");

    // A flipped byte in the middle of the data: the restore fails and leaves nothing.
    for sub in std::fs::read_dir(std::path::Path::new(&loc).join("data")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let pack = f.unwrap().path();
            let mut bytes = std::fs::read(&pack).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x40;
            std::fs::write(&pack, bytes).unwrap();
        }
    }
    let repo = open_repo(&loc).await;
    let damaged = m.create_database("damaged").unwrap();
    let e = restore(&repo, &restore_into(&damaged, "latest", Mode::Create))
        .await
        .unwrap_err();
    assert!(matches!(e, engine::Error::Damaged(_)), "{e}");
    assert_eq!(
        m.sql("damaged", "SHOW TABLES").unwrap(),
        "",
        "nothing left behind"
    );
}
