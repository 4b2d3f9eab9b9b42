//! Whole application schemas, shaped like real ones, backed up (full and incremental)
//! and restored into an empty database; the restored schema is compared with the
//! source's by the engine's own dump tool (`pg_dump --schema-only`), and the data too.

use crate::support::*;
use engine::backup::{BackupOptions, backup};
use engine::progress::NoProgress;
use engine::restore::{Mode, RestoreOptions};
use engine::secret::Secret;
use engine::selection::Selection;
use std::process::Command;

/// A Django/Rails-like application: extensions (citext, hstore, pg_trgm, pgcrypto,
/// btree_gist), a schema of its own, a domain, composite, range and enum types, a
/// nondeterministic collation, functions and a procedure, a standalone sequence,
/// `updated_at` triggers, views (one with security_barrier), a materialized view with
/// a unique index, a rule, row-level security with policies, comments, grants to an
/// application role, partial, expression and trigram indexes, an exclusion
/// constraint, a deferrable foreign key, and a time-series table partitioned by month
/// with a default partition and a sub-partitioned month.
const APP: &str = r#"
CREATE EXTENSION IF NOT EXISTS citext;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE EXTENSION IF NOT EXISTS btree_gist;
DO $$ BEGIN CREATE ROLE app_user NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
CREATE SCHEMA billing;
COMMENT ON SCHEMA billing IS 'Invoices and payments';
CREATE DOMAIN posint AS integer CONSTRAINT posint_positive CHECK (VALUE > 0);
CREATE TYPE address AS (street text, city text, zip varchar(10));
CREATE TYPE floatrange AS RANGE (subtype = float8, subtype_diff = float8mi);
CREATE TYPE status AS ENUM ('active', 'suspended');
CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE SEQUENCE billing.invoice_numbers START 1000;
CREATE FUNCTION set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE FUNCTION normalize_email(e text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(trim(e)) $$;
COMMENT ON FUNCTION normalize_email(text) IS 'Lower case, no spaces';
CREATE TABLE users (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email citext NOT NULL UNIQUE,
    name text COLLATE ci,
    handle text NOT NULL,
    attrs hstore,
    prefs jsonb NOT NULL DEFAULT '{}',
    status status NOT NULL DEFAULT 'active',
    home address,
    age posint,
    tenant_id int NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_email_normal CHECK (normalize_email(email::text) = lower(email::text))
);
COMMENT ON TABLE users IS 'People who log in';
COMMENT ON COLUMN users.email IS 'Unique, case-insensitive';
CREATE INDEX users_handle_trgm ON users USING gin (handle gin_trgm_ops);
CREATE INDEX users_active ON users (created_at) WHERE status = 'active';
CREATE INDEX users_lower_handle ON users (lower(handle));
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON users USING (tenant_id = current_setting('app.tenant', true)::int);
CREATE POLICY no_deleting_active ON users AS RESTRICTIVE FOR DELETE TO app_user USING (status = 'suspended');
GRANT SELECT, INSERT, UPDATE ON users TO app_user;
CREATE TABLE billing.invoices (
    number bigint PRIMARY KEY DEFAULT nextval('billing.invoice_numbers'),
    user_id uuid NOT NULL REFERENCES users (id) DEFERRABLE INITIALLY DEFERRED,
    room int NOT NULL,
    amount numeric(12, 2) NOT NULL,
    period tstzrange NOT NULL,
    span floatrange,
    EXCLUDE USING gist (room WITH =, period WITH &&)
);
CREATE TRIGGER invoices_guard BEFORE DELETE ON billing.invoices FOR EACH ROW WHEN (OLD.amount > 1000) EXECUTE FUNCTION set_updated_at();
ALTER TABLE billing.invoices DISABLE TRIGGER invoices_guard;
CREATE RULE invoices_keep AS ON DELETE TO billing.invoices WHERE OLD.amount > 1000000 DO INSTEAD NOTHING;
CREATE FUNCTION billing.total_for(u uuid) RETURNS numeric LANGUAGE sql STABLE SECURITY DEFINER
    AS $$ SELECT sum(amount) FROM billing.invoices WHERE user_id = u $$;
CREATE PROCEDURE billing.archive(days int) LANGUAGE sql AS $$ DELETE FROM billing.invoices WHERE upper(period) < now() - make_interval(days => days) $$;
CREATE VIEW active_users AS SELECT id, email, handle FROM users WHERE status = 'active';
CREATE VIEW billing.user_totals WITH (security_barrier) AS
    SELECT u.email, sum(i.amount) AS total FROM users u JOIN billing.invoices i ON i.user_id = u.id GROUP BY u.email;
CREATE VIEW billing.big_spenders AS SELECT email FROM billing.user_totals WHERE total > 100;
CREATE MATERIALIZED VIEW billing.monthly AS
    SELECT date_trunc('month', lower(period)) AS month, sum(amount) AS total FROM billing.invoices GROUP BY 1;
CREATE UNIQUE INDEX monthly_month ON billing.monthly (month);
COMMENT ON MATERIALIZED VIEW billing.monthly IS 'Refreshed nightly';
GRANT USAGE ON SCHEMA billing TO app_user;
GRANT SELECT ON active_users TO app_user;
REVOKE ALL ON FUNCTION normalize_email(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION normalize_email(text) TO app_user;
CREATE TABLE measurements (
    id bigint GENERATED ALWAYS AS IDENTITY,
    at timestamptz NOT NULL,
    device int NOT NULL CHECK (device > 0),
    value float8,
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025_01 PARTITION OF measurements FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
CREATE TABLE measurements_2025_02 PARTITION OF measurements FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00')
    PARTITION BY RANGE (at);
CREATE TABLE measurements_2025_02_a PARTITION OF measurements_2025_02 FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-02-15 00:00+00');
CREATE TABLE measurements_2025_02_b PARTITION OF measurements_2025_02 DEFAULT;
CREATE TABLE measurements_default PARTITION OF measurements DEFAULT;
CREATE INDEX measurements_device ON measurements (device, at);
COMMENT ON TABLE measurements IS 'One row per reading';
"#;

const APP_DATA: &str = r#"
INSERT INTO users (email, name, handle, attrs, prefs, status, home, age, tenant_id) VALUES
  ('Ann@Example.com', 'Ann', 'ann', 'a=>1, b=>"x y"', '{"theme": "dark"}', 'active', ROW('1 Main St', 'Springfield', '12345'), 34, 1),
  ('bob@example.com', 'Bob', 'bobby', NULL, '{}', 'suspended', NULL, NULL, 2),
  ('cy@example.com', 'Cy', 'cy', '', '[]', 'active', ROW(NULL, 'Paris', NULL), 7, 1);
INSERT INTO billing.invoices (user_id, room, amount, period, span)
  SELECT id, row_number() OVER (ORDER BY email)::int, 50 * row_number() OVER (ORDER BY email),
         tstzrange('2025-01-01', '2025-01-31'), floatrange(1.5, 2.5) FROM users;
INSERT INTO measurements (at, device, value)
  SELECT timestamptz '2024-12-20 00:00+00' + g * interval '7 hours', 1 + g % 5, g / 3.0 FROM generate_series(1, 300) g;
REFRESH MATERIALIZED VIEW billing.monthly;
"#;

fn pg_tool(tool: &str, args: &[&str]) -> String {
    let bin = testkit::pg_bin_dir().unwrap().join(tool);
    let out = Command::new(bin).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `pg_dump` of `url` without its comment lines (they name nothing the database holds)
/// and the per-run `\restrict` token.
fn dump(url: &str, args: &[&str]) -> String {
    let mut all = vec!["--no-owner"];
    all.extend_from_slice(args);
    all.push(url);
    pg_tool("pg_dump", &all)
        .lines()
        .filter(|l| {
            !l.starts_with("--")
                && !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.is_empty()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn psql(url: &str, sql: &str) -> String {
    pg_tool("psql", &[url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
}

fn restore_opts(dest: &str) -> RestoreOptions {
    RestoreOptions {
        snapshot: "latest".into(),
        dest: Secret::new(dest.to_string()),
        selection: Selection::default(),
        rename: Default::default(),
        mode: Mode::Create,
        jobs: 2,
        parallel_min_bytes: u64::MAX,
        at_ms: None,
        filter: Default::default(),
        objects: Default::default(),
    }
}

/// Data compared as pg_dump prints it, every table's rows sorted (physical order is
/// not data).
fn data(url: &str) -> Vec<String> {
    let mut lines: Vec<String> = dump(url, &["--data-only"])
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

/// Fails with the lines only one side has.
fn same_data(restored: &str, source: &str) {
    let (a, b) = (data(restored), data(source));
    let only_restored: Vec<&String> = a.iter().filter(|l| !b.contains(l)).collect();
    let only_source: Vec<&String> = b.iter().filter(|l| !a.contains(l)).collect();
    assert!(
        only_restored.is_empty() && only_source.is_empty() && a.len() == b.len(),
        "only in the restore: {only_restored:?}\nonly in the source: {only_source:?}"
    );
}

fn has_postgis() -> bool {
    let share = testkit::pg_bin_dir()
        .and_then(|b| {
            let v = b.parent()?.file_name()?.to_str()?.to_string();
            Some(std::path::PathBuf::from(format!(
                "/usr/share/postgresql/{v}/extension/postgis.control"
            )))
        })
        .is_some_and(|p| p.exists());
    if !share {
        eprintln!(
            "PostGIS is not installed (apt-get install postgresql-NN-postgis-3): its table is left out"
        );
    }
    share
}

#[tokio::test]
async fn an_application_schema_round_trips_with_identical_pg_dump() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("app").unwrap();
    psql(&src, APP);
    if has_postgis() {
        psql(
            &src,
            "CREATE EXTENSION postgis; \
             CREATE TABLE places (id serial PRIMARY KEY, name text NOT NULL, geom geometry(Point, 4326)); \
             CREATE INDEX places_geom ON places USING gist (geom); \
             INSERT INTO places (name, geom) VALUES ('Eiffel', ST_SetSRID(ST_MakePoint(2.2945, 48.8584), 4326)), ('nowhere', NULL)",
        );
    }
    psql(&src, APP_DATA);
    let dir = tempfile::tempdir().unwrap();
    let (_location, mut repo) = new_repo(dir.path()).await;
    let opts = BackupOptions {
        source: Secret::new(src.clone()),
        selection: Selection::default(),
        tags: Default::default(),
    };
    let full = backup(&mut repo, &opts, &NoProgress).await.unwrap();
    // Nothing of the application is left behind, and no extension's own objects are
    // listed at all.
    assert!(
        full.snapshot.skipped.is_empty(),
        "{:?}",
        full.snapshot.skipped
    );
    let ext: Vec<(&str, &str)> = full
        .snapshot
        .objects
        .iter()
        .filter(|o| o.kind == engine::model::ObjectKind::Extension)
        .map(|o| (o.name.as_str(), o.version.as_deref().unwrap_or("")))
        .collect();
    assert!(
        ext.iter().any(|(n, v)| *n == "citext" && !v.is_empty()),
        "{ext:?}"
    );

    let first = pg.create_database("first").unwrap();
    let plan = engine::restore::plan(&repo, &restore_opts(&first))
        .await
        .unwrap();
    let done = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    // A SECURITY DEFINER function now runs as the restoring role: the output says so.
    assert!(
        done.iter().flat_map(|d| &d.notes).any(|n| n.contains(
            "function billing.total_for(u uuid) is SECURITY DEFINER: it runs with the privileges of the role that restored it"
        )),
        "{done:?}"
    );
    assert_eq!(
        dump(&first, &["--schema-only"]),
        dump(&src, &["--schema-only"])
    );
    same_data(&first, &src);

    // Changes, an incremental backup, and a restore of it.
    psql(
        &src,
        "UPDATE users SET age = 35 WHERE handle = 'ann'; \
         INSERT INTO measurements (at, device, value) VALUES ('2025-02-10 00:00+00', 2, 1), ('2026-01-01 00:00+00', 9, 2); \
         DELETE FROM billing.invoices WHERE room = 2; \
         REFRESH MATERIALIZED VIEW billing.monthly",
    );
    let inc = backup(&mut repo, &opts, &NoProgress).await.unwrap();
    assert!(
        inc.snapshot
            .tables
            .iter()
            .any(|t| t.segment == engine::model::SegmentKind::Delta),
        "the second backup is incremental"
    );
    let second = pg.create_database("second").unwrap();
    let plan = engine::restore::plan(&repo, &restore_opts(&second))
        .await
        .unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        dump(&second, &["--schema-only"]),
        dump(&src, &["--schema-only"])
    );
    same_data(&second, &src);
    // Staged parallel loads: the objects the staging tables need are committed first.
    let staged = pg.create_database("staged").unwrap();
    let mut o = restore_opts(&staged);
    o.parallel_min_bytes = 0;
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        dump(&staged, &["--schema-only"]),
        dump(&src, &["--schema-only"])
    );
    same_data(&staged, &src);
    // The app works on it: the trigger fires, the partitioned table routes new rows,
    // the materialized view holds its rows, the sequences go on where they were.
    psql(
        &second,
        "UPDATE users SET updated_at = 'epoch' WHERE handle = 'cy'",
    );
    assert_eq!(
        psql(
            &second,
            "SELECT updated_at > 'epoch' FROM users WHERE handle = 'cy'"
        )
        .trim(),
        "t"
    );
    psql(
        &second,
        "INSERT INTO measurements (at, device, value) VALUES ('2025-01-15 00:00+00', 1, 0)",
    );
    assert_eq!(
        psql(
            &second,
            "SELECT count(*) FROM measurements_2025_01 WHERE value = 0"
        )
        .trim(),
        "1"
    );
    assert_eq!(
        psql(&second, "SELECT count(*) FROM billing.monthly").trim(),
        psql(&src, "SELECT count(*) FROM billing.monthly").trim()
    );
    assert_eq!(
        psql(&second, "SELECT nextval('billing.invoice_numbers')"),
        psql(&src, "SELECT nextval('billing.invoice_numbers')")
    );
}

#[tokio::test]
async fn some_tables_bring_what_they_need_and_name_what_they_leave() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("app").unwrap();
    psql(&src, APP);
    psql(&src, APP_DATA);
    let dir = tempfile::tempdir().unwrap();
    let (_location, mut repo) = new_repo(dir.path()).await;
    let opts = BackupOptions {
        source: Secret::new(src.clone()),
        selection: Selection::default(),
        tags: Default::default(),
    };
    backup(&mut repo, &opts, &NoProgress).await.unwrap();

    // users alone: its types, collation, extensions, the function its check calls, its
    // trigger (and trigger function), policies, grants, comments and the view over it
    // alone; the views that also read invoices are named as not restored.
    let dest = pg.create_database("users_only").unwrap();
    let mut o = restore_opts(&dest);
    o.selection.include = vec!["public.users".into()];
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    assert!(
        plan.objects_left
            .iter()
            .any(|l| l == "view billing.user_totals not restored: it also uses billing.invoices, which is not restored"),
        "{:?}",
        plan.objects_left
    );
    let done = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(done.len(), 1);
    assert_eq!(
        psql(
            &dest,
            "SELECT string_agg(c.relname || ':' || c.relkind::text, ',' ORDER BY c.relname) FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('public', 'billing') AND c.relkind IN ('r', 'v', 'm', 'p')"
        )
        .trim(),
        "active_users:v,users:r"
    );
    assert_eq!(
        psql(&dest, "SELECT count(*) FROM pg_policy").trim(),
        "2",
        "both policies"
    );
    assert_eq!(
        psql(
            &dest,
            "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal"
        )
        .trim(),
        "users_updated_at"
    );
    assert_eq!(
        psql(
            &dest,
            "SELECT has_table_privilege('app_user', 'public.users', 'UPDATE')"
        )
        .trim(),
        "t"
    );
    // Merging rows into the users table the destination now has, as a requester who
    // may only add rows would: the destination's own function, grants and policies
    // stay as they are (nothing of the snapshot replaces or adds to them).
    psql(
        &dest,
        "CREATE OR REPLACE FUNCTION normalize_email(e text) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT lower(e) $$; \
         REVOKE UPDATE ON users FROM app_user; DROP POLICY no_deleting_active ON users; \
         DELETE FROM users WHERE handle = 'cy'",
    );
    let mut o = restore_opts(&dest);
    o.selection.include = vec!["public.users".into()];
    o.mode = Mode::Upsert;
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    assert!(
        plan.objects_left.iter().any(|l| l
            == "trigger users_updated_at on public.users not restored: public.users exists in the destination and keeps its own"),
        "{:?}",
        plan.objects_left
    );
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(psql(&dest, "SELECT count(*) FROM users").trim(), "3");
    assert_eq!(
        psql(
            &dest,
            "SELECT prosrc FROM pg_proc WHERE proname = 'normalize_email'"
        )
        .trim(),
        "SELECT lower(e)",
        "the destination's function is kept"
    );
    assert_eq!(
        psql(
            &dest,
            "SELECT has_table_privilege('app_user', 'public.users', 'UPDATE')"
        )
        .trim(),
        "f",
        "no grant added to an existing table"
    );
    assert_eq!(psql(&dest, "SELECT count(*) FROM pg_policy").trim(), "1");

    // The same with --no-dependents: what users needs, nothing that merely uses it.
    let bare = pg.create_database("bare").unwrap();
    let mut o = restore_opts(&bare);
    o.selection.include = vec!["public.users".into()];
    o.objects.dependents = false;
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        psql(
            &bare,
            "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal"
        )
        .trim(),
        "0"
    );
    assert_eq!(psql(&bare, "SELECT count(*) FROM users").trim(), "3");

    // One partition into a database that has its parent already: attached to it.
    let parts = pg.create_database("parts").unwrap();
    let mut o = restore_opts(&parts);
    o.selection.include = vec!["public.measurements_2025_01".into()];
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    assert!(
        plan.changes_existing.is_empty(),
        "the parent is made by this restore"
    );
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let mut o = restore_opts(&parts);
    o.selection.include = vec!["public.measurements_default".into()];
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    // Adding rows to a table the destination has: the plan says so (the console asks
    // for the rights or approvals an append needs).
    assert_eq!(
        plan.changes_existing,
        [
            "public.measurements_default is attached to public.measurements, which the destination already has"
        ]
    );
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    assert_eq!(
        psql(&parts, "SELECT count(*) FROM measurements").trim(),
        psql(
            &src,
            "SELECT (SELECT count(*) FROM measurements_2025_01) + (SELECT count(*) FROM measurements_default)"
        )
        .trim()
    );

    // Into another server, which lacks the application's role: restored, and the
    // grants and the policy to that role are named as not restored.
    let other = testkit::Postgres::start().unwrap();
    let dest = other.create_database("app").unwrap();
    let plan = engine::restore::plan(&repo, &restore_opts(&dest))
        .await
        .unwrap();
    let done = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let notes: Vec<&String> = done.iter().flat_map(|d| &d.notes).collect();
    assert!(
        notes.iter().any(
            |n| n.contains("ON TABLE public.users TO app_user") && n.contains("does not exist")
        ),
        "{notes:?}"
    );
    assert_eq!(psql(&dest, "SELECT count(*) FROM users").trim(), "3");
}

/// A MariaDB application: views (one over another), `updated_at` and audit triggers,
/// a stored procedure, a function used by a view, and a scheduled event.
const MARIADB_APP: &str = r#"
CREATE TABLE customers (id int AUTO_INCREMENT PRIMARY KEY, email varchar(200) NOT NULL UNIQUE,
  created_at datetime(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), updated_at datetime(3) NULL);
CREATE TABLE orders (id bigint AUTO_INCREMENT PRIMARY KEY, customer int NOT NULL, total decimal(10,2) NOT NULL,
  FOREIGN KEY (customer) REFERENCES customers (id));
CREATE TABLE audit (id int AUTO_INCREMENT PRIMARY KEY, what varchar(100) NOT NULL);
CREATE FUNCTION with_tax(x decimal(10,2)) RETURNS decimal(10,2) DETERMINISTIC RETURN x * 1.2;
CREATE PROCEDURE close_customer(IN cid int) MODIFIES SQL DATA
BEGIN
  DELETE FROM orders WHERE customer = cid;
  DELETE FROM customers WHERE id = cid;
END;
CREATE TRIGGER customers_touch BEFORE UPDATE ON customers FOR EACH ROW SET NEW.updated_at = NOW(3);
CREATE TRIGGER orders_audit AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES (CONCAT('order ', NEW.id));
CREATE VIEW order_totals AS SELECT c.email, SUM(with_tax(o.total)) AS total FROM customers c JOIN orders o ON o.customer = c.id GROUP BY c.email;
CREATE VIEW big_customers AS SELECT email FROM order_totals WHERE total > 100;
CREATE EVENT nightly_cleanup ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 03:00:00' DISABLE DO DELETE FROM audit WHERE id < 0;
INSERT INTO customers (email) VALUES ('a@x'), ('b@x'), ('c@x');
INSERT INTO orders (customer, total) VALUES (1, 50), (1, 70), (2, 10);
"#;

#[tokio::test]
async fn a_mariadb_application_round_trips_with_identical_mysqldump() {
    let my = testkit::mariadb::Mariadb::start().unwrap();
    let src = my.create_database("app").unwrap();
    // The client reads the script statement by statement; routine bodies need another
    // delimiter.
    let script = MARIADB_APP
        .replace("END;\n", "END//\n")
        .replace("CREATE PROCEDURE", "DELIMITER //\nCREATE PROCEDURE")
        .replace("END//\n", "END//\nDELIMITER ;\n");
    my.sql("app", &script).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_location, mut repo) = new_repo(dir.path()).await;
    let opts = BackupOptions {
        source: Secret::new(src.clone()),
        selection: Selection::default(),
        tags: Default::default(),
    };
    let full = backup(&mut repo, &opts, &NoProgress).await.unwrap();
    assert!(
        full.snapshot.skipped.is_empty(),
        "{:?}",
        full.snapshot.skipped
    );
    my.sql("app", "INSERT INTO orders (customer, total) VALUES (3, 500); UPDATE customers SET email = 'b2@x' WHERE id = 2")
        .unwrap();
    backup(&mut repo, &opts, &NoProgress).await.unwrap();

    let dest = my.create_database("copy").unwrap();
    let mut o = restore_opts(&dest);
    o.objects.events = true;
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    assert!(plan.objects_left.is_empty(), "{:?}", plan.objects_left);
    engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    same_text(
        &my.dump_schema("copy").unwrap(),
        &my.dump_schema("app").unwrap(),
    );
    same_text(
        &my.dump("copy", &[]).unwrap(),
        &my.dump("app", &[]).unwrap(),
    );
    // The triggers work on the restored tables (and did not fire while loading: the
    // audit table holds exactly the source's rows, compared above).
    my.sql("copy", "INSERT INTO orders (customer, total) VALUES (1, 1)")
        .unwrap();
    assert_eq!(
        my.sql("copy", "SELECT COUNT(*) FROM audit").unwrap().trim(),
        (my.sql("app", "SELECT COUNT(*) FROM audit")
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
            + 1)
        .to_string()
    );
    assert_eq!(
        my.sql("copy", "SELECT email FROM big_customers ORDER BY email")
            .unwrap(),
        my.sql("app", "SELECT email FROM big_customers ORDER BY email")
            .unwrap()
    );

    // Again over the copy (replace): the tables and their triggers are made anew, the
    // routines, views and event the copy has are kept (said in a note), and the copy
    // still dumps as the source.
    let mut o = restore_opts(&my.url("copy"));
    o.mode = Mode::Replace;
    o.objects.events = true;
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    let done = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap();
    let notes: Vec<&String> = done.iter().flat_map(|d| &d.notes).collect();
    assert!(
        notes.contains(&&"kept the destination's existing view order_totals".to_string())
            && notes
                .contains(&&"kept the destination's existing procedure close_customer".to_string()),
        "{notes:?}"
    );
    same_text(
        &my.dump_schema("copy").unwrap(),
        &my.dump_schema("app").unwrap(),
    );

    // Without --events the event stays behind, and says so.
    let dest = my.create_database("noevents").unwrap();
    let plan = engine::restore::plan(&repo, &restore_opts(&dest))
        .await
        .unwrap();
    assert_eq!(
        plan.objects_left,
        ["event nightly_cleanup not restored: events are restored only when asked (--events)"]
    );
}

/// A snapshot whose objects need an extension the destination server cannot install
/// (taken elsewhere): the restore is refused before anything changes, naming the
/// extension, its version and where it comes from.
#[tokio::test]
async fn a_destination_without_a_needed_extension_is_refused_before_anything_changes() {
    use engine::model::{ObjectKind, Phase, SchemaObject};
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("app").unwrap();
    psql(
        &src,
        "CREATE EXTENSION citext; CREATE TABLE people (id int PRIMARY KEY, email citext); \
         INSERT INTO people VALUES (1, 'A@x')",
    );
    let dir = tempfile::tempdir().unwrap();
    let (_location, mut repo) = new_repo(dir.path()).await;
    let opts = BackupOptions {
        source: Secret::new(src.clone()),
        selection: Selection::default(),
        tags: Default::default(),
    };
    backup(&mut repo, &opts, &NoProgress).await.unwrap();
    // The same snapshot as a server with PostGIS-like extras would have written it:
    // one more extension, which the table needs.
    let (_, mut snap) = repo.find_snapshot("latest").await.unwrap();
    let missing = "tablesafe_missing_ext";
    snap.objects.insert(
        0,
        SchemaObject {
            kind: ObjectKind::Extension,
            name: missing.into(),
            phase: Phase::Before,
            sql: vec![format!("CREATE EXTENSION {missing} WITH SCHEMA public")],
            drop: None,
            tables: Vec::new(),
            needs: Vec::new(),
            version: Some("3.1".into()),
        },
    );
    snap.tables[0]
        .schema
        .postgres
        .as_mut()
        .unwrap()
        .needs
        .push(format!("extension {missing}"));
    let elsewhere = repo.save_snapshot(&snap).await.unwrap();

    let dest = pg.create_database("dest").unwrap();
    let mut o = restore_opts(&dest);
    o.snapshot = elsewhere.to_string();
    let plan = engine::restore::plan(&repo, &o).await.unwrap();
    let err = engine::restore::execute(&repo, &plan, &NoProgress)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!(
            "{missing} (version 3.1 in the backup; install the package that provides it)"
        )) && err.contains("nothing was changed"),
        "{err}"
    );
    assert_eq!(
        psql(
            &dest,
            "SELECT (SELECT count(*) FROM pg_class WHERE relname = 'people') + (SELECT count(*) FROM pg_extension WHERE extname = 'citext')"
        )
        .trim(),
        "0",
        "the destination is as it was"
    );
}
