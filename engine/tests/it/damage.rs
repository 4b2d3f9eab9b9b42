//! Damaged repositories are detected, named, and never restored from.

use crate::support::*;
use engine::progress::NoProgress;
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

async fn setup(dir: &Path) -> (String, PathBuf) {
    let src = dir.join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB);
                WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                INSERT INTO t SELECT i, randomblob(500) FROM n;
                CREATE TABLE other (x); INSERT INTO other VALUES (1);",
    )
    .await;
    let (loc, mut repo) = new_repo(dir).await;
    backup_all(&mut repo, &src).await;
    (loc, src)
}

#[tokio::test]
async fn a_flipped_byte_is_found_by_read_data_and_blocks_restore() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = setup(dir.path()).await;
    let repo = open_repo(&loc).await;
    assert!(
        verify(
            &repo,
            &VerifyOptions {
                snapshot: None,
                read_data: true
            },
            &NoProgress
        )
        .await
        .unwrap()
        .ok()
    );

    // The largest pack holds table t's rows (each reader of a backup writes packs of its
    // own, so the small table `other` may sit in a pack of its own).
    let pack = packs(Path::new(&loc))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    // Existence-only verify cannot see a flipped bit; --read-data must.
    assert!(
        verify(&repo, &VerifyOptions::default(), &NoProgress)
            .await
            .unwrap()
            .ok()
    );
    let report = verify(
        &repo,
        &VerifyOptions {
            snapshot: Some("latest".into()),
            read_data: true,
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(!report.ok());
    let text = format!("{:?}", report.problems);
    assert!(text.contains("chunk "), "names the chunk: {text}");
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.tables.contains("t") && !p.snapshots.is_empty()),
        "{text}"
    );

    // Restore refuses and leaves the destination untouched.
    let dest = dir.path().join("dest.db");
    exec(
        &dest,
        "CREATE TABLE keep (k); INSERT INTO keep VALUES ('untouched');",
    )
    .await;
    let before = dump(&dest, &[]);
    let err = restore(&repo, &restore_opts(&dest)).await.unwrap_err();
    assert!(matches!(err, engine::Error::Damaged(_)), "{err}");
    assert_eq!(dump(&dest, &[]), before, "nothing was restored");
}

#[tokio::test]
async fn missing_and_truncated_packs_are_found_without_reading_data() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = setup(dir.path()).await;
    let all = packs(Path::new(&loc));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&all[0])
        .unwrap();
    let len = f.metadata().unwrap().len();
    f.set_len(len / 3).unwrap();
    let repo = open_repo(&loc).await;
    let report = verify(&repo, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("truncated")),
        "{:?}",
        report.problems
    );

    std::fs::remove_file(&all[0]).unwrap();
    let report = verify(&repo, &VerifyOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.message.contains("missing")),
        "{:?}",
        report.problems
    );
}

#[tokio::test]
async fn a_damaged_snapshot_manifest_or_index_is_an_error_not_silence() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = setup(dir.path()).await;
    let snap = std::fs::read_dir(Path::new(&loc).join("snapshots"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[40] ^= 1;
    std::fs::write(&snap, bytes).unwrap();
    let repo = open_repo(&loc).await;
    assert!(matches!(
        repo.snapshots().await.unwrap_err(),
        engine::Error::Damaged(_)
    ));

    let index = std::fs::read_dir(Path::new(&loc).join("index"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&index, b"garbage").unwrap();
    let err = engine::repo::Repository::open(&loc, Some(&password()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, engine::Error::Damaged(_)), "{err}");
}

/// Someone with write access to the bucket copies an older manifest over the newest
/// one's name (to make the older state look like the latest, or to hide a snapshot):
/// the manifest no longer matches its name, and it is refused and reported.
#[tokio::test]
async fn an_older_manifest_under_a_newer_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, src) = setup(dir.path()).await;
    exec(&src, "DELETE FROM t WHERE id > 10;").await;
    let mut repo = open_repo(&loc).await;
    let newer = backup_all(&mut repo, &src).await.id;
    let older = std::fs::read_dir(Path::new(&loc).join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.ends_with(newer.as_str()))
        .unwrap();
    let newer_path = Path::new(&loc).join("snapshots").join(newer.as_str());
    std::fs::copy(&older, &newer_path).unwrap();
    let repo = open_repo(&loc).await;
    let err = repo.find_snapshot(&newer).await.unwrap_err().to_string();
    assert!(err.contains("its content does not match its name"), "{err}");
    let report = verify(
        &repo,
        &VerifyOptions {
            snapshot: None,
            read_data: false,
        },
        &NoProgress,
    )
    .await;
    assert!(
        report.is_err() || !report.unwrap().ok(),
        "verify reports it"
    );
}

/// A manifest naming a stream format this version does not know (a newer writer) is
/// reported by verify and refused by restore, export and browse, never decoded as
/// another format.
#[tokio::test]
async fn an_unknown_stream_format_is_refused_not_guessed() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = setup(dir.path()).await;
    let repo = open_repo(&loc).await;
    let (_, mut snap) = repo.find_snapshot("latest").await.unwrap();
    snap.tables[0].format = engine::model::StreamFormat::Unknown("values-v2".into());
    let id = repo.save_snapshot(&snap).await.unwrap();
    let report = verify(
        &repo,
        &VerifyOptions {
            snapshot: Some(id.to_string()),
            read_data: true,
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(!report.ok());
    assert!(
        report.problems[0]
            .message
            .contains("does not know (\"values-v2\")"),
        "{report:?}"
    );
    let page = engine::browse::browse(
        &repo,
        &engine::browse::BrowseQuery {
            snapshot: id.to_string(),
            table: snap.tables[0].name.clone(),
            filter: Default::default(),
            key: Vec::new(),
            offset: 0,
            limit: 10,
        },
    )
    .await;
    let e = page.unwrap_err().to_string();
    assert!(e.contains("does not know (\"values-v2\")"), "{e}");
    let mut opts = restore_opts(&dir.path().join("restored.db"));
    opts.snapshot = id.to_string();
    let e = restore(&repo, &opts).await.unwrap_err().to_string();
    assert!(e.contains("does not know (\"values-v2\")"), "{e}");
}

/// Someone holding the repository key (or, for an unencrypted repository, anyone who can
/// write to its storage) plants chunks that inflate far beyond any chunk the chunker
/// makes: an authentic one whose id matches its 4 MiB of content, and a bomb of 2048
/// zstd frames that together inflate to 1 GiB. Both are sealed with the repository's key
/// and indexed like real chunks, so they pass authentication; reading either is refused
/// as a damaged chunk without decompressing past the chunker's maximum, restore stops,
/// and verify names both.
#[tokio::test]
async fn a_chunk_inflating_past_the_chunker_maximum_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (loc, _) = setup(dir.path()).await;
    let repo = open_repo(&loc).await;
    let max = repo.config.chunker.max_chunk();
    let keys = repo.keys();

    // 4 MiB, four times the chunker's maximum, under its true id.
    let big: Vec<u8> = (0..4 * max).map(|i| (i % 251) as u8).collect();
    let big_id = keys.chunk_id(&big);
    let big_blob = keys.seal(&zstd::bulk::compress(&big, 3).unwrap()).unwrap();
    // 2048 frames of 512 KiB of zeros: each frame is within the maximum, together 1 GiB.
    let frame = zstd::bulk::compress(&vec![0u8; 512 * 1024], 3).unwrap();
    let bomb: Vec<u8> = frame.repeat(2048);
    assert!(bomb.len() < 256 * 1024, "a small object: {}", bomb.len());
    let bomb_id = keys.chunk_id(b"what the bomb claims to be");
    let bomb_blob = keys.seal(&bomb).unwrap();

    // A pack and its index, the way PackWriter writes them.
    let mut pack = big_blob.clone();
    pack.extend_from_slice(&bomb_blob);
    let pack_id = *blake3::hash(&pack).as_bytes();
    let hex = engine::repo::crypto::hex;
    repo.storage
        .put(&engine::repo::pack_path(&pack_id), pack)
        .await
        .unwrap();
    let index = serde_json::json!({
        "pack": hex(&pack_id),
        "chunks": [
            [hex(&big_id), 0, big_blob.len()],
            [hex(&bomb_id), big_blob.len(), bomb_blob.len()],
        ],
    });
    let index = keys.seal(&serde_json::to_vec(&index).unwrap()).unwrap();
    repo.storage
        .put(&format!("index/{}", hex(&pack_id)), index)
        .await
        .unwrap();
    // A snapshot whose table `other` is made of them.
    let (_, mut snap) = repo.find_snapshot("latest").await.unwrap();
    let other = snap.tables.iter_mut().find(|t| t.name == "other").unwrap();
    other.chunks = vec![
        engine::model::ChunkId(big_id),
        engine::model::ChunkId(bomb_id),
    ];
    let planted = repo.save_snapshot(&snap).await.unwrap();

    let repo = open_repo(&loc).await;
    let e = repo
        .read_chunk(&big_id)
        .await
        .map(|plain| plain.len())
        .expect_err("refused");
    assert!(matches!(e, engine::Error::Damaged(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("damaged chunk") && e.contains(&format!("more than the {max}")),
        "{e}"
    );
    let e = repo
        .read_chunk(&bomb_id)
        .await
        .map(|plain| plain.len())
        .expect_err("refused");
    assert!(matches!(e, engine::Error::Damaged(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("damaged chunk") && e.contains(&format!("inflates to more than {max} bytes")),
        "{e}"
    );

    let mut opts = restore_opts(&dir.path().join("restored.db"));
    opts.snapshot = planted.to_string();
    let e = restore(&repo, &opts).await.unwrap_err().to_string();
    assert!(e.contains("damaged chunk"), "{e}");

    let report = verify(
        &repo,
        &VerifyOptions {
            snapshot: Some(planted.to_string()),
            read_data: true,
        },
        &NoProgress,
    )
    .await
    .unwrap();
    for id in [&big_id, &bomb_id] {
        let object = format!("chunk {}", engine::repo::short(id));
        let p = report
            .problems
            .iter()
            .find(|p| p.object == object)
            .unwrap_or_else(|| panic!("verify names {object}: {report:?}"));
        assert!(p.message.contains("damaged chunk"), "{p:?}");
        assert!(p.tables.contains("other"), "{p:?}");
    }
}

/// A table whose rows no longer add up to its checksum's blocks (what a wrong merge of
/// layers or a manifest pointing at other rows looks like; chunks themselves are
/// authenticated) is named down to the block: verify gives its number, rows and last
/// key, and restore refuses the table.
#[tokio::test]
async fn a_block_that_does_not_match_is_named_by_rows_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    exec(
        &src,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO t SELECT i, 'row ' || i FROM n;",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    let before = backup_all(&mut repo, &src).await;
    let entry = &before.snapshot.tables[0];
    let list = entry
        .blocks
        .as_ref()
        .expect("a keyed table in a new repository has blocks");
    assert!(list.count > 100, "{} blocks for 3000 rows", list.count);

    exec(&src, "UPDATE t SET v = 'changed' WHERE id = 1234").await;
    let after = backup_all(&mut repo, &src).await;
    // The second snapshot's rows with the first one's checksum and block list.
    let mut forged = after.snapshot.clone();
    forged.tables[0].checksum = entry.checksum;
    forged.tables[0].blocks = entry.blocks.clone();
    forged.time_ms += 1;
    let forged_id = repo.save_snapshot(&forged).await.unwrap();

    let repo = open_repo(&loc).await;
    let report = verify(
        &repo,
        &VerifyOptions {
            snapshot: Some(forged_id.to_string()),
            read_data: true,
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    let message = &report.problems[0].message;
    assert!(
        message.contains(&format!("of {} (rows ", list.count)),
        "{message}"
    );
    // The block named holds row 1234: "rows A..B" with A <= 1234 <= B.
    let rows = message.split("(rows ").nth(1).unwrap();
    let (a, b) = rows.split_once("..").unwrap();
    let b: String = b.chars().take_while(|c| c.is_ascii_digit()).collect();
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(a <= 1234 && 1234 <= b && b - a < 200, "{message}");
    assert!(message.contains("last key ("), "{message}");
    assert_eq!(report.problems[0].tables, ["t".to_string()].into());

    // The untouched snapshots verify; a restore of the forged one refuses the table.
    for id in [&before.id, &after.id] {
        let ok = verify(
            &repo,
            &VerifyOptions {
                snapshot: Some(id.to_string()),
                read_data: true,
            },
            &NoProgress,
        )
        .await
        .unwrap();
        assert!(ok.ok(), "{:?}", ok.problems);
    }
    let dest = dir.path().join("back.db");
    let mut opts = restore_opts(&dest);
    opts.snapshot = forged_id.to_string();
    let err = restore(&repo, &opts).await.unwrap_err().to_string();
    assert!(err.contains("does not match its checksum"), "{err}");
}
