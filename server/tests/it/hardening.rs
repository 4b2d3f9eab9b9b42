//! HTTP hardening (issue 25, points 8 and 9): the headers every answer carries, the
//! cross-site check when a request has no `Host`, `/metrics` closed by default, and
//! server-function refusals answered with their own status instead of 500.

use crate::harness::{ADMIN_PASSWORD, Api, Server, client, cookie, header, login, start_in};
use std::io::{Read, Write};

/// The nonce a Content-Security-Policy allows scripts with.
fn nonce_of(csp: &str) -> String {
    let start = csp
        .find("'nonce-")
        .unwrap_or_else(|| panic!("no nonce in {csp}"))
        + 7;
    csp[start..].split('\'').next().unwrap().to_string()
}

/// One HTTP/1.1 request written by hand (reqwest always sends `Host`); returns the
/// status line and headers, and the body.
fn raw_request(server: &Server, request: &str) -> (String, String) {
    let addr = server.base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.to_string(), body.to_string())
}

/// The admin's login, sent with `origin` and with `host` (None: no `Host` header).
fn raw_login(server: &Server, host: Option<&str>, origin: &str) -> (String, String) {
    let body = format!(
        "username=admin&password={}",
        ADMIN_PASSWORD.replace(' ', "+")
    );
    let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
    raw_request(
        server,
        &format!(
            "POST /api/login HTTP/1.1\r\n{host}Origin: {origin}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// Pages, server functions, the REST API, files, probes, even 404s: each carries a
/// CSP whose only inline scripts are the ones with this request's nonce (which every
/// `<script>` on a page has), forbids framing, no sniffing, a same-origin referrer
/// policy; no HSTS without an https public URL, and a session cookie without `Secure`.
#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path(), &[]);
    let http = client();
    let admin = cookie(&server, "admin", ADMIN_PASSWORD).await;
    let mut nonces = Vec::new();
    let requests = [
        ("page", http.get(server.url("/login"))),
        ("page", http.get(server.url("/")).header("Cookie", &admin)),
        ("page", http.get(server.url("/no-such-page"))),
        (
            "server function",
            http.post(server.url("/api/users/list"))
                .header("Origin", &server.base)
                .header("Cookie", &admin),
        ),
        ("REST", http.get(server.url("/api/v1/policies"))),
        ("file", http.get(server.url("/favicon.svg"))),
        ("probe", http.get(server.url("/healthz"))),
        ("metrics", http.get(server.url("/metrics"))),
        (
            "refusal",
            http.post(server.url("/api/login"))
                .header("Origin", "http://evil.example"),
        ),
    ];
    for (what, req) in requests {
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let csp = header(&resp, "content-security-policy");
        assert!(
            csp.contains("script-src 'self' 'nonce-") && csp.contains("'wasm-unsafe-eval'"),
            "{what} {status}: {csp:?}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
        assert!(csp.contains("style-src 'self';"), "{what}: {csp}");
        assert!(csp.contains("object-src 'none'"), "{what}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
        assert_eq!(header(&resp, "x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header(&resp, "referrer-policy"), "same-origin", "{what}");
        assert_eq!(header(&resp, "x-frame-options"), "DENY", "{what}");
        assert_eq!(header(&resp, "strict-transport-security"), "", "{what}");
        let nonce = nonce_of(&csp);
        assert!(nonce.len() >= 16, "{nonce}");
        let is_page = what == "page";
        let body = resp.text().await.unwrap();
        if is_page {
            // Every inline script is the hydration loader or streamed data, and carries
            // the nonce the header names; no inline styles, which the CSP would block.
            let scripts = body.matches("<script").count();
            assert!(scripts >= 1, "{body}");
            assert_eq!(
                body.matches(&format!("<script type=\"module\" nonce=\"{nonce}\">"))
                    .count()
                    + body.matches(&format!("<script nonce=\"{nonce}\">")).count(),
                scripts,
                "{status}: scripts without this request's nonce {nonce}:\n{body}"
            );
            assert!(!body.contains(" style="), "{body}");
            assert!(!body.contains("<style"), "{body}");
        }
        nonces.push(nonce);
    }
    let mut unique = nonces.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), nonces.len(), "a nonce used twice: {nonces:?}");
    let r = login(&server, "admin", ADMIN_PASSWORD).await;
    assert!(!header(&r, "set-cookie").contains("Secure"));
}

/// Behind https (`--public-url https://…`): HSTS on every answer and a `Secure`
/// session cookie without being asked; and an `Origin` of the public URL is the
/// console's own even when a proxy rewrote `Host`.
#[tokio::test]
async fn an_https_public_url_brings_hsts_and_a_secure_cookie() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(
        dir.path(),
        &[("TABLESAFE_PUBLIC_URL", "https://backup.example.com")],
    );
    let http = client();
    for path in ["/login", "/healthz", "/favicon.svg"] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(
            header(&r, "strict-transport-security"),
            "max-age=31536000",
            "{path}"
        );
    }
    let r = login(&server, "admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "set-cookie").contains("; Secure"), "{r:?}");
    let proxied = http
        .post(server.url("/api/login"))
        .header("Origin", "https://backup.example.com")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 200);
    // No Host at all: the public URL vouches for its own origin and no other.
    let (head, _) = raw_login(&server, None, "https://backup.example.com");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, body) = raw_login(&server, None, "http://evil.example");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}\n{body}");
}

/// A state-changing request without a `Host` header (as HTTP/2 sends them, or a
/// hand-made one) used to skip the Origin check: a login from another site went
/// through. With nothing to compare the Origin with, it is refused now.
#[tokio::test]
async fn a_post_without_host_from_another_site_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path(), &[]);
    let (head, body) = raw_login(&server, None, "http://evil.example");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}\n{body}");
    assert!(body.contains("cross-site request refused"), "{body}");
    assert!(!head.to_ascii_lowercase().contains("set-cookie"), "{head}");
    // With our Host it is a normal login; another site with it is refused, as before.
    let host = server.base.trim_start_matches("http://");
    let (head, _) = raw_login(&server, Some(host), &server.base);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (head, _) = raw_login(&server, Some(host), "http://evil.example");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
}

/// `/metrics` names policies and targets: closed unless a token is set (bearer) or an
/// admin opened it with `--metrics-public`, and the refusal says how to open it.
#[tokio::test]
async fn metrics_are_closed_unless_opened() {
    let dir = tempfile::tempdir().unwrap();
    let http = client();
    {
        let server = start_in(&dir.path().join("closed"), &[]);
        for auth in [None, Some("Bearer anything")] {
            let mut req = http.get(server.url("/metrics"));
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 404);
            let text = r.text().await.unwrap();
            assert!(!text.contains("tablesafe_"), "{text}");
            assert!(
                text.contains("TABLESAFE_METRICS_TOKEN") && text.contains("--metrics-public"),
                "{text}"
            );
        }
    }
    {
        let server = start_in(
            &dir.path().join("token"),
            &[("TABLESAFE_METRICS_TOKEN", "s3cret-scrape")],
        );
        let r = http.get(server.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert_eq!(header(&r, "www-authenticate"), "Bearer");
        let r = http
            .get(server.url("/metrics"))
            .bearer_auth("s3cret-scrape")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("tablesafe_"));
    }
    {
        let server = start_in(
            &dir.path().join("public"),
            &[("TABLESAFE_METRICS_PUBLIC", "true")],
        );
        let r = http.get(server.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.text().await.unwrap().contains("tablesafe_"));
    }
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_tablesafe"))
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--metrics-public") && help.contains("TABLESAFE_METRICS_TOKEN"),
        "{help}"
    );
}

/// A server function that refuses says so with its status: 401 without a session or
/// with a wrong password, 403 for a role that may not, 400 for invalid input or
/// arguments, 404 for what is not there; the JSON error body is the one the pages
/// decode, unchanged.
#[tokio::test]
async fn server_function_refusals_have_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_in(dir.path(), &[]);
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
    assert_eq!(
        (r.status, r.json()),
        (
            403,
            serde_json::json!({"error": "You are not allowed to do this.", "code": "forbidden"})
        ),
        "{r:?}"
    );
    assert!(r.forbidden());
    let r = api.form(None, "users/create", &new_user("mallory")).await;
    assert_eq!(
        (r.status, r.json()),
        (
            401,
            serde_json::json!({"error": "Please log in.", "code": "unauthenticated"})
        ),
        "{r:?}"
    );
    assert!(r.unauthenticated());
    let r = api.form(None, "users/list", &[]).await;
    assert_eq!(r.status, 401, "{r:?}");

    let r = login(&server, "admin", "not the password").await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap(),
        serde_json::json!({"error": "Invalid user name or password.", "code": "invalid_credentials"})
    );

    // Validation: a field error, and arguments that do not decode.
    let r = api.form(Some(&admin), "users/create", &new_user("")).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        (&r.json()["field"], &r.json()["code"]),
        (&"username".into(), &"invalid".into()),
        "{r:?}"
    );
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
    assert_eq!(
        r.json(),
        serde_json::json!({"error": "Job not found.", "code": "not_found"}),
        "{r:?}"
    );

    // The REST API answers the same refusals with the same statuses.
    let r = client()
        .get(server.url("/api/v1/jobs/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}
