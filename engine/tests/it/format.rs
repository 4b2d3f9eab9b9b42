//! A repository written by a newer tablesafe (a higher `format` in its config) is
//! refused with the version found, the version this build reads and "upgrade
//! tablesafe", before keys are read, a lock is taken or anything is written. Every
//! operation (backup, restore, snapshots, verify, prune, copy, browse) starts with
//! `Repository::open`/`open_in`; the `tablesafe` commands and the console are checked
//! against a real binary in the server's `upgrade` tests.

use crate::support::*;
use engine::repo::{InitOptions, Repository};
use std::collections::BTreeMap;
use std::path::Path;

/// Every file under `dir` with its bytes: what "changes nothing" is checked against.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(name, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Rewrites the repository's config as a newer tablesafe might: a higher format and a
/// field this build has never heard of.
fn make_newer(location: &str, format: u32) {
    let path = Path::new(location).join("config");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["format"] = format.into();
    config["sharding"] = serde_json::json!({"levels": 2});
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

#[tokio::test]
async fn a_newer_repository_format_is_refused_by_name_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    drop(repo);

    let newer = engine::repo::FORMAT_VERSION + 1;
    make_newer(&loc, newer);
    let before = files(Path::new(&loc));
    let expected = format!(
        "was written by a newer tablesafe (format {newer}); this build reads format {}: upgrade tablesafe",
        engine::repo::FORMAT_VERSION
    );

    // With the password, without it (the format is checked before the keys), and
    // through an opened storage (the console's and the server's way in).
    let attempts = [
        Repository::open(&loc, Some(&password())).await.err(),
        Repository::open(&loc, None).await.err(),
        Repository::open_in(
            engine::repo::Storage::open(&loc).unwrap(),
            Some(&password()),
        )
        .await
        .err(),
    ];
    for err in attempts {
        let err = err.expect("a newer repository was opened");
        let text = err.to_string();
        assert!(text.contains(&expected), "{text}");
        assert!(text.contains(&loc), "names the repository: {text}");
        assert!(!err.is_retryable(), "{text}");
    }
    // Creating a repository over it is refused too (it exists).
    assert!(
        Repository::init(&loc, InitOptions::unencrypted())
            .await
            .is_err()
    );
    assert!(
        before == files(Path::new(&loc)),
        "refusing changed the repository"
    );

    // Back at this build's format it opens and restores as before: nothing was lost.
    make_newer(&loc, engine::repo::FORMAT_VERSION);
    let config = std::fs::read_to_string(Path::new(&loc).join("config")).unwrap();
    assert!(config.contains("sharding"));
    let mut value: serde_json::Value = serde_json::from_str(&config).unwrap();
    value.as_object_mut().unwrap().remove("sharding");
    std::fs::write(
        Path::new(&loc).join("config"),
        serde_json::to_vec_pretty(&value).unwrap(),
    )
    .unwrap();
    let repo = open_repo(&loc).await;
    let dest = dir.path().join("back.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(
        rows(&dump(&dest, &["t"]), "t"),
        rows(&dump(&src, &["t"]), "t")
    );
}

#[tokio::test]
async fn a_config_with_an_impossible_format_is_called_damage_not_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, repo) = new_repo(dir.path()).await;
    drop(repo);
    make_newer(&loc, 0);
    let text = Repository::open(&loc, Some(&password()))
        .await
        .err()
        .expect("format 0 was opened")
        .to_string();
    assert!(text.contains("has format 0"), "{text}");
    assert!(!text.contains("upgrade tablesafe"), "{text}");
}

/// A format 1 repository (every table's checksum the BLAKE3 of its whole stream) is
/// read, verified and written by this build without migration, and stays format 1:
/// its new snapshots keep the old checksum form, so an older tablesafe sharing it still
/// reads them. A new repository is format 2, where a keyed table's checksum is over
/// blocks and unkeyed tables keep the stream checksum.
#[tokio::test]
async fn a_format_1_repository_is_read_and_written_in_its_own_form() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE TABLE bag (x, y);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO t SELECT i, 'v' || i FROM n;
         INSERT INTO bag VALUES (1, 2), (1, 2);",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    assert_eq!(repo.config.format, 2);
    let fresh = backup_all(&mut repo, &src).await;
    let by_name = |s: &engine::backup::BackupSummary, n: &str| {
        s.snapshot
            .tables
            .iter()
            .find(|t| t.name == n)
            .unwrap()
            .clone()
    };
    assert!(by_name(&fresh, "t").blocks.is_some());
    assert!(by_name(&fresh, "bag").blocks.is_none());
    drop(repo);

    // The same repository as format 1 wrote it: its config says 1, its snapshots have
    // no block lists.
    let old = dir.path().join("old");
    let (old_loc, old_repo) = new_repo(&old).await;
    drop(old_repo);
    make_newer(&old_loc, 1);
    let path = Path::new(&old_loc).join("config");
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    value.as_object_mut().unwrap().remove("sharding");
    std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
    let mut repo = open_repo(&old_loc).await;
    assert_eq!(repo.config.format, 1);
    let first = backup_all(&mut repo, &src).await;
    exec(
        &src,
        "UPDATE t SET v = 'changed' WHERE id = 7; DELETE FROM t WHERE id = 9",
    )
    .await;
    let second = backup_all(&mut repo, &src).await;
    for s in [&first, &second] {
        assert_eq!(s.snapshot.format, 1);
        assert!(s.snapshot.tables.iter().all(|t| t.blocks.is_none()));
    }
    let entry = by_name(&second, "t");
    assert_eq!(entry.segment, engine::model::SegmentKind::Delta);
    let repo = open_repo(&old_loc).await;
    let report = engine::verify::verify(
        &repo,
        &engine::verify::VerifyOptions {
            snapshot: None,
            read_data: true,
        },
        &engine::progress::NoProgress,
    )
    .await
    .unwrap();
    assert!(report.ok(), "{:?}", report.problems);
    let config: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(config["format"], 1, "the repository was not migrated");
    let dest = dir.path().join("back.db");
    restore(&repo, &restore_opts(&dest)).await.unwrap();
    assert_eq!(dump(&dest, &["t", "bag"]), dump(&src, &["t", "bag"]));
}
