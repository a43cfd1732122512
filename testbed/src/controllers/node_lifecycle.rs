//! The node lifecycle controller and the taint eviction controller, as
//! kube-controller-manager runs them (pkg/controller/nodelifecycle,
//! pkg/controller/tainteviction). Each kubelet renews its node's Lease in
//! `kube-node-lease`; a node whose Lease (and status) has not changed for the grace
//! period gets its conditions set to Unknown ("Kubelet stopped posting node
//! status."), the `node.kubernetes.io/unreachable` taints (NoSchedule and
//! NoExecute), and its pods' Ready condition set to False, so they leave their
//! Services' ready endpoints while they keep running. A pod on a NoExecute-tainted
//! node is deleted once its tolerations run out (300 s unless it says otherwise),
//! and its ReplicaSet makes another on a node that is Ready. A node that reports
//! Ready again loses the taints.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::api::events::{self, Type};
use crate::api::store::{now, Tx};
use crate::api::taints::{self, NOT_READY, UNREACHABLE};
use crate::api::{graceful, Event, EventType, Key, Kind, Object, Store};

/// The kubelets' heartbeat and how long the controller waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A node Lease's `leaseDurationSeconds` (KubeletConfiguration's
    /// `nodeLeaseDurationSeconds`, 40 s); the kubelet renews it every quarter of it.
    pub lease_duration: Duration,
    /// kube-controller-manager's `--node-monitor-grace-period` (50 s since 1.32).
    pub grace_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(40),
            grace_period: Duration::from_secs(50),
        }
    }
}

impl Timing {
    /// How often a kubelet renews its Lease (upstream's renewIntervalFraction, 0.25).
    pub fn renew_interval(&self) -> Duration {
        self.lease_duration / 4
    }

    /// How often the controller looks at every node: `--node-monitor-period` (5 s),
    /// or a tenth of a shorter grace period.
    pub fn monitor_period(&self) -> Duration {
        (self.grace_period / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }
}

/// Runs the controller until the store's watch ends.
pub async fn run(store: Arc<Store>, timing: Timing, synced: &watch::Sender<u64>) {
    let controller = Controller {
        store: store.clone(),
        timing,
        nodes: BTreeMap::new(),
        heard: HashMap::new(),
        tainted: HashMap::new(),
        pods: BTreeMap::new(),
    };
    crate::informer::run(store, controller, synced).await
}

type NsName = (String, String);

struct Controller {
    store: Arc<Store>,
    timing: Timing,
    nodes: BTreeMap<String, Node>,
    /// Per node: the last heartbeat seen (its Lease's renewTime, its Ready
    /// condition's lastHeartbeatTime) and when the controller saw it change
    /// (upstream's probeTimestamp: its own clock, not the kubelet's).
    heard: HashMap<String, (String, Instant)>,
    /// Since when each node has had NoExecute taints, by the controller's clock
    /// (the taint's timeAdded has whole seconds only).
    tainted: HashMap<String, Instant>,
    pods: BTreeMap<NsName, Pod>,
}

#[async_trait::async_trait]
impl crate::informer::Reconcile for Controller {
    type Key = ();

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Node, Kind::Lease, Kind::Pod]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<()>) {
        let gone = event.kind == EventType::Deleted;
        match event.object {
            Object::Node(n) => {
                let name = n.metadata.name.clone().unwrap_or_default();
                let no_execute = n.spec.iter().flat_map(|s| s.taints.iter().flatten());
                if gone || !no_execute.clone().any(|t| t.effect == "NoExecute") {
                    self.tainted.remove(&name);
                } else {
                    self.tainted
                        .entry(name.clone())
                        .or_insert_with(Instant::now);
                }
                if gone {
                    self.nodes.remove(&name);
                    self.heard.remove(&name);
                } else {
                    let beat = ready_condition(&n)
                        .and_then(|c| c.last_heartbeat_time.as_ref())
                        .map(|t| format!("status {}", t.0));
                    self.heard_from(&name, beat);
                    self.nodes.insert(name, n);
                }
            }
            Object::Lease(l) if l.metadata.namespace.as_deref() == Some("kube-node-lease") => {
                let name = l.metadata.name.clone().unwrap_or_default();
                let renewed = l.spec.as_ref().and_then(|s| s.renew_time.as_ref());
                if !gone {
                    self.heard_from(&name, renewed.map(|t| format!("lease {}", t.0)));
                }
            }
            Object::Pod(p) => {
                let key = (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                );
                if gone {
                    self.pods.remove(&key);
                } else {
                    self.pods.insert(key, p);
                }
            }
            _ => return,
        }
        dirty.insert(());
    }

    async fn reconcile(&mut self, _: BTreeSet<()>, _: u64) -> Result<(), BTreeSet<()>> {
        let at = Instant::now();
        let stale: Vec<String> = self
            .nodes
            .keys()
            .filter(|n| {
                self.heard
                    .get(*n)
                    .is_some_and(|(_, seen)| at.duration_since(*seen) > self.timing.grace_period)
            })
            .cloned()
            .collect();
        let nodes = self.nodes.clone();
        let (pods, tainted) = (&self.pods, &self.tainted);
        self.store.write(|tx| {
            for (name, node) in &nodes {
                monitor(tx, name, node, stale.contains(name));
            }
            // Only the pods of nodes that are not Ready or have NoExecute taints
            // need anything: a healthy cluster's pass reads no pod.
            for name in nodes.keys() {
                let Some(Object::Node(n)) = tx.get(&Key::new(Kind::Node, "", name)).cloned() else {
                    continue;
                };
                let since = tainted.get(name).copied();
                if readiness(&n) == "True" && since.is_none() {
                    continue;
                }
                let on_node = pods
                    .values()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name));
                for pod in on_node {
                    act_on_pod(tx, &n, pod, since);
                }
            }
        });
        Ok(())
    }

    fn resync_period(&self) -> Option<Duration> {
        Some(self.timing.monitor_period())
    }
}

impl Controller {
    /// Notes a heartbeat of node `name`, if it is a new one.
    fn heard_from(&mut self, name: &str, beat: Option<String>) {
        let beat = beat.unwrap_or_default();
        match self.heard.get_mut(name) {
            None => {
                self.heard.insert(name.to_string(), (beat, Instant::now()));
            }
            Some(last) if last.0 != beat && !beat.is_empty() => *last = (beat, Instant::now()),
            Some(_) => {}
        }
    }
}

fn ready_condition(n: &Node) -> Option<&NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// A node's Ready status: `True`, `False` or `Unknown`.
fn readiness(n: &Node) -> &str {
    ready_condition(n).map_or("Unknown", |c| c.status.as_str())
}

/// One pass over node `name`: its conditions Unknown when it is `stale`, and the
/// taints its readiness calls for.
fn monitor(tx: &mut Tx, name: &str, node: &Node, stale: bool) {
    let Some(Object::Node(mut n)) = tx.get(&Key::new(Kind::Node, "", name)).cloned() else {
        return;
    };
    let mut changed = false;
    if stale && readiness(node) != "Unknown" {
        let at = now();
        for c in n
            .status
            .iter_mut()
            .flat_map(|s| s.conditions.iter_mut().flatten())
        {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(at.clone());
        }
        changed = true;
        node_event(
            tx,
            &n,
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        );
    }
    let want = match readiness(&n) {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let spec = n.spec.get_or_insert_with(Default::default);
    let before = spec.taints.clone().unwrap_or_default();
    let mut taints: Vec<Taint> = before
        .iter()
        .filter(|t| (t.key != UNREACHABLE && t.key != NOT_READY) || Some(t.key.as_str()) == want)
        .cloned()
        .collect();
    if let Some(key) = want {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then(now),
                    value: None,
                });
            }
        }
    }
    if taints != before {
        spec.taints = Some(taints).filter(|t| !t.is_empty());
        changed = true;
    }
    if changed {
        tx.put(Object::Node(n));
    }
}

/// A pod on node `n`: not ready while its node is not (MarkPodsNotReady), and
/// deleted when the node's NoExecute taints (there since `tainted`) outlast its
/// tolerations.
fn act_on_pod(tx: &mut Tx, n: &Node, pod: &Pod, tainted: Option<Instant>) {
    let key = Key::new(
        Kind::Pod,
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    );
    let Some(Object::Pod(mut p)) = tx.get(&key).cloned() else {
        return;
    };
    if p.metadata.uid != pod.metadata.uid || p.metadata.deletion_timestamp.is_some() {
        return;
    }
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded" | "Failed")) {
        return;
    }
    if readiness(n) != "True" && mark_not_ready(&mut p) {
        tx.put(Object::Pod(p.clone()));
        pod_event(
            tx,
            &p,
            Type::Warning,
            "NodeNotReady",
            "Node is not ready".into(),
            "node-controller",
        );
    }
    let taints = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let Some(stay) = taints::stay_seconds(&p, &taints) else {
        return;
    };
    let Some(since) = tainted else { return };
    if since.elapsed() < Duration::from_secs(stay as u64) {
        return;
    }
    let conds = p
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    conds.retain(|c| c.type_ != "DisruptionTarget");
    conds.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("DeletionByTaintManager".into()),
        message: Some("Taint manager: deleting due to NoExecute taint".into()),
        last_transition_time: Some(now()),
        ..Default::default()
    });
    tx.put(Object::Pod(p.clone()));
    graceful::delete_pod(tx, &key);
    let message = format!("Marking for deletion Pod {}/{}", key.namespace, key.name);
    pod_event(
        tx,
        &p,
        Type::Normal,
        "TaintManagerEviction",
        message,
        "taint-eviction-controller",
    );
}

/// Sets the pod's Ready condition to False; whether it was not already.
fn mark_not_ready(p: &mut Pod) -> bool {
    let conds = p
        .status
        .get_or_insert_with(Default::default)
        .conditions
        .get_or_insert_with(Vec::new);
    match conds.iter_mut().find(|c| c.type_ == "Ready") {
        Some(c) if c.status == "False" => false,
        Some(c) => {
            c.status = "False".into();
            c.last_transition_time = Some(now());
            true
        }
        None => false,
    }
}

fn node_event(tx: &mut Tx, n: &Node, reason: &str, message: String) {
    let about = events::reference(&Object::Node(n.clone()));
    record(tx, about, Type::Normal, reason, message, "node-controller");
}

fn pod_event(tx: &mut Tx, p: &Pod, type_: Type, reason: &str, message: String, component: &str) {
    let about = events::reference(&Object::Pod(p.clone()));
    record(tx, about, type_, reason, message, component);
}

fn record(
    tx: &mut Tx,
    about: k8s_openapi::api::core::v1::ObjectReference,
    type_: Type,
    reason: &str,
    message: String,
    component: &str,
) {
    let source = events::Source {
        component,
        host: None,
    };
    let r = events::Record {
        about,
        type_,
        reason,
        message,
        source,
    };
    events::record_in(tx, r, false);
}

#[cfg(test)]
#[path = "node_lifecycle_tests.rs"]
mod tests;
