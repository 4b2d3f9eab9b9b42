//! What a logged-in insider might try, played as the role that would try it.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, cookie};

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
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "olga".into()),
                ("role", "operator".into()),
                ("password", "a long enough password".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let operator = cookie(&server, "olga", "a long enough password").await;
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
