//! Self-heal (engine::repair): ten bytes flipped across a repository's packs and one
//! pack deleted; verify names the damage, repair rewrites every damaged chunk from a
//! copy repository (another key), verify is clean again and the snapshots restore
//! identical to the source.

use crate::support::*;
use engine::progress::NoProgress;
use engine::repo::crypto::KdfParams;
use engine::repo::{InitOptions, Repository};
use engine::verify::{VerifyOptions, verify};
use std::path::{Path, PathBuf};

fn packs(repo_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in std::fs::read_dir(repo_dir.join("data")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

async fn verified(repo: &Repository) -> engine::verify::VerifyReport {
    verify(
        repo,
        &VerifyOptions {
            snapshot: None,
            read_data: true,
        },
        &NoProgress,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn damaged_packs_are_rewritten_from_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    let (loc, mut repo) = new_repo(dir.path()).await;
    // Three backups of growing data: several packs.
    for round in 0..3 {
        exec(
            &src,
            &format!(
                "CREATE TABLE t{round} (id INTEGER PRIMARY KEY, b BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
                 INSERT INTO t{round} SELECT i, randomblob(400) FROM n;"
            ),
        )
        .await;
        backup_all(&mut repo, &src).await;
    }
    let mut copy_opts = InitOptions::encrypted(engine::secret::Secret::new("copy password".into()));
    copy_opts.kdf = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let copy_loc = dir.path().join("copy").display().to_string();
    let mut copy = Repository::init(&copy_loc, copy_opts).await.unwrap();
    engine::copy::copy(&repo, &mut copy, None, &NoProgress)
        .await
        .unwrap();

    // Damage: ten bytes flipped at spread-out places of the packs, one pack deleted.
    let files = packs(Path::new(&loc));
    assert!(files.len() >= 3, "{} packs", files.len());
    let (gone, flipped) = files.split_last().unwrap();
    for i in 0..10usize {
        let f = &flipped[i % flipped.len()];
        let mut bytes = std::fs::read(f).unwrap();
        let at = (bytes.len() / 11) * (i + 1) % bytes.len();
        bytes[at] ^= 0x5a;
        std::fs::write(f, bytes).unwrap();
    }
    std::fs::remove_file(gone).unwrap();
    let mut repo = open_repo(&loc).await;
    let before = verified(&repo).await;
    assert!(!before.ok());
    assert!(
        before
            .problems
            .iter()
            .any(|p| !p.snapshots.is_empty() && !p.tables.is_empty()),
        "verify names the snapshots and tables: {before:?}"
    );

    let copy = Repository::open(
        &copy_loc,
        Some(&engine::secret::Secret::new("copy password".into())),
    )
    .await
    .unwrap();
    let report = engine::repair::repair(&mut repo, &copy, &NoProgress)
        .await
        .unwrap();
    assert!(report.ok(), "{report:?}");
    assert!(report.damaged_packs.len() >= 2, "{report:?}");
    assert!(report.chunks_from_copy > 0, "{report:?}");
    assert!(verified(&open_repo(&loc).await).await.ok());

    // Every snapshot restores identical to the source (the last holds all tables).
    let out = dir.path().join("out.db");
    restore(&repo, &restore_opts(&out)).await.unwrap();
    let tables = ["t0", "t1", "t2"];
    assert_eq!(dump(&src, &tables), dump(&out, &tables));

    // Nothing left to do: a second repair changes nothing.
    let again = engine::repair::repair(&mut repo, &copy, &NoProgress)
        .await
        .unwrap();
    assert!(again.damaged_packs.is_empty() && again.ok(), "{again:?}");
}

#[tokio::test]
async fn without_a_copy_the_lost_chunks_are_named_and_nothing_else_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT i, randomblob(400) FROM n;",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    let empty_loc = dir.path().join("empty").display().to_string();
    let mut opts = InitOptions::encrypted(engine::secret::Secret::new("x".into()));
    opts.kdf = KdfParams {
        m_cost_kib: 1024,
        t_cost: 1,
        p_cost: 1,
    };
    let empty = Repository::init(&empty_loc, opts).await.unwrap();
    // The largest pack: the table's rows (the block list can be a pack of one chunk).
    let pack = &packs(Path::new(&loc))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(pack, bytes).unwrap();
    let mut repo = open_repo(&loc).await;
    let report = engine::repair::repair(&mut repo, &empty, &NoProgress)
        .await
        .unwrap();
    assert!(!report.ok());
    assert_eq!(
        report.unrecoverable.len(),
        1,
        "one chunk held the flipped byte: {report:?}"
    );
    assert!(
        report.chunks_kept > 0,
        "the pack's intact chunks were kept: {report:?}"
    );
    let lost = report.unrecoverable[0].clone();
    let v = report.verify.unwrap();
    assert!(
        v.problems
            .iter()
            .all(|p| p.object.contains(&lost) || p.message.contains(&lost)),
        "only the lost chunk is missing: {v:?}"
    );
}
