//! The answer to one question, computed from a [`Zone`] the way CoreDNS's `kubernetes`
//! plugin computes it (`plugin/kubernetes/{handler,reverse}.go` and
//! `plugin/backend_lookup.go`): the name is split against the zone it is in, what it
//! names is found ([`super::find`]), and records are made for the type asked. Owner names keep the case of the question; CNAMEs are followed inside the
//! zone and handed to the upstream servers outside it.
//!
//! Upstream's tests of this are transcribed in `testbed/tests/coredns/` and run by
//! `super::coredns_tests`.

use std::collections::HashSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};

use super::find::{family, fqdn, same_name, under, Ask, Host, NameError};
use super::zone::Zone;

/// How long a chain of CNAMEs is followed (CoreDNS's `maxCnameChainLength`).
const MAX_CHAIN: usize = 10;

/// What a question gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Reply(Reply),
    /// Not a name of the cluster's (or a reverse name it falls through on): for the
    /// upstream servers, if there are any.
    NotOurs,
}

/// An authoritative reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub answers: Vec<Part>,
    pub authority: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// A piece of the answer section.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Record(Record),
    /// The answer of the upstream servers to `name` `qtype` goes here: the end of a
    /// CNAME chain that leaves the cluster.
    Upstream {
        name: Name,
        qtype: RecordType,
    },
}

/// The address in a reverse name (`3.1.244.10.in-addr.arpa.`, or 32 nibbles under
/// `ip6.arpa.`), as CoreDNS's `ExtractAddressFromReverse`.
pub(super) fn reverse_address(lower: &str) -> Option<IpAddr> {
    if let Some(rest) = lower.strip_suffix(".in-addr.arpa.") {
        let mut parts: Vec<&str> = rest.split('.').collect();
        parts.reverse();
        return parts
            .join(".")
            .parse::<std::net::Ipv4Addr>()
            .ok()
            .map(IpAddr::V4);
    }
    let rest = lower.strip_suffix(".ip6.arpa.")?;
    let mut nibbles: Vec<&str> = rest.split('.').collect();
    nibbles.reverse();
    let groups: Vec<String> = nibbles.chunks(4).map(|c| c.concat()).collect();
    if nibbles.len() != 32 {
        return None;
    }
    groups
        .join(":")
        .parse::<std::net::Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

impl Zone {
    /// The zone `qname` is in (the longest that matches), as its index in
    /// [`Zone::zones`] (0 is the cluster domain) and its number of labels.
    fn zone_of(&self, qname: &Name) -> Option<(usize, u8)> {
        let within = |z: &LowerName| {
            z.num_labels() <= qname.num_labels()
                && z.iter()
                    .rev()
                    .zip(qname.iter().rev())
                    .all(|(a, b)| a.eq_ignore_ascii_case(b))
        };
        let (i, z) = self
            .zones
            .iter()
            .enumerate()
            .filter(|(_, z)| within(z))
            .max_by_key(|(_, z)| z.num_labels())?;
        Some((i, z.num_labels()))
    }

    fn soa(&self, apex: &Name) -> Record {
        let host = |l: &str| under(&[l], apex).expect("valid name");
        let mname = under(&["ns", "dns"], apex).expect("valid name");
        Record::from_rdata(
            apex.clone(),
            self.cfg.ttl.min(300),
            RData::SOA(SOA::new(
                mname,
                host("hostmaster"),
                self.serial,
                7200,
                1800,
                86400,
                self.cfg.ttl,
            )),
        )
    }

    /// A name that is not found falls through to the upstream: a reverse name whose
    /// address is outside the cluster's ranges, when so configured.
    fn falls_through(&self, lower: &str, reverse: bool) -> bool {
        self.cfg.fallthrough
            && reverse
            && !matches!(reverse_address(lower), Some(IpAddr::V4(ip))
                if self.cfg.service_cidr.contains(&ip) || self.cfg.pod_cidr.contains(&ip))
    }

    // Long because it is CoreDNS's ServeDNS: one arm per type asked, then the rcode
    // from what was found, in that order.
    /// The answer to `qname` `qtype`, as CoreDNS's `kubernetes` plugin gives it.
    pub fn lookup(&self, qname: &Name, qtype: RecordType) -> Outcome {
        let Some((zone_index, apex_labels)) = self.zone_of(qname) else {
            return Outcome::NotOurs;
        };
        let ask = Ask {
            zone: self,
            qname,
            zone_index,
            apex_labels,
            targets: matches!(qtype, RecordType::SRV | RecordType::NS),
        };
        let at_apex = qname.num_labels() == apex_labels;
        let mut answers = Vec::new();
        let mut additionals = Vec::new();
        let found: Result<(), NameError> = match qtype {
            RecordType::A | RecordType::AAAA => ask.address(qname, qtype, &[]).map(|r| answers = r),
            RecordType::TXT => ask.services(qname, qtype).map(|found| {
                for f in found {
                    if let Host::Text(t) = f.host {
                        let data = RData::TXT(TXT::new(vec![t.to_string()]));
                        answers.push(Part::Record(Record::from_rdata(qname.clone(), f.ttl, data)));
                    }
                }
            }),
            RecordType::CNAME => ask.services(qname, qtype).map(|found| {
                if let Some(Host::Name(target)) = found.first().map(|f| &f.host) {
                    if let Some(t) = fqdn(target) {
                        let ttl = self.cfg.ttl;
                        let data = RData::CNAME(CNAME(t));
                        answers.push(Part::Record(Record::from_rdata(qname.clone(), ttl, data)));
                    }
                }
            }),
            RecordType::PTR => ask.ptr(qname).map(|r| answers = r),
            RecordType::SRV => ask.srv(qname).map(|(r, extra)| {
                answers = r;
                additionals = extra;
            }),
            RecordType::SOA => {
                if at_apex {
                    answers.push(Part::Record(self.soa(&ask.apex())));
                }
                Ok(())
            }
            RecordType::AXFR | RecordType::IXFR => {
                return Outcome::Reply(Reply {
                    rcode: ResponseCode::Refused,
                    answers,
                    authority: Vec::new(),
                    additionals,
                })
            }
            RecordType::NS if at_apex => ask.services(qname, qtype).map(|found| {
                for f in found {
                    let Some(target) = f.target else {
                        continue;
                    };
                    let ns =
                        Record::from_rdata(qname.clone(), f.ttl, RData::NS(NS(target.clone())));
                    if let Host::Ip(ip) = f.host {
                        additionals.push(address(&target, ip, f.ttl));
                    }
                    if !answers.contains(&Part::Record(ns.clone())) {
                        answers.push(Part::Record(ns));
                    }
                }
            }),
            // Every other type: NODATA if the name exists (an A question tells), else
            // NXDOMAIN.
            _ => ask.services(qname, RecordType::A).map(|_| ()),
        };
        let (rcode, authority) = match found {
            Err(NameError)
                if self.falls_through(&qname.to_lowercase().to_ascii(), ask.reverse()) =>
            {
                return Outcome::NotOurs
            }
            Err(NameError) if !self.synced => (ResponseCode::ServFail, vec![self.soa(&ask.apex())]),
            Err(NameError) => (ResponseCode::NXDomain, vec![self.soa(&ask.apex())]),
            Ok(()) if answers.is_empty() => {
                additionals.clear();
                (ResponseCode::NoError, vec![self.soa(&ask.apex())])
            }
            Ok(()) => (ResponseCode::NoError, Vec::new()),
        };
        Outcome::Reply(Reply {
            rcode,
            answers,
            authority,
            additionals,
        })
    }
}

fn address(owner: &Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

impl Ask<'_> {
    /// A or AAAA records of `name` (CoreDNS's `plugin.A`/`AAAA`): addresses, and
    /// CNAMEs followed inside the zone (at most [`MAX_CHAIN`] deep, never twice to
    /// the same target) or left to the upstream servers outside it.
    fn address(
        &self,
        name: &Name,
        qtype: RecordType,
        chain: &[Name],
    ) -> Result<Vec<Part>, NameError> {
        if name.num_labels() == self.apex_labels {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut seen: HashSet<IpAddr> = HashSet::new();
        for f in self.services(name, qtype)? {
            match f.host {
                Host::Name(target) => {
                    let Some(target) = fqdn(&target) else {
                        continue;
                    };
                    if same_name(&target, name)
                        || chain.len() > MAX_CHAIN
                        || chain.iter().any(|t| same_name(t, &target))
                    {
                        continue;
                    }
                    let cname = Part::Record(Record::from_rdata(
                        name.clone(),
                        f.ttl,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if self.zone.zones[self.zone_index].zone_of(&LowerName::from(&target)) {
                        let mut longer = chain.to_vec();
                        longer.push(target.clone());
                        if let Ok(next) = self.address(&target, qtype, &longer) {
                            if !next.is_empty() {
                                out.push(cname);
                                out.extend(next);
                            }
                        }
                        continue;
                    }
                    out.push(cname);
                    out.push(Part::Upstream {
                        name: target,
                        qtype,
                    });
                }
                Host::Ip(ip) if family(qtype, &ip) && seen.insert(ip) => {
                    out.push(Part::Record(address(name, ip, f.ttl)));
                }
                _ => {}
            }
        }
        Ok(out)
    }

    /// SRV records and their targets' addresses (CoreDNS's `plugin.SRV`): weights
    /// shared over every endpoint address and port found, duplicates dropped after.
    fn srv(&self, name: &Name) -> Result<(Vec<Part>, Vec<Record>), NameError> {
        let found = self.services(name, RecordType::SRV)?;
        let total = 100 * found.len().max(1);
        let weight = ((100.0 / total as f64 * 100.0).floor() as u16).max(1);
        let (mut records, mut extra) = (Vec::new(), Vec::new());
        let mut seen: HashSet<(LowerName, u16)> = HashSet::new();
        let mut seen_address: HashSet<(LowerName, IpAddr)> = HashSet::new();
        for f in found {
            let (Host::Ip(ip), Ok(port), Some(name_of)) =
                (&f.host, u16::try_from(f.port), &f.target)
            else {
                continue;
            };
            let target = LowerName::from(name_of);
            if seen.insert((target.clone(), port)) {
                let data = RData::SRV(SRV::new(0, weight, port, name_of.clone()));
                records.push(Part::Record(Record::from_rdata(name.clone(), f.ttl, data)));
            }
            if seen_address.insert((target, *ip)) {
                extra.push(address(name_of, *ip, f.ttl));
            }
        }
        Ok((records, extra))
    }

    /// PTR records (CoreDNS's `Reverse`): a ClusterIP names its Service; otherwise
    /// every endpoint with the address names itself under its Service.
    fn ptr(&self, name: &Name) -> Result<Vec<Part>, NameError> {
        let lower = name.to_lowercase().to_ascii();
        let Some(ip) = reverse_address(&lower) else {
            return self.records(self.base(name)).map(|_| Vec::new());
        };
        let domain = &self.cfg().domain;
        let hosts: Vec<Name> = match self.zone.by_cluster_ip.get(&ip) {
            Some((ns, svc)) => under(&[svc, ns, "svc"], domain).into_iter().collect(),
            None => self
                .zone
                .by_address
                .get(&ip)
                .into_iter()
                .flatten()
                .filter_map(|(ns, svc, host)| under(&[host, svc, ns, "svc"], domain))
                .collect(),
        };
        if hosts.is_empty() {
            return Err(NameError);
        }
        let mut seen = HashSet::new();
        Ok(hosts
            .into_iter()
            .filter(|h| seen.insert(LowerName::from(h)))
            .map(|h| {
                Part::Record(Record::from_rdata(
                    name.clone(),
                    self.cfg().ttl,
                    RData::PTR(PTR(h)),
                ))
            })
            .collect())
    }
}
