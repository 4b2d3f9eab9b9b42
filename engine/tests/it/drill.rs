//! Restore drills (engine::drill) against real SQLite files and a real PostgreSQL: a
//! good snapshot proves restorable with every table compared to its manifest, the
//! user's assertions decide too, a damaged repository or a scratch server that changes
//! rows on the way in fails the drill with the reason, and the scratch copy is gone
//! afterwards in every case.

use crate::support::*;
use engine::drill::{DrillOptions, DrillReport, Scratch, drill};
use engine::progress::NoProgress;
use engine::repo::Repository;
use engine::secret::Secret;
use std::path::Path;

fn opts(snapshot: &str, scratch: Scratch, assertions: &[&str]) -> DrillOptions {
    DrillOptions {
        snapshot: snapshot.into(),
        scratch,
        assertions: assertions.iter().map(|s| s.to_string()).collect(),
        jobs: 2,
    }
}

async fn run(repo: &Repository, o: &DrillOptions) -> DrillReport {
    drill(repo, o, &NoProgress).await.unwrap()
}

fn empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).unwrap().next().is_none()
}

#[tokio::test]
async fn a_sqlite_drill_proves_the_snapshot_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("shop.db");
    let scratch = dir.path().join("scratch");
    exec(
        &src,
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, pic BLOB);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO items SELECT i, 'item ' || i, i * 1.25, randomblob(i % 7) FROM n;
         CREATE TABLE log (msg TEXT);
         INSERT INTO log VALUES ('same'), ('same'), (NULL), ('x''y');",
    )
    .await;
    let (loc, mut repo) = new_repo(dir.path()).await;
    let first = backup_all(&mut repo, &src).await;
    // An incremental snapshot: the drill reads its table through the delta layers.
    exec(
        &src,
        "UPDATE items SET name = 'changed' WHERE id % 50 = 0; DELETE FROM items WHERE id = 7;",
    )
    .await;
    let second = backup_all(&mut repo, &src).await;

    let good = [
        "SELECT count(*) = 499 FROM items",
        "SELECT count(*) = 10 FROM items WHERE name = 'changed'",
    ];
    let r = run(&repo, &opts("latest", Scratch::Dir(scratch.clone()), &good)).await;
    assert!(r.passed, "{r:#?}");
    assert_eq!(r.snapshot, second.id);
    assert_eq!(r.rows, 503);
    let items = r.tables.iter().find(|t| t.table == "items").unwrap();
    assert_eq!((items.rows_expected, items.rows_restored), (499, 499));
    assert!(items.checksum_matches && items.compared == "exact");
    assert_eq!(
        r.tables
            .iter()
            .find(|t| t.table == "log")
            .unwrap()
            .rows_restored,
        4
    );
    assert!(r.assertions.iter().all(|a| a.passed && a.detail == "true"));
    assert!(r.cleaned_up && empty_dir(&scratch));

    // Assertions decide too: a false one, one that is not SQL, one without a row.
    let bad = [
        "SELECT count(*) = 500 FROM items",
        "SELECT nope FROM items",
        "SELECT 1 WHERE 0",
    ];
    let r = run(
        &repo,
        &opts(&first.id[..10], Scratch::Dir(scratch.clone()), &bad),
    )
    .await;
    assert!(!r.passed, "{r:#?}");
    assert_eq!(r.snapshot, first.id);
    // The first snapshot had 500 items: restored and checked fine; the assertion
    // about it is what fails.
    assert!(r.tables.iter().all(|t| t.passed));
    assert!(r.assertions[0].passed, "{:?}", r.assertions[0]);
    // A query that fails says so, not what the server said (its words can carry data).
    assert!(!r.assertions[1].passed && r.assertions[1].detail.starts_with("the query failed"));
    assert!(
        !r.assertions[1].detail.contains("nope"),
        "{:?}",
        r.assertions[1]
    );
    assert_eq!(r.assertions[2].detail, "returned no row");
    assert!(r.cleaned_up && empty_dir(&scratch));

    // A random pick is one of the snapshots.
    let r = run(&repo, &opts("random", Scratch::Dir(scratch.clone()), &[])).await;
    assert!(
        r.passed && [&first.id, &second.id].contains(&&r.snapshot),
        "{r:#?}"
    );

    // A damaged repository: the drill fails, says why, and still cleans up.
    drop(repo);
    for sub in std::fs::read_dir(Path::new(&loc).join("data")).unwrap() {
        for f in std::fs::read_dir(sub.unwrap().path()).unwrap() {
            let f = f.unwrap().path();
            let mut bytes = std::fs::read(&f).unwrap();
            let at = bytes.len() / 2;
            bytes[at] ^= 0x01;
            std::fs::write(&f, bytes).unwrap();
        }
    }
    let repo = open_repo(&loc).await;
    let r = run(&repo, &opts("latest", Scratch::Dir(scratch.clone()), &good)).await;
    assert!(!r.passed, "{r:#?}");
    let e = r.error.clone().unwrap();
    assert!(e.contains("damaged"), "{e}");
    assert!(r.cleaned_up && empty_dir(&scratch));

    // A PostgreSQL scratch server for a SQLite snapshot is a clear error, not a drill.
    let e = drill(
        &repo,
        &opts(
            "latest",
            Scratch::Postgres(Secret::new("postgres://u@127.0.0.1:1/db".into())),
            &[],
        ),
        &NoProgress,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("scratch file"), "{e}");
}

#[tokio::test]
async fn a_postgres_drill_restores_into_a_scratch_database_and_drops_it() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("src").unwrap();
    psql(
        &src,
        "CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2), at timestamptz);
         INSERT INTO public.items SELECT g, 'item ' || g, g * 1.25, '2026-01-01'::timestamptz + g * interval '1 hour'
           FROM generate_series(1, 2000) g;
         CREATE TABLE public.log (msg text, n int);
         INSERT INTO public.log VALUES ('same', 1), ('same', 1), (NULL, NULL), (E'tab\\there', 2);",
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
    let server = Scratch::Postgres(Secret::new(pg.url("postgres")));
    let drills = || {
        psql(
            &pg.url("postgres"),
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tablesafe_drill_%'",
        )
    };

    let r = run(
        &repo,
        &opts(
            "latest",
            server.clone(),
            &["SELECT sum(price) = 2501250.00 FROM public.items"],
        ),
    )
    .await;
    assert!(r.passed, "{r:#?}");
    assert!(r.scratch.contains("/tablesafe_drill_"), "{}", r.scratch);
    assert_eq!(r.tables.len(), 2);
    assert!(r.tables.iter().all(|t| t.passed && t.compared == "exact"));
    assert_eq!(r.rows, 2004);
    assert!(r.cleaned_up);
    assert_eq!(drills().trim(), "0");

    // A scratch server that changes rows on the way in (an event trigger in template1
    // gives every new table named items a trigger): the restore itself succeeds, the
    // read-back check catches it and names the table.
    psql(
        &pg.url("template1"),
        "CREATE FUNCTION shout() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN NEW.name := upper(NEW.name); RETURN NEW; END $$;
         CREATE FUNCTION add_shout() RETURNS event_trigger LANGUAGE plpgsql AS $$
           DECLARE r record;
           BEGIN
             FOR r IN SELECT * FROM pg_event_trigger_ddl_commands() WHERE command_tag = 'CREATE TABLE' LOOP
               IF r.object_identity LIKE '%items' THEN
                 EXECUTE format('CREATE TRIGGER shout BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION shout()', r.object_identity);
               END IF;
             END LOOP;
           END $$;
         CREATE EVENT TRIGGER add_shout ON ddl_command_end EXECUTE FUNCTION add_shout();",
    );
    let r = run(&repo, &opts("latest", server.clone(), &[])).await;
    assert!(!r.passed, "{r:#?}");
    let items = r.tables.iter().find(|t| t.table == "public.items").unwrap();
    assert!(
        !items.checksum_matches && items.rows_restored == 2000,
        "{items:?}"
    );
    assert!(
        r.tables
            .iter()
            .find(|t| t.table == "public.log")
            .unwrap()
            .passed
    );
    assert!(r.cleaned_up);
    assert_eq!(drills().trim(), "0");

    // No scratch server, or one whose user may not create databases: clear errors.
    let e = drill(
        &repo,
        &opts("latest", Scratch::Dir(dir.path().into()), &[]),
        &NoProgress,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("needs a scratch server"), "{e}");
    psql(&src, "CREATE ROLE weak LOGIN PASSWORD 'weak'");
    let weak = format!("postgres://weak:weak@127.0.0.1:{}/postgres", pg.port());
    let e = drill(
        &repo,
        &opts("latest", Scratch::Postgres(Secret::new(weak)), &[]),
        &NoProgress,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("CREATEDB") && !e.contains("weak:weak"), "{e}");
}

/// The scratch copy of a SQLite drill is a whole backed-up database: while the drill
/// runs it lives in a directory only this user can enter (0700, random name) as an
/// owner-only file (0600), even when the scratch directory is a shared one like /tmp;
/// afterwards nothing is left.
#[cfg(unix)]
#[tokio::test]
async fn a_sqlite_drill_keeps_its_scratch_copy_private() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Mutex;

    /// Looks at the scratch directory whenever a table starts restoring.
    struct Watch {
        scratch: std::path::PathBuf,
        seen: Mutex<Vec<(String, u32)>>,
    }
    impl engine::progress::Progress for Watch {
        fn table_started(&self, _: &str, _: Option<u64>) {
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            let mut seen = self.seen.lock().unwrap();
            for e in std::fs::read_dir(&self.scratch).unwrap() {
                let p = e.unwrap().path();
                seen.push((p.display().to_string(), mode(&p)));
                if p.is_dir() {
                    for f in std::fs::read_dir(&p).unwrap() {
                        let f = f.unwrap().path();
                        seen.push((f.display().to_string(), mode(&f)));
                    }
                }
            }
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("payroll.db");
    exec(
        &src,
        "CREATE TABLE salaries (id INTEGER PRIMARY KEY, amount INTEGER);
         INSERT INTO salaries VALUES (1, 100000), (2, 250000);",
    )
    .await;
    let (_, mut repo) = new_repo(dir.path()).await;
    backup_all(&mut repo, &src).await;
    // A shared, world-writable scratch directory, as /tmp is.
    let scratch = dir.path().join("tmp");
    std::fs::create_dir(&scratch).unwrap();
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let watch = Watch {
        scratch: scratch.clone(),
        seen: Mutex::new(Vec::new()),
    };
    let r = drill(
        &repo,
        &opts("latest", Scratch::Dir(scratch.clone()), &[]),
        &watch,
    )
    .await
    .unwrap();
    assert!(r.passed, "{r:#?}");
    let seen = watch.seen.into_inner().unwrap();
    assert!(!seen.is_empty());
    let dirs: Vec<_> = seen
        .iter()
        .filter(|(p, _)| !p.contains(".sqlite"))
        .collect();
    let files: Vec<_> = seen.iter().filter(|(p, _)| p.contains(".sqlite")).collect();
    assert!(!dirs.is_empty() && !files.is_empty(), "{seen:?}");
    assert!(dirs.iter().all(|(_, m)| *m == 0o700), "{seen:?}");
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{seen:?}");
    assert!(r.cleaned_up && empty_dir(&scratch), "{seen:?}");
}
