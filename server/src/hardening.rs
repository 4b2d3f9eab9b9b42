//! What every HTTP answer carries and what every request must pass before it reaches a
//! handler: security headers with a per-request CSP nonce, and the refusal of
//! state-changing requests sent by another site.
//!
//! **Content-Security-Policy.** The console runs no script of its own in the page
//! except the few inline scripts Leptos writes: the hydration loader in the `<head>`
//! (`HydrationScripts`) and, while a page streams, the scripts that hand resolved
//! resources to the browser. Each gets the request's nonce, which this layer makes
//! (`Nonce::new`: 128 random bits), stores in the request's extensions for the page
//! renderer ([`provide_request_nonce`], called from the Leptos context) and names in
//! the header, so the policy allows exactly those scripts and files from the console's
//! own origin. `'wasm-unsafe-eval'` lets the browser compile the console's WebAssembly
//! (and nothing else: no `eval`). Styles come only from `/pkg/tablesafe.css`: no
//! `'unsafe-inline'` in `style-src`, so an injected `<style>` or `style=` attribute
//! does nothing (the console has none; the job progress bar is a `<progress>`).
//! Every response gets the header — pages, server functions, the REST API, files —
//! because a JSON or CSV answer opened directly is a document too.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use leptos::nonce::Nonce;
use std::sync::Arc;

/// What the console knows about how it is reached, fixed at start from `--public-url`.
#[derive(Clone, Debug, Default)]
pub struct HttpPolicy {
    /// `--public-url`'s origin (`https://backup.example.com`, default port left out):
    /// an `Origin` that is the console's own even when a proxy rewrote `Host`.
    public_origin: Option<String>,
    /// `--public-url` is https: browsers are told to use nothing else (HSTS), and the
    /// session cookie is `Secure` unless `--secure-cookies=false`.
    pub https: bool,
    /// `cargo leptos watch` (LEPTOS_WATCH): its reload script opens a websocket to
    /// another port, which the policy then allows. Never set in a release deployment.
    live_reload: bool,
}

impl HttpPolicy {
    /// The policy for `--public-url` (None: links are paths, no HSTS). A public URL
    /// must be an absolute http:// or https:// URL.
    pub fn new(public_url: Option<&str>) -> anyhow::Result<HttpPolicy> {
        let live_reload = std::env::var_os("LEPTOS_WATCH").is_some();
        let Some(url) = public_url else {
            return Ok(HttpPolicy {
                live_reload,
                ..HttpPolicy::default()
            });
        };
        let bad = || {
            anyhow::anyhow!(
                "--public-url {url:?} is not an http:// or https:// URL \
                 (write it as users reach the console, e.g. https://backup.example.com)"
            )
        };
        let uri: Uri = url.parse().map_err(|_| bad())?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(bad());
        };
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return Err(bad()),
        };
        let host = authority.host().to_ascii_lowercase();
        let origin = match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        };
        Ok(HttpPolicy {
            public_origin: Some(origin),
            https: scheme == "https",
            live_reload,
        })
    }

    /// The Content-Security-Policy for a response whose page scripts carry `nonce`.
    fn csp(&self, nonce: &str) -> String {
        let connect = if self.live_reload {
            "'self' ws: wss:"
        } else {
            "'self'"
        };
        format!(
            "default-src 'self'; \
             script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; \
             style-src 'self'; \
             img-src 'self' data:; \
             connect-src {connect}; \
             object-src 'none'; \
             base-uri 'none'; \
             form-action 'self'; \
             frame-ancestors 'none'"
        )
    }
}

/// Makes this request's nonce, runs the request, and puts the security headers on
/// whatever answers it (a header a handler set itself is kept).
pub async fn security_headers(
    State(policy): State<Arc<HttpPolicy>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    let nonce = Nonce::new();
    req.extensions_mut().insert(nonce.clone());
    let mut res = next.run(req).await;
    let headers = res.headers_mut();
    let mut set = |name: header::HeaderName, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            headers.entry(name).or_insert(v);
        }
    };
    set(header::CONTENT_SECURITY_POLICY, &policy.csp(&nonce));
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    // The old spelling of frame-ancestors 'none', for browsers without CSP 2.
    set(header::X_FRAME_OPTIONS, "DENY");
    // Same-origin requests keep their Referer (a form posted without JavaScript is
    // sent back to its page by it); console URLs never leave for another site.
    set(header::REFERRER_POLICY, "same-origin");
    if policy.https {
        // One year; no includeSubDomains: the console does not speak for its
        // domain's other hosts.
        set(header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    }
    res
}

/// Hands the nonce [`security_headers`] made for this request to the page renderer,
/// so `HydrationScripts` and the streamed resource scripts carry the one the header
/// names. Call it inside the Leptos context closure (after leptos_axum provided the
/// request and its own nonce, which this replaces).
pub fn provide_request_nonce() {
    use leptos::prelude::{provide_context, use_context};
    if let Some(nonce) =
        use_context::<http::request::Parts>().and_then(|p| p.extensions.get::<Nonce>().cloned())
    {
        provide_context(nonce);
    }
}

/// Refuses state-changing requests sent by another site. The SameSite=Strict cookie
/// already keeps the session out of them; this is the second lock on the door.
pub async fn reject_cross_site(
    State(policy): State<Arc<HttpPolicy>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe && is_cross_site(req.headers(), req.uri(), policy.public_origin.as_deref()) {
        tracing::warn!(path = %req.uri().path(), "rejected a cross-site request");
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    next.run(req).await
}

/// Whether a request comes from another site: `Sec-Fetch-Site` says so, or its
/// `Origin` is neither the console's own host nor `public_origin`. The own host is the
/// `Host` header, else the request URI's authority (HTTP/2 sends `:authority` and no
/// `Host`). A request with an `Origin` when neither is known is refused: there is
/// nothing to vouch for it. No `Origin` at all is a non-browser client (curl, a
/// script), which has no cookie of a victim to misuse.
fn is_cross_site(headers: &HeaderMap, uri: &Uri, public_origin: Option<&str>) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if matches!(fetch_site, Some("cross-site" | "same-site")) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    if origin == "null" {
        return true;
    }
    if public_origin.is_some_and(|p| p.eq_ignore_ascii_case(origin)) {
        return false;
    }
    let origin_host = origin
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or(origin);
    let own_host = match headers.get(header::HOST) {
        Some(host) => host.to_str().ok(),
        None => uri.authority().map(|a| a.as_str()),
    };
    !own_host.is_some_and(|host| origin_host.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::{HttpPolicy, is_cross_site};
    use http::{HeaderMap, HeaderValue, Uri};

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn cross(pairs: &[(&'static str, &'static str)]) -> bool {
        is_cross_site(&headers(pairs), &Uri::from_static("/api/x"), None)
    }

    #[test]
    fn same_origin_posts_pass_and_foreign_ones_do_not() {
        assert!(!cross(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://127.0.0.1:3000")
        ]));
        assert!(
            !cross(&[("host", "127.0.0.1:3000")]),
            "no Origin: a non-browser client"
        );
        assert!(cross(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "http://evil.example")
        ]));
        assert!(cross(&[("host", "a:1"), ("origin", "null")]));
        assert!(cross(&[("host", "a:1"), ("sec-fetch-site", "cross-site")]));
        assert!(!cross(&[
            ("host", "a:1"),
            ("sec-fetch-site", "same-origin")
        ]));
    }

    #[test]
    fn without_host_the_uri_authority_or_the_public_url_decides() {
        let evil = headers(&[("origin", "http://evil.example")]);
        let ours = headers(&[("origin", "https://backup.example.com")]);
        let path = Uri::from_static("/api/login");
        let absolute = Uri::from_static("https://backup.example.com/api/login");
        // Nothing says who we are: an Origin cannot be vouched for.
        assert!(is_cross_site(&evil, &path, None));
        assert!(is_cross_site(&ours, &path, None));
        // HTTP/2: the authority is in the URI.
        assert!(is_cross_site(&evil, &absolute, None));
        assert!(!is_cross_site(&ours, &absolute, None));
        // --public-url names the console's origin (behind a proxy that rewrites Host, too).
        let public = Some("https://backup.example.com");
        assert!(!is_cross_site(&ours, &path, public));
        assert!(is_cross_site(&evil, &path, public));
        let proxied = headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "https://backup.example.com"),
        ]);
        assert!(!is_cross_site(&proxied, &path, public));
        assert!(is_cross_site(&proxied, &path, None));
        // The public origin is compared whole: scheme and port too.
        let http = headers(&[("origin", "http://backup.example.com")]);
        assert!(is_cross_site(&http, &path, public));
    }

    #[test]
    fn the_public_url_gives_the_origin_and_https() {
        let p = HttpPolicy::new(Some("https://Backup.example.com:443/console/")).unwrap();
        assert_eq!(
            p.public_origin.as_deref(),
            Some("https://backup.example.com")
        );
        assert!(p.https);
        let p = HttpPolicy::new(Some("http://10.0.0.5:3000")).unwrap();
        assert_eq!(p.public_origin.as_deref(), Some("http://10.0.0.5:3000"));
        assert!(!p.https);
        assert!(!HttpPolicy::new(None).unwrap().https);
        for bad in ["backup.example.com", "ftp://x", "/console"] {
            assert!(HttpPolicy::new(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_policy_allows_only_nonced_inline_scripts() {
        let csp = HttpPolicy::new(None).unwrap().csp("abc");
        assert!(
            csp.contains("script-src 'self' 'nonce-abc' 'wasm-unsafe-eval';"),
            "{csp}"
        );
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(!csp.contains("'unsafe-eval'"), "{csp}");
    }
}
