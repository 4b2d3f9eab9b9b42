//! Restore drills from the console on a real PostgreSQL source: a drill plan needs a
//! scratch server, a scheduled drill runs by itself, Run drill now proves the latest
//! snapshot, a failing assertion fails the job and is kept as evidence, the dashboard
//! shows the last proven restorable snapshot, auditors export the evidence (audited)
//! and requesters may not, and no scratch database is left behind.

use crate::harness::{
    ADMIN_PASSWORD, Api, Options, Server, add_policy_for, client, cookie, sqlite,
};
use std::process::Command;
use std::time::{Duration, Instant};

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new(testkit::pg_bin_dir().unwrap().join("psql"))
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

#[tokio::test]
async fn drills_from_the_console_prove_snapshots_and_auditors_export_the_evidence() {
    let pg = testkit::Postgres::start().unwrap();
    let src = pg.create_database("shop").unwrap();
    psql(
        &src,
        // An application's schema, not a bare table: the drill's scratch restore
        // must make the extension, the domain, the trigger function, the trigger
        // and the view too.
        "CREATE EXTENSION citext;
         CREATE DOMAIN amount AS numeric(10,2) CHECK (VALUE >= 0);
         CREATE TABLE public.orders (id int PRIMARY KEY, total amount, email citext);
         CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
         CREATE TRIGGER orders_touch BEFORE UPDATE ON public.orders FOR EACH ROW EXECUTE FUNCTION touch();
         CREATE VIEW public.big_orders AS SELECT * FROM public.orders WHERE total > 1000;
         INSERT INTO public.orders SELECT g, g * 10, 'x' || g || '@example.com' FROM generate_series(1, 300) g;",
    );
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let (_, _, policy) = add_policy_for(
        &api,
        &admin,
        "shop",
        &src,
        &dir.path().join("repo"),
        "",
        "UTC",
    )
    .await;
    assert!(policy.ok(), "{policy:?}");
    let policy = policy.json().as_i64().unwrap();
    let scratch = api
        .form(
            Some(&admin),
            "sources/add",
            &[("name", "scratch".into()), ("url", pg.url("postgres"))],
        )
        .await;
    let scratch = scratch.json().as_i64().unwrap();
    for (user, role) in [("audrey", "auditor"), ("rick", "requester")] {
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", user.into()),
                    ("role", role.into()),
                    ("password", "a long enough password".into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
    }
    let save = |schedule: &str, scratch: String, assertions: &str| {
        vec![
            ("policy_id", policy.to_string()),
            ("schedule", schedule.to_string()),
            ("timezone", "Europe/Berlin".to_string()),
            ("pick", "latest".to_string()),
            ("scratch_source_id", scratch),
            ("assertions", assertions.to_string()),
        ]
    };

    // Nothing to drill yet; a PostgreSQL drill without a scratch server is refused.
    let r = api
        .form(
            Some(&admin),
            "drills/run",
            &[("policy_id", policy.to_string())],
        )
        .await;
    assert!(!r.ok() && r.body.contains("scratch server"), "{r:?}");
    let r = api
        .form(Some(&admin), "drills/save", &save("", String::new(), ""))
        .await;
    assert!(!r.ok() && r.body.contains("scratch"), "{r:?}");
    let r = api
        .form(
            Some(&admin),
            "drills/save",
            &save("nonsense", scratch.to_string(), ""),
        )
        .await;
    assert!(!r.ok() && r.body.contains("cron"), "{r:?}");
    api.run_policy(&admin, policy).await;

    // A scheduled drill runs by itself (its slot made due in the history).
    let ok =
        "SELECT count(*) = 300 FROM public.orders\nSELECT sum(total) = 451500 FROM public.orders";
    let r = api
        .form(
            Some(&admin),
            "drills/save",
            &save("daily at 04:00", scratch.to_string(), ok),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let plans = api.form(Some(&admin), "drills/plans", &[]).await.json();
    assert_eq!(
        plans[0]["assertions"].as_array().unwrap().len(),
        2,
        "{plans}"
    );
    assert!(plans[0]["next_run"].as_i64().unwrap() > 0, "{plans}");
    sqlite(
        &data.join("history.db"),
        "UPDATE drill_plans SET next_run_at = 1",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let scheduled = loop {
        let jobs = api.form(Some(&admin), "jobs/list", &[]).await.json();
        let found = jobs.as_array().unwrap().iter().find(|j| {
            j["title"] == "Scheduled restore drill: shop"
                && ["succeeded", "failed"].contains(&j["status"].as_str().unwrap())
        });
        if let Some(j) = found {
            break j.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no scheduled drill ran: {jobs}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(scheduled["status"], "succeeded", "{scheduled}");
    let plans = api.form(Some(&admin), "drills/plans", &[]).await.json();
    assert!(
        plans[0]["next_run"].as_i64().unwrap() > 1,
        "moved to the next slot: {plans}"
    );

    // Run drill now, with an assertion that does not hold: the job fails, the
    // evidence says which check.
    let r = api
        .form(
            Some(&admin),
            "drills/save",
            &save(
                "",
                scratch.to_string(),
                "SELECT count(*) = 301 FROM public.orders",
            ),
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let job = api
        .form(
            Some(&admin),
            "drills/run",
            &[("policy_id", policy.to_string())],
        )
        .await;
    let done = api.wait_job(&admin, job.json().as_i64().unwrap()).await;
    assert_eq!(done[0]["status"], "failed", "{done}");
    assert!(
        done[0]["error"]
            .as_str()
            .unwrap()
            .contains("did not prove restorable"),
        "{done}"
    );
    let log = done[1].to_string();
    assert!(log.contains("FAIL assert SELECT count(*) = 301"), "{log}");

    let drills = api.form(Some(&admin), "drills/list", &[]).await.json();
    let list = drills.as_array().unwrap();
    assert_eq!(list.len(), 2, "{drills}");
    assert_eq!(list[0]["passed"], false);
    assert_eq!(list[1]["passed"], true);
    assert_eq!(list[1]["rows"], 300);
    assert!(
        list[1]["checks"]
            .to_string()
            .contains("public.orders: 300 of 300 rows, checksum matches (exact)"),
        "{drills}"
    );
    let proven = api.form(Some(&admin), "drills/proven", &[]).await.json();
    assert_eq!(proven[0]["last_passed"], false, "{proven}");
    assert_eq!(
        proven[0]["proven_snapshot_time"], list[1]["snapshot_time"],
        "{proven}"
    );
    let dash = api.form(Some(&admin), "dashboard_data", &[]).await.json();
    assert_eq!(dash["proven"][0]["policy"], "shop", "{dash}");
    assert_eq!(
        psql(
            &pg.url("postgres"),
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'tablesafe_drill_%'"
        ),
        "0"
    );

    // Auditors export the evidence; requesters may not; both are audited.
    let auditor = cookie(&server, "audrey", "a long enough password").await;
    let requester = cookie(&server, "rick", "a long enough password").await;
    let csv_url = server.url("/drills.csv");
    let get = |c: String| {
        let url = csv_url.clone();
        async move {
            let r = client().get(url).header("Cookie", c).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let (status, csv) = get(auditor.clone()).await;
    assert_eq!(status, 200);
    assert!(
        csv.starts_with("id,started_utc,policy,snapshot,snapshot_time_utc,passed,"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(
        csv.contains(",shop,") && csv.contains(",passed,") && csv.contains(",failed,"),
        "{csv}"
    );
    assert!(
        csv.contains("FAIL SELECT count(*) = 301 FROM public.orders → false"),
        "{csv}"
    );
    assert_eq!(get(requester.clone()).await.0, 403);
    let audit = client()
        .get(server.url("/audit.csv"))
        .header("Cookie", &admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        ",audrey,127.0.0.1,drill.export,restore drills,ok,",
        ",rick,127.0.0.1,drill.export,restore drills,denied,",
        ",admin,127.0.0.1,drill.run,policy #",
        ",tablesafe,,drill,policy shop: snapshot ",
    ] {
        assert!(audit.contains(needle), "audit lacks {needle}:\n{audit}");
    }
}
