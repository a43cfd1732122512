//! ClusterIP allocation from the service CIDR, as the API server does it: the first
//! address is the `kubernetes` Service's, the tenth (or the configured one) is kept for
//! `kube-system/kube-dns`,
//! a requested address is honoured when it is in range and free. Unlike Kubernetes
//! (which picks at random) the lowest free address is given, so runs repeat exactly.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The Service that may have the tenth address.
pub const DNS_SERVICE: (&str, &str) = ("kube-system", "kube-dns");
/// The Service that has the first address.
pub const API_SERVICE: (&str, &str) = ("default", "kubernetes");

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("{ip} is not in the service CIDR {cidr}")]
    OutOfRange { ip: Ipv4Addr, cidr: Ipv4Net },
    #[error("{ip} is already allocated")]
    Taken { ip: Ipv4Addr },
    #[error("{ip} is reserved for the {owner} Service")]
    Reserved { ip: Ipv4Addr, owner: String },
    #[error("the service CIDR {cidr} is full")]
    Full { cidr: Ipv4Net },
}

#[derive(Debug, Clone)]
pub struct Allocator {
    cidr: Ipv4Net,
    used: BTreeSet<u32>,
    /// No free address below this one (a hint; kept exact).
    low: u32,
    /// The address kept for kube-dns.
    dns: u32,
}

impl Allocator {
    pub fn new(cidr: Ipv4Net) -> Self {
        Allocator {
            cidr,
            used: BTreeSet::new(),
            low: u32::from(cidr.network()) + 1,
            dns: u32::from(cidr.network()) + 10,
        }
    }

    /// Keeps `ip` (in the range) for kube-dns instead of the tenth address.
    pub fn with_dns_ip(self, ip: Ipv4Addr) -> Self {
        Allocator {
            dns: u32::from(ip),
            ..self
        }
    }

    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    fn first(&self) -> u32 {
        u32::from(self.cidr.network()) + 1
    }

    fn last(&self) -> u32 {
        u32::from(self.cidr.broadcast()) - 1
    }

    /// The address kept for `owner` (`(namespace, name)`), if any.
    fn reserved(&self, ip: u32) -> Option<(&'static str, &'static str)> {
        if ip == self.first() {
            Some(API_SERVICE)
        } else if ip == self.dns {
            Some(DNS_SERVICE)
        } else {
            None
        }
    }

    /// Whether `ip` could be given to `owner` now.
    pub fn check(&self, ip: Ipv4Addr, owner: (&str, &str)) -> Result<(), AllocError> {
        let n = u32::from(ip);
        if !(self.first()..=self.last()).contains(&n) {
            return Err(AllocError::OutOfRange {
                ip,
                cidr: self.cidr,
            });
        }
        if self.used.contains(&n) {
            return Err(AllocError::Taken { ip });
        }
        if let Some(r) = self.reserved(n) {
            if r != owner {
                return Err(AllocError::Reserved {
                    ip,
                    owner: format!("{}/{}", r.0, r.1),
                });
            }
        }
        Ok(())
    }

    /// Takes `ip` for `owner`.
    pub fn take(&mut self, ip: Ipv4Addr, owner: (&str, &str)) -> Result<(), AllocError> {
        self.check(ip, owner)?;
        self.used.insert(u32::from(ip));
        Ok(())
    }

    /// The lowest free address that `owner` may have (the reserved ones go to their
    /// owners only).
    pub fn next(&self, owner: (&str, &str)) -> Result<Ipv4Addr, AllocError> {
        let mut n = self.low.max(self.first());
        while n <= self.last() {
            if !self.used.contains(&n) && self.reserved(n).is_none_or(|r| r == owner) {
                return Ok(Ipv4Addr::from(n));
            }
            n += 1;
        }
        Err(AllocError::Full { cidr: self.cidr })
    }

    /// Takes the lowest free address.
    pub fn allocate(&mut self, owner: (&str, &str)) -> Result<Ipv4Addr, AllocError> {
        let ip = self.next(owner)?;
        self.used.insert(u32::from(ip));
        // Everything below `ip` that is not reserved is used.
        if self.reserved(u32::from(ip)).is_none() {
            self.low = u32::from(ip) + 1;
        }
        Ok(ip)
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        let n = u32::from(ip);
        if self.used.remove(&n) {
            self.low = self.low.min(n);
        }
    }

    pub fn in_use(&self, ip: Ipv4Addr) -> bool {
        self.used.contains(&u32::from(ip))
    }

    pub fn len(&self) -> usize {
        self.used.len()
    }

    pub fn is_empty(&self) -> bool {
        self.used.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn reserved_addresses_go_to_their_owners_only() {
        let mut a = Allocator::new("10.96.0.0/12".parse().unwrap());
        assert_eq!(a.allocate(("default", "web")).unwrap(), ip("10.96.0.2"));
        assert_eq!(
            a.take(ip("10.96.0.1"), ("default", "web")),
            Err(AllocError::Reserved {
                ip: ip("10.96.0.1"),
                owner: "default/kubernetes".into()
            })
        );
        a.take(ip("10.96.0.1"), API_SERVICE).unwrap();
        a.take(ip("10.96.0.10"), DNS_SERVICE).unwrap();
        for i in 3..=12 {
            let got = a.allocate(("default", "x")).unwrap();
            assert_ne!(got, ip("10.96.0.10"));
            assert_eq!(
                u32::from(got),
                u32::from(ip("10.96.0.0")) + i + u32::from(i >= 10)
            );
        }
    }

    #[test]
    fn the_dns_address_can_be_another() {
        let a = Allocator::new("10.96.0.0/12".parse().unwrap()).with_dns_ip(ip("10.96.0.3"));
        assert_eq!(
            a.check(ip("10.96.0.3"), ("default", "web")),
            Err(AllocError::Reserved {
                ip: ip("10.96.0.3"),
                owner: "kube-system/kube-dns".into()
            })
        );
        assert_eq!(a.check(ip("10.96.0.3"), DNS_SERVICE), Ok(()));
        assert_eq!(a.check(ip("10.96.0.10"), ("default", "web")), Ok(()));
        assert_eq!(a.next(("default", "web")).unwrap(), ip("10.96.0.2"));
    }

    #[test]
    fn requested_addresses_are_checked_and_freed_ones_reused_lowest_first() {
        let mut a = Allocator::new("10.96.0.0/28".parse().unwrap());
        assert!(matches!(
            a.take(ip("10.97.0.1"), ("a", "b")),
            Err(AllocError::OutOfRange { .. })
        ));
        assert!(matches!(
            a.take(ip("10.96.0.15"), ("a", "b")),
            Err(AllocError::OutOfRange { .. })
        ));
        a.take(ip("10.96.0.5"), ("a", "b")).unwrap();
        assert_eq!(
            a.take(ip("10.96.0.5"), ("a", "c")),
            Err(AllocError::Taken {
                ip: ip("10.96.0.5")
            })
        );
        let got: Vec<Ipv4Addr> = (0..3).map(|_| a.allocate(("a", "x")).unwrap()).collect();
        assert_eq!(got, [ip("10.96.0.2"), ip("10.96.0.3"), ip("10.96.0.4")]);
        a.release(ip("10.96.0.3"));
        assert_eq!(a.allocate(("a", "x")).unwrap(), ip("10.96.0.3"));
        // .6 .7 .8 .9 .11 .12 .13 .14 are left; .1 and .10 are kept.
        for _ in 0..8 {
            a.allocate(("a", "x")).unwrap();
        }
        assert!(matches!(
            a.allocate(("a", "x")),
            Err(AllocError::Full { .. })
        ));
    }
}
