//! Address blocks: an IPv4 or IPv6 address with a prefix length (CIDR), as an SSH role's
//! `source_address` names where its grants may be used from.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An IPv4 or IPv6 network: `ADDRESS/PREFIX`, or one address (`ADDRESS`, the whole length).
/// Read as OpenSSH reads a certificate's `source-address` entries: a prefix of decimal digits
/// no longer than the address, and no address bits set past it (`10.1.2.3/8` is refused, as
/// sshd would refuse the whole certificate for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressBlock {
    network: IpAddr,
    prefix: u8,
}

/// Why an address block could not be read: said of the entry as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AddressBlockError(String);

impl AddressBlock {
    /// The network's first address.
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// How many leading bits of an address must match [`AddressBlock::network`]'s.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block. An IPv4 address carried in IPv6 (`::ffff:a.b.c.d`, as a
    /// dual-stack listener sees an IPv4 peer) is read as the IPv4 address it is, as sshd reads
    /// it.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, self.prefix) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits`, an address `width` bits long, with every bit past the first `prefix` cleared.
fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    let past = u32::from(width.saturating_sub(prefix));
    let mask = u128::MAX.checked_shl(past).unwrap_or(0);
    let mask = if width == 128 {
        mask
    } else {
        mask & ((1u128 << width) - 1)
    };
    bits & mask
}

fn width(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

impl FromStr for AddressBlock {
    type Err = AddressBlockError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let wrong = |why: String| AddressBlockError(format!("{text:?} {why}"));
        let (address, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().map_err(|_| {
            wrong(
                "is not an IPv4 or IPv6 address or network (e.g. 192.0.2.7, 10.0.0.0/8, 2001:db8::/32)"
                    .into(),
            )
        })?;
        if let IpAddr::V6(v6) = network
            && let Some(v4) = v6.to_ipv4_mapped()
        {
            // The IPv4 form keeps the network: a mapped /104 is a /8.
            let written = match prefix.map(str::parse::<u8>) {
                None => v4.to_string(),
                Some(Ok(p @ 96..=128)) => format!("{v4}/{}", p - 96),
                Some(_) => return Err(wrong(
                    "mixes IPv4 written as IPv6 with a prefix shorter than /96, which sshd never matches: write the IPv4 network as such (e.g. 10.0.0.0/8)".into(),
                )),
            };
            return Err(wrong(format!(
                "is an IPv4 address written as IPv6, which sshd never matches: write it as {written}"
            )));
        }
        let width = width(network);
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|n| p.bytes().all(|b| b.is_ascii_digit()) && *n <= width)
                .ok_or_else(|| {
                    wrong(format!(
                        "has an invalid prefix length: after the / goes a number from 0 to {width}"
                    ))
                })?,
        };
        let bits = match network {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        if masked(bits, width, prefix) != bits {
            let first = masked(bits, width, prefix);
            let first = match network {
                IpAddr::V4(_) => IpAddr::V4(u32::try_from(first).unwrap_or_default().into()),
                IpAddr::V6(_) => IpAddr::V6(first.into()),
            };
            return Err(wrong(format!(
                "has address bits set past its /{prefix} prefix, which OpenSSH refuses: write the network as {first}/{prefix}, or the one address as {address}"
            )));
        }
        Ok(AddressBlock { network, prefix })
    }
}

/// `NETWORK/PREFIX`, the network's first address and the prefix length always written.
impl fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(text: &str) -> AddressBlock {
        text.parse().unwrap()
    }

    fn refused(text: &str) -> String {
        text.parse::<AddressBlock>().unwrap_err().to_string()
    }

    #[test]
    fn blocks_are_read_as_openssh_reads_them() {
        assert_eq!(block("127.0.0.1").to_string(), "127.0.0.1/32");
        assert_eq!(block("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(block("0.0.0.0/0").to_string(), "0.0.0.0/0");
        assert_eq!(block("2001:db8::/32").to_string(), "2001:db8::/32");
        assert_eq!(block("::1").to_string(), "::1/128");
        assert!(refused("10.0.0.0/33").contains("a number from 0 to 32"));
        assert!(refused("::/129").contains("a number from 0 to 128"));
        assert!(refused("10.0.0.0/+8").contains("invalid prefix"));
        assert!(refused("10.0.0.0/").contains("invalid prefix"));
        assert!(refused("10.0.0.0/ 8").contains("invalid prefix"));
        let set = refused("10.1.2.3/8");
        assert!(
            set.contains("bits set past its /8 prefix") && set.contains("10.0.0.0/8"),
            "{set}"
        );
        for bad in [
            "",
            "web",
            "10.0.0",
            "10.0.0.0.0",
            "fe80::1%eth0",
            " 10.0.0.1",
        ] {
            assert!(refused(bad).contains("not an IPv4 or IPv6"), "{bad:?}");
        }
        assert!(refused("::ffff:10.0.0.1").contains("write it as 10.0.0.1"));
        // A mapped network's hint keeps its size.
        assert!(refused("::ffff:10.0.0.0/104").contains("write it as 10.0.0.0/8"));
        assert!(refused("::ffff:0:0/96").contains("write it as 0.0.0.0/0"));
        assert!(refused("::ffff:10.0.0.1/128").contains("write it as 10.0.0.1/32"));
        assert!(refused("::ffff:0:0/95").contains("prefix shorter than /96"));
    }

    #[test]
    fn an_address_is_in_its_blocks_only() {
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        assert!(block("127.0.0.1/32").contains(ip("127.0.0.1")));
        assert!(!block("10.9.9.9/32").contains(ip("127.0.0.1")));
        assert!(block("10.0.0.0/8").contains(ip("10.255.1.2")));
        assert!(!block("10.0.0.0/8").contains(ip("11.0.0.0")));
        assert!(block("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!block("0.0.0.0/0").contains(ip("::1")));
        assert!(block("::/0").contains(ip("2001:db8::1")));
        assert!(block("2001:db8::/32").contains(ip("2001:db8:ffff::1")));
        assert!(!block("2001:db8::/32").contains(ip("2001:db9::1")));
        // An IPv4 peer as a dual-stack listener sees it.
        assert!(block("127.0.0.0/8").contains(ip("::ffff:127.0.0.1")));
    }
}
