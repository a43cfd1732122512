//! Each kubelet's node: registered as a Node object (its address, pod CIDR, what it
//! runs), a Lease in `kube-node-lease` renewed every quarter of its duration (the
//! heartbeat the node lifecycle controller reads), and its Ready condition posted
//! again whenever the controller has set it otherwise. A node the scenario made
//! silent does none of this: its kubelet has lost the API server.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Node, NodeAddress, NodeCondition, NodeSpec, NodeStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};

use super::{Config, NodeInfo};
use crate::api::store::{now, Tx};
use crate::api::{Key, Kind, Object, Store};

/// The namespace of the nodes' Leases.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Registers every node and its Lease, as each kubelet does when it starts.
pub fn register(cfg: &Config, store: &Store) {
    store.write(|tx| {
        for info in &cfg.nodes {
            if tx.get(&Key::new(Kind::Node, "", &info.name)).is_none() {
                tx.put(Object::Node(node(info)));
            }
            renew(tx, cfg, &info.name);
        }
    });
}

/// Renews the Leases of the nodes that are not silent and posts Ready again where
/// the controller set it otherwise (or the node has just stopped being silent),
/// until it is stopped.
pub async fn heartbeat(cfg: Arc<Config>, store: Arc<Store>) {
    let mut faults = cfg.faults.subscribe();
    let mut was_silent: HashSet<String> = HashSet::new();
    loop {
        let silent = cfg.faults.get().silent;
        store.write(|tx| {
            for info in cfg.nodes.iter().filter(|n| !silent.contains(&n.name)) {
                renew(tx, &cfg, &info.name);
                post_ready(tx, &info.name, was_silent.contains(&info.name));
            }
        });
        was_silent = silent;
        tokio::select! {
            _ = tokio::time::sleep(cfg.node_health.renew_interval()) => {}
            r = faults.changed() => if r.is_err() { return },
        }
    }
}

/// Renews node `name`'s Lease (made if it is missing).
fn renew(tx: &mut Tx, cfg: &Config, name: &str) {
    let key = Key::new(Kind::Lease, LEASE_NAMESPACE, name);
    let mut lease = match tx.get(&key) {
        Some(Object::Lease(l)) => l.clone(),
        _ => Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(LEASE_NAMESPACE.into()),
                owner_references: owner(tx, name),
                ..Default::default()
            },
            spec: None,
        },
    };
    lease.spec = Some(LeaseSpec {
        holder_identity: Some(name.into()),
        lease_duration_seconds: Some(cfg.node_health.lease_duration.as_secs().max(1) as i32),
        renew_time: Some(micro_now()),
        ..Default::default()
    });
    tx.put(Object::Lease(lease));
}

/// The Lease's owner: its Node, so it goes with it.
fn owner(tx: &Tx, name: &str) -> Option<Vec<OwnerReference>> {
    let node = tx.get(&Key::new(Kind::Node, "", name))?;
    Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: name.into(),
        uid: node.meta().uid.clone().unwrap_or_default(),
        ..Default::default()
    }])
}

/// Posts node `name`'s conditions as its kubelet sees them (Ready), when the stored
/// ones differ or `again` (its first report after a silence).
fn post_ready(tx: &mut Tx, name: &str, again: bool) {
    let Some(Object::Node(mut n)) = tx.get(&Key::new(Kind::Node, "", name)).cloned() else {
        return;
    };
    let status = n.status.get_or_insert_with(Default::default);
    let conds = status.conditions.get_or_insert_with(Vec::new);
    let ready = conds
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready && !again {
        return;
    }
    let at = now();
    let transition = if ready {
        conds
            .iter()
            .find(|c| c.type_ == "Ready")
            .and_then(|c| c.last_transition_time.clone())
    } else {
        None
    };
    *conds = vec![ready_condition(
        transition.unwrap_or_else(|| at.clone()),
        at,
    )];
    tx.put(Object::Node(n));
}

fn ready_condition(
    transition: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
    heartbeat: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("kubelet is posting ready status".into()),
        last_heartbeat_time: Some(heartbeat),
        last_transition_time: Some(transition),
    }
}

/// The Node a kubelet registers for `info`.
fn node(info: &NodeInfo) -> Node {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let labels = [
        ("kubernetes.io/hostname", info.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch),
    ];
    let at = now();
    let hosts = u32::from(info.pod_cidr.broadcast()) - u32::from(info.pod_cidr.network());
    let pods = Quantity(hosts.saturating_sub(2).to_string());
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let os_image = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into());
    Node {
        metadata: ObjectMeta {
            name: Some(info.name.clone()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(info.pod_cidr.to_string()),
            pod_cidrs: Some(vec![info.pod_cidr.to_string()]),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: info.ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: info.name.clone(),
                },
            ]),
            capacity: Some([("pods".to_string(), pods.clone())].into()),
            allocatable: Some([("pods".to_string(), pods)].into()),
            conditions: Some(vec![ready_condition(at.clone(), at)]),
            node_info: Some(NodeSystemInfo {
                architecture: arch.into(),
                container_runtime_version: format!("testbed://{}", env!("CARGO_PKG_VERSION")),
                kernel_version: read("/proc/sys/kernel/osrelease").trim().to_string(),
                kubelet_version: "v1.33.0".into(),
                kube_proxy_version: String::new(),
                operating_system: "linux".into(),
                os_image,
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// The time now to the microsecond, as a Lease's renewTime carries it.
fn micro_now() -> MicroTime {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    MicroTime(k8s_openapi::jiff::Timestamp::from_microsecond(micros).unwrap_or_default())
}
