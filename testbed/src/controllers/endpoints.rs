//! The endpoints and EndpointSlice controllers: for each Service with a selector, the
//! pods that match, with the Service's ports resolved against each pod's container
//! ports (by name or number), written as an `Endpoints` object (one subset per set of
//! ports) and EndpointSlices (one or more per set of ports), as the control plane's
//! two controllers write them.

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

use crate::api::labels::{
    ready_condition, selects, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL,
};
use crate::api::{Event, EventType, Key, Kind, Object, Store};
use crate::informer::Reconcile;

/// A Service port resolved for one pod: name, number, protocol.
pub type ResolvedPort = (String, i32, String);

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

/// The most endpoints in one EndpointSlice (the controller's
/// `--max-endpoints-per-slice` default).
pub const MAX_PER_SLICE: usize = 100;

/// The label both controllers put on a headless Service's objects.
const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// A slice's name: the Service's, a dash and five characters (Kubernetes picks them
/// at random; here they follow from the Service, the slice's ports and its place, so
/// a slice keeps its name while those stay).
pub fn slice_name(service: &str, ports: &[ResolvedPort], chunk: usize) -> String {
    let mut h = Sha256::new();
    h.update(service.as_bytes());
    for (name, port, protocol) in ports {
        h.update(format!("/{name}:{port}/{protocol}").as_bytes());
    }
    if chunk > 0 {
        h.update(format!("#{chunk}").as_bytes());
    }
    format!("{service}-{}", crate::names::k8s_suffix(&h.finalize(), 5))
}

/// A pod that belongs in a Service's endpoints, with what they say of it.
struct Member<'a> {
    pod: &'a Pod,
    ip: String,
    /// The Service's ports this pod serves, in the Service's order.
    ports: Vec<ResolvedPort>,
    ready: bool,
    terminating: bool,
    hostname: Option<String>,
    target_ref: ObjectReference,
}

/// The pods `sel` selects that have an address and have not ended (terminating ones
/// included), by address then name.
fn members<'a>(
    svc: &Service,
    sel: &BTreeMap<String, String>,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Vec<Member<'a>> {
    let name = svc.metadata.name.as_deref().unwrap_or_default();
    let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
    let ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let mut out: Vec<Member> = pods
        .into_iter()
        .filter(|p| selects(sel, p))
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Failed" | "Succeeded")
            )
        })
        .filter_map(|pod| {
            let ip = pod.status.as_ref()?.pod_ip.clone()?;
            let spec = pod.spec.as_ref();
            Some(Member {
                pod,
                ip,
                ports: ports
                    .iter()
                    .filter_map(|p| {
                        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                        let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                        resolve(&target, &proto, pod)
                            .map(|n| (p.name.clone().unwrap_or_default(), n, proto))
                    })
                    .collect(),
                ready: ready_condition(pod),
                terminating: pod.metadata.deletion_timestamp.is_some(),
                // ShouldSetHostname: a hostname, and the Service as its subdomain.
                hostname: spec
                    .filter(|s| s.subdomain.as_deref() == Some(name))
                    .and_then(|s| s.hostname.clone())
                    .filter(|h| !h.is_empty()),
                target_ref: ObjectReference {
                    kind: Some("Pod".into()),
                    namespace: Some(ns.to_string()),
                    name: pod.metadata.name.clone(),
                    uid: pod.metadata.uid.clone(),
                    ..Default::default()
                },
            })
        })
        .collect();
    out.sort_by_key(|m| {
        let ip: std::net::Ipv4Addr = m.ip.parse().unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        (ip, m.pod.metadata.name.clone())
    });
    out
}

/// The `Endpoints` and `EndpointSlice`s of `svc` given the pods of its namespace, or
/// `None` when the controllers leave the Service alone (no selector, ExternalName).
pub fn endpoints_for<'a>(
    svc: &Service,
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<(Endpoints, Vec<EndpointSlice>)> {
    let spec = svc.spec.as_ref()?;
    if spec.type_.as_deref() == Some("ExternalName") {
        return None;
    }
    let sel = spec.selector.as_ref().filter(|s| !s.is_empty())?;
    svc.metadata.name.as_ref()?;
    let members = members(svc, sel, pods);
    Some((endpoints_object(svc, &members), slices(svc, &members)))
}

fn is_headless(svc: &Service) -> bool {
    svc.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()) == Some("None")
}

/// The Service's labels, with the headless label on a headless Service's objects.
fn labels(svc: &Service) -> BTreeMap<String, String> {
    let mut l = svc.metadata.labels.clone().unwrap_or_default();
    if is_headless(svc) {
        l.insert(HEADLESS_LABEL.into(), String::new());
    }
    l
}

/// The `Endpoints` object as the endpoints controller makes it: an address per pod
/// and Service port it serves, repacked into one subset per set of ports
/// (`RepackSubsets`); ready pods (all, with publishNotReadyAddresses) as
/// `addresses`, the others as `notReadyAddresses`; terminating pods left out unless
/// publishNotReadyAddresses; a Service without ports lists its pods only if headless.
fn endpoints_object(svc: &Service, members: &[Member]) -> Endpoints {
    let spec = svc.spec.as_ref();
    let publish_all = spec.and_then(|s| s.publish_not_ready_addresses) == Some(true);
    let portless = spec
        .and_then(|s| s.ports.as_ref())
        .is_none_or(|p| p.is_empty());
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>);
    let mut subsets: BTreeMap<Vec<ResolvedPort>, Group> = BTreeMap::new();
    for m in members {
        if m.terminating && !publish_all {
            continue;
        }
        if m.ports.is_empty() && !(portless && is_headless(svc)) {
            continue;
        }
        let addr = EndpointAddress {
            ip: m.ip.clone(),
            hostname: m.hostname.clone(),
            node_name: m.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
            target_ref: Some(m.target_ref.clone()),
        };
        let group = subsets.entry(m.ports.clone()).or_default();
        if m.ready || publish_all {
            group.0.push(addr);
        } else {
            group.1.push(addr);
        }
    }
    Endpoints {
        metadata: ObjectMeta {
            name: svc.metadata.name.clone(),
            namespace: Some(
                svc.metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            ),
            labels: Some(labels(svc)).filter(|l| !l.is_empty()),
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
    }
}

/// The EndpointSlices as the EndpointSlice controller makes them: one group per set
/// of ports the pods serve (a pod that serves none is in a group without ports), at
/// most [`MAX_PER_SLICE`] endpoints a slice, each endpoint with its conditions
/// (`ready` never true while terminating unless publishNotReadyAddresses; `serving`
/// the pod's readiness), hostname, node and pod. With no pods, one empty slice.
fn slices(svc: &Service, members: &[Member]) -> Vec<EndpointSlice> {
    let name = svc.metadata.name.clone().unwrap_or_default();
    let publish_all = svc
        .spec
        .as_ref()
        .and_then(|s| s.publish_not_ready_addresses)
        == Some(true);
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<discovery::Endpoint>> = BTreeMap::new();
    for m in members {
        // Never ready while terminating, unless every pod is published.
        let ready = publish_all || (m.ready && !m.terminating);
        groups
            .entry(m.ports.clone())
            .or_default()
            .push(discovery::Endpoint {
                addresses: vec![m.ip.clone()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(m.ready),
                    terminating: Some(m.terminating),
                }),
                hostname: m.hostname.clone(),
                node_name: m.pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                target_ref: Some(m.target_ref.clone()),
                ..Default::default()
            });
    }
    if groups.is_empty() {
        groups.insert(Vec::new(), Vec::new());
    }
    let mut labels = labels(svc);
    labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let mut out = Vec::new();
    for (ports, endpoints) in groups {
        let chunks: Vec<&[discovery::Endpoint]> = if endpoints.is_empty() {
            vec![&[]]
        } else {
            endpoints.chunks(MAX_PER_SLICE).collect()
        };
        for (i, chunk) in chunks.into_iter().enumerate() {
            out.push(EndpointSlice {
                metadata: ObjectMeta {
                    name: Some(slice_name(&name, &ports, i)),
                    namespace: Some(
                        svc.metadata
                            .namespace
                            .clone()
                            .unwrap_or_else(|| "default".into()),
                    ),
                    labels: Some(labels.clone()),
                    owner_references: Some(vec![owner(svc)]),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: chunk.to_vec(),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port, protocol)| discovery::EndpointPort {
                            name: Some(name.clone()),
                            port: Some(*port),
                            protocol: Some(protocol.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            });
        }
    }
    out
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
    written: HashMap<SvcKey, (Endpoints, Vec<EndpointSlice>)>,
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
            let old = self.written.get(&key);
            if want.as_ref() == old {
                continue;
            }
            // Slices written before and not wanted now go.
            let gone: Vec<String> = old
                .map(|(_, slices)| slices.iter())
                .into_iter()
                .flatten()
                .filter_map(|s| s.metadata.name.clone())
                .filter(|n| {
                    !want
                        .iter()
                        .flat_map(|(_, w)| w)
                        .any(|s| s.metadata.name.as_ref() == Some(n))
                })
                .collect();
            let had_endpoints = old.is_some();
            self.store.write(|tx| {
                match &want {
                    Some((endpoints, slices)) => {
                        tx.put(Object::Endpoints(endpoints.clone()));
                        for s in slices {
                            tx.put(Object::EndpointSlice(s.clone()));
                        }
                    }
                    None if had_endpoints => {
                        tx.delete(&Key::new(Kind::Endpoints, &key.0, &key.1));
                    }
                    None => {}
                }
                for name in &gone {
                    tx.delete(&Key::new(Kind::EndpointSlice, &key.0, name));
                }
            });
            if let Some(svc) = self.services.get(&key) {
                record_change(&self.store, svc, want.as_ref());
            }
            match want {
                Some(w) => {
                    self.written.insert(key, w);
                }
                None => {
                    self.written.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// A Service's endpoints changed, as an event (see [`change_message`]).
fn record_change(store: &Store, svc: &Service, want: Option<&(Endpoints, Vec<EndpointSlice>)>) {
    use crate::api::events::{record_in, reference, Record, Source, Type};
    let message = change_message(want.map(|(e, _)| e), want.map_or(&[][..], |(_, s)| s));
    let about = reference(&Object::Service(svc.clone()));
    store.write(|tx| {
        record_in(
            tx,
            Record {
                about,
                type_: Type::Normal,
                reason: "EndpointsChanged",
                message,
                source: Source {
                    component: "endpoint-controller",
                    host: None,
                },
            },
            false,
        )
    });
}

/// What the endpoints are now, in words: the ready addresses (from the Endpoints),
/// how many are not ready, and how many pods are terminating and how many of those
/// still serve (from the slices: Endpoints leave terminating pods out).
pub(super) fn change_message(endpoints: Option<&Endpoints>, slices: &[EndpointSlice]) -> String {
    let (mut ready, mut not_ready) = (Vec::new(), 0);
    for ss in endpoints.iter().flat_map(|e| e.subsets.iter().flatten()) {
        let ports: Vec<i32> = ss.ports.iter().flatten().map(|p| p.port).collect();
        for a in ss.addresses.iter().flatten() {
            match ports.as_slice() {
                [] => ready.push(a.ip.clone()),
                ps => ready.extend(ps.iter().map(|p| format!("{}:{p}", a.ip))),
            }
        }
        not_ready += ss.not_ready_addresses.as_ref().map_or(0, Vec::len);
    }
    // An address is in one slice per set of ports: counted once.
    let mut terminating = BTreeMap::new();
    for e in slices.iter().flat_map(|s| &s.endpoints) {
        let c = e.conditions.as_ref();
        if c.and_then(|c| c.terminating) == Some(true) {
            let serving = c.and_then(|c| c.serving) == Some(true);
            terminating.insert(e.addresses.join(","), serving);
        }
    }
    if ready.is_empty() && not_ready == 0 && terminating.is_empty() {
        return "no endpoints: no pod matches the selector".to_string();
    }
    let mut out = format!("{} ready", ready.len());
    if !ready.is_empty() {
        out += &format!(" ({})", ready.join(", "));
    }
    if not_ready > 0 {
        out += &format!(", {not_ready} not ready");
    }
    if !terminating.is_empty() {
        let serving = terminating.values().filter(|s| **s).count();
        out += &format!(", {} terminating ({serving} serving)", terminating.len());
    }
    out
}
