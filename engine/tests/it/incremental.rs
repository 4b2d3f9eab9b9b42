//! Row-level incremental backups: a later snapshot stores only changed rows and deleted
//! keys, and every snapshot of the chain still restores exactly the state it was taken
//! at (compared by the independent dump).

use crate::support::*;
use engine::model::SegmentKind;
use engine::segment::MAX_LAYERS;
use engine::verify::{VerifyOptions, verify};
use proptest::prelude::*;
use std::path::Path;

async fn restore_snapshot(repo_loc: &str, id: &str, dest: &Path) {
    let repo = open_repo(repo_loc).await;
    let mut opts = restore_opts(dest);
    opts.snapshot = id.to_string();
    restore(&repo, &opts).await.unwrap();
}

#[tokio::test]
async fn scattered_changes_store_only_changed_rows_and_every_snapshot_restores() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, payload BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 60000)
         INSERT INTO t SELECT i, 'name ' || i, i * 0.5, randomblob(150) FROM n;
         CREATE TABLE untouched (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
         INSERT INTO untouched VALUES ('a', 1), ('b', 2);",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    let first = backup_all(&mut repo, &src).await;
    let state1 = dump(&src, &[]);
    assert!(
        first
            .snapshot
            .tables
            .iter()
            .all(|t| t.segment == SegmentKind::Full)
    );

    // 1 % of rows changed, scattered over the whole table; some deleted; new rows both
    // in the gaps the deletes leave and past the end.
    exec(
        &src,
        "UPDATE t SET payload = randomblob(150), score = -score WHERE id % 100 = 7;
         DELETE FROM t WHERE id % 500 = 3;
         INSERT INTO t VALUES (1003, 'back again', NULL, x'00');
         INSERT INTO t SELECT 60000 + id, 'new', 1.5, randomblob(150) FROM t WHERE id <= 200;",
    )
    .await;
    let second = backup_all(&mut open_repo(&loc).await, &src).await;
    let state2 = dump(&src, &[]);
    let t = &second
        .snapshot
        .tables
        .iter()
        .find(|t| t.name == "t")
        .unwrap();
    assert_eq!(t.segment, SegmentKind::Delta);
    assert_eq!(t.base.len(), 1);
    assert!(
        second.snapshot.bytes_stored * 20 <= first.snapshot.bytes_stored,
        "a 1 % change stored {} bytes after a full backup of {}",
        second.snapshot.bytes_stored,
        first.snapshot.bytes_stored
    );

    // No change at all: the delta is empty.
    let third = backup_all(&mut open_repo(&loc).await, &src).await;
    assert!(third.snapshot.tables.iter().all(|t| t.segment_bytes == 0));
    assert!(third.snapshot.bytes_stored < 2048);

    exec(
        &src,
        "DELETE FROM t WHERE id > 30000; UPDATE untouched SET v = 3 WHERE k = 'b';",
    )
    .await;
    let fourth = backup_all(&mut open_repo(&loc).await, &src).await;
    let state4 = dump(&src, &[]);
    assert_eq!(fourth.snapshot.tables[0].base.len(), 3);

    for (id, state, name) in [
        (&first.id, &state1, "1"),
        (&second.id, &state2, "2"),
        (&third.id, &state2, "3"),
        (&fourth.id, &state4, "4"),
    ] {
        let dest = dir.path().join(format!("restored{name}.db"));
        restore_snapshot(&loc, id, &dest).await;
        assert_eq!(&dump(&dest, &[]), state, "snapshot {name}");
    }

    let report = verify(
        &open_repo(&loc).await,
        &VerifyOptions {
            snapshot: None,
            read_data: true,
        },
        &engine::progress::NoProgress,
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_key_not_in_binary_order_is_stored_full_and_still_restores() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    // NOCASE orders 'a' < 'B' < 'c'; byte order puts 'B' first.
    exec(
        &src,
        "CREATE TABLE n (k TEXT PRIMARY KEY COLLATE NOCASE, v) WITHOUT ROWID;
         INSERT INTO n VALUES ('a', 1), ('B', 2), ('c', 3);",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    let first = backup_all(&mut repo, &src).await;
    assert!(first.snapshot.tables[0].key.is_empty());
    exec(&src, "UPDATE n SET v = 20 WHERE k = 'b'").await;
    let second = backup_all(&mut open_repo(&loc).await, &src).await;
    assert_eq!(second.snapshot.tables[0].segment, SegmentKind::Full);
    let dest = dir.path().join("d.db");
    restore_snapshot(&loc, &second.id, &dest).await;
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
}

#[tokio::test]
async fn a_chain_of_deltas_is_bounded_by_a_new_full_segment() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
         INSERT INTO t SELECT i, hex(randomblob(20)) FROM n;",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    let mut segments = Vec::new();
    for i in 0..MAX_LAYERS + 1 {
        exec(
            &src,
            &format!("UPDATE t SET v = 'round {i}' WHERE id = {}", i * 7 + 1),
        )
        .await;
        let s = backup_all(&mut open_repo(&loc).await, &src).await;
        let t = &s.snapshot.tables[0];
        assert!(t.base.len() < MAX_LAYERS);
        segments.push(t.segment);
    }
    // Deltas until the chain is full, then a full segment starts a new chain.
    assert_eq!(
        segments.iter().filter(|s| **s == SegmentKind::Full).count(),
        1,
        "{segments:?}"
    );
    assert_eq!(segments[MAX_LAYERS - 1], SegmentKind::Full, "{segments:?}");
    let dest = dir.path().join("d.db");
    restore(&open_repo(&loc).await, &restore_opts(&dest))
        .await
        .unwrap();
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
}

#[tokio::test]
async fn damage_in_a_base_layer_is_reported_for_every_snapshot_built_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT i, randomblob(100) FROM n;",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    let first = backup_all(&mut repo, &src).await;
    let packs_after_first: Vec<_> = walk(&Path::new(&loc).join("data"));
    exec(&src, "UPDATE t SET v = x'01' WHERE id = 10").await;
    let second = backup_all(&mut open_repo(&loc).await, &src).await;
    assert_eq!(second.snapshot.tables[0].segment, SegmentKind::Delta);

    // Flip a byte in the full segment's pack (the largest: the first backup also
    // wrote its table's block list).
    let pack = packs_after_first
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(pack, bytes).unwrap();

    let report = verify(
        &open_repo(&loc).await,
        &VerifyOptions {
            snapshot: None,
            read_data: true,
        },
        &engine::progress::NoProgress,
    )
    .await
    .unwrap();
    let named: std::collections::BTreeSet<String> = report
        .problems
        .iter()
        .flat_map(|p| p.snapshots.iter().cloned())
        .collect();
    assert!(
        named.contains(&first.id[..12]) && named.contains(&second.id[..12]),
        "{named:?}"
    );

    let dest = dir.path().join("d.db");
    let mut opts = restore_opts(&dest);
    opts.snapshot = second.id.to_string();
    let err = restore(&open_repo(&loc).await, &opts).await.unwrap_err();
    assert!(matches!(err, engine::Error::Damaged(_)), "{err}");
    assert!(!dest.exists() || dump(&dest, &[]).as_object().unwrap().is_empty());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// SQLite's key 5 and key 5.0 are the same key: replacing one by the other must not
/// leave both in the merged table (found by the property test below).
#[tokio::test]
async fn an_integer_key_replaced_by_an_equal_real_is_one_row() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(&src, "CREATE TABLE p (k PRIMARY KEY, v) WITHOUT ROWID; INSERT INTO p VALUES (5, 'int'), (6, 'six');").await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    exec(&src, "INSERT OR REPLACE INTO p VALUES (5.0, 'real')").await;
    let second = backup_all(&mut open_repo(&loc).await, &src).await;
    assert_eq!(second.snapshot.tables[0].segment, SegmentKind::Delta);
    let dest = dir.path().join("d.db");
    restore_snapshot(&loc, &second.id, &dest).await;
    assert_eq!(dump(&src, &[]), dump(&dest, &[]));
}

/// Primary-key values of every SQLite storage class but NULL (which a WITHOUT ROWID key
/// refuses), including integers and reals that interleave.
#[derive(Debug, Clone)]
enum K {
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

fn key() -> impl Strategy<Value = K> {
    prop_oneof![
        (-50i64..50).prop_map(K::Int),
        (-50.0f64..50.0).prop_map(|f| K::Real((f * 4.0).round() / 4.0)),
        any::<i64>().prop_map(K::Int),
        "[a-cA-C]{0,3}".prop_map(K::Text),
        proptest::collection::vec(0u8..3, 0..3).prop_map(K::Blob),
    ]
}

/// One round of changes: upserts (key, value) and deletes.
fn round() -> impl Strategy<Value = (Vec<(K, i64)>, Vec<K>)> {
    (
        proptest::collection::vec((key(), any::<i64>()), 0..30),
        proptest::collection::vec(key(), 0..10),
    )
}

async fn apply(db: &Path, (upserts, deletes): &(Vec<(K, i64)>, Vec<K>)) {
    let mut c = sqlite(db).await;
    fn bind<'q>(
        q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
        k: &K,
    ) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
        match k.clone() {
            K::Int(i) => q.bind(i),
            K::Real(f) => q.bind(f),
            K::Text(s) => q.bind(s),
            K::Blob(b) => q.bind(b),
        }
    }
    for (k, v) in upserts {
        bind(sqlx::query("INSERT OR REPLACE INTO p VALUES (?, ?)"), k)
            .bind(*v)
            .execute(&mut c)
            .await
            .unwrap();
    }
    for k in deletes {
        bind(sqlx::query("DELETE FROM p WHERE k = ?"), k)
            .execute(&mut c)
            .await
            .unwrap();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]
    /// Whatever the keys and changes, each snapshot of a chain restores its own state.
    #[test]
    fn any_changes_to_mixed_keys_restore_from_every_snapshot(rounds in proptest::collection::vec(round(), 1..4)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let src = dir.path().join("p.db");
            exec(&src, "CREATE TABLE p (k PRIMARY KEY, v) WITHOUT ROWID").await;
            let (loc, mut repo) = new_repo(dir.path()).await;
            let mut taken = Vec::new();
            for (i, r) in rounds.iter().enumerate() {
                apply(&src, r).await;
                let s = backup_all(&mut repo, &src).await;
                if i > 0 {
                    assert_eq!(s.snapshot.tables[0].segment, SegmentKind::Delta);
                }
                taken.push((s.id, dump(&src, &[])));
                repo = open_repo(&loc).await;
            }
            for (i, (id, state)) in taken.iter().enumerate() {
                let dest = dir.path().join(format!("d{i}.db"));
                restore_snapshot(&loc, id, &dest).await;
                assert_eq!(&dump(&dest, &[]), state, "snapshot {i}");
            }
        });
    }
}
