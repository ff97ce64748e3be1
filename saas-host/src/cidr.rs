//! Address ranges in CIDR notation (`10.0.0.0/8`, `fd00::/8`, or a bare
//! address = one host), for `TRUSTED_PROXIES`: a container network or a
//! load balancer's subnet is a range, not a list of addresses.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, what a dual-stack socket
//! reports for an IPv4 peer) are matched as the IPv4 address they carry, so
//! `10.0.0.0/8` trusts them too.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 network: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// The network address (host bits zero).
    addr: IpAddr,
    /// The prefix length, 0..=32 (IPv4) or 0..=128 (IPv6).
    prefix: u8,
}

/// Why a CIDR range did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CidrError {
    /// The address part is not an IP address.
    #[error("invalid IP address {0:?} (expected e.g. 10.0.0.1, 10.0.0.0/8 or fd00::/8)")]
    Address(String),
    /// The prefix length is not a number within the address family's bits.
    #[error("invalid prefix length {0:?} (0 to 32 for IPv4, 0 to 128 for IPv6)")]
    Prefix(String),
    /// Bits set below the prefix: almost always a typo for another range.
    #[error("{given} has bits set after its /{prefix} prefix: did you mean {network}/{prefix}?")]
    HostBits {
        /// What was written.
        given: String,
        /// The prefix length.
        prefix: u8,
        /// The network the prefix selects.
        network: IpAddr,
    },
}

/// `bits` ones from the top of a 128-bit word.
fn mask128(bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(bits))
    }
}

/// `bits` ones from the top of a 32-bit word.
fn mask32(bits: u8) -> u32 {
    if bits == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(bits))
    }
}

impl Cidr {
    /// The network `addr/prefix`, `None` when the prefix is too long for the
    /// family or `addr` has host bits set.
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        let ok = match addr {
            IpAddr::V4(a) => prefix <= 32 && u32::from(a) & !mask32(prefix) == 0,
            IpAddr::V6(a) => prefix <= 128 && u128::from(a) & !mask128(prefix) == 0,
        };
        ok.then_some(Cidr { addr, prefix })
    }

    /// The one-address network of `ip` (/32 or /128).
    pub fn host(ip: IpAddr) -> Cidr {
        let ip = ip.to_canonical();
        Cidr {
            addr: ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                (u32::from(ip) ^ u32::from(net)) & mask32(self.prefix) == 0
            }
            (IpAddr::V6(net), ip) => {
                let ip: Ipv6Addr = match ip {
                    IpAddr::V6(v6) => v6,
                    IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                };
                (u128::from(ip) ^ u128::from(net)) & mask128(self.prefix) == 0
            }
            (IpAddr::V4(_), IpAddr::V6(_)) => false,
        }
    }

    /// Whether any network of `list` contains `ip`.
    pub fn any_contains(list: &[Cidr], ip: IpAddr) -> bool {
        list.iter().any(|n| n.contains(ip))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// `ADDR` (one host) or `ADDR/PREFIX`; spaces around it are ignored.
    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().map_err(|_| CidrError::Address(a.to_owned()))?;
        let Some(p) = p else {
            return Ok(Cidr::host(addr));
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = p
            .parse::<u8>()
            .ok()
            .filter(|&n| n <= max && !p.starts_with('+'))
            .ok_or_else(|| CidrError::Prefix(p.to_owned()))?;
        Cidr::new(addr, prefix).ok_or_else(|| CidrError::HostBits {
            given: s.to_owned(),
            prefix,
            network: match addr {
                IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
                IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
            },
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_ranges() {
        let n = net("10.0.0.0/8");
        assert!(n.contains(ip("10.0.0.0")));
        assert!(n.contains(ip("10.255.255.255")));
        assert!(!n.contains(ip("11.0.0.0")));
        assert!(!n.contains(ip("9.255.255.255")));
        assert!(
            n.contains(ip("::ffff:10.1.2.3")),
            "IPv4-mapped counts as IPv4"
        );
        assert!(
            !n.contains(ip("::a01:203")),
            "an IPv4-compatible address is IPv6"
        );
        let n = net("172.28.0.0/16");
        assert!(n.contains(ip("172.28.5.9")));
        assert!(!n.contains(ip("172.29.0.1")));
        let all = net("0.0.0.0/0");
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")), "IPv4 /0 is not IPv6");
        let one = net("192.0.2.7");
        assert_eq!(one, net("192.0.2.7/32"));
        assert!(one.contains(ip("192.0.2.7")));
        assert!(!one.contains(ip("192.0.2.6")));
        assert_eq!(one.to_string(), "192.0.2.7/32");
        assert!(net("192.0.2.6/31").contains(ip("192.0.2.7")));
    }

    #[test]
    fn ipv6_ranges() {
        let n = net("fd00::/8");
        assert!(n.contains(ip("fd12:3456::1")));
        assert!(!n.contains(ip("fe80::1")));
        assert!(!n.contains(ip("10.0.0.1")));
        let n = net("2001:db8:0:1::/64");
        assert!(n.contains(ip("2001:db8:0:1:ffff:ffff:ffff:ffff")));
        assert!(!n.contains(ip("2001:db8:0:2::")));
        let all = net("::/0");
        assert!(all.contains(ip("2001:db8::1")));
        assert!(
            all.contains(ip("10.0.0.1")),
            "::/0 holds the mapped IPv4 space"
        );
        assert!(net("::ffff:0:0/96").contains(ip("192.0.2.1")));
        let one = net("::1");
        assert_eq!(one, net("::1/128"));
        assert!(one.contains(ip("::1")));
        assert!(!one.contains(ip("::2")));
        assert_eq!(
            net("::ffff:10.0.0.1"),
            net("10.0.0.1"),
            "a mapped host is IPv4"
        );
        assert!(net("2001:db8::1/128").contains(ip("2001:db8::1")));
    }

    #[test]
    fn bad_ranges_are_refused_with_a_reason() {
        assert_eq!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBits {
                given: "10.0.0.1/8".into(),
                prefix: 8,
                network: ip("10.0.0.0"),
            })
        );
        let e = "10.0.0.1/8".parse::<Cidr>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8"), "{e}");
        for (s, want) in [
            ("10.0.0.0/33", CidrError::Prefix("33".into())),
            ("fd00::/129", CidrError::Prefix("129".into())),
            ("10.0.0.0/", CidrError::Prefix("".into())),
            ("10.0.0.0/+8", CidrError::Prefix("+8".into())),
            ("10.0.0.0/-1", CidrError::Prefix("-1".into())),
            ("10.0.0.0/8/8", CidrError::Prefix("8/8".into())),
            ("localhost", CidrError::Address("localhost".into())),
            ("10.0.0/8", CidrError::Address("10.0.0".into())),
            ("", CidrError::Address("".into())),
        ] {
            assert_eq!(s.parse::<Cidr>(), Err(want), "{s}");
        }
        assert!(matches!(
            "fd00::1/8".parse::<Cidr>(),
            Err(CidrError::HostBits { .. })
        ));
        assert_eq!(net(" 10.0.0.0/8 "), net("10.0.0.0/8"));
    }

    #[test]
    fn any_contains_checks_every_range() {
        let list = [net("10.0.0.0/8"), net("fd00::/8"), net("192.0.2.1")];
        assert!(Cidr::any_contains(&list, ip("10.9.9.9")));
        assert!(Cidr::any_contains(&list, ip("fd00::5")));
        assert!(Cidr::any_contains(&list, ip("192.0.2.1")));
        assert!(!Cidr::any_contains(&list, ip("192.0.2.2")));
        assert!(!Cidr::any_contains(&[], ip("10.0.0.1")));
    }
}
