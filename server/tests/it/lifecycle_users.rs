//! Removing a user (issue 26, point 1): the account stops working at once, everywhere
//! (cookie, API token, login), its rights go, the history keeps its name, and nobody
//! can take the name over; only admins remove, never themselves.

use crate::harness::{
    ADMIN_PASSWORD, Api, Options, Server, USER_PASSWORD, add_user, client, cookie, login,
    newest_snapshot,
};

async fn bearer(server: &Server, token: &str, endpoint: &str) -> u16 {
    client()
        .post(server.url(&format!("/api/{endpoint}")))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_removed_user_is_locked_out_everywhere_and_the_history_keeps_the_name() {
    removal(None).await;
}

#[tokio::test]
async fn a_user_is_removed_on_a_postgresql_history() {
    let pg = testkit::Postgres::start().unwrap();
    let url = pg.create_database("history").unwrap();
    removal(Some(&url)).await;
}

async fn removal(database_url: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let olga = add_user(&api, &admin, "olga", "operator").await;
    let olga_cookie = cookie(&server, "olga", USER_PASSWORD).await;
    let token = api
        .form(
            Some(&olga_cookie),
            "tokens/create",
            &[
                ("name", "ci".into()),
                ("role", "".into()),
                ("days", "30".into()),
            ],
        )
        .await
        .json()
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(bearer(&server, &token, "sources/list").await, 200);

    // An operator cannot remove anyone, not even a requester; admins cannot remove
    // themselves.
    let rita = add_user(&api, &admin, "rita", "requester").await;
    let r = api
        .form(
            Some(&olga_cookie),
            "users/remove",
            &[("id", rita.to_string())],
        )
        .await;
    assert!(r.forbidden(), "{r:?}");
    let me = api.form(Some(&admin), "users/list", &[]).await.json();
    let admin_id = me
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "admin")
        .unwrap()["id"]
        .as_i64()
        .unwrap();
    let r = api
        .form(
            Some(&admin),
            "users/remove",
            &[("id", admin_id.to_string())],
        )
        .await;
    assert!(
        r.status == 400 && r.body.contains("your own account"),
        "{r:?}"
    );

    let r = api
        .form(Some(&admin), "users/remove", &[("id", olga.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    // Her cookie, her token and her password stop working at once.
    let r = api.form(Some(&olga_cookie), "sources/list", &[]).await;
    assert!(r.unauthenticated(), "{r:?}");
    assert_eq!(bearer(&server, &token, "sources/list").await, 401);
    let resp = login(&server, "olga", USER_PASSWORD).await;
    assert!(
        crate::harness::session_cookie(&resp).is_none(),
        "a removed user logged in"
    );
    // She is no longer listed, cannot be re-enabled, and her name is not free.
    let users = api.form(Some(&admin), "users/list", &[]).await.json();
    assert!(
        !users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "olga"),
        "{users}"
    );
    let r = api
        .form(
            Some(&admin),
            "users/set_disabled",
            &[("id", olga.to_string()), ("disabled", "false".into())],
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert!(cookie_fails(&server).await);
    let again = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "olga".into()),
                ("role", "admin".into()),
                ("password", "another long password".into()),
            ],
        )
        .await;
    assert!(
        again.status == 409 && again.body.contains("taken"),
        "{again:?}"
    );
    // The audit log names who removed whom, and still names olga's own actions.
    let audit = api
        .form(
            Some(&admin),
            "audit/list",
            &[
                ("user", String::new()),
                ("action", String::new()),
                ("outcome", String::new()),
            ],
        )
        .await;
    assert!(
        audit.body.contains("user.remove") && audit.body.contains("user olga"),
        "{audit:?}"
    );
    assert!(audit.body.contains("\"username\":\"olga\""), "{audit:?}");
}

/// Olga's password no longer logs in even after an admin's enable attempt.
async fn cookie_fails(server: &Server) -> bool {
    let resp = login(server, "olga", USER_PASSWORD).await;
    crate::harness::session_cookie(&resp).is_none()
}

/// A removed account leaves nothing behind that still acts: its waiting restore
/// requests are cancelled (no one can start them later) and its approvals of waiting
/// requests stop counting toward the two-person rule.
#[tokio::test]
async fn a_removed_users_requests_and_approvals_stop_counting() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password: Some(ADMIN_PASSWORD),
    });
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let db = dir.path().join("shop.db");
    crate::harness::sqlite(
        &db,
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'Ann');",
    );
    let (source, _, policy) = crate::harness::add_policy(
        &api,
        &admin,
        "nightly",
        &db,
        &dir.path().join("repo"),
        "",
        "UTC",
    )
    .await;
    api.run_policy(&admin, policy.json().as_i64().unwrap())
        .await;
    let snapshot = newest_snapshot(&api, &admin).await;
    let r = api
        .form(
            Some(&admin),
            "sources/approval_rule",
            &[
                ("id", source.to_string()),
                ("approvals_required", "2".into()),
                ("request_ttl_minutes", "600".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let olga = add_user(&api, &admin, "olga", "operator").await;
    let oscar = add_user(&api, &admin, "oscar", "operator").await;
    let olga_c = cookie(&server, "olga", USER_PASSWORD).await;
    let oscar_c = cookie(&server, "oscar", USER_PASSWORD).await;
    let req = |into: &str| {
        json!({"req": {"snapshot": snapshot, "dest_source_id": source, "tables": ["customers"],
            "columns": {}, "rename": {"customers": into}, "mode": "create", "confirm": ""},
            "reason": "testing"})
    };
    let file = |who: String, into: &'static str| {
        let api = &api;
        async move {
            let r = api.json(Some(&who), "requests/file", req(into)).await;
            r.json().as_i64().unwrap_or_else(|| panic!("{r:?}"))
        }
    };
    let get = |id: i64| {
        let api = &api;
        let admin = admin.clone();
        async move {
            api.form(Some(&admin), "requests/get", &[("id", id.to_string())])
                .await
                .json()["request"]
                .clone()
        }
    };
    let hers = file(olga_c.clone(), "hers").await;
    let his = file(oscar_c.clone(), "his").await;
    let version = get(his).await["version"].as_str().unwrap().to_string();
    let r = api
        .form(
            Some(&olga_c),
            "requests/approve",
            &[("id", his.to_string()), ("version", version)],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(get(his).await["approvals"], 1);

    let r = api
        .form(Some(&admin), "users/remove", &[("id", olga.to_string())])
        .await;
    assert!(r.ok(), "{r:?}");
    assert_eq!(get(hers).await["state"], "cancelled");
    let his_now = get(his).await;
    assert_eq!(his_now["state"], "requested", "{his_now}");
    assert_eq!(his_now["approvals"], 0, "{his_now}");
    // Granting her anything now is refused: the account is gone.
    let r = api
        .form(
            Some(&admin),
            "users/approver",
            &[
                ("user_id", olga.to_string()),
                ("source_id", source.to_string()),
                ("on", "true".into()),
            ],
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    let _ = oscar;
}
