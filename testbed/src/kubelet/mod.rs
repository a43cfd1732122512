//! The kubelets of all nodes, in one task: they schedule pods that name no node, give
//! each pod an address from its node's pod CIDR, make its namespace and veth, run its
//! containers (the [`netexec`] server on their ports, or their `command` as a real
//! process inside the pod) and its readiness probes, and report its status.

mod container;
pub mod env;
pub mod faults;
pub mod identity;
#[cfg(test)]
mod lifecycle_tests;
pub mod logs;
pub mod netexec;
pub mod node_status;
pub mod probe;
pub mod restart;
pub mod runtime;
mod sync;
#[cfg(test)]
mod tests;

pub use runtime::{PodRuntime, Processes};
pub use sync::{run, run_on};

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::events::{self, Type};
use crate::api::{Key, Kind, Object, Store};
use crate::plan::{PodDecl, PodPlan};

/// What a kubelet knows of its node.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    pub bridge_ip: Ipv4Addr,
}

/// Everything the kubelets share.
#[derive(Debug, Clone)]
pub struct Config {
    pub testbed: String,
    pub nodes: Vec<NodeInfo>,
    pub shared_etc: PathBuf,
    /// The cluster DNS's address and domain, for pods' resolv.conf.
    pub cluster_dns: crate::dns::pod_files::ClusterDns,
    /// The cluster DNS that containers of a DNS image (coredns) serve.
    pub dns: Option<crate::dns::Dns>,
    /// This program, to run `exec` for container commands and exec probes.
    pub exe: PathBuf,
    /// Faults injected by a scenario.
    pub faults: Arc<faults::Faults>,
    /// The crash-loop back-off's bounds.
    pub backoff: restart::BackOffSpec,
    /// The testbed's owner: pods may run as root only when it is root.
    pub owner_uid: u32,
    /// Tokens and the CA for pods, when the API server serves pods.
    pub service_accounts: Option<Arc<crate::api::tokens::ServiceAccounts>>,
    /// How often the kubelets renew their nodes' Leases.
    pub node_health: crate::controllers::node_lifecycle::Timing,
}

impl Config {
    /// The `kubernetes` Service's address, for containers' variables, when the API
    /// server serves pods.
    pub fn api_service_ip(&self) -> Option<std::net::Ipv4Addr> {
        self.service_accounts.as_ref().map(|s| s.service_ip)
    }
}

pub(crate) type PodKey = (String, String);

/// A pod's task, stopped with the kubelet (its processes are killed on drop).
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn now() -> Time {
    crate::api::store::now()
}

/// Changes the status of the pod as it is in the store now (if it still exists).
fn set_status(store: &Store, key: &PodKey, f: impl FnOnce(&mut PodStatus)) {
    store.write(|tx| {
        let k = Key::new(Kind::Pod, &key.0, &key.1);
        if let Some(Object::Pod(mut p)) = tx.get(&k).cloned() {
            let before = p.status.clone();
            f(p.status.get_or_insert_with(Default::default));
            if p.status != before {
                tx.put(Object::Pod(p));
            }
        }
    });
}

fn condition(type_: &str, ok: bool) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        last_transition_time: Some(now()),
        ..Default::default()
    }
}

/// Sets the Ready and ContainersReady conditions, keeping their transition times
/// when they do not change.
fn set_ready(st: &mut PodStatus, ready: bool) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    for t in ["ContainersReady", "Ready"] {
        match conds.iter_mut().find(|c| c.type_ == t) {
            Some(c) if (c.status == "True") == ready => {}
            Some(c) => *c = condition(t, ready),
            None => conds.push(condition(t, ready)),
        }
    }
}

/// What a pod's task is given.
struct Life {
    cfg: Arc<Config>,
    store: Arc<Store>,
    runtime: Arc<dyn PodRuntime>,
    node: usize,
    pod: Pod,
    ip: Ipv4Addr,
    /// Its sandbox exists already (a pod made with the cluster).
    adopted: bool,
    /// The task of a pod of the same name that is still stopping.
    previous: Option<watch::Receiver<()>>,
}

/// A pod's life: its sandbox made, its containers run (each restarted as its policy
/// says), its status and readiness reported (what the containers say, unless a fault
/// says otherwise) until `stop`, then torn down.
// Long because it is the pod's life as one state machine (made, its containers run,
// status reported until stopped or deleted, torn down); its states share the
// containers' watches.
async fn pod_life(
    life: Life,
    mut stop: oneshot::Receiver<()>,
    mut terminate: oneshot::Receiver<i64>,
) {
    let Life {
        cfg,
        store,
        runtime,
        node,
        pod,
        ip,
        adopted,
        previous,
    } = life;
    // The namespace of a pod of the same name goes before this one is made.
    if let Some(mut previous) = previous {
        while previous.changed().await.is_ok() {}
    }
    let info = &cfg.nodes[node];
    let plan = pod_plan(&cfg.testbed, info, &pod, ip);
    let (ns, name) = (plan.namespace.clone(), plan.name.clone());
    let key = (ns.clone(), name.clone());
    if !adopted {
        if let Err(e) = runtime.create_sandbox(node, &plan).await {
            let msg = crate::errors::chain(&e);
            tracing::error!("kubelet: pod {ns}/{name}: {msg}");
            set_status(&store, &key, |st| {
                st.phase = Some("Failed".into());
                st.message = Some(msg);
            });
            let _ = stop.await;
            return;
        }
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let problems = runtime.prepare(&plan, &spec).await;
    report_running(&store, &key, ip, info.ip, problems);
    // A silent kubelet records nothing either.
    let event = |type_, reason: &str, message: String| {
        if !cfg.faults.silent(&info.name) {
            pod_event(&store, &key, type_, reason, message, "kubelet", &info.name)
        }
    };
    pod_event(
        &store,
        &key,
        Type::Normal,
        "Scheduled",
        format!("Successfully assigned {ns}/{name} to {}", info.name),
        "default-scheduler",
        &info.name,
    );
    let target = probe::Target {
        testbed: cfg.testbed.clone(),
        node_netns: info.netns.clone(),
        pod: name.clone(),
        namespace: ns.clone(),
        ip,
        exe: cfg.exe.clone(),
        user: identity::of(&spec, None, cfg.owner_uid).ok(),
    };
    let statuses = watch::Sender::new(
        spec.containers
            .iter()
            .map(|c| restart::Status::creating(&c.name, c.image.as_deref().unwrap_or_default()))
            .collect::<Vec<_>>(),
    );
    let orders = watch::Sender::new(container::Orders::default());
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let shared = container::Pod {
        runtime: &*runtime,
        plan: &plan,
        spec: &spec,
        target: &target,
        backoff: cfg.backoff,
        full_name: format!("{name}_{ns}({uid})"),
        statuses: &statuses,
        event: &event,
    };
    let lives = (0..spec.containers.len()).map(|i| container::life(&shared, i, orders.subscribe()));
    let mut lives = std::pin::pin!(futures::future::join_all(lives));
    let (mut lives_done, mut terminating) = (spec.containers.is_empty(), false);
    let mut told_terminate = false;
    let mut faults_rx = cfg.faults.subscribe();
    let mut statuses_rx = statuses.subscribe();
    let policy = restart::Policy::of(&spec);
    let mut reported = false;
    loop {
        let f = cfg.faults.get();
        let kills = f.kills.get(&key).copied().unwrap_or(0);
        orders.send_if_modified(|o| std::mem::replace(&mut o.kills, kills) != kills);
        let now = statuses_rx.borrow_and_update().clone();
        let ready = !f.forced_unready(&key, &info.name) && now.iter().all(restart::Status::ready);
        // A silent kubelet reports nothing (its containers run on).
        let silent = f.silent.contains(&info.name);
        if !silent {
            set_status(&store, &key, |st| {
                st.phase = Some(restart::phase(policy, &now).into());
                st.container_statuses = Some(now.iter().map(restart::Status::to_api).collect());
                set_ready(st, ready);
            });
        }
        if ready != reported && !silent {
            let (type_, reason, message) = if ready {
                (
                    Type::Normal,
                    "Ready",
                    "the pod is Ready: it joins its Services' endpoints",
                )
            } else {
                (
                    Type::Warning,
                    "NotReady",
                    "the pod is not Ready: it leaves its Services' endpoints",
                )
            };
            event(type_, reason, message.into());
            reported = ready;
        }
        tokio::select! {
            _ = &mut stop => break,
            told = &mut terminate, if !told_terminate => {
                told_terminate = true;
                // Deleted: each container gets its preStop hook, SIGTERM and the
                // grace period, then SIGKILL; meanwhile its endpoints are
                // terminating (and serving while it is Ready); then the pod goes.
                if let Ok(grace) = told {
                    let grace = std::time::Duration::from_secs(grace.clamp(0, 3600) as u64);
                    let deadline = tokio::time::Instant::now() + grace;
                    orders.send_modify(|o| o.terminate = Some(deadline));
                    terminating = true;
                }
            }
            _ = &mut lives, if !lives_done => lives_done = true,
            r = faults_rx.changed() => if r.is_err() { let _ = (&mut stop).await; break; },
            _ = statuses_rx.changed() => {}
            // The status manager's periodic sync: what the API shows is put right
            // (the node lifecycle controller may have marked the pod not ready).
            _ = tokio::time::sleep(cfg.node_health.renew_interval()) => {}
        }
        // A silent kubelet confirms nothing: the pod goes once it reports again.
        if terminating && lives_done && !cfg.faults.silent(&info.name) {
            sync::delete_pod(&store, &pod);
            let _ = (&mut stop).await;
            break;
        }
    }
    if !lives_done {
        orders.send_modify(|o| o.stop = true);
        lives.await;
    }
    runtime.remove_sandbox(node, &plan).await;
}

/// An event about pod `key` from `component` on node `host`.
fn pod_event(
    store: &Store,
    key: &PodKey,
    type_: Type,
    reason: &str,
    message: String,
    component: &str,
    host: &str,
) {
    let about = match store.get(&Key::new(Kind::Pod, &key.0, &key.1)) {
        Some(o) => events::reference(&o),
        None => events::reference_to("Pod", "v1", Some(&key.0), &key.1),
    };
    store.write(|tx| {
        events::record_in(
            tx,
            events::Record {
                about,
                type_,
                reason,
                message,
                source: events::Source {
                    component,
                    host: Some(host),
                },
            },
            false,
        )
    });
}

/// Where and how pod `pod` runs on the node `info`, at `ip`.
fn pod_plan(testbed: &str, info: &NodeInfo, pod: &Pod, ip: Ipv4Addr) -> PodPlan {
    let decl = PodDecl {
        namespace: pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        node: None,
        spec: pod.spec.clone(),
    };
    PodPlan::new(
        testbed,
        &decl,
        &info.name,
        info.pod_cidr,
        info.bridge_ip,
        ip,
    )
}

/// Reports the pod started: Running at `ip` on the node at `node_ip`, with the
/// problems of its files.
fn report_running(
    store: &Store,
    key: &PodKey,
    ip: Ipv4Addr,
    node_ip: Ipv4Addr,
    problems: Vec<String>,
) {
    let started = now();
    set_status(store, key, |st| {
        st.phase = Some("Pending".into());
        st.pod_ip = Some(ip.to_string());
        st.pod_ips = Some(vec![k8s_openapi::api::core::v1::PodIP {
            ip: ip.to_string(),
        }]);
        st.host_ip = Some(node_ip.to_string());
        st.start_time = Some(started.clone());
        st.message = if problems.is_empty() {
            None
        } else {
            Some(problems.join("; "))
        };
        st.conditions = Some(vec![
            condition("PodScheduled", true),
            condition("Initialized", true),
        ]);
        set_ready(st, false);
    });
}
