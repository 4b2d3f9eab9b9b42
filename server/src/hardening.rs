//! What every HTTP answer carries and what every request must pass before it reaches a
//! handler: security headers with a per-request CSP nonce, the refusal of
//! state-changing requests sent by another site, and the path prefix the console is
//! served under.
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
//!
//! **Behind a reverse proxy.** A proxy usually rewrites `Host` (nginx's default
//! `proxy_pass http://127.0.0.1:3000;` sends `Host: 127.0.0.1:3000`), so the browser's
//! `Origin` cannot be compared with `Host` alone. A state-changing request is the
//! console's own when the browser says so (`Sec-Fetch-Site: same-origin`, a header no
//! page can set), or its `Origin` is `--public-url`'s, or — from a peer named in
//! `--trusted-proxies` only — the `X-Forwarded-Proto`/`X-Forwarded-Host` the proxy
//! reports, or `Host`. From anyone else the `X-Forwarded-*` headers are the client's
//! own words and are ignored ([`HttpPolicy::refusal`]).
//!
//! **Path prefix.** `--public-url https://ops.example.com/tablesafe/` serves the console
//! under `/tablesafe`. [`strip_prefix`] runs before routing: a request that still has
//! the prefix (the proxy passed the path through) loses it, one without it (the proxy
//! stripped it) is taken as it is, so the routes are the same either way; and it hands
//! the prefix to the pages ([`app::base`]), which write it in front of every link,
//! asset and redirect. The session cookie's `Path` is the prefix too.

use app::base::BasePath;
use app::ssr::client::Cidr;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use leptos::nonce::Nonce;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What the console knows about how it is reached, fixed at start from `--public-url`
/// and `--trusted-proxies`.
#[derive(Clone, Debug, Default)]
pub struct HttpPolicy {
    /// `--public-url`'s origin (`https://backup.example.com`, default port left out):
    /// an `Origin` that is the console's own even when a proxy rewrote `Host`.
    public_origin: Option<String>,
    /// `--public-url`'s path without the trailing `/`: `""` at the root, `/tablesafe`
    /// under a prefix.
    base: Arc<str>,
    /// `--public-url` is https: browsers are told to use nothing else (HSTS), and the
    /// session cookie is `Secure` unless `--secure-cookies=false`.
    pub https: bool,
    /// `cargo leptos watch` (LEPTOS_WATCH): its reload script opens a websocket to
    /// another port, which the policy then allows. Never set in a release deployment.
    live_reload: bool,
    /// `--trusted-proxies`: the only peers whose `X-Forwarded-Host`/`-Proto` count.
    trusted_proxies: Vec<Cidr>,
}

/// First path segments a prefix may not start with: the console's own routes, which a
/// request without the prefix (a proxy that strips it) must still reach.
const RESERVED: &[&str] = &[
    "api",
    "pkg",
    "login",
    "account",
    "healthz",
    "readyz",
    "metrics",
    "hooks",
    "snapshots",
    "audit.csv",
    "drills.csv",
    "favicon.svg",
];

impl HttpPolicy {
    /// The policy for `--public-url` (None: links are paths, no HSTS). A public URL
    /// must be an absolute http:// or https:// URL; its path, if any, is the prefix
    /// the console is served under.
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
                 (write it as users reach the console, e.g. https://backup.example.com \
                 or https://ops.example.com/tablesafe/)"
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
            base: base_path(url, &uri)?.into(),
            https: scheme == "https",
            live_reload,
            trusted_proxies: Vec::new(),
        })
    }

    /// The same policy, reading `X-Forwarded-Host`/`-Proto` from these peers.
    pub fn trusting(mut self, proxies: &[Cidr]) -> HttpPolicy {
        self.trusted_proxies = proxies.to_vec();
        self
    }

    /// The path prefix (`""` or `/tablesafe`), for the cookie's `Path`.
    pub fn base(&self) -> &str {
        &self.base
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

    /// Why a state-changing request comes from another site (what to tell its
    /// sender), or None when it is the console's own. In order:
    /// - `Sec-Fetch-Site`: `cross-site`/`same-site` refuse, `same-origin` accepts (set
    ///   by the browser; a page cannot forge it; browsers send it to https and
    ///   localhost origins).
    /// - No `Origin` at all: a non-browser client (curl, a script), which has no cookie
    ///   of a victim to misuse.
    /// - The `Origin` is `--public-url`'s; or, from a trusted proxy, the one its
    ///   `X-Forwarded-Proto`/`X-Forwarded-Host` describe; or the `Host` header's (the
    ///   request URI's authority under HTTP/2, which has no `Host`).
    ///
    /// An `Origin` nothing vouches for is refused.
    fn refusal(&self, headers: &HeaderMap, uri: &Uri, peer: Option<IpAddr>) -> Option<String> {
        let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
        match fetch_site {
            Some(site @ ("cross-site" | "same-site")) => {
                return Some(format!(
                    "cross-site request refused: the browser says it was sent by another \
                     site (Sec-Fetch-Site: {site}); open the console's own page and try again"
                ));
            }
            Some("same-origin") => return None,
            _ => {}
        }
        let origin = headers.get(header::ORIGIN)?;
        let origin = match origin.to_str() {
            Ok(o) if o != "null" => o,
            _ => {
                return Some(
                    "cross-site request refused: the request does not say which page sent \
                     it (Origin: null); open the console's own page and try again"
                        .into(),
                );
            }
        };
        if self
            .public_origin
            .as_deref()
            .is_some_and(|p| p.eq_ignore_ascii_case(origin))
        {
            return None;
        }
        let (origin_scheme, origin_host) = origin.split_once("://").unwrap_or(("", origin));
        if let Some(forwarded) = self.forwarded_host(headers, peer) {
            let proto = last_value(headers, "x-forwarded-proto");
            let scheme_ok = proto.is_none_or(|p| p.eq_ignore_ascii_case(origin_scheme));
            if scheme_ok && forwarded.eq_ignore_ascii_case(origin_host) {
                return None;
            }
        }
        let own_host = match headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => uri.authority().map(|a| a.as_str()),
        };
        if own_host.is_some_and(|host| origin_host.eq_ignore_ascii_case(host)) {
            return None;
        }
        Some(match (own_host, &self.public_origin) {
            (_, Some(public)) => format!(
                "cross-site request refused: the page's origin {origin} is not this \
                 console's address {public}; if users open the console at {origin}, set \
                 --public-url to the address users open"
            ),
            (Some(host), None) => format!(
                "cross-site request refused: the page's origin {origin} does not match \
                 the Host this request arrived with ({host}), as happens behind a reverse \
                 proxy that rewrites Host; set --public-url to the address users open \
                 (e.g. {origin}/)"
            ),
            (None, None) => format!(
                "cross-site request refused: nothing tells this console its own address \
                 to compare with the page's origin {origin}; set --public-url to the \
                 address users open"
            ),
        })
    }

    /// `X-Forwarded-Host` as the nearest proxy set it, when `peer` is a trusted proxy;
    /// from anyone else the header is ignored (a client could write anything there).
    fn forwarded_host<'h>(&self, headers: &'h HeaderMap, peer: Option<IpAddr>) -> Option<&'h str> {
        let peer = peer?;
        if !self.trusted_proxies.iter().any(|c| c.contains(peer)) {
            return None;
        }
        last_value(headers, "x-forwarded-host")
    }
}

/// The right-most value of a header that proxies may append to (`a, b` or repeated):
/// the one the nearest proxy wrote.
fn last_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `--public-url`'s path as a prefix: `""` for none or `/`, else `/a/b` (no trailing
/// slash). Segments are plain names (they go into links and the cookie's `Path`), and
/// the first may not be one of the console's own routes.
fn base_path(url: &str, uri: &Uri) -> anyhow::Result<String> {
    if uri.query().is_some() || url.contains('#') {
        anyhow::bail!("--public-url {url:?} has a query or fragment; give the address only");
    }
    let path = uri.path().trim_end_matches('/');
    if path.is_empty() {
        return Ok(String::new());
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let plain = |s: &&str| {
        !s.is_empty()
            && *s != "."
            && *s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    };
    if !segments.iter().all(plain) {
        anyhow::bail!(
            "--public-url {url:?}: the path prefix may hold letters, digits, '-', '_', '.' \
             and '~' between slashes (e.g. https://ops.example.com/tablesafe/)"
        );
    }
    let first = segments[0].to_ascii_lowercase();
    let section = app::SECTIONS
        .iter()
        .any(|(p, ..)| p.trim_start_matches('/') == first);
    if section || RESERVED.contains(&first.as_str()) {
        anyhow::bail!(
            "--public-url {url:?}: the path prefix /{first} is also one of the console's own \
             pages; choose another (e.g. /tablesafe/)"
        );
    }
    Ok(path.to_string())
}

/// Serves the console under `--public-url`'s path prefix whether the proxy passes the
/// path through (`location /tablesafe/ { proxy_pass http://127.0.0.1:3000; }`) or strips
/// it (`proxy_pass http://127.0.0.1:3000/;`): a path under the prefix loses it before
/// routing. Every request carries the prefix to the pages ([`BasePath`]). Must wrap
/// the router (`Router::layer` runs after routing, too late to change the path).
pub async fn strip_prefix(
    State(policy): State<Arc<HttpPolicy>>,
    mut req: Request<Body>,
    next: Next,
) -> Response {
    if let Some(rest) = unprefixed(req.uri(), &policy.base) {
        *req.uri_mut() = rest;
    }
    req.extensions_mut().insert(BasePath(policy.base.clone()));
    next.run(req).await
}

/// `uri` without the prefix `base`, when it is under it (`/tablesafe` → `/`).
fn unprefixed(uri: &Uri, base: &str) -> Option<Uri> {
    if base.is_empty() {
        return None;
    }
    let rest = uri.path().strip_prefix(base)?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = if rest.is_empty() { "/" } else { rest };
    let path_and_query = match uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = path_and_query.parse().ok();
    Uri::from_parts(parts).ok()
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

/// Refuses state-changing requests sent by another site (see
/// [`HttpPolicy::refusal`]) with 403 and `{"error": "…"}` saying what to do. The
/// SameSite=Strict cookie already keeps the session out of them; this is the second
/// lock on the door.
pub async fn reject_cross_site(
    State(policy): State<Arc<HttpPolicy>>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Some(why) = policy.refusal(req.headers(), req.uri(), peer) {
            tracing::warn!(
                path = %req.uri().path(),
                origin = ?req.headers().get(header::ORIGIN),
                host = ?req.headers().get(header::HOST),
                "rejected a cross-site request"
            );
            return (
                StatusCode::FORBIDDEN,
                axum::Json(serde_json::json!({ "error": why })),
            )
                .into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::{HttpPolicy, unprefixed};
    use app::ssr::client::Cidr;
    use http::{HeaderMap, HeaderValue, Uri};
    use std::net::IpAddr;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn policy(public_url: Option<&str>) -> HttpPolicy {
        HttpPolicy::new(public_url).unwrap()
    }

    /// Whether `p` refuses a POST to /api/x with these headers from `peer`.
    fn refused(p: &HttpPolicy, pairs: &[(&'static str, &'static str)], peer: &str) -> bool {
        let peer: IpAddr = peer.parse().unwrap();
        p.refusal(&headers(pairs), &Uri::from_static("/api/x"), Some(peer))
            .is_some()
    }

    const PEER: &str = "127.0.0.1";

    #[test]
    fn same_origin_posts_pass_and_foreign_ones_do_not() {
        let p = policy(None);
        let cross = |pairs: &[(&'static str, &'static str)]| refused(&p, pairs, PEER);
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
        assert!(cross(&[("host", "a:1"), ("sec-fetch-site", "same-site")]));
    }

    #[test]
    fn the_browser_saying_same_origin_is_enough_behind_a_proxy_that_rewrites_host() {
        // nginx's default proxy_pass: Host is the upstream's, Origin the user's.
        let through_nginx = [
            ("host", "127.0.0.1:3000"),
            ("origin", "https://backup.example.com"),
        ];
        let p = policy(None);
        assert!(refused(&p, &through_nginx, PEER), "nothing vouches for it");
        let mut same = through_nginx.to_vec();
        same.push(("sec-fetch-site", "same-origin"));
        assert!(!refused(&p, &same, PEER));
        // A foreign page's request says cross-site whatever its Origin.
        let mut forged = through_nginx.to_vec();
        forged.push(("sec-fetch-site", "cross-site"));
        assert!(refused(
            &policy(Some("https://backup.example.com")),
            &forged,
            PEER
        ));
    }

    #[test]
    fn without_host_the_uri_authority_or_the_public_url_decides() {
        let evil = headers(&[("origin", "http://evil.example")]);
        let ours = headers(&[("origin", "https://backup.example.com")]);
        let path = Uri::from_static("/api/login");
        let absolute = Uri::from_static("https://backup.example.com/api/login");
        let none = policy(None);
        // Nothing says who we are: an Origin cannot be vouched for.
        assert!(none.refusal(&evil, &path, None).is_some());
        assert!(none.refusal(&ours, &path, None).is_some());
        // HTTP/2: the authority is in the URI.
        assert!(none.refusal(&evil, &absolute, None).is_some());
        assert!(none.refusal(&ours, &absolute, None).is_none());
        // --public-url names the console's origin (behind a proxy that rewrites Host, too).
        let public = policy(Some("https://backup.example.com"));
        assert!(public.refusal(&ours, &path, None).is_none());
        assert!(public.refusal(&evil, &path, None).is_some());
        let proxied = headers(&[
            ("host", "127.0.0.1:3000"),
            ("origin", "https://backup.example.com"),
        ]);
        assert!(public.refusal(&proxied, &path, None).is_none());
        assert!(none.refusal(&proxied, &path, None).is_some());
        // The public origin is compared whole: scheme and port too.
        let http = headers(&[("origin", "http://backup.example.com")]);
        assert!(public.refusal(&http, &path, None).is_some());
        // A prefix in --public-url does not change the origin.
        let prefixed = policy(Some("https://backup.example.com/tablesafe/"));
        assert!(prefixed.refusal(&proxied, &path, None).is_none());
    }

    #[test]
    fn forwarded_host_and_proto_count_only_from_a_trusted_proxy() {
        let proxy = [Cidr::parse("10.0.0.2").unwrap()];
        let p = policy(None).trusting(&proxy);
        let forwarded = [
            ("host", "127.0.0.1:3000"),
            ("origin", "https://backup.example.com"),
            ("x-forwarded-host", "backup.example.com"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(!refused(&p, &forwarded, "10.0.0.2"), "the proxy vouches");
        // The same headers forged by anyone else (a client reaching the console
        // directly) are ignored: the Origin still does not match Host.
        assert!(refused(&p, &forwarded, "198.51.100.7"));
        assert!(
            refused(&policy(None), &forwarded, "10.0.0.2"),
            "no proxy trusted"
        );
        // The proxy's proto must match the Origin's scheme.
        let http = [
            ("host", "127.0.0.1:3000"),
            ("origin", "http://backup.example.com"),
            ("x-forwarded-host", "backup.example.com"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(refused(&p, &http, "10.0.0.2"));
        // The nearest proxy's value counts, not what the client put in front of it.
        let appended = [
            ("host", "127.0.0.1:3000"),
            ("origin", "http://evil.example"),
            ("x-forwarded-host", "evil.example, backup.example.com"),
        ];
        assert!(refused(&p, &appended, "10.0.0.2"));
        let without_proto = [
            ("host", "127.0.0.1:3000"),
            ("origin", "http://backup.example.com:8080"),
            ("x-forwarded-host", "backup.example.com:8080"),
        ];
        assert!(!refused(&p, &without_proto, "10.0.0.2"));
    }

    #[test]
    fn the_refusal_says_what_to_do() {
        let why = policy(None)
            .refusal(
                &headers(&[
                    ("host", "127.0.0.1:3000"),
                    ("origin", "https://backup.example.com"),
                ]),
                &Uri::from_static("/api/login"),
                None,
            )
            .unwrap();
        assert!(
            why.contains("set --public-url to the address users open"),
            "{why}"
        );
        assert!(why.contains("127.0.0.1:3000"), "{why}");
        let why = policy(None)
            .refusal(
                &headers(&[("sec-fetch-site", "cross-site")]),
                &Uri::from_static("/api/login"),
                None,
            )
            .unwrap();
        assert!(why.contains("another site"), "{why}");
    }

    #[test]
    fn the_public_url_gives_the_origin_the_prefix_and_https() {
        let p = HttpPolicy::new(Some("https://Backup.example.com:443/console/")).unwrap();
        assert_eq!(
            p.public_origin.as_deref(),
            Some("https://backup.example.com")
        );
        assert_eq!(p.base(), "/console");
        assert!(p.https);
        let p = HttpPolicy::new(Some("http://10.0.0.5:3000")).unwrap();
        assert_eq!(p.public_origin.as_deref(), Some("http://10.0.0.5:3000"));
        assert_eq!(p.base(), "");
        assert!(!p.https);
        assert!(!HttpPolicy::new(None).unwrap().https);
        assert_eq!(policy(Some("https://x/")).base(), "");
        assert_eq!(
            policy(Some("https://x/ops/tablesafe")).base(),
            "/ops/tablesafe"
        );
        for bad in [
            "backup.example.com",
            "ftp://x",
            "/console",
            "https://x/a b/",
            "https://x/ts/?q=1",
            "https://x/a//b/",
            "https://x/../",
            // A prefix that is one of the console's own pages would swallow them.
            "https://x/jobs/",
            "https://x/api",
            "https://x/Login/",
        ] {
            assert!(HttpPolicy::new(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_prefix_is_removed_when_present_and_the_path_kept_when_not() {
        let strip = |uri: &'static str| {
            unprefixed(&Uri::from_static(uri), "/tablesafe").map(|u| u.to_string())
        };
        assert_eq!(
            strip("/tablesafe/jobs/3?x=1").as_deref(),
            Some("/jobs/3?x=1")
        );
        assert_eq!(strip("/tablesafe/").as_deref(), Some("/"));
        assert_eq!(strip("/tablesafe").as_deref(), Some("/"));
        assert_eq!(
            strip("/tablesafe/pkg/tablesafe.js").as_deref(),
            Some("/pkg/tablesafe.js")
        );
        // A proxy that strips the prefix: the path is the console's already.
        assert_eq!(strip("/jobs/3"), None);
        assert_eq!(strip("/"), None);
        // Only whole segments.
        assert_eq!(strip("/tablesafe2/jobs"), None);
        assert_eq!(unprefixed(&Uri::from_static("/jobs"), ""), None);
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
