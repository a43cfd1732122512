//! The meaning of a scenario: names, address plan and placement, checked as a whole.
//! Each problem names the path of the value at fault, which the loader turns into a line.

use std::collections::{BTreeMap, HashMap, HashSet};

use ipnet::Ipv4Net;

use super::Scenario;
use crate::names;
use crate::plan;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file, like `pods[2].spec.nodeName`.
    pub path: String,
    pub message: String,
    /// Another place to point at when `path` is not written in the file (a default).
    pub also: Option<String>,
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> Problem {
    let path = path.into();
    Problem {
        message: format!("{path}: {}", message.into()),
        path,
        also: None,
    }
}

/// Everything that would stop this scenario from being built; empty when it can be.
pub fn check(s: &Scenario) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(why) = names::check_dns1123_label(&s.name, names::TESTBED_NAME_MAX) {
        out.push(problem("name", format!("scenario name {:?} {why}", s.name)));
    }
    check_cluster(s, &mut out);
    if s.pods.len() > crate::limits::PODS {
        out.push(problem(
            "pods",
            format!(
                "{} pods are more than the {} a testbed runs (testbed::limits::PODS)",
                crate::limits::count(s.pods.len()),
                crate::limits::count(crate::limits::PODS)
            ),
        ));
    }
    if out.is_empty() {
        check_pods(s, &mut out);
    }
    out
}

// Long because it is every check of the cluster's address plan, each a few lines, and all
// of them report at once.
fn check_cluster(s: &Scenario, out: &mut Vec<Problem>) {
    let c = &s.cluster;
    if c.nodes.is_empty() {
        out.push(problem(
            "cluster.nodes",
            "a cluster needs at least one node",
        ));
    }
    if c.nodes.len() > crate::limits::NODES {
        out.push(problem(
            "cluster.nodes",
            format!(
                "{} nodes are more than the {} a testbed runs (testbed::limits::NODES)",
                crate::limits::count(c.nodes.len()),
                crate::limits::NODES
            ),
        ));
        return;
    }
    let mut seen = HashSet::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let path = format!("cluster.nodes[{i}]");
        // A node's name is also the name of its port on the underlay bridge.
        if let Err(why) = names::check_dns1123_label(node, names::IFNAME_MAX) {
            let why = if node.len() > names::IFNAME_MAX {
                format!("{why}: it names the node's interface on the underlay, and Linux interface names have at most 15")
            } else {
                why
            };
            out.push(problem(path.clone(), format!("node name {node:?} {why}")));
        }
        if !seen.insert(node) {
            out.push(problem(path, format!("node {node:?} is listed twice")));
        }
    }
    let nets = [
        ("cluster.podCIDR", c.pod_cidr),
        ("cluster.nodeNetwork", c.node_network),
        ("cluster.serviceCIDR", c.service_cidr),
    ];
    let reserved: [(&str, Ipv4Net); 3] = [
        (
            "the \"this network\" range",
            "0.0.0.0/8".parse().expect("valid"),
        ),
        ("the loopback range", "127.0.0.0/8".parse().expect("valid")),
        (
            "the multicast and reserved ranges",
            "224.0.0.0/3".parse().expect("valid"),
        ),
    ];
    for (i, (path, net)) in nets.iter().enumerate() {
        for (other_path, other) in &nets[i + 1..] {
            if overlaps(*net, *other) {
                out.push(Problem {
                    also: Some(path.to_string()),
                    ..problem(
                        *other_path,
                        format!("{other} overlaps {path} {net}; the ranges must be disjoint"),
                    )
                });
            }
        }
        for (what, r) in &reserved {
            if overlaps(*net, *r) {
                out.push(problem(*path, format!("{net} overlaps {what} {r}")));
            }
        }
    }
    if c.service_cidr.prefix_len() > 28 {
        out.push(problem(
            "cluster.serviceCIDR",
            format!(
                "{} is too small: the cluster DNS takes its {}th address, so it needs at least /28",
                c.service_cidr,
                plan::DNS_HOST
            ),
        ));
    }
    let mask = c.node_cidr_mask_size;
    let prefix = c.pod_cidr.prefix_len();
    if mask <= prefix || mask > 30 {
        out.push(problem(
            "cluster.nodeCIDRMaskSize",
            format!("{mask} must be longer than podCIDR's /{prefix} and at most 30"),
        ));
    } else {
        // Node i (1-based) takes the i-th subnet, as node-1 takes 10.244.1.0/24.
        let subnets = 1u64 << (mask - prefix).min(32);
        if c.nodes.len() as u64 >= subnets {
            out.push(problem(
                "cluster.podCIDR",
                format!(
                    "{} has {subnets} subnets of /{mask}; {} nodes need {}",
                    c.pod_cidr,
                    c.nodes.len(),
                    c.nodes.len() + 1
                ),
            ));
        }
    }
    check_dns(c, out);
    // The underlay's first address is its gateway, then one per node, then the hosts.
    let usable = plan::usable_hosts(c.node_network);
    let taken = c.nodes.len() + c.hosts.len() + 1;
    if taken as u64 > usable {
        let what = if c.hosts.is_empty() {
            format!("a gateway and {} nodes", c.nodes.len())
        } else {
            format!(
                "a gateway, {} nodes and {} hosts",
                c.nodes.len(),
                c.hosts.len()
            )
        };
        out.push(problem(
            "cluster.nodeNetwork",
            format!(
                "{} has {usable} usable addresses; {what} need {taken}",
                c.node_network
            ),
        ));
    } else {
        check_outside(c, out);
    }
}

/// The most hosts outside the cluster a scenario declares.
pub const HOSTS: usize = 16;
/// The most addresses a load balancer pool holds.
pub const POOL: u32 = 4096;

/// The hosts outside the cluster and the load balancer's pool.
fn check_outside(c: &super::ClusterSpec, out: &mut Vec<Problem>) {
    if c.hosts.len() > HOSTS {
        out.push(problem(
            "cluster.hosts",
            format!(
                "{} hosts are more than the {HOSTS} a testbed runs",
                c.hosts.len()
            ),
        ));
        return;
    }
    let mut seen = HashSet::new();
    for (i, host) in c.hosts.iter().enumerate() {
        let path = format!("cluster.hosts[{i}]");
        if let Err(why) = names::check_dns1123_label(host, names::IFNAME_MAX) {
            out.push(problem(
                path.clone(),
                format!("host name {host:?} {why} (it names the host's interface on the underlay)"),
            ));
        } else if host == plan::OUTSIDE_HOST {
            out.push(problem(
                path.clone(),
                format!("host name {host:?} is the underlay router's, which every testbed has"),
            ));
        } else if c.nodes.contains(host) {
            out.push(problem(
                path.clone(),
                format!("host name {host:?} is a node's"),
            ));
        }
        if !seen.insert(host) {
            out.push(problem(path, format!("host {host:?} is listed twice")));
        }
    }
    let path = "cluster.loadBalancerPool";
    let net = c.node_network;
    let (first, last) = c
        .load_balancer_pool
        .unwrap_or_else(|| plan::default_load_balancer_pool(net));
    let explicit = c.load_balancer_pool.is_some();
    if explicit && !(net.contains(&first) && net.contains(&last)) {
        out.push(problem(path, format!("{first}-{last} is not inside nodeNetwork {net}: the load balancer answers on the node network")));
        return;
    }
    if explicit && u32::from(last) - u32::from(first) >= POOL {
        out.push(problem(
            path,
            format!("{first}-{last} holds more than the {POOL} addresses a pool may"),
        ));
        return;
    }
    // The gateway, the nodes and the hosts are at the start of the network.
    let used_last = plan::nth_host(net, (c.nodes.len() + c.hosts.len() + 1) as u32);
    if first <= used_last && (explicit || net.contains(&first)) {
        out.push(problem(
            if explicit { path } else { "cluster.nodeNetwork" },
            format!("the load balancer's addresses {first}-{last} overlap the gateway, nodes and hosts ({}-{used_last}); name a pool after them", plan::nth_host(net, 1)),
        ));
    }
}

/// CoreDNS's `kubernetes` plugin takes a TTL of at most an hour.
const MAX_TTL: u32 = 3600;

fn check_dns(c: &super::ClusterSpec, out: &mut Vec<Problem>) {
    let d = &c.dns;
    if d.domain.is_empty() {
        out.push(problem("cluster.dns.domain", "the cluster domain is empty"));
    } else if d.domain.len() > 200 {
        out.push(problem(
            "cluster.dns.domain",
            format!(
                "{:?} is {} characters; a cluster domain leaves room for Service names (at most 200)",
                d.domain,
                d.domain.len()
            ),
        ));
    } else if let Some(why) = d
        .domain
        .split('.')
        .find_map(|l| names::check_dns1123_label(l, 63).err().map(|e| (l, e)))
    {
        out.push(problem(
            "cluster.dns.domain",
            format!(
                "{:?} is not a domain name: label {:?} {}",
                d.domain, why.0, why.1
            ),
        ));
    }
    if let Some(ip) = d.service_ip {
        let first = plan::nth_host(c.service_cidr, 1);
        if !c.service_cidr.contains(&ip)
            || ip == c.service_cidr.network()
            || ip == c.service_cidr.broadcast()
        {
            out.push(problem(
                "cluster.dns.serviceIP",
                format!(
                    "{ip} is not a usable address of serviceCIDR {}",
                    c.service_cidr
                ),
            ));
        } else if ip == first {
            out.push(problem(
                "cluster.dns.serviceIP",
                format!("{ip} is the kubernetes Service's address (the first of serviceCIDR)"),
            ));
        }
    }
    if d.ttl > MAX_TTL {
        out.push(problem(
            "cluster.dns.ttl",
            format!("{} s is more than the {MAX_TTL} s CoreDNS allows", d.ttl),
        ));
    }
    let dns_ip = d
        .service_ip
        .unwrap_or_else(|| plan::nth_host(c.service_cidr, plan::DNS_HOST));
    for (i, up) in d.upstream.iter().enumerate() {
        let path = format!("cluster.dns.upstream[{i}]");
        if up.port() == 0 {
            out.push(problem(path, format!("{up}: port 0 cannot be asked")));
        } else if up.ip() == std::net::IpAddr::V4(dns_ip) && up.port() == 53 {
            out.push(problem(
                path,
                format!("{up} is the cluster DNS itself; its answers would loop"),
            ));
        }
    }
}

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn check_pods(s: &Scenario, out: &mut Vec<Problem>) {
    let nodes: HashMap<&str, usize> = s
        .cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    let mut veths: BTreeMap<(usize, String), &str> = BTreeMap::new();
    for (i, pod) in s.pods.iter().enumerate() {
        if !seen.insert((&pod.namespace, &pod.name)) {
            out.push(problem(
                format!("pods[{i}].metadata.name"),
                format!("pod {}/{} is declared twice", pod.namespace, pod.name),
            ));
        }
        if pod.spec.as_ref().is_some_and(|s| s.containers.is_empty()) {
            out.push(problem(
                format!("pods[{i}].spec.containers"),
                "a pod needs at least one container (Kubernetes: Required value)",
            ));
        }
        if let Some(node) = &pod.node {
            if !nodes.contains_key(node.as_str()) {
                out.push(problem(
                    format!("pods[{i}].spec.nodeName"),
                    format!(
                        "node {node:?} is not in the cluster (nodes: {})",
                        s.cluster.nodes.join(", ")
                    ),
                ));
            }
        }
    }
    if !out.is_empty() {
        return;
    }
    // Admission, as for every pod the API server takes: its checks, at the pod's path.
    for (i, pod) in s.pods.iter().enumerate() {
        let obj = crate::api::Object::Pod(pod.to_pod(None));
        if let Err(problems) = crate::api::admission::admit(obj, None) {
            out.extend(problems.into_iter().map(|p| {
                let path = if p.path.is_empty() {
                    format!("pods[{i}]")
                } else {
                    format!("pods[{i}].{}", p.path)
                };
                problem(path, p.message)
            }));
        }
    }
    if !out.is_empty() {
        return;
    }
    let placement = plan::place(&s.cluster, &s.pods);
    let capacity = plan::pods_per_node(&s.cluster);
    let mut count = vec![0u64; s.cluster.nodes.len()];
    for (i, (pod, node)) in s.pods.iter().zip(&placement).enumerate() {
        count[*node] += 1;
        if count[*node] == capacity + 1 {
            out.push(problem(
                format!("pods[{i}]"),
                format!(
                    "node {} is full: its /{} pod subnet holds {capacity} pods",
                    s.cluster.nodes[*node], s.cluster.node_cidr_mask_size
                ),
            ));
        }
        let veth = names::pod_host_veth(&pod.namespace, &pod.name);
        if let Some(other) = veths.insert((*node, veth.clone()), &pod.name) {
            out.push(problem(
                format!("pods[{i}].metadata.name"),
                format!("pod {} and pod {other} hash to the same interface name {veth} on one node; rename one", pod.name),
            ));
        }
    }
}
