//! kube-proxy's iptables mode as a pure function: a service port and its endpoints in,
//! the rules `pkg/proxy/iptables/proxier.go` writes for it out, word for word, so that
//! `iptables-save` in a node reads as it does in a real cluster.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

use ipnet::Ipv4Net;

use super::hash;

/// The mark kube-proxy sets on packets to masquerade (`--masquerade-bit 14`).
pub const MASQ_MARK: &str = "0x4000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name iptables and kube-proxy's hashes use.
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        })
    }
}

/// What kube-proxy knows of one port of one Service with a ClusterIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    pub namespace: String,
    pub name: String,
    /// The port's name; empty for a single unnamed port.
    pub port_name: String,
    pub protocol: Protocol,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    /// `sessionAffinity: ClientIP` and its timeout in seconds.
    pub affinity_seconds: Option<u32>,
    /// The endpoints ClusterIP traffic goes to: the ready ones, or when none is
    /// ready the serving-and-terminating ones; with `internal_local`, only this
    /// node's.
    pub endpoints: Vec<SocketAddrV4>,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes only to this node's
    /// endpoints, through `KUBE-SVL-` instead of `KUBE-SVC-`.
    pub internal_local: bool,
    /// With `internal_local`: whether any node has usable endpoints (then, with
    /// none here, ClusterIP traffic is dropped, "has no local endpoints", rather
    /// than rejected).
    pub remote_endpoints: bool,
}

impl ServicePort {
    /// kube-proxy's `ServicePortName.String()`: `ns/name:port` or `ns/name`.
    pub fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }

    pub fn service_chain(&self) -> String {
        hash::service_chain(&self.port_name_string(), self.protocol.lower())
    }

    /// The chain ClusterIP traffic goes to: `KUBE-SVL-` with a Local internal
    /// traffic policy, else `KUBE-SVC-`.
    pub fn internal_chain(&self) -> String {
        if self.internal_local {
            hash::local_chain(&self.port_name_string(), self.protocol.lower())
        } else {
            self.service_chain()
        }
    }

    pub fn endpoint_chain(&self, ep: &SocketAddrV4) -> String {
        hash::endpoint_chain(
            &self.port_name_string(),
            self.protocol.lower(),
            &ep.to_string(),
        )
    }
}

/// A user chain and its rules (each a whole `-A CHAIN ...` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// Everything one service port contributes to a node's tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRules {
    /// Lines of the nat table's `KUBE-SERVICES`.
    pub nat_services: Vec<String>,
    /// Lines of the filter table's `KUBE-SERVICES` (REJECT when there are no endpoints).
    pub filter_services: Vec<String>,
    /// The service's own nat chains: `KUBE-SVC-*` then its `KUBE-SEP-*`.
    pub chains: Vec<Chain>,
}

/// How the whole node is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--cluster-cidr`: traffic to a ClusterIP from outside it is masqueraded.
    pub cluster_cidr: Option<Ipv4Net>,
}

/// Quotes a comment as iptables-save does: only when it holds a space.
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("\"{text}\"")
    } else {
        text.to_string()
    }
}

/// The rules of one service port, as kube-proxy's `syncProxyRules` writes them.
// Long because it writes a service port's chains in the order kube-proxy's syncProxyRules
// does, so the output can be diffed against upstream's.
pub fn service_rules(cfg: &Config, sp: &ServicePort) -> ServiceRules {
    let spn = sp.port_name_string();
    let proto = sp.protocol.lower();
    let svc_chain = sp.internal_chain();
    let dst = format!(
        "-m {proto} -p {proto} -d {} --dport {}",
        sp.cluster_ip, sp.port
    );
    let mut endpoints = sp.endpoints.clone();
    endpoints.sort_by_key(|e| e.to_string());
    endpoints.dedup();

    if endpoints.is_empty() {
        // Endpoints on other nodes only, and a Local policy: dropped, as upstream.
        let (why, target) = if sp.internal_local && sp.remote_endpoints {
            ("has no local endpoints", "DROP")
        } else {
            ("has no endpoints", "REJECT")
        };
        return ServiceRules {
            nat_services: Vec::new(),
            filter_services: vec![format!(
                "-A KUBE-SERVICES -m comment --comment {} {dst} -j {target}",
                comment(&format!("{spn} {why}"))
            )],
            chains: Vec::new(),
        };
    }

    let cluster_ip_comment = comment(&format!("{spn} cluster IP"));
    let nat_services = vec![format!(
        "-A KUBE-SERVICES -m comment --comment {cluster_ip_comment} {dst} -j {svc_chain}"
    )];

    let mut svc_rules = Vec::new();
    if let Some(cidr) = cfg.cluster_cidr {
        svc_rules.push(format!(
            "-A {svc_chain} -m comment --comment {cluster_ip_comment} {dst} ! -s {cidr} -j KUBE-MARK-MASQ"
        ));
    }
    let sep_chains: Vec<String> = endpoints.iter().map(|e| sp.endpoint_chain(e)).collect();
    if let Some(seconds) = sp.affinity_seconds {
        for (ep, sep) in endpoints.iter().zip(&sep_chains) {
            svc_rules.push(format!(
                "-A {svc_chain} -m comment --comment {} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}",
                comment(&format!("{spn} -> {ep}"))
            ));
        }
    }
    let n = endpoints.len();
    for (i, (ep, sep)) in endpoints.iter().zip(&sep_chains).enumerate() {
        let pick = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        svc_rules.push(format!(
            "-A {svc_chain} -m comment --comment {}{pick} -j {sep}",
            comment(&format!("{spn} -> {ep}"))
        ));
    }

    let mut chains = vec![Chain {
        name: svc_chain,
        rules: svc_rules,
    }];
    for (ep, sep) in endpoints.iter().zip(sep_chains) {
        let c = comment(&spn);
        let recent = if sp.affinity_seconds.is_some() {
            format!(" -m recent --name {sep} --set")
        } else {
            String::new()
        };
        chains.push(Chain {
            rules: vec![
                format!("-A {sep} -m comment --comment {c} -s {} -j KUBE-MARK-MASQ", ep.ip()),
                format!("-A {sep} -m comment --comment {c}{recent} -m {proto} -p {proto} -j DNAT --to-destination {ep}"),
            ],
            name: sep,
        });
    }
    ServiceRules {
        nat_services,
        filter_services: Vec::new(),
        chains,
    }
}

/// The filter table's fixed chains, in kube-proxy's order.
pub const FILTER_CHAINS: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-EXTERNAL-SERVICES",
    "KUBE-FORWARD",
    "KUBE-NODEPORTS",
];

/// The nat table's fixed chains, in kube-proxy's order.
pub const NAT_CHAINS: [&str; 4] = [
    "KUBE-SERVICES",
    "KUBE-NODEPORTS",
    "KUBE-POSTROUTING",
    "KUBE-MARK-MASQ",
];

/// Rules of the fixed filter chains other than `KUBE-SERVICES`.
pub fn filter_fixed_rules() -> Vec<String> {
    vec![
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP".into(),
        format!("-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"),
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
    ]
}

/// Rules of the fixed nat chains other than `KUBE-SERVICES`. The MASQUERADE has
/// `--random-fully`, as kube-proxy writes it when iptables has the option (1.6.2 and
/// later: every iptables this runs on), so that two pods' flows through one node do
/// not race for one source port.
pub fn nat_fixed_rules() -> Vec<String> {
    vec![
        format!("-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
        format!("-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}"),
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully".into(),
        format!("-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}"),
    ]
}

/// The last rule of nat `KUBE-SERVICES`.
pub const NODEPORTS_JUMP: &str = "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS";

/// The jumps from the built-in chains into kube-proxy's, which kube-proxy ensures
/// outside its restores; here they go into a node's first restore. `(table, rule)`.
pub fn builtin_jumps() -> Vec<(&'static str, &'static str)> {
    vec![
        ("filter", "-A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        ("filter", "-A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"),
        ("filter", "-A FORWARD -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("filter", "-A OUTPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"),
    ]
}
