//! The control plane of a running testbed, in its process: the store and API server,
//! the endpoints and Deployment controllers, the kubelets, and one kube-proxy per node,
//! each a task on the runtime. The scenario's pods enter the store as the kubelets'
//! pods, already running in the namespaces the topology made for them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::PodStatus;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::server::{Api, ObjectProblem};
use crate::api::{Key, Kind, Object, Store};
use crate::controllers;
use crate::dns::{self, Dns};
use crate::kubelet::{self, NodeInfo};
use crate::plan::Plan;
use crate::proxy::node::{NodeStatus, SyncState};
use crate::proxy::{self, render};
use crate::scenario::Scenario;

use dns::addon::REPLICAS as DNS_REPLICAS;

pub struct ControlPlane {
    pub api: Arc<Api>,
    /// The records the cluster DNS serves.
    pub dns: Dns,
    pub store: Arc<Store>,
    /// Faults a scenario injects into the kubelets.
    pub faults: Arc<kubelet::faults::Faults>,
    /// Each node's name and its kube-proxy's state.
    pub proxies: Vec<(String, watch::Receiver<SyncState>)>,
    /// Each node's kube-proxy mode, in the order of `proxies`.
    modes: Vec<proxy::Mode>,
    /// The endpoints and Deployment controllers' synced revisions, by name.
    controllers: Vec<(&'static str, watch::Receiver<u64>)>,
    nodes: Vec<NodeInfo>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

/// Why the control plane did not start, or its cluster DNS did not come up.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("the cluster DNS objects are refused")]
    DnsObjects(#[source] ObjectProblem),
    #[error("cluster.dns.domain: {0}")]
    Domain(String),
    #[error("the scenario's pods are refused")]
    Pods(#[source] ObjectProblem),
    #[error("the cluster DNS did not come up in {timeout:?}: kube-system/kube-dns has {ready} of {want} ready endpoints")]
    DnsNotReady {
        timeout: Duration,
        ready: usize,
        want: usize,
    },
    #[error("the nodes' kube-proxy did not sync the cluster DNS in {0:?}")]
    DnsNotSynced(Duration),
}

impl ControlPlane {
    /// Starts everything for the testbed built from `plan` and `scenario`, with
    /// `exe` the `testbed` program that kubelets run for container commands and exec
    /// probes (a test binary is not one).
    // Long because it is the control plane's start-up order, one controller after another,
    // and the order is the point.
    pub fn start_with(
        plan: &Plan,
        scenario: &Scenario,
        shared_etc: PathBuf,
        exe: PathBuf,
        service_accounts: Option<Arc<crate::api::tokens::ServiceAccounts>>,
    ) -> Result<ControlPlane, ControlPlaneError> {
        let store = Arc::new(Store::default());
        let api = Arc::new(Api::with_dns_ip(
            store.clone(),
            plan.service_cidr,
            plan.dns_ip,
        ));
        // The cluster DNS, as kubeadm installs it.
        api.apply(dns::addon::objects(plan.dns_ip, DNS_REPLICAS))
            .map_err(|mut p| ControlPlaneError::DnsObjects(p.swap_remove(0)))?;
        let settings = &scenario.cluster.dns;
        let cfg = dns::Config {
            ttl: settings.ttl,
            pods: settings.pods,
            ..dns::Config::new(plan.dns_ip, plan.service_cidr, scenario.cluster.pod_cidr)
        }
        .with_domain(&settings.domain)
        .map_err(ControlPlaneError::Domain)?;
        let dns = Dns::new(&cfg, settings.upstream.clone());
        // The scenario's pods, through admission as every pod (its checks and
        // defaults), bound to the node the plan placed them on; their sandboxes are
        // built already at the address the plan gave them, which the kubelets adopt.
        let pods: Vec<Object> = scenario
            .pods
            .iter()
            .zip(&plan.pods)
            .map(|(decl, p)| Object::Pod(decl.to_pod(Some(&p.node))))
            .collect();
        if !pods.is_empty() {
            api.apply(pods)
                .map_err(|mut p| ControlPlaneError::Pods(p.swap_remove(0)))?;
            store.write(|tx| {
                for p in &plan.pods {
                    let key = Key::new(Kind::Pod, &p.namespace, &p.name);
                    if let Some(Object::Pod(mut pod)) = tx.get(&key).cloned() {
                        pod.status = Some(PodStatus {
                            phase: Some("Pending".into()),
                            pod_ip: Some(p.ip.to_string()),
                            ..Default::default()
                        });
                        tx.put(Object::Pod(pod));
                    }
                }
            });
        }
        let nodes: Vec<NodeInfo> = plan
            .nodes
            .iter()
            .map(|n| NodeInfo {
                name: n.name.clone(),
                netns: n.netns.clone(),
                ip: n.ip,
                pod_cidr: n.pod_cidr,
                bridge_ip: n.bridge_ip,
            })
            .collect();
        let faults = Arc::new(kubelet::faults::Faults::default());
        let (endpoints_synced, endpoints_rx) = watch::channel(0);
        let (deployments_synced, deployments_rx) = watch::channel(0);
        let (replicasets_synced, replicasets_rx) = watch::channel(0);
        let (kubelets_synced, kubelets_rx) = watch::channel(0);
        let (lb_synced, lb_rx) = watch::channel(0);
        let (nodes_synced, nodes_rx) = watch::channel(0);
        let controllers = vec![
            ("the endpoints controller", endpoints_rx),
            ("the Deployment controller", deployments_rx),
            ("the ReplicaSet controller", replicasets_rx),
            ("the kubelets", kubelets_rx),
            ("the load balancer", lb_rx),
            ("the node lifecycle controller", nodes_rx),
        ];
        let node_ips: Vec<(String, std::net::Ipv4Addr)> =
            plan.nodes.iter().map(|n| (n.name.clone(), n.ip)).collect();
        let lb_pool = plan.load_balancer_addresses();
        // The load balancer announces its routes to every namespace outside the
        // cluster: the underlay router and the scenario's hosts.
        let routers: Vec<crate::kernel::exec::Nsenter> = plan
            .host_names()
            .into_iter()
            .filter_map(|h| plan.host_netns(h))
            .map(|netns| crate::kernel::exec::Nsenter {
                netns: crate::netns::netns_path(netns),
            })
            .collect();
        // Each kubelet registers its node and its Lease before it runs pods.
        let node_health = scenario.cluster.node_health;
        let kubelet_cfg = Arc::new(kubelet::Config {
            testbed: plan.testbed.clone(),
            nodes: nodes.clone(),
            shared_etc,
            cluster_dns: plan.cluster_dns(),
            dns: Some(dns.clone()),
            exe,
            faults: faults.clone(),
            backoff: scenario
                .cluster
                .max_restart_period
                .map(kubelet::restart::BackOffSpec::with_max)
                .unwrap_or_default(),
            owner_uid: crate::state::owner_uid(),
            service_accounts,
            node_health,
        });
        kubelet::node_status::register(&kubelet_cfg, &store);
        let mut tasks = vec![
            tokio::spawn({
                let store = store.clone();
                async move { controllers::endpoints::run(store, &endpoints_synced).await }
            }),
            tokio::spawn({
                let store = store.clone();
                async move { controllers::deployment::run(store, &deployments_synced).await }
            }),
            tokio::spawn({
                let store = store.clone();
                async move { controllers::replicaset::run(store, &replicasets_synced).await }
            }),
            tokio::spawn(dns::run(store.clone(), dns.clone())),
            tokio::spawn({
                let store = store.clone();
                async move {
                    controllers::loadbalancer::run(store, lb_pool, node_ips, routers, &lb_synced)
                        .await
                }
            }),
            tokio::spawn({
                let (cfg, store) = (kubelet_cfg.clone(), store.clone());
                async move { kubelet::run(cfg, store, &kubelets_synced).await }
            }),
            tokio::spawn(kubelet::node_status::heartbeat(
                kubelet_cfg.clone(),
                store.clone(),
            )),
            tokio::spawn({
                let store = store.clone();
                async move { controllers::node_lifecycle::run(store, node_health, &nodes_synced).await }
            }),
        ];
        let mut proxies = Vec::new();
        let modes = plan.nodes.iter().map(|n| n.proxy_mode).collect();
        for n in &plan.nodes {
            let cfg = render::Config {
                cluster_cidr: Some(scenario.cluster.pod_cidr),
                node_ip: Some(n.ip),
                service_cidr: Some(scenario.cluster.service_cidr),
                node_port_addresses: vec![n.ip],
                ..Default::default()
            };
            let (tx, rx) = watch::channel(SyncState::default());
            // Each node's kube-proxy in the mode its configuration says.
            let backend = n.proxy_mode.backend(cfg);
            tasks.push(tokio::spawn(proxy::node::run(
                store.clone(),
                n.name.clone(),
                n.netns.clone(),
                backend,
                tx,
            )));
            proxies.push((n.name.clone(), rx));
        }
        Ok(ControlPlane {
            api,
            dns,
            store,
            faults,
            proxies,
            modes,
            controllers,
            nodes,
            tasks: std::sync::Mutex::new(tasks),
        })
    }

    /// Each node with its kube-proxy's state.
    pub fn node_status(&self) -> Vec<NodeStatus> {
        let rev = *self.store.subscribe().borrow();
        self.nodes
            .iter()
            .zip(&self.proxies)
            .zip(&self.modes)
            .map(|((n, (_, rx)), mode)| {
                let s = rx.borrow().clone();
                NodeStatus {
                    name: n.name.clone(),
                    ip: n.ip.to_string(),
                    pod_cidr: n.pod_cidr.to_string(),
                    mode: mode.name().to_string(),
                    synced_revision: s.revision,
                    store_revision: rev,
                    syncs: s.syncs,
                    last_sync_ms: s.last_took.as_secs_f64() * 1e3,
                    service_ports: s.service_ports,
                    last_error: s.last_error.map(|e| e.to_string()),
                }
            })
            .collect()
    }

    /// Waits until the cluster DNS serves: every coredns pod is a ready endpoint of
    /// kube-dns, and every node's rules lead there.
    pub async fn wait_dns(&self, timeout: Duration) -> Result<(), ControlPlaneError> {
        let key = crate::api::Key::new(
            crate::api::Kind::Endpoints,
            dns::addon::NAMESPACE,
            "kube-dns",
        );
        let ready = |store: &Store| match store.get(&key) {
            Some(Object::Endpoints(e)) => e
                .subsets
                .iter()
                .flatten()
                .flat_map(|s| s.addresses.iter().flatten())
                .count(),
            _ => 0,
        };
        let mut rev = self.store.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        while ready(&self.store) < DNS_REPLICAS as usize {
            if tokio::time::timeout_at(deadline, rev.changed())
                .await
                .is_err()
            {
                return Err(ControlPlaneError::DnsNotReady {
                    timeout,
                    ready: ready(&self.store),
                    want: DNS_REPLICAS as usize,
                });
            }
        }
        let now = *self.store.subscribe().borrow();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.wait_synced(now, left).await {
            return Err(ControlPlaneError::DnsNotSynced(timeout));
        }
        Ok(())
    }

    /// Waits until the controllers have acted on the store at `revision`, and then
    /// every node's rules and the cluster DNS's records reflect the store as it is
    /// after that (with what the controllers wrote).
    pub async fn wait_synced(&self, revision: u64, timeout: Duration) -> bool {
        let all = async {
            // Controllers act on one another's writes (the load balancer on the
            // endpoints controller's slices): a few rounds, until none wrote more.
            let mut revision = revision;
            for _ in 0..3 {
                for (_, rx) in &self.controllers {
                    let mut rx = rx.clone();
                    if rx.wait_for(|r| *r >= revision).await.is_err() {
                        return false;
                    }
                }
                let now = *self.store.subscribe().borrow();
                if now <= revision {
                    break;
                }
                revision = now;
            }
            let revision = revision.max(*self.store.subscribe().borrow());
            let mut dns = self.dns.revision.subscribe();
            if dns.wait_for(|r| *r >= revision).await.is_err() {
                return false;
            }
            for (_, rx) in &self.proxies {
                let mut rx = rx.clone();
                if rx.wait_for(|s| s.revision >= revision).await.is_err() {
                    return false;
                }
            }
            true
        };
        tokio::time::timeout(timeout, all).await.unwrap_or(false)
    }

    /// Who is behind `revision`: `dns at 41, node-2 at 40`, or empty.
    pub fn behind(&self, revision: u64) -> String {
        let mut out = Vec::new();
        for (name, rx) in &self.controllers {
            let r = *rx.borrow();
            if r < revision {
                out.push(format!("{name} at {r}"));
            }
        }
        let dns = *self.dns.revision.borrow();
        if dns < revision {
            out.push(format!("the DNS at {dns}"));
        }
        for (name, rx) in &self.proxies {
            let r = rx.borrow().revision;
            if r < revision {
                out.push(format!("{name} at {r}"));
            }
        }
        out.join(", ")
    }

    /// Aborts every task without waiting for it to end (see [`ControlPlane::stop`]).
    pub fn abort(&self) {
        for t in self.tasks.lock().expect("tasks lock").iter() {
            t.abort();
        }
    }

    /// Stops every task: pods' processes are killed, servers closed.
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }
}
