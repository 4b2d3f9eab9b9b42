//! The path the console is served under: `""` at the root of its address, `/tablesafe`
//! for `--public-url https://ops.example.com/tablesafe/`.
//!
//! Every URL the console writes for a browser goes through [`url`]: plain links, GET
//! filter forms, CSV and export links, the stylesheet, the bundle, the favicon,
//! redirects, and the router's `<A>` links (leptos_router 0.8 leaves an absolute `href`
//! as it is). The router is given the same base (`<Router base>`): it matches routes
//! under it and `navigate("/jobs/1")` resolves under it by itself (so navigate takes
//! plain paths). The browser's server function calls go to `{base}/api/…` (`frontend`
//! sets server_fn's server URL).
//!
//! Where the base comes from:
//! - **On the server** the HTTP layer (`server/src/hardening.rs`, `strip_prefix`) takes it
//!   from `--public-url`, removes it from the request path when the proxy passed it
//!   through (so routing is the same with or without the prefix) and puts a [`BasePath`]
//!   in the request's extensions, which [`base`] reads from the request Leptos renders.
//! - **In the browser** it is read from `<meta name="tablesafe-base">`, which the
//!   [`shell`](crate::shell) writes; the page and the hydrating bundle therefore agree on
//!   every link.
//!
//! [`crate::App`] provides the value as context once per page, so each link costs a
//! context lookup.

use leptos::prelude::{provide_context, use_context};
use std::sync::Arc;

/// The base path (no trailing slash; empty at the root). On the server it travels in
/// the request's extensions; in a page it is a context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BasePath(pub Arc<str>);

/// The name of the `<meta>` that carries the base to the browser.
pub const META_NAME: &str = "tablesafe-base";

/// The base path of this page or request: `""` or `/prefix`.
pub fn base() -> Arc<str> {
    if let Some(BasePath(base)) = use_context::<BasePath>() {
        return base;
    }
    discover()
}

/// `path` (absolute: `/jobs/3?x=1`) under the base: `/tablesafe/jobs/3?x=1`.
pub fn url(path: &str) -> String {
    format!("{}{path}", base())
}

/// Makes [`base`] cheap for the rest of the page (called once, by [`crate::App`]).
pub(crate) fn provide() -> Arc<str> {
    let base = base();
    provide_context(BasePath(base.clone()));
    base
}

#[cfg(feature = "ssr")]
fn discover() -> Arc<str> {
    use_context::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<BasePath>().cloned())
        .map(|b| b.0)
        .unwrap_or_default()
}

#[cfg(not(feature = "ssr"))]
fn discover() -> Arc<str> {
    from_document().into()
}

/// The base the server wrote into the page (`""` when there is none). Browser only.
#[cfg(not(feature = "ssr"))]
pub fn from_document() -> String {
    leptos::prelude::document()
        .query_selector(&format!("meta[name='{META_NAME}']"))
        .ok()
        .flatten()
        .and_then(|m| m.get_attribute("content"))
        .unwrap_or_default()
}

/// On the server the router matches the request's path against routes under the base,
/// as the browser will match `location.pathname`. The HTTP layer removed the prefix
/// before routing, so the URL Leptos renders from gets it back here (in the page's
/// context, before `<Router>` reads it).
#[cfg(feature = "ssr")]
pub(crate) fn provide_request_url(base: &str) {
    use leptos_router::location::RequestUrl;
    if base.is_empty() {
        return;
    }
    if let Some(req) = use_context::<RequestUrl>() {
        provide_context(RequestUrl::new(&with_base(req.as_ref(), base)));
    }
}

/// `http://host/path?q` → `http://host{base}/path?q`; `/path` → `{base}/path`.
#[cfg(any(feature = "ssr", test))]
fn with_base(url: &str, base: &str) -> String {
    let path_at = match url.find("://") {
        Some(i) => url[i + 3..]
            .find('/')
            .map(|j| i + 3 + j)
            .unwrap_or(url.len()),
        None => 0,
    };
    let (origin, path) = url.split_at(path_at);
    if path.starts_with(&format!("{base}/")) || path == base {
        return url.to_string();
    }
    let path = if path.is_empty() { "/" } else { path };
    format!("{origin}{base}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_url_gets_the_base_back() {
        assert_eq!(
            with_base("http://leptos.dev/jobs/3?x=1", "/tablesafe"),
            "http://leptos.dev/tablesafe/jobs/3?x=1"
        );
        assert_eq!(
            with_base("http://leptos.dev", "/ts"),
            "http://leptos.dev/ts/"
        );
        assert_eq!(with_base("/login", "/ts"), "/ts/login");
        // Already under the base: unchanged.
        assert_eq!(with_base("http://h/ts/login", "/ts"), "http://h/ts/login");
    }

    /// A link written as a bare absolute path would leave the prefix (leptos_router's
    /// `<A>` too: it keeps an absolute `href` as it is). Every page goes through [`url`].
    #[test]
    fn no_page_writes_a_bare_absolute_link() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files: Vec<_> = std::fs::read_dir(dir.join("pages"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.push(dir.join("lib.rs"));
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                for bare in [
                    "href=\"/",
                    "action=\"/",
                    "href=format!(\"/",
                    "action=format!(\"/",
                    "set_href(\"/",
                ] {
                    assert!(
                        !line.contains(bare),
                        "{}:{}: a bare path; write crate::base::url(\"/…\"): {line}",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }

    #[test]
    fn links_outside_a_page_use_the_request_or_nothing() {
        let owner = leptos::prelude::Owner::new();
        owner.with(|| {
            assert_eq!(url("/login"), "/login");
            provide_context(BasePath("/tablesafe".into()));
            assert_eq!(url("/login"), "/tablesafe/login");
            assert_eq!(url("/"), "/tablesafe/");
        });
    }
}
