//! The client's address behind a TLS-terminating proxy, from `X-Forwarded-For`.
//!
//! Warden speaks plain HTTP and is meant to sit behind such a proxy, whose own address every
//! connection then comes from. The audit log and the per-address throttle need the client's,
//! so the header is believed, but only from the proxies the config names (`trusted_proxies`):
//! anyone else could write any address into it. The header is read from its right end, the
//! entry the nearest proxy appended, past entries that are themselves trusted proxies; the
//! first other address is the client. A trusted proxy's header that does not parse is refused
//! rather than guessed at.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderValue;
use ipnet::IpNet;
use serde::Deserialize;

/// The header's name.
pub const HEADER: &str = "x-forwarded-for";

/// The networks whose connections' `X-Forwarded-For` is believed: CIDR blocks or single
/// addresses, e.g. `["127.0.0.1", "10.0.0.0/8"]`. Empty by default: the header is ignored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct TrustedProxies(Vec<IpNet>);

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = String;
    fn try_from(entries: Vec<String>) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        format!("trusted_proxies: {e:?} is neither an address nor a CIDR block such as \"10.0.0.0/8\"")
                    })
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl TrustedProxies {
    pub(crate) fn trusts(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&addr))
    }

    /// The client's address for a connection from `peer` that carried `forwarded` (every
    /// `X-Forwarded-For` line, in order). Err says what in the header did not parse.
    pub fn client<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl DoubleEndedIterator<Item = &'a HeaderValue>,
    ) -> Result<IpAddr, String> {
        if !self.trusts(peer) {
            return Ok(peer);
        }
        let mut client = peer;
        for line in forwarded.rev() {
            let line = line
                .to_str()
                .map_err(|_| format!("{HEADER} holds bytes that are not text"))?;
            for entry in line.rsplit(',').map(str::trim) {
                client = parse(entry).ok_or_else(|| {
                    // Cut: the message goes into the audit log.
                    let shown: String = entry.chars().take(64).collect();
                    format!("{HEADER} entry {shown:?} is not an IP address")
                })?;
                if !self.trusts(client) {
                    return Ok(client);
                }
            }
        }
        // Every hop was a trusted proxy: the first of them is the nearest to a client.
        Ok(client)
    }
}

/// An address as proxies write it: bare, or with a port (`192.0.2.1:4711`, `[2001:db8::1]:80`).
fn parse(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::try_from(nets.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn client(t: &TrustedProxies, peer: &str, lines: &[&str]) -> Result<String, String> {
        let values: Vec<HeaderValue> = lines
            .iter()
            .map(|l| HeaderValue::from_str(l).unwrap())
            .collect();
        t.client(peer.parse().unwrap(), values.iter())
            .map(|a| a.to_string())
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = trusted(&["10.0.0.0/8"]);
        assert_eq!(
            client(&t, "192.0.2.5", &["198.51.100.1"]).unwrap(),
            "192.0.2.5"
        );
        assert_eq!(client(&t, "192.0.2.5", &["garbage"]).unwrap(), "192.0.2.5");
        let nobody = TrustedProxies::default();
        assert_eq!(
            client(&nobody, "127.0.0.1", &["198.51.100.1"]).unwrap(),
            "127.0.0.1"
        );
    }

    #[test]
    fn the_rightmost_untrusted_entry_is_the_client() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        // A client that writes its own header cannot hide behind it: the proxy appended the
        // address it saw.
        assert_eq!(
            client(&t, "127.0.0.1", &["203.0.113.66, 198.51.100.7, 10.1.2.3"]).unwrap(),
            "198.51.100.7"
        );
        assert_eq!(
            client(&t, "127.0.0.1", &["203.0.113.66", "198.51.100.7:5123"]).unwrap(),
            "198.51.100.7"
        );
        assert_eq!(
            client(&t, "::ffff:127.0.0.1", &["[2001:db8::7]:443"]).unwrap(),
            "2001:db8::7"
        );
    }

    #[test]
    fn a_trusted_peer_without_a_header_or_with_only_proxies_in_it() {
        let t = trusted(&["127.0.0.1", "10.0.0.0/8"]);
        assert_eq!(client(&t, "127.0.0.1", &[]).unwrap(), "127.0.0.1");
        assert_eq!(
            client(&t, "127.0.0.1", &["10.0.0.9, 10.0.0.1"]).unwrap(),
            "10.0.0.9"
        );
    }

    #[test]
    fn a_trusted_proxys_unparsable_header_is_refused() {
        let t = trusted(&["127.0.0.1"]);
        let err = client(&t, "127.0.0.1", &["198.51.100.7, unknown"]).unwrap_err();
        assert!(err.contains("\"unknown\""), "{err}");
        let long = format!("198.51.100.7, {}", "x".repeat(10_000));
        let err = client(&t, "127.0.0.1", &[&long]).unwrap_err();
        assert!(err.len() < 200, "{err}");
        // An entry behind the client's own address is never read.
        assert_eq!(
            client(&t, "127.0.0.1", &["junk, 198.51.100.7"]).unwrap(),
            "198.51.100.7"
        );
    }

    #[test]
    fn config_entries_are_addresses_or_cidr_blocks() {
        let err = TrustedProxies::try_from(vec!["10.0.0.0/33".to_string()]).unwrap_err();
        assert!(err.contains("CIDR"), "{err}");
        assert!(trusted(&["::1", "fd00::/8"]).trusts("fd12::1".parse().unwrap()));
    }
}
