//! What the cluster DNS is configured with: CoreDNS's `kubernetes` plugin's options
//! as a kubeadm cluster's Corefile sets them.

use std::net::Ipv4Addr;

use hickory_proto::rr::Name;
use ipnet::Ipv4Net;

/// The cluster domain unless configured otherwise.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// The TTL of answers unless configured otherwise, as CoreDNS's `kubernetes` plugin.
pub const DEFAULT_TTL: u32 = 5;

/// The schema version of the specification these records follow.
pub const SCHEMA_VERSION: &str = "1.1.0";

/// The TTL of `dns-version.<zone>` TXT, as CoreDNS has it.
pub const VERSION_TTL: u32 = 28800;

/// How `a-b-c-d.<ns>.pod.<zone>` is answered: CoreDNS's `pods` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodMode {
    /// The address in the name, for any name in an existing namespace, with no check
    /// that such a pod exists. The default here, because kubeadm's and kind's Corefile
    /// set it (CoreDNS's own default is `disabled`): it is what clusters run.
    #[default]
    Insecure,
    /// Only if a pod in that namespace has that address.
    Verified,
    /// Never: every pod name is NXDOMAIN.
    Disabled,
}

impl PodMode {
    pub const NAMES: [&'static str; 3] = ["insecure", "verified", "disabled"];

    pub fn parse(s: &str) -> Option<PodMode> {
        Some(match s {
            "insecure" => PodMode::Insecure,
            "verified" => PodMode::Verified,
            "disabled" => PodMode::Disabled,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            PodMode::Insecure => "insecure",
            PodMode::Verified => "verified",
            PodMode::Disabled => "disabled",
        }
    }
}

/// What the server is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The cluster domain, e.g. `cluster.local.`.
    pub domain: Name,
    /// The TTL of every record, and the SOA's negative-caching TTL.
    pub ttl: u32,
    /// The address the server answers `ns.dns.<zone>` and the zone's NS with; a Service
    /// with this ClusterIP (kube-dns) names the NS instead, as CoreDNS finds its own
    /// pod behind kube-dns.
    pub dns_ip: Ipv4Addr,
    /// The reverse zones the server answers (`kubernetes cluster.local in-addr.arpa
    /// ip6.arpa` in kubeadm's Corefile).
    pub reverse_zones: Vec<Name>,
    /// A reverse name that is not found falls through to the upstream servers unless
    /// its address is in `service_cidr` or `pod_cidr` (kubeadm's Corefile has
    /// `fallthrough in-addr.arpa ip6.arpa`; inside the cluster's ranges the upstream
    /// could only say NXDOMAIN too, so it is said here at once).
    pub fallthrough: bool,
    pub service_cidr: Ipv4Net,
    pub pod_cidr: Ipv4Net,
    pub pods: PodMode,
}

fn fqdn(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

impl Config {
    /// The defaults: `cluster.local`, TTL 5 s, `pods insecure`, reverse zones
    /// `in-addr.arpa` and `ip6.arpa` with fallthrough, as kubeadm's Corefile.
    pub fn new(dns_ip: Ipv4Addr, service_cidr: Ipv4Net, pod_cidr: Ipv4Net) -> Self {
        Config {
            domain: fqdn(&format!("{DEFAULT_DOMAIN}.")),
            ttl: DEFAULT_TTL,
            dns_ip,
            reverse_zones: vec![fqdn("in-addr.arpa."), fqdn("ip6.arpa.")],
            fallthrough: true,
            service_cidr,
            pod_cidr,
            pods: PodMode::default(),
        }
    }

    /// The same, for the cluster domain `domain` (`example.org`, final dot optional).
    pub fn with_domain(self, domain: &str) -> Result<Self, String> {
        let name = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))
            .map_err(|e| format!("{domain:?} is not a domain name: {e}"))?;
        Ok(Config {
            domain: name.to_lowercase(),
            ..self
        })
    }

    /// Every zone served: the cluster domain, then the reverse zones.
    pub fn zones(&self) -> impl Iterator<Item = &Name> {
        std::iter::once(&self.domain).chain(&self.reverse_zones)
    }
}
