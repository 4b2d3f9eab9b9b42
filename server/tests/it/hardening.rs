//! HTTP hardening (issue 25): server-function refusals answered with their own
//! status instead of 500.

use crate::harness::{ADMIN_PASSWORD, Api, Options, Server, client, cookie, login};

fn start(dir: &std::path::Path, env: &[(&str, &str)]) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    Server::start_with_env(
        Options {
            data_dir: &dir.join("data"),
            database_url: None,
            admin_password: Some(ADMIN_PASSWORD),
        },
        env,
    )
}

/// A server function that refuses says so with its status: 401 without a session or
/// with a wrong password, 403 for a role that may not, 400 for invalid input or
/// arguments, 404 for what is not there; the JSON error body is the one the pages
/// decode, unchanged.
#[tokio::test]
async fn server_function_refusals_have_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let api = Api { server: &server };
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let r = api
        .form(
            Some(&admin),
            "users/create",
            &[
                ("username", "rita".into()),
                ("role", "requester".into()),
                ("password", "a long enough password".into()),
            ],
        )
        .await;
    assert!(r.ok(), "{r:?}");
    let rita = cookie(&server, "rita", "a long enough password").await;

    let new_user = |name: &str| {
        vec![
            ("username", name.to_string()),
            ("role", "admin".to_string()),
            ("password", "another long password".to_string()),
        ]
    };
    let r = api
        .form(Some(&rita), "users/create", &new_user("mallory"))
        .await;
    assert_eq!((r.status, r.json()), (403, "Forbidden".into()), "{r:?}");
    assert!(r.forbidden());
    let r = api.form(None, "users/create", &new_user("mallory")).await;
    assert_eq!(
        (r.status, r.json()),
        (401, "Unauthenticated".into()),
        "{r:?}"
    );
    assert!(r.unauthenticated());
    let r = api.form(None, "users/list", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");

    let r = login(&server, "admin", "not the password").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.text().await.unwrap(), "\"InvalidCredentials\"");

    // Validation: a field error, and arguments that do not decode.
    let r = api.form(Some(&admin), "users/create", &new_user("")).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["Field"][0], "username", "{r:?}");
    let r = api
        .form(Some(&admin), "jobs/get", &[("id", "not a number".into())])
        .await;
    assert_eq!(r.status, 400, "{r:?}");

    let r = api
        .form(
            Some(&admin),
            "jobs/get",
            &[("id", "987654".into()), ("after_log", "0".into())],
        )
        .await;
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json(), serde_json::json!({"NotFound": "Job"}), "{r:?}");

    // The REST API answers the same refusals with the same statuses.
    let r = client()
        .get(server.url("/api/v1/jobs/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
