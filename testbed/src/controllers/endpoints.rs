//! The endpoints controller: for each Service with a selector, the pods that match,
//! split into ready and not-ready addresses with the Service's ports resolved against
//! each pod's container ports (by name or number), written as an `Endpoints` object
//! and an `EndpointSlice`, as the control plane does.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{self as discovery, EndpointConditions, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::api::labels::{pod_ready, selects, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};
use crate::api::{Event, EventType, Key, Kind, Object, Store};
use crate::informer::Reconcile;

/// A Service port resolved for one pod: name, number, protocol.
type ResolvedPort = (String, i32, String);

/// The port a pod serves a Service port on: a number, or the container port that
/// has the name. `None` when the pod has no port of that name.
fn resolve(target: &IntOrString, proto: &str, pod: &Pod) -> Option<i32> {
    match target {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| {
                p.name.as_deref() == Some(name) && p.protocol.as_deref().unwrap_or("TCP") == proto
            })
            .map(|p| p.container_port),
    }
}

fn owner(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The slice's name: the Service's, a dash and five characters that do not change
/// (Kubernetes picks them at random).
pub fn slice_name(service: &str) -> String {
    let h = Sha256::digest(service.as_bytes());
    format!("{service}-{}", crate::names::k8s_suffix(&h, 5))
}

/// The `Endpoints` and `EndpointSlice` of `svc` given the pods of its namespace, or
/// `None` when the controller leaves the Service alone (no selector, ExternalName).
// Long because it follows the upstream endpoints and EndpointSlice controllers' loop over
// pods and ports step by step, so it can be read beside them.
pub fn endpoints_for<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<(Endpoints, EndpointSlice)> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let sel = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    let name = svc.metadata.name.clone()?;
    let ns = svc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let publish_all = spec.publish_not_ready_addresses == Some(true);
    let ports = spec.ports.clone().unwrap_or_default();

    let mut matched: Vec<&Pod> = pods
        .into_iter()
        .filter(|p| selects(sel, p))
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some())
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        // A pod that has ended (Failed, Succeeded) is in no Service, ready or not.
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            )
        })
        .collect();
    matched.sort_by_key(|p| {
        let ip: std::net::Ipv4Addr = p
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok())
            .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        (ip, p.metadata.name.clone())
    });

    // Endpoints: pods grouped by the ports they resolve to, one subset per group.
    let mut subsets: BTreeMap<Vec<ResolvedPort>, (Vec<EndpointAddress>, Vec<EndpointAddress>)> =
        BTreeMap::new();
    let mut slice_ports: Option<Vec<ResolvedPort>> = None;
    let mut slice_endpoints = Vec::new();
    for pod in &matched {
        let resolved: Vec<ResolvedPort> = ports
            .iter()
            .filter_map(|p| {
                let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                resolve(&target, &proto, pod)
                    .map(|n| (p.name.clone().unwrap_or_default(), n, proto))
            })
            .collect();
        if resolved.is_empty() && !ports.is_empty() {
            continue;
        }
        let ip = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .unwrap_or_default();
        let pod_spec = pod.spec.as_ref();
        let node = pod_spec.and_then(|s| s.node_name.clone());
        let hostname = pod_spec
            .filter(|s| s.subdomain.as_deref() == Some(name.as_str()))
            .and_then(|s| s.hostname.clone());
        let target_ref = ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.clone()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        let ready = pod_ready(pod);
        let addr = EndpointAddress {
            ip: ip.clone(),
            hostname: hostname.clone(),
            node_name: node.clone(),
            target_ref: Some(target_ref.clone()),
        };
        let group = subsets.entry(resolved.clone()).or_default();
        if ready || publish_all {
            group.0.push(addr);
        } else {
            group.1.push(addr);
        }
        // One slice holds endpoints with the same ports; those of the first group.
        if slice_ports.get_or_insert_with(|| resolved.clone()) == &resolved {
            slice_endpoints.push(discovery::Endpoint {
                addresses: vec![ip],
                conditions: Some(EndpointConditions {
                    ready: Some(ready || publish_all),
                    serving: Some(ready),
                    terminating: Some(false),
                }),
                hostname,
                node_name: node,
                target_ref: Some(target_ref),
                ..Default::default()
            });
        }
    }

    let labels = |extra: bool| {
        let mut l = svc.metadata.labels.clone().unwrap_or_default();
        if extra {
            l.insert(SERVICE_NAME_LABEL.into(), name.clone());
            l.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
        }
        Some(l).filter(|l| !l.is_empty())
    };
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: labels(false),
            ..Default::default()
        },
        subsets: Some(
            subsets
                .into_iter()
                .map(|(ports, (ready, not_ready))| EndpointSubset {
                    addresses: Some(ready).filter(|a| !a.is_empty()),
                    not_ready_addresses: Some(not_ready).filter(|a| !a.is_empty()),
                    ports: Some(
                        ports
                            .into_iter()
                            .map(|(name, port, protocol)| EndpointPort {
                                name: Some(name).filter(|n| !n.is_empty()),
                                port,
                                protocol: Some(protocol),
                                app_protocol: None,
                            })
                            .collect(),
                    )
                    .filter(|p: &Vec<EndpointPort>| !p.is_empty()),
                })
                .collect(),
        )
        .filter(|s: &Vec<EndpointSubset>| !s.is_empty()),
    };
    let slice_ports = slice_ports.unwrap_or_else(|| {
        // No endpoints: the slice still lists the Service's ports (numbers unknown).
        Vec::new()
    });
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(&name)),
            namespace: Some(ns),
            labels: labels(true),
            owner_references: Some(vec![owner(svc)]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: slice_endpoints,
        ports: Some(
            slice_ports
                .into_iter()
                .map(|(name, port, protocol)| discovery::EndpointPort {
                    name: Some(name),
                    port: Some(port),
                    protocol: Some(protocol),
                    app_protocol: None,
                })
                .collect(),
        ),
    };
    Some((endpoints, slice))
}

/// Runs the controller until the store's watch ends: reacts to every Service and Pod
/// change, and writes an object only when it differs from what it wrote before.
pub async fn run(store: Arc<Store>, synced: &watch::Sender<u64>) {
    let controller = EndpointsController {
        store: store.clone(),
        services: HashMap::new(),
        pods: HashMap::new(),
        written: HashMap::new(),
    };
    crate::informer::run(store, controller, synced).await
}

type SvcKey = (String, String);

struct EndpointsController {
    store: Arc<Store>,
    services: HashMap<SvcKey, Service>,
    /// Pods by namespace, then name.
    pods: HashMap<String, BTreeMap<String, Pod>>,
    /// What it last wrote for each Service.
    written: HashMap<SvcKey, (Endpoints, EndpointSlice)>,
}

#[async_trait::async_trait]
impl Reconcile for EndpointsController {
    type Key = SvcKey;

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Service, Kind::Pod]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<SvcKey>) {
        let deleted = event.kind == EventType::Deleted;
        let ns = event.object.namespace().to_string();
        let name = event.object.name().to_string();
        match event.object {
            Object::Service(s) => {
                dirty.insert((ns.clone(), name.clone()));
                if deleted {
                    self.services.remove(&(ns, name));
                } else {
                    self.services.insert((ns, name), s);
                }
            }
            Object::Pod(p) => {
                let in_ns = self.pods.entry(ns.clone()).or_default();
                let old = if deleted {
                    in_ns.remove(&name)
                } else {
                    in_ns.insert(name, p.clone())
                };
                for ((sns, sname), svc) in &self.services {
                    if *sns != ns {
                        continue;
                    }
                    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
                        continue;
                    };
                    if selects(sel, &p) || old.as_ref().is_some_and(|o| selects(sel, o)) {
                        dirty.insert((sns.clone(), sname.clone()));
                    }
                }
            }
            _ => {}
        }
    }

    async fn reconcile(&mut self, dirty: BTreeSet<SvcKey>, _: u64) -> Result<(), BTreeSet<SvcKey>> {
        for key in dirty {
            let want = self.services.get(&key).and_then(|svc| {
                endpoints_for(
                    svc,
                    self.pods.get(&key.0).into_iter().flat_map(|m| m.values()),
                )
            });
            match (want, self.written.get(&key)) {
                (Some(w), Some(old)) if *old == w => {}
                (Some(w), _) => {
                    self.store.write(|tx| {
                        tx.put(Object::Endpoints(w.0.clone()));
                        tx.put(Object::EndpointSlice(w.1.clone()));
                    });
                    self.written.insert(key, w);
                }
                (None, _) => {
                    if self.written.remove(&key).is_some() {
                        self.store.write(|tx| {
                            tx.delete(&Key::new(Kind::Endpoints, &key.0, &key.1));
                            tx.delete(&Key::new(Kind::EndpointSlice, &key.0, &slice_name(&key.1)));
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
