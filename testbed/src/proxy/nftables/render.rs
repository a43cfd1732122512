//! kube-proxy's nftables mode as a pure function, after `pkg/proxy/nftables/proxier.go`
//! (the layout of kubernetes commit 81810de6, whose `proxier_test.go` we transcribe):
//! the table `ip kube-proxy` with its base chains, maps and sets ([`base`]), and what
//! one service port adds to it ([`service_objects`]): its chains, affinity sets and map
//! elements, word for word as upstream writes them.

use std::net::Ipv4Addr;

use super::names;
use crate::proxy::render::{Config, ServicePort};

/// The table, as every command names it.
pub const TABLE: &str = "ip kube-proxy";
/// The chain that marks a packet for masquerading.
pub const MARK_MASQ: &str = "mark-for-masquerade";
const REJECT_CHAIN: &str = "reject-chain";

/// One element of a map or set: `172.30.0.41 . tcp . 80 : goto service-...`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Element {
    /// The map or set.
    pub container: &'static str,
    pub key: String,
    pub comment: Option<String>,
    /// A map's verdict; none in a set.
    pub value: Option<String>,
}

impl Element {
    fn new(container: &'static str, key: String, value: Option<String>) -> Self {
        Element {
            container,
            key,
            comment: None,
            value,
        }
    }

    /// `add element ip kube-proxy MAP { KEY [comment "C"] [: VALUE] }`.
    pub fn add_line(&self) -> String {
        element_line(
            self.container,
            &self.key,
            self.comment.as_deref(),
            self.value.as_deref(),
        )
    }

    /// `delete element ip kube-proxy MAP { KEY }`.
    pub fn delete_line(&self) -> String {
        format!(
            "delete element {TABLE} {} {{ {} }}",
            self.container, self.key
        )
    }
}

/// `add element ip kube-proxy MAP { KEY [comment "C"] [: VALUE] }`.
pub fn element_line(
    container: &str,
    key: &str,
    comment: Option<&str>,
    value: Option<&str>,
) -> String {
    let comment = comment
        .map(|c| format!(" comment \"{c}\""))
        .unwrap_or_default();
    let value = value.map(|v| format!(" : {v}")).unwrap_or_default();
    format!("add element {TABLE} {container} {{ {key}{comment}{value} }}")
}

/// A chain of the table and its rules (each the text after the chain's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub rules: Vec<String>,
}

/// Everything one service port adds to the table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServiceObjects {
    /// Its chains, each with its rules: the endpoints' chains, then the policy,
    /// external and firewall chains, in upstream's order of creation.
    pub chains: Vec<Chain>,
    /// Its affinity sets and their timeout in seconds.
    pub affinity_sets: Vec<(String, u32)>,
    /// Its elements in the shared maps and sets.
    pub elements: Vec<Element>,
}

impl ServiceObjects {
    fn chain(&mut self, name: &str) -> &mut Vec<String> {
        if let Some(i) = self.chains.iter().position(|c| c.name == name) {
            return &mut self.chains[i].rules;
        }
        self.chains.push(Chain {
            name: name.to_string(),
            rules: Vec::new(),
        });
        &mut self.chains.last_mut().expect("just pushed").rules
    }
}

/// `add set ...` of an affinity set.
pub fn affinity_set_line(name: &str, seconds: u32) -> String {
    format!("add set {TABLE} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {seconds}s ; }}")
}

/// The base chains: name, type, hook and priority.
const BASE_CHAINS: [(&str, &str, &str, i32); 8] = [
    ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    ("filter-output-pre-dnat", "filter", "output", -110),
    ("filter-forward", "filter", "forward", 0),
    ("filter-input", "filter", "input", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
    ("nat-prerouting", "nat", "prerouting", -100),
];

/// The regular chains every table has, and the comment of those that have one.
const TOP_CHAINS: [(&str, Option<&str>); 8] = [
    ("cluster-ips-check", None),
    ("firewall-check", None),
    (MARK_MASQ, None),
    ("masquerading", None),
    ("nodeport-endpoints-check", None),
    (
        REJECT_CHAIN,
        Some("helper for @no-endpoint-services / @no-endpoint-nodeports"),
    ),
    ("services", None),
    ("service-endpoints-check", None),
];

/// The maps and sets: kind, name, type and comment.
const CONTAINERS: [(&str, &str, &str, &str); 7] = [
    ("set", "cluster-ips", "ipv4_addr", "Active ClusterIPs"),
    (
        "set",
        "nodeport-ips",
        "ipv4_addr",
        "IPs that accept NodePort traffic",
    ),
    (
        "map",
        "firewall-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "destinations that are subject to LoadBalancerSourceRanges",
    ),
    (
        "map",
        "no-endpoint-nodeports",
        "inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to service nodeports with no endpoints",
    ),
    (
        "map",
        "no-endpoint-services",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "vmap to drop or reject packets to services with no endpoints",
    ),
    (
        "map",
        "service-ips",
        "ipv4_addr . inet_proto . inet_service : verdict",
        "ClusterIP, ExternalIP and LoadBalancer IP traffic",
    ),
    (
        "map",
        "service-nodeports",
        "inet_proto . inet_service : verdict",
        "NodePort traffic",
    ),
];

/// The table without any Service, as upstream's `setupNFTables` makes it, in three
/// parts to be written in this order: the table and its chains, its maps and sets,
/// then the rules and the node port addresses (which refer to both).
pub struct Base {
    pub chains: Vec<String>,
    pub containers: Vec<String>,
    pub rules: Vec<String>,
}

/// Upstream's `setupNFTables` for `cfg`. The node port addresses are
/// `cfg.node_port_addresses` (upstream's default in this mode: the node's primary
/// address), or every local address but loopback when there are none.
pub fn base(cfg: &Config) -> Base {
    let mut chains = vec![format!(
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    )];
    for (name, kind, hook, priority) in BASE_CHAINS {
        chains.push(format!(
            "add chain {TABLE} {name} {{ type {kind} hook {hook} priority {priority} ; }}"
        ));
    }
    for (name, comment) in TOP_CHAINS {
        chains.push(match comment {
            Some(c) => format!("add chain {TABLE} {name} {{ comment \"{c}\" ; }}"),
            None => format!("add chain {TABLE} {name}"),
        });
    }
    let all_addresses = cfg.node_port_addresses.is_empty();
    let containers = CONTAINERS
        .iter()
        .filter(|(_, name, _, _)| !(all_addresses && *name == "nodeport-ips"))
        .map(|(kind, name, ty, comment)| {
            format!("add {kind} {TABLE} {name} {{ type {ty} ; comment \"{comment}\" ; }}")
        })
        .collect();
    Base {
        chains,
        containers,
        rules: base_rules(cfg),
    }
}

/// The rules of [`base`], then the node port addresses.
fn base_rules(cfg: &Config) -> Vec<String> {
    let all_addresses = cfg.node_port_addresses.is_empty();
    let nodeports = if all_addresses {
        "fib daddr type local ip daddr != 127.0.0.0/8"
    } else {
        "ip daddr @nodeport-ips"
    };
    let nodeports_check = if all_addresses {
        "ip daddr != 127.0.0.0/8"
    } else {
        "ip daddr @nodeport-ips"
    };
    let mut rules: Vec<(&str, String)> = vec![
        ("filter-prerouting-pre-dnat", "ct state new jump firewall-check".into()),
        ("filter-output-pre-dnat", "ct state new jump firewall-check".into()),
        ("filter-forward", "ct state new jump service-endpoints-check".into()),
        ("filter-forward", "ct state new jump cluster-ips-check".into()),
        ("filter-input", "ct state new jump nodeport-endpoints-check".into()),
        ("filter-input", "ct state new jump service-endpoints-check".into()),
        ("filter-output", "ct state new jump service-endpoints-check".into()),
        ("filter-output", "ct state new jump cluster-ips-check".into()),
        ("nat-output", "jump services".into()),
        ("nat-prerouting", "jump services".into()),
        ("nat-postrouting", "jump masquerading".into()),
        (MARK_MASQ, "mark set mark or 0x4000".into()),
        ("masquerading", "mark and 0x4000 == 0 return".into()),
        ("masquerading", "mark set mark xor 0x4000".into()),
        ("masquerading", "masquerade fully-random".into()),
        (
            "cluster-ips-check",
            "ip daddr @cluster-ips reject comment \"Reject traffic to invalid ports of ClusterIPs\""
                .into(),
        ),
    ];
    if let Some(cidr) = cfg.service_cidr {
        rules.push((
            "cluster-ips-check",
            format!(
                "ip daddr {{ {cidr} }} drop comment \"Drop traffic to unallocated ClusterIPs\""
            ),
        ));
    }
    rules.extend([
        (REJECT_CHAIN, "reject".into()),
        (
            "service-endpoints-check",
            "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
        ),
        (
            "nodeport-endpoints-check",
            format!("{nodeports_check} meta l4proto . th dport vmap @no-endpoint-nodeports"),
        ),
        (
            "firewall-check",
            "ip daddr . meta l4proto . th dport vmap @firewall-ips".into(),
        ),
        (
            "services",
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        ),
        (
            "services",
            format!("{nodeports} meta l4proto . th dport vmap @service-nodeports"),
        ),
    ]);
    let mut rules: Vec<String> = rules
        .into_iter()
        .map(|(chain, rule)| format!("add rule {TABLE} {chain} {rule}"))
        .collect();
    rules.extend(
        cfg.node_port_addresses
            .iter()
            .map(|ip| format!("add element {TABLE} nodeport-ips {{ {ip} }}")),
    );
    rules
}

/// How a service port's traffic is steered (upstream's syncProxyRules' locals).
struct Plan {
    has_internal: bool,
    has_external: bool,
    uses_external_chain: bool,
    uses_fw_chain: bool,
    internal_verdict: String,
    external_verdict: String,
}

fn plan(sp: &ServicePort) -> Plan {
    let has = sp.has_endpoints;
    let has_internal = has && !(sp.internal_local && sp.local_endpoints.is_empty());
    let has_external = has && !(sp.external_policy_local() && sp.local_endpoints.is_empty());
    let verdict = |reachable: bool| {
        if !has {
            format!("goto {REJECT_CHAIN}")
        } else if !reachable {
            "drop".to_string()
        } else {
            String::new()
        }
    };
    Plan {
        has_internal,
        has_external,
        uses_external_chain: has && sp.externally_accessible(),
        uses_fw_chain: !sp.load_balancer_ips.is_empty() && !sp.source_ranges.is_empty(),
        internal_verdict: verdict(has_internal),
        external_verdict: verdict(has_external),
    }
}

/// What one service port adds to the table, as upstream's `syncProxyRules` writes it.
pub fn service_objects(cfg: &Config, sp: &ServicePort) -> ServiceObjects {
    let p = plan(sp);
    let mut out = ServiceObjects::default();
    // The chains, in upstream's order of creation.
    let uses_cluster = !sp.cluster_endpoints.is_empty() && sp.uses_cluster_endpoints();
    let uses_local = !sp.local_endpoints.is_empty() && sp.uses_local_endpoints();
    for ep in sp.reachable_endpoints() {
        out.chain(&names::endpoint(sp, &ep));
    }
    if uses_cluster {
        out.chain(&names::service(sp));
    }
    if uses_local {
        out.chain(&names::local(sp));
    }
    if p.uses_external_chain {
        out.chain(&names::external(sp));
    }
    if p.uses_fw_chain {
        out.chain(&names::firewall(sp));
    }
    out.elements = elements(sp, &p);
    rules(cfg, sp, &p, &mut out);
    out
}

/// A service port's elements in the shared maps and sets.
fn elements(sp: &ServicePort, p: &Plan) -> Vec<Element> {
    let dest = |ip: &Ipv4Addr| format!("{ip} . {} . {}", sp.protocol.lower(), sp.port);
    let internal = if sp.internal_local {
        names::local(sp)
    } else {
        names::service(sp)
    };
    let to_external = format!("goto {}", names::external(sp));
    let mut v = vec![Element::new("cluster-ips", sp.cluster_ip.to_string(), None)];
    let no_endpoints = |v: &mut Vec<Element>, container, key, verdict: &str| {
        v.push(Element {
            comment: Some(sp.port_name_string()),
            ..Element::new(container, key, Some(verdict.to_string()))
        })
    };
    if p.has_internal {
        let to = Some(format!("goto {internal}"));
        v.push(Element::new("service-ips", dest(&sp.cluster_ip), to));
    } else {
        no_endpoints(
            &mut v,
            "no-endpoint-services",
            dest(&sp.cluster_ip),
            &p.internal_verdict,
        );
    }
    for ip in &sp.external_ips {
        if sp.has_endpoints {
            v.push(Element::new(
                "service-ips",
                dest(ip),
                Some(to_external.clone()),
            ));
        }
        if !p.has_external {
            no_endpoints(
                &mut v,
                "no-endpoint-services",
                dest(ip),
                &p.external_verdict,
            );
        }
    }
    for ip in &sp.load_balancer_ips {
        if sp.has_endpoints {
            v.push(Element::new(
                "service-ips",
                dest(ip),
                Some(to_external.clone()),
            ));
        }
        if p.uses_fw_chain {
            let to = Some(format!("goto {}", names::firewall(sp)));
            v.push(Element::new("firewall-ips", dest(ip), to));
        }
    }
    if !p.has_external {
        for ip in &sp.load_balancer_ips {
            no_endpoints(
                &mut v,
                "no-endpoint-services",
                dest(ip),
                &p.external_verdict,
            );
        }
    }
    if sp.node_port != 0 {
        v.extend(node_port_elements(sp, p));
    }
    v
}

/// A node port's element: to the external chain, or its verdict with no endpoints.
fn node_port_elements(sp: &ServicePort, p: &Plan) -> Vec<Element> {
    let key = format!("{} . {}", sp.protocol.lower(), sp.node_port);
    let mut v = Vec::new();
    if sp.has_endpoints {
        let to = format!("goto {}", names::external(sp));
        v.push(Element::new("service-nodeports", key.clone(), Some(to)));
    }
    if !p.has_external {
        let verdict = Some(p.external_verdict.clone());
        v.push(Element {
            comment: Some(sp.port_name_string()),
            ..Element::new("no-endpoint-nodeports", key, verdict)
        });
    }
    v
}

/// A service port's rules in its own chains, and its affinity sets.
fn rules(cfg: &Config, sp: &ServicePort, p: &Plan, out: &mut ServiceObjects) {
    let cluster_chain = names::service(sp);
    let local_chain = names::local(sp);
    let masq = format!("jump {MARK_MASQ}");
    if p.has_internal {
        let chain = if sp.internal_local {
            &local_chain
        } else {
            &cluster_chain
        };
        let dst = format!("ip daddr {}", sp.cluster_ip);
        if cfg.masquerade_all {
            out.chain(chain).push(format!("{dst} {masq}"));
        } else if let Some(cidr) = cfg.cluster_cidr {
            out.chain(chain)
                .push(format!("{dst} ip saddr != {cidr} {masq}"));
        }
    }
    if p.uses_external_chain {
        external_rules(cfg, sp, p, out);
    }
    if p.uses_fw_chain {
        let mut sources: Vec<String> = sp.source_ranges.iter().map(|c| c.to_string()).collect();
        let from_node = cfg
            .node_ip
            .is_some_and(|ip| sp.source_ranges.iter().any(|c| c.contains(&ip)));
        if from_node {
            sources.extend(sp.load_balancer_ips.iter().map(|ip| ip.to_string()));
        }
        out.chain(&names::firewall(sp))
            .push(format!("ip saddr != {{ {} }} drop", sources.join(" , ")));
    }
    let reachable = sp.reachable_endpoints();
    if let Some(seconds) = sp.affinity_seconds {
        out.affinity_sets = reachable
            .iter()
            .map(|ep| (names::affinity(sp, ep), seconds))
            .collect();
    }
    let uses_cluster = !sp.cluster_endpoints.is_empty() && sp.uses_cluster_endpoints();
    let uses_local = !sp.local_endpoints.is_empty() && sp.uses_local_endpoints();
    for (used, chain, eps) in [
        (uses_cluster, &cluster_chain, &sp.cluster_endpoints),
        (uses_local, &local_chain, &sp.local_endpoints),
    ] {
        if used {
            let picks = endpoint_picks(sp, eps);
            out.chain(chain).extend(picks);
        }
    }
    for ep in reachable {
        let chain = names::endpoint(sp, &ep);
        let rules = out.chain(&chain);
        rules.push(format!("ip saddr {} {masq}", ep.ip()));
        if sp.affinity_seconds.is_some() {
            rules.push(format!(
                "update @{} {{ ip saddr }}",
                names::affinity(sp, &ep)
            ));
        }
        rules.push(format!("meta l4proto {} dnat to {ep}", sp.protocol.lower()));
    }
}

/// The rules of the external chain: masquerade, or with a Local policy the short
/// circuits of pods' and the node's own traffic; then the policy's chain.
fn external_rules(cfg: &Config, sp: &ServicePort, p: &Plan, out: &mut ServiceObjects) {
    let cluster_chain = names::service(sp);
    let local_chain = names::local(sp);
    let masq = format!("jump {MARK_MASQ}");
    let ext = names::external(sp);
    if !sp.external_policy_local() {
        out.chain(&ext).push(masq.clone());
    } else {
        if let Some(cidr) = cfg.cluster_cidr {
            out.chain(&ext).push(format!(
                "ip saddr {cidr} goto {cluster_chain} comment \"short-circuit pod traffic\""
            ));
        }
        out.chain(&ext).push(format!(
            "fib saddr type local {masq} comment \"masquerade local traffic\""
        ));
        out.chain(&ext).push(format!(
            "fib saddr type local goto {cluster_chain} comment \"short-circuit local traffic\""
        ));
    }
    if p.has_external {
        let policy = if sp.external_policy_local() {
            &local_chain
        } else {
            &cluster_chain
        };
        out.chain(&ext).push(format!("goto {policy}"));
    }
}

/// Upstream's `writeServiceToEndpointRules`: the affinity checks, then one random
/// pick among the endpoints.
fn endpoint_picks(sp: &ServicePort, endpoints: &[std::net::SocketAddrV4]) -> Vec<String> {
    let mut eps = endpoints.to_vec();
    eps.sort_by_key(|e| e.to_string());
    eps.dedup();
    let mut rules = Vec::new();
    if sp.affinity_seconds.is_some() {
        for ep in &eps {
            rules.push(format!(
                "ip saddr @{} goto {}",
                names::affinity(sp, ep),
                names::endpoint(sp, ep)
            ));
        }
    }
    let picks: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", names::endpoint(sp, ep)))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        eps.len(),
        picks.join(" , ")
    ));
    rules
}
