//! Where the server may be told to connect: notification receivers (webhook, Slack,
//! SMTP), targets (an S3 endpoint, an SFTP host) and database sources are all places
//! an insider could aim the server at to reach what only the server can — a cloud
//! metadata service, an admin interface on loopback, a database on the private
//! network — and read the answer back through an error message.
//!
//! - Link-local addresses and the cloud metadata services (169.254.0.0/16, fe80::/10,
//!   fd00:ec2::254, Alibaba's 100.100.100.200) and whatever an admin adds with
//!   `--outbound-deny` are refused for everyone, when saved and again when a
//!   notification is sent (the name is resolved once and the connection pinned to what
//!   was checked, so a name cannot change its answer in between).
//! - Loopback and private addresses (127/8, 10/8, 172.16/12, 192.168/16, 100.64/10,
//!   fc00::/7, ::1) only for an admin, or in ranges an admin opened with
//!   `--outbound-allow`.
//! - Everything else (public addresses) for whoever may configure.
//!
//! A name that does not resolve when saved is refused for non-admins. Database sources
//! and targets are checked when saved, not at every connection; notifications at every
//! send, but then only against the addresses refused for everyone (a receiver an
//! operator saved on a public address that later resolves to a private one is not
//! caught).

use super::client::Cidr;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Always refused: link-local (where cloud metadata services live) and the known
/// metadata addresses outside it.
const ALWAYS_DENIED: [&str; 4] = [
    "169.254.0.0/16",
    "fe80::/10",
    "fd00:ec2::254/128",
    "100.100.100.200/32",
];

/// Private and loopback ranges: an admin's to choose.
const PRIVATE: [&str; 9] = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "0.0.0.0/8",
    "::1/128",
    "::/128",
    "fc00::/7",
];

/// The server's rules for outgoing connections (`--outbound-allow`, `--outbound-deny`).
#[derive(Debug, Clone, Default)]
pub struct Outbound {
    pub allow: Vec<Cidr>,
    pub deny: Vec<Cidr>,
}

fn ranges(list: &[&str]) -> Vec<Cidr> {
    list.iter().filter_map(|c| Cidr::parse(c).ok()).collect()
}

/// An address as the check sees it (IPv4-mapped IPv6 as IPv4).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Outbound {
    /// Why `ip` may not be reached by a caller who is (`admin`) or is not an admin.
    fn refusal(&self, what: &str, host: &str, ip: IpAddr, admin: bool) -> Option<String> {
        let ip = canonical(ip);
        if ranges(&ALWAYS_DENIED)
            .iter()
            .chain(&self.deny)
            .any(|c| c.contains(ip))
        {
            return Some(format!(
                "{what} {host} ({ip}) is a link-local or cloud metadata address, or one this server refuses (--outbound-deny): it cannot be used"
            ));
        }
        if !admin
            && ranges(&PRIVATE).iter().any(|c| c.contains(ip))
            && !self.allow.iter().any(|c| c.contains(ip))
        {
            return Some(format!(
                "{what} {host} ({ip}) is on this server or a private network: only an admin may use it, or an admin opens the range with --outbound-allow"
            ));
        }
        None
    }

    /// The addresses `host` stands for (an address as itself; a name resolved, at most
    /// five seconds; none when it does not resolve).
    async fn addresses(host: &str, port: u16) -> Vec<SocketAddr> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return vec![SocketAddr::new(ip, port)];
        }
        match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::lookup_host((bare, port)),
        )
        .await
        {
            Ok(Ok(found)) => found.collect(),
            _ => Vec::new(),
        }
    }

    /// Refuses `host` (`what`: "the webhook", "the SMTP server", …) for a caller who
    /// is or is not an admin; a Unix socket path or empty host counts as this server.
    pub async fn check(
        &self,
        what: &str,
        host: &str,
        port: u16,
        admin: bool,
    ) -> Result<(), String> {
        if host.is_empty() || host.starts_with('/') || host.eq_ignore_ascii_case("localhost") {
            let ip = IpAddr::from([127, 0, 0, 1]);
            return match self.refusal(
                what,
                if host.is_empty() { "localhost" } else { host },
                ip,
                admin,
            ) {
                Some(why) => Err(why),
                None => Ok(()),
            };
        }
        let found = Self::addresses(host, port).await;
        if found.is_empty() && !admin {
            // It could start resolving to anything once saved.
            return Err(format!(
                "{what} {host} does not resolve now: only an admin may save an address that does not resolve"
            ));
        }
        for addr in found {
            if let Some(why) = self.refusal(what, host, addr.ip(), admin) {
                return Err(why);
            }
        }
        Ok(())
    }

    /// For a connection about to be made: the addresses of `host` that are not refused
    /// for anyone, to pin the connection to. Err when any address is refused, or none
    /// resolves.
    pub async fn resolve_for_connect(
        &self,
        what: &str,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, String> {
        let found = Self::addresses(host, port).await;
        if found.is_empty() {
            return Err(format!("{what}: could not resolve {host}"));
        }
        for addr in &found {
            if let Some(why) = self.refusal(what, host, addr.ip(), true) {
                return Err(why);
            }
        }
        Ok(found)
    }

    /// [`Outbound::check`] for a `http(s)://` URL.
    pub async fn check_url(&self, what: &str, url: &str, admin: bool) -> Result<(), String> {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return Ok(());
        };
        let host = parsed.host_str().unwrap_or_default();
        let port = parsed.port_or_known_default().unwrap_or(443);
        self.check(what, host, port, admin).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn metadata_is_refused_for_all_private_ranges_for_admins_or_where_opened() {
        let rules = Outbound::default();
        for host in [
            "169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
            "[fe80::1]",
            "::ffff:169.254.169.254",
        ] {
            let why = rules
                .check("the webhook", host, 80, true)
                .await
                .unwrap_err();
            assert!(why.contains("metadata"), "{host}: {why}");
        }
        for host in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.10",
            "::1",
            "localhost",
            "/var/run/postgresql",
        ] {
            assert!(
                rules.check("the source", host, 5432, false).await.is_err(),
                "{host}"
            );
            assert!(
                rules.check("the source", host, 5432, true).await.is_ok(),
                "{host}"
            );
        }
        assert!(
            rules
                .check("the webhook", "203.0.113.9", 443, false)
                .await
                .is_ok()
        );
        let opened = Outbound {
            allow: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            deny: vec![Cidr::parse("203.0.113.0/24").unwrap()],
        };
        assert!(opened.check("x", "10.9.9.9", 1, false).await.is_ok());
        assert!(opened.check("x", "192.168.1.1", 1, false).await.is_err());
        assert!(
            opened.check("x", "203.0.113.9", 1, true).await.is_err(),
            "denied for admins too"
        );
        assert!(
            opened
                .resolve_for_connect("x", "169.254.169.254", 80)
                .await
                .is_err()
        );
        assert_eq!(
            opened
                .resolve_for_connect("x", "127.0.0.1", 80)
                .await
                .unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 80))]
        );
    }
}
