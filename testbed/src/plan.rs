//! The address plan: which node each pod runs on and every address, route and name,
//! as a pure function of the cluster and its pods. The same cluster and pods give the
//! same plan on every run and every machine.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::names;

/// The cluster's shape and address plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSpec {
    pub nodes: Vec<String>,
    pub pod_cidr: Ipv4Net,
    pub node_cidr_mask_size: u8,
    pub node_network: Ipv4Net,
    pub service_cidr: Ipv4Net,
    pub dns: DnsSettings,
    /// kube-proxy's mode on every node.
    pub proxy_mode: crate::proxy::Mode,
    /// Hosts outside the cluster on the node network (`host/NAME`), besides the
    /// underlay router `outside`.
    pub hosts: Vec<String>,
    /// The addresses the load balancer gives, first to last; `None` is
    /// [`default_load_balancer_pool`].
    pub load_balancer_pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// The kubelets' cap on the crash-loop back-off (`None`: upstream's 300 s).
    pub max_restart_period: Option<std::time::Duration>,
    /// The kubelets' Lease duration and the node lifecycle controller's grace period.
    pub node_health: crate::controllers::node_lifecycle::Timing,
}

/// How the cluster DNS is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// The cluster domain, without the final dot: `cluster.local`.
    pub domain: String,
    /// kube-dns's ClusterIP; `None` is the 10th address of the service CIDR.
    pub service_ip: Option<Ipv4Addr>,
    /// The TTL of answers, and of negative answers (the SOA's minimum).
    pub ttl: u32,
    /// Servers asked, in order, for names outside the cluster domain.
    pub upstream: Vec<SocketAddr>,
    /// How pod names are answered.
    pub pods: crate::dns::PodMode,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            domain: crate::dns::config::DEFAULT_DOMAIN.into(),
            service_ip: None,
            ttl: crate::dns::config::DEFAULT_TTL,
            upstream: Vec::new(),
            pods: crate::dns::PodMode::default(),
        }
    }
}

impl Default for ClusterSpec {
    fn default() -> Self {
        ClusterSpec::with_nodes(1)
    }
}

impl ClusterSpec {
    /// The default address plan with `n` nodes named `node-1`..`node-n`.
    pub fn with_nodes(n: usize) -> Self {
        ClusterSpec {
            nodes: (1..=n).map(|i| format!("node-{i}")).collect(),
            pod_cidr: "10.244.0.0/16".parse().expect("valid"),
            node_cidr_mask_size: 24,
            node_network: "172.18.0.0/24".parse().expect("valid"),
            service_cidr: "10.96.0.0/12".parse().expect("valid"),
            dns: DnsSettings::default(),
            proxy_mode: Default::default(),
            hosts: Vec::new(),
            load_balancer_pool: None,
            max_restart_period: None,
            node_health: Default::default(),
        }
    }
}

/// A pod to start: the fields of its manifest that the topology uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PodDecl {
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `spec.nodeName`; `None` lets the planner spread it.
    pub node: Option<String>,
    /// The rest of the manifest's spec: containers, ports, probes.
    pub spec: Option<k8s_openapi::api::core::v1::PodSpec>,
}

impl PodDecl {
    /// Pod `default/NAME` with one container, `main`, that serves nothing: the
    /// least a pod admission takes.
    pub fn new(name: impl Into<String>) -> Self {
        PodDecl {
            namespace: "default".into(),
            name: name.into(),
            labels: BTreeMap::new(),
            node: None,
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![k8s_openapi::api::core::v1::Container {
                    name: "main".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    /// The pod as its manifest says (on `node`, when placed), for admission and the
    /// API server.
    pub fn to_pod(&self, node: Option<&str>) -> k8s_openapi::api::core::v1::Pod {
        let mut spec = self.spec.clone().unwrap_or_default();
        spec.node_name = node.map(String::from).or_else(|| self.node.clone());
        k8s_openapi::api::core::v1::Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels.clone()).filter(|l| !l.is_empty()),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        }
    }
}

/// Where pods go and the address each gets, by one rule for every pod: the
/// scheduler's part (the node with the fewest pods, the first of those) and the
/// node IPAM's (the lowest free host of the node's pod CIDR from `.2`; `.1` is its
/// bridge). The plan places the scenario's pods with it, the kubelets every pod
/// made later.
#[derive(Debug, Clone)]
pub struct NodeAllocator {
    cidrs: Vec<Ipv4Net>,
    /// Pods bound to each node.
    pods: Vec<usize>,
    /// The host numbers taken in each node's pod CIDR.
    used: Vec<std::collections::BTreeSet<u32>>,
}

impl NodeAllocator {
    /// For nodes with these pod CIDRs, in order.
    pub fn new(cidrs: Vec<Ipv4Net>) -> Self {
        NodeAllocator {
            pods: vec![0; cidrs.len()],
            used: vec![Default::default(); cidrs.len()],
            cidrs,
        }
    }

    /// Counts a pod bound to `node` (`by` is 1 or -1).
    pub fn bind(&mut self, node: usize, by: isize) {
        if let Some(n) = self.pods.get_mut(node) {
            *n = n.saturating_add_signed(by);
        }
    }

    /// The node the next pod that names none goes to.
    pub fn schedule(&self) -> Option<usize> {
        self.schedule_among(|_| true)
    }

    /// The node the next pod goes to among those that `fit` it (its taints tolerated).
    pub fn schedule_among(&self, fit: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.pods.len())
            .filter(|i| fit(*i))
            .min_by_key(|i| (self.pods[*i], *i))
    }

    /// The lowest free address of `node`'s pod CIDR, now taken; `None` when full.
    pub fn allocate(&mut self, node: usize) -> Option<Ipv4Addr> {
        let net = *self.cidrs.get(node)?;
        let last = u32::from(net.broadcast()) - u32::from(net.network()) - 1;
        let host = (2..=last).find(|h| !self.used[node].contains(h))?;
        self.used[node].insert(host);
        Some(nth_host(net, host))
    }

    /// Takes `ip` on `node` (a pod that has it already).
    pub fn take(&mut self, node: usize, ip: Ipv4Addr) {
        if let Some(net) = self.cidrs.get(node) {
            self.used[node].insert(u32::from(ip).wrapping_sub(u32::from(net.network())));
        }
    }

    /// Frees `ip` on `node`.
    pub fn release(&mut self, node: usize, ip: Ipv4Addr) {
        if let Some(net) = self.cidrs.get(node) {
            self.used[node].remove(&u32::from(ip).wrapping_sub(u32::from(net.network())));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub testbed: String,
    pub fabric: FabricPlan,
    pub nodes: Vec<NodePlan>,
    pub pods: Vec<PodPlan>,
    pub service_cidr: Ipv4Net,
    /// The cluster DNS Service's address, the 10th of the service CIDR (10.96.0.10 by
    /// default), which every pod's resolv.conf names.
    pub dns_ip: Ipv4Addr,
    /// The cluster domain (`cluster.local`), the root of pods' search paths.
    #[serde(default = "default_domain")]
    pub cluster_domain: String,
    /// The scenario's hosts outside the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<HostPlan>,
    /// The load balancer's addresses, first to last, when the scenario names them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer_pool: Option<(Ipv4Addr, Ipv4Addr)>,
}

fn default_domain() -> String {
    crate::dns::config::DEFAULT_DOMAIN.into()
}

mod hosts;
pub use hosts::{default_load_balancer_pool, HostPlan, OUTSIDE_HOST};

/// The underlay: a bridge in a namespace of its own, the nodes' gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FabricPlan {
    pub netns: String,
    pub bridge: String,
    pub network: Ipv4Net,
    pub gateway: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    pub netns: String,
    /// The node's address on the underlay (its `eth0`).
    pub ip: Ipv4Addr,
    /// The node's port on the underlay bridge, in the fabric namespace.
    pub fabric_port: String,
    pub pod_cidr: Ipv4Net,
    /// `cbr0`'s address: the first of the pod CIDR.
    pub bridge_ip: Ipv4Addr,
    /// Routes to the other nodes' pod CIDRs through their underlay addresses.
    pub routes: Vec<Route>,
    /// The mode its kube-proxy runs in (its configuration's `mode`); written out only
    /// when it is not the default.
    #[serde(default, skip_serializing_if = "crate::proxy::Mode::is_default")]
    pub proxy_mode: crate::proxy::Mode,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub to: Ipv4Net,
    pub via: Ipv4Addr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPlan {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    /// The node-side end of the pod's veth, a port of `cbr0`.
    pub host_veth: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// What its resolv.conf and hosts file are made from.
    #[serde(skip)]
    pub dns: crate::dns::pod_files::PodDns,
}

impl PodPlan {
    /// Pod `pod` of testbed `testbed` on node `node`, whose pod CIDR is `pod_cidr` and
    /// whose bridge is `gateway`, at `ip`: for a pod the plan places and for one a
    /// kubelet starts later alike.
    pub fn new(
        testbed: &str,
        pod: &PodDecl,
        node: &str,
        pod_cidr: Ipv4Net,
        gateway: Ipv4Addr,
        ip: Ipv4Addr,
    ) -> PodPlan {
        PodPlan {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            node: node.to_string(),
            netns: names::pod_netns(testbed, &pod.namespace, &pod.name),
            ip,
            prefix_len: pod_cidr.prefix_len(),
            gateway,
            host_veth: names::pod_host_veth(&pod.namespace, &pod.name),
            labels: pod.labels.clone(),
            dns: crate::dns::pod_files::PodDns::of(pod.spec.as_ref()),
        }
    }
}

impl Plan {
    /// Plans a checked cluster and its pods as testbed `testbed`.
    ///
    /// ```
    /// use testbed::plan::{ClusterSpec, PodDecl, Plan};
    ///
    /// let pods = [PodDecl::new("a"), PodDecl::new("b")];
    /// let plan = Plan::new("demo", &ClusterSpec::with_nodes(2), &pods);
    /// assert_eq!(plan.pod("a").unwrap().ip.to_string(), "10.244.1.2");
    /// assert_eq!(plan.pod("b").unwrap().node, "node-2");
    /// ```
    pub fn new(testbed: &str, c: &ClusterSpec, decls: &[PodDecl]) -> Plan {
        let gateway = nth_host(c.node_network, 1);
        let fabric = FabricPlan {
            netns: names::fabric_netns(testbed),
            bridge: names::UNDERLAY_BRIDGE.into(),
            network: c.node_network,
            gateway,
        };
        let mut nodes: Vec<NodePlan> = c
            .nodes
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let pod_cidr = node_pod_cidr(c, i);
                NodePlan {
                    name: name.clone(),
                    netns: names::node_netns(testbed, name),
                    ip: nth_host(c.node_network, i as u32 + 2),
                    fabric_port: name.clone(),
                    pod_cidr,
                    bridge_ip: nth_host(pod_cidr, 1),
                    routes: Vec::new(),
                    proxy_mode: c.proxy_mode,
                }
            })
            .collect();
        let all: Vec<(Ipv4Net, Ipv4Addr)> = nodes.iter().map(|n| (n.pod_cidr, n.ip)).collect();
        for node in &mut nodes {
            node.routes = all
                .iter()
                .filter(|(cidr, _)| *cidr != node.pod_cidr)
                .map(|(to, via)| Route { to: *to, via: *via })
                .collect();
        }
        let placement = place(c, decls);
        let mut alloc = NodeAllocator::new(nodes.iter().map(|n| n.pod_cidr).collect());
        let pods = decls
            .iter()
            .zip(placement)
            .map(|(pod, n)| {
                let node = &nodes[n];
                // A full node is refused by `check` before a plan is made.
                let ip = alloc
                    .allocate(n)
                    .unwrap_or_else(|| nth_host(node.pod_cidr, 0));
                PodPlan::new(testbed, pod, &node.name, node.pod_cidr, node.bridge_ip, ip)
            })
            .collect();
        let hosts = c
            .hosts
            .iter()
            .enumerate()
            .map(|(i, name)| HostPlan {
                name: name.clone(),
                netns: names::node_netns(testbed, name),
                // After the gateway and the nodes.
                ip: nth_host(c.node_network, (c.nodes.len() + i) as u32 + 2),
                fabric_port: name.clone(),
            })
            .collect();
        Plan {
            testbed: testbed.into(),
            fabric,
            nodes,
            pods,
            hosts,
            load_balancer_pool: c.load_balancer_pool,
            service_cidr: c.service_cidr,
            dns_ip: c
                .dns
                .service_ip
                .unwrap_or_else(|| nth_host(c.service_cidr, DNS_HOST)),
            cluster_domain: c.dns.domain.clone(),
        }
    }

    /// The cluster DNS as kubelets are told of it.
    pub fn cluster_dns(&self) -> crate::dns::pod_files::ClusterDns {
        crate::dns::pod_files::ClusterDns {
            ip: self.dns_ip,
            domain: self.cluster_domain.clone(),
        }
    }

    /// The load balancer's addresses, in order.
    pub fn load_balancer_addresses(&self) -> Vec<Ipv4Addr> {
        let (first, last) = self
            .load_balancer_pool
            .unwrap_or_else(|| default_load_balancer_pool(self.fabric.network));
        let net = self.fabric.network;
        (u32::from(first)..=u32::from(last))
            .map(Ipv4Addr::from)
            .filter(|ip| net.contains(ip) && *ip != net.broadcast() && *ip != net.network())
            .collect()
    }

    /// Every namespace of the testbed, fabric first, then nodes, hosts and pods.
    pub fn all_netns(&self) -> Vec<&str> {
        std::iter::once(self.fabric.netns.as_str())
            .chain(self.nodes.iter().map(|n| n.netns.as_str()))
            .chain(self.hosts.iter().map(|h| h.netns.as_str()))
            .chain(self.pods.iter().map(|p| p.netns.as_str()))
            .collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// A pod by `name` or `namespace/name`.
    pub fn pod(&self, name: &str) -> Option<&PodPlan> {
        let (ns, name) = name.split_once('/').unwrap_or(("default", name));
        self.pods
            .iter()
            .find(|p| p.namespace == ns && p.name == name)
    }
}

/// The node index each pod runs on: its `spec.nodeName`, or else the one the
/// [`NodeAllocator`] schedules it to, the pods that name a node counted first and
/// the others placed in the order they are declared. Pods naming an unknown node are
/// put on node 0; `check` reports them.
pub fn place(cluster: &ClusterSpec, pods: &[PodDecl]) -> Vec<usize> {
    let n = cluster.nodes.len().max(1);
    let mut alloc = NodeAllocator::new(vec![Ipv4Net::default(); n]);
    let named = |pod: &PodDecl| {
        pod.node
            .as_ref()
            .map(|name| cluster.nodes.iter().position(|x| x == name))
    };
    for pod in pods {
        if let Some(Some(i)) = named(pod) {
            alloc.bind(i, 1);
        }
    }
    pods.iter()
        .map(|pod| match named(pod) {
            Some(i) => i.unwrap_or(0),
            None => {
                let i = alloc.schedule().expect("at least one node");
                alloc.bind(i, 1);
                i
            }
        })
        .collect()
}

/// The cluster DNS is the 10th address of the service CIDR, as kubeadm sets it up.
pub const DNS_HOST: u32 = 10;

/// How many pods fit on one node: the subnet's hosts minus the gateway.
pub fn pods_per_node(cluster: &ClusterSpec) -> u64 {
    let bits = 32 - u32::from(cluster.node_cidr_mask_size.min(32));
    ((1u64 << bits).saturating_sub(2)).saturating_sub(1)
}

/// Addresses of `net` that are neither its network nor its broadcast address.
pub fn usable_hosts(net: Ipv4Net) -> u64 {
    (1u64 << (32 - u32::from(net.prefix_len()))).saturating_sub(2)
}

fn node_pod_cidr(c: &ClusterSpec, index: usize) -> Ipv4Net {
    let size = 1u32 << (32 - u32::from(c.node_cidr_mask_size));
    let base = u32::from(c.pod_cidr.network()) + (index as u32 + 1) * size;
    Ipv4Net::new(Ipv4Addr::from(base), c.node_cidr_mask_size).expect("valid prefix")
}

pub(crate) fn nth_host(net: Ipv4Net, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(testbed: &str, nodes: usize, pods: &[PodDecl]) -> Plan {
        Plan::new(testbed, &ClusterSpec::with_nodes(nodes), pods)
    }

    fn pod(name: &str, node: Option<&str>) -> PodDecl {
        PodDecl {
            node: node.map(String::from),
            ..PodDecl::new(name)
        }
    }

    #[test]
    fn node_addresses_follow_kind_and_kubenet() {
        let plan = plan("demo", 2, &[]);
        assert_eq!(plan.fabric.gateway, Ipv4Addr::new(172, 18, 0, 1));
        assert_eq!(plan.dns_ip, Ipv4Addr::new(10, 96, 0, 10));
        let n1 = &plan.nodes[0];
        assert_eq!(n1.netns, "tb.demo.node-1");
        assert_eq!(n1.ip, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(n1.pod_cidr.to_string(), "10.244.1.0/24");
        assert_eq!(n1.bridge_ip, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(
            n1.routes,
            vec![Route {
                to: "10.244.2.0/24".parse().unwrap(),
                via: Ipv4Addr::new(172, 18, 0, 3)
            }]
        );
    }

    #[test]
    fn unplaced_pods_spread_to_the_least_loaded_node() {
        let pods = vec![
            pod("a", Some("node-1")),
            pod("b", None),
            pod("c", None),
            pod("d", None),
        ];
        // node-1 holds a; b goes to the emptier node-2; c breaks the 1-1 tie to node-1.
        assert_eq!(place(&ClusterSpec::with_nodes(2), &pods), vec![0, 1, 0, 1]);
        let plan = plan("demo", 2, &pods);
        let ips: Vec<String> = plan.pods.iter().map(|p| p.ip.to_string()).collect();
        assert_eq!(
            ips,
            ["10.244.1.2", "10.244.2.2", "10.244.1.3", "10.244.2.3"]
        );
        assert!(plan.pods.iter().all(|p| p.prefix_len == 24));
    }

    #[test]
    fn the_plan_is_deterministic() {
        let pods: Vec<_> = (0..50).map(|i| pod(&format!("p{i}"), None)).collect();
        assert_eq!(plan("x", 3, &pods), plan("x", 3, &pods));
    }

    #[test]
    fn capacity() {
        let c = ClusterSpec::with_nodes(1);
        assert_eq!(pods_per_node(&c), 253);
        assert_eq!(usable_hosts("172.18.0.0/24".parse().unwrap()), 254);
    }

    #[test]
    fn lookups() {
        let plan = plan("demo", 1, &[pod("a", None)]);
        assert_eq!(plan.pod("a").unwrap().name, "a");
        assert_eq!(plan.pod("default/a").unwrap().name, "a");
        assert!(plan.pod("kube-system/a").is_none());
        assert_eq!(
            plan.all_netns(),
            ["tb.demo", "tb.demo.node-1", "tb.demo.default.a"]
        );
    }

    #[test]
    fn the_allocator_schedules_to_the_emptiest_node_and_gives_the_lowest_free_address() {
        let cidrs = ["10.244.1.0/30", "10.244.2.0/24"];
        let mut a = NodeAllocator::new(cidrs.iter().map(|c| c.parse().unwrap()).collect());
        assert_eq!(a.schedule(), Some(0), "a tie goes to the first node");
        a.bind(0, 1);
        assert_eq!(a.schedule(), Some(1));
        a.bind(1, 1);
        a.bind(1, 1);
        assert_eq!(a.schedule(), Some(0));
        // A /30 has one pod address: .1 is the bridge, .3 the broadcast.
        assert_eq!(a.allocate(0), Some("10.244.1.2".parse().unwrap()));
        assert_eq!(a.allocate(0), None, "full");
        a.take(1, "10.244.2.2".parse().unwrap());
        assert_eq!(a.allocate(1), Some("10.244.2.3".parse().unwrap()));
        a.release(1, "10.244.2.2".parse().unwrap());
        assert_eq!(
            a.allocate(1),
            Some("10.244.2.2".parse().unwrap()),
            "freed, it is the lowest again"
        );
        a.bind(1, -1);
        a.bind(1, -1);
        a.bind(1, -1);
        assert_eq!(a.schedule(), Some(1), "a count never goes below zero");
    }
}
