//! Notifications end to end, against real receivers on loopback: a webhook receiver
//! (HTTP, checking the HMAC signature the way a receiver would) and an SMTP server
//! (aiosmtpd). Events come from real actions: a restore request with the two-person
//! rule, a failing backup, damage found by a verify, a policy going late.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::notify::{Received, SmtpSink, WebhookReceiver};

const PW: &str = "a long enough password";
const SECRET: &str = "webhook signing secret 0123456789";
const WAIT: Duration = Duration::from_secs(30);

/// Checks `x-tablesafe-signature: t=…,v1=…` as a receiver does: HMAC-SHA256 over
/// "t.body" with the shared secret.
fn signature_ok(r: &Received, secret: &str) -> bool {
    use hmac::{Hmac, Mac};
    let Some(sig) = r.headers.get("x-tablesafe-signature") else {
        return false;
    };
    let mut t = "";
    let mut v1 = "";
    for part in sig.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v,
            Some(("v1", v)) => v1 = v,
            _ => {}
        }
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    !t.is_empty() && expected == v1
}

fn body(r: &Received) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

/// `/metrics` is closed without a token (issue 25).
const METRICS_TOKEN: &str = "notify-test-scrape";

async fn start(dir: &std::path::Path, database_url: Option<&str>) -> (Server, String) {
    let server = Server::start_with_env(
        Options {
            data_dir: &dir.join("data"),
            database_url,
            admin_password: Some(ADMIN_PASSWORD),
        },
        &[
            ("TABLESAFE_NOTIFY_RETRY_SECS", "1"),
            ("TABLESAFE_PUBLIC_URL", "https://backup.example.com/"),
            ("TABLESAFE_METRICS_TOKEN", METRICS_TOKEN),
        ],
    );
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    (server, admin)
}

async fn add_channel(api: &Api<'_>, who: &str, input: Value) -> i64 {
    let r = api
        .json(Some(who), "notify/save", json!({ "input": input }))
        .await;
    r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"))
}

fn webhook(name: &str, url: &str, events: &[&str]) -> Value {
    json!({"id": null, "name": name, "kind": "webhook", "url": url, "secret": SECRET,
           "events": events, "enabled": true})
}

async fn deliveries(api: &Api<'_>, who: &str) -> Vec<Value> {
    let r = api
        .form(
            Some(who),
            "notify/deliveries",
            &[("status", String::new()), ("channel", "0".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    r.json().as_array().unwrap().clone()
}

#[tokio::test]
async fn request_events_reach_a_signed_webhook_and_an_smtp_server() {
    let hooks = WebhookReceiver::start().unwrap();
    let smtp = SmtpSink::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(dir.path(), None).await;
    let api = Api { server: &server };
    for (name, role) in [
        ("operator", "operator"),
        ("rita", "requester"),
        ("aud", "auditor"),
    ] {
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
    }
    let operator = cookie(&server, "operator", PW).await;
    let rita = cookie(&server, "rita", PW).await;
    let aud = cookie(&server, "aud", PW).await;

    // Only admins and operators manage channels; a requester does not see them.
    let all: Vec<&str> = vec![
        "backup.failed",
        "capture.failed",
        "backup.late",
        "restore.requested",
        "restore.approved",
        "restore.rejected",
        "restore.finished",
        "verify.damage",
    ];
    for who in [&rita, &aud] {
        let r = api
            .json(
                Some(who),
                "notify/save",
                json!({"input": webhook("x", &hooks.url("/x"), &all)}),
            )
            .await;
        assert!(r.forbidden(), "{r:?}");
    }
    let r = api.form(Some(&rita), "notify/channels", &[]).await;
    assert!(r.forbidden(), "{r:?}");
    // Bad settings are refused next to their field.
    let r = api
        .json(
            Some(&admin),
            "notify/save",
            json!({"input": webhook("w", "ftp://x", &all)}),
        )
        .await;
    assert!(r.body.contains("http:// or https://"), "{r:?}");
    let mut short = webhook("w", &hooks.url("/hook"), &all);
    short["secret"] = json!("short");
    let r = api
        .json(Some(&admin), "notify/save", json!({"input": short}))
        .await;
    assert!(r.body.contains("at least 16"), "{r:?}");

    let hook = add_channel(
        &api,
        &operator,
        webhook("ops-hook", &hooks.url("/hook?token=hooktoken"), &all),
    )
    .await;
    let mail = add_channel(
        &api,
        &admin,
        json!({"id": null, "name": "dba-mail", "kind": "email", "host": "127.0.0.1",
               "port": smtp.port().to_string(), "security": "none", "username": "", "password": "",
               "from": "tablesafe@example.com", "to": "dba@example.com, oncall@example.com",
               "events": ["restore.requested", "restore.approved", "restore.finished"], "enabled": true}),
    )
    .await;

    // The list shows where each channel sends, never its secrets, to auditors too.
    let listed = api.form(Some(&aud), "notify/channels", &[]).await;
    assert!(listed.ok(), "{listed:?}");
    assert!(
        !listed.body.contains(SECRET) && !listed.body.contains("hooktoken"),
        "{listed:?}"
    );
    let channels = listed.json();
    assert_eq!(channels[0]["name"], "dba-mail");
    assert_eq!(
        channels[0]["summary"],
        format!(
            "to dba@example.com, oncall@example.com via 127.0.0.1:{}",
            smtp.port()
        )
    );
    assert_eq!(
        channels[1]["summary"],
        format!(
            "POST http://127.0.0.1:{}",
            hooks.url("").rsplit(':').next().unwrap()
        )
    );

    // Send test: delivered now, signed; the auditor may not send one.
    assert!(
        api.form(Some(&aud), "notify/test", &[("id", hook.to_string())])
            .await
            .forbidden()
    );
    let t = api
        .form(Some(&admin), "notify/test", &[("id", hook.to_string())])
        .await;
    assert_eq!(t.json()["delivered"], true, "{t:?}");
    let test = hooks.wait_for_event("test", WAIT).unwrap();
    assert!(signature_ok(&test, SECRET), "{test:?}");
    assert!(!signature_ok(&test, "another secret of some length"));
    assert_eq!(test.path, "/hook?token=hooktoken");
    let t = api
        .form(Some(&admin), "notify/test", &[("id", mail.to_string())])
        .await;
    assert_eq!(t.json()["delivered"], true, "{t:?}");
    smtp.wait_for(
        "Subject: [tablesafe] Test message for channel dba-mail",
        WAIT,
    )
    .unwrap();

    // A restore request under the two-person rule: filed, approved twice, finished.
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
    );
    let (source, _, policy) =
        add_policy(&api, &admin, "shop", &db, &dir.path().join("repo"), "", "").await;
    api.run_policy(&admin, policy.json().as_i64().unwrap())
        .await;
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "2".into()),
                ("request_ttl_minutes", "60".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
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
    let req = json!({"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"], "columns": {},
                     "rename": {"customers": "customers_back"}, "mode": "create", "confirm": ""});
    let r = api
        .json(
            Some(&operator),
            "requests/file",
            json!({"req": req, "reason": "ticket 7"}),
        )
        .await;
    let id = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    let requested = hooks.wait_for_event("restore.requested", WAIT).unwrap();
    assert!(signature_ok(&requested, SECRET));
    let b = body(&requested);
    assert_eq!(b["details"]["request"], id);
    assert_eq!(b["details"]["requested_by"], "operator");
    assert_eq!(
        b["link"],
        format!("https://backup.example.com/requests/{id}")
    );
    smtp.wait_for(
        &format!("Subject: [tablesafe] Restore request #{id} requested by operator"),
        WAIT,
    )
    .unwrap();

    let version = api
        .form(Some(&admin), "requests/get", &[("id", id.to_string())])
        .await
        .json()["request"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    let first = api
        .form(
            Some(&admin),
            "requests/approve",
            &[("id", id.to_string()), ("version", version.clone())],
        )
        .await;
    assert!(first.ok() && first.json().is_null(), "{first:?}");
    // One approval of two is not "approved" yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        hooks
            .received()
            .iter()
            .all(|r| r.headers["x-tablesafe-event"] != "restore.approved")
    );
    // A second admin approves (the operator filed it and may not).
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "ada".into()),
                ("role", "admin".into()),
                ("password", PW.into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let ada = cookie(&server, "ada", PW).await;
    let second = api
        .form(
            Some(&ada),
            "requests/approve",
            &[("id", id.to_string()), ("version", version)],
        )
        .await;
    let job = second
        .json()
        .as_i64()
        .unwrap_or_else(|| panic!("{second:?}"));
    let approved = body(&hooks.wait_for_event("restore.approved", WAIT).unwrap());
    assert_eq!(approved["details"]["job"], job);
    assert_eq!(approved["details"]["approvals"], 2);
    let finished = hooks.wait_for_event("restore.finished", WAIT).unwrap();
    assert!(signature_ok(&finished, SECRET));
    let f = body(&finished);
    assert_eq!(f["details"]["status"], "succeeded", "{f}");
    assert_eq!(f["details"]["request"], id);
    assert_eq!(
        f["details"]["result"]["tables"],
        json!([{"table": "customers_back", "rows": 1}]),
        "{f}"
    );
    smtp.wait_for(
        &format!("Subject: [tablesafe] Restore request #{id} approved by ada"),
        WAIT,
    )
    .unwrap();
    let mail_finished = smtp
        .wait_for(
            "Subject: [tablesafe] Restore customers_back into s-shop: succeeded",
            WAIT,
        )
        .unwrap();
    assert!(
        mail_finished.contains("To: dba@example.com, oncall@example.com"),
        "{mail_finished}"
    );
    assert!(
        mail_finished.contains(&format!("https://backup.example.com/requests/{id}")),
        "{mail_finished}"
    );

    // A failing backup goes to the webhook only (the mail channel did not choose it).
    std::fs::remove_file(&db).unwrap();
    std::fs::create_dir(&db).unwrap();
    let r = api
        .form(
            Some(&admin),
            "policies/run",
            &[("id", policy.json().as_i64().unwrap().to_string())],
        )
        .await;
    let job = r.json().as_i64().unwrap();
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "failed");
    let failed = body(&hooks.wait_for_event("backup.failed", WAIT).unwrap());
    assert_eq!(failed["details"]["policy"], "shop", "{failed}");
    assert_eq!(failed["details"]["job"], job);
    assert!(
        failed["summary"]
            .as_str()
            .unwrap()
            .starts_with("Backup failed: shop: "),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(smtp.messages().iter().all(|m| !m.contains("Backup failed")));

    // Every delivery is listed, delivered, for auditors too.
    let list = deliveries(&api, &aud).await;
    let summary: Vec<(String, String, String)> = list
        .iter()
        .map(|d| {
            (
                d["channel"].as_str().unwrap().into(),
                d["event"].as_str().unwrap().into(),
                d["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (channel, event) in [
        ("ops-hook", "test"),
        ("dba-mail", "test"),
        ("ops-hook", "restore.requested"),
        ("dba-mail", "restore.requested"),
        ("ops-hook", "restore.approved"),
        ("dba-mail", "restore.approved"),
        ("ops-hook", "restore.finished"),
        ("dba-mail", "restore.finished"),
        ("ops-hook", "backup.failed"),
    ] {
        assert!(
            summary.contains(&(channel.into(), event.into(), "delivered".into())),
            "{channel} {event} not delivered: {summary:?}"
        );
    }
    assert_eq!(summary.len(), 9, "{summary:?}");

    // /metrics counts the deliveries.
    let metrics = crate::harness::client()
        .get(server.url("/metrics"))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "tablesafe_notifications_total{event=\"restore.finished\",outcome=\"delivered\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tablesafe_notifications{status=\"failed\"} 0"),
        "{metrics}"
    );

    // The audit log names the channel changes and tests; deleting a channel deletes its queue.
    let audit = api
        .form(
            Some(&aud),
            "audit/list",
            &[
                ("user", String::new()),
                ("action", String::new()),
                ("outcome", String::new()),
            ],
        )
        .await;
    for action in ["channel.add", "channel.test"] {
        assert!(audit.body.contains(action), "{action}: {audit:?}");
    }
    assert!(!audit.body.contains(SECRET));
    let r = api
        .form(Some(&admin), "notify/delete", &[("id", mail.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    assert!(
        deliveries(&api, &admin)
            .await
            .iter()
            .all(|d| d["channel"] != "dba-mail")
    );
    let log = server.stop();
    assert!(
        !log.contains(SECRET) && !log.contains("hooktoken"),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_or_hangs_delays_nothing_else_and_is_retried() {
    let healthy = WebhookReceiver::start().unwrap();
    let down = WebhookReceiver::start().unwrap();
    let hung = WebhookReceiver::start().unwrap();
    down.set_status(503);
    hung.set_stall(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    // On a PostgreSQL history: the outbox is shared by every worker.
    let (server, admin) = start(dir.path(), Some(&url)).await;
    let api = Api { server: &server };
    let events = ["backup.failed"];
    add_channel(&api, &admin, webhook("down", &down.url("/"), &events)).await;
    add_channel(&api, &admin, webhook("hung", &hung.url("/"), &events)).await;
    add_channel(&api, &admin, webhook("healthy", &healthy.url("/"), &events)).await;
    // A Slack channel whose URL (a secret) leads nowhere: its error never shows the URL.
    let closed = testkit::free_port();
    add_channel(
        &api,
        &admin,
        json!({"id": null, "name": "slack", "kind": "slack",
               "url": format!("http://127.0.0.1:{closed}/services/T000/B000/SLACKSECRET"),
               "events": events, "enabled": true}),
    )
    .await;

    let db = dir.path().join("gone.db");
    std::fs::create_dir(&db).unwrap();
    let (_, _, policy) =
        add_policy(&api, &admin, "gone", &db, &dir.path().join("repo"), "", "").await;
    let r = api
        .form(
            Some(&admin),
            "policies/run",
            &[("id", policy.json().as_i64().unwrap().to_string())],
        )
        .await;
    let job = r.json().as_i64().unwrap();
    let failed_at = Instant::now();
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "failed");
    // The healthy receiver gets it at once, although one receiver hangs for 30 s and
    // two fail.
    healthy
        .wait_for_event("backup.failed", Duration::from_secs(8))
        .unwrap();
    assert!(
        failed_at.elapsed() < Duration::from_secs(8),
        "{:?}",
        failed_at.elapsed()
    );

    // The failing ones are retried with backoff, and show why.
    let deadline = Instant::now() + WAIT;
    loop {
        let list = deliveries(&api, &admin).await;
        let get = |name: &str| list.iter().find(|d| d["channel"] == name).unwrap().clone();
        let (d, s, h) = (get("down"), get("slack"), get("hung"));
        if d["attempts"].as_i64().unwrap() >= 2
            && s["attempts"].as_i64().unwrap() >= 2
            && h["attempts"].as_i64().unwrap() >= 1
            && h["status"] == "pending"
        {
            // Not delivered, and tried again ("sending" while an attempt is under way).
            assert!(d["status"] == "pending" || d["status"] == "sending", "{d}");
            assert!(d["last_error"].as_str().unwrap().contains("503"), "{d}");
            let se = s["last_error"].as_str().unwrap();
            assert!(
                se.contains("could not connect") && !se.contains("SLACKSECRET"),
                "{s}"
            );
            assert!(
                h["last_error"].as_str().unwrap().contains("timed out")
                    || h["last_error"].as_str().unwrap().contains("no answer"),
                "{h}"
            );
            assert_eq!(get("healthy")["status"], "delivered");
            break;
        }
        assert!(Instant::now() < deadline, "not retried: {list:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let channels = api.form(Some(&admin), "notify/channels", &[]).await;
    assert!(!channels.body.contains("SLACKSECRET"), "{channels:?}");
    // The receiver comes back: the same delivery arrives (same id), once.
    down.set_status(200);
    let got = down.wait_for_event("backup.failed", WAIT).unwrap();
    let id = got.headers["x-tablesafe-delivery"].clone();
    let list = deliveries(&api, &admin).await;
    let d = list.iter().find(|d| d["channel"] == "down").unwrap();
    assert_eq!(d["status"], "delivered", "{d}");
    assert_eq!(d["id"].to_string(), id);
    assert_eq!(
        down.received().iter().filter(|r| r.status == 200).count(),
        1
    );
    assert!(down.received().len() >= 3, "tried, failed, tried again");
    let log = server.stop();
    assert!(
        !log.contains("SLACKSECRET"),
        "the Slack URL reached the log"
    );
}

#[tokio::test]
async fn a_policy_without_a_recent_success_is_announced_late_once_per_breach() {
    let hooks = WebhookReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(dir.path(), None).await;
    let api = Api { server: &server };
    add_channel(
        &api,
        &admin,
        webhook("hook", &hooks.url("/"), &["backup.late", "verify.damage"]),
    )
    .await;
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
    );
    let repo = dir.path().join("repo");
    let (_, target, policy) = add_policy(&api, &admin, "shop", &db, &repo, "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let view = |list: Value| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == policy)
            .unwrap()
            .clone()
    };

    // No schedule, no setting: never late. An hourly schedule: late after 90 minutes.
    let p = view(api.form(Some(&admin), "policies/list", &[]).await.json());
    assert_eq!(p["late_after_minutes"], Value::Null);
    assert!(
        api.form(
            Some(&admin),
            "policies/late_alert",
            &[("id", policy.to_string()), ("minutes", "-1".into())]
        )
        .await
        .body
        .contains("between 0")
    );
    let r = api
        .form(
            Some(&admin),
            "policies/late_alert",
            &[("id", policy.to_string()), ("minutes", "1".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let p = view(api.form(Some(&admin), "policies/list", &[]).await.json());
    assert_eq!(p["late_after_minutes"], 1);
    assert_eq!(p["late"], false);

    // Time passes (the policy was created two minutes ago): it is late, announced once.
    let history = dir.path().join("data").join("history.db");
    sqlite(
        &history,
        &format!("UPDATE policies SET created_at = created_at - 120000 WHERE id = {policy}"),
    );
    let late = body(&hooks.wait_for_event("backup.late", WAIT).unwrap());
    assert_eq!(late["details"]["policy"], "shop");
    assert_eq!(late["details"]["expected_within_minutes"], 1);
    assert_eq!(late["link"], "https://backup.example.com/policies");
    assert!(view(api.form(Some(&admin), "policies/list", &[]).await.json())["late"] == true);
    tokio::time::sleep(Duration::from_secs(12)).await; // two scheduler ticks
    let count = |h: &WebhookReceiver| {
        h.received()
            .iter()
            .filter(|r| r.headers["x-tablesafe-event"] == "backup.late")
            .count()
    };
    assert_eq!(count(&hooks), 1);

    // A success ends the breach; going without one again is a new breach.
    api.run_policy(&admin, policy).await;
    assert_eq!(
        view(api.form(Some(&admin), "policies/list", &[]).await.json())["late"],
        false
    );
    sqlite(
        &history,
        // Two minutes pass: everything that happened moves two minutes into the past.
        &format!(
            "UPDATE jobs SET finished_at = finished_at - 120000 WHERE policy_id = {policy}; \
             UPDATE policies SET late_alerted_at = late_alerted_at - 120000 WHERE id = {policy}"
        ),
    );
    let deadline = Instant::now() + WAIT;
    while count(&hooks) < 2 {
        assert!(
            Instant::now() < deadline,
            "the second breach was not announced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Turned off: never late.
    let r = api
        .form(
            Some(&admin),
            "policies/late_alert",
            &[("id", policy.to_string()), ("minutes", "0".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let p = view(api.form(Some(&admin), "policies/list", &[]).await.json());
    assert_eq!(
        (p["late"].clone(), p["late_after_minutes"].clone()),
        (json!(false), Value::Null)
    );

    // Damage found by a verify is its own event, naming the damage.
    for entry in walk(&repo.join("data")) {
        let mut bytes = std::fs::read(&entry).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&entry, bytes).unwrap();
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
    let r = api
        .form(
            Some(&admin),
            "snapshots/verify",
            &[("id", snapshot.to_string())],
        )
        .await;
    let job = r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"));
    assert_eq!(api.wait_job(&admin, job).await[0]["status"], "failed");
    let damage = body(&hooks.wait_for_event("verify.damage", WAIT).unwrap());
    assert_eq!(damage["details"]["target"], target);
    assert!(
        damage["summary"].as_str().unwrap().contains("damage found"),
        "{damage}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// A continuous capture that stops working is announced (once, not every retry) and
/// shown on its policy.
#[tokio::test]
async fn a_failing_continuous_capture_is_announced() {
    let hooks = WebhookReceiver::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, admin) = start(dir.path(), None).await;
    let api = Api { server: &server };
    add_channel(
        &api,
        &admin,
        webhook("hook", &hooks.url("/"), &["capture.failed"]),
    )
    .await;
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'a');",
    );
    let (_, _, policy) =
        add_policy(&api, &admin, "shop", &db, &dir.path().join("repo"), "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let r = api
        .form(
            Some(&admin),
            "policies/continuous",
            &[("id", policy.to_string()), ("secs", "1".into())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let view = || async {
        api.form(Some(&admin), "policies/list", &[])
            .await
            .json()
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == policy)
            .unwrap()
            .clone()
    };
    let deadline = Instant::now() + WAIT;
    while view().await["restorable_to"].is_null() {
        assert!(Instant::now() < deadline, "the capture never ran");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The database goes away (a disk unmounted, a file moved).
    std::fs::rename(&db, dir.path().join("moved.db")).unwrap();
    let event = body(&hooks.wait_for_event("capture.failed", WAIT).unwrap());
    assert_eq!(event["details"]["policy"], "shop");
    assert!(
        event["summary"]
            .as_str()
            .unwrap()
            .contains("does not exist"),
        "{event}"
    );
    let p = view().await;
    assert!(
        p["capture_error"]
            .as_str()
            .is_some_and(|e| e.contains("does not exist")),
        "{p}"
    );
    assert_eq!(
        hooks
            .received()
            .iter()
            .filter(|r| r.headers["x-tablesafe-event"] == "capture.failed")
            .count(),
        1
    );
}
