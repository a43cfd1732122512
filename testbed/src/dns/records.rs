//! The cluster's DNS records as a pure function of its Services and EndpointSlices,
//! following the Kubernetes DNS-Based Service Discovery specification and answering
//! the way CoreDNS's `kubernetes` plugin does where the specification leaves a choice
//! (SRV priority 0 and weight 100/N, dashed-IP hostnames, `pods insecure`).
//!
//! A [`Zone`] is an immutable snapshot; the server swaps in a new one on every change.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::str::FromStr;

use hickory_proto::rr::rdata::{A, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::labels::SERVICE_NAME_LABEL;

/// The cluster domain unless configured otherwise.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The TTL of answers unless configured otherwise, as CoreDNS's `kubernetes` plugin.
pub const DEFAULT_TTL: u32 = 5;

/// The schema version of the specification these records follow.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// What the server is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The cluster domain, e.g. `cluster.local.`.
    pub domain: Name,
    /// The TTL of every record, and the SOA's negative-caching TTL.
    pub ttl: u32,
    /// The kube-dns Service's ClusterIP (the address of `ns.dns.<domain>`).
    pub dns_ip: Ipv4Addr,
    /// Reverse lookups in these ranges are ours: a miss is NXDOMAIN, not forwarded.
    pub service_cidr: Ipv4Net,
    pub pod_cidr: Ipv4Net,
}

impl Config {
    /// The defaults: `cluster.local`, TTL 5 s as CoreDNS's `kubernetes` plugin.
    pub fn new(dns_ip: Ipv4Addr, service_cidr: Ipv4Net, pod_cidr: Ipv4Net) -> Self {
        Config {
            domain: Name::from_ascii(format!("{DEFAULT_DOMAIN}.")).expect("valid name"),
            ttl: DEFAULT_TTL,
            dns_ip,
            service_cidr,
            pod_cidr,
        }
    }
}

impl Config {
    /// The same, for the cluster domain `domain` (`example.org`, final dot optional).
    pub fn with_domain(self, domain: &str) -> Result<Self, String> {
        let name = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
            .map_err(|e| format!("{domain:?} is not a domain name: {e}"))?;
        Ok(Config {
            domain: name.to_lowercase(),
            ..self
        })
    }
}

/// What a query gets from the zone.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// NOERROR with records (and helpful ones for the additional section).
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// NOERROR without records: the name exists, not with that type. `soa` goes in
    /// the authority section.
    NoData { soa: Record },
    /// The name does not exist.
    NxDomain { soa: Record },
    /// Not a name of the cluster's: for the upstream, if there is one.
    NotOurs,
}

/// One snapshot of every record.
#[derive(Debug, Clone)]
pub struct Zone {
    cfg: Config,
    serial: u32,
    records: HashMap<LowerName, Vec<Record>>,
    /// Every owner name and the names between it and the apex (empty non-terminals).
    names: HashSet<LowerName>,
}

fn name(s: &str) -> Option<Name> {
    Name::from_ascii(s).ok()
}

/// `10.244.1.3` as a hostname label: `10-244-1-3`.
fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// `3.1.244.10.in-addr.arpa.`
fn reverse(ip: Ipv4Addr) -> Name {
    let o = ip.octets();
    Name::from_ascii(format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0]))
        .expect("valid name")
}

fn in_addr_arpa() -> LowerName {
    LowerName::from(Name::from_ascii("in-addr.arpa.").expect("valid name"))
}

/// The IP of a `d.c.b.a.in-addr.arpa.` name.
fn reverse_ip(name: &LowerName) -> Option<Ipv4Addr> {
    let s = name.to_string();
    let rest = s.strip_suffix(".in-addr.arpa.")?;
    let mut o: Vec<u8> = rest
        .split('.')
        .map(|l| l.parse().ok())
        .collect::<Option<_>>()?;
    if o.len() != 4 {
        return None;
    }
    o.reverse();
    Some(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
}

/// A Service port's SRV owner: `_<port>._<proto>.<svc>.<ns>.svc.<zone>.`
fn srv_owner(port_name: &str, protocol: &str, service: &Name) -> Option<Name> {
    name(&format!("_{port_name}._{}", protocol.to_ascii_lowercase()))?
        .append_domain(service)
        .ok()
}

struct Builder {
    cfg: Config,
    records: HashMap<LowerName, Vec<Record>>,
}

impl Builder {
    fn add(&mut self, owner: &Name, data: RData) {
        let record = Record::from_rdata(owner.clone(), self.cfg.ttl, data);
        let list = self.records.entry(LowerName::from(owner)).or_default();
        if !list.contains(&record) {
            list.push(record);
        }
    }

    /// SRV records at `owner`, one per target, weighted evenly as CoreDNS does.
    fn add_srv(&mut self, owner: &Name, targets: &[(u16, Name)]) {
        let weight = (100 / targets.len().max(1)) as u16;
        for (port, target) in targets {
            self.add(
                owner,
                RData::SRV(SRV::new(0, weight, *port, target.clone())),
            );
        }
    }

    // Long because it transcribes the Kubernetes DNS specification's records of a Service
    // (A, SRV, PTR, per port and endpoint) section by section.
    fn service(&mut self, svc: &Service, slices: &[&EndpointSlice]) {
        let (Some(svc_name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
            return;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
        let Some(owner) = name(&format!("{svc_name}.{ns}.svc"))
            .and_then(|n| n.append_domain(&self.cfg.domain).ok())
        else {
            return;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec
                .external_name
                .as_deref()
                .and_then(|e| name(&format!("{}.", e.trim_end_matches('.'))))
            {
                self.add(&owner, RData::CNAME(CNAME(target)));
            }
            return;
        }
        let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("None");
        if cluster_ip != "None" {
            let Ok(ip) = cluster_ip.parse::<Ipv4Addr>() else {
                return;
            };
            self.add(&owner, RData::A(A(ip)));
            self.add(&reverse(ip), RData::PTR(PTR(owner.clone())));
            for p in spec.ports.iter().flatten() {
                let (Some(port_name), Ok(port)) = (p.name.as_deref(), u16::try_from(p.port)) else {
                    continue;
                };
                let protocol = p.protocol.as_deref().unwrap_or("TCP");
                if let Some(srv) = srv_owner(port_name, protocol, &owner) {
                    self.add_srv(&srv, &[(port, owner.clone())]);
                }
            }
            return;
        }
        // Headless: every ready endpoint (or every endpoint, with
        // publishNotReadyAddresses), by the Service's name and by its own hostname.
        let tolerate = spec.publish_not_ready_addresses == Some(true);
        let mut srv: HashMap<Name, Vec<(u16, Name)>> = HashMap::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !tolerate {
                    continue;
                }
                for addr in &ep.addresses {
                    let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                        continue;
                    };
                    let host = ep.hostname.clone().unwrap_or_else(|| dashed(ip));
                    let Some(host_name) = name(&host).and_then(|h| h.append_domain(&owner).ok())
                    else {
                        continue;
                    };
                    self.add(&owner, RData::A(A(ip)));
                    self.add(&host_name, RData::A(A(ip)));
                    self.add(&reverse(ip), RData::PTR(PTR(host_name.clone())));
                    for p in slice.ports.iter().flatten() {
                        let (Some(port_name), Some(port)) = (
                            p.name.as_deref().filter(|n| !n.is_empty()),
                            p.port.and_then(|n| u16::try_from(n).ok()),
                        ) else {
                            continue;
                        };
                        let protocol = p.protocol.as_deref().unwrap_or("TCP");
                        if let Some(o) = srv_owner(port_name, protocol, &owner) {
                            srv.entry(o).or_default().push((port, host_name.clone()));
                        }
                    }
                }
            }
        }
        for (o, mut targets) in srv {
            targets.sort();
            targets.dedup();
            self.add_srv(&o, &targets);
        }
    }
}

impl Zone {
    /// The records of `services`, with the endpoints in `slices` (matched to their
    /// Service by the `kubernetes.io/service-name` label). `serial` is the SOA's.
    pub fn build<'a>(
        cfg: &Config,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
        serial: u32,
    ) -> Zone {
        let mut by_service: HashMap<(&str, &str), Vec<&EndpointSlice>> = HashMap::new();
        for s in slices {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            if let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            {
                by_service.entry((ns, svc.as_str())).or_default().push(s);
            }
        }
        let mut b = Builder {
            cfg: cfg.clone(),
            records: HashMap::new(),
        };
        let apex = cfg.domain.clone();
        let ns_host = name("ns.dns")
            .and_then(|n| n.append_domain(&apex).ok())
            .expect("valid name");
        b.add(&apex, RData::NS(NS(ns_host.clone())));
        b.add(&ns_host, RData::A(A(cfg.dns_ip)));
        let version = name("dns-version")
            .and_then(|n| n.append_domain(&apex).ok())
            .expect("valid name");
        b.add(&version, RData::TXT(TXT::new(vec![SCHEMA_VERSION.into()])));
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let n = svc.metadata.name.as_deref().unwrap_or_default();
            let slices = by_service.get(&(ns, n)).map(Vec::as_slice).unwrap_or(&[]);
            b.service(svc, slices);
        }
        let mut names = HashSet::new();
        let arpa = in_addr_arpa();
        let apex_lower = LowerName::from(&apex);
        for owner in b.records.keys() {
            let top = if arpa.zone_of(owner) {
                &arpa
            } else {
                &apex_lower
            };
            let mut n = owner.clone();
            while names.insert(n.clone()) && n != *top && n.num_labels() > top.num_labels() {
                n = n.base_name();
            }
        }
        names.insert(apex_lower);
        Zone {
            cfg: cfg.clone(),
            serial,
            records: b.records,
            names,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The SOA of the zone `apex` (`cluster.local.` or `in-addr.arpa.`), as CoreDNS
    /// writes it.
    fn soa(&self, apex: &Name) -> Record {
        let host = |l: &str| {
            name(l)
                .and_then(|n| n.append_domain(apex).ok())
                .expect("valid name")
        };
        Record::from_rdata(
            apex.clone(),
            self.cfg.ttl,
            RData::SOA(SOA::new(
                host("ns.dns"),
                host("hostmaster"),
                self.serial,
                7200,
                1800,
                86400,
                self.cfg.ttl,
            )),
        )
    }

    /// The answer to `qname` `qtype` (`ANY` gives every type the name has).
    pub fn lookup(&self, qname: &LowerName, qtype: RecordType) -> Outcome {
        let apex = LowerName::from(&self.cfg.domain);
        let arpa = in_addr_arpa();
        let (zone_apex, ours) = if apex.zone_of(qname) {
            (self.cfg.domain.clone(), true)
        } else if arpa.zone_of(qname) {
            let ours = reverse_ip(qname).is_some_and(|ip| {
                self.cfg.service_cidr.contains(&ip) || self.cfg.pod_cidr.contains(&ip)
            }) || self.records.contains_key(qname);
            (Name::from(arpa), ours)
        } else {
            return Outcome::NotOurs;
        };
        if !ours {
            return Outcome::NotOurs;
        }
        if qtype == RecordType::SOA && *qname == LowerName::from(&zone_apex) {
            return Outcome::Answer {
                answers: vec![self.soa(&zone_apex)],
                additionals: Vec::new(),
            };
        }
        if let Some(outcome) = self.pod_record(qname, qtype, &zone_apex) {
            return outcome;
        }
        let Some(records) = self.records.get(qname) else {
            return if self.names.contains(qname) {
                Outcome::NoData {
                    soa: self.soa(&zone_apex),
                }
            } else {
                Outcome::NxDomain {
                    soa: self.soa(&zone_apex),
                }
            };
        };
        let mut answers: Vec<Record> = records
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.record_type() == qtype)
            .cloned()
            .collect();
        if answers.is_empty() {
            // A name with a CNAME answers every type with it.
            answers = records
                .iter()
                .filter(|r| r.record_type() == RecordType::CNAME)
                .cloned()
                .collect();
        }
        if answers.is_empty() {
            return Outcome::NoData {
                soa: self.soa(&zone_apex),
            };
        }
        let mut additionals = Vec::new();
        for r in &answers {
            let target = match &r.data {
                RData::SRV(srv) => &srv.target,
                RData::NS(ns) => &ns.0,
                _ => continue,
            };
            for extra in self
                .records
                .get(&LowerName::from(target))
                .into_iter()
                .flatten()
            {
                if extra.record_type() == RecordType::A && !additionals.contains(extra) {
                    additionals.push(extra.clone());
                }
            }
        }
        Outcome::Answer {
            answers,
            additionals,
        }
    }

    /// `a-b-c-d.<ns>.pod.<zone>`: the address in the name, for any namespace (the
    /// specification's deprecated pod records; CoreDNS's `pods insecure`).
    fn pod_record(&self, qname: &LowerName, qtype: RecordType, apex: &Name) -> Option<Outcome> {
        let pod_zone = name("pod")?.append_domain(&self.cfg.domain).ok()?;
        let pod_zone = LowerName::from(pod_zone);
        if !pod_zone.zone_of(qname) {
            return None;
        }
        let soa = self.soa(apex);
        let depth = qname.num_labels() - pod_zone.num_labels();
        if depth < 2 {
            // `pod.<zone>` and `<ns>.pod.<zone>` exist, with no records.
            return Some(Outcome::NoData { soa });
        }
        let first = qname.to_string();
        let label = first.split('.').next().unwrap_or_default();
        let ip = Ipv4Addr::from_str(&label.replace('-', ".")).ok();
        Some(match ip {
            Some(ip) if depth == 2 => {
                if qtype == RecordType::A || qtype == RecordType::ANY {
                    Outcome::Answer {
                        answers: vec![Record::from_rdata(
                            Name::from(qname.clone()),
                            self.cfg.ttl,
                            RData::A(A(ip)),
                        )],
                        additionals: Vec::new(),
                    }
                } else {
                    Outcome::NoData { soa }
                }
            }
            _ => Outcome::NxDomain { soa },
        })
    }

    /// How many owner names the zone has (for logs and benchmarks).
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}
