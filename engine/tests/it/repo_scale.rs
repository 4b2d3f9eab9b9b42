//! Backups that do not slow down as the repository grows: a backup finds its parent
//! through the source's hint instead of reading every manifest and index file, and the
//! local cache serves manifests and index files a listing names. Every test reads the
//! data back (restore compared with an independent dump, or verify).

use crate::support::*;
use engine::backup::{BackupOptions, BackupSummary, backup};
use engine::model::SegmentKind;
use engine::progress::NoProgress;
use engine::prune::prune;
use engine::repo::Repository;
use engine::selection::Selection;
use std::path::Path;

async fn open_lazy(loc: &str) -> Repository {
    Repository::open_lazy(loc, Some(&password())).await.unwrap()
}

async fn tagged(repo: &mut Repository, db: &Path, tag: &str) -> BackupSummary {
    let opts = BackupOptions {
        source: url(db),
        selection: Selection::default(),
        tags: [("t".to_string(), tag.to_string())].into(),
    };
    backup(repo, &opts, &NoProgress).await.unwrap()
}

/// One backup as the command line runs it (a new process: open without the index,
/// back up) and how many calls it made to the target.
async fn counted_backup(loc: &str, db: &Path) -> (BackupSummary, u64, bool) {
    let mut repo = open_lazy(loc).await;
    let before = repo.storage.requests();
    let s = backup_all(&mut repo, db).await;
    (
        s,
        repo.storage.requests() - before,
        repo.prepared_from_hint(),
    )
}

async fn change_a_row(db: &Path, i: u32) {
    exec(
        db,
        &format!("UPDATE t SET v = 'changed {i}' WHERE id = {}", 1 + i % 200),
    )
    .await;
}

async fn small_source(db: &Path) {
    exec(
        db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
         INSERT INTO t SELECT i, 'row ' || i FROM n;",
    )
    .await;
}

async fn restores_as_source(repo: &Repository, db: &Path, dir: &Path, name: &str) {
    let dest = dir.join(name);
    restore(repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(dump(&dest, &[]), dump(db, &[]), "restore of latest");
}

#[tokio::test]
async fn many_snapshots_do_not_make_a_backup_read_every_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    small_source(&db).await;
    let (loc, _) = new_repo(dir.path()).await;
    // A second source in the same repository: its snapshots are not this one's parents.
    let other = dir.path().join("other.db");
    small_source(&other).await;
    // Per chain position (a delta chain is cut every MAX_LAYERS backups), what a
    // backup costs with few snapshots, then with many.
    let mut early = Vec::new();
    let mut parent_layers = 0;
    for i in 0..12 {
        change_a_row(&db, i).await;
        let (s, n, hinted) = counted_backup(&loc, &db).await;
        assert_eq!(
            hinted,
            i > 0,
            "backup {i} found its parent through the hint"
        );
        if i > 0 {
            early.push((parent_layers, n));
        }
        parent_layers = s.snapshot.tables[0].layers().len();
    }
    for i in 0..40 {
        change_a_row(&db, 100 + i).await;
        backup_all(&mut open_lazy(&loc).await, &db).await;
        backup_all(&mut open_lazy(&loc).await, &other).await;
    }
    let all = open_repo(&loc).await.snapshots().await.unwrap();
    let snapshots = all.len();
    let mine = all
        .iter()
        .filter(|(_, s)| s.source.url.ends_with("src.db"))
        .count();
    assert_eq!((snapshots, mine), (92, 52));
    let mut parent_layers = all
        .iter()
        .rfind(|(_, s)| s.source.url.ends_with("src.db"))
        .unwrap()
        .1
        .tables[0]
        .layers()
        .len();
    for i in 0..10 {
        change_a_row(&db, 200 + i).await;
        let (s, n, hinted) = counted_backup(&loc, &db).await;
        assert!(hinted);
        let layers = parent_layers;
        parent_layers = s.snapshot.tables[0].layers().len();
        let same_position = early.iter().find(|(l, _)| *l == layers).map(|(_, n)| *n);
        // The same calls as at the same chain position with 10 snapshots (listing and
        // reading 90 manifests and their index files would take hundreds).
        assert_eq!(
            Some(n),
            same_position,
            "calls of a backup whose parent has {layers} layers, {snapshots} snapshots: \
             {n}, with at most 12 snapshots: {early:?}"
        );
        assert!(n < 40, "{n} calls");
    }
    restores_as_source(&open_repo(&loc).await, &db, dir.path(), "r.db").await;

    // Without hints (a repository written by an older tablesafe) the backup still
    // finds its parent, the slow way, and leaves a hint again.
    let repo = open_repo(&loc).await;
    for h in repo.storage.list("hints").await.unwrap() {
        repo.storage.delete(&h).await.unwrap();
    }
    change_a_row(&db, 999).await;
    let (s, n, hinted) = counted_backup(&loc, &db).await;
    assert!(!hinted);
    assert!(n > 100, "the slow way reads every manifest: {n} calls");
    assert_eq!(s.snapshot.tables[0].segment, SegmentKind::Delta);
    let (_, _, hinted) = counted_backup(&loc, &db).await;
    assert!(hinted);
    restores_as_source(&open_repo(&loc).await, &db, dir.path(), "r2.db").await;
    verify_ok(&loc).await;
}

#[tokio::test]
async fn cached_and_uncached_reads_agree_and_a_tampered_entry_is_read_again() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = dir.path().join("src.db");
    small_source(&db).await;
    let (loc, _) = new_repo(dir.path()).await;
    for i in 0..6 {
        change_a_row(&db, i).await;
        backup_all(&mut open_repo(&loc).await, &db).await;
    }
    let uncached = open_repo(&loc).await;
    let truth = serde_json::to_string(&uncached.snapshots().await.unwrap()).unwrap();

    let read = |cold: bool| {
        let (loc, cache) = (loc.clone(), cache.clone());
        async move {
            let mut repo = open_lazy(&loc).await;
            repo.set_cache_dir(Some(&cache)).unwrap();
            let before = repo.storage.requests();
            repo.load_index().await.unwrap();
            let snaps = repo.snapshots().await.unwrap();
            let calls = repo.storage.requests() - before;
            let _ = cold;
            (serde_json::to_string(&snaps).unwrap(), repo, calls)
        }
    };
    let (cold, repo, cold_calls) = read(true).await;
    assert_eq!(cold, truth);
    assert_eq!(repo.chunk_count(), uncached.chunk_count());
    let (warm, repo, warm_calls) = read(false).await;
    assert_eq!(warm, truth);
    assert_eq!(repo.chunk_count(), uncached.chunk_count());
    // Warm: the listings only.
    assert_eq!(warm_calls, 3, "cold {cold_calls}, warm {warm_calls}");
    assert!(cold_calls > 12);
    let cdir = repo.cache_dir().unwrap().to_path_buf();

    // Damage every cached manifest and index file, and put one manifest's entry under
    // another's name: each is noticed, read again from the target and cached again.
    let mut names = Vec::new();
    for sub in ["snapshots", "index"] {
        for e in std::fs::read_dir(cdir.join(sub)).unwrap().flatten() {
            names.push(e.path());
        }
    }
    assert!(names.len() >= 12);
    let snaps: Vec<_> = names
        .iter()
        .filter(|p| p.parent().unwrap().ends_with("snapshots"))
        .collect();
    std::fs::copy(snaps[0], snaps[1]).unwrap();
    for p in names.iter().filter(|p| *p != snaps[1]) {
        let mut raw = std::fs::read(p).unwrap();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x20;
        std::fs::write(p, raw).unwrap();
    }
    let (tampered, repo, calls) = read(false).await;
    assert_eq!(tampered, truth);
    assert_eq!(repo.chunk_count(), uncached.chunk_count());
    assert_eq!(
        calls, cold_calls,
        "everything was read again from the target"
    );
    let (again, _, calls) = read(false).await;
    assert_eq!(again, truth);
    assert_eq!(calls, 3, "and cached again");

    // Restore and verify through a cached repository.
    let mut repo = open_repo(&loc).await;
    repo.set_cache_dir(Some(&cache)).unwrap();
    restores_as_source(&repo, &db, dir.path(), "r.db").await;
}

#[tokio::test]
async fn a_backup_whose_parent_was_pruned_or_whose_hint_is_wrong_still_works() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = dir.path().join("src.db");
    let other = dir.path().join("other.db");
    small_source(&db).await;
    small_source(&other).await;
    exec(&other, "UPDATE t SET v = 'other'").await;
    let (loc, _) = new_repo(dir.path()).await;
    let cached = || async {
        let mut r = open_lazy(&loc).await;
        r.set_cache_dir(Some(&cache)).unwrap();
        r
    };
    tagged(&mut cached().await, &db, "a").await;
    change_a_row(&db, 1).await;
    let hinted = tagged(&mut cached().await, &db, "x").await;
    tagged(&mut cached().await, &other, "x").await;
    // The source's latest snapshot (its hint's) is forgotten (retention never
    // forgets a source's newest snapshot, so by hand), and its packs swept.
    let mut repo = open_repo(&loc).await;
    repo.storage
        .delete(&format!("snapshots/{}", hinted.id))
        .await
        .unwrap();
    let report = prune(&mut repo, &keep_last(5)).await.unwrap();
    assert!(report.packs_deleted > 0);
    change_a_row(&db, 2).await;
    let mut repo = cached().await;
    let s = tagged(&mut repo, &db, "a").await;
    assert!(!repo.prepared_from_hint(), "the hint's snapshot is gone");
    assert_eq!(s.snapshot.tables[0].segment, SegmentKind::Delta);
    restores_as_source(&open_repo(&loc).await, &db, dir.path(), "r1.db").await;

    // A hint moved under another snapshot's name, one naming another source's
    // snapshot, one of garbage: all ignored, the backup goes the slow way.
    let repo = open_repo(&loc).await;
    let hints = repo.storage.list("hints").await.unwrap();
    assert_eq!(hints.len(), 2, "one per source: {hints:?}");
    let mine = hints
        .iter()
        .find(|h| h.ends_with(s.id.as_str()))
        .unwrap()
        .clone();
    let theirs = hints.iter().find(|h| **h != mine).unwrap().clone();
    let their_bytes = repo.storage.get(&theirs).await.unwrap();
    let my_dir = mine.rsplit_once('/').unwrap().0.to_string();
    let their_id = theirs.rsplit('/').next().unwrap();
    for (i, (name, bytes)) in [
        (format!("{my_dir}/{their_id}"), their_bytes.clone()),
        (mine.clone(), their_bytes.clone()),
        (mine.clone(), b"garbage".to_vec()),
    ]
    .into_iter()
    .enumerate()
    {
        for h in repo.storage.list(&my_dir).await.unwrap() {
            repo.storage.delete(&h).await.unwrap();
        }
        repo.storage.put(&name, bytes).await.unwrap();
        change_a_row(&db, 3 + i as u32).await;
        let mut r = cached().await;
        let s = tagged(&mut r, &db, "a").await;
        assert!(!r.prepared_from_hint(), "{name}");
        assert_eq!(s.snapshot.tables[0].segment, SegmentKind::Delta);
        restores_as_source(
            &open_repo(&loc).await,
            &db,
            dir.path(),
            &format!("hint{i}.db"),
        )
        .await;
    }
    verify_ok(&loc).await;
}

/// Fresh rows in a table of a new name: nothing in common with before.
async fn fresh_table(db: &Path, name: &str, drop: Option<&str>) {
    let drop = drop.map(|d| format!("DROP TABLE {d};")).unwrap_or_default();
    exec(
        db,
        &format!(
            "{drop} CREATE TABLE {name} (id INTEGER PRIMARY KEY, payload BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO {name} SELECT i, randomblob(300) FROM n;"
        ),
    )
    .await;
}

#[tokio::test]
async fn a_prune_that_swept_what_the_cache_knew_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let db = dir.path().join("src.db");
    let (loc, _) = new_repo(dir.path()).await;
    let cached = || async {
        let mut r = open_repo(&loc).await;
        r.set_cache_dir(Some(&cache)).unwrap();
        r
    };
    fresh_table(&db, "a", None).await;
    let first = backup_all(&mut cached().await, &db).await;
    // Keep a copy of the data of the first snapshot.
    let a_copy = dir.path().join("a_copy.db");
    std::fs::copy(&db, &a_copy).unwrap();
    fresh_table(&db, "b", Some("a")).await;
    backup_all(&mut cached().await, &db).await;
    // Warm the cache with every manifest and index file, then prune the first
    // snapshot: its packs go, the cache still has their index files.
    let mut repo = cached().await;
    repo.snapshots().await.unwrap();
    let cdir = repo.cache_dir().unwrap().to_path_buf();
    let cached_index = std::fs::read_dir(cdir.join("index")).unwrap().count();
    let report = prune(&mut repo, &keep_last(1)).await.unwrap();
    assert_eq!(report.forgotten, vec![first.id.to_string()]);
    assert!(report.packs_deleted > 0);
    // The same rows as the pruned snapshot again: whatever the cache remembers of the
    // swept packs, the new snapshot references only packs that exist.
    std::fs::copy(&a_copy, &db).unwrap();
    let mut repo = cached().await;
    let s = backup_all(&mut repo, &db).await;
    assert!(
        s.snapshot.bytes_stored > 0,
        "the swept data was stored again"
    );
    restores_as_source(&cached().await, &db, dir.path(), "r.db").await;
    verify_ok(&loc).await;
    // And the cache followed the repository.
    let mut repo = cached().await;
    repo.load_index().await.unwrap();
    repo.snapshots().await.unwrap();
    let left = std::fs::read_dir(cdir.join("index")).unwrap().count();
    let on_target = open_repo(&loc)
        .await
        .storage
        .list("index")
        .await
        .unwrap()
        .len();
    assert_eq!(left, on_target, "cache had {cached_index} index files");
    assert_eq!(
        std::fs::read_dir(cdir.join("snapshots")).unwrap().count(),
        2
    );
}
