//! Retention and prune: the preview is what prune does, the space comes back, and
//! pruning while other backups write to the same repository loses nothing they
//! reference (checked by reading every remaining snapshot back).

use crate::support::*;
use engine::backup::{BackupOptions, backup};
use engine::progress::{NoProgress, Progress};
use engine::prune::{PruneOptions, decide, prune};
use engine::retention::KeepRules;
use engine::selection::Selection;
use sqlx::{Executor, Row};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};

fn dir_size(p: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(p).unwrap().flatten() {
        let m = e.metadata().unwrap();
        n += if m.is_dir() {
            dir_size(&e.path())
        } else {
            m.len()
        };
    }
    n
}

fn tags(policy: &str) -> BTreeMap<String, String> {
    [("policy".to_string(), policy.to_string())].into()
}

fn opts(rules: KeepRules, policy: Option<&str>, dry_run: bool) -> PruneOptions {
    PruneOptions {
        rules,
        tz: chrono_tz::UTC,
        only_tags: policy.map(tags).unwrap_or_default(),
        dry_run,
    }
}

async fn tagged_backup(repo_loc: &str, db: &Path, policy: &str) -> engine::backup::BackupSummary {
    let mut repo = open_repo(repo_loc).await;
    let o = BackupOptions {
        source: url(db),
        selection: Selection::default(),
        tags: tags(policy),
    };
    backup(&mut repo, &o, &NoProgress).await.unwrap()
}

/// Replaces the database's one table by a new one of fresh random rows: nothing in
/// common with before, not even a delta chain (the table has a new name).
async fn fresh_rows(db: &Path, n: u32) {
    let mut script = String::new();
    for t in tables(db).await {
        script.push_str(&format!("DROP TABLE \"{t}\";"));
    }
    let name = format!("t{}", rand_suffix());
    script.push_str(&format!(
        "CREATE TABLE {name} (id INTEGER PRIMARY KEY, payload BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
         INSERT INTO {name} SELECT i, randomblob(500) FROM n;"
    ));
    exec(db, &script).await;
}

async fn tables(db: &Path) -> Vec<String> {
    let mut c = sqlite(db).await;
    let rows = c
        .fetch_all("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .await
        .unwrap();
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

/// Rewrites the payload of half the rows of the database's one table.
async fn rewrite_half(db: &Path, parity: u32) {
    let t = tables(db).await.remove(0);
    exec(
        db,
        &format!("UPDATE {t} SET payload = randomblob(500) WHERE id % 2 = {parity}"),
    )
    .await;
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

#[tokio::test]
async fn preview_is_what_prune_does_and_space_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("src.db");
    let (loc, _) = new_repo(dir.path()).await;
    let mut ids = Vec::new();
    let mut dumps = Vec::new();
    for _ in 0..5 {
        fresh_rows(&db, 4000).await;
        ids.push(tagged_backup(&loc, &db, "nightly").await.id);
        dumps.push(dump(&db, &[]));
    }
    let repo_dir = dir.path().join("repo");
    let before = dir_size(&repo_dir);
    let rules = KeepRules {
        last: 2,
        ..Default::default()
    };

    let mut repo = open_repo(&loc).await;
    let preview = decide(&repo, &rules, chrono_tz::UTC, &tags("nightly"))
        .await
        .unwrap();
    let kept: Vec<&str> = preview
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.as_str())
        .collect();
    assert_eq!(kept, vec![ids[4].as_str(), ids[3].as_str()]);
    assert_eq!(preview[0].reasons, vec!["last #1"]);

    // A dry run says the same and changes nothing.
    let dry = prune(&mut repo, &opts(rules, Some("nightly"), true))
        .await
        .unwrap();
    assert_eq!(dry.decisions, preview);
    assert!(dry.bytes_unreferenced > before / 2, "{dry:?}");
    assert_eq!(repo.snapshots().await.unwrap().len(), 5);
    assert_eq!(dir_size(&repo_dir), before);

    let report = prune(&mut repo, &opts(rules, Some("nightly"), false))
        .await
        .unwrap();
    assert_eq!(report.decisions, preview);
    assert_eq!(
        report.forgotten,
        vec![ids[2].to_string(), ids[1].to_string(), ids[0].to_string()]
    );
    assert_eq!(report.packs_deferred, 0, "nobody else was using it");
    let left: Vec<_> = repo
        .snapshots()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(left, vec![ids[3].clone(), ids[4].clone()]);
    let after = dir_size(&repo_dir);
    assert!(
        after < before * 2 / 4,
        "3 of 5 independent snapshots forgotten: {before} → {after} bytes"
    );
    assert!(report.bytes_freed > before / 2);
    verify_ok(&loc).await;
    for (i, id) in [(3, &ids[3]), (4, &ids[4])] {
        let dest = dir.path().join(format!("restored{i}.db"));
        let mut o = restore_opts(&dest);
        o.snapshot = id.to_string();
        restore(&repo, &o).await.unwrap();
        assert_eq!(dump(&dest, &[]), dumps[i]);
    }
    // Refuses to run without a rule rather than delete everything.
    let err = prune(&mut repo, &opts(KeepRules::default(), None, false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no retention rule"), "{err}");
}

/// Blocks a backup at its first table until released.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, bool)>, // (entered, released)
    cv: Condvar,
}

impl Gate {
    fn wait_entered(&self) {
        let mut s = self.state.lock().unwrap();
        while !s.0 {
            s = self.cv.wait(s).unwrap();
        }
    }
    fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.cv.notify_all();
    }
}

struct Release(Arc<Gate>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Progress for Gate {
    fn table_started(&self, _: &str, _: Option<u64>) {
        let mut s = self.state.lock().unwrap();
        s.0 = true;
        self.cv.notify_all();
        while !s.1 {
            s = self.cv.wait(s).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prune_while_backups_run_deletes_nothing_they_reference() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = new_repo(dir.path()).await;
    // Two databases with identical contents: a backup of one deduplicates entirely
    // against a snapshot of the other.
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    fresh_rows(&a, 6000).await;
    std::fs::copy(&a, &b).unwrap();
    let b_dump = dump(&b, &[]);
    tagged_backup(&loc, &a, "a").await;

    // A backup of b starts, reads the index (everything it needs is in a's packs), and
    // is held at its first table.
    let gate = Arc::new(Gate::default());
    let held = {
        let (loc, b, gate) = (loc.clone(), b.clone(), gate.clone());
        tokio::spawn(async move {
            let mut repo = open_repo(&loc).await;
            let o = BackupOptions {
                source: url(&b),
                selection: Selection::default(),
                tags: tags("b"),
            };
            backup(&mut repo, &o, &*gate).await.unwrap()
        })
    };
    // Whatever happens below, the held backup is let go (a failed assertion must not
    // hang the test).
    let _release = Release(gate.clone());
    tokio::task::spawn_blocking({
        let gate = gate.clone();
        move || gate.wait_entered()
    })
    .await
    .unwrap();

    // Meanwhile a's data changes completely and a's old snapshot is pruned: its packs
    // are unreferenced, but the held backup is about to reference them.
    fresh_rows(&a, 6000).await;
    tagged_backup(&loc, &a, "a").await;
    let rules = KeepRules {
        last: 1,
        ..Default::default()
    };
    let mut repo = open_repo(&loc).await;
    let first = prune(&mut repo, &opts(rules, Some("a"), false))
        .await
        .unwrap();
    assert_eq!(first.forgotten.len(), 1);
    assert!(first.packs_deferred > 0, "{first:?}");
    assert_eq!(first.packs_deleted, 0, "{first:?}");
    assert!(
        first.waiting_for.iter().any(|w| w.starts_with("backup on")),
        "{first:?}"
    );

    // A backup that starts after the mark must not deduplicate against marked packs.
    let c = dir.path().join("c.db");
    std::fs::copy(&b, &c).unwrap();
    let late = tagged_backup(&loc, &c, "c").await;
    assert!(
        late.snapshot.bytes_stored > 1_000_000,
        "stored {} bytes: it reused condemned packs",
        late.snapshot.bytes_stored
    );

    // A second prune while the backup is still held deletes nothing it needs either.
    let again = prune(&mut repo, &opts(rules, Some("a"), false))
        .await
        .unwrap();
    assert!(again.packs_deferred > 0, "{again:?}");

    gate.release();
    let held = held.await.unwrap();
    assert_eq!(
        held.snapshot.bytes_stored, 0,
        "everything deduplicated against a's packs"
    );

    // Now nobody is using the repository: the next prune sweeps, re-checking against
    // the snapshot the held backup made, and keeps what it references.
    let last = prune(&mut repo, &opts(rules, Some("a"), false))
        .await
        .unwrap();
    assert_eq!(last.packs_deferred, 0, "{last:?}");
    verify_ok(&loc).await;
    let repo = open_repo(&loc).await;
    let dest = dir.path().join("restored.db");
    let mut o = restore_opts(&dest);
    o.snapshot = held.id.to_string();
    restore(&repo, &o).await.unwrap();
    assert_eq!(dump(&dest, &[]), b_dump);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_backups_and_prunes_at_once_keep_every_snapshot_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = new_repo(dir.path()).await;
    let mut dbs = Vec::new();
    for i in 0..3 {
        let db = dir.path().join(format!("db{i}.db"));
        fresh_rows(&db, 3000).await;
        dbs.push(db);
    }
    let mut tasks = Vec::new();
    for (i, db) in dbs.iter().enumerate() {
        let (loc, db) = (loc.clone(), db.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..4 {
                // Half the rows change each round, so packs go in and out of use.
                if round == 2 {
                    fresh_rows(&db, 3000).await;
                } else {
                    rewrite_half(&db, round % 2).await;
                }
                tagged_backup(&loc, &db, &format!("p{i}")).await;
            }
        }));
    }
    let pruner = {
        let loc = loc.clone();
        tokio::spawn(async move {
            let mut runs = 0;
            for _ in 0..12 {
                let mut repo = open_repo(&loc).await;
                let rules = KeepRules {
                    last: 1,
                    ..Default::default()
                };
                match prune(&mut repo, &opts(rules, None, false)).await {
                    Ok(_) => runs += 1,
                    Err(e) => panic!("prune: {e}"),
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            runs
        })
    };
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(pruner.await.unwrap(), 12);
    verify_ok(&loc).await;
    // A last prune with nobody else around reclaims everything unreferenced.
    let mut repo = open_repo(&loc).await;
    let rules = KeepRules {
        last: 1,
        ..Default::default()
    };
    let r = prune(&mut repo, &opts(rules, None, false)).await.unwrap();
    assert_eq!(r.packs_deferred, 0);
    assert_eq!(repo.snapshots().await.unwrap().len(), 3, "one per database");
    verify_ok(&loc).await;
    assert!(repo.storage.list("gc").await.unwrap().is_empty());
    assert!(repo.storage.list("locks").await.unwrap().is_empty());
}
