//! The user guide's command-line examples run, so they cannot rot: every ```` ```console ````
//! block in `docs/src/**/*.md` is a session. A line starting with `$ ` is a command (a
//! trailing `\` continues it on the next line), run with bash in the chapter's scratch
//! directory; the lines under it are what its output (stdout and stderr) must contain,
//! each within one output line, `…` standing for anything and `$DB`-style variables
//! substituted. Each chapter starts afresh and runs its blocks in order against a real
//! SQLite file and a real PostgreSQL database holding the same sample tables, with the
//! variables the guide documents (docs/src/cli.md, "The examples in this guide"):
//! `$DB`, `$PGURL`, `$REPO`, `$WORK` and `TABLESAFE_PASSWORD`; and, when a chapter uses
//! `$MYURL`, a real MariaDB database with the same tables.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The guide's sample data (docs/src/quickstart.md creates the same with `sqlite3`).
const SAMPLE: &str = "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);
INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com'), (2, 'Bob', 'bob@example.com'), (3, 'Cy', NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER REFERENCES customers(id), total REAL);
INSERT INTO orders VALUES (10, 1, 9.5), (11, 2, 20.0), (12, 1, 3.25);";

/// One `$ command` of the guide and the output lines shown under it.
#[derive(Debug)]
struct Example {
    line: usize,
    command: String,
    expect: Vec<String>,
}

fn guide_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/src")
}

fn chapters(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            chapters(&p, out);
        } else if p.extension().is_some_and(|e| e == "md") {
            out.push(p);
        }
    }
}

/// The console sessions of one chapter, in order.
fn examples(text: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut in_console = false;
    let mut continuing = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            in_console = !in_console && trimmed.trim_end() == "```console";
            continuing = false;
            continue;
        }
        if !in_console {
            continue;
        }
        if continuing {
            let last = out.last_mut().unwrap();
            last.command.push('\n');
            last.command.push_str(line);
            continuing = line.ends_with('\\');
        } else if let Some(cmd) = line.strip_prefix("$ ") {
            out.push(Example {
                line: i + 1,
                command: cmd.to_string(),
                expect: Vec::new(),
            });
            continuing = cmd.ends_with('\\');
        } else if !line.trim().is_empty() {
            let last = out
                .last_mut()
                .unwrap_or_else(|| panic!("line {}: output shown before any `$ ` command", i + 1));
            last.expect.push(line.trim().to_string());
        }
    }
    out
}

/// Whether one line of `output` holds the parts of `expected` (split at `…`) in order.
fn shows(output: &str, expected: &str) -> bool {
    let parts: Vec<&str> = expected
        .split('…')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    output.lines().any(|line| {
        let mut rest = line;
        parts.iter().all(|p| match rest.find(p) {
            Some(at) => {
                rest = &rest[at + p.len()..];
                true
            }
            None => false,
        })
    })
}

fn sqlite(path: &Path, sql: &str) {
    let out = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.executescript(sys.argv[2]); c.commit()",
        ])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn guide_examples_run_against_real_databases() {
    let mut files = Vec::new();
    chapters(&guide_dir(), &mut files);
    let sessions: Vec<(PathBuf, Vec<Example>)> = files
        .into_iter()
        .map(|f| {
            let examples = examples(&std::fs::read_to_string(&f).unwrap());
            (f, examples)
        })
        .filter(|(_, e)| !e.is_empty())
        .collect();

    // The commands of the quick start and of the command-line chapter are all covered.
    let all: Vec<&str> = sessions
        .iter()
        .flat_map(|(_, e)| e.iter().map(|x| x.command.as_str()))
        .collect();
    for needed in [
        "tablesafe init",
        "tablesafe backup --source sqlite://",
        "tablesafe backup --source $PGURL",
        "tablesafe snapshots",
        "tablesafe show",
        "--rename",
        "--dest sqlite://$WORK/",
        "tablesafe verify",
        "--dry-run",
        "tablesafe prune",
        "tablesafe copy",
        "tablesafe drill",
    ] {
        assert!(
            all.iter().any(|c| c.contains(needed)),
            "no example in the guide runs `{needed}`"
        );
    }

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tablesafe"));
    let mut path = vec![bin.parent().unwrap().to_path_buf()];
    path.extend(testkit::pg_bin_dir());
    path.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    let path = std::env::join_paths(path).unwrap();

    let pg = testkit::Postgres::start().unwrap();
    // MariaDB only when an example needs it (it takes a few seconds to start).
    let maria = all
        .iter()
        .any(|c| c.contains("$MYURL"))
        .then(|| testkit::mariadb::Mariadb::start().unwrap());
    for (n, (file, examples)) in sessions.iter().enumerate() {
        let chapter = file
            .strip_prefix(guide_dir())
            .unwrap_or(file)
            .display()
            .to_string();
        // A fresh scratch directory, SQLite file and PostgreSQL database per chapter.
        let work = tempfile::tempdir().unwrap();
        let db = work.path().join("shop.db");
        sqlite(&db, SAMPLE);
        let pg_url = pg.create_database(&format!("guide_{n}")).unwrap();
        pg.psql(&format!("guide_{n}"), SAMPLE).unwrap();
        let mut vars = vec![
            ("DB", db.display().to_string()),
            ("PGURL", pg_url),
            ("REPO", work.path().join("repo").display().to_string()),
            ("WORK", work.path().display().to_string()),
        ];
        if let Some(m) = &maria {
            let my_url = m.create_database(&format!("guide_{n}")).unwrap();
            m.sql(&format!("guide_{n}"), SAMPLE).unwrap();
            vars.push(("MYURL", my_url));
        }
        for ex in examples {
            let out = Command::new("bash")
                .args(["-c", &ex.command])
                .current_dir(work.path())
                .env("PATH", &path)
                .env("TABLESAFE_PASSWORD", "the guide's repository password")
                .env("NO_COLOR", "1")
                .env_remove("TABLESAFE_DATABASE_URL")
                .env_remove("TABLESAFE_TO_PASSWORD")
                .envs(vars.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success(),
                "docs/src/{chapter}:{}: `$ {}` exited with {}:\n{text}",
                ex.line,
                ex.command,
                out.status
            );
            for expected in &ex.expect {
                let mut want = expected.clone();
                for (k, v) in &vars {
                    want = want.replace(&format!("${k}"), v);
                }
                assert!(
                    shows(&text, &want),
                    "docs/src/{chapter}:{}: the output of `$ {}` has no line like {expected:?}; it was:\n{text}",
                    ex.line,
                    ex.command
                );
            }
        }
    }
}

#[test]
fn console_blocks_are_read_as_the_guide_says() {
    let ex = examples(
        "text\n```console\n$ tablesafe backup \\\n  --repo $REPO\nsnapshot of … rows\n\n$ tablesafe snapshots\n```\n```sh\n$ not run\n```\n",
    );
    assert_eq!(ex.len(), 2, "{ex:?}");
    assert_eq!(ex[0].command, "tablesafe backup \\\n  --repo $REPO");
    assert_eq!(ex[0].expect, ["snapshot of … rows"]);
    assert!(ex[1].expect.is_empty());
    assert!(shows(
        "x\nsnapshot of 2 tables, 6 rows, 1 s\n",
        "snapshot of … rows"
    ));
    assert!(!shows(
        "snapshot of 2 tables\n6 rows\n",
        "snapshot of … rows"
    ));
}
