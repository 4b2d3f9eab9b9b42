//! The console's browser files (pkg/tablesafe.js, .wasm, .css, favicon…), embedded in
//! the release binary so that `tablesafe serve` needs nothing beside it.
//!
//! `server/build.rs` fills [`EMBEDDED`] when the build sets `TABLESAFE_EMBED_SITE`
//! (scripts/lib.sh `build_release` does, after building the bundle); debug and test
//! builds embed nothing. Where the files come from is decided once at startup
//! ([`Site::resolve`]): an explicit `--site-root` / `TABLESAFE_SITE_ROOT` (or
//! `LEPTOS_SITE_ROOT` from `cargo leptos`) always wins, for development; else the
//! embedded files; else a `site` directory found on disk as before.
//!
//! Names are fixed (no content hash in them), so answers carry `Cache-Control:
//! no-cache` with an `ETag`: a browser revalidates each load (a 304, no body) and an
//! upgraded server's new bundle is picked up at once.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

/// One embedded file: its path under the site root ("pkg/tablesafe.wasm"), its bytes,
/// precompressed bodies when the build made them, and a quoted content hash.
pub struct EmbeddedFile {
    pub path: &'static str,
    pub body: &'static [u8],
    pub gzip: Option<&'static [u8]>,
    pub br: Option<&'static [u8]>,
    pub etag: &'static str,
}

include!(concat!(env!("OUT_DIR"), "/embedded_site.rs"));

/// What `LeptosOptions::site_root` holds when the embedded files are served: no
/// directory, so the Leptos file handler behind [`fallback`] finds nothing on disk.
pub const EMBEDDED_ROOT: &str = "(embedded in the tablesafe binary)";

/// Where the browser files are served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    Embedded,
    Disk(PathBuf),
}

impl Site {
    /// `--site-root` (or `TABLESAFE_SITE_ROOT`), else `LEPTOS_SITE_ROOT` (set by `cargo
    /// leptos serve`), else the embedded files if this build has them, else the `site`
    /// directory cargo-leptos builds beside the binary (target/site for
    /// target/release/tablesafe), else ./target/site.
    pub fn resolve(explicit: Option<PathBuf>) -> Site {
        if let Some(dir) = explicit {
            return Site::Disk(dir);
        }
        if let Ok(dir) = std::env::var("LEPTOS_SITE_ROOT") {
            return Site::Disk(PathBuf::from(dir));
        }
        if !EMBEDDED.is_empty() {
            return Site::Embedded;
        }
        if let Some(beside) = std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("site")))
            .filter(|d| d.join("pkg").is_dir())
        {
            return Site::Disk(beside);
        }
        Site::Disk(PathBuf::from("target/site"))
    }

    /// The value for `LeptosOptions::site_root`.
    pub fn leptos_root(&self) -> String {
        match self {
            Site::Embedded => EMBEDDED_ROOT.to_string(),
            Site::Disk(dir) => dir.to_string_lossy().into_owned(),
        }
    }

    /// Warns at startup when the pages would render but never become interactive.
    pub fn warn_if_missing(&self) {
        if let Site::Disk(dir) = self
            && !dir.join("pkg/tablesafe.js").exists()
        {
            tracing::warn!(
                site_root = %dir.display(),
                "the console's browser files are missing; build them with \
                 `bash -c 'source scripts/lib.sh; build_release'` or `cargo leptos build`, \
                 or point --site-root at them (pages will render but not become interactive)"
            );
        }
    }
}

type Handled = Pin<Box<dyn Future<Output = Response> + Send + 'static>>;

/// The router's fallback: an embedded file when this server serves them and has it
/// (GET or HEAD), else `disk` (Leptos' file handler, which serves `--site-root` and
/// renders the console's "not found" page for anything else).
pub fn fallback<S, H>(disk: H) -> impl Fn(Uri, State<S>, Request<Body>) -> Handled + Clone + Send
where
    S: Clone + Send + Sync + 'static,
    leptos::config::LeptosOptions: axum::extract::FromRef<S>,
    H: Fn(Uri, State<S>, Request<Body>) -> Handled + Clone + Send + 'static,
{
    move |uri: Uri, State(state): State<S>, req: Request<Body>| {
        let options: leptos::config::LeptosOptions = axum::extract::FromRef::from_ref(&state);
        if options.site_root.as_ref() == EMBEDDED_ROOT
            && let Some(res) = respond(EMBEDDED, req.method(), uri.path(), req.headers())
        {
            return Box::pin(std::future::ready(res));
        }
        disk(uri, State(state), req)
    }
}

/// The answer for `path` from `files`, or None when it is not one of them (or the
/// method is neither GET nor HEAD).
pub fn respond(
    files: &[EmbeddedFile],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let name = path.strip_prefix('/').unwrap_or(path);
    let file = files.iter().find(|f| f.path == name)?;
    let (body, encoding) = match (file.br, file.gzip) {
        (Some(br), _) if accepts(headers, "br") => (br, Some("br")),
        (_, Some(gz)) if accepts(headers, "gzip") => (gz, Some("gzip")),
        _ => (file.body, None),
    };
    // Each encoding is its own representation, with its own (strong) ETag.
    let etag = match encoding {
        Some(e) => format!("{}-{e}\"", file.etag.trim_end_matches('"')),
        None => file.etag.to_string(),
    };
    let mut res = Response::builder()
        .header(header::ETAG, &etag)
        .header(header::CACHE_CONTROL, "no-cache")
        .header(header::VARY, "accept-encoding");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if fresh {
        return res
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .ok();
    }
    if let Some(e) = encoding {
        res = res.header(header::CONTENT_ENCODING, e);
    }
    res = res
        .header(header::CONTENT_TYPE, content_type(file.path))
        .header(header::CONTENT_LENGTH, body.len());
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(body)
    };
    res.status(StatusCode::OK).body(body).ok()
}

/// Whether `Accept-Encoding` allows `coding` (a `q=0` refuses it).
fn accepts(headers: &HeaderMap, coding: &str) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v: &HeaderValue| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let name = parts.next().unwrap_or("");
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            name.eq_ignore_ascii_case(coding) && !refused
        })
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, ext)| ext) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: &[EmbeddedFile] = &[
        EmbeddedFile {
            path: "pkg/tablesafe.wasm",
            body: b"\0asm-plain",
            gzip: Some(b"gzipped"),
            br: Some(b"brotli"),
            etag: "\"00000000000000aa\"",
        },
        EmbeddedFile {
            path: "robots.txt",
            body: b"User-agent: *\n",
            gzip: None,
            br: None,
            etag: "\"00000000000000bb\"",
        },
    ];

    fn get(method: Method, path: &str, headers: &[(&str, &str)]) -> Option<Response> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        respond(FILES, &method, path, &map)
    }

    async fn body(res: Response) -> Vec<u8> {
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    fn header(res: &Response, name: header::HeaderName) -> &str {
        res.headers()
            .get(name)
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }

    #[tokio::test]
    async fn a_browser_gets_the_wasm_with_its_type_compressed_when_it_can() {
        let res = get(Method::GET, "/pkg/tablesafe.wasm", &[]).unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, header::CONTENT_TYPE), "application/wasm");
        assert_eq!(header(&res, header::CONTENT_ENCODING), "");
        assert_eq!(body(res).await, b"\0asm-plain");

        let res = get(
            Method::GET,
            "/pkg/tablesafe.wasm",
            &[("accept-encoding", "gzip, deflate, br, zstd")],
        )
        .unwrap();
        assert_eq!(header(&res, header::CONTENT_ENCODING), "br");
        assert_eq!(header(&res, header::CONTENT_LENGTH), "6");
        assert_eq!(header(&res, header::ETAG), "\"00000000000000aa-br\"");
        assert_eq!(body(res).await, b"brotli");

        let res = get(
            Method::GET,
            "/pkg/tablesafe.wasm",
            &[("accept-encoding", "br;q=0, gzip")],
        )
        .unwrap();
        assert_eq!(header(&res, header::CONTENT_ENCODING), "gzip");
        assert_eq!(body(res).await, b"gzipped");

        // A file without a compressed body is sent as it is, whatever is accepted.
        let res = get(Method::GET, "/robots.txt", &[("accept-encoding", "gzip")]).unwrap();
        assert_eq!(header(&res, header::CONTENT_ENCODING), "");
        assert_eq!(
            header(&res, header::CONTENT_TYPE),
            "text/plain; charset=utf-8"
        );
        assert_eq!(body(res).await, b"User-agent: *\n");
    }

    #[tokio::test]
    async fn a_revalidating_browser_gets_304_and_head_gets_no_body() {
        let res = get(
            Method::GET,
            "/pkg/tablesafe.wasm",
            &[("if-none-match", "\"00000000000000aa\"")],
        )
        .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(header(&res, header::ETAG), "\"00000000000000aa\"");
        assert!(body(res).await.is_empty());

        // The brotli body's ETag is not the plain body's.
        let res = get(
            Method::GET,
            "/pkg/tablesafe.wasm",
            &[
                ("if-none-match", "\"00000000000000aa-br\""),
                ("accept-encoding", "br"),
            ],
        )
        .unwrap();
        assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
        let res = get(
            Method::GET,
            "/pkg/tablesafe.wasm",
            &[
                ("if-none-match", "\"00000000000000aa-br\""),
                ("accept-encoding", "gzip"),
            ],
        )
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(body(res).await, b"gzipped");

        // A changed file (another ETag) is sent again.
        let res = get(
            Method::GET,
            "/pkg/tablesafe.wasm",
            &[("if-none-match", "\"0000000000000001\"")],
        )
        .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, header::CACHE_CONTROL), "no-cache");

        let res = get(Method::HEAD, "/robots.txt", &[]).unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(header(&res, header::CONTENT_LENGTH), "14");
        assert!(body(res).await.is_empty());
    }

    #[test]
    fn other_paths_and_methods_go_to_the_next_handler() {
        assert!(get(Method::GET, "/pkg/missing.js", &[]).is_none());
        assert!(get(Method::GET, "/", &[]).is_none());
        assert!(get(Method::GET, "/pkg", &[]).is_none());
        assert!(get(Method::POST, "/robots.txt", &[]).is_none());
    }
}
