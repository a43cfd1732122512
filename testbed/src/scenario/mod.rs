//! Scenario files: a cluster and the pods to start, checked whole before anything is made.
//!
//! ```yaml
//! name: two-nodes
//! description: Two nodes with two pods each.
//! cluster:
//!   nodes: 2                 # or a list of names: [node-a, node-b]
//!   podCIDR: 10.244.0.0/16
//!   nodeCIDRMaskSize: 24
//!   nodeNetwork: 172.18.0.0/24
//!   serviceCIDR: 10.96.0.0/12
//!   hosts: [laptop]          # hosts outside the cluster on the node network (host/laptop);
//!                            # host/outside, the underlay router, is always there
//!   loadBalancerPool: 172.18.0.200-172.18.0.250   # or a CIDR, in nodeNetwork
//!   dns:                     # the cluster DNS (all optional)
//!     domain: cluster.local
//!     serviceIP: 10.96.0.10  # kube-dns's ClusterIP; the 10th of serviceCIDR by default
//!     ttl: 5                 # seconds, for answers and negative caching
//!     upstream: [10.96.0.53] # where names outside the domain go (ip or ip:port);
//!                            # without one they are REFUSED
//!     pods: insecure         # pod records (CoreDNS's `pods`): insecure (as kubeadm
//!                            # sets it), verified (only real pods) or disabled
//! pods:                      # Kubernetes Pod manifests
//!   - apiVersion: v1
//!     kind: Pod
//!     metadata: {name: client, labels: {app: client}}
//!     spec: {nodeName: node-1, containers: [{name: main, image: agnhost}]}
//! ```

mod check;
pub mod objects;
mod pods;
mod shape;
pub mod steps;
pub mod validate;

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;

pub use crate::plan::{ClusterSpec, DnsSettings, PodDecl};
pub(crate) use crate::yaml::from_value;
pub use crate::yaml::Located;
use crate::yaml::{self, Pos, Spans};

pub use check::{check, Problem};

/// A checked scenario.
#[derive(Debug, Clone, Default)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub cluster: ClusterSpec,
    pub pods: Vec<PodDecl>,
    /// Manifests applied through the API before the steps.
    pub objects: Vec<objects::Manifest>,
    pub steps: Vec<steps::Step>,
}

impl Scenario {
    /// The address plan of this scenario's cluster and pods, as testbed `testbed`.
    pub fn plan(&self, testbed: &str) -> crate::plan::Plan {
        crate::plan::Plan::new(testbed, &self.cluster, &self.pods)
    }
}

/// Everything wrong with a scenario file, each with its file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    pub file: PathBuf,
    pub problems: Vec<Located>,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let file = p.file.as_ref().unwrap_or(&self.file);
            match p.pos {
                Some(pos) => write!(
                    f,
                    "{}:{}:{}: {}",
                    file.display(),
                    pos.line,
                    pos.col,
                    p.message
                )?,
                None => write!(f, "{}: {}", file.display(), p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// A scenario file as written (its JSON Schema is `testbed schema`): only the shape is
/// checked here, meaning is checked by `check`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(title = "testbed scenario")]
pub struct ScenarioFile {
    /// The scenario's name, and its testbed's: a DNS-1123 label.
    name: String,
    /// What the scenario shows.
    #[serde(default)]
    description: String,
    /// The cluster's shape and address plan.
    #[serde(default)]
    cluster: ClusterFile,
    /// Pods made with the cluster (Kubernetes Pod manifests), before the control plane starts.
    #[serde(default)]
    #[schemars(with = "Vec<serde_json::Map<String, Value>>")]
    pods: Vec<Value>,
    /// Manifests applied through the API server before the steps: inline, or a file
    /// beside the scenario (`manifests/web.yaml` or `{file: manifests/web.yaml}`).
    #[serde(default)]
    objects: Vec<Value>,
    /// What happens, in order.
    #[serde(default)]
    #[schemars(with = "Vec<steps::StepFile>")]
    steps: Vec<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterFile {
    #[serde(default = "default_nodes")]
    nodes: NodesFile,
    #[serde(rename = "podCIDR", default = "default_pod_cidr")]
    pod_cidr: String,
    #[serde(rename = "nodeCIDRMaskSize", default = "default_node_mask")]
    node_cidr_mask_size: u8,
    #[serde(default = "default_node_network")]
    node_network: String,
    #[serde(rename = "serviceCIDR", default = "default_service_cidr")]
    service_cidr: String,
    #[serde(default)]
    dns: ClusterDnsFile,
    /// kube-proxy's configuration on every node (its KubeProxyConfiguration).
    #[serde(default)]
    kube_proxy: KubeProxyFile,
    /// The kubelets' configuration (part of their KubeletConfiguration).
    #[serde(default)]
    kubelet: KubeletFile,
    /// kube-controller-manager's flags the testbed acts on.
    #[serde(default)]
    controller_manager: ControllerManagerFile,
    /// Hosts outside the cluster, each a namespace with an address on the node
    /// network after the nodes' (`host/NAME` in exec steps), as machines on kind's
    /// Docker network. `host/outside`, the underlay router, is always there.
    #[serde(default)]
    hosts: Vec<String>,
    /// The addresses LoadBalancer Services get: `FIRST-LAST` or a CIDR, in the node
    /// network (by default its 200th to 250th: 172.18.0.200-172.18.0.250).
    load_balancer_pool: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeProxyFile {
    /// The proxy mode: `iptables` (the default). `ipvs` needs a kernel with IPVS,
    /// `nftables` is not run yet.
    mode: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletFile {
    /// The crash-loop back-off (KubeletConfiguration's `crashLoopBackOff`).
    #[serde(default)]
    crash_loop_back_off: CrashLoopFile,
    /// How long a node's Lease lasts, in seconds (40, the default; 1 to 3600): its
    /// kubelet renews it every quarter of that.
    node_lease_duration_seconds: Option<u64>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ControllerManagerFile {
    /// How long a node may go unheard before it is marked NotReady (Unknown):
    /// `50s` (the default since Kubernetes 1.32), `500ms` to `10m`.
    node_monitor_grace_period: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CrashLoopFile {
    /// The longest wait before a crashed container starts again: `300s` (the
    /// default); below `10s` the first wait is this too (upstream's
    /// KubeletCrashLoopBackOffMax).
    max_container_restart_period: Option<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ClusterDnsFile {
    domain: Option<String>,
    #[serde(rename = "serviceIP")]
    service_ip: Option<String>,
    ttl: Option<u32>,
    #[serde(default)]
    upstream: Vec<String>,
    /// How `a-b-c-d.<namespace>.pod.<domain>` is answered (CoreDNS's `pods`):
    /// `insecure` (the default, as kubeadm's Corefile), `verified` or `disabled`.
    pods: Option<String>,
}

impl Default for ClusterFile {
    fn default() -> Self {
        ClusterFile {
            nodes: default_nodes(),
            pod_cidr: default_pod_cidr(),
            node_cidr_mask_size: default_node_mask(),
            node_network: default_node_network(),
            service_cidr: default_service_cidr(),
            dns: ClusterDnsFile::default(),
            kube_proxy: KubeProxyFile::default(),
            kubelet: KubeletFile::default(),
            controller_manager: ControllerManagerFile::default(),
            hosts: Vec::new(),
            load_balancer_pool: None,
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged, expecting = "a node count (like 2) or a list of node names")]
enum NodesFile {
    Count(u32),
    Names(Vec<String>),
}

fn default_nodes() -> NodesFile {
    NodesFile::Count(1)
}
fn default_pod_cidr() -> String {
    "10.244.0.0/16".into()
}
fn default_node_mask() -> u8 {
    24
}
fn default_node_network() -> String {
    "172.18.0.0/24".into()
}
fn default_service_cidr() -> String {
    "10.96.0.0/12".into()
}

/// Reads and checks a scenario file.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = crate::input::read(path).map_err(|e| ScenarioError {
        file: path.to_path_buf(),
        problems: vec![Located {
            file: None,
            pos: e.at.map(|(line, col)| Pos { line, col }),
            message: e.message,
        }],
    })?;
    parse(path, &text)
}

/// Parses and checks scenario text; `file` names it in errors.
// Long because it is the scenario's checks in order (shape, cluster, pods, objects, steps),
// collecting every problem before it gives up.
pub fn parse(file: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let fail = |problems: Vec<Located>| ScenarioError {
        file: file.to_path_buf(),
        problems,
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    let (value, spans) = yaml::load(text).map_err(|e| {
        fail(vec![Located {
            file: None,
            pos: Some(e.pos),
            message: format!("invalid YAML: {}", e.message),
        }])
    })?;
    if let Some(path) = shape::list_for_map(&value) {
        let shown = if path.is_empty() { "the file" } else { &path };
        return Err(fail(vec![Located {
            file: None,
            pos: spans.find(&path),
            message: format!(
                "{shown}: expected a map (`key: value` lines or `{{...}}`), found a list"
            ),
        }]));
    }
    let raw: ScenarioFile = from_value(value, &spans, "").map_err(|p| fail(vec![p]))?;

    let mut problems = Vec::new();
    let cluster = cluster_from(raw.cluster, &spans, &mut problems);
    let mut decls = Vec::new();
    for (i, pod) in raw.pods.into_iter().enumerate() {
        let path = yaml::child_index("pods", i);
        match pods::decl_from_manifest(pod, &spans, &path) {
            Ok(decl) => decls.push(decl),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let spans = std::sync::Arc::new(spans);
    let mut manifests = Vec::new();
    for (i, entry) in raw.objects.into_iter().enumerate() {
        match objects::entry(entry, &spans, &yaml::child_index("objects", i), dir) {
            Ok(mut m) => manifests.append(&mut m),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let steps = match steps::steps_from(raw.steps, &spans, dir) {
        Ok(s) => s,
        Err(mut p) => {
            problems.append(&mut p);
            Vec::new()
        }
    };
    if !problems.is_empty() {
        return Err(fail(problems));
    }
    let scenario = Scenario {
        name: raw.name,
        description: raw.description,
        cluster,
        pods: decls,
        objects: manifests,
        steps,
    };
    let problems: Vec<Located> = check(&scenario)
        .into_iter()
        .map(|p| Located {
            file: None,
            pos: p
                .also
                .iter()
                .chain(std::iter::once(&p.path))
                .rev()
                .find_map(|path| spans.exact(path))
                .or_else(|| spans.find(&p.path)),
            message: p.message,
        })
        .collect();
    if problems.is_empty() {
        Ok(scenario)
    } else {
        Err(fail(problems))
    }
}

fn cluster_from(raw: ClusterFile, spans: &Spans, problems: &mut Vec<Located>) -> ClusterSpec {
    let mut cidr = |text: &str, path: &str| -> Ipv4Net {
        match text.parse::<Ipv4Net>() {
            Ok(net) if net.trunc() == net => net,
            Ok(net) => {
                problems.push(Located {
                    file: None,
                    pos: spans.find(path),
                    message: format!(
                        "{path}: {text} has host bits set; did you mean {}?",
                        net.trunc()
                    ),
                });
                net.trunc()
            }
            Err(_) => {
                problems.push(Located {
                    file: None,
                    pos: spans.find(path),
                    message: format!("{path}: {text:?} is not an IPv4 CIDR like 10.244.0.0/16"),
                });
                Ipv4Net::default()
            }
        }
    };
    let pod_cidr = cidr(&raw.pod_cidr, "cluster.podCIDR");
    let node_network = cidr(&raw.node_network, "cluster.nodeNetwork");
    let service_cidr = cidr(&raw.service_cidr, "cluster.serviceCIDR");
    let nodes = match raw.nodes {
        NodesFile::Count(n) if n as usize > crate::limits::NODES => {
            problems.push(Located {
                file: None,
                pos: spans.find("cluster.nodes"),
                message: format!(
                    "cluster.nodes: {} nodes are more than the {} a testbed runs (testbed::limits::NODES)",
                    crate::limits::count(n as usize),
                    crate::limits::NODES
                ),
            });
            vec!["node-1".to_string()]
        }
        NodesFile::Count(n) => (1..=n).map(|i| format!("node-{i}")).collect(),
        NodesFile::Names(names) => names,
    };
    let dns = dns_from(raw.dns, spans, problems);
    let proxy_mode = match crate::proxy::Mode::parse(raw.kube_proxy.mode.as_deref().unwrap_or("")) {
        Ok(mode) => mode,
        Err(why) => {
            let path = "cluster.kubeProxy.mode";
            problems.push(Located {
                file: None,
                pos: spans.find(path),
                message: format!("{path}: {why}"),
            });
            Default::default()
        }
    };
    let load_balancer_pool = pool_from(raw.load_balancer_pool, spans, problems);
    let node_health = node_health_from(&raw.kubelet, &raw.controller_manager, spans, problems);
    let max_restart_period = backoff_from(raw.kubelet.crash_loop_back_off, spans, problems);
    ClusterSpec {
        nodes,
        pod_cidr,
        node_cidr_mask_size: raw.node_cidr_mask_size,
        node_network,
        service_cidr,
        dns,
        proxy_mode,
        hosts: raw.hosts,
        load_balancer_pool,
        max_restart_period,
        node_health,
    }
}

/// `cluster.kubelet.nodeLeaseDurationSeconds` and
/// `cluster.controllerManager.nodeMonitorGracePeriod`, read.
fn node_health_from(
    kubelet: &KubeletFile,
    cm: &ControllerManagerFile,
    spans: &Spans,
    problems: &mut Vec<Located>,
) -> crate::controllers::node_lifecycle::Timing {
    use std::time::Duration;
    let mut timing = crate::controllers::node_lifecycle::Timing::default();
    let mut fail = |path: &str, message: String| {
        problems.push(Located {
            file: None,
            pos: spans.find(path),
            message: format!("{path}: {message}"),
        })
    };
    match kubelet.node_lease_duration_seconds {
        Some(s @ 1..=3600) => timing.lease_duration = Duration::from_secs(s),
        Some(s) => fail(
            "cluster.kubelet.nodeLeaseDurationSeconds",
            format!("{s} is outside 1..3600"),
        ),
        None => {}
    }
    if let Some(text) = &cm.node_monitor_grace_period {
        let path = "cluster.controllerManager.nodeMonitorGracePeriod";
        match steps::parse_duration(text) {
            Ok(d) if (Duration::from_millis(500)..=Duration::from_secs(600)).contains(&d) => {
                timing.grace_period = d
            }
            Ok(_) => fail(path, format!("{text} is outside 500ms..10m")),
            Err(why) => fail(path, why),
        }
    }
    timing
}

/// `cluster.kubelet.crashLoopBackOff`, read: upstream's bounds unless a cap (1 s to
/// 300 s) is given.
fn backoff_from(
    raw: CrashLoopFile,
    spans: &Spans,
    problems: &mut Vec<Located>,
) -> Option<std::time::Duration> {
    let text = raw.max_container_restart_period?;
    let path = "cluster.kubelet.crashLoopBackOff.maxContainerRestartPeriod";
    let max = steps::parse_duration(&text).and_then(|d| {
        if (std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(300)).contains(&d) {
            Ok(d)
        } else {
            Err(format!(
                "{text} is outside 1s..300s, the range kubelet accepts"
            ))
        }
    });
    match max {
        Ok(d) => Some(d),
        Err(why) => {
            problems.push(Located {
                file: None,
                pos: spans.find(path),
                message: format!("{path}: {why}"),
            });
            None
        }
    }
}

/// `cluster.loadBalancerPool`, read.
fn pool_from(
    text: Option<String>,
    spans: &Spans,
    problems: &mut Vec<Located>,
) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let text = text?;
    let path = "cluster.loadBalancerPool";
    let pool = address_range(&text);
    if pool.is_none() {
        problems.push(Located {
            file: None,
            pos: spans.find(path),
            message: format!(
                "{path}: {text:?} is not an address range like 172.18.0.200-172.18.0.250 or a CIDR like 172.18.0.192/27"
            ),
        });
    }
    pool
}

/// `FIRST-LAST` (first no later than last) or a CIDR's addresses.
fn address_range(text: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if let Some((a, b)) = text.split_once('-') {
        let (a, b): (Ipv4Addr, Ipv4Addr) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
        return (a <= b).then_some((a, b));
    }
    let net: Ipv4Net = text.trim().parse().ok()?;
    Some((net.network(), net.broadcast()))
}

fn dns_from(raw: ClusterDnsFile, spans: &Spans, problems: &mut Vec<Located>) -> DnsSettings {
    let mut out = DnsSettings::default();
    let mut fail = |path: String, message: String| {
        problems.push(Located {
            file: None,
            pos: spans.find(&path),
            message: format!("{path}: {message}"),
        })
    };
    if let Some(domain) = raw.domain {
        out.domain = domain.trim_end_matches('.').to_ascii_lowercase();
    }
    if let Some(ip) = raw.service_ip {
        match ip.parse() {
            Ok(ip) => out.service_ip = Some(ip),
            Err(_) => fail(
                "cluster.dns.serviceIP".into(),
                format!("{ip:?} is not an IPv4 address like 10.96.0.10"),
            ),
        }
    }
    if let Some(ttl) = raw.ttl {
        out.ttl = ttl;
    }
    if let Some(mode) = raw.pods {
        match crate::dns::PodMode::parse(&mode) {
            Some(m) => out.pods = m,
            None => fail(
                "cluster.dns.pods".into(),
                format!(
                    "{mode:?} is not a pod-record mode: {} (CoreDNS's `pods` option)",
                    crate::dns::PodMode::NAMES.join(", ")
                ),
            ),
        }
    }
    for (i, up) in raw.upstream.iter().enumerate() {
        let parsed = up
            .parse::<SocketAddr>()
            .or_else(|_| up.parse::<Ipv4Addr>().map(|ip| SocketAddr::from((ip, 53))));
        match parsed {
            Ok(addr) if addr.is_ipv4() => out.upstream.push(addr),
            _ => fail(
                yaml::child_index("cluster.dns.upstream", i),
                format!("{up:?} is not an IPv4 address, or address:port, like 10.96.0.53 or 10.96.0.53:5353"),
            ),
        }
    }
    out
}

#[cfg(test)]
mod tests;
