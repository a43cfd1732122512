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
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

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

// IPv6 is off on the interfaces the testbed makes (the cluster is IPv4): no router
// solicitations or duplicate address detection on thousands of links. `lo` keeps ::1.
const NO_IPV6: (&str, &str) = ("net/ipv6/conf/default/disable_ipv6", "1");
/// A pod's: processes that run as a user (see `kubelet::identity`) may bind any port
/// and ping, as in a container runtime's pod.
const POD_SYSCTLS: &[(&str, &str)] = &[
    NO_IPV6,
    ("net/ipv4/ip_unprivileged_port_start", "0"),
    ("net/ipv4/ping_group_range", "0 2147483647"),
];
const FABRIC_SYSCTLS: &[(&str, &str)] = &[NO_IPV6];
const NODE_SYSCTLS: &[(&str, &str)] = &[
    NO_IPV6,
    ("net/ipv4/ip_forward", "1"),
    // Pod-to-pod traffic on one node is bridged, not routed; this makes the node's
    // iptables rules (kube-proxy's DNAT) see it all the same.
    ("net/bridge/bridge-nf-call-iptables", "1"),
    // kube-proxy's, in iptables mode with `localhostNodePorts: true` (its default):
    // node ports answer on 127.0.0.1 too (KUBE-FIREWALL keeps others out of 127/8).
    ("net/ipv4/conf/all/route_localnet", "1"),
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
    #[error("host {host}")]
    Host {
        host: String,
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
    /// Kubelet would not start the pod (its hostname cannot be made).
    #[error("pod {pod}: {message}")]
    Refused { pod: String, message: String },
    #[error("write {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// How long a bring-up took.
#[derive(Debug, Clone, Default)]
pub struct BuildTimes {
    /// Until the fabric and every node were wired (pods' namespaces were being made
    /// meanwhile).
    pub nodes: Duration,
    /// From then until the last pod was wired.
    pub pods: Duration,
    pub total: Duration,
}

type Sysctls = &'static [(&'static str, &'static str)];

/// Builds everything `plan` describes. Each pod's `resolv.conf` and `hosts` go in
/// `shared_etc/<namespace>/<pod>/`, and its `/etc/netns/<netns>` links there. On failure some of it may exist: the caller
/// removes it with [`teardown`], which tolerates what is missing.
///
/// `progress` is told how many pods are wired each time one more is.
pub async fn build(
    plan: &Plan,
    shared_etc: &Path,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<BuildTimes, TopologyError> {
    let start = Instant::now();
    netns::init()?;

    let mut specs: Vec<(String, Sysctls)> = vec![(plan.fabric.netns.clone(), FABRIC_SYSCTLS)];
    specs.extend(plan.nodes.iter().map(|n| (n.netns.clone(), NODE_SYSCTLS)));
    specs.extend(plan.hosts.iter().map(|h| (h.netns.clone(), FABRIC_SYSCTLS)));
    let ns = create_namespaces(specs).await?;

    // Pods' namespaces are made on their own threads while the nodes are wired, and
    // each pod is wired as soon as its namespace exists: the kernel's work for the
    // two (filesystem and namespace set-up, and link set-up under the rtnl lock)
    // overlaps instead of adding up.
    let (pods_tx, pods_rx) = futures::channel::mpsc::unbounded();
    let stop = Arc::new(AtomicBool::new(false));
    let creator = spawn_pod_namespaces(plan, shared_etc, pods_tx, stop.clone());

    let nodes = wire_fabric_and_nodes(plan, &ns).await;
    let nodes_done = start.elapsed();
    let wired = match nodes {
        Ok(bridges) => {
            let pods: HashMap<&str, &PodPlan> =
                plan.pods.iter().map(|p| (p.netns.as_str(), p)).collect();
            let bridge_of: HashMap<&str, u32> = plan
                .nodes
                .iter()
                .map(|n| n.name.as_str())
                .zip(bridges)
                .collect();
            pods_rx
                .map(|made: Result<OpenNs, TopologyError>| {
                    let (pods, bridge_of, ns) = (&pods, &bridge_of, &ns);
                    async move {
                        let me = made?;
                        let pod = pods[me.name.as_str()];
                        let node = &ns[&plan.node(&pod.node).expect("planned node").netns];
                        build_pod(pod, &node.netlink, &me, bridge_of[pod.node.as_str()]).await
                    }
                })
                .buffer_unordered(PODS_IN_FLIGHT)
                .try_fold(0, |wired, _| {
                    progress(wired + 1);
                    futures::future::ready(Ok(wired + 1))
                })
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    };
    if wired.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    // Whatever happened, no namespace may appear after we return: teardown must see all.
    tokio::task::spawn_blocking(move || creator.join())
        .await
        .expect("join the namespace threads")
        .expect("namespace threads do not panic");
    wired?;
    let total = start.elapsed();
    Ok(BuildTimes {
        nodes: nodes_done,
        pods: total - nodes_done,
        total,
    })
}

/// A pod's `/etc` files, as kubelet writes them, in `dir`, and its hostname; or why
/// kubelet would not start it.
struct PodEtc {
    pod: String,
    dir: PathBuf,
    made: Result<(String, String, String), String>,
}

impl PodEtc {
    fn new(pod: &PodPlan, shared_etc: &Path, dns: &crate::dns::pod_files::ClusterDns) -> Self {
        let made = crate::dns::pod_files::files(&pod.dns, &pod.namespace, &pod.name, pod.ip, dns)
            .map(|(resolv, hosts, names)| (resolv, hosts, names.uts));
        PodEtc {
            pod: format!("{}/{}", pod.namespace, pod.name),
            dir: shared_etc.join(&pod.namespace).join(&pod.name),
            made,
        }
    }

    /// Writes the files, links `/etc/netns/<netns>` to them and makes the pod's UTS
    /// namespace with its hostname (on this dedicated thread, which it is left in).
    fn install(&self, netns_name: &str) -> Result<(), TopologyError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| TopologyError::Io { path, source }
        };
        let (resolv, hosts, hostname) =
            self.made
                .as_ref()
                .map_err(|message| TopologyError::Refused {
                    pod: self.pod.clone(),
                    message: message.clone(),
                })?;
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        for (file, text) in [("resolv.conf", resolv), ("hosts", hosts)] {
            let path = self.dir.join(file);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        netns::link_etc(netns_name, &self.dir)
            .map_err(io(&Path::new(netns::ETC_NETNS_DIR).join(netns_name)))?;
        netns::create_uts_on_this_thread(netns_name, hostname)
            .map_err(io(&netns::uts_path(netns_name)))
    }
}

/// Makes the pods' namespaces on dedicated threads, sending each as it is ready.
/// Stops early once `stop` is set or a namespace fails.
fn spawn_pod_namespaces(
    plan: &Plan,
    shared_etc: &Path,
    tx: futures::channel::mpsc::UnboundedSender<Result<OpenNs, TopologyError>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let cluster_dns = plan.cluster_dns();
    let specs: Vec<(String, PodEtc)> = plan
        .pods
        .iter()
        .map(|p| (p.netns.clone(), PodEtc::new(p, shared_etc, &cluster_dns)))
        .collect();
    let rt = tokio::runtime::Handle::current();
    std::thread::spawn(move || {
        netns::on_dedicated_threads(&specs, NETNS_THREADS, |(name, etc)| {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let made = make_pod_netns(name, etc, &rt);
            if made.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let _ = tx.unbounded_send(made);
        });
    })
}

/// Makes a pod's namespace and its `/etc` files on this (dedicated) thread, through
/// its testbed's gate: a teardown waits for it, and once it has begun none is made,
/// so a bring-up stopped half-way (a signal) leaves nothing its teardown can't see.
fn make_pod_netns(
    name: &str,
    etc: &PodEtc,
    rt: &tokio::runtime::Handle,
) -> Result<OpenNs, TopologyError> {
    netns::through_gate(name, || {
        Ok(netns::create_on_this_thread(name, POD_SYSCTLS, rt)
            .map_err(TopologyError::from)
            .and_then(|open| {
                etc.install(name)?;
                Ok(open)
            }))
    })
    .map_err(|source| TopologyError::Io {
        path: format!("the namespace {name}"),
        source,
    })
    .and_then(|made| made)
}

/// Makes namespaces on dedicated threads (through the testbed's gate, as
/// [`make_pod_netns`]) and returns them by name.
async fn create_namespaces(
    specs: Vec<(String, Sysctls)>,
) -> Result<HashMap<String, OpenNs>, TopologyError> {
    let rt = tokio::runtime::Handle::current();
    let results = tokio::task::spawn_blocking(move || {
        netns::on_dedicated_threads(&specs, NETNS_THREADS, |(name, sysctls)| {
            netns::through_gate(name, || {
                Ok(netns::create_on_this_thread(name, sysctls, &rt))
            })
            .map_err(|source| NetnsError::Io {
                name: name.clone(),
                what: "make it".into(),
                source,
            })
            .and_then(|made| made)
        })
    })
    .await
    .expect("namespace threads do not panic");
    let mut out = HashMap::with_capacity(results.len());
    for r in results {
        let open = r?;
        out.insert(open.name.clone(), open);
    }
    Ok(out)
}

/// The underlay bridge, the hosts outside the cluster, then every node; returns each
/// node's `cbr0` index.
async fn wire_fabric_and_nodes(
    plan: &Plan,
    ns: &HashMap<String, OpenNs>,
) -> Result<Vec<u32>, TopologyError> {
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
    let hosts = plan.hosts.iter().map(|host| async move {
        let eth0 = Eth0 {
            ip: host.ip,
            prefix_len: plan.fabric.network.prefix_len(),
            gateway: plan.fabric.gateway,
        };
        plug(
            &fabric.netlink,
            underlay,
            &host.fabric_port,
            &ns[&host.netns],
            &eth0,
        )
        .await
        .map_err(|source| TopologyError::Host {
            host: host.name.clone(),
            source,
        })
    });
    futures::future::try_join_all(hosts).await?;
    futures::future::try_join_all(
        plan.nodes
            .iter()
            .map(|node| build_node(plan, node, ns, underlay)),
    )
    .await
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
    let eth0 = Eth0 {
        ip: node.ip,
        prefix_len: plan.fabric.network.prefix_len(),
        // The default route covers the service CIDR too, so traffic that starts in
        // the node reaches netfilter instead of failing with "network unreachable".
        gateway: plan.fabric.gateway,
    };
    plug(&fabric.netlink, underlay, &node.fabric_port, me, &eth0)
        .await
        .map_err(fail)?;
    let nl = &me.netlink;
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
    for r in &node.routes {
        links::add_route(nl, Some(r.to), r.via)
            .await
            .map_err(fail)?;
    }
    Ok(cbr0)
}

/// The address of a namespace's `eth0` and its default gateway.
struct Eth0 {
    ip: std::net::Ipv4Addr,
    prefix_len: u8,
    gateway: std::net::Ipv4Addr,
}

/// Plugs namespace `me` into `bridge` of namespace `upstream`: a veth pair with `port`
/// on the bridge and `eth0` in `me`, then `lo` and `eth0` up, the address and the
/// default route. Like `ip link add PORT master BRIDGE type veth peer name eth0 netns
/// ME; ip -n ME link set lo up; ip -n ME link set eth0 up; ip -n ME addr add IP/LEN
/// dev eth0; ip -n ME route add default via GATEWAY`.
async fn plug(
    upstream: &rtnetlink::Handle,
    bridge: u32,
    port: &str,
    me: &OpenNs,
    eth0: &Eth0,
) -> Result<(), LinkError> {
    links::add_veth_to_bridge(
        upstream,
        VethEnd {
            name: port,
            mac: names::mac_for(MacKind::Port, eth0.ip),
        },
        bridge,
        VethEnd {
            name: names::ETH0,
            mac: names::mac_for(MacKind::Owner, eth0.ip),
        },
        me.file.as_raw_fd(),
    )
    .await?;
    let nl = &me.netlink;
    links::set_up(nl, 1, "lo").await?;
    let index = links::index_of(nl, names::ETH0).await?;
    links::set_up(nl, index, names::ETH0).await?;
    links::add_address(nl, index, eth0.ip, eth0.prefix_len, names::ETH0).await?;
    links::add_route(nl, None, eth0.gateway).await
}

/// A pod: a veth from its node's `cbr0` into its namespace, its address and default route.
async fn build_pod(
    pod: &PodPlan,
    node: &rtnetlink::Handle,
    me: &OpenNs,
    cbr0: u32,
) -> Result<(), TopologyError> {
    let fail = |source| TopologyError::Pod {
        pod: format!("{}/{}", pod.namespace, pod.name),
        source,
    };
    let eth0 = Eth0 {
        ip: pod.ip,
        prefix_len: pod.prefix_len,
        gateway: pod.gateway,
    };
    plug(node, cbr0, &pod.host_veth, me, &eth0)
        .await
        .map_err(fail)?;
    links::set_hairpin(node, &pod.host_veth).await.map_err(fail)
}

/// Adds one pod to a running testbed (a pod the API created): its namespace with
/// `/etc/netns` entries, and its veth on `cbr0` of the node whose netlink handle is
/// `node`. On failure the pod's namespace is removed again.
pub async fn add_pod(
    pod: &PodPlan,
    node: &rtnetlink::Handle,
    shared_etc: &Path,
    dns: &crate::dns::pod_files::ClusterDns,
) -> Result<(), TopologyError> {
    let etc = PodEtc::new(pod, shared_etc, dns);
    let name = pod.netns.clone();
    let rt = tokio::runtime::Handle::current();
    let (tx, rx) = tokio::sync::oneshot::channel();
    // A thread of its own: it is left inside the new namespace and then ends.
    std::thread::spawn(move || {
        let _ = tx.send(make_pod_netns(&name, &etc, &rt));
    });
    let me = rx.await.expect("the namespace thread answers")?;
    let wired = async {
        let cbr0 = links::index_of(node, names::NODE_BRIDGE)
            .await
            .map_err(|source| TopologyError::Pod {
                pod: format!("{}/{}", pod.namespace, pod.name),
                source,
            })?;
        build_pod(pod, node, &me, cbr0).await
    }
    .await;
    if wired.is_err() {
        remove_pod(pod, node).await;
    }
    wired
}

/// Removes one pod: its veth first, from the side of the node whose netlink handle
/// is `node`, then its namespace and its `/etc/netns` entry.
///
/// The veth goes first because a namespace unmounted is destroyed later, by the
/// kernel's cleanup work, which lags by seconds when many namespaces go at once.
/// Until then its veth would stay on `cbr0` with the pod's address behind it, and
/// a new pod given that address (and so the same MAC) would have its frames sent
/// to the old port, which answers with resets: a pod deleted a moment ago would
/// refuse the new pod's connections.
pub async fn remove_pod(pod: &PodPlan, node: &rtnetlink::Handle) {
    // Absent when the pod was never wired (or the node is gone): nothing to do.
    let _ = links::delete(node, &pod.host_veth).await;
    netns::remove(&pod.netns);
    netns::remove_etc(&pod.netns);
}
