//! Which database a source URL names, however it is written: rules that belong to a
//! database (the two-person rule on restores) must not be escaped by naming it another
//! way — `localhost` for `127.0.0.1`, a host name for its address, a symlink or `..`
//! for a SQLite file, the default port spelled out.
//!
//! Host names are resolved (a name that does not resolve stands for itself), and every
//! loopback address and Unix socket directory count as one "this machine". What this
//! cannot see: the same server behind a proxy on another port or address (pgbouncer,
//! a load balancer) — for that, the servers' own ids would be needed.

use super::SourceUrl;
use crate::model::Engine;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A database as a place: a canonical file, or a server (its addresses and port) and a
/// database name on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    engine: Engine,
    place: Place,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    File(PathBuf),
    Server {
        hosts: BTreeSet<String>,
        port: u16,
        database: String,
    },
}

const LOCAL: &str = "this machine";

impl Identity {
    /// Whether both name the same database (same engine; same file, or a server they
    /// share an address of, same port, same database).
    pub fn same_database(&self, other: &Identity) -> bool {
        self.engine == other.engine
            && match (&self.place, &other.place) {
                (Place::File(a), Place::File(b)) => a == b,
                (
                    Place::Server {
                        hosts: h1,
                        port: p1,
                        database: d1,
                    },
                    Place::Server {
                        hosts: h2,
                        port: p2,
                        database: d2,
                    },
                ) => p1 == p2 && d1 == d2 && !h1.is_disjoint(h2),
                _ => false,
            }
    }
}

/// The identity of `url` (resolving host names, at most a few seconds).
pub async fn identity(url: &SourceUrl) -> Identity {
    let engine = url.engine();
    let place = match url {
        SourceUrl::Sqlite(path) => Place::File(resolve_path(path)),
        SourceUrl::Postgres(raw) | SourceUrl::Mysql(raw) => {
            let (host, port, database) = server_parts(raw.expose(), engine);
            Place::Server {
                hosts: addresses(&host, port).await,
                port,
                database,
            }
        }
    };
    Identity { engine, place }
}

/// The host and port a PostgreSQL or MySQL URL connects to (as the drivers read them);
/// `None` for a SQLite file. A Unix socket is its directory.
pub fn server_address(url: &SourceUrl) -> Option<(String, u16)> {
    match url {
        SourceUrl::Sqlite(_) => None,
        SourceUrl::Postgres(raw) | SourceUrl::Mysql(raw) => {
            let (host, port, _) = server_parts(raw.expose(), url.engine());
            Some((host, port))
        }
    }
}

/// (host, port, database) exactly as the drivers read them — their own URL parsers
/// (sqlx's `PgConnectOptions` / `MySqlConnectOptions`: `host=`, `hostaddr=`, `port=`,
/// `dbname=`, `socket=`, repeated keys), so that what is checked is what is connected
/// to. A Unix socket is its path; PostgreSQL's database defaults to the user name;
/// MySQL's names are compared without case.
fn server_parts(raw: &str, engine: Engine) -> (String, u16, String) {
    use std::str::FromStr;
    match engine {
        Engine::Mysql => {
            let raw = raw.replacen("mariadb://", "mysql://", 1);
            match sqlx::mysql::MySqlConnectOptions::from_str(&raw) {
                Ok(o) => (
                    o.get_socket()
                        .map(|s| s.display().to_string())
                        .unwrap_or_else(|| o.get_host().to_string()),
                    o.get_port(),
                    o.get_database().unwrap_or_default().to_lowercase(),
                ),
                Err(_) => (raw, 3306, String::new()),
            }
        }
        _ => match sqlx::postgres::PgConnectOptions::from_str(raw) {
            Ok(o) => (
                o.get_socket()
                    .map(|s| s.display().to_string())
                    .unwrap_or_else(|| o.get_host().to_string()),
                o.get_port(),
                o.get_database()
                    .unwrap_or_else(|| o.get_username())
                    .to_string(),
            ),
            Err(_) => (raw.to_string(), 5432, String::new()),
        },
    }
}

/// The addresses `host` stands for; loopback addresses, `localhost` and Unix socket
/// directories as [`LOCAL`].
async fn addresses(host: &str, port: u16) -> BTreeSet<String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let local = |ip: std::net::IpAddr| {
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        if ip.is_loopback() {
            LOCAL.to_string()
        } else {
            ip.to_string()
        }
    };
    if host.is_empty() || host.starts_with('/') || host.eq_ignore_ascii_case("localhost") {
        return BTreeSet::from([LOCAL.to_string()]);
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return BTreeSet::from([local(ip)]);
    }
    let mut out = BTreeSet::from([host.to_lowercase()]);
    if let Ok(Ok(found)) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::lookup_host((host, port)),
    )
    .await
    {
        out.extend(found.map(|a| local(a.ip())));
    }
    out
}

/// `path` made absolute, symlinks resolved in every part that exists and `.`/`..`
/// taken in order (a `..` after a missing directory is read as if it were there).
pub fn resolve_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for part in abs.components() {
        match part {
            Component::Prefix(_) | Component::RootDir => out.push(part.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                out.push(name);
                if let Ok(real) = out.canonicalize() {
                    out = real;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    async fn id(url: &str) -> Identity {
        identity(&SourceUrl::parse(&Secret::new(url.to_string())).unwrap()).await
    }

    #[tokio::test]
    async fn one_database_written_many_ways_is_one_identity() {
        let same = [
            "postgres://app:pw@localhost/shop",
            "postgres://other@127.0.0.1:5432/shop?sslmode=require",
            "postgresql://app@[::1]/shop",
            "postgres:///shop?host=/var/run/postgresql",
            "postgres://x@ignored/shop?host=localhost&port=5432",
            "postgres://app@localhost/sh%6Fp",
        ];
        let first = id(same[0]).await;
        for url in &same[1..] {
            assert!(first.same_database(&id(url).await), "{url}");
        }
        for other in [
            "postgres://app@localhost/shop_copy",
            "postgres://app@localhost:5433/shop",
            "postgres://app@192.0.2.10/shop",
            "mysql://app@localhost:5432/shop",
        ] {
            assert!(!first.same_database(&id(other).await), "{other}");
        }
        // What the driver connects to, not the first spelling: the last of repeated
        // keys, hostaddr over host.
        assert!(first.same_database(
            &id("postgres://u@decoy.invalid/shop?host=decoy.invalid&host=localhost").await
        ));
        assert!(
            first.same_database(&id("postgres://u@decoy.invalid/shop?hostaddr=127.0.0.1").await)
        );
        assert!(
            id("mysql://u@127.0.0.1/shop?socket=/run/mysqld/mysqld.sock")
                .await
                .same_database(&id("mysql://u@localhost/shop").await)
        );
        // PostgreSQL's database defaults to the user name.
        assert!(id("postgres://shop@localhost").await.same_database(&first));
        // MySQL: default port, names without case.
        assert!(
            id("mysql://a@127.0.0.1/Shop")
                .await
                .same_database(&id("mariadb://b@localhost:3306/shop").await)
        );
    }

    #[tokio::test]
    async fn a_sqlite_file_through_a_link_or_dots_is_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        std::fs::write(&db, b"").unwrap();
        let link = dir.path().join("alias.db");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        let a = id(&format!("sqlite://{}", db.display())).await;
        for other in [link.clone(), dir.path().join("sub/../app.db")] {
            assert!(
                a.same_database(&id(&format!("sqlite://{}", other.display())).await),
                "{}",
                other.display()
            );
        }
        assert!(
            !a.same_database(&id(&format!("sqlite://{}", dir.path().join("b.db").display())).await)
        );
    }
}
