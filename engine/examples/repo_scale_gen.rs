//! Fills a repository with many snapshots of a small SQLite source, fast and honestly,
//! for `bench/repo_scale_bench.sh`: real backups through the engine (the source changed
//! before each, every backup reads it and writes packs, an index file and a manifest
//! like `tablesafe backup`), only in one process, so the key is unwrapped once instead of
//! once per backup.
//!
//!     TABLESAFE_PASSWORD=… cargo run --release -p engine --example repo_scale_gen -- \
//!         REPO SOURCE.db COUNT
//!
//! The repository must exist; the source is changed in place (one row of one table per
//! backup, as an hourly backup of a lightly used database would see).

use engine::backup::{BackupOptions, backup};
use engine::progress::NoProgress;
use engine::repo::Repository;
use engine::secret::Secret;
use std::time::Instant;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, repo, db, count] = &args[..] else {
        eprintln!("usage: repo_scale_gen REPO SOURCE.db COUNT");
        std::process::exit(2);
    };
    let count: u64 = count.parse().expect("COUNT");
    let password = std::env::var("TABLESAFE_PASSWORD").ok().map(Secret::new);
    let mut repo = Repository::open_lazy(repo, password.as_ref())
        .await
        .expect("open");
    let conn = rusqlite::Connection::open(db).expect("source");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let opts = BackupOptions {
        source: Secret::new(format!("sqlite://{db}")),
        selection: Default::default(),
        tags: [("generated".to_string(), "repo_scale_gen".to_string())].into(),
    };
    let started = Instant::now();
    for i in 0..count {
        let t = &tables[i as usize % tables.len()];
        conn.execute(
            &format!(
                "UPDATE \"{t}\" SET note = ?1 WHERE id = (SELECT id FROM \"{t}\" \
                 ORDER BY id LIMIT 1 OFFSET ?2)"
            ),
            rusqlite::params![format!("change {i}"), (i * 7919) % 1000],
        )
        .expect("change the source");
        backup(&mut repo, &opts, &NoProgress).await.expect("backup");
        if (i + 1) % 500 == 0 {
            eprintln!(
                "{} snapshots in {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
}
