//! What the cluster DNS answers from: the Services, EndpointSlices, Pods and namespaces
//! of the store, indexed the way CoreDNS's `kubernetes` plugin indexes its informers'
//! caches (Services by name and by ClusterIP, endpoints by Service and by address,
//! pods by address). Answers are computed from it per question ([`super::answer`]).
//!
//! A [`Zone`] is an immutable snapshot; the server swaps in a new one on every change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use hickory_proto::rr::LowerName;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::config::Config;
use crate::api::labels::SERVICE_NAME_LABEL;

/// The namespaces every cluster has, whether or not anything is in them yet.
pub const BUILT_IN_NAMESPACES: [&str; 4] =
    ["default", "kube-system", "kube-public", "kube-node-lease"];

/// A Service as DNS sees it.
#[derive(Debug, Clone)]
pub(super) struct Svc {
    pub name: String,
    pub namespace: String,
    pub kind: SvcKind,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone)]
pub(super) enum SvcKind {
    /// Its ClusterIPs (none while it has not been given one).
    ClusterIp(Vec<IpAddr>),
    Headless,
    /// `spec.externalName`, as written.
    External(String),
}

/// A port of a Service or of an EndpointSlice. An EndpointSlice without ports has one
/// with port -1, as CoreDNS has it: its endpoints have addresses but no SRV.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Port {
    pub name: String,
    pub protocol: String,
    pub port: i32,
}

/// One EndpointSlice: its ready addresses and its ports.
#[derive(Debug, Clone)]
pub(super) struct Slice {
    pub addresses: Vec<Address>,
    pub ports: Vec<Port>,
}

#[derive(Debug, Clone)]
pub(super) struct Address {
    pub ip: IpAddr,
    /// `hostname`, or the address with dashes (`10-244-1-3`, `fd00--1`).
    pub hostname: String,
}

/// The objects a zone is built from.
#[derive(Default)]
pub struct Objects<'a> {
    pub services: Vec<&'a Service>,
    pub slices: Vec<&'a EndpointSlice>,
    pub pods: Vec<&'a Pod>,
    /// Namespaces that exist besides those of the objects and the built-in ones.
    pub namespaces: Vec<&'a str>,
}

/// One snapshot of what the DNS answers from.
#[derive(Debug, Clone)]
pub struct Zone {
    pub(super) cfg: Config,
    /// The zones served, lower-cased: the cluster domain first, then the reverse ones.
    pub(super) zones: Vec<LowerName>,
    pub(super) serial: u32,
    /// False until the first build from the store: a name not found then is
    /// SERVFAIL, not NXDOMAIN, as CoreDNS answers before its informers have synced.
    pub(super) synced: bool,
    pub(super) namespaces: HashSet<String>,
    /// By (namespace, name).
    pub(super) services: HashMap<(String, String), Svc>,
    /// By (namespace, Service name), in the order of the slices' names.
    pub(super) endpoints: HashMap<(String, String), Vec<Slice>>,
    pub(super) by_cluster_ip: HashMap<IpAddr, (String, String)>,
    /// Every ready address: (namespace, Service name, hostname), once per slice.
    pub(super) by_address: HashMap<IpAddr, Vec<(String, String, String)>>,
    /// Pod addresses and the namespaces of the pods that have them.
    pub(super) pods: HashMap<IpAddr, Vec<String>>,
}

/// `10.244.1.3` as a hostname label: `10-244-1-3`; `fd00::1` as `fd00--1` (and
/// `fd00::` as `fd00--0`), as CoreDNS names endpoints without a hostname.
pub(super) fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => {
            let s = v6.to_string().replace(':', "-");
            if s.ends_with('-') {
                s + "0"
            } else {
                s
            }
        }
    }
}

fn service(svc: &Service) -> Option<Svc> {
    let spec = svc.spec.as_ref()?;
    let kind = if spec.type_.as_deref() == Some("ExternalName") {
        SvcKind::External(spec.external_name.clone().unwrap_or_default())
    } else {
        let ips: Vec<&str> = match &spec.cluster_ips {
            Some(ips) if !ips.is_empty() => ips.iter().map(String::as_str).collect(),
            _ => spec.cluster_ip.as_deref().into_iter().collect(),
        };
        if ips == ["None"] {
            SvcKind::Headless
        } else {
            SvcKind::ClusterIp(ips.iter().filter_map(|ip| ip.parse().ok()).collect())
        }
    };
    Some(Svc {
        name: svc.metadata.name.clone()?,
        namespace: namespace(svc.metadata.namespace.as_deref()),
        kind,
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port: p.port,
            })
            .collect(),
    })
}

fn namespace(ns: Option<&str>) -> String {
    ns.unwrap_or("default").to_string()
}

/// A slice's ready addresses (a missing condition is ready, as the API defines it)
/// and its ports.
fn slice(s: &EndpointSlice) -> Slice {
    let mut ports: Vec<Port> = s
        .ports
        .iter()
        .flatten()
        .map(|p| Port {
            name: p.name.clone().unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_default(),
            port: p.port.unwrap_or(-1),
        })
        .collect();
    if ports.is_empty() {
        ports.push(Port {
            name: String::new(),
            protocol: String::new(),
            port: -1,
        });
    }
    let mut addresses = Vec::new();
    for ep in &s.endpoints {
        if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
            continue;
        }
        for a in &ep.addresses {
            let Ok(ip) = a.parse::<IpAddr>() else {
                continue;
            };
            let hostname = ep.hostname.clone().unwrap_or_else(|| dashed(ip));
            addresses.push(Address { ip, hostname });
        }
    }
    Slice { addresses, ports }
}

impl Zone {
    /// An empty zone that has not been built from the store yet.
    pub fn unsynced(cfg: &Config, serial: u32) -> Zone {
        let mut z = Zone::build(cfg, Objects::default(), serial);
        z.synced = false;
        z
    }

    /// The zone of `objects` (EndpointSlices belong to the Service their
    /// `kubernetes.io/service-name` label names). `serial` is the SOA's.
    pub fn build(cfg: &Config, objects: Objects<'_>, serial: u32) -> Zone {
        let mut namespaces: HashSet<String> = BUILT_IN_NAMESPACES
            .iter()
            .chain(&objects.namespaces)
            .map(|s| s.to_string())
            .collect();
        let mut services = HashMap::new();
        let mut by_cluster_ip = HashMap::new();
        for s in objects.services.iter().filter_map(|s| service(s)) {
            namespaces.insert(s.namespace.clone());
            if let SvcKind::ClusterIp(ips) = &s.kind {
                for ip in ips {
                    by_cluster_ip.insert(*ip, (s.namespace.clone(), s.name.clone()));
                }
            }
            services.insert((s.namespace.clone(), s.name.clone()), s);
        }
        let mut sorted: BTreeMap<(String, &str), &EndpointSlice> = BTreeMap::new();
        for s in &objects.slices {
            let ns = namespace(s.metadata.namespace.as_deref());
            namespaces.insert(ns.clone());
            sorted.insert((ns, s.metadata.name.as_deref().unwrap_or_default()), s);
        }
        let mut endpoints: HashMap<(String, String), Vec<Slice>> = HashMap::new();
        let mut by_address: HashMap<IpAddr, Vec<(String, String, String)>> = HashMap::new();
        for ((ns, _), s) in sorted {
            let Some(svc) = s
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
            else {
                continue;
            };
            let one = slice(s);
            for a in &one.addresses {
                by_address.entry(a.ip).or_default().push((
                    ns.clone(),
                    svc.clone(),
                    a.hostname.clone(),
                ));
            }
            endpoints.entry((ns, svc.clone())).or_default().push(one);
        }
        let mut pods: HashMap<IpAddr, Vec<String>> = HashMap::new();
        for p in &objects.pods {
            let ns = namespace(p.metadata.namespace.as_deref());
            namespaces.insert(ns.clone());
            let status = p.status.as_ref();
            let ips = status
                .and_then(|s| s.pod_ips.as_ref())
                .map(|ips| ips.iter().map(|i| i.ip.as_str()).collect::<Vec<_>>())
                .unwrap_or_default();
            let first = status.and_then(|s| s.pod_ip.as_deref());
            for ip in ips.into_iter().chain(first) {
                if let Ok(ip) = ip.parse() {
                    let list = pods.entry(ip).or_default();
                    if !list.contains(&ns) {
                        list.push(ns.clone());
                    }
                }
            }
        }
        Zone {
            cfg: cfg.clone(),
            zones: cfg.zones().map(LowerName::from).collect(),
            serial,
            synced: true,
            namespaces,
            services,
            endpoints,
            by_cluster_ip,
            by_address,
            pods,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// How many Services the zone has (for logs and benchmarks).
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}
