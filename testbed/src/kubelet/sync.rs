//! The kubelets' loop, on the controller runtime: one unit of work per pod. A pod
//! that names no node is scheduled; one on a node gets an address and its own task
//! ([`pod_life`](super::pod_life)), which makes its namespace, runs it and tears it
//! down. A deleted pod's task is told to stop and not waited for, so one slow
//! teardown holds up no other pod; a pod of the same name that comes back waits for
//! it inside its own task, and the old address is free once it is gone.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Pod, PodCondition, Taint};
use tokio::sync::{oneshot, watch};

use super::runtime::{Machine, PodRuntime};
use super::{condition, pod_life, set_status, Config, Life, PodKey, Task};
use crate::api::{Event, EventType, Key, Kind, Object, Store};
use crate::informer::Reconcile;
use crate::plan::NodeAllocator;

/// A pod whose task runs.
struct Running {
    uid: Option<String>,
    stop: oneshot::Sender<()>,
    /// Told the grace period when the pod is deleted (and taken then).
    terminate: Option<oneshot::Sender<i64>>,
    task: Task,
    /// Closed when the task has ended.
    alive: watch::Receiver<()>,
    node: usize,
    ip: Ipv4Addr,
}

/// A pod told to stop whose task has not ended yet: its address stays taken.
struct Stopping {
    _task: Task,
    alive: watch::Receiver<()>,
    node: usize,
    ip: Ipv4Addr,
}

/// Runs the kubelets of every node on this machine until the store's watch ends.
pub async fn run(cfg: Arc<Config>, store: Arc<Store>, synced: &watch::Sender<u64>) {
    match Machine::open(cfg.clone()).await {
        Ok(machine) => run_on(cfg, store, Arc::new(machine), synced).await,
        Err(e) => tracing::error!("kubelet: {e}"),
    }
}

/// Runs the kubelets of every node over `runtime` until the store's watch ends.
pub async fn run_on(
    cfg: Arc<Config>,
    store: Arc<Store>,
    runtime: Arc<dyn PodRuntime>,
    synced: &watch::Sender<u64>,
) {
    let kubelets = Kubelets {
        index: cfg
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect(),
        alloc: NodeAllocator::new(cfg.nodes.iter().map(|n| n.pod_cidr).collect()),
        taints: vec![Vec::new(); cfg.nodes.len()],
        cfg,
        store: store.clone(),
        runtime,
        pods: HashMap::new(),
        running: HashMap::new(),
        stopping: HashMap::new(),
        arrival: Vec::new(),
    };
    crate::informer::run(store, kubelets, synced).await
}

struct Kubelets {
    cfg: Arc<Config>,
    store: Arc<Store>,
    runtime: Arc<dyn PodRuntime>,
    pods: HashMap<PodKey, Pod>,
    /// Each node's index by name.
    index: HashMap<String, usize>,
    /// Pods per node (kept as pods come and go, so scheduling one is O(nodes)) and
    /// the addresses taken: the one rule the plan placed the scenario's pods by.
    alloc: NodeAllocator,
    /// Each node's taints, as its Node shows them: the scheduler places a pod only
    /// where it tolerates them.
    taints: Vec<Vec<Taint>>,
    running: HashMap<PodKey, Running>,
    stopping: HashMap<PodKey, Vec<Stopping>>,
    /// The dirty pods in the order their changes came: pods are scheduled in that
    /// order (the order a Deployment made them), not by name.
    arrival: Vec<PodKey>,
}

#[async_trait::async_trait]
impl Reconcile for Kubelets {
    type Key = PodKey;

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Pod, Kind::Node]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<PodKey>) {
        let pod = match event.object {
            Object::Pod(pod) => pod,
            Object::Node(node) => return self.observe_node(node, dirty),
            _ => return,
        };
        let key = (
            pod.metadata
                .namespace
                .clone()
                .unwrap_or_else(|| "default".into()),
            pod.metadata.name.clone().unwrap_or_default(),
        );
        if event.kind == EventType::Deleted {
            if let Some(old) = self.pods.remove(&key) {
                self.bind(&old, -1);
            }
        } else {
            self.bind(&pod, 1);
            if let Some(old) = self.pods.insert(key.clone(), pod) {
                self.bind(&old, -1);
            }
        }
        if dirty.insert(key.clone()) {
            self.arrival.push(key);
        }
    }

    async fn reconcile(
        &mut self,
        mut dirty: BTreeSet<PodKey>,
        _: u64,
    ) -> Result<(), BTreeSet<PodKey>> {
        self.reap();
        for key in std::mem::take(&mut self.arrival) {
            if dirty.remove(&key) {
                self.sync(key);
            }
        }
        // Any left (none, unless handed back by the runtime): by name.
        for key in dirty {
            self.sync(key);
        }
        Ok(())
    }
}

impl Kubelets {
    /// Takes a node's taints; its pods and the pods waiting for a node are looked at
    /// again (a node that reports again acts on what it missed while silent).
    fn observe_node(
        &mut self,
        node: k8s_openapi::api::core::v1::Node,
        dirty: &mut BTreeSet<PodKey>,
    ) {
        let name = node.metadata.name.unwrap_or_default();
        let Some(&i) = self.index.get(&name) else {
            return;
        };
        self.taints[i] = node.spec.and_then(|s| s.taints).unwrap_or_default();
        for (key, pod) in &self.pods {
            let on = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            if (on.is_none() || on == Some(name.as_str())) && dirty.insert(key.clone()) {
                self.arrival.push(key.clone());
            }
        }
    }

    /// Counts `pod` on its node (`by` is 1 or -1); a pod with no node counts nowhere.
    fn bind(&mut self, pod: &Pod, by: isize) {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if let Some(&i) = node.and_then(|n| self.index.get(n)) {
            self.alloc.bind(i, by);
        }
    }

    /// Frees the addresses of pods whose teardown has ended.
    fn reap(&mut self) {
        let alloc = &mut self.alloc;
        self.stopping.retain(|_, all| {
            all.retain(|s| {
                let ended = s.alive.has_changed().is_err();
                if ended {
                    alloc.release(s.node, s.ip);
                }
                !ended
            });
            !all.is_empty()
        });
    }

    /// Brings pod `key` to what the store says: stopped if it is gone (or replaced
    /// by a pod of the same name), scheduled, or started.
    fn sync(&mut self, key: PodKey) {
        let pod = self.pods.get(&key);
        let replaced = self
            .running
            .get(&key)
            .is_some_and(|r| pod.is_none_or(|p| p.metadata.uid != r.uid));
        if replaced {
            let r = self.running.remove(&key).expect("running");
            let _ = r.stop.send(());
            self.stopping
                .entry(key.clone())
                .or_default()
                .push(Stopping {
                    _task: r.task,
                    alive: r.alive,
                    node: r.node,
                    ip: r.ip,
                });
        }
        let Some(pod) = pod.cloned() else { return };
        let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if node_name
            .as_ref()
            .is_some_and(|n| self.cfg.faults.silent(n))
        {
            // Its kubelet has lost the API server: it acts when it reports again.
            return;
        }
        if let Some(r) = self.running.get_mut(&key) {
            // Deleted gracefully: its containers are told to stop.
            if pod.metadata.deletion_timestamp.is_some() {
                if let Some(t) = r.terminate.take() {
                    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(30);
                    let _ = t.send(grace);
                }
            }
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            // Deleted before it started: nothing to stop.
            delete_pod(&self.store, &pod);
            return;
        }
        let Some(node_name) = node_name else {
            let taints = &self.taints;
            let fit = |i: usize| crate::api::taints::schedulable(&pod, &taints[i]);
            let Some(node) = self.alloc.schedule_among(fit) else {
                unschedulable(&self.store, &key, &pod, &self.taints);
                return;
            };
            bind_to(&self.store, &key, &self.cfg.nodes[node].name);
            // Counted at once, so the next pod of a batch sees it.
            if let Some(p) = self.pods.get_mut(&key) {
                if let Some(spec) = p.spec.as_mut() {
                    spec.node_name = Some(self.cfg.nodes[node].name.clone());
                }
                self.alloc.bind(node, 1);
            }
            return;
        };
        let Some(&node) = self.index.get(&node_name) else {
            set_status(&self.store, &key, |st| {
                st.phase = Some("Failed".into());
                st.reason = Some("NodeNotFound".into());
                st.message = Some(format!("node {node_name:?} is not in this cluster"));
            });
            return;
        };
        self.start(key, pod, node);
    }

    /// Gives the pod an address on `node` and starts its task.
    fn start(&mut self, key: PodKey, pod: Pod, node: usize) {
        let cfg = &self.cfg;
        let info = &cfg.nodes[node];
        let previous = self.stopping.get(&key).and_then(|all| all.last());
        // A pod made with the cluster keeps the address its plan gave it.
        let adopted = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|_| previous.is_none() && self.runtime.sandbox_exists(&key.0, &key.1));
        let ip = match adopted {
            Some(ip) => {
                self.alloc.take(node, ip);
                ip
            }
            None => match self.alloc.allocate(node) {
                Some(ip) => ip,
                None => {
                    set_status(&self.store, &key, |st| {
                        st.phase = Some("Pending".into());
                        st.message = Some(format!(
                            "node {} has no free pod address in {}",
                            info.name, info.pod_cidr
                        ));
                    });
                    return;
                }
            },
        };
        let (stop, stop_rx) = oneshot::channel();
        let (terminate, terminate_rx) = oneshot::channel();
        let (alive_tx, alive) = watch::channel(());
        let life = pod_life(
            Life {
                cfg: cfg.clone(),
                store: self.store.clone(),
                runtime: self.runtime.clone(),
                node,
                pod: pod.clone(),
                ip,
                adopted: adopted.is_some(),
                previous: previous.map(|p| p.alive.clone()),
            },
            stop_rx,
            terminate_rx,
        );
        let task = Task(tokio::spawn(async move {
            // Dropped when the task ends, however it ends: `alive` closes.
            let _alive = alive_tx;
            life.await
        }));
        self.running.insert(
            key,
            Running {
                uid: pod.metadata.uid.clone(),
                stop,
                terminate: Some(terminate),
                task,
                alive,
                node,
                ip,
            },
        );
    }
}

/// Deletes `pod` from the store, as the kubelet does once a deleted pod's
/// containers have stopped (only that pod: not one of the same name made since).
pub(super) fn delete_pod(store: &Store, pod: &Pod) {
    let (ns, name) = (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
    );
    let k = Key::new(Kind::Pod, ns, name);
    store.write(|tx| {
        if tx.get(&k).is_some_and(|o| o.meta().uid == pod.metadata.uid) {
            tx.delete(&k);
        }
    });
}

/// Reports pod `key` unschedulable, as the scheduler does when no node fits it.
fn unschedulable(store: &Store, key: &PodKey, pod: &Pod, taints: &[Vec<Taint>]) {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    // Each node counted once, by the first taint the pod does not tolerate.
    let untolerated = |t: &&Taint| {
        t.effect != "PreferNoSchedule" && !crate::api::taints::schedulable(pod, &[(*t).clone()])
    };
    for t in taints
        .iter()
        .flat_map(|ts| ts.iter().filter(untolerated).take(1))
    {
        *counts
            .entry(format!(
                "{{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            ))
            .or_default() += 1;
    }
    let why: Vec<String> = counts
        .iter()
        .map(|(t, n)| format!("{n} node(s) had untolerated taint {t}"))
        .collect();
    let message = format!(
        "0/{} nodes are available: {}.",
        taints.len(),
        why.join(", ")
    );
    set_status(store, key, |st| {
        st.phase = Some("Pending".into());
        st.conditions = Some(vec![PodCondition {
            type_: "PodScheduled".into(),
            status: "False".into(),
            reason: Some("Unschedulable".into()),
            message: Some(message),
            ..Default::default()
        }]);
    });
}

/// Binds pod `key` to `node` in the store (as the scheduler does), if it names none yet.
fn bind_to(store: &Store, key: &PodKey, node: &str) {
    store.write(|tx| {
        let k = Key::new(Kind::Pod, &key.0, &key.1);
        if let Some(Object::Pod(mut p)) = tx.get(&k).cloned() {
            if let Some(spec) = &mut p.spec {
                if spec.node_name.is_none() {
                    spec.node_name = Some(node.to_string());
                    let st = p.status.get_or_insert_with(Default::default);
                    st.phase = Some("Pending".into());
                    st.conditions = Some(vec![condition("PodScheduled", true)]);
                    tx.put(Object::Pod(p));
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unschedulable_pod_says_which_taints_no_node_lets_it_past() {
        let store = Store::default();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"containers": [], "tolerations": [{"key": "a", "operator": "Exists"}]},
        }))
        .unwrap();
        store.write(|tx| {
            tx.put(Object::Pod(pod.clone()));
        });
        let taint = |key: &str, effect: &str| Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        };
        let unreachable = crate::api::taints::UNREACHABLE;
        let taints = [
            vec![taint("a", "NoSchedule"), taint("b", "NoSchedule")],
            vec![
                taint(unreachable, "NoSchedule"),
                taint(unreachable, "NoExecute"),
            ],
        ];
        let key = ("default".to_string(), "web".to_string());
        unschedulable(&store, &key, &pod, &taints);
        let Some(Object::Pod(p)) = store.get(&Key::new(Kind::Pod, "default", "web")) else {
            panic!("the pod is gone");
        };
        let c = &p.status.unwrap().conditions.unwrap()[0];
        assert_eq!(
            (c.type_.as_str(), c.reason.as_deref()),
            ("PodScheduled", Some("Unschedulable"))
        );
        assert_eq!(
            c.message.as_deref(),
            Some("0/2 nodes are available: 1 node(s) had untolerated taint {b: }, 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }.")
        );
    }
}
