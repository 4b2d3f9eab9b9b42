//! Issue 26 (points 8 and 10), the server's side: how many restore requests wait for
//! each user (the navigation's badge) counts only those they may decide and have not
//! approved, and tells nothing to who may decide none; Approve is offered once per
//! person; a repository password typed twice must match.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, add_policy, cookie, sqlite};
use serde_json::json;

const PW: &str = "a long enough password";

async fn pending(api: &Api<'_>, who: &str) -> i64 {
    let r = api.form(Some(who), "requests/pending_for_me", &[]).await;
    assert!(r.ok(), "{r:?}");
    r.json()
        .as_i64()
        .unwrap_or_else(|| panic!("not a count: {r:?}"))
}

#[tokio::test]
async fn waiting_requests_are_counted_per_user_and_approve_is_offered_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let mut ids = std::collections::BTreeMap::new();
    for (name, role) in [
        ("operator", "operator"),
        ("rita", "requester"),
        ("reed", "requester"),
        ("nina", "requester"),
        ("auditor", "auditor"),
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
        ids.insert(name, r.json().as_i64().unwrap());
    }
    let db = dir.path().join("shop.db");
    sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
    );
    let (source, _, policy) =
        add_policy(&api, &admin, "shop", &db, &dir.path().join("repo"), "", "").await;
    api.run_policy(&admin, policy.json().as_i64().unwrap())
        .await;
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
    let flag = |user: i64, endpoint: &'static str, flag: &'static str| {
        let (api, admin) = (&api, &admin);
        async move {
            let r = api
                .form(
                    Some(admin),
                    endpoint,
                    &[
                        ("user_id", user.to_string()),
                        ("source_id", source.to_string()),
                        (flag, "true".into()),
                    ],
                )
                .await;
            assert!(r.ok(), "{r:?}");
        }
    };
    // Rita may restore from the shop and Reed may approve its restores into new tables;
    // Nina may restore from it too, but approve nothing.
    flag(ids["rita"], "users/grant", "granted").await;
    flag(ids["nina"], "users/grant", "granted").await;
    flag(ids["reed"], "users/approver", "on").await;
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
    let (operator, rita, reed, nina, auditor) = (
        cookie(&server, "operator", PW).await,
        cookie(&server, "rita", PW).await,
        cookie(&server, "reed", PW).await,
        cookie(&server, "nina", PW).await,
        cookie(&server, "auditor", PW).await,
    );
    for who in [&admin, &operator, &rita, &reed, &nina, &auditor] {
        assert_eq!(pending(&api, who).await, 0, "nothing waits yet");
    }

    // Rita files a restore into a new table, and one that replaces the table (which only
    // admins and operators may decide).
    let file = |req: serde_json::Value| {
        let (api, rita) = (&api, &rita);
        async move {
            let r = api
                .json(
                    Some(rita),
                    "requests/file",
                    json!({"req": req, "reason": "ticket 26"}),
                )
                .await;
            r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"))
        }
    };
    let new_table = file(json!({"snapshot": snapshot, "dest_source_id": source,
        "tables": ["customers"], "columns": {}, "rename": {"customers": "customers_back"},
        "mode": "create", "confirm": ""}))
    .await;
    file(json!({"snapshot": snapshot, "dest_source_id": source,
        "tables": ["customers"], "columns": {}, "rename": {},
        "mode": "replace", "confirm": "customers"}))
    .await;
    assert_eq!(pending(&api, &admin).await, 2);
    assert_eq!(pending(&api, &operator).await, 2);
    assert_eq!(
        pending(&api, &reed).await,
        1,
        "only the restore into a new table"
    );
    assert_eq!(pending(&api, &rita).await, 0, "never one's own requests");
    assert_eq!(pending(&api, &nina).await, 0, "may approve nothing");
    assert_eq!(pending(&api, &auditor).await, 0, "auditors approve nothing");
    assert!(
        api.form(None, "requests/pending_for_me", &[])
            .await
            .unauthenticated()
    );

    // Reed approves: it no longer waits for him (but still for the others), and his
    // view of the request offers no second Approve.
    let get = |who: &str| {
        let (api, who) = (&api, who.to_string());
        async move {
            let r = api
                .form(Some(&who), "requests/get", &[("id", new_table.to_string())])
                .await;
            assert!(r.ok(), "{r:?}");
            r.json()["request"].clone()
        }
    };
    let seen = get(&reed).await;
    assert_eq!(seen["can_approve"], true);
    let r = api
        .form(
            Some(&reed),
            "requests/approve",
            &[
                ("id", new_table.to_string()),
                ("version", seen["version"].as_str().unwrap().to_string()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(get(&reed).await["can_approve"], false);
    assert_eq!(get(&operator).await["can_approve"], true);
    assert_eq!(pending(&api, &reed).await, 0);
    assert_eq!(pending(&api, &operator).await, 2);
    assert_eq!(get(&rita).await["can_approve"], false, "not one's own");
}

#[tokio::test]
async fn a_repository_password_typed_twice_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let add = |name: &'static str, repeat: Option<&'static str>| {
        let (api, admin, dir) = (&api, &admin, dir.path().to_path_buf());
        async move {
            let mut args = vec![
                ("name", name.to_string()),
                ("location", dir.join(name).display().to_string()),
                ("password", "repository password".to_string()),
            ];
            if let Some(r) = repeat {
                args.push(("password_repeat", r.to_string()));
            }
            api.form(Some(admin), "targets/add", &args).await
        }
    };
    let r = add("typo", Some("repository passwrod")).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(
        r.body.contains("password_repeat") && r.body.contains("differ"),
        "{r:?}"
    );
    assert!(
        !dir.path().join("typo").exists(),
        "no repository is made with a mistyped password"
    );
    assert!(add("same", Some("repository password")).await.ok());
    // A script that sends the password once is not asked for it twice.
    assert!(add("script", None).await.ok());
    let listed = api
        .form(Some(&admin), "targets/list", &[])
        .await
        .json()
        .to_string();
    assert!(
        listed.contains("\"same\"") && listed.contains("\"script\""),
        "{listed}"
    );
    assert!(!listed.contains("\"typo\""), "{listed}");
}
