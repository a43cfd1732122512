//! What a name in the cluster's zone names, found as CoreDNS's `kubernetes` plugin
//! finds it (`plugin/kubernetes/{kubernetes,parse}.go`): the labels left of the zone
//! are split into `[endpoint.|_port._proto.]service.namespace.svc|pod`, and the
//! Service, its endpoints, or the pod they name are looked up in the [`Zone`].

use std::net::IpAddr;

use hickory_proto::rr::{LowerName, Name, RecordType};

use super::config::{PodMode, SCHEMA_VERSION, VERSION_TTL};
use super::zone::{Svc, SvcKind, Zone};

/// The name does not exist (CoreDNS's `errNoItems`, `errNsNotExposed`,
/// `errInvalidRequest`).
#[derive(Debug)]
pub(super) struct NameError;

/// What a name leads to (CoreDNS's `msg.Service`).
pub(super) struct Found {
    pub host: Host,
    pub port: i32,
    /// The name of the thing found, for SRV and NS targets (`msg.Domain(Key)`); made
    /// only for questions that show it ([`Ask::targets`]).
    pub target: Option<Name>,
    pub ttl: u32,
}

pub(super) enum Host {
    Ip(IpAddr),
    /// A CNAME's target, as written.
    Name(String),
    Text(&'static str),
}

/// The labels of a name left of its zone, split as CoreDNS's `parseRequest`.
#[derive(Default)]
struct Request {
    pod_or_svc: String,
    namespace: String,
    service: String,
    endpoint: String,
    port: String,
    protocol: String,
}

fn strip_underscore(s: &str) -> String {
    s.strip_prefix('_').unwrap_or(s).to_string()
}

/// `match` in CoreDNS: equal, ignoring case.
fn same(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

pub(super) fn same_name(a: &Name, b: &Name) -> bool {
    LowerName::from(a) == LowerName::from(b)
}

fn port_matches(want_port: &str, port: &str, want_proto: &str, proto: &str) -> bool {
    (want_port.is_empty() || same(want_port, port))
        && (want_proto.is_empty() || same(want_proto, proto))
}

/// `labels` under `apex`; `None` when they make no valid name.
pub(super) fn under(labels: &[&str], apex: &Name) -> Option<Name> {
    Name::from_labels(labels.iter().map(|l| l.as_bytes()))
        .ok()?
        .append_domain(apex)
        .ok()
}

pub(super) fn fqdn(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", s.trim_end_matches('.'))).ok()
}

/// One question against one zone.
pub(super) struct Ask<'z> {
    pub zone: &'z Zone,
    /// The name asked, as asked.
    pub qname: &'z Name,
    /// Which of the zone's zones it is in ([`Zone::zones`]), and that zone's labels.
    pub zone_index: usize,
    pub apex_labels: u8,
    /// Whether what is found needs its name (SRV and NS answers show it).
    pub targets: bool,
}

pub(super) fn family(qtype: RecordType, ip: &IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A, IpAddr::V4(_)) | (RecordType::AAAA, IpAddr::V6(_))
    )
}

impl Ask<'_> {
    pub(super) fn cfg(&self) -> &super::Config {
        &self.zone.cfg
    }

    /// The labels of `name` left of the zone, lower-cased.
    /// Whether the question is in a reverse zone (every zone but the first).
    pub(super) fn reverse(&self) -> bool {
        self.zone_index > 0
    }

    /// The zone the question is in, in the question's case.
    pub(super) fn apex(&self) -> Name {
        self.qname.trim_to(self.apex_labels as usize)
    }

    pub(super) fn base(&self, name: &Name) -> Vec<String> {
        let keep = (name.num_labels() - self.apex_labels) as usize;
        name.iter()
            .take(keep)
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect()
    }

    fn parse(&self, mut base: Vec<String>) -> Result<Request, NameError> {
        let mut r = Request::default();
        if base.is_empty() || base == ["svc"] || base == ["pod"] {
            return Ok(r);
        }
        r.pod_or_svc = base.pop().unwrap_or_default();
        if r.pod_or_svc != "pod" && r.pod_or_svc != "svc" {
            return Err(NameError);
        }
        r.namespace = base.pop().unwrap_or_default();
        r.service = base.pop().unwrap_or_default();
        match base.as_mut_slice() {
            [] => {}
            [endpoint] => r.endpoint = std::mem::take(endpoint),
            [port, protocol] => {
                r.protocol = strip_underscore(protocol);
                r.port = strip_underscore(port);
            }
            _ => return Err(NameError),
        }
        Ok(r)
    }

    /// What `name` names, for a question of type `qtype` (CoreDNS's `Services`).
    pub(super) fn services(&self, name: &Name, qtype: RecordType) -> Result<Vec<Found>, NameError> {
        let base = self.base(name);
        match qtype {
            RecordType::TXT if base == ["dns-version"] => {
                return Ok(vec![Found {
                    host: Host::Text(SCHEMA_VERSION),
                    port: 0,
                    target: Some(name.clone()),
                    ttl: VERSION_TTL,
                }])
            }
            // Only the version has TXT; a name that exists otherwise is NODATA.
            RecordType::TXT => {
                return match self.records(base) {
                    Ok(found) if !found.is_empty() => Ok(Vec::new()),
                    _ => Err(NameError),
                }
            }
            RecordType::NS => return Ok(self.name_servers()),
            _ => {}
        }
        if base == ["ns", "dns"] {
            let mut found = self.name_servers();
            found.retain(|f| matches!(&f.host, Host::Ip(ip) if family(qtype, ip)));
            for f in &mut found {
                f.target = Some(name.clone());
            }
            return Ok(found);
        }
        let mut found = self.records(base)?;
        if qtype == RecordType::SRV {
            found.retain(|f| !matches!(f.host, Host::Name(_)));
        }
        Ok(found)
    }

    /// The zone's name servers: kube-dns's name with its ClusterIPs, as CoreDNS finds
    /// its own pod behind a Service; `ns.dns.<zone>` with the configured address when
    /// no Service has it.
    fn name_servers(&self) -> Vec<Found> {
        let ttl = self.cfg().ttl;
        let dns_ip = IpAddr::V4(self.cfg().dns_ip);
        let mut found = Vec::new();
        if let Some((ns, name)) = self.zone.by_cluster_ip.get(&dns_ip) {
            if let (Some(svc), Some(target)) = (
                self.zone.services.get(&(ns.clone(), name.clone())),
                under(&[name, ns, "svc"], &self.apex()),
            ) {
                if let SvcKind::ClusterIp(ips) = &svc.kind {
                    for ip in ips {
                        found.push(Found {
                            host: Host::Ip(*ip),
                            port: 0,
                            target: Some(target.clone()),
                            ttl,
                        });
                    }
                }
            }
        }
        if found.is_empty() {
            found.push(Found {
                host: Host::Ip(dns_ip),
                port: 0,
                target: under(&["ns", "dns"], &self.apex()),
                ttl,
            });
        }
        found
    }

    /// CoreDNS's `Records`: the Services, endpoints or pods the labels name.
    pub(super) fn records(&self, base: Vec<String>) -> Result<Vec<Found>, NameError> {
        let r = self.parse(base)?;
        if r.pod_or_svc.is_empty() {
            return Ok(Vec::new());
        }
        if self.reverse() || !self.zone.namespaces.contains(&r.namespace) {
            return Err(NameError);
        }
        if r.pod_or_svc == "pod" {
            self.pods(&r)
        } else {
            self.find_services(r)
        }
    }

    fn pods(&self, r: &Request) -> Result<Vec<Found>, NameError> {
        let mode = self.cfg().pods;
        if mode == PodMode::Disabled {
            return Err(NameError);
        }
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let text = if r.service.matches('-').count() == 3 && !r.service.contains("--") {
            r.service.replace('-', ".")
        } else {
            r.service.replace('-', ":")
        };
        let ip: IpAddr = text.parse().map_err(|_| NameError)?;
        if mode == PodMode::Verified
            && !self
                .zone
                .pods
                .get(&ip)
                .is_some_and(|nss| nss.iter().any(|ns| same(ns, &r.namespace)))
        {
            return Err(NameError);
        }
        let target = match self.targets {
            true => Some(under(&[&r.service, &r.namespace, "pod"], &self.apex()).ok_or(NameError)?),
            false => None,
        };
        Ok(vec![Found {
            host: Host::Ip(ip),
            port: 0,
            target,
            ttl: self.cfg().ttl,
        }])
    }

    // Long because it is CoreDNS's findServices: ExternalName, endpoints (headless, or a
    // name under any Service), and ClusterIP, each as upstream answers them.
    fn find_services(&self, r: Request) -> Result<Vec<Found>, NameError> {
        if r.service.is_empty() {
            return Ok(Vec::new());
        }
        let key = (r.namespace, r.service);
        let svc: &Svc = self.zone.services.get(&key).ok_or(NameError)?;
        let ttl = self.cfg().ttl;
        // `Some(None)` when the question does not show names, `None` for a bad one.
        let svc_name = |labels: &[&str]| {
            if !self.targets {
                return Some(None);
            }
            let mut all = labels.to_vec();
            all.extend([svc.name.as_str(), svc.namespace.as_str(), "svc"]);
            under(&all, &self.apex()).map(Some)
        };
        let mut found = Vec::new();
        let mut any = false;
        match &svc.kind {
            SvcKind::External(host) => {
                if !r.endpoint.is_empty() || !r.port.is_empty() || !r.protocol.is_empty() {
                    return Err(NameError);
                }
                if host.parse::<IpAddr>().is_ok() || fqdn(host).is_none() {
                    return Err(NameError);
                }
                found.push(Found {
                    host: Host::Name(host.clone()),
                    port: 0,
                    target: svc_name(&[]).ok_or(NameError)?,
                    ttl,
                });
                any = true;
            }
            kind if matches!(kind, SvcKind::Headless) || !r.endpoint.is_empty() => {
                for slice in self.zone.endpoints.get(&key).into_iter().flatten() {
                    for a in &slice.addresses {
                        if !r.endpoint.is_empty() && !same(&r.endpoint, &a.hostname) {
                            continue;
                        }
                        for p in &slice.ports {
                            if !port_matches(&r.port, &p.name, &r.protocol, &p.protocol) {
                                continue;
                            }
                            let Some(target) = svc_name(&[&a.hostname]) else {
                                continue;
                            };
                            found.push(Found {
                                host: Host::Ip(a.ip),
                                port: p.port,
                                target,
                                ttl,
                            });
                            any = true;
                        }
                    }
                }
            }
            SvcKind::ClusterIp(ips) => {
                let target = svc_name(&[]).ok_or(NameError)?;
                for p in &svc.ports {
                    if !port_matches(&r.port, &p.name, &r.protocol, &p.protocol) {
                        continue;
                    }
                    any = true;
                    for ip in ips {
                        found.push(Found {
                            host: Host::Ip(*ip),
                            port: p.port,
                            target: target.clone(),
                            ttl,
                        });
                    }
                }
            }
            SvcKind::Headless => unreachable!("matched above"),
        }
        if any {
            Ok(found)
        } else {
            Err(NameError)
        }
    }
}
