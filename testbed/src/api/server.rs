//! The API server's verbs over the store: apply (create or update, all objects of a
//! request or none), delete, scale; admission and ClusterIP allocation on the way in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use k8s_openapi::api::core::v1::Service;

use super::admission::{self, Problem};
use super::events;
use super::ipalloc::Allocator;
use super::kubernetes;
use super::nodeports::NodePorts;
use super::object::{Key, Kind, Object};
use super::store::Store;

/// Something wrong with one object of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectProblem {
    /// The object's place in the request (for file:line), when it came in one.
    pub index: Option<usize>,
    /// `Service default/web`.
    pub object: String,
    /// A field path, `spec.ports[0].port`; empty for the whole object.
    pub path: String,
    pub message: String,
    /// What kind of refusal it is (a Kubernetes Status reason).
    #[serde(default)]
    pub reason: Reason,
}

/// Why a request was refused, as a Kubernetes `Status` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    /// A field's value (422 Invalid).
    #[default]
    Invalid,
    /// A create of an object that exists (409).
    AlreadyExists,
    /// An update or delete of one that does not (404).
    NotFound,
    /// An update from a resource version that is no longer the object's (409).
    Conflict,
    /// Something this API server does not allow (403).
    Forbidden,
}

/// What a write expects of the object it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expect {
    /// Create it or update it (`apply`).
    #[default]
    Any,
    /// Create it: it must not exist (`POST`).
    Absent,
    /// Update it: it must exist and, when given, be at this resource version (`PUT`).
    Present { resource_version: Option<String> },
}

impl std::fmt::Display for ObjectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.object, self.message)
        } else {
            write!(f, "{}: {}: {}", self.object, self.path, self.message)
        }
    }
}

impl std::error::Error for ObjectProblem {}

/// Problems on one line, `; ` between them, as an error message.
pub fn joined(problems: &[ObjectProblem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Configured,
    Unchanged,
}

/// What apply did with one object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub key: Key,
    pub action: Action,
    pub cluster_ip: Option<String>,
    /// Fields accepted without being acted on.
    pub ignored: Vec<String>,
    /// The object as stored (for the REST API's answer; not sent on the socket).
    #[serde(skip)]
    pub stored: Option<Object>,
}

pub struct Api {
    pub store: Arc<Store>,
    alloc: Mutex<Allocator>,
    node_ports: Mutex<NodePorts>,
}

fn label(key: &Key) -> String {
    format!("{} {}/{}", key.kind, key.namespace, key.name)
}

fn cluster_ip(s: &Service) -> Option<Ipv4Addr> {
    s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
}

/// The object as it would be stored, without what the store and controllers set.
fn comparable(o: &Object) -> serde_json::Value {
    let mut v = o.to_value();
    if let Some(m) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        for k in ["resourceVersion", "uid", "creationTimestamp", "generation"] {
            m.remove(k);
        }
    }
    if let Some(m) = v.as_object_mut() {
        m.remove("status");
    }
    v
}

impl Api {
    /// An API server over `store` giving ClusterIPs from `service_cidr`, with the
    /// `default/kubernetes` Service in place, as every cluster has it.
    pub fn new(store: Arc<Store>, service_cidr: ipnet::Ipv4Net) -> Api {
        Api::with_allocator(store, Allocator::new(service_cidr))
    }

    /// The same, keeping `dns_ip` for `kube-system/kube-dns`.
    pub fn with_dns_ip(store: Arc<Store>, service_cidr: ipnet::Ipv4Net, dns_ip: Ipv4Addr) -> Api {
        Api::with_allocator(store, Allocator::new(service_cidr).with_dns_ip(dns_ip))
    }

    fn with_allocator(store: Arc<Store>, alloc: Allocator) -> Api {
        let service_cidr = alloc.cidr();
        let api = Api {
            store,
            alloc: Mutex::new(alloc),
            node_ports: Mutex::new(NodePorts::default()),
        };
        let kubernetes = kubernetes::service(service_cidr);
        api.apply(vec![Object::Service(kubernetes)])
            .expect("the kubernetes Service is valid");
        api
    }

    /// Creates or updates every object, or none: any problem with any of them and
    /// nothing changes.
    pub fn apply(&self, objects: Vec<Object>) -> Result<Vec<Applied>, Vec<ObjectProblem>> {
        let expect = vec![Expect::Any; objects.len()];
        self.write(objects, &expect)
    }

    /// [`Api::apply`], each object with what it expects of the one it replaces.
    pub fn write(
        &self,
        objects: Vec<Object>,
        expect: &[Expect],
    ) -> Result<Vec<Applied>, Vec<ObjectProblem>> {
        self.write_or_try(objects, expect, false)
    }

    /// [`Api::write`] as a dry run (`?dryRun=All`): every check, the ClusterIPs it
    /// would take, the limits; nothing stored, allocated or recorded. Each answer's
    /// `stored` is the object as it would be stored.
    pub fn try_write(
        &self,
        objects: Vec<Object>,
        expect: &[Expect],
    ) -> Result<Vec<Applied>, Vec<ObjectProblem>> {
        self.write_or_try(objects, expect, true)
    }

    // Long because admission, ClusterIP allocation, the limits and the store write are one
    // transaction over the whole batch; split, the transaction would be spread over
    // functions.
    fn write_or_try(
        &self,
        objects: Vec<Object>,
        expect: &[Expect],
        dry_run: bool,
    ) -> Result<Vec<Applied>, Vec<ObjectProblem>> {
        let mut alloc = self.alloc.lock().expect("allocator lock");
        let mut next_alloc = alloc.clone();
        let mut node_ports = self.node_ports.lock().expect("node port lock");
        let mut next_ports = node_ports.clone();
        let result = self.store.write(|tx| {
            let mut problems = Vec::new();
            let mut admitted: Vec<(Object, Action, Vec<String>)> = Vec::new();
            let mut keys = BTreeMap::new();
            for (i, mut obj) in objects.into_iter().enumerate() {
                if obj.meta().namespace.is_none() {
                    obj.meta_mut().namespace = Some("default".into());
                }
                let key = obj.key();
                let at = |path: &str, message: String| ObjectProblem {
                    index: Some(i),
                    object: label(&key),
                    path: path.into(),
                    message,
                    reason: Reason::Invalid,
                };
                if let Some(first) = keys.insert(key.clone(), i) {
                    problems.push(at(
                        "",
                        format!("appears twice in the request (also object {})", first + 1),
                    ));
                    continue;
                }
                let old = tx.get(&key);
                if let Some(p) = precondition(expect.get(i), old) {
                    problems.push(ObjectProblem {
                        reason: p.0,
                        ..at("", p.1)
                    });
                    continue;
                }
                // The API server keeps its own Service's type and ports as it made them
                // (upstream's reconciler puts them back within seconds; here at once).
                if let (Object::Service(s), true) = (&mut obj, key == kubernetes::key()) {
                    let canonical = kubernetes::service(alloc.cidr()).spec.unwrap_or_default();
                    let spec = s.spec.get_or_insert_with(Default::default);
                    spec.type_ = canonical.type_;
                    spec.ports = canonical.ports;
                    spec.external_name = None;
                }
                let mut a = match admission::admit(obj, old) {
                    Ok(a) => a,
                    Err(ps) => {
                        problems.extend(
                            ps.into_iter()
                                .map(|Problem { path, message }| at(&path, message)),
                        );
                        continue;
                    }
                };
                if let (Object::Service(s), old) = (&mut a.object, old) {
                    let owner = (key.namespace.as_str(), key.name.as_str());
                    let old_ip = match old {
                        Some(Object::Service(o)) => cluster_ip(o),
                        _ => None,
                    };
                    let spec = s.spec.as_mut().expect("admission fills the spec");
                    let wants_ip = spec.type_.as_deref() != Some("ExternalName")
                        && spec.cluster_ip.as_deref() != Some("None");
                    if wants_ip && old_ip.is_none() {
                        let got = match spec.cluster_ip.as_deref().filter(|s| !s.is_empty()) {
                            Some(req) => {
                                let ip: Ipv4Addr = req.parse().expect("admission checked the form");
                                next_alloc.take(ip, owner).map(|_| ip)
                            }
                            None => next_alloc.allocate(owner),
                        };
                        match got {
                            Ok(ip) => spec.cluster_ip = Some(ip.to_string()),
                            Err(e) => {
                                problems.push(at("spec.clusterIP", e.to_string()));
                                continue;
                            }
                        }
                    }
                    if let Some(ip) = spec.cluster_ip.clone() {
                        spec.cluster_ips = Some(vec![ip]);
                    }
                    // Its address goes when its type no longer has one (ExternalName).
                    if let (Some(ip), false) = (old_ip, wants_ip) {
                        next_alloc.release(ip);
                    }
                }
                if let Object::Service(s) = &mut a.object {
                    let old = match old {
                        Some(Object::Service(o)) => Some(o),
                        _ => None,
                    };
                    let owner = (key.namespace.as_str(), key.name.as_str());
                    if let Err(ps) = next_ports.assign(s, old, owner) {
                        problems.extend(ps.into_iter().map(|(path, message)| at(&path, message)));
                        continue;
                    }
                }
                if let (Object::Deployment(d), Some(Object::Deployment(o))) = (&mut a.object, old) {
                    d.status = o.status.clone();
                }
                let action = match old {
                    None => Action::Created,
                    Some(o) if comparable(o) == comparable(&a.object) => Action::Unchanged,
                    Some(_) => Action::Configured,
                };
                admitted.push((a.object, action, a.ignored));
            }
            if problems.is_empty() {
                problems.extend(totals(tx, &admitted));
            }
            if !problems.is_empty() {
                return Err(problems);
            }
            Ok(admitted
                .into_iter()
                .map(|(obj, action, ignored)| {
                    let stored = if action == Action::Unchanged {
                        tx.get(&obj.key()).cloned().unwrap_or(obj)
                    } else if dry_run {
                        obj
                    } else {
                        let stored = tx.put(obj);
                        events::service_written(tx, &stored, action == Action::Created);
                        stored
                    };
                    Applied {
                        key: stored.key(),
                        cluster_ip: match &stored {
                            Object::Service(s) => {
                                s.spec.as_ref().and_then(|s| s.cluster_ip.clone())
                            }
                            _ => None,
                        },
                        action,
                        ignored,
                        stored: Some(stored),
                    }
                })
                .collect())
        });
        match &result {
            Ok(_) if !dry_run => {
                *alloc = next_alloc;
                *node_ports = next_ports;
            }
            Err(problems) if !dry_run => self.record_refusal(problems),
            _ => {}
        }
        result
    }

    /// A refused write, as a Warning event about the object it named.
    fn record_refusal(&self, problems: &[ObjectProblem]) {
        let Some(first) = problems.first() else {
            return;
        };
        // `Service default/web` names the object.
        let (kind, rest) = first.object.split_once(' ').unwrap_or(("", &first.object));
        let (ns, name) = rest.split_once('/').unwrap_or(("default", rest));
        let api_version = Kind::parse(kind).map_or("v1", Kind::api_version);
        self.store.write(|tx| {
            events::record_in(
                tx,
                events::Record {
                    about: events::reference_to(kind, api_version, Some(ns), name),
                    type_: events::Type::Warning,
                    reason: "FailedAdmission",
                    message: format!("refused, nothing was changed: {}", joined(problems)),
                    source: events::API_SERVER,
                },
                false,
            )
        });
    }

    /// Deletes one object; a Service's ClusterIP is free again at once. A running
    /// pod is deleted gracefully, with its own grace period (see [`Api::delete_with`]).
    pub fn delete(&self, key: &Key) -> Result<Object, ObjectProblem> {
        self.delete_with(key, None)
    }

    /// Deletes one object. A pod running on a node with a grace period (`grace`, or
    /// its `terminationGracePeriodSeconds`, or 30 s) is only marked, as the API
    /// server does: `deletionTimestamp` and `deletionGracePeriodSeconds` set; its
    /// kubelet stops its containers and then removes it. A grace of 0 (or a pod
    /// that never ran) deletes at once; so does 0 for a pod that is terminating.
    pub fn delete_with(&self, key: &Key, grace: Option<i64>) -> Result<Object, ObjectProblem> {
        if key.kind == Kind::Pod {
            if let Some(marked) = super::graceful::mark_terminating(&self.store, key, grace) {
                return Ok(marked);
            }
        }
        let refuse = |message: String| ObjectProblem {
            index: None,
            object: label(key),
            path: String::new(),
            message,
            reason: Reason::Forbidden,
        };
        if !key.kind.user_writable() {
            return Err(refuse(format!(
                "{} objects are kept by the endpoints controller; delete the Service instead",
                key.kind
            )));
        }
        let mut alloc = self.alloc.lock().expect("allocator lock");
        let gone = self
            .store
            .write(|tx| tx.delete(key))
            .ok_or_else(|| ObjectProblem {
                reason: Reason::NotFound,
                ..refuse("not found".into())
            })?;
        let released = match &gone {
            Object::Service(s) => {
                let owner = (key.namespace.as_str(), key.name.as_str());
                self.node_ports
                    .lock()
                    .expect("node port lock")
                    .release(owner);
                cluster_ip(s).inspect(|ip| alloc.release(*ip))
            }
            _ => None,
        };
        if gone.kind() == Kind::Service {
            let message = match released {
                Some(ip) => format!("deleted; ClusterIP {ip} released"),
                None => "deleted".to_string(),
            };
            self.store.write(|tx| {
                events::record_in(
                    tx,
                    events::Record {
                        about: events::reference(&gone),
                        type_: events::Type::Normal,
                        reason: "Deleted",
                        message,
                        source: events::API_SERVER,
                    },
                    false,
                )
            });
        }
        let cidr = alloc.cidr();
        drop(alloc);
        // The API server keeps its own Service: deleted, it is made again (upstream's
        // reconciler does so within seconds; here at once), at the same address.
        if *key == kubernetes::key() {
            self.apply(vec![Object::Service(kubernetes::service(cidr))])
                .map_err(|mut p| p.swap_remove(0))?;
        }
        Ok(gone)
    }

    /// Sets a Deployment's replicas (`kubectl scale`).
    pub fn scale(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
    ) -> Result<Applied, Vec<ObjectProblem>> {
        let key = Key::new(Kind::Deployment, namespace, name);
        let Some(Object::Deployment(mut d)) = self.store.get(&key) else {
            return Err(vec![ObjectProblem {
                index: None,
                object: label(&key),
                path: String::new(),
                message: "not found".into(),
                reason: Reason::NotFound,
            }]);
        };
        if let Some(spec) = &mut d.spec {
            spec.replicas = Some(replicas);
        }
        let mut out = self.apply(vec![Object::Deployment(d)])?;
        Ok(out.remove(0))
    }

    /// Whether `ip` is allocated to a Service now.
    pub fn cluster_ip_in_use(&self, ip: Ipv4Addr) -> bool {
        self.alloc.lock().expect("allocator lock").in_use(ip)
    }
}

/// Why a write that expects `expect` may not replace `old`, if it may not.
fn precondition(expect: Option<&Expect>, old: Option<&Object>) -> Option<(Reason, String)> {
    match (expect?, old) {
        (Expect::Any, _) => None,
        (Expect::Absent, Some(_)) => Some((Reason::AlreadyExists, "already exists".into())),
        (Expect::Absent, None) => None,
        (Expect::Present { .. }, None) => Some((Reason::NotFound, "not found".into())),
        (Expect::Present { resource_version: Some(want) }, Some(o))
            if !want.is_empty() && o.meta().resource_version.as_deref() != Some(want) =>
        {
            Some((
                Reason::Conflict,
                "the object has been modified; please apply your changes to the latest version and try again".into(),
            ))
        }
        (Expect::Present { .. }, Some(_)) => None,
    }
}

/// The pods an object makes: a Deployment its replicas, a bare pod itself (a pod a
/// Deployment owns is counted with its Deployment).
fn pods_of(o: &Object) -> usize {
    match o {
        Object::Deployment(d) => {
            d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize
        }
        Object::Pod(p)
            if p.metadata
                .owner_references
                .as_ref()
                .is_none_or(|r| r.is_empty()) =>
        {
            1
        }
        _ => 0,
    }
}

/// The testbed's totals after `admitted` is stored: Services, and pods (bare ones
/// plus every Deployment's replicas), against [`crate::limits`].
fn totals(tx: &super::store::Tx, admitted: &[(Object, Action, Vec<String>)]) -> Vec<ObjectProblem> {
    use crate::limits::{count, PODS, SERVICES};
    let replaced: std::collections::BTreeSet<Key> =
        admitted.iter().map(|(o, _, _)| o.key()).collect();
    let stored = |kind: Kind| tx.list(kind).filter(|o| !replaced.contains(&o.key()));
    let services = stored(Kind::Service).count()
        + admitted
            .iter()
            .filter(|(o, _, _)| o.kind() == Kind::Service)
            .count();
    let pods: usize = stored(Kind::Deployment)
        .chain(stored(Kind::Pod))
        .map(pods_of)
        .chain(admitted.iter().map(|(o, _, _)| pods_of(o)))
        .sum();
    let mut out = Vec::new();
    let first = |kind: Kind| {
        admitted
            .iter()
            .position(|(o, _, _)| o.kind() == kind)
            .map(|i| (i, label(&admitted[i].0.key())))
    };
    if services > SERVICES {
        let (index, object) = first(Kind::Service).unzip();
        out.push(ObjectProblem {
            reason: Reason::Forbidden,
            index,
            object: object.unwrap_or_default(),
            path: String::new(),
            message: format!(
                "the testbed would have {} Services, more than the {} it runs (testbed::limits::SERVICES)",
                count(services),
                count(SERVICES)
            ),
        });
    }
    if pods > PODS {
        // The Deployment that asks for the most, else the first pod.
        let big = admitted
            .iter()
            .enumerate()
            .filter(|(_, (o, _, _))| pods_of(o) > 0)
            .max_by_key(|(_, (o, _, _))| pods_of(o));
        let (index, object, path) = match big {
            Some((i, (o, _, _))) => (
                Some(i),
                label(&o.key()),
                if o.kind() == Kind::Deployment {
                    "spec.replicas"
                } else {
                    ""
                },
            ),
            None => (None, String::new(), ""),
        };
        out.push(ObjectProblem {
            reason: Reason::Forbidden,
            index,
            object,
            path: path.into(),
            message: format!(
                "the testbed would run {} pods, more than the {} it runs (testbed::limits::PODS)",
                count(pods),
                count(PODS)
            ),
        });
    }
    out
}
