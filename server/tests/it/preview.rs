//! The restore wizard's preview of a merge, through the console (issue 25, point 3). It
//! leaves the PostgreSQL table it compares untouched — the table's insert, update and
//! delete statistics (which count rolled-back work too), its row trigger and its
//! sequences do not move, and it goes through while another session holds every row
//! `FOR UPDATE` — and its counts are what the merge then does. The comparison needs
//! the merge's own right: a requester previewing a merge gets the plan without it (and
//! may still file the request), an operator gets it, and nobody does where the
//! two-person rule holds.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy_for, cookie};
use serde_json::json;
use sqlx::{Connection, Executor};
use std::time::{Duration, Instant};

const PW: &str = "a long enough password";

fn psql(url: &str, sql: &str) -> String {
    let out = std::process::Command::new(testkit::pg_bin_dir().unwrap().join("psql"))
        .args([url, "-v", "ON_ERROR_STOP=1", "-XAtq", "-c", sql])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "psql: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// What `sql` returns once no other session is connected to the server: a closed
/// session's statistics reach the shared counters as its backend exits, before it
/// leaves pg_stat_activity.
fn settled(url: &str, sql: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while psql(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()",
    ) != "0"
    {
        assert!(Instant::now() < deadline, "sessions still open");
        std::thread::sleep(Duration::from_millis(20));
    }
    psql(url, sql)
}

/// The live table's inserted, updated and deleted rows (statistics), the trigger's
/// sequence, the serial column's sequence and the rows themselves.
const WATCH: &str = "SELECT concat_ws(' | ',
      (SELECT concat_ws(',', n_tup_ins, n_tup_upd, n_tup_del) FROM pg_stat_user_tables WHERE relid = 'shop.items_live'::regclass),
      (SELECT concat_ws(',', last_value, is_called) FROM shop.fired),
      (SELECT concat_ws(',', last_value, is_called) FROM shop.items_live_n_seq),
      (SELECT md5(string_agg(t::text, ',' ORDER BY region, id)) FROM shop.items_live t))";

fn stats(watch: &str) -> Vec<i64> {
    watch
        .split(" | ")
        .next()
        .unwrap()
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn a_merge_preview_in_the_restore_wizard_changes_nothing_and_needs_the_right_to_run_it() {
    let pg = testkit::Postgres::start().unwrap();
    let shop = pg.create_database("shop").unwrap();
    let rows = "SELECT r, i, CASE WHEN i % 4 = 0 THEN NULL ELSE 'item ' || i END, i
                FROM unnest(ARRAY['eu', 'us']) r, generate_series(1, 10) i";
    psql(
        &shop,
        &format!(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.items (region text, id int, name text, qty int, n serial, PRIMARY KEY (region, id));
             INSERT INTO shop.items (region, id, name, qty) {rows};"
        ),
    );
    // The destination: the table under another name, drifted since (two rows lost, a
    // name set to NULL and one NULL set, a quantity changed, two rows added), with a
    // row trigger that moves a sequence.
    let live = pg.create_database("live").unwrap();
    psql(
        &live,
        &format!(
            "CREATE SCHEMA shop;
             CREATE TABLE shop.items_live (region text, id int, name text, qty int, n serial, PRIMARY KEY (region, id));
             INSERT INTO shop.items_live (region, id, name, qty) {rows};
             DELETE FROM shop.items_live WHERE region = 'eu' AND id IN (1, 2);
             UPDATE shop.items_live SET name = NULL WHERE region = 'eu' AND id = 3;
             UPDATE shop.items_live SET name = 'x' WHERE region = 'eu' AND id = 4;
             UPDATE shop.items_live SET qty = 50 WHERE region = 'us' AND id = 5;
             INSERT INTO shop.items_live (region, id, name, qty) VALUES ('eu', 11, 'extra', 11), ('us', 0, NULL, 0);
             CREATE SEQUENCE shop.fired;
             CREATE FUNCTION shop.fired() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN PERFORM nextval('shop.fired'); RETURN NULL; END$$;
             CREATE TRIGGER fired AFTER INSERT OR UPDATE OR DELETE ON shop.items_live
               FOR EACH ROW EXECUTE FUNCTION shop.fired();"
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let mut ids = std::collections::BTreeMap::new();
    for (name, role) in [("olga", "operator"), ("rita", "requester")] {
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", name.into()),
                    ("role", role.into()),
                    ("password", PW.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        ids.insert(name, r.json().as_i64().unwrap());
    }
    let (source, _, policy) = add_policy_for(
        &api,
        &admin,
        "shop",
        &shop,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let done = api
        .run_policy(&admin, policy.json().as_i64().unwrap())
        .await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
    // A preview that asked for a row lock would give up after 3 s.
    let r = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "live".into()),
                ("url", format!("{live}?options[lock_timeout]=3000")),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let dest = r.json().as_i64().unwrap();
    for s in [source, dest] {
        let r = api
            .form(
                Some(&admin),
                "users/grant",
                &[
                    ("user_id", ids["rita"].to_string()),
                    ("source_id", s.to_string()),
                    ("granted", "true".into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
    }
    let snapshot = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await
        .json()[0]["id"]
        .as_i64()
        .unwrap();
    let upsert = |confirm: &str| {
        json!({"snapshot": snapshot, "dest_source_id": dest, "tables": ["shop.items"],
               "columns": {"shop.items": ["region", "id", "name", "qty"]},
               "rename": {"shop.items": "shop.items_live"}, "mode": "upsert",
               "confirm": confirm, "safety_backup": false})
    };
    let olga = cookie(&server, "olga", PW).await;
    let rita = cookie(&server, "rita", PW).await;
    let before = settled(&live, WATCH);

    // Another session holds every row of the live table FOR UPDATE throughout.
    let mut holder = sqlx::PgConnection::connect(&live).await.unwrap();
    holder.execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT * FROM shop.items_live FOR UPDATE")
        .await
        .unwrap();
    // A requester may preview the merge (to file a request) but not compare it with
    // the destination's rows: that is the right to run it.
    let r = api
        .json(Some(&rita), "restore/preview", json!({"req": upsert("")}))
        .await;
    assert!(r.ok(), "{r:?}");
    let p = r.json();
    assert_eq!(p["tables"][0]["action"], "upsert", "{p}");
    assert!(p["tables"][0]["diff"].is_null(), "{p}");
    assert!(
        p["diff_note"]
            .as_str()
            .is_some_and(|n| n.contains("Not compared with the destination's rows")),
        "{p}"
    );
    assert_eq!(p["approvals_required"], 1, "{p}");
    // An operator, who may run it, gets the diff.
    let r = api
        .json(Some(&olga), "restore/preview", json!({"req": upsert("")}))
        .await;
    assert!(r.ok(), "{r:?}");
    let p = r.json();
    let diff = json!({"inserted": 2, "updated": 3, "unchanged": 15, "deleted": 0});
    assert_eq!(p["tables"][0]["diff"], diff, "{p}");
    assert!(p.get("diff_note").is_none(), "{p}");
    assert_eq!(p["approvals_required"], 0, "{p}");
    holder.execute("ROLLBACK").await.unwrap();
    holder.close().await.unwrap();
    assert_eq!(
        settled(&live, WATCH),
        before,
        "a preview inserted, updated or deleted rows (rolled back or not), fired the trigger or moved a sequence"
    );

    // The requester still files the merge as a request, which someone must approve.
    let r = api
        .json(
            Some(&rita),
            "requests/file",
            json!({"req": upsert("shop.items_live"), "reason": "ticket 7: rows lost"}),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let got = api
        .form(
            Some(&rita),
            "requests/get",
            &[("id", r.json().as_i64().unwrap().to_string())],
        )
        .await
        .json();
    assert_eq!(got["request"]["state"], "requested", "{got}");
    assert!(got["request"]["job_id"].is_null(), "{got}");

    // Where the two-person rule holds, nobody can run it directly, and nobody gets
    // the comparison (backups there cannot be browsed either).
    let rule = |n: i64| {
        vec![
            ("id", dest.to_string()),
            ("approvals_required", n.to_string()),
            ("request_ttl_minutes", "60".to_string()),
        ]
    };
    assert!(
        api.form(Some(&admin), "sources/approval_rule", &rule(1))
            .await
            .ok()
    );
    for who in [&olga, &admin] {
        let p = api
            .json(Some(who), "restore/preview", json!({"req": upsert("")}))
            .await
            .json();
        assert!(p["tables"][0]["diff"].is_null(), "{p}");
        assert_eq!(p["approvals_required"], 1, "{p}");
    }
    assert!(
        api.form(Some(&admin), "sources/approval_rule", &rule(0))
            .await
            .ok()
    );

    // The operator runs it: it does exactly what the preview said.
    assert_eq!(settled(&live, WATCH), before);
    let r = api
        .json(
            Some(&olga),
            "restore/start",
            json!({"req": upsert("shop.items_live")}),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let job = api.wait_job(&olga, r.json().as_i64().unwrap()).await;
    assert_eq!(job[0]["status"], "succeeded", "{job}");
    let result: serde_json::Value =
        serde_json::from_str(job[0]["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["tables"][0]["merge"], diff, "{result}");
    let after = settled(&live, WATCH);
    let (b, a) = (stats(&before), stats(&after));
    assert_eq!(
        (a[0] - b[0], a[1] - b[1], a[2] - b[2]),
        (2, 3, 0),
        "{after}"
    );
    assert!(
        after.contains(" | 5,t | "),
        "the trigger fired 5 times: {after}"
    );
}
