//! What a trace (and a picture) knows of the cluster: its address plan and the API
//! objects at that moment, with the lookups both need (the pod or Service at an
//! address, the endpoints of a Service). The scenario runner builds it from its
//! store, the CLI from the testbed's record and its API.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::labels::{pod_ready, SERVICE_NAME_LABEL};
use crate::api::{Kind, Object};
use crate::plan::{NodePlan, Plan};

/// The cluster as a trace sees it.
#[derive(Debug, Clone)]
pub struct World {
    pub plan: Plan,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

/// One endpoint of a Service, as its slices list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// The pod, `namespace/name`, when the slice names one.
    pub pod: Option<String>,
    pub node: Option<String>,
}

/// `namespace/name` of an object's metadata.
pub fn key(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl World {
    /// Sorts `objects` into the kinds a trace uses.
    pub fn new(plan: Plan, objects: impl IntoIterator<Item = Object>) -> World {
        let mut w = World {
            plan,
            pods: Vec::new(),
            services: Vec::new(),
            slices: Vec::new(),
        };
        for o in objects {
            match o {
                Object::Pod(p) => w.pods.push(p),
                Object::Service(s) => w.services.push(s),
                Object::EndpointSlice(s) => w.slices.push(s),
                _ => {}
            }
        }
        let by_key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| key(m);
        w.pods.sort_by_key(|p| by_key(&p.metadata));
        w.services.sort_by_key(|s| by_key(&s.metadata));
        w.slices.sort_by_key(|s| by_key(&s.metadata));
        w
    }

    /// The cluster as `store` has it now.
    pub fn from_store(plan: Plan, store: &crate::api::Store) -> World {
        let kinds = [Kind::Pod, Kind::Service, Kind::EndpointSlice];
        World::new(plan, kinds.into_iter().flat_map(|k| store.list(k, None)))
    }

    /// The pod `NAME` (in `default`) or `NAMESPACE/NAME`.
    pub fn pod(&self, r: &str) -> Option<&Pod> {
        let want = if r.contains('/') {
            r.to_string()
        } else {
            format!("default/{r}")
        };
        self.pods.iter().find(|p| key(&p.metadata) == want)
    }

    /// The pod whose address is `ip` (not one on its node's network).
    pub fn pod_at(&self, ip: Ipv4Addr) -> Option<&Pod> {
        self.pods.iter().find(|p| {
            pod_ip(p) == Some(ip)
                && !p
                    .spec
                    .as_ref()
                    .and_then(|s| s.host_network)
                    .unwrap_or(false)
        })
    }

    /// The Service whose ClusterIP is `ip`.
    pub fn service_at(&self, ip: Ipv4Addr) -> Option<&Service> {
        let ip = ip.to_string();
        self.services.iter().find(|s| {
            s.spec.as_ref().is_some_and(|sp| {
                sp.cluster_ips.iter().flatten().any(|c| *c == ip)
                    || sp.cluster_ip.as_deref() == Some(&ip)
            })
        })
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        let want = format!("{namespace}/{name}");
        self.services.iter().find(|s| key(&s.metadata) == want)
    }

    /// The node with underlay address `ip`.
    pub fn node_at(&self, ip: Ipv4Addr) -> Option<&NodePlan> {
        self.plan.nodes.iter().find(|n| n.ip == ip)
    }

    /// The node whose pod CIDR holds `ip`.
    pub fn node_of_pod_ip(&self, ip: Ipv4Addr) -> Option<&NodePlan> {
        self.plan.nodes.iter().find(|n| n.pod_cidr.contains(&ip))
    }

    /// The endpoints of Service `svc` across its slices, by address.
    pub fn endpoints(&self, svc: &Service) -> Vec<Endpoint> {
        let (ns, name) = (
            svc.metadata.namespace.as_deref().unwrap_or("default"),
            svc.metadata.name.as_deref().unwrap_or_default(),
        );
        let mut out: Vec<Endpoint> = self
            .slices
            .iter()
            .filter(|s| {
                s.metadata.namespace.as_deref().unwrap_or("default") == ns
                    && s.metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(SERVICE_NAME_LABEL))
                        == Some(&name.to_string())
            })
            .flat_map(|s| s.endpoints.iter())
            .flat_map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                let pod = e.target_ref.as_ref().map(|r| {
                    format!(
                        "{}/{}",
                        r.namespace.as_deref().unwrap_or(ns),
                        r.name.as_deref().unwrap_or_default()
                    )
                });
                e.addresses.iter().filter_map(move |a| {
                    Some(Endpoint {
                        ip: a.parse().ok()?,
                        ready: c.ready.unwrap_or(true),
                        serving: c.serving.unwrap_or(true),
                        terminating: c.terminating.unwrap_or(false),
                        pod: pod.clone(),
                        node: e.node_name.clone(),
                    })
                })
            })
            .collect();
        out.sort_by_key(|e| e.ip);
        out.dedup_by_key(|e| e.ip);
        out
    }
}

/// The pod's address, once it has one.
pub fn pod_ip(p: &Pod) -> Option<Ipv4Addr> {
    p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()
}

/// The node a pod is placed on.
pub fn pod_node(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

/// Whether the pod is ready (running, its Ready condition true).
pub fn ready(p: &Pod) -> bool {
    pod_ready(p)
}
