//! The topology engine: turns a [`Plan`] into namespaces, bridges, veth pairs,
//! addresses and routes, and removes them again.
//!
//! ```text
//!  fabric netns tb.<t>          node netns tb.<t>.<node>             pod netns tb.<t>.<ns>.<pod>
//!  underlay (bridge) ── <node> ═ eth0 172.18.0.N   cbr0 10.244.N.1 ── vethXXXX ═ eth0 10.244.N.x
//!  172.18.0.1                    routes: other pod CIDRs via nodes                 default via cbr0
//! ```

mod links;

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use futures::TryStreamExt;

pub use links::LinkError;

use crate::names::{self, MacKind};
use crate::netns::{self, NetnsError, OpenNs};
use crate::plan::{NodePlan, Plan, PodPlan};
use links::VethEnd;

/// How many OS threads create namespaces at once. The kernel serialises much of the
/// work (mounts, the rtnl lock), so a few threads are as fast as many.
const NETNS_THREADS: usize = 4;
/// How many pods are wired at once over the netlink sockets.
const PODS_IN_FLIGHT: usize = 64;

/// Pods ask the cluster DNS, as kubelet writes it for `dnsPolicy: ClusterFirst`.
/// The server itself arrives with the DNS issue; until then queries go unanswered.
pub fn resolv_conf(namespace: &str) -> String {
    format!(
        "# written by testbed for this pod, as kubelet does (dnsPolicy: ClusterFirst)\n\
         search {namespace}.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 10.96.0.10\n\
         options ndots:5\n"
    )
}

// IPv6 is off on the interfaces the testbed makes (the cluster is IPv4): no router
// solicitations or duplicate address detection on thousands of links. `lo` keeps ::1.
const NO_IPV6: (&str, &str) = ("net/ipv6/conf/default/disable_ipv6", "1");
const POD_SYSCTLS: &[(&str, &str)] = &[NO_IPV6];
const FABRIC_SYSCTLS: &[(&str, &str)] = &[NO_IPV6];
const NODE_SYSCTLS: &[(&str, &str)] = &[
    NO_IPV6,
    ("net/ipv4/ip_forward", "1"),
    // Pod-to-pod traffic on one node is bridged, not routed; this makes the node's
    // iptables rules (kube-proxy's DNAT) see it all the same.
    ("net/bridge/bridge-nf-call-iptables", "1"),
];

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("node {node}")]
    Node {
        node: String,
        #[source]
        source: LinkError,
    },
    #[error("pod {pod}")]
    Pod {
        pod: String,
        #[source]
        source: LinkError,
    },
    #[error("fabric")]
    Fabric(#[source] LinkError),
    #[error("write {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long each phase of a bring-up took.
#[derive(Debug, Clone, Default)]
pub struct BuildTimes {
    pub namespaces: Duration,
    pub fabric_and_nodes: Duration,
    pub pods: Duration,
    pub total: Duration,
}

/// Builds everything `plan` describes. On failure some of it may exist: the caller
/// removes it with [`teardown`], which tolerates what is missing.
pub async fn build(plan: &Plan) -> Result<BuildTimes, TopologyError> {
    let start = Instant::now();
    let mut times = BuildTimes::default();
    let ns = create_namespaces(plan).await?;
    times.namespaces = start.elapsed();

    let fabric = &ns[&plan.fabric.netns];
    let underlay = links::add_bridge(
        &fabric.netlink,
        &plan.fabric.bridge,
        names::mac_for(MacKind::Owner, plan.fabric.gateway),
    )
    .await
    .map_err(TopologyError::Fabric)?;
    links::add_address(
        &fabric.netlink,
        underlay,
        plan.fabric.gateway,
        plan.fabric.network.prefix_len(),
        &plan.fabric.bridge,
    )
    .await
    .map_err(TopologyError::Fabric)?;

    let bridges: Vec<u32> = futures::future::try_join_all(
        plan.nodes
            .iter()
            .map(|node| build_node(plan, node, &ns, underlay)),
    )
    .await?;
    let bridge_of: HashMap<&str, u32> = plan
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .zip(bridges)
        .collect();
    times.fabric_and_nodes = start.elapsed() - times.namespaces;

    futures::stream::iter(plan.pods.iter().map(Ok))
        .try_for_each_concurrent(PODS_IN_FLIGHT, |pod| {
            let node = &ns[&plan.node(&pod.node).expect("planned node").netns];
            build_pod(pod, node, &ns[&pod.netns], bridge_of[pod.node.as_str()])
        })
        .await?;
    times.total = start.elapsed();
    times.pods = times.total - times.fabric_and_nodes - times.namespaces;
    Ok(times)
}

/// Makes every namespace of the plan, each with a netlink socket inside it.
async fn create_namespaces(plan: &Plan) -> Result<HashMap<String, OpenNs>, TopologyError> {
    let mut specs: Vec<(String, &'static [(&'static str, &'static str)], Option<String>)> =
        vec![(plan.fabric.netns.clone(), FABRIC_SYSCTLS, None)];
    specs.extend(plan.nodes.iter().map(|n| (n.netns.clone(), NODE_SYSCTLS, None)));
    specs.extend(
        plan.pods
            .iter()
            .map(|p| (p.netns.clone(), POD_SYSCTLS, Some(p.namespace.clone()))),
    );
    let rt = tokio::runtime::Handle::current();
    let results = tokio::task::spawn_blocking(move || {
        netns::on_dedicated_threads(&specs, NETNS_THREADS, |(name, sysctls, pod_ns)| {
            let open = netns::create(name, sysctls, &rt).map_err(TopologyError::from)?;
            if let Some(k8s_ns) = pod_ns {
                netns::write_etc(name, "resolv.conf", &resolv_conf(k8s_ns)).map_err(
                    |source| TopologyError::Io {
                        path: format!("{}/{name}/resolv.conf", netns::ETC_NETNS_DIR),
                        source,
                    },
                )?;
            }
            Ok(open)
        })
    })
    .await
    .expect("namespace threads do not panic");
    let mut out = HashMap::with_capacity(results.len());
    let mut first_err = None;
    for r in results {
        match r {
            Ok(open) => {
                out.insert(open.name.clone(), open);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// A node: its link to the underlay, `cbr0`, addresses and routes. Returns `cbr0`'s index.
async fn build_node(
    plan: &Plan,
    node: &NodePlan,
    ns: &HashMap<String, OpenNs>,
    underlay: u32,
) -> Result<u32, TopologyError> {
    let fail = |source| TopologyError::Node {
        node: node.name.clone(),
        source,
    };
    let fabric = &ns[&plan.fabric.netns];
    let me = &ns[&node.netns];
    links::add_veth_to_bridge(
        &fabric.netlink,
        VethEnd {
            name: &node.fabric_port,
            mac: names::mac_for(MacKind::Port, node.ip),
        },
        underlay,
        VethEnd {
            name: names::ETH0,
            mac: names::mac_for(MacKind::Owner, node.ip),
        },
        me.file.as_raw_fd(),
    )
    .await
    .map_err(fail)?;
    let nl = &me.netlink;
    links::set_up(nl, 1, "lo").await.map_err(fail)?;
    let eth0 = links::index_of(nl, names::ETH0).await.map_err(fail)?;
    links::set_up(nl, eth0, "eth0").await.map_err(fail)?;
    let prefix = plan.fabric.network.prefix_len();
    links::add_address(nl, eth0, node.ip, prefix, "eth0")
        .await
        .map_err(fail)?;
    let cbr0 = links::add_bridge(
        nl,
        names::NODE_BRIDGE,
        names::mac_for(MacKind::Owner, node.bridge_ip),
    )
    .await
    .map_err(fail)?;
    links::add_address(
        nl,
        cbr0,
        node.bridge_ip,
        node.pod_cidr.prefix_len(),
        names::NODE_BRIDGE,
    )
    .await
    .map_err(fail)?;
    // The default route covers the service CIDR too, so traffic that starts in the
    // node reaches netfilter instead of failing with "network unreachable".
    links::add_route(nl, None, plan.fabric.gateway)
        .await
        .map_err(fail)?;
    for r in &node.routes {
        links::add_route(nl, Some(r.to), r.via)
            .await
            .map_err(fail)?;
    }
    Ok(cbr0)
}

/// A pod: a veth from its node's `cbr0` into its namespace, its address and default route.
async fn build_pod(
    pod: &PodPlan,
    node: &OpenNs,
    me: &OpenNs,
    cbr0: u32,
) -> Result<(), TopologyError> {
    let fail = |source| TopologyError::Pod {
        pod: format!("{}/{}", pod.namespace, pod.name),
        source,
    };
    links::add_veth_to_bridge(
        &node.netlink,
        VethEnd {
            name: &pod.host_veth,
            mac: names::mac_for(MacKind::Port, pod.ip),
        },
        cbr0,
        VethEnd {
            name: names::ETH0,
            mac: names::mac_for(MacKind::Owner, pod.ip),
        },
        me.file.as_raw_fd(),
    )
    .await
    .map_err(fail)?;
    let nl = &me.netlink;
    links::set_up(nl, 1, "lo").await.map_err(fail)?;
    let eth0 = links::index_of(nl, names::ETH0).await.map_err(fail)?;
    links::set_up(nl, eth0, "eth0").await.map_err(fail)?;
    links::add_address(nl, eth0, pod.ip, pod.prefix_len, "eth0")
        .await
        .map_err(fail)?;
    links::add_route(nl, None, pod.gateway)
        .await
        .map_err(fail)?;
    Ok(())
}

/// Removes every namespace of the plan (pods, then nodes, then the fabric) and their
/// `/etc/netns` files, going on past errors. Returns how many namespaces were there.
pub fn teardown(plan: &Plan) -> usize {
    let all: Vec<&str> = plan.all_netns().into_iter().rev().collect();
    netns::on_dedicated_threads(&all, NETNS_THREADS, |name| netns::remove(name))
        .into_iter()
        .filter(|removed| *removed)
        .count()
}
