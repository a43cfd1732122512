//! The kubelets of all nodes, in one task: they schedule pods that name no node, give
//! each pod an address from its node's pod CIDR, make its namespace and veth, run its
//! containers (the [`netexec`] server on their ports, or their `command` as a real
//! process inside the pod) and its readiness probes, and report its status.

pub mod env;
pub mod faults;
pub mod identity;
pub mod logs;
pub mod netexec;
pub mod probe;
pub mod runtime;
mod sync;
#[cfg(test)]
mod tests;

pub use runtime::{Containers, PodRuntime, Processes};
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
    /// The testbed's owner: pods may run as root only when it is root.
    pub owner_uid: u32,
    /// Tokens and the CA for pods, when the API server serves pods.
    pub service_accounts: Option<Arc<crate::api::tokens::ServiceAccounts>>,
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

/// A pod's life: its sandbox made, its containers started, its readiness reported
/// (what the probes say, unless a fault says otherwise) until `stop`, then torn down.
// Long because it is the pod's life as one state machine (made, started, readiness reported
// until stopped, torn down); its states share the runtime, the faults and the probe
// channel.
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
    let Containers {
        problems,
        mut running,
    } = runtime.start_containers(&plan, &spec).await;
    let probes: Vec<probe::ProbeSpec> = spec
        .containers
        .iter()
        .filter_map(probe::readiness)
        .collect();
    report_running(&store, &key, ip, info.ip, problems, probes.is_empty());
    let event = |type_, reason: &str, message: String, component: &str| {
        pod_event(&store, &key, type_, reason, message, component, &info.name)
    };
    event(
        Type::Normal,
        "Scheduled",
        format!("Successfully assigned {ns}/{name} to {}", info.name),
        "default-scheduler",
    );
    for c in &spec.containers {
        event(
            Type::Normal,
            "Started",
            format!("Started container {} at {ip}", c.name),
            "kubelet",
        );
    }
    let target = probe::Target {
        testbed: cfg.testbed.clone(),
        node_netns: info.netns.clone(),
        pod: name.clone(),
        namespace: ns.clone(),
        ip,
        exe: cfg.exe.clone(),
        user: identity::of(&spec, None, cfg.owner_uid).ok(),
    };
    // Ready is what the probes say (ready at once without probes), unless a fault
    // says otherwise; a killed pod's processes stop for good.
    let (probe_tx, mut probe_rx) = tokio::sync::watch::channel(probes.is_empty());
    let mut probing: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> =
        if probes.is_empty() {
            Box::pin(std::future::pending())
        } else {
            Box::pin(probe_loop(&*runtime, &key, &target, &probes, probe_tx))
        };
    let mut faults_rx = cfg.faults.subscribe();
    let mut reported = probes.is_empty();
    let mut killed = false;
    let mut terminated = false;
    loop {
        let f = cfg.faults.get();
        if f.killed.contains(&key) && !killed {
            killed = true;
            running.kill().await;
            probing = Box::pin(std::future::pending());
            event(
                Type::Warning,
                "Killing",
                "its processes were killed (a scenario's fault)".into(),
                "kubelet",
            );
            set_status(&store, &key, |st| {
                st.phase = Some("Failed".into());
                st.reason = Some("Killed".into());
                st.message =
                    Some("its processes were killed (containers are not restarted)".into());
            });
        }
        let ready = !f.forced_unready(&key, &info.name) && *probe_rx.borrow_and_update();
        if ready != reported {
            set_status(&store, &key, |s| set_ready(s, ready));
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
            event(type_, reason, message.into(), "kubelet");
            reported = ready;
        }
        tokio::select! {
            _ = &mut stop => break,
            Ok(grace) = &mut terminate => {
                // Deleted: its containers get SIGTERM and the grace period, then
                // SIGKILL; meanwhile its endpoints are terminating (and serving
                // while it is Ready); then the pod object goes.
                drop(probing);
                probing = Box::pin(std::future::pending());
                for c in &spec.containers {
                    let msg = format!("Stopping container {} (grace period {grace} s)", c.name);
                    event(Type::Normal, "Killing", msg, "kubelet");
                }
                let grace = std::time::Duration::from_secs(grace.clamp(0, 3600) as u64);
                running.terminate(grace).await;
                sync::delete_pod(&store, &pod);
                terminated = true;
                let _ = (&mut stop).await;
                break;
            }
            r = faults_rx.changed() => if r.is_err() { let _ = (&mut stop).await; break; },
            _ = probe_rx.changed() => {}
            _ = &mut probing => {}
        }
    }
    drop(probing);
    for c in spec.containers.iter().filter(|_| !terminated) {
        event(
            Type::Normal,
            "Killing",
            format!("Stopping container {}", c.name),
            "kubelet",
        );
    }
    running.kill().await;
    runtime.remove_sandbox(&plan).await;
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
/// containers that could not start, and Ready at once if it has no probes.
fn report_running(
    store: &Store,
    key: &PodKey,
    ip: Ipv4Addr,
    node_ip: Ipv4Addr,
    problems: Vec<String>,
    ready: bool,
) {
    let started = now();
    set_status(store, key, |st| {
        st.phase = Some("Running".into());
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
        set_ready(st, ready);
    });
}

/// Runs every readiness probe on its period and sends whether all of them pass.
async fn probe_loop(
    runtime: &dyn PodRuntime,
    key: &PodKey,
    target: &probe::Target,
    probes: &[probe::ProbeSpec],
    ready_tx: tokio::sync::watch::Sender<bool>,
) {
    // Per probe: ready, consecutive successes, consecutive failures.
    let mut st: Vec<(bool, u32, u32)> = vec![(false, 0, 0); probes.len()];
    let mut next: Vec<tokio::time::Instant> = probes
        .iter()
        .map(|p| tokio::time::Instant::now() + p.initial_delay)
        .collect();
    let mut was_ready = false;
    loop {
        let at = *next.iter().min().expect("at least one probe");
        tokio::time::sleep_until(at).await;
        for (i, p) in probes.iter().enumerate() {
            if next[i] > tokio::time::Instant::now() {
                continue;
            }
            next[i] += p.period;
            let ok = runtime.probe(target, p).await;
            let s = &mut st[i];
            match ok {
                Ok(()) => {
                    s.1 += 1;
                    s.2 = 0;
                    if s.1 >= p.success_threshold {
                        s.0 = true;
                    }
                }
                Err(e) => {
                    s.2 += 1;
                    s.1 = 0;
                    if s.2 >= p.failure_threshold || !s.0 {
                        if s.0 {
                            tracing::info!(
                                "pod {}/{}: readiness probe of {} failed: {e}",
                                key.0,
                                key.1,
                                p.container
                            );
                        }
                        s.0 = false;
                    }
                }
            }
        }
        let ready = st.iter().all(|s| s.0);
        if ready != was_ready {
            ready_tx.send_replace(ready);
            was_ready = ready;
        }
    }
}
