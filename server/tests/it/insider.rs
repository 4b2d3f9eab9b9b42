//! What a logged-in insider might try, played as the role that would try it.

use crate::harness::{self, ADMIN_PASSWORD, Api, Options, Server, audit_verify, cookie};

/// The operator "olga", added by `admin`, logged in: the insider most attacks here are
/// played by.
async fn olga(api: &Api<'_>, admin: &str) -> String {
    let r = api
        .form(
            Some(admin),
            "users/create",
            &[
                ("username", "olga".into()),
                ("role", "operator".into()),
                ("password", "a long enough password".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    cookie(api.server, "olga", "a long enough password").await
}

/// A SQLite "source" inside the console's own data directory would let whoever may
/// restore it read the history database (sealed secrets, the audit log) and the
/// server key; as a destination, rewrite them. Refused for every role, however the
/// path is written (a symlink, `..`, a file not there yet).
#[tokio::test]
async fn no_sqlite_source_reaches_into_the_console_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let operator = olga(&api, &admin).await;
    let link = dir.path().join("reports");
    std::os::unix::fs::symlink(&data, &link).unwrap();
    let attempts = [
        format!("sqlite://{}/history.db", data.display()),
        format!("sqlite://{}/history.db", link.display()),
        format!(
            "sqlite://{}/elsewhere/../data/server.key",
            dir.path().display()
        ),
        format!("sqlite://{}/restored-here.db", data.display()),
    ];
    for (who, session) in [("admin", &admin), ("operator", &operator)] {
        for (i, url) in attempts.iter().enumerate() {
            let r = api
                .form(
                    Some(session),
                    "sources/add",
                    &[("name", format!("{who}-{i}")), ("url", url.clone())],
                )
                .await;
            assert!(
                !r.ok() && r.body.contains("inside tablesafe's own data"),
                "{who} added {url}: {r:?}"
            );
        }
    }
    // A database file anywhere else is fine.
    let r = api
        .form(
            Some(&operator),
            "sources/add",
            &[
                ("name", "app".into()),
                ("url", format!("sqlite://{}/app.db", dir.path().display())),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
}

/// Whether `session` is still a logged-in console session.
async fn signed_in(api: &Api<'_>, session: &str) -> bool {
    let r = api.form(Some(session), "current_user", &[]).await;
    r.ok() && !r.json().is_null()
}

/// A stolen session cookie (a shared screen, a copied browser profile) ends when its
/// owner logs out, changes their password, or when an admin signs them out, disables
/// and re-enables them, or resets their password from the command line, which is
/// audited. Played on both history databases.
#[tokio::test]
async fn a_copied_session_cookie_ends_when_its_user_or_an_admin_says_so() {
    let pg = testkit::Postgres::start().unwrap();
    let pg_url = pg.create_database("history").unwrap();
    for database_url in [None, Some(pg_url.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start(Options {
            data_dir: &data,
            database_url,
            admin_password: Some(ADMIN_PASSWORD),
        });
        let api = Api { server: &server };
        let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
        let pw = "a long enough password";
        let r = api
            .form(
                Some(&admin),
                "users/create",
                &[
                    ("username", "olga".into()),
                    ("role", "operator".into()),
                    ("password", pw.into()),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        let olga = r.json().as_i64().unwrap();

        // Logout ends that session, a copy of its cookie included; Olga's other
        // browser stays logged in until she signs out everywhere herself.
        let mine = cookie(&server, "olga", pw).await;
        let copy = mine.clone();
        let other_browser = cookie(&server, "olga", pw).await;
        assert!(signed_in(&api, &copy).await);
        assert!(api.form(Some(&mine), "logout", &[]).await.status < 500);
        assert!(
            !signed_in(&api, &copy).await,
            "a copied cookie outlived logout"
        );
        assert!(
            signed_in(&api, &other_browser).await,
            "logout ended another browser's session"
        );
        let mine = cookie(&server, "olga", pw).await;
        let r = api
            .form(Some(&mine), "users/sign_out", &[("id", olga.to_string())])
            .await;
        assert!(r.ok(), "{r:?}");
        assert!(!signed_in(&api, &other_browser).await && !signed_in(&api, &mine).await);

        // A password change keeps the changer logged in (a fresh cookie), not the copy.
        let mine = cookie(&server, "olga", pw).await;
        let copy = cookie(&server, "olga", pw).await;
        let new_pw = "another long password";
        let resp = harness::client()
            .post(server.url("/api/users/change_password"))
            .header("Origin", &server.base)
            .header("Cookie", &mine)
            .form(&[("current", pw), ("new", new_pw)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let fresh = harness::session_cookie(&resp).expect("a fresh cookie for the changer");
        assert!(signed_in(&api, &fresh).await);
        assert!(!signed_in(&api, &mine).await);
        assert!(
            !signed_in(&api, &copy).await,
            "a copied cookie outlived a password change"
        );

        // An admin's "sign out everywhere"; an operator may not do it to the admin. It
        // also revokes the API token the session minted (a stolen cookie's way to stay).
        let r = api
            .form(Some(&fresh), "users/sign_out", &[("id", "1".into())])
            .await;
        assert!(r.forbidden(), "{r:?}");
        assert!(signed_in(&api, &admin).await);
        let minted = api
            .form(
                Some(&fresh),
                "tokens/create",
                &[
                    ("name", "kept".into()),
                    ("role", String::new()),
                    ("days", "30".into()),
                ],
            )
            .await;
        let token = minted
            .json()
            .as_str()
            .unwrap_or_else(|| panic!("{minted:?}"))
            .to_string();
        let token_works = async |token: &str| {
            let r = harness::client()
                .post(server.url("/api/current_user"))
                .header("Authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            r.status() == 200 && !r.text().await.unwrap().starts_with("null")
        };
        assert!(token_works(&token).await);
        let r = api
            .form(Some(&admin), "users/sign_out", &[("id", olga.to_string())])
            .await;
        assert!(r.ok(), "{r:?}");
        assert!(!signed_in(&api, &fresh).await, "sign out everywhere");
        assert!(
            !token_works(&token).await,
            "a minted token outlived sign out everywhere"
        );

        // Disabling and enabling again does not bring old cookies back.
        let copy = cookie(&server, "olga", new_pw).await;
        for disabled in ["true", "false"] {
            let r = api
                .form(
                    Some(&admin),
                    "users/set_disabled",
                    &[("id", olga.to_string()), ("disabled", disabled.into())],
                )
                .await;
            assert!(r.ok(), "{r:?}");
        }
        assert!(
            !signed_in(&api, &copy).await,
            "a cookie survived disable + enable"
        );

        // reset-password on the server's command line: sessions end, and it is audited.
        let copy = cookie(&server, "olga", new_pw).await;
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"));
        cmd.args(["reset-password", "--user", "olga", "--data-dir"])
            .arg(&data)
            .env_remove("TABLESAFE_DATABASE_URL")
            .env("TABLESAFE_NEW_PASSWORD", "a third long password");
        if let Some(url) = database_url {
            cmd.env("TABLESAFE_DATABASE_URL", url);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !signed_in(&api, &copy).await,
            "a cookie survived reset-password"
        );
        assert!(
            signed_in(
                &api,
                &cookie(&server, "olga", "a third long password").await
            )
            .await
        );
        let audit = api
            .form(
                Some(&admin),
                "audit/list",
                &[
                    ("user", String::new()),
                    ("action", "user.".into()),
                    ("outcome", String::new()),
                ],
            )
            .await;
        let actions: Vec<String> = audit
            .json()
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} {}",
                    e["action"].as_str().unwrap(),
                    e["target"].as_str().unwrap()
                )
            })
            .collect();
        for wanted in [
            "user.reset_password user olga".to_string(),
            format!("user.sign_out user #{olga}"),
            "user.change_password user olga".to_string(),
        ] {
            assert!(actions.contains(&wanted), "{wanted} not in {actions:?}");
        }
    }
}

/// Whoever owns the history database deletes the newest audit entries (after
/// getting around the append-only triggers): the chain alone still verifies, but the
/// signed head written beside the server key and into the target does not match, so
/// `audit verify` and the console's check say so, and no new head papers over it.
/// Played on both history databases.
#[tokio::test]
async fn deleting_the_newest_audit_entries_is_found() {
    let pg = testkit::Postgres::start().unwrap();
    let pg_url = pg.create_database("history").unwrap();
    for database_url in [None, Some(pg_url.as_str())] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let server = Server::start_with_env(
            Options {
                data_dir: &data,
                database_url,
                admin_password: Some(ADMIN_PASSWORD),
            },
            &[("TABLESAFE_AUDIT_ANCHOR_SECS", "1")],
        );
        let api = Api { server: &server };
        let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
        let app_db = dir.path().join("app.db");
        harness::sqlite(&app_db, "CREATE TABLE t (id INTEGER PRIMARY KEY);");
        let repo = dir.path().join("repo");
        harness::add_policy(&api, &admin, "p", &app_db, &repo, "", "UTC").await;
        for _ in 0..3 {
            cookie(&server, "admin", ADMIN_PASSWORD).await;
        }
        // Wait until a head covering all of that is written (every second).
        let entries = |text: &str| -> i64 {
            serde_json::from_str::<serde_json::Value>(text).unwrap_or_default()["entries"]
                .as_i64()
                .unwrap_or(0)
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        // The head goes to the data directory, then to each target: both are waited for.
        let in_repo = || {
            std::fs::read_dir(repo.join("audit-heads"))
                .map(|d| d.count())
                .unwrap_or(0)
        };
        loop {
            let head = std::fs::read_to_string(data.join("audit-head.json")).unwrap_or_default();
            if entries(&head) >= 6 && in_repo() >= 1 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no audit head written here and in the target's storage: {}",
                server.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Junk planted among the heads (by whoever can write the bucket) is noted, and
        // neither fails the check nor stops the anchoring.
        std::fs::write(
            repo.join("audit-heads/head-999999999999999-000000000001.json"),
            b"{}",
        )
        .unwrap();
        let (ok, said) = audit_verify(&data, database_url);
        assert!(ok && said.contains("ignored"), "{said}");
        let check = api.form(Some(&admin), "audit/verify", &[]).await.json();
        assert_eq!(check["holds"], true, "{check}");

        // The triggers refuse the plain attempt; the owner gets around them.
        let newest = "DELETE FROM audit_log WHERE id > (SELECT MAX(id) - 3 FROM audit_log)";
        match database_url {
            None => {
                let refused = std::process::Command::new("python3")
                    .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
                    .arg(data.join("history.db"))
                    .arg(newest)
                    .output()
                    .unwrap();
                assert!(String::from_utf8_lossy(&refused.stderr).contains("append-only"));
                harness::sqlite(
                    &data.join("history.db"),
                    &format!("DROP TRIGGER audit_log_no_delete; {newest};"),
                );
            }
            Some(_) => {
                let refused = pg.psql("history", newest).unwrap_err();
                assert!(
                    format!("{refused:#}").contains("append-only"),
                    "{refused:#}"
                );
                pg.psql(
                    "history",
                    &format!("ALTER TABLE audit_log DISABLE TRIGGER USER; {newest}; ALTER TABLE audit_log ENABLE TRIGGER USER;"),
                )
                .unwrap();
            }
        }
        let (ok, said) = audit_verify(&data, database_url);
        assert!(!ok, "audit verify missed deleted entries: {said}");
        assert!(
            said.contains("deleted") && said.contains("target t-p"),
            "{said}"
        );
        let check = api.form(Some(&admin), "audit/verify", &[]).await.json();
        assert_eq!(check["holds"], false, "{check}");
        assert!(
            check["summary"].as_str().unwrap().contains("deleted"),
            "{check}"
        );
        // The server keeps refusing to write a head over it (and says so in its log).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !server.log().contains("no new head written") {
            assert!(std::time::Instant::now() < deadline, "{}", server.log());
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let (ok, _) = audit_verify(&data, database_url);
        assert!(!ok, "a later head covered the deletion");
    }
}

/// With `--sqlite-dirs`, SQLite sources outside those directories are refused for
/// every role (a symlink out counts as out); an operator's *Test connection* does not
/// tell a missing file from one that is not a database (an admin's does); and a
/// restore from the console never creates a database file on the server.
#[tokio::test]
async fn sqlite_paths_are_confined_probes_learn_nothing_and_restores_create_no_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dbs = dir.path().join("databases");
    std::fs::create_dir(&dbs).unwrap();
    let server = Server::start_with_env(
        Options {
            data_dir: &data,
            database_url: None,
            admin_password: Some(ADMIN_PASSWORD),
        },
        &[("TABLESAFE_SQLITE_DIRS", dbs.to_str().unwrap())],
    );
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let pw = "a long enough password";
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "olga".into()),
                ("role", "operator".into()),
                ("password", pw.into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let operator = cookie(&server, "olga", pw).await;
    std::os::unix::fs::symlink(dir.path(), dbs.join("up")).unwrap();
    for (who, session) in [("admin", &admin), ("operator", &operator)] {
        for (i, path) in [
            dir.path().join("outside.db"),
            dbs.join("up/outside.db"),
            dbs.join("../outside.db"),
        ]
        .iter()
        .enumerate()
        {
            let r = api
                .form(
                    Some(session),
                    "sources/add",
                    &[
                        ("name", format!("{who}-{i}")),
                        ("url", format!("sqlite://{}", path.display())),
                    ],
                )
                .await;
            assert!(
                !r.ok() && r.body.contains("outside the directories"),
                "{who} added {}: {r:?}",
                path.display()
            );
        }
    }

    // Probing: a missing file and a file that is not a database answer alike.
    std::fs::write(dbs.join("notes.txt"), "not a database, but it exists").unwrap();
    let mut answers = Vec::new();
    let mut probes = Vec::new();
    for name in ["missing.db", "notes.txt"] {
        let r = api
            .form(
                Some(&operator),
                "sources/add",
                &[
                    ("name", name.into()),
                    ("url", format!("sqlite://{}", dbs.join(name).display())),
                ],
            )
            .await;
        assert!(r.ok(), "{r:?}");
        let id = r.json().as_i64().unwrap().to_string();
        probes.push((name, r.json().as_i64().unwrap()));
        let as_operator = api
            .form(Some(&operator), "sources/test", &[("id", id.clone())])
            .await;
        let as_admin = api.form(Some(&admin), "sources/test", &[("id", id)]).await;
        assert!(!as_operator.ok() && !as_admin.ok());
        answers.push((
            as_operator.body.replace(name, "NAME"),
            as_admin.body.replace(name, "NAME"),
        ));
    }
    assert_eq!(
        answers[0].0, answers[1].0,
        "an operator told a missing file from another"
    );
    assert_ne!(answers[0].1, answers[1].1, "an admin sees why");

    // A restore into a destination file that does not exist is refused, and no file
    // appears.
    let app_db = dbs.join("app.db");
    harness::sqlite(
        &app_db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY); INSERT INTO t VALUES (1);",
    );
    let (_, _, policy) =
        harness::add_policy(&api, &admin, "p", &app_db, &dir.path().join("repo"), "", "").await;
    let policy = policy.json().as_i64().unwrap();
    let job = api.run_policy(&admin, policy).await;
    assert_eq!(job[0]["status"], "succeeded", "{job}");
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            serde_json::json!({"policy_id": 0, "source_id": 0, "before": null}),
        )
        .await;
    let snapshot = snaps.json()[0]["id"].as_i64().unwrap();
    let missing = dbs.join("staging.db");
    let r = api
        .form(
            Some(&admin),
            "sources/add",
            &[
                ("name", "staging".into()),
                ("url", format!("sqlite://{}", missing.display())),
            ],
        )
        .await;
    let staging = r.json().as_i64().unwrap();
    let req = serde_json::json!({"req": {"snapshot": snapshot, "dest_source_id": staging, "tables": ["t"],
        "columns": {}, "rename": {}, "mode": "create", "confirm": ""}});
    for endpoint in ["restore/preview", "restore/start"] {
        let r = api.json(Some(&operator), endpoint, req.clone()).await;
        assert!(
            !r.ok() && r.body.contains("does not create files"),
            "{endpoint}: {r:?}"
        );
    }
    let r = api.json(Some(&admin), "restore/preview", req.clone()).await;
    assert!(
        r.body.contains("does not exist"),
        "an admin is told why: {r:?}"
    );
    assert!(!missing.exists(), "a restore created a file");
    // Nor does a restore preview tell an operator which files exist.
    let mut previews = Vec::new();
    for (name, id) in &probes {
        let mut probe = req.clone();
        probe["req"]["dest_source_id"] = (*id).into();
        let r = api.json(Some(&operator), "restore/preview", probe).await;
        assert!(!r.ok());
        previews.push(r.body.replace(name, "NAME"));
    }
    assert_eq!(
        previews[0], previews[1],
        "a preview told a missing file from another"
    );
    // Once an admin made it, the same restore works.
    std::fs::write(&missing, b"").unwrap();
    let r = api.json(Some(&operator), "restore/start", req).await;
    assert!(r.ok(), "{r:?}");
    let done = api.wait_job(&operator, r.json().as_i64().unwrap()).await;
    assert_eq!(done[0]["status"], "succeeded", "{done}");
}

/// A login from behind the console's reverse proxy (`X-Forwarded-For` from a trusted
/// peer) with these credentials.
async fn login_from(
    server: &Server,
    client: &str,
    user: &str,
    password: &str,
) -> reqwest::Response {
    harness::client()
        .post(server.url("/api/login"))
        .header("Origin", &server.base)
        .header("X-Forwarded-For", client)
        .form(&[("username", user), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// Someone guessing a colleague's password is slowed down, but the colleague, from
/// their own address, logs in at once (no lock-out); and hundreds of guesses add a
/// couple of audit entries, not hundreds (one for the burst's first failure, one
/// summary when it ends).
#[tokio::test]
async fn guessing_a_password_delays_the_guesser_not_the_user_and_cannot_flood_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        Options {
            data_dir: &dir.path().join("data"),
            database_url: None,
            admin_password: Some(ADMIN_PASSWORD),
        },
        &[
            ("TABLESAFE_TRUSTED_PROXIES", "127.0.0.1"),
            ("TABLESAFE_AUDIT_BURST_SECS", "1"),
        ],
    );
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let pw = "ann's long password";
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "ann".into()),
                ("role", "operator".into()),
                ("password", pw.into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let attacker = "203.0.113.66";
    let mut throttled = 0;
    for i in 0..200 {
        let r = login_from(&server, attacker, "ann", &format!("guess {i}")).await;
        assert_ne!(r.status(), 200);
        if r.text().await.unwrap().contains("Too many failed logins") {
            throttled += 1;
        }
    }
    assert!(
        throttled >= 190,
        "the guesser was not slowed down: {throttled}"
    );
    // Even the right password waits, from the guesser's address…
    let r = login_from(&server, attacker, "ann", pw).await;
    assert!(harness::session_cookie(&r).is_none());
    // …while Ann, at her desk, gets in at once.
    let r = login_from(&server, "198.51.100.7", "ann", pw).await;
    assert!(harness::session_cookie(&r).is_some(), "Ann was locked out");

    // The audit log: Ann's login under her real address; the guessing as one entry
    // plus one summary.
    let entries = |user: &'static str| {
        let api = &api;
        let admin = &admin;
        async move {
            api.form(
                Some(admin),
                "audit/list",
                &[
                    ("user", user.into()),
                    ("action", "login".into()),
                    ("outcome", String::new()),
                ],
            )
            .await
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let from_attacker = loop {
        let list: Vec<serde_json::Value> = entries("ann")
            .await
            .into_iter()
            .filter(|e| e["address"] == attacker)
            .collect();
        if list.iter().any(|e| {
            e["detail"]
                .as_str()
                .unwrap_or("")
                .contains("more like this")
        }) {
            break list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no burst summary: {list:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(from_attacker.len(), 2, "{from_attacker:#?}");
    let summary = from_attacker[0]["detail"].as_str().unwrap();
    assert!(
        summary.starts_with("200 more like this from 203.0.113.66"),
        "{summary}"
    );
    let ann = entries("ann").await;
    assert!(
        ann.iter()
            .any(|e| e["outcome"] == "ok" && e["address"] == "198.51.100.7"),
        "{ann:#?}"
    );
}

/// An operator edits a notification channel to point at a host of their choosing,
/// hoping the stored secret goes along: a webhook's signing secret and an SMTP
/// password stay with the address they were entered for; and a password never goes
/// out without TLS except to a relay on this machine.
#[tokio::test]
async fn a_stored_secret_does_not_follow_a_channel_to_a_new_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let operator = olga(&api, &admin).await;
    let save = async |input: serde_json::Value| {
        api.json(
            Some(&operator),
            "notify/save",
            serde_json::json!({ "input": input }),
        )
        .await
    };
    let hook = serde_json::json!({"id": null, "name": "hook", "kind": "webhook",
        "url": "http://127.0.0.1:9/hook", "secret": "a signing secret of some length",
        "events": ["backup.failed"], "enabled": true});
    let r = save(hook.clone()).await;
    assert!(r.ok(), "{r:?}");
    let mut moved = hook.clone();
    moved["id"] = r.json();
    moved["secret"] = "".into();
    moved["url"] = "http://127.0.0.1:10/collector".into();
    let r = save(moved.clone()).await;
    assert!(
        !r.ok() && r.body.contains("enter the signing secret again"),
        "{r:?}"
    );
    moved["url"] = "".into();
    assert!(
        save(moved).await.ok(),
        "an edit that keeps the address keeps the secret"
    );

    let mail = serde_json::json!({"id": null, "name": "mail", "kind": "email",
        "host": "127.0.0.1", "port": "2525", "security": "none", "username": "relay",
        "password": "smtp password", "from": "tablesafe@example.com", "to": "ops@example.com",
        "events": ["backup.failed"], "enabled": true});
    let r = save(mail.clone()).await;
    assert!(r.ok(), "a local relay without TLS: {r:?}");
    let mut moved = mail.clone();
    moved["id"] = r.json();
    moved["password"] = "".into();
    moved["host"] = "203.0.113.25".into();
    let r = save(moved.clone()).await;
    assert!(!r.ok() && r.body.contains("in the clear"), "{r:?}");
    moved["security"] = "tls".into();
    moved["port"] = "465".into();
    let r = save(moved.clone()).await;
    assert!(
        !r.ok() && r.body.contains("enter the password again"),
        "{r:?}"
    );
    moved["password"] = "the new server's password".into();
    assert!(save(moved).await.ok());
    let mut plain = mail.clone();
    plain["name"] = "plain".into();
    plain["host"] = "203.0.113.25".into();
    let r = save(plain).await;
    assert!(!r.ok() && r.body.contains("in the clear"), "{r:?}");
}

/// The two-person rule belongs to the database: an operator who adds the production
/// database again under another name (a symlink to the same file) gets its rule with
/// it; where a rule holds, only an admin may change how the data is kept (policies,
/// copies, retention, drills); and retrying a restore re-checks today's rule.
#[tokio::test]
async fn a_second_name_for_a_guarded_database_does_not_escape_its_two_person_rule() {
    let pg = testkit::Postgres::start().unwrap();
    let pg_url = pg.create_database("history").unwrap();
    for database_url in [None, Some(pg_url.as_str())] {
        second_name_attack(database_url, &pg).await;
    }
}

async fn second_name_attack(database_url: Option<&str>, pg: &testkit::Postgres) {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(Options {
        data_dir: &data,
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let operator = olga(&api, &admin).await;
    let prod_db = dir.path().join("prod.db");
    harness::sqlite(
        &prod_db,
        "CREATE TABLE t (id INTEGER PRIMARY KEY, secret TEXT); INSERT INTO t VALUES (1, 'payroll');",
    );
    let (prod, target, policy) = harness::add_policy(
        &api,
        &admin,
        "prod",
        &prod_db,
        &dir.path().join("repo"),
        "",
        "",
    )
    .await;
    let policy = policy.json().as_i64().unwrap();
    api.run_policy(&admin, policy).await;
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", prod.to_string()),
                ("approvals_required", "2".into()),
                ("request_ttl_minutes", "60".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");

    // The same file again, through a symlink, by the operator.
    let alias = dir.path().join("reporting.db");
    std::os::unix::fs::symlink(&prod_db, &alias).unwrap();
    let r = api
        .form(
            Some(&operator),
            "sources/add",
            &[
                ("name", "reporting".into()),
                ("url", format!("sqlite://{}", alias.display())),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let reporting = r.json().as_i64().unwrap();
    let guarded = |r: &harness::Reply| {
        r.status == 403
            && r.body
                .contains("only an admin may change how it is backed up")
    };
    let r = api
        .form(
            Some(&operator),
            "policies/create",
            &[
                ("name", "exfil".into()),
                ("source_id", reporting.to_string()),
                ("target_id", target.to_string()),
                ("include", String::new()),
                ("exclude", String::new()),
                ("columns", String::new()),
                ("schedule", String::new()),
                ("timezone", "UTC".into()),
                ("enabled", "on".into()),
            ],
        )
        .await;
    assert!(guarded(&r), "a policy on the alias: {r:?}");
    // The original's policy cannot be bent either.
    let r = api
        .json(
            Some(&operator),
            "policies/copies",
            json!({"id": policy, "targets": [target + 100]}),
        )
        .await;
    assert!(guarded(&r), "copies: {r:?}");
    let r = api
        .form(
            Some(&operator),
            "policies/retention_save",
            &[
                ("id", policy.to_string()),
                ("last", "1".into()),
                ("hourly", "0".into()),
                ("daily", "0".into()),
                ("weekly", "0".into()),
                ("monthly", "0".into()),
                ("yearly", "0".into()),
                ("floor", "0".into()),
            ],
        )
        .await;
    assert!(guarded(&r), "retention: {r:?}");
    let r = api
        .form(
            Some(&operator),
            "drills/save",
            &[
                ("policy_id", policy.to_string()),
                ("schedule", String::new()),
                ("timezone", "UTC".into()),
                ("pick", "latest".into()),
                ("scratch_source_id", String::new()),
                (
                    "assertions",
                    "SELECT CAST((SELECT secret FROM t) AS INTEGER) > 0".into(),
                ),
            ],
        )
        .await;
    assert!(guarded(&r), "drill: {r:?}");

    // An admin's backup of the alias: its snapshots carry the database's rule.
    let r = api
        .form(
            Some(&admin),
            "policies/create",
            &[
                ("name", "reporting".into()),
                ("source_id", reporting.to_string()),
                ("target_id", target.to_string()),
                ("include", String::new()),
                ("exclude", String::new()),
                ("columns", String::new()),
                ("schedule", String::new()),
                ("timezone", "UTC".into()),
                ("enabled", "on".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    api.run_policy(&admin, r.json().as_i64().unwrap()).await;
    let snaps = api
        .json(
            Some(&admin),
            "snapshots/list",
            json!({"policy_id": 0, "source_id": reporting, "before": null}),
        )
        .await;
    let snapshot = snaps.json()[0]["id"].as_i64().unwrap();
    let r = api
        .json(
            Some(&operator),
            "snapshots/browse",
            json!({"id": snapshot, "table": "t", "filters": [], "key": [], "offset": 0}),
        )
        .await;
    assert!(
        !r.ok() && r.body.contains("cannot be browsed"),
        "browse: {r:?}"
    );
    let req = json!({"req": {"snapshot": snapshot, "dest_source_id": reporting, "tables": ["t"],
        "columns": {}, "rename": {"t": "t_copy"}, "mode": "create", "confirm": ""}});
    let r = api.json(Some(&operator), "restore/start", req).await;
    assert!(
        !r.ok() && r.body.contains("needs 2 approval"),
        "restore: {r:?}"
    );

    // A restore that failed before the rule: retrying it is a new restore now.
    let failed_job = format!(
        "INSERT INTO jobs (kind, status, source_id, params, title, created_by, created_at, finished_at, error) \
         VALUES ('restore', 'failed', {reporting}, '{{\"kind\":\"restore\",\"snapshot\":{snapshot},\"dest_source_id\":{reporting},\"tables\":[\"t\"],\"columns\":{{}},\"rename\":{{\"t\":\"t_copy\"}},\"mode\":\"create\"}}', 'Restore', 1, 1, 2, 'disk full');"
    );
    match database_url {
        None => harness::sqlite(&data.join("history.db"), &failed_job),
        Some(_) => {
            pg.psql("history", &failed_job).unwrap();
        }
    }
    let failed = api.form(Some(&admin), "jobs/list", &[]).await;
    let failed_id = failed.json().as_array().and_then(|l| {
        l.iter()
            .find(|j| j["status"] == "failed")
            .map(|j| j["id"].as_i64().unwrap())
    });
    let failed_id = failed_id.unwrap_or_else(|| panic!("{failed:?}"));
    let r = api
        .form(
            Some(&operator),
            "jobs/retry",
            &[("id", failed_id.to_string())],
        )
        .await;
    assert!(
        !r.ok() && r.body.contains("needs 2 approval"),
        "retry: {r:?}"
    );
    // And each refusal is on the record, as a denial.
    let audit = api
        .form(
            Some(&admin),
            "audit/list",
            &[
                ("user", "olga".into()),
                ("action", "policy.".into()),
                ("outcome", "denied".into()),
            ],
        )
        .await;
    let denied: Vec<String> = audit
        .json()
        .as_array()
        .map(|l| {
            l.iter()
                .map(|e| e["action"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    for action in ["policy.create", "policy.copies", "policy.retention.save"] {
        assert!(
            denied.iter().any(|a| a == action),
            "{action} not audited as denied: {denied:?}"
        );
    }
}

/// An HTTP receiver on loopback that answers every request with a 500 whose body is
/// something only the server could have read (an internal service's answer).
async fn leaky_receiver() -> (u16, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let mut buf = [0u8; 8192];
            let _ = conn.read(&mut buf).await;
            let body = "INTERNAL-ONLY aws_secret_access_key=wJalrXUtnFEMI";
            let reply = format!(
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (port, task)
}

/// An operator aims the server at what only the server can reach — a cloud metadata
/// address, a service on loopback or the private network — to read the answer back
/// through an error: metadata addresses are refused for everyone, loopback and private
/// ones for all but admins (or where an admin opened them), and an error never repeats
/// what a receiver answered.
#[tokio::test]
async fn the_server_is_not_an_open_proxy_into_its_network() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        Options {
            data_dir: &dir.path().join("data"),
            database_url: None,
            admin_password: Some(ADMIN_PASSWORD),
        },
        &[("TABLESAFE_OUTBOUND_ALLOW", "")],
    );
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let operator = olga(&api, &admin).await;
    let (port, _receiver) = leaky_receiver().await;
    let hook = |name: &str, url: String| {
        json!({"input": {"id": null, "name": name, "kind": "webhook", "url": url,
            "secret": "a signing secret of some length", "events": ["backup.failed"], "enabled": true}})
    };
    let metadata = "http://169.254.169.254/latest/meta-data/iam/security-credentials/";
    for who in [&admin, &operator] {
        let r = api
            .json(Some(who), "notify/save", hook("meta", metadata.into()))
            .await;
        assert!(!r.ok() && r.body.contains("metadata"), "{r:?}");
        let r = api
            .form(
                Some(who),
                "sources/add",
                &[
                    ("name", "meta".into()),
                    ("url", "postgres://u@169.254.169.254/db".into()),
                ],
            )
            .await;
        assert!(!r.ok() && r.body.contains("metadata"), "{r:?}");
        let r = api
            .form(
                Some(who),
                "targets/add",
                &[
                    ("name", "meta".into()),
                    (
                        "location",
                        "s3://bucket/p?endpoint=http://169.254.169.254".into(),
                    ),
                    ("password", "repository password".into()),
                ],
            )
            .await;
        assert!(!r.ok() && r.body.contains("metadata"), "{r:?}");
    }
    let local = format!("http://127.0.0.1:{port}/admin");
    let r = api
        .json(Some(&operator), "notify/save", hook("local", local.clone()))
        .await;
    assert!(!r.ok() && r.body.contains("only an admin"), "{r:?}");
    for (name, url) in [
        ("db", "postgres://u@10.20.30.40/db"),
        ("db6", "mysql://u@[::1]:3306/db"),
    ] {
        let r = api
            .form(
                Some(&operator),
                "sources/add",
                &[("name", name.into()), ("url", url.into())],
            )
            .await;
        assert!(!r.ok() && r.body.contains("only an admin"), "{url}: {r:?}");
    }
    let r = api
        .form(
            Some(&operator),
            "targets/add",
            &[
                ("name", "nas".into()),
                ("location", "sftp://backup@192.168.1.20/srv/backups".into()),
                ("password", "repository password".into()),
            ],
        )
        .await;
    assert!(!r.ok() && r.body.contains("only an admin"), "{r:?}");

    // An admin may point a webhook at a local service; what it answers stays out of
    // the error the console shows.
    let r = api
        .json(Some(&admin), "notify/save", hook("local", local))
        .await;
    assert!(r.ok(), "{r:?}");
    let r = api
        .form(
            Some(&admin),
            "notify/test",
            &[("id", r.json().as_i64().unwrap().to_string())],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(r.json()["delivered"], false, "{r:?}");
    assert!(r.body.contains("500"), "{r:?}");
    assert!(
        !r.body.contains("INTERNAL-ONLY") && !r.body.contains("wJalr"),
        "{r:?}"
    );
}

/// A target without keys of its own would borrow the server's AWS keys or SSH
/// identity, which reach whatever they reach: only an admin may allow that, and a key
/// file on the server named in the location counts as borrowing.
#[tokio::test]
async fn only_an_admin_lets_a_target_borrow_the_server_s_identity() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let operator = olga(&api, &admin).await;
    let key_file = dir.path().join("id_server");
    std::fs::write(&key_file, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
    let add = |name: &str, location: String, identity: bool| {
        let mut args = vec![
            ("name", name.to_string()),
            ("location", location),
            ("password", "repository password".to_string()),
        ];
        if identity {
            args.push(("server_identity", "on".to_string()));
        }
        args
    };
    let r = api
        .form(
            Some(&operator),
            "targets/add",
            &add(
                "s3",
                "s3://bucket/p?endpoint=http://127.0.0.1:1".into(),
                true,
            ),
        )
        .await;
    assert!(r.status == 403 && r.body.contains("Only an admin"), "{r:?}");
    let with_key_file = format!(
        "sftp://backup@127.0.0.1:1/srv/repo?key={}",
        key_file.display()
    );
    for who in [&operator, &admin] {
        let r = api
            .form(
                Some(who),
                "targets/add",
                &add("sftp", with_key_file.clone(), false),
            )
            .await;
        assert!(
            !r.ok() && r.body.contains("names a key file on the tablesafe server"),
            "{r:?}"
        );
        let r = api
            .form(
                Some(who),
                "targets/add",
                &add("sftp", "sftp://backup@127.0.0.1:1/srv/repo".into(), false),
            )
            .await;
        assert!(
            !r.ok() && r.body.contains("has no SSH key of its own"),
            "{r:?}"
        );
    }
}
