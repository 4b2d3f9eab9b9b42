//! The network connection to a PostgreSQL or MySQL/MariaDB server: whether it is
//! encrypted, whether the server's identity was checked, and what a failed connection
//! means in words a user can act on.
//!
//! TLS settings come from the URL as each engine's own clients read them: PostgreSQL's
//! `sslmode` (disable / prefer / require / verify-ca / verify-full, default prefer as
//! libpq's), `sslrootcert`, `sslcert`, `sslkey` and the `PGSSL*` environment variables;
//! MySQL's `ssl-mode` (DISABLED / PREFERRED / REQUIRED / VERIFY_CA / VERIFY_IDENTITY,
//! default PREFERRED), `ssl-ca`, `ssl-cert`, `ssl-key`. rustls does the TLS.

use serde::Serialize;
use std::fmt;

/// How a connection to a table store is protected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Link {
    /// A SQLite file on this machine: nothing crosses a network.
    LocalFile,
    /// A Unix socket: nothing crosses a network.
    LocalSocket,
    /// Plain TCP: what is sent, the password included, can be read on the way.
    Plain,
    Encrypted {
        /// As the server names it (`TLSv1.3`).
        protocol: String,
        verified: Verified,
    },
}

/// What the client checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Verified {
    /// Nothing (`prefer`, `require`): encrypted, but anyone in the middle could answer.
    Nothing,
    /// Signed by a trusted CA (`verify-ca`, `VERIFY_CA`); the host name was not checked.
    Ca,
    /// Signed by a trusted CA and issued for the host connected to (`verify-full`,
    /// `VERIFY_IDENTITY`).
    CaAndHost,
}

impl Link {
    /// A network connection: encrypted with `protocol` (as the server names it) when
    /// the server says so, checked as `verified` asked.
    pub fn of_network(protocol: Option<String>, verified: Verified) -> Link {
        match protocol {
            Some(protocol) if !protocol.is_empty() => Link::Encrypted { protocol, verified },
            _ => Link::Plain,
        }
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Link::LocalFile => f.write_str("a local file"),
            Link::LocalSocket => f.write_str("a local socket"),
            Link::Plain => f.write_str(
                "not encrypted (add sslmode=verify-full, or ssl-mode=VERIFY_IDENTITY for MySQL, to the URL)",
            ),
            Link::Encrypted { protocol, verified } => {
                write!(f, "encrypted ({protocol}), ")?;
                f.write_str(match verified {
                    Verified::Nothing => {
                        "server certificate not verified (verify-full checks who answers)"
                    }
                    Verified::Ca => "server certificate verified, host name not checked",
                    Verified::CaAndHost => "server certificate and host name verified",
                })
            }
        }
    }
}

/// Chooses rustls' process-wide crypto provider (ring) before the first TLS
/// connection: two are linked, and sqlx's `verify-ca` path asks for the default.
pub fn tls_ready() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The query parameters of a PostgreSQL or MySQL URL that name files on this machine
/// (CA certificates, client certificates and keys), in the order they appear.
pub fn file_params(url: &str) -> Vec<String> {
    const FILES: &[&str] = &[
        "sslrootcert",
        "ssl-root-cert",
        "sslcert",
        "ssl-cert",
        "sslkey",
        "ssl-key",
        "sslca",
        "ssl-ca",
    ];
    let Some((_, query)) = url.split_once('?') else {
        return Vec::new();
    };
    query
        .split('&')
        .filter_map(|pair| pair.split('=').next())
        .filter(|k| FILES.contains(&k.to_ascii_lowercase().as_str()))
        .map(str::to_string)
        .collect()
}

/// What to do about a connection error, where its text says it is about TLS or about
/// encryption being required; None for other errors.
pub fn advice(error: &str) -> Option<&'static str> {
    let e = error.to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| e.contains(n));
    Some(
        if has(&["unknownissuer", "unknown issuer", "badsignature"]) {
            "The server's certificate is not signed by the CA given in sslrootcert (ssl-ca for MySQL): name the file holding the CA that signed it."
        } else if has(&["notvalidforname", "not valid for name"]) {
            "The server's certificate was not issued for the host name in the URL: connect by the name written in the certificate."
        } else if has(&["expired"]) && has(&["cert"]) {
            "The server's certificate has expired: ask for it to be renewed."
        } else if has(&["no encryption", "insecure transport", "secure transport"]) {
            "The server accepts only encrypted connections: remove sslmode=disable (ssl-mode=DISABLED) from the URL, or better, use sslmode=verify-full with sslrootcert (ssl-mode=VERIFY_IDENTITY with ssl-ca)."
        } else if has(&[
            "does not support tls",
            "does not support ssl",
            "server does not support",
        ]) {
            "The server does not offer TLS: turn it on there (ssl=on, or ssl-cert/ssl-key for MariaDB), or drop the sslmode/ssl-mode setting that requires it."
        } else if has(&[
            "certificate authentication failed",
            "requires a valid client certificate",
            "certificaterequired",
            "certificate required",
        ]) || (has(&["access denied"]) && has(&["ssl", "x509", "subject"]))
        {
            "The server wants a client certificate for this user: give sslcert and sslkey (ssl-cert and ssl-key for MySQL) with the certificate issued for it."
        } else if has(&["no such file", "os error 2"]) && has(&["cert", "key", "ssl", "tls"]) {
            "A certificate or key file named in the URL cannot be read: check sslrootcert, sslcert and sslkey (ssl-ca, ssl-cert, ssl-key)."
        } else if has(&["tls", "ssl", "certificate", "handshake"]) {
            "The encrypted connection could not be set up: check the sslmode (ssl-mode) and certificate settings in the URL."
        } else {
            return None;
        },
    )
}

/// `error` with [`advice`] after it where there is some.
pub fn with_advice(error: String) -> String {
    match advice(&error) {
        Some(a) => format!("{error}. {a}"),
        None => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_failures_get_advice_and_others_none() {
        assert!(
            advice("invalid peer certificate: UnknownIssuer")
                .unwrap()
                .contains("sslrootcert")
        );
        assert!(
            advice("invalid peer certificate: NotValidForName")
                .unwrap()
                .contains("name written in the certificate")
        );
        assert!(
            advice("no pg_hba.conf entry for host \"127.0.0.1\", user \"postgres\", database \"app\", no encryption")
                .unwrap()
                .contains("only encrypted")
        );
        assert_eq!(
            advice("password authentication failed for user \"bob\""),
            None
        );
        assert_eq!(advice("Connection refused (os error 111)"), None);
    }

    #[test]
    fn certificate_and_key_files_are_found_in_urls() {
        assert_eq!(
            file_params("postgres://u@h/db?sslmode=verify-full&sslrootcert=/ca.pem&SSLKEY=/k"),
            ["sslrootcert", "SSLKEY"]
        );
        assert!(file_params("mysql://u@h/db?ssl-mode=REQUIRED").is_empty());
        assert_eq!(file_params("mysql://u@h/db?ssl-ca=/ca.pem"), ["ssl-ca"]);
    }

    #[test]
    fn a_plain_link_says_how_to_encrypt_it() {
        assert!(Link::Plain.to_string().contains("sslmode=verify-full"));
        let full = Link::Encrypted {
            protocol: "TLSv1.3".into(),
            verified: Verified::CaAndHost,
        };
        assert_eq!(
            full.to_string(),
            "encrypted (TLSv1.3), server certificate and host name verified"
        );
    }
}
