//! Behind a reverse proxy (issue 27): the console under a path prefix from
//! `--public-url`, reached with the prefix (a proxy that passes the path through) and
//! without it (one that strips it); and the origin check with a proxy that rewrites
//! `Host`, where `Sec-Fetch-Site` and a trusted proxy's `X-Forwarded-*` vouch for the
//! browser and an untrusted peer's do not. scripts/check_proxy.sh runs the browser
//! through a real nginx; these check what each answer says.

use crate::harness::{ADMIN_PASSWORD, Server, client, header, page_html, session_cookie, start_in};

/// A login as a browser behind a proxy sends it: `Host` rewritten to the console's
/// own address, the page's `Origin`, and `extra` headers.
async fn proxied_login(
    server: &Server,
    path: &str,
    origin: &str,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client()
        .post(server.url(path))
        .header("Origin", origin)
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)]);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn under_a_path_prefix_links_assets_redirects_and_the_cookie_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(
        dir.path(),
        &[("TABLESAFE_PUBLIC_URL", "http://ops.example.com/tablesafe/")],
    );
    let http = client();
    let origin = "http://ops.example.com";

    // The login page with the prefix (passed through) and without (stripped): the
    // same page, whose stylesheet, bundle and favicon are under the prefix and which
    // tells the browser the prefix.
    for path in ["/tablesafe/login", "/login"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let html = page_html(&r.text().await.unwrap());
        for wanted in [
            r#"href="/tablesafe/pkg/tablesafe.css""#,
            r#"href="/tablesafe/favicon.svg""#,
            r#"<meta name="tablesafe-base" content="/tablesafe">"#,
            "/tablesafe/pkg/tablesafe.js",
            // The loader's arguments: the bundle and its wasm are fetched from there.
            r#""/tablesafe", "pkg""#,
        ] {
            assert!(html.contains(wanted), "{path} lacks {wanted}:\n{html}");
        }
    }
    // A page without a session goes to the login page under the prefix, both ways.
    for path in ["/tablesafe/jobs", "/jobs", "/tablesafe/", "/tablesafe"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert!(r.status().is_redirection(), "{path}: {}", r.status());
        assert_eq!(header(&r, "location"), "/tablesafe/login", "{path}");
    }
    // Logging in under the prefix: the cookie is the console's only, and the browser
    // is sent to the dashboard under the prefix.
    let r = proxied_login(&server, "/tablesafe/api/login", origin, &[]).await;
    assert_eq!(r.status(), 200, "{}", server.log());
    assert_eq!(header(&r, "location"), "/tablesafe/");
    let set = header(&r, "set-cookie");
    assert!(set.contains("; Path=/tablesafe;"), "{set}");
    let cookie = session_cookie(&r).unwrap();
    // Logged in, the login page sends you to the dashboard, whose links stay under
    // the prefix (router links, plain links and the filter forms alike).
    let r = http
        .get(server.url("/tablesafe/login"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "location"), "/tablesafe/");
    let r = http
        .get(server.url("/tablesafe/jobs"))
        .header("Cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let html = page_html(&r.text().await.unwrap());
    for wanted in [
        r#"href="/tablesafe/sources""#,
        r#"href="/tablesafe/account""#,
        r#"action="/tablesafe/jobs""#,
        r#"href="/tablesafe/""#,
    ] {
        assert!(
            html.contains(wanted),
            "/tablesafe/jobs lacks {wanted}:\n{html}"
        );
    }
    assert!(!html.contains(r#"href="/sources""#), "{html}");
    // The REST API and the probes under the prefix, and without it.
    for path in ["/tablesafe/api/v1/policies", "/api/v1/policies"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    for path in ["/tablesafe/healthz", "/healthz"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // Logging out clears that same cookie and goes to the login page under the prefix.
    let r = http
        .post(server.url("/tablesafe/api/logout"))
        .header("Origin", origin)
        .header("Cookie", &cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", server.log());
    assert_eq!(header(&r, "location"), "/tablesafe/login");
    let set = header(&r, "set-cookie");
    assert!(
        set.contains("Max-Age=0") && set.contains("Path=/tablesafe;"),
        "{set}"
    );
}

#[tokio::test]
async fn a_proxy_that_rewrites_host_needs_the_browser_a_trusted_proxy_or_the_public_url() {
    let dir = tempfile::tempdir().unwrap();
    // No --public-url, no trusted proxy: what nginx's default proxy_pass gives.
    let plain = start_in(&dir.path().join("plain"), &[]);
    let origin = "https://backup.example.com";
    let upstream = plain.base.trim_start_matches("http://").to_string();
    let forwarded = [
        ("Host", upstream.as_str()),
        ("X-Forwarded-Host", "backup.example.com"),
        ("X-Forwarded-Proto", "https"),
    ];
    // Nothing vouches for the Origin (the X-Forwarded-* come from a peer nobody named):
    // 403 in the error shape, saying what to do.
    let r = proxied_login(&plain, "/api/login", origin, &forwarded).await;
    assert_eq!(r.status(), 403);
    assert!(session_cookie(&r).is_none());
    let body: serde_json::Value = r.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("set --public-url to the address users open"),
        "{error}"
    );
    // The browser says the request is the page's own: accepted.
    let r = proxied_login(
        &plain,
        "/api/login",
        origin,
        &[("Host", &upstream), ("Sec-Fetch-Site", "same-origin")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(session_cookie(&r).is_some());
    // A page of another site is refused whatever else it claims.
    let r = proxied_login(
        &plain,
        "/api/login",
        origin,
        &[("Host", &upstream), ("Sec-Fetch-Site", "cross-site")],
    )
    .await;
    assert_eq!(r.status(), 403);

    // The same forwarded headers from a proxy named in --trusted-proxies vouch for
    // the Origin; a forged Origin is still refused.
    let trusted = start_in(
        &dir.path().join("trusted"),
        &[("TABLESAFE_TRUSTED_PROXIES", "127.0.0.1")],
    );
    let upstream = trusted.base.trim_start_matches("http://").to_string();
    let forwarded = [
        ("Host", upstream.as_str()),
        ("X-Forwarded-Host", "backup.example.com"),
        ("X-Forwarded-Proto", "https"),
    ];
    let r = proxied_login(&trusted, "/api/login", origin, &forwarded).await;
    assert_eq!(r.status(), 200, "{}", trusted.log());
    let r = proxied_login(&trusted, "/api/login", "https://evil.example", &forwarded).await;
    assert_eq!(r.status(), 403);
}
