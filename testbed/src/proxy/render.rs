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
    /// The port's `nodePort`; 0 for none.
    pub node_port: u16,
    /// `spec.externalIPs`.
    pub external_ips: Vec<Ipv4Addr>,
    /// The addresses of `status.loadBalancer.ingress`.
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// `spec.loadBalancerSourceRanges`.
    pub source_ranges: Vec<Ipv4Net>,
    /// `spec.healthCheckNodePort`; 0 for none.
    pub health_check_node_port: u16,
    /// `internalTrafficPolicy: Local`: ClusterIP traffic goes only to this node's
    /// endpoints, through `KUBE-SVL-` instead of `KUBE-SVC-`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local`, for traffic to node ports and external
    /// and load balancer addresses.
    pub external_local: bool,
    /// The endpoints of the Cluster policy (upstream's `clusterEndpoints`): the
    /// ready ones, or when none is ready the serving-and-terminating ones.
    pub cluster_endpoints: Vec<SocketAddrV4>,
    /// The endpoints of the Local policy: this node's, by the same rule.
    pub local_endpoints: Vec<SocketAddrV4>,
    /// Whether any node has a usable endpoint (upstream's `hasAnyEndpoints`).
    pub has_endpoints: bool,
}

impl ServicePort {
    /// A port of a ClusterIP Service with these endpoints, all usable, on every node.
    pub fn cluster_ip(
        (namespace, name, port_name): (&str, &str, &str),
        protocol: Protocol,
        cluster_ip: Ipv4Addr,
        port: u16,
        endpoints: Vec<SocketAddrV4>,
    ) -> ServicePort {
        ServicePort {
            namespace: namespace.into(),
            name: name.into(),
            port_name: port_name.into(),
            protocol,
            cluster_ip,
            port,
            affinity_seconds: None,
            node_port: 0,
            external_ips: Vec::new(),
            load_balancer_ips: Vec::new(),
            source_ranges: Vec::new(),
            health_check_node_port: 0,
            internal_local: false,
            external_local: false,
            has_endpoints: !endpoints.is_empty(),
            cluster_endpoints: endpoints,
            local_endpoints: Vec::new(),
        }
    }

    /// kube-proxy's `ServicePortName.String()`: `ns/name:port` or `ns/name`.
    pub fn port_name_string(&self) -> String {
        if self.port_name.is_empty() {
            format!("{}/{}", self.namespace, self.name)
        } else {
            format!("{}/{}:{}", self.namespace, self.name, self.port_name)
        }
    }

    /// Reached from outside the cluster: a node port, an external IP or a load
    /// balancer address.
    pub fn externally_accessible(&self) -> bool {
        self.node_port != 0 || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    /// `externalTrafficPolicy: Local` on a port that takes external traffic.
    pub fn external_policy_local(&self) -> bool {
        self.external_local && self.externally_accessible()
    }

    /// Upstream's `UsesClusterEndpoints`: a Cluster policy somewhere, or external
    /// traffic (whose pods' traffic short-circuits to the cluster chain).
    pub fn uses_cluster_endpoints(&self) -> bool {
        !self.internal_local || self.externally_accessible()
    }

    /// Upstream's `UsesLocalEndpoints`.
    pub fn uses_local_endpoints(&self) -> bool {
        self.internal_local || self.external_policy_local()
    }

    /// Every endpoint some rule of this node may send to, sorted.
    pub fn reachable_endpoints(&self) -> Vec<SocketAddrV4> {
        let mut all: Vec<SocketAddrV4> = Vec::new();
        if self.uses_cluster_endpoints() {
            all.extend(&self.cluster_endpoints);
        }
        if self.uses_local_endpoints() {
            all.extend(&self.local_endpoints);
        }
        sorted(all)
    }

    pub fn service_chain(&self) -> String {
        hash::service_chain(&self.port_name_string(), self.protocol.lower())
    }

    pub fn local_chain(&self) -> String {
        hash::local_chain(&self.port_name_string(), self.protocol.lower())
    }

    pub fn external_chain(&self) -> String {
        hash::external_chain(&self.port_name_string(), self.protocol.lower())
    }

    pub fn firewall_chain(&self) -> String {
        hash::firewall_chain(&self.port_name_string(), self.protocol.lower())
    }

    /// The chain ClusterIP traffic goes to: `KUBE-SVL-` with a Local internal
    /// traffic policy, else `KUBE-SVC-`.
    pub fn internal_chain(&self) -> String {
        if self.internal_local {
            self.local_chain()
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

fn sorted(mut eps: Vec<SocketAddrV4>) -> Vec<SocketAddrV4> {
    eps.sort_by_key(|e| e.to_string());
    eps.dedup();
    eps
}

/// A user chain and its rules (each a whole `-A CHAIN ...` line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Filter,
    Nat,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Filter => "filter",
            Table::Nat => "nat",
        }
    }
}

/// Everything one service port contributes to a node's tables.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceRules {
    /// Its lines in the chains every Service shares (`KUBE-SERVICES`,
    /// `KUBE-NODEPORTS`, `KUBE-EXTERNAL-SERVICES`, `KUBE-PROXY-FIREWALL`): whole
    /// `-A CHAIN ...` lines with their table.
    pub shared: Vec<(Table, String)>,
    /// The service's own nat chains: `KUBE-SVC-`, `KUBE-SVL-`, `KUBE-EXT-`,
    /// `KUBE-FW-` then its `KUBE-SEP-`s.
    pub chains: Vec<Chain>,
}

impl ServiceRules {
    /// Its lines of one shared chain.
    pub fn shared_in(&self, table: Table) -> impl Iterator<Item = &String> {
        self.shared
            .iter()
            .filter(move |(t, _)| *t == table)
            .map(|(_, l)| l)
    }
}

pub use super::config::Config;

/// Quotes a comment as iptables-save does: only when it holds a space.
fn comment(text: &str) -> String {
    if text.contains(' ') {
        format!("\"{text}\"")
    } else {
        text.to_string()
    }
}

/// How a service port's traffic is steered, as upstream's syncProxyRules works it out.
struct Plan {
    spn: String,
    proto: &'static str,
    has_internal: bool,
    has_external: bool,
    uses_external_chain: bool,
    uses_fw_chain: bool,
    internal_chain: String,
    external_chain: String,
    lb_chain: String,
    /// The target and comment of traffic with no endpoints: (internal, external).
    internal_filter: (&'static str, String),
    external_filter: (&'static str, String),
}

fn plan(sp: &ServicePort) -> Plan {
    let spn = sp.port_name_string();
    let has = sp.has_endpoints;
    let has_internal = has && !(sp.internal_local && sp.local_endpoints.is_empty());
    let has_external = has && !(sp.external_policy_local() && sp.local_endpoints.is_empty());
    let external_chain = sp.external_chain();
    let uses_fw_chain = has && !sp.load_balancer_ips.is_empty() && !sp.source_ranges.is_empty();
    let filter = |reachable: bool| {
        if !has {
            ("REJECT", comment(&format!("{spn} has no endpoints")))
        } else if !reachable {
            ("DROP", comment(&format!("{spn} has no local endpoints")))
        } else {
            ("", String::new())
        }
    };
    Plan {
        proto: sp.protocol.lower(),
        has_internal,
        has_external,
        uses_external_chain: has && sp.externally_accessible(),
        uses_fw_chain,
        internal_chain: sp.internal_chain(),
        lb_chain: if uses_fw_chain {
            sp.firewall_chain()
        } else {
            external_chain.clone()
        },
        external_chain,
        internal_filter: filter(has_internal),
        external_filter: filter(has_external),
        spn,
    }
}

/// The rules of one service port, as kube-proxy's `syncProxyRules` writes them.
pub fn service_rules(cfg: &Config, sp: &ServicePort) -> ServiceRules {
    let p = plan(sp);
    let mut out = ServiceRules {
        shared: shared_lines(cfg, sp, &p),
        chains: Vec::new(),
    };
    own_chains(cfg, sp, &p, &mut out.chains);
    out
}

/// A service port's lines in the shared chains, in upstream's order.
// Long because it is upstream's capture of each kind of destination (cluster IP, external
// IPs, load balancer addresses, node port, health check port), one after another.
fn shared_lines(cfg: &Config, sp: &ServicePort, p: &Plan) -> Vec<(Table, String)> {
    let (spn, proto) = (&p.spn, p.proto);
    let mut v = Vec::new();
    let to = |ip: Ipv4Addr| format!("-m {proto} -p {proto} -d {ip} --dport {}", sp.port);
    let nat = |v: &mut Vec<_>, l: String| v.push((Table::Nat, l));
    let filter = |v: &mut Vec<_>, l: String| v.push((Table::Filter, l));
    let (ext_target, ext_comment) = &p.external_filter;
    if p.has_internal {
        let c = comment(&format!("{spn} cluster IP"));
        let dst = to(sp.cluster_ip);
        nat(
            &mut v,
            format!(
                "-A KUBE-SERVICES -m comment --comment {c} {dst} -j {}",
                p.internal_chain
            ),
        );
    } else {
        let (target, c) = &p.internal_filter;
        let dst = to(sp.cluster_ip);
        filter(
            &mut v,
            format!("-A KUBE-SERVICES -m comment --comment {c} {dst} -j {target}"),
        );
    }
    for ip in &sp.external_ips {
        let dst = to(*ip);
        if sp.has_endpoints {
            let c = comment(&format!("{spn} external IP"));
            nat(
                &mut v,
                format!(
                    "-A KUBE-SERVICES -m comment --comment {c} {dst} -j {}",
                    p.external_chain
                ),
            );
        }
        if !p.has_external {
            filter(&mut v, format!("-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {dst} -j {ext_target}"));
        }
    }
    for ip in &sp.load_balancer_ips {
        let dst = to(*ip);
        if sp.has_endpoints {
            let c = comment(&format!("{spn} loadbalancer IP"));
            nat(
                &mut v,
                format!(
                    "-A KUBE-SERVICES -m comment --comment {c} {dst} -j {}",
                    p.lb_chain
                ),
            );
        }
        if p.uses_fw_chain {
            let c = comment(&format!(
                "{spn} traffic not accepted by {}",
                sp.firewall_chain()
            ));
            filter(
                &mut v,
                format!("-A KUBE-PROXY-FIREWALL -m comment --comment {c} {dst} -j DROP"),
            );
        }
    }
    if !p.has_external {
        for ip in &sp.load_balancer_ips {
            let dst = to(*ip);
            filter(&mut v, format!("-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} {dst} -j {ext_target}"));
        }
    }
    if sp.node_port != 0 {
        let np = sp.node_port;
        if sp.has_endpoints {
            let c = comment(spn);
            let ext = &p.external_chain;
            if cfg.nfacct && cfg.localhost_node_ports {
                nat(&mut v, format!("-A KUBE-NODEPORTS -m comment --comment {c} -m {proto} -p {proto} -d 127.0.0.0/8 --dport {np} -m nfacct --nfacct-name localhost_nps_accepted_pkts -j {ext}"));
            }
            nat(&mut v, format!("-A KUBE-NODEPORTS -m comment --comment {c} -m {proto} -p {proto} --dport {np} -j {ext}"));
        }
        if !p.has_external {
            filter(&mut v, format!("-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL -m {proto} -p {proto} --dport {np} -j {ext_target}"));
        }
    }
    if sp.health_check_node_port != 0 {
        let c = comment(&format!("{spn} health check node port"));
        let hc = sp.health_check_node_port;
        filter(
            &mut v,
            format!(
                "-A KUBE-NODEPORTS -m comment --comment {c} -m tcp -p tcp --dport {hc} -j ACCEPT"
            ),
        );
    }
    v
}
/// A service port's own chains, in upstream's order: the internal traffic chain's
/// masquerade rule, `KUBE-EXT-`, `KUBE-FW-`, `KUBE-SVC-`, `KUBE-SVL-`, then the
/// endpoints' `KUBE-SEP-`s.
// Long because it is upstream's chains of one service port, each with the rules that
// set it up, in the order syncProxyRules writes them.
fn own_chains(cfg: &Config, sp: &ServicePort, p: &Plan, chains: &mut Vec<Chain>) {
    let (spn, proto) = (&p.spn, p.proto);
    let mut by_name: Vec<Chain> = Vec::new();
    let mut push = |name: &str, rule: String| push_rule(&mut by_name, name, rule);
    let cluster_chain = sp.service_chain();
    let local_chain = sp.local_chain();
    let uses_cluster = !sp.cluster_endpoints.is_empty() && sp.uses_cluster_endpoints();
    let uses_local = !sp.local_endpoints.is_empty() && sp.uses_local_endpoints();
    let cluster_ip_comment = comment(&format!("{spn} cluster IP"));
    let dst = format!(
        "-m {proto} -p {proto} -d {} --dport {}",
        sp.cluster_ip, sp.port
    );
    if p.has_internal {
        let chain = &p.internal_chain;
        if cfg.masquerade_all {
            push(
                chain,
                format!(
                    "-A {chain} -m comment --comment {cluster_ip_comment} {dst} -j KUBE-MARK-MASQ"
                ),
            );
        } else if let Some(cidr) = cfg.cluster_cidr {
            push(chain, format!("-A {chain} -m comment --comment {cluster_ip_comment} {dst} ! -s {cidr} -j KUBE-MARK-MASQ"));
        }
    }
    if p.uses_external_chain {
        let ext = &p.external_chain;
        if !sp.external_policy_local() {
            let c = comment(&format!(
                "masquerade traffic for {spn} external destinations"
            ));
            push(
                ext,
                format!("-A {ext} -m comment --comment {c} -j KUBE-MARK-MASQ"),
            );
        } else {
            if let Some(cidr) = cfg.cluster_cidr {
                let c = comment(&format!("pod traffic for {spn} external destinations"));
                push(
                    ext,
                    format!("-A {ext} -m comment --comment {c} -s {cidr} -j {cluster_chain}"),
                );
            }
            let c = comment(&format!(
                "masquerade LOCAL traffic for {spn} external destinations"
            ));
            push(ext, format!("-A {ext} -m comment --comment {c} -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ"));
            let c = comment(&format!(
                "route LOCAL traffic for {spn} external destinations"
            ));
            push(ext, format!("-A {ext} -m comment --comment {c} -m addrtype --src-type LOCAL -j {cluster_chain}"));
        }
        if p.has_external {
            let policy = if sp.external_policy_local() {
                &local_chain
            } else {
                &cluster_chain
            };
            push(ext, format!("-A {ext} -j {policy}"));
        }
    }
    if p.uses_fw_chain {
        let fw = sp.firewall_chain();
        let ext = &p.external_chain;
        let c = comment(&format!("{spn} loadbalancer IP"));
        let mut from_node = false;
        for cidr in &sp.source_ranges {
            push(
                &fw,
                format!("-A {fw} -m comment --comment {c} -s {cidr} -j {ext}"),
            );
            from_node |= cfg.node_ip.is_some_and(|ip| cidr.contains(&ip));
        }
        if from_node {
            for ip in &sp.load_balancer_ips {
                push(
                    &fw,
                    format!("-A {fw} -m comment --comment {c} -s {ip} -j {ext}"),
                );
            }
        }
        let c = comment(&format!(
            "other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"
        ));
        push(&fw, format!("-A {fw} -m comment --comment {c}"));
    }
    for (used, chain, eps) in [
        (uses_cluster, &cluster_chain, &sp.cluster_endpoints),
        (uses_local, &local_chain, &sp.local_endpoints),
    ] {
        if !used {
            continue;
        }
        for rule in endpoint_picks(sp, spn, chain, &sorted(eps.clone())) {
            push(chain, rule);
        }
    }
    for ep in sp.reachable_endpoints() {
        let sep = sp.endpoint_chain(&ep);
        let c = comment(spn);
        let recent = if sp.affinity_seconds.is_some() {
            format!(" -m recent --name {sep} --set")
        } else {
            String::new()
        };
        push(
            &sep,
            format!(
                "-A {sep} -m comment --comment {c} -s {} -j KUBE-MARK-MASQ",
                ep.ip()
            ),
        );
        push(&sep, format!("-A {sep} -m comment --comment {c}{recent} -m {proto} -p {proto} -j DNAT --to-destination {ep}"));
    }
    chains.extend(by_name);
}

fn push_rule(chains: &mut Vec<Chain>, name: &str, rule: String) {
    match chains.iter_mut().find(|c| c.name == name) {
        Some(c) => c.rules.push(rule),
        None => chains.push(Chain {
            name: name.to_string(),
            rules: vec![rule],
        }),
    }
}

/// Upstream's `writeServiceToEndpointRules`: the affinity checks, then one jump per
/// endpoint with the probability that spreads the load evenly.
fn endpoint_picks(
    sp: &ServicePort,
    spn: &str,
    chain: &str,
    endpoints: &[SocketAddrV4],
) -> Vec<String> {
    let mut rules = Vec::new();
    if let Some(seconds) = sp.affinity_seconds {
        for ep in endpoints {
            let sep = sp.endpoint_chain(ep);
            rules.push(format!(
                "-A {chain} -m comment --comment {} -m recent --name {sep} --rcheck --seconds {seconds} --reap -j {sep}",
                comment(&format!("{spn} -> {ep}"))
            ));
        }
    }
    let n = endpoints.len();
    for (i, ep) in endpoints.iter().enumerate() {
        let pick = if i + 1 < n {
            format!(
                " -m statistic --mode random --probability {:.10}",
                1.0 / (n - i) as f64
            )
        } else {
            String::new()
        };
        rules.push(format!(
            "-A {chain} -m comment --comment {}{pick} -j {}",
            comment(&format!("{spn} -> {ep}")),
            sp.endpoint_chain(ep)
        ));
    }
    rules
}
