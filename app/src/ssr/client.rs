//! Who a request comes from: the connection's peer address, or — when that peer is a
//! reverse proxy an admin named (`--trusted-proxies`) — the client the proxy reports in
//! `X-Forwarded-For`. Login throttling and the audit log key on it, so a client must not
//! be able to choose it: the header is read only from a trusted peer, and from the
//! right, skipping the trusted proxies in the chain (the left part is whatever the
//! client sent).

use std::net::IpAddr;

/// An address range, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let s = s.trim();
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), self.bits),
            _ => false,
        }
    }
}

/// An IPv4 address that arrived as IPv6 (`::ffff:a.b.c.d`) as the IPv4 it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let whole = (bits / 8) as usize;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[whole] ^ b[whole]) >> (8 - rest) == 0
}

/// The client of a request that reached us from `peer` with these headers.
pub fn address(peer: IpAddr, headers: &http::HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let mut client = peer;
    // Every X-Forwarded-For header, in order, as one list; read from the right.
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            // Garbage in the chain: trust nothing left of it.
            break;
        };
        client = canonical(ip);
        if !trusted.iter().any(|c| c.contains(client)) {
            break;
        }
    }
    client
}

/// The group an address belongs to for throttling and audit bursts: an IPv4 address
/// itself, an IPv6 address's /64 (one subscriber's network: a client can pick any of
/// its 2^64 addresses, so counting them apart would count nothing).
pub fn group(address: &str) -> String {
    match address.parse::<IpAddr>().map(canonical) {
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        Ok(v4) => v4.to_string(),
        Err(_) => address.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn xff(values: &[&'static str]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for v in values {
            h.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        assert_eq!(group("2001:db8:1:2::1"), group("2001:db8:1:2:ffff::9"));
        assert_ne!(group("2001:db8:1:2::1"), group("2001:db8:1:3::1"));
        assert_eq!(group("203.0.113.7"), "203.0.113.7");
        assert_eq!(group("::ffff:203.0.113.7"), "203.0.113.7");
    }

    #[test]
    fn ranges_match_by_prefix() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fdab::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("127.0.0.1")
                .unwrap()
                .contains("127.0.0.1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("proxy.local").is_err());
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy_and_from_the_right() {
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let spoofed = xff(&["6.6.6.6"]);
        // Nobody trusted: the header is the client's own words.
        assert_eq!(address(peer, &spoofed, &[]), peer);
        let proxies = [
            Cidr::parse("127.0.0.1").unwrap(),
            Cidr::parse("10.0.0.0/8").unwrap(),
        ];
        assert_eq!(
            address(peer, &spoofed, &proxies),
            "6.6.6.6".parse::<IpAddr>().unwrap()
        );
        // The client wrote "1.1.1.1" itself; the proxies appended what they saw.
        let chain = xff(&["1.1.1.1, 203.0.113.7", "10.0.0.5"]);
        assert_eq!(
            address(peer, &chain, &proxies),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // A peer that is not a proxy cannot speak for anyone.
        let outsider: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(address(outsider, &chain, &proxies), outsider);
        // No header from a trusted proxy: the proxy itself.
        assert_eq!(address(peer, &http::HeaderMap::new(), &proxies), peer);
        assert_eq!(
            address(peer, &xff(&["junk, 10.0.0.5"]), &proxies),
            "10.0.0.5".parse::<IpAddr>().unwrap()
        );
    }
}
