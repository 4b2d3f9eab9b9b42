//! Restore to a file (engine::export), browsing (engine::browse) and partial restores
//! (`--where`), against real SQLite files and a real PostgreSQL. Every exported file is
//! loaded back the way a user would (sqlite3 scripts, `psql -f`, PostgreSQL's own
//! `COPY … (FORMAT csv)` and `json_populate_record`, a CSV reader that tells NULL from
//! an empty string) and compared with the source by an independent reader.

use crate::support::*;
use engine::browse::{BrowseQuery, browse};
use engine::export::{FileFormat, plan, write_file};
use engine::filter::RowFilter;
use engine::model::SegmentKind;
use engine::progress::NoProgress;
use engine::repo::Repository;
use engine::secret::Secret;
use engine::selection::Selection;
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::Command;

const ODD: &str = "odd, \"name\"";

async fn sqlite_source(dir: &Path) -> PathBuf {
    let src = dir.join("src.db");
    exec(
        &src,
        r#"CREATE TABLE "odd, ""name""" (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB, note TEXT NOT NULL DEFAULT '');
         CREATE INDEX odd_by_name ON "odd, ""name""" (name);
         INSERT INTO "odd, ""name""" VALUES
           (-9223372036854775808, 'min', 1.5, x'00ff10', 'a,b'),
           (1, '', 0.1, x'', '"quoted" and ''single'''),
           (2, NULL, NULL, NULL, 'line one
line two'),
           (3, 'tab	and \backslash', 1e300, x'0a0d', '\.'),
           (4, 'Zoë ✓ 日本', -2.5e-300, randomblob(40), 'cr' || char(13) || 'lf' || char(10)),
           (5, 'inf', 9e999, NULL, ''),
           (9223372036854775807, 'max', -9e999, x'5c', ' spaced ');
         WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
         INSERT INTO "odd, ""name""" SELECT i, 'item ' || i, i * 0.25, randomblob(i % 5), 'n' || (i % 7) FROM n;
         CREATE TABLE tags (tag TEXT, n INTEGER);
         INSERT INTO tags VALUES ('same', 1), ('same', 1), (NULL, NULL), ('x''y', 2);"#,
    )
    .await;
    src
}

/// Exports tables of the latest snapshot (all when `include` is empty) to `path`.
pub async fn export(
    repo: &Repository,
    include: &[&str],
    filter: &[&str],
    format: FileFormat,
    path: &Path,
) -> engine::Result<engine::export::Written> {
    let selection = Selection {
        include: include.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let filter = RowFilter::parse(&filter.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    let p = plan(repo, "latest", &selection, &filter, format).await?;
    write_file(repo, &p, path, &NoProgress).await
}

/// RFC 4180 with one addition a user's loader would make: an unquoted empty field is
/// NULL, a quoted one an empty string.
fn read_csv(text: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    field.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        match c {
            '"' => {
                in_quotes = true;
                quoted = true;
            }
            ',' | '\r' | '\n' => {
                if c == '\r' && chars.peek() == Some(&'\n') {
                    chars.next();
                }
                let f = std::mem::take(&mut field);
                row.push(if f.is_empty() && !quoted {
                    None
                } else {
                    Some(f)
                });
                quoted = false;
                if c != ',' {
                    rows.push(std::mem::take(&mut row));
                }
            }
            c => field.push(c),
        }
    }
    assert!(field.is_empty() && row.is_empty(), "the file ends mid-row");
    rows
}

fn unhex(s: &str) -> Vec<u8> {
    let h = s.strip_prefix("\\x").expect("a \\x value");
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
        .collect()
}

fn real(s: &str) -> f64 {
    match s {
        "Infinity" => f64::INFINITY,
        "-Infinity" => f64::NEG_INFINITY,
        s => s.parse().unwrap(),
    }
}

/// Loads rows of the odd table (id, name, score, photo, note) into a new database with
/// the same schema, binding each value by its column's type.
async fn load_odd(db: &Path, rows: Vec<[Option<Cell>; 5]>) {
    exec(
        db,
        r#"CREATE TABLE "odd, ""name""" (id INTEGER PRIMARY KEY, name TEXT, score REAL, photo BLOB, note TEXT NOT NULL DEFAULT '');"#,
    )
    .await;
    let mut c = sqlite(db).await;
    for row in rows {
        let mut q = sqlx::query(r#"INSERT INTO "odd, ""name""" VALUES (?, ?, ?, ?, ?)"#);
        for v in row {
            q = match v {
                None => q.bind(None::<String>),
                Some(Cell::Int(i)) => q.bind(i),
                Some(Cell::Real(f)) => q.bind(f),
                Some(Cell::Text(t)) => q.bind(t),
                Some(Cell::Blob(b)) => q.bind(b),
            };
        }
        q.execute(&mut c).await.unwrap();
    }
    c.close().await.unwrap();
}

enum Cell {
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

#[tokio::test]
async fn every_format_loads_back_equal_to_the_sqlite_source() {
    let dir = tempfile::tempdir().unwrap();
    let src = sqlite_source(dir.path()).await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    // An incremental snapshot: exports read the table through its delta layers.
    exec(
        &src,
        r#"UPDATE "odd, ""name""" SET name = 'changed' WHERE id % 50 = 0;
           DELETE FROM "odd, ""name""" WHERE id = 11;"#,
    )
    .await;
    let second = backup_all(&mut repo, &src).await;
    assert!(
        second
            .snapshot
            .tables
            .iter()
            .any(|t| t.segment == SegmentKind::Delta),
        "{second:?}"
    );
    let source = dump(&src, &[]);

    // SQL script of the whole snapshot, run by sqlite3's own shell.
    let sql = dir.path().join("all.sql");
    let w = export(&repo, &[], &[], FileFormat::Sql, &sql)
        .await
        .unwrap();
    assert_eq!(w.tables.len(), 2);
    let loaded = dir.path().join("from-sql.db");
    let out = Command::new("sqlite3")
        .arg(&loaded)
        .stdin(std::fs::File::open(&sql).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(dump(&loaded, &[]), source);
    let indexes = query_one(
        &loaded,
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'odd_by_name'",
    )
    .await;
    assert_eq!(indexes, 1, "the index is recreated");

    // A new SQLite file.
    let file = dir.path().join("all.sqlite");
    export(&repo, &[], &[], FileFormat::Sqlite, &file)
        .await
        .unwrap();
    assert_eq!(dump(&file, &[]), source);

    // CSV, loaded by a reader that tells NULL from '' and binds by column type.
    let csv = dir.path().join("odd.csv");
    let w = export(&repo, &[ODD], &[], FileFormat::Csv, &csv)
        .await
        .unwrap();
    assert_eq!(w.tables[0].rows, 397);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut records = read_csv(&text);
    assert_eq!(
        records.remove(0),
        ["id", "name", "score", "photo", "note"].map(|s| Some(s.to_string()))
    );
    let rows = records
        .into_iter()
        .map(|r| {
            let [id, name, score, photo, note]: [Option<String>; 5] = r.try_into().unwrap();
            [
                id.map(|v| Cell::Int(v.parse().unwrap())),
                name.map(Cell::Text),
                score.map(|v| Cell::Real(real(&v))),
                photo.map(|v| Cell::Blob(unhex(&v))),
                note.map(Cell::Text),
            ]
        })
        .collect();
    let from_csv = dir.path().join("from-csv.db");
    load_odd(&from_csv, rows).await;
    assert_eq!(dump(&from_csv, &[ODD]), dump(&src, &[ODD]));

    // JSON lines, typed: integers and reals are numbers, BLOBs \x hex.
    let jsonl = dir.path().join("odd.jsonl");
    export(&repo, &[ODD], &[], FileFormat::Jsonl, &jsonl)
        .await
        .unwrap();
    let rows = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let at: Vec<usize> = [
                "\"id\":",
                "\"name\":",
                "\"score\":",
                "\"photo\":",
                "\"note\":",
            ]
            .iter()
            .map(|k| line.find(k).unwrap())
            .collect();
            assert!(at.is_sorted(), "keys in column order: {line}");
            [
                v["id"].as_i64().map(Cell::Int),
                v["name"].as_str().map(|s| Cell::Text(s.into())),
                match &v["score"] {
                    serde_json::Value::Number(n) => Some(Cell::Real(n.as_f64().unwrap())),
                    serde_json::Value::String(s) => Some(Cell::Real(real(s))),
                    _ => None,
                },
                v["photo"].as_str().map(|s| Cell::Blob(unhex(s))),
                v["note"].as_str().map(|s| Cell::Text(s.into())),
            ]
        })
        .collect();
    let from_json = dir.path().join("from-json.db");
    load_odd(&from_json, rows).await;
    assert_eq!(dump(&from_json, &[ODD]), dump(&src, &[ODD]));

    // Filters: a key range, and a predicate on another column.
    let part = dir.path().join("part.csv");
    let w = export(
        &repo,
        &[ODD],
        &["id >= 100", "id < 200", "note = n3"],
        FileFormat::Csv,
        &part,
    )
    .await
    .unwrap();
    let ids: Vec<i64> = read_csv(&std::fs::read_to_string(&part).unwrap())[1..]
        .iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();
    let want: Vec<i64> = (100..200).filter(|i| i % 7 == 3).collect();
    assert_eq!(ids, want);
    assert_eq!(w.tables[0].rows, want.len() as u64);
}

async fn query_one(db: &Path, sql: &str) -> i64 {
    let mut c = sqlite(db).await;
    let v: i64 = sqlx::query_scalar(sql).fetch_one(&mut c).await.unwrap();
    c.close().await.unwrap();
    v
}

#[tokio::test]
async fn exports_refuse_what_would_lose_data_and_leave_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let src = sqlite_source(dir.path()).await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();

    // A CSV holds one table.
    let e = export(&repo, &[], &[], FileFormat::Csv, &out.join("x.csv"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("one table") && e.contains("tags"), "{e}");
    // A filter on a column a table lacks.
    let e = export(
        &repo,
        &[],
        &["nope = 1"],
        FileFormat::Sql,
        &out.join("x.sql"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("no column \"nope\""), "{e}");
    // An existing file is not overwritten.
    std::fs::write(out.join("keep.csv"), "precious").unwrap();
    let e = export(
        &repo,
        &["tags"],
        &[],
        FileFormat::Csv,
        &out.join("keep.csv"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("already exists"), "{e}");
    assert_eq!(
        std::fs::read_to_string(out.join("keep.csv")).unwrap(),
        "precious"
    );
    assert!(FileFormat::from_path(Path::new("x.txt")).is_err());

    // Damaged data: the export fails, names the table, and leaves nothing behind.
    let repo_dir = PathBuf::from(&loc);
    let mut packs = Vec::new();
    for sub in std::fs::read_dir(repo_dir.join("data")).unwrap() {
        for p in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            packs.push(p.unwrap().path());
        }
    }
    for p in &packs {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x55;
        std::fs::write(p, bytes).unwrap();
    }
    let repo = open_repo(&loc).await;
    for (format, name) in [
        (FileFormat::Csv, "odd.csv"),
        (FileFormat::Jsonl, "odd.jsonl"),
        (FileFormat::Sql, "odd.sql"),
        (FileFormat::Sqlite, "odd.sqlite"),
    ] {
        let r = export(&repo, &[ODD], &[], format, &out.join(name)).await;
        assert!(r.is_err(), "{name}: a damaged table must not export");
    }
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["keep.csv"], "no partial file is left");
}

#[tokio::test]
async fn browsing_pages_filters_and_looks_up_keys_without_restoring() {
    let dir = tempfile::tempdir().unwrap();
    let src = sqlite_source(dir.path()).await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    exec(
        &src,
        r#"UPDATE "odd, ""name""" SET name = 'renamed' WHERE id = 250;"#,
    )
    .await;
    backup_all(&mut repo, &src).await;
    let q = |filter: &[&str], key: &[&str], offset: u64, limit: usize| BrowseQuery {
        snapshot: "latest".into(),
        table: ODD.into(),
        filter: RowFilter::parse(&filter.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap(),
        key: key.iter().map(|s| s.to_string()).collect(),
        offset,
        limit,
    };
    let p = browse(&repo, &q(&[], &[], 0, 50)).await.unwrap();
    assert_eq!(p.columns, ["id", "name", "score", "photo", "note"]);
    assert_eq!(p.key, ["id"]);
    assert_eq!(p.table_rows, 398);
    assert_eq!(p.rows.len(), 50);
    assert!(p.more);
    assert_eq!(p.rows[0][0].as_deref(), Some("-9223372036854775808"));
    assert_eq!(p.rows[2][1], None, "NULL is not an empty string");
    assert_eq!(p.rows[1][1].as_deref(), Some(""));
    let last = browse(&repo, &q(&[], &[], 350, 50)).await.unwrap();
    assert_eq!(last.rows.len(), 48);
    assert!(!last.more);
    assert_eq!(last.rows[47][0].as_deref(), Some("9223372036854775807"));

    let hit = browse(&repo, &q(&[], &["250"], 0, 50)).await.unwrap();
    assert_eq!(hit.rows.len(), 1);
    assert_eq!(
        hit.rows[0][1].as_deref(),
        Some("renamed"),
        "the latest snapshot's row"
    );
    assert!(
        hit.scanned < 300,
        "a key lookup stops at the row ({} read)",
        hit.scanned
    );
    let none = browse(&repo, &q(&[], &["77777"], 0, 50)).await.unwrap();
    assert!(none.rows.is_empty());

    let f = browse(
        &repo,
        &q(&["name contains item 3", "score >= 80"], &[], 0, 50),
    )
    .await
    .unwrap();
    let ids: Vec<i64> = f
        .rows
        .iter()
        .map(|r| r[0].as_ref().unwrap().parse().unwrap())
        .collect();
    let want: Vec<i64> = (320..=399).collect();
    assert_eq!(ids, want[..50]);
    assert!(f.more);
    let nulls = browse(&repo, &q(&["photo is null"], &[], 0, 50))
        .await
        .unwrap();
    assert_eq!(nulls.rows.len(), 2);

    let e = browse(&repo, &q(&[], &["1", "2"], 0, 50))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("give 1 value"), "{e}");
    let e = browse(&repo, &q(&["colour = red"], &[], 0, 50))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no column \"colour\""), "{e}");
    let mut other = q(&[], &[], 0, 50);
    other.table = "nope".into();
    let e = browse(&repo, &other).await.unwrap_err().to_string();
    assert!(
        e.contains("has no table \"nope\"") && e.contains("tags"),
        "{e}"
    );
}

#[tokio::test]
async fn a_key_range_restores_only_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let src = sqlite_source(dir.path()).await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    let dest = dir.path().join("dest.db");
    let mut opts = restore_opts(&dest);
    opts.selection.include = vec![ODD.into()];
    opts.filter = RowFilter::parse(&["id >= 100".into(), "id <= 150".into()]).unwrap();
    let done = restore(&repo, &opts).await.unwrap();
    assert_eq!(done[0].rows, 51);
    let rows = rows(&dump(&dest, &[ODD]), ODD);
    let all = rows_of_range(&src, 100, 150);
    assert_eq!(rows, all);
}

fn rows_of_range(src: &Path, lo: i64, hi: i64) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("range.db");
    std::fs::copy(src, &copy).unwrap();
    let out = Command::new("sqlite3")
        .arg(&copy)
        .arg(format!(
            r#"DELETE FROM "odd, ""name""" WHERE id < {lo} OR id > {hi};"#
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    rows(&dump(&copy, &[ODD]), ODD)
}

fn psql(url: &str, args: &[&str]) -> String {
    let out = Command::new(testkit::pg_bin_dir().unwrap().join("psql"))
        .arg(url)
        .args(["-v", "ON_ERROR_STOP=1", "-XAtq"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every row of a table as PostgreSQL prints it, in key order: the count, a digest and
/// the first rows (a mismatch shows where).
fn pg_rows(url: &str, rel: &str) -> String {
    psql(
        url,
        &[
            "-c",
            &format!(
                "SELECT count(*) || ' rows, md5 ' || md5(string_agg(t::text, E'\\n' ORDER BY id)) || E'\\n' || string_agg(t::text, E'\\n' ORDER BY id) FILTER (WHERE id < 10) FROM {rel} t"
            ),
        ],
    )
}

#[tokio::test]
async fn postgres_tables_export_and_load_back_with_postgres_own_tools() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("src").unwrap();
    psql(
        &src,
        &[
            "-c",
            r#"
        CREATE SCHEMA "Sales";
        CREATE TYPE "Sales".mood AS ENUM ('ok', 'it''s fine');
        CREATE TABLE "Sales".items (
            id int PRIMARY KEY, seq serial, big bigint, price numeric(12,3), ratio float8,
            name text, photo bytea, flag boolean, doc jsonb, raw json, at timestamptz,
            day date, nums int[], mood "Sales".mood, uid uuid,
            CHECK (price >= 0));
        CREATE INDEX items_by_name ON "Sales".items (lower(name));
        INSERT INTO "Sales".items (id, big, price, ratio, name, photo, flag, doc, raw, at, day, nums, mood, uid) VALUES
          (1, 9223372036854775807, 1234.500, 'NaN', E'tab\there, "q", back\\slash', '\x00ff', true, '{"a": [1, 2.5, "x"]}', '[1, {"b": null}]', '2026-12-01 14:06:59.123456+00', '2026-12-01', '{1,NULL,3}', 'it''s fine', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'),
          (2, -1, 0, 'Infinity', '', '\x', false, 'null', '"s"', NULL, NULL, '{}', 'ok', NULL),
          (3, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
          (4, 0, 99999999.999, 1e-300, E'line\nbreak\r\nand \\.', '\x5c0a', true, '{"k": "v\u00e9"}', '{}', '1970-01-01 00:00:00+00', '0001-01-01', '{-5}', 'ok', '00000000-0000-0000-0000-000000000000');
        INSERT INTO "Sales".items (id, name, price) SELECT g, 'item ' || g, g / 8.0 FROM generate_series(10, 300) g;
        CREATE TABLE "Sales".lines (id int PRIMARY KEY, item int REFERENCES "Sales".items(id), qty int);
        INSERT INTO "Sales".lines SELECT g, 10 + g % 200, g FROM generate_series(1, 500) g;
        "#,
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let (_, mut repo) = new_repo(dir.path()).await;
    let opts_b = engine::backup::BackupOptions {
        source: Secret::new(src.clone()),
        selection: Default::default(),
        tags: Default::default(),
    };
    engine::backup::backup(&mut repo, &opts_b, &NoProgress)
        .await
        .unwrap();
    let items = r#""Sales".items"#;

    // The SQL script, run by psql into an empty database: same rows, constraints,
    // indexes, enum and sequence position.
    let sql = dir.path().join("all.sql");
    export(&repo, &[], &[], FileFormat::Sql, &sql)
        .await
        .unwrap();
    let copy = pg.create_database("from_sql").unwrap();
    psql(&copy, &["-f", sql.to_str().unwrap()]);
    for rel in [items, r#""Sales".lines"#] {
        assert_eq!(pg_rows(&copy, rel), pg_rows(&src, rel), "{rel}");
    }
    let seq = |url: &str| {
        psql(
            url,
            &[
                "-c",
                r#"INSERT INTO "Sales".items (id) VALUES (1000) RETURNING seq"#,
            ],
        )
    };
    assert_eq!(seq(&copy), seq(&src), "the serial continues where it was");
    let e = Command::new(testkit::pg_bin_dir().unwrap().join("psql"))
        .args([
            copy.as_str(),
            "-XAtq",
            "-c",
            r#"INSERT INTO "Sales".lines VALUES (9999, 777, 1)"#,
        ])
        .output()
        .unwrap();
    assert!(!e.status.success(), "the foreign key came back");
    assert_eq!(
        psql(
            &copy,
            &[
                "-c",
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'items_by_name'"
            ]
        )
        .trim(),
        "1"
    );

    // CSV, loaded by PostgreSQL's own COPY … (FORMAT csv, HEADER).
    let csv = dir.path().join("items.csv");
    export(&repo, &["Sales.items"], &[], FileFormat::Csv, &csv)
        .await
        .unwrap();
    psql(
        &src,
        &[
            "-c",
            r#"CREATE TABLE "Sales".items_csv (LIKE "Sales".items)"#,
        ],
    );
    psql(
        &src,
        &[
            "-c",
            &format!(
                r#"\copy "Sales".items_csv FROM '{}' (FORMAT csv, HEADER true)"#,
                csv.display()
            ),
        ],
    );
    let original = pg_rows(&src, "(SELECT * FROM \"Sales\".items WHERE id < 1000)");
    assert_eq!(pg_rows(&src, r#""Sales".items_csv"#), original);

    // JSON lines, loaded with json_populate_record.
    let jsonl = dir.path().join("items.jsonl");
    export(&repo, &["Sales.items"], &[], FileFormat::Jsonl, &jsonl)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&jsonl).unwrap();
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(first["big"], serde_json::json!(9223372036854775807i64));
    assert!(
        text.lines().next().unwrap().contains("\"price\":1234.500,"),
        "numerics keep their digits"
    );
    assert_eq!(first["ratio"], "NaN");
    assert_eq!(first["flag"], true);
    assert_eq!(first["doc"], serde_json::json!({"a": [1, 2.5, "x"]}));
    psql(
        &src,
        &[
            "-c",
            r#"CREATE TABLE "Sales".items_json (LIKE "Sales".items)"#,
        ],
    );
    let mut conn = sqlx::PgConnection::connect(&src).await.unwrap();
    for line in text.lines() {
        sqlx::query(r#"INSERT INTO "Sales".items_json SELECT * FROM json_populate_record(NULL::"Sales".items_json, $1::json)"#)
            .bind(line)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();
    // The one thing JSON lines cannot tell apart (documented): a jsonb value that is
    // JSON null reads back as SQL NULL.
    assert_eq!(
        psql(&src, &["-c", r#"UPDATE "Sales".items_json SET doc = 'null' WHERE id = 2 AND doc IS NULL RETURNING id"#]).trim(),
        "2"
    );
    assert_eq!(pg_rows(&src, r#""Sales".items_json"#), original);

    // A SQLite file: SQLite types, numerics as exact text.
    let file = dir.path().join("items.sqlite");
    export(
        &repo,
        &["Sales.items"],
        &["id <= 4"],
        FileFormat::Sqlite,
        &file,
    )
    .await
    .unwrap();
    let mut c = sqlite(&file).await;
    let row: (String, String, String, String, String, i64, Option<String>) = sqlx::query_as(
        r#"SELECT typeof(id), typeof(big), typeof(price), typeof(photo), typeof(flag), flag, price FROM "Sales.items" WHERE id = 1"#,
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "integer".into(),
            "integer".into(),
            "text".into(),
            "blob".into(),
            "integer".into(),
            1,
            Some("1234.500".into())
        )
    );
    let photo: Vec<u8> = sqlx::query_scalar(r#"SELECT photo FROM "Sales.items" WHERE id = 4"#)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(photo, b"\\\n");
    let n: i64 = sqlx::query_scalar(r#"SELECT count(*) FROM "Sales.items""#)
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(n, 4);
    c.close().await.unwrap();

    // A key range restored into another database, through the engine's restore.
    let dest = pg.create_database("range").unwrap();
    let mut opts = engine::restore::RestoreOptions {
        snapshot: "latest".into(),
        dest: Secret::new(dest.clone()),
        selection: Selection {
            include: vec!["Sales.lines".into()],
            ..Default::default()
        },
        rename: Default::default(),
        mode: engine::restore::Mode::Create,
        jobs: 2,
        parallel_min_bytes: u64::MAX,
        at_ms: None,
        filter: RowFilter::parse(&["id > 100".into(), "id <= 200".into(), "qty != 150".into()])
            .unwrap(),
        objects: Default::default(),
    };
    let done = restore(&repo, &opts).await.unwrap();
    assert_eq!(done[0].rows, 99);
    // Its foreign key points at a table the destination lacks: restored without it,
    // and said.
    assert!(
        done[0].notes.len() == 1 && done[0].notes[0].contains("lines_item_fkey not restored"),
        "{done:?}"
    );
    assert_eq!(
        pg_rows(&dest, r#""Sales".lines"#),
        pg_rows(
            &src,
            r#"(SELECT * FROM "Sales".lines WHERE id > 100 AND id <= 200 AND qty <> 150)"#
        )
    );
    // The same through the parallel staged load.
    let dest2 = pg.create_database("range2").unwrap();
    opts.dest = Secret::new(dest2.clone());
    opts.parallel_min_bytes = 0;
    let done = restore(&repo, &opts).await.unwrap();
    assert_eq!(done[0].rows, 99);
    assert_eq!(
        pg_rows(&dest2, r#""Sales".lines"#),
        pg_rows(&dest, r#""Sales".lines"#)
    );
    // A filter with a point in time is refused.
    opts.at_ms = Some(1);
    let e = restore(&repo, &opts).await.unwrap_err().to_string();
    assert!(e.contains("point in time"), "{e}");
}
