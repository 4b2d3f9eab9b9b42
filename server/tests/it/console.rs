//! Logging in and out of the console over HTTP, against the SQLite history database.

use crate::harness::{
    ADMIN_PASSWORD, Options, Server, client, generated_password, login, page_html, session_cookie,
};

fn start(dir: &tempfile::TempDir, admin_password: Option<&str>) -> Server {
    Server::start(Options {
        data_dir: &dir.path().join("data"),
        database_url: None,
        admin_password,
    })
}

#[tokio::test]
async fn admin_logs_in_sees_the_dashboard_and_logs_out() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, Some(ADMIN_PASSWORD));

    let resp = login(&server, "admin", ADMIN_PASSWORD).await;
    // The hydrated form's fetch gets 200 plus a redirect the client follows.
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["location"],
        "/",
        "login sends the browser to the dashboard"
    );
    let set_cookie = resp.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in ["HttpOnly", "SameSite=Strict", "Max-Age=43200"] {
        assert!(set_cookie.contains(attr), "{set_cookie}");
    }
    let cookie = session_cookie(&resp).unwrap();

    let page = client()
        .get(server.url("/"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page_html(&page.text().await.unwrap());
    assert!(html.contains("<h1>Dashboard</h1>"), "{html}");
    for section in [
        "Sources",
        "Targets",
        "Policies",
        "Backups",
        "Restores",
        "Requests",
        "Jobs",
        "Notifications",
        "Audit",
        "Users",
    ] {
        assert!(
            html.contains(&format!(">{section}</a>")),
            "nav lacks {section}"
        );
    }
    assert!(
        html.contains("history database: SQLite (schema 20)"),
        "{html}"
    );

    let section = client()
        .get(server.url("/jobs"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(section.status(), 200);
    assert!(page_html(&section.text().await.unwrap()).contains("<h1>Jobs</h1>"));

    // Logged in, the login page sends you to the dashboard.
    let again = client()
        .get(server.url("/login"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    assert_eq!(again.headers()["location"], "/");

    let out = client()
        .post(server.url("/api/logout"))
        .header("Origin", &server.base)
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_eq!(out.headers()["location"], "/login");
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("tablesafe_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_gets_an_error_and_no_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, Some(ADMIN_PASSWORD));
    for (user, password) in [
        ("admin", "wrong"),
        ("admin", ""),
        ("nobody", ADMIN_PASSWORD),
        ("Admin", ADMIN_PASSWORD),
    ] {
        let resp = login(&server, user, password).await;
        assert!(
            session_cookie(&resp).is_none(),
            "{user}/{password} got a cookie"
        );
        assert!(resp.headers().get("location").is_none());
        let body = resp.text().await.unwrap();
        assert_eq!(
            body, r#"{"error":"Invalid user name or password.","code":"invalid_credentials"}"#,
            "{user}/{password}"
        );
    }
    let log = server.stop();
    assert!(!log.contains(ADMIN_PASSWORD), "a password reached the log");
}

#[tokio::test]
async fn pages_need_a_session_and_reject_forged_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, Some(ADMIN_PASSWORD));
    for path in ["/", "/sources", "/users", "/audit"] {
        let resp = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{path}");
        assert_eq!(resp.headers()["location"], "/login", "{path}");
    }
    // A token signed with another key (here: the header and claims of a real token with
    // a made-up signature) does not open the door.
    let cookie = session_cookie(&login(&server, "admin", ADMIN_PASSWORD).await).unwrap();
    let forged = format!("{}x", &cookie[..cookie.rfind('.').unwrap() + 1]);
    let resp = client()
        .get(server.url("/"))
        .header("Cookie", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    // Server functions refuse too, with an error rather than a redirect.
    let resp = client()
        .post(server.url("/api/server_info"))
        .header("Origin", &server.base)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"error": "Please log in.", "code": "unauthenticated"})
    );
    assert_eq!(
        client()
            .get(server.url("/login"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn a_cross_site_post_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, Some(ADMIN_PASSWORD));
    let resp = client()
        .post(server.url("/api/login"))
        .header("Origin", "http://evil.example")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(session_cookie(&resp).is_none());
}

#[tokio::test]
async fn first_start_generates_and_prints_the_admin_password_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, None);
    let password = generated_password(&server.log()).expect("password printed on first start");
    assert!(password.len() >= 16, "{password}");
    let cookie = session_cookie(&login(&server, "admin", &password).await);
    assert!(cookie.is_some(), "the printed password logs in");
    let log = server.stop();
    assert_eq!(log.matches("generated password").count(), 1);

    // A restart keeps the account, the password and the sessions, and prints nothing new.
    let server = start(&dir, Some("ignored now"));
    assert!(generated_password(&server.log()).is_none());
    assert!(session_cookie(&login(&server, "admin", "ignored now").await).is_none());
    let page = client()
        .get(server.url("/"))
        .header("Cookie", cookie.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "a session outlives a restart");
    assert!(session_cookie(&login(&server, "admin", &password).await).is_some());
}

#[tokio::test]
async fn reset_password_sets_a_new_admin_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    drop(start(&dir, Some(ADMIN_PASSWORD)));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["reset-password", "--data-dir"])
        .arg(&data)
        .env_remove("TABLESAFE_NEW_PASSWORD")
        .env_remove("TABLESAFE_DATABASE_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let new_password = stdout.trim().rsplit(' ').next().unwrap().to_string();
    let server = start(&dir, None);
    assert!(session_cookie(&login(&server, "admin", ADMIN_PASSWORD).await).is_none());
    assert!(session_cookie(&login(&server, "admin", &new_password).await).is_some());

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["reset-password", "--user", "ghost", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no account named \"ghost\""));
}

#[tokio::test]
async fn a_bad_history_database_url_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("TABLESAFE_DATABASE_URL", "mysql://root:hunter2@localhost/x")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unsupported history database URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

#[tokio::test]
async fn repeated_failed_logins_are_slowed_down_and_audited() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, Some(ADMIN_PASSWORD));
    for _ in 0..5 {
        let r = login(&server, "admin", "guess").await;
        assert!(session_cookie(&r).is_none());
        assert_eq!(r.status(), 401);
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("\"code\":\"invalid_credentials\"")
        );
    }
    // Now even the right password has to wait.
    let r = login(&server, "admin", ADMIN_PASSWORD).await;
    assert!(session_cookie(&r).is_none());
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Too many failed logins. Try again in"),
        "{body}"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = login(&server, "admin", ADMIN_PASSWORD).await;
    let cookie = session_cookie(&r).expect("after the wait the right password works");
    // The audit log has the first failure and one entry summing up the rest (the
    // other four and the refusal), written when the right password got in.
    let csv = client()
        .get(server.url("/audit.csv?action=login"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv.matches(",login,user admin,failed,").count(), 2, "{csv}");
    assert!(
        csv.contains(",login,user admin,failed,5 more like this from 127.0.0.1"),
        "{csv}"
    );
    assert!(csv.contains(",login,user admin,ok,"), "{csv}");
}

/// A full page of the audit log links to the older entries, and that page holds the
/// rest and no further link.
#[tokio::test]
async fn the_audit_log_pages_to_older_entries() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(&dir, Some(ADMIN_PASSWORD));
    let mut cookie = String::new();
    for _ in 0..53 {
        cookie = session_cookie(&login(&server, "admin", ADMIN_PASSWORD).await).unwrap();
    }
    let page = async |path: &str| {
        let resp = client()
            .get(server.url(path))
            .header("Cookie", &cookie)
            .send()
            .await
            .unwrap();
        page_html(&resp.text().await.unwrap()).replace("&amp;", "&")
    };
    let first = page("/audit?action=login").await;
    assert_eq!(first.matches(">login<").count(), 50, "{first}");
    let link = first
        .find("Older entries →")
        .map(|end| &first[..end])
        .and_then(|before| before.rfind("href=\""))
        .map(|start| &first[start + 6..])
        .and_then(|rest| rest.split('"').next())
        .expect("a link to the older entries");
    assert!(
        link.starts_with("/audit?user=&action=login&outcome=&before="),
        "{link}"
    );
    let older = page(link).await;
    assert_eq!(older.matches(">login<").count(), 3, "{older}");
    assert!(!older.contains("Older entries"), "{older}");
}
