//! kube-proxy's change tracking, the part every backend shares (upstream's
//! `servicechangetracker.go` and `endpointschangetracker.go`): Services and their
//! EndpointSlices in, [`ServicePort`]s out, and for each batch of changes the ports
//! that changed, the ports that are gone, and the UDP endpoints that went away (whose
//! conntrack entries must go, or replies keep going to a dead pod). Pure: no kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::render::{Protocol, ServicePort};
use crate::api::{Event, Object};

/// A service port's identity: kube-proxy's `ServicePortName` and protocol.
pub type PortKey = (String, &'static str);

/// The key of a service port.
pub fn port_key(sp: &ServicePort) -> PortKey {
    (sp.port_name_string(), sp.protocol.lower())
}

use crate::api::service_slices::ServiceSlices;
pub use crate::api::service_slices::SvcKey;

/// What changed in one batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The service ports of the Services that changed, as they are now.
    pub upserts: Vec<ServicePort>,
    /// Service ports that are gone.
    pub removed: Vec<PortKey>,
    /// UDP endpoints that are gone, with each address they were reached at.
    pub gone_udp: Vec<(UdpDest, SocketAddrV4)>,
    /// The addresses of UDP service ports that had no endpoints and have some now
    /// (upstream's "newly active" UDP services): a client that kept sending while
    /// there were none holds a conntrack entry that is not DNATed, and keeps it
    /// while it sends unless it is deleted.
    pub activated_udp: Vec<UdpDest>,
}

/// Where UDP flows to a service port are addressed, as upstream's
/// `conntrack/cleanup.go` clears them: its ClusterIP, external IPs and load
/// balancer addresses, and its node port on any of the node's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpDest {
    Ip(Ipv4Addr),
    NodePort(u16),
}

/// Every address of a service port, the ClusterIP first.
pub fn udp_dests(sp: &ServicePort) -> Vec<UdpDest> {
    let mut v = vec![UdpDest::Ip(sp.cluster_ip)];
    v.extend(sp.external_ips.iter().map(|ip| UdpDest::Ip(*ip)));
    v.extend(sp.load_balancer_ips.iter().map(|ip| UdpDest::Ip(*ip)));
    if sp.node_port != 0 {
        v.push(UdpDest::NodePort(sp.node_port));
    }
    v
}

/// Labels that keep kube-proxy away from a Service and its EndpointSlices: its
/// informers list with `!service.kubernetes.io/service-proxy-name,
/// !service.kubernetes.io/headless`, so a Service another proxy serves (and a headless
/// Service's slices) is never seen, and one that gains a label is seen as deleted.
pub const OPT_OUT_LABELS: [&str; 2] = [
    "service.kubernetes.io/service-proxy-name",
    "service.kubernetes.io/headless",
];

fn opted_out(o: &Object) -> bool {
    o.meta()
        .labels
        .as_ref()
        .is_some_and(|l| OPT_OUT_LABELS.iter().any(|k| l.contains_key(*k)))
}

/// The Services and EndpointSlices a node's kube-proxy has seen, and the service
/// ports they make.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The node this kube-proxy runs on (its endpoints are the local ones).
    node: String,
    cache: ServiceSlices,
    ports: BTreeMap<SvcKey, Vec<ServicePort>>,
}

impl Tracker {
    /// The tracker of the kube-proxy on `node`.
    pub fn for_node(node: &str) -> Tracker {
        Tracker {
            node: node.to_string(),
            ..Tracker::default()
        }
    }

    /// Takes one change of a Service or an EndpointSlice and marks its Service dirty
    /// (a Service that opts out of this proxy is as if deleted).
    pub fn observe(&mut self, event: Event, dirty: &mut BTreeSet<SvcKey>) {
        let forget = opted_out(&event.object);
        if let Some(key) = self.cache.observe(event, forget) {
            dirty.insert(key);
        }
    }

    /// Recomputes the service ports of the `dirty` Services: what changed.
    pub fn update(&mut self, dirty: BTreeSet<SvcKey>) -> Changes {
        let mut changes = Changes::default();
        for key in dirty {
            let new = match self.cache.service(&key) {
                Some(svc) => {
                    let of: Vec<&EndpointSlice> = self.cache.slices_of(&key).collect();
                    service_ports(svc, &of, &self.node)
                }
                None => Vec::new(),
            };
            let old = self.ports.get(&key).map(Vec::as_slice).unwrap_or_default();
            for o in old.iter().filter(|o| o.protocol == Protocol::Udp) {
                for d in udp_dests(o) {
                    let still: Vec<SocketAddrV4> = new
                        .iter()
                        .filter(|n| n.protocol == Protocol::Udp && udp_dests(n).contains(&d))
                        .flat_map(|n| n.reachable_endpoints())
                        .collect();
                    for e in o.reachable_endpoints() {
                        if !still.contains(&e) && !changes.gone_udp.contains(&(d, e)) {
                            changes.gone_udp.push((d, e));
                        }
                    }
                }
            }
            for n in new.iter().filter(|n| n.protocol == Protocol::Udp) {
                let had = old
                    .iter()
                    .find(|o| port_key(o) == port_key(n))
                    .is_some_and(|o| o.has_endpoints);
                if !had && n.has_endpoints {
                    for d in udp_dests(n) {
                        if !changes.activated_udp.contains(&d) {
                            changes.activated_udp.push(d);
                        }
                    }
                }
            }
            let keys: Vec<PortKey> = new.iter().map(port_key).collect();
            changes
                .removed
                .extend(old.iter().map(port_key).filter(|k| !keys.contains(k)));
            changes.upserts.extend(new.iter().cloned());
            if new.is_empty() {
                self.ports.remove(&key);
            } else {
                self.ports.insert(key, new);
            }
        }
        changes
    }

    /// Every service port of the node, in order, borrowed.
    pub fn iter(&self) -> impl Iterator<Item = &ServicePort> {
        self.ports.values().flatten()
    }

    /// The service ports of one Service (none when it is gone or has none).
    pub fn ports_of(&self, svc: &SvcKey) -> &[ServicePort] {
        self.ports.get(svc).map_or(&[], Vec::as_slice)
    }

    /// Every service port of the node, in order.
    pub fn all(&self) -> Vec<ServicePort> {
        self.ports.values().flatten().cloned().collect()
    }

    /// How many service ports the node has.
    pub fn len(&self) -> usize {
        self.ports.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

/// One endpoint of a service port, with what kube-proxy reads of its conditions
/// (`ready` and `serving` when unset are true, `terminating` false).
struct Candidate {
    addr: SocketAddrV4,
    ready: bool,
    serving: bool,
    terminating: bool,
    local: bool,
}

/// Upstream's `CategorizeEndpoints`: the Cluster policy's endpoints (the ready
/// ones, or when none is ready anywhere the serving-and-terminating ones, as a
/// Deployment's last pods finish their connections), the Local policy's (this
/// node's, by the same rule), and whether any node has a usable one.
fn categorize(
    all: &[Candidate],
    uses_cluster: bool,
    uses_local: bool,
) -> (Vec<SocketAddrV4>, Vec<SocketAddrV4>, bool) {
    let pick = |keep: &dyn Fn(&Candidate) -> bool| -> Vec<SocketAddrV4> {
        all.iter().filter(|c| keep(c)).map(|c| c.addr).collect()
    };
    let fallback = |c: &Candidate| c.serving && c.terminating;
    let mut cluster = Vec::new();
    let mut any = false;
    if uses_cluster {
        cluster = pick(&|c| c.ready);
        if cluster.is_empty() {
            cluster = pick(&fallback);
        }
        any = !cluster.is_empty();
    }
    let mut local = Vec::new();
    if uses_local {
        any |= all.iter().any(|c| c.ready || fallback(c));
        local = pick(&|c| c.local && c.ready);
        if local.is_empty() {
            local = pick(&|c| c.local && fallback(c));
        }
    }
    (cluster, local, any)
}

/// An address as upstream's `netutils.ParseIPSloppy` reads it: leading zeros are
/// decimal (`172.30.0.041` is 172.30.0.41), as Go before 1.17 read them, so objects
/// stored back then still work.
pub fn sloppy_ipv4(s: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then(|| Ipv4Addr::from(octets))
}

/// A CIDR as `netutils.ParseCIDRSloppy` reads it (see [`sloppy_ipv4`]).
fn sloppy_cidr(s: &str) -> Option<ipnet::Ipv4Net> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    ipnet::Ipv4Net::new(sloppy_ipv4(ip)?, len)
        .ok()
        .map(|n| n.trunc())
}

fn ipv4s<'a>(v: impl IntoIterator<Item = &'a String>) -> Vec<Ipv4Addr> {
    v.into_iter()
        .filter_map(|s| sloppy_ipv4(s.trim()))
        .collect()
}

/// The service ports of one Service, from its EndpointSlices, as the kube-proxy on
/// `node` sees them (with `internalTrafficPolicy: Local`, only its own endpoints).
/// Headless and ExternalName Services have none: kube-proxy leaves them to DNS.
// Long because it is one Service's ports, each with its endpoints from every slice, and
// the policy that picks among them.
pub fn service_ports(svc: &Service, slices: &[&EndpointSlice], node: &str) -> Vec<ServicePort> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let Some(cluster_ip) = spec.cluster_ip.as_deref().and_then(sloppy_ipv4) else {
        return Vec::new();
    };
    let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .unwrap_or(crate::api::admission::DEFAULT_AFFINITY_SECONDS) as u32
    });
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = svc.metadata.name.clone().unwrap_or_default();
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let external_ips = ipv4s(spec.external_ips.iter().flatten());
    // Addresses a load balancer proxies to (ipMode Proxy) are the balancer's, not
    // the node's to capture.
    let load_balancer_ips = ipv4s(
        svc.status
            .iter()
            .filter_map(|s| s.load_balancer.as_ref())
            .flat_map(|lb| lb.ingress.iter().flatten())
            .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
            .filter_map(|i| i.ip.as_ref()),
    );
    let source_ranges: Vec<ipnet::Ipv4Net> = spec
        .load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|r| sloppy_cidr(r.trim()))
        .collect();
    // Upstream's `NeedsHealthCheck`: a LoadBalancer with a Local external policy.
    let needs_health_check = spec.type_.as_deref() == Some("LoadBalancer") && external_local;
    let health_check_node_port = spec
        .health_check_node_port
        .filter(|_| needs_health_check)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    spec.ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => Protocol::Tcp,
                "UDP" => Protocol::Udp,
                "SCTP" => Protocol::Sctp,
                _ => return None,
            };
            let port_name = p.name.clone().unwrap_or_default();
            let mut candidates = Vec::new();
            for s in slices {
                let Some(sp) = s.ports.iter().flatten().find(|sp| {
                    sp.name.as_deref().unwrap_or_default() == port_name
                        && sp.protocol.as_deref().unwrap_or("TCP") == protocol.to_string()
                }) else {
                    continue;
                };
                let Some(port) = sp.port.and_then(|n| u16::try_from(n).ok()) else {
                    continue;
                };
                for ep in &s.endpoints {
                    let c = ep.conditions.clone().unwrap_or_default();
                    for a in &ep.addresses {
                        if let Some(ip) = sloppy_ipv4(a) {
                            candidates.push(Candidate {
                                addr: SocketAddrV4::new(ip, port),
                                ready: c.ready.unwrap_or(true),
                                serving: c.serving.unwrap_or(true),
                                terminating: c.terminating.unwrap_or(false),
                                local: ep.node_name.as_deref() == Some(node),
                            });
                        }
                    }
                }
            }
            let mut sp = ServicePort {
                namespace: ns.clone(),
                name: name.clone(),
                port_name,
                protocol,
                cluster_ip,
                port: u16::try_from(p.port).ok()?,
                affinity_seconds: affinity,
                node_port: p.node_port.and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
                external_ips: external_ips.clone(),
                load_balancer_ips: load_balancer_ips.clone(),
                source_ranges: source_ranges.clone(),
                health_check_node_port,
                internal_local,
                external_local,
                cluster_endpoints: Vec::new(),
                local_endpoints: Vec::new(),
                has_endpoints: false,
            };
            let (cluster, local, any) = categorize(
                &candidates,
                sp.uses_cluster_endpoints(),
                sp.uses_local_endpoints(),
            );
            sp.cluster_endpoints = cluster;
            sp.local_endpoints = local;
            sp.has_endpoints = any;
            Some(sp)
        })
        .collect()
}
