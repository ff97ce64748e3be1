//! The per-address connection cap: at most N connections open at once from
//! one client address, so that one client cannot take every slot of
//! `max_connections`.
//!
//! The cap applies to the TCP peer: the client address a trusted proxy
//! names in `X-Forwarded-For` is only known once a request has been read,
//! which is too late. Trusted proxies themselves are exempt (they carry
//! many clients; `max_connections` bounds them). IPv6 peers are grouped per
//! /64, the block one subscriber usually gets, so that a client cannot
//! escape the cap by hopping addresses; IPv4-mapped IPv6 addresses count as
//! the IPv4 address.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::cidr::Cidr;

/// Open connections per address group.
#[derive(Debug)]
pub(super) struct PerAddress {
    cap: usize,
    exempt: Vec<Cidr>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; its slot is freed on drop.
#[derive(Debug)]
pub(super) struct Slot {
    table: Arc<PerAddress>,
    /// `None` for uncounted connections (no cap, or an exempt peer).
    group: Option<IpAddr>,
}

/// The group `ip` counts in: itself for IPv4, its /64 for IPv6.
fn group(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

impl PerAddress {
    /// At most `cap` connections per group (0: no cap); `exempt` peers
    /// (trusted proxies) are not counted.
    pub(super) fn new(cap: usize, exempt: &[Cidr]) -> Arc<Self> {
        Arc::new(PerAddress {
            cap,
            exempt: exempt.to_vec(),
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Counts stay consistent even if a holder panicked.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a connection from `peer`, or `None` when its group
    /// already has `cap` connections open.
    pub(super) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Slot> {
        let peer = peer.to_canonical();
        if self.cap == 0 || Cidr::any_contains(&self.exempt, peer) {
            return Some(Slot {
                table: self.clone(),
                group: None,
            });
        }
        let g = group(peer);
        let mut open = self.lock();
        let n = open.entry(g).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: self.clone(),
            group: Some(g),
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(g) = self.group else { return };
        let mut open = self.table.lock();
        if let Some(n) = open.get_mut(&g) {
            *n -= 1;
            if *n == 0 {
                open.remove(&g);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_per_ipv4_address_and_per_ipv6_64_and_frees_on_drop() {
        let t = PerAddress::new(2, &[]);
        let a1 = t.admit(ip("192.0.2.1")).unwrap();
        let _a2 = t.admit(ip("::ffff:192.0.2.1")).unwrap();
        assert!(t.admit(ip("192.0.2.1")).is_none(), "third from one address");
        assert!(t.admit(ip("192.0.2.2")).is_some(), "another address");
        drop(a1);
        assert!(t.admit(ip("192.0.2.1")).is_some(), "a slot was freed");

        let _b1 = t.admit(ip("2001:db8:0:1::1")).unwrap();
        let _b2 = t.admit(ip("2001:db8:0:1:ffff::2")).unwrap();
        assert!(t.admit(ip("2001:db8:0:1::3")).is_none(), "same /64");
        assert!(t.admit(ip("2001:db8:0:2::1")).is_some(), "another /64");
    }

    #[test]
    fn trusted_proxies_and_a_zero_cap_are_not_counted() {
        let t = PerAddress::new(1, &[net("10.0.0.1"), net("172.28.0.0/16"), net("fd00::/8")]);
        let _p: Vec<_> = (0..5).map(|_| t.admit(ip("10.0.0.1")).unwrap()).collect();
        let _r: Vec<_> = (0..5)
            .map(|_| t.admit(ip("::ffff:172.28.3.4")).unwrap())
            .collect();
        let _s: Vec<_> = (0..5).map(|_| t.admit(ip("fd00::7")).unwrap()).collect();
        let _c = t.admit(ip("10.0.0.2")).unwrap();
        assert!(t.admit(ip("10.0.0.2")).is_none());
        let _d = t.admit(ip("172.29.0.1")).unwrap();
        assert!(t.admit(ip("172.29.0.1")).is_none(), "outside the range");
        let open = PerAddress::new(0, &[]);
        let _q: Vec<_> = (0..5)
            .map(|_| open.admit(ip("10.0.0.2")).unwrap())
            .collect();
        assert!(open.lock().is_empty());
    }
}
