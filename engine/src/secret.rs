//! Secrets that must never reach logs, error messages or the browser.
//!
//! [`Secret`] wraps a value so that `Debug` and `Display` print `[redacted]`; the value is
//! only reachable through the explicit [`Secret::expose`]. Serialization is deliberately
//! not implemented: a secret that must be stored is encrypted first, by code that calls
//! `expose` on purpose.

use std::fmt;
use zeroize::Zeroize;

/// A value that prints as `[redacted]` and is overwritten with zeros when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> Secret<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }

    /// The wrapped value. Every call site is a place where a secret leaves its box:
    /// keep them few and obvious.
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<T: Zeroize> fmt::Display for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Returns `url` with the password of its user-info part (`scheme://user:PASSWORD@host`)
/// and the values of password-like query parameters replaced by `***`, for display.
///
/// Works on any `scheme://…` string without parsing it fully, so a malformed URL is still
/// redacted rather than echoed back in an error message.
pub fn redact_url(url: &str) -> String {
    let (before_query, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match before_query.split_once("://") {
        Some((scheme, rest)) => {
            // The authority ends at the first '/', the user-info at the *last* '@' in it
            // (a password may contain '@' when the client did not percent-encode it).
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("{userinfo}@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{scheme}://{authority}{path}")
        }
        None => before_query.to_string(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if is_secret_param(key) => format!("{key}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "pass",
        "secret",
        "token",
        "key",
        "sslpassword",
    ]
    .iter()
    .any(|s| key == *s || key.ends_with(&format!("_{s}")) || key.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&s)), "Some([redacted])");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn redacts_password_in_userinfo() {
        assert_eq!(
            redact_url("postgres://alice:s3cr%40t@db.example:5432/app"),
            "postgres://alice:***@db.example:5432/app"
        );
        // An unencoded '@' in the password must not leak the tail of the password.
        assert_eq!(
            redact_url("postgres://alice:p@ss@db:5432/app"),
            "postgres://alice:***@db:5432/app"
        );
    }

    #[test]
    fn keeps_urls_without_secrets_unchanged() {
        for url in [
            "sqlite:///var/lib/app.db",
            "sqlite://relative.db",
            "postgres://alice@db/app",
            "postgres://db/app?sslmode=require",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn redacts_password_query_parameters() {
        assert_eq!(
            redact_url("postgres://db/app?user=bob&password=x&sslmode=disable"),
            "postgres://db/app?user=bob&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("s3://bucket/p?access_key=AK&secret_access_key=SK"),
            "s3://bucket/p?access_key=***&secret_access_key=***"
        );
    }
}
