//! The objects the API server keeps: Kubernetes' own types (k8s-openapi), so a user's
//! manifests and `-o yaml` read as they do against a real cluster.

use std::fmt;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Event, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    Deployment,
    ReplicaSet,
    Event,
    Node,
    Lease,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::Pod,
        Kind::Service,
        Kind::Endpoints,
        Kind::EndpointSlice,
        Kind::Deployment,
        Kind::ReplicaSet,
        Kind::Event,
        Kind::Node,
        Kind::Lease,
    ];

    /// The names `kubectl` takes for a kind: singular, plural and short, any case.
    pub fn parse(s: &str) -> Option<Kind> {
        let s = s.to_ascii_lowercase();
        let s = s.split('.').next().unwrap_or_default();
        Some(match s {
            "pod" | "pods" | "po" => Kind::Pod,
            "service" | "services" | "svc" => Kind::Service,
            "endpoints" | "ep" => Kind::Endpoints,
            "endpointslice" | "endpointslices" => Kind::EndpointSlice,
            "deployment" | "deployments" | "deploy" => Kind::Deployment,
            "replicaset" | "replicasets" | "rs" => Kind::ReplicaSet,
            "event" | "events" | "ev" => Kind::Event,
            "node" | "nodes" | "no" => Kind::Node,
            "lease" | "leases" => Kind::Lease,
            _ => return None,
        })
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod | Kind::Service | Kind::Endpoints | Kind::Event | Kind::Node => "v1",
            Kind::Lease => "coordination.k8s.io/v1",
            Kind::EndpointSlice => "discovery.k8s.io/v1",
            Kind::Deployment | Kind::ReplicaSet => "apps/v1",
        }
    }

    /// Lower-case singular, as a line about one object says it (`service default/web`).
    pub fn singular(self) -> &'static str {
        match self {
            Kind::Pod => "pod",
            Kind::Service => "service",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslice",
            Kind::Deployment => "deployment",
            Kind::ReplicaSet => "replicaset",
            Kind::Event => "event",
            Kind::Node => "node",
            Kind::Lease => "lease",
        }
    }

    /// Lower-case plural, as `kubectl get` prints it (`service/web`).
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => "pods",
            Kind::Service => "services",
            Kind::Endpoints => "endpoints",
            Kind::EndpointSlice => "endpointslices",
            Kind::Deployment => "deployments",
            Kind::ReplicaSet => "replicasets",
            Kind::Event => "events",
            Kind::Node => "nodes",
            Kind::Lease => "leases",
        }
    }

    /// Whether objects of this kind live in a namespace (a Node does not).
    pub fn namespaced(self) -> bool {
        self != Kind::Node
    }

    /// Whether users write this kind (the others are the control plane's output).
    pub fn user_writable(self) -> bool {
        matches!(
            self,
            Kind::Pod | Kind::Service | Kind::Deployment | Kind::Event
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Where an object lives: kind, namespace, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl Key {
    pub fn new(kind: Kind, namespace: &str, name: &str) -> Key {
        Key {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // kept whole, as k8s-openapi gives them
pub enum Object {
    Pod(Pod),
    Service(Service),
    Endpoints(Endpoints),
    EndpointSlice(EndpointSlice),
    Deployment(Deployment),
    ReplicaSet(ReplicaSet),
    Event(Event),
    Node(Node),
    Lease(Lease),
}

impl Object {
    pub fn kind(&self) -> Kind {
        match self {
            Object::Pod(_) => Kind::Pod,
            Object::Service(_) => Kind::Service,
            Object::Endpoints(_) => Kind::Endpoints,
            Object::EndpointSlice(_) => Kind::EndpointSlice,
            Object::Deployment(_) => Kind::Deployment,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
            Object::Event(_) => Kind::Event,
            Object::Node(_) => Kind::Node,
            Object::Lease(_) => Kind::Lease,
        }
    }

    pub fn meta(&self) -> &ObjectMeta {
        match self {
            Object::Pod(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::Endpoints(o) => &o.metadata,
            Object::EndpointSlice(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::ReplicaSet(o) => &o.metadata,
            Object::Event(o) => &o.metadata,
            Object::Node(o) => &o.metadata,
            Object::Lease(o) => &o.metadata,
        }
    }

    pub fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Object::Pod(o) => &mut o.metadata,
            Object::Service(o) => &mut o.metadata,
            Object::Endpoints(o) => &mut o.metadata,
            Object::EndpointSlice(o) => &mut o.metadata,
            Object::Deployment(o) => &mut o.metadata,
            Object::ReplicaSet(o) => &mut o.metadata,
            Object::Event(o) => &mut o.metadata,
            Object::Node(o) => &mut o.metadata,
            Object::Lease(o) => &mut o.metadata,
        }
    }

    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// Its namespace; `""` for a kind that has none.
    pub fn namespace(&self) -> &str {
        if !self.kind().namespaced() {
            return "";
        }
        self.meta().namespace.as_deref().unwrap_or("default")
    }

    pub fn key(&self) -> Key {
        Key::new(self.kind(), self.namespace(), self.name())
    }

    pub fn resource_version(&self) -> u64 {
        self.meta()
            .resource_version
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// The object as JSON, with `apiVersion` and `kind`.
    pub fn to_value(&self) -> Value {
        let v = match self {
            Object::Pod(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::Endpoints(o) => serde_json::to_value(o),
            Object::EndpointSlice(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::ReplicaSet(o) => serde_json::to_value(o),
            Object::Event(o) => serde_json::to_value(o),
            Object::Node(o) => serde_json::to_value(o),
            Object::Lease(o) => serde_json::to_value(o),
        };
        v.expect("Kubernetes objects serialize")
    }

    /// An object from JSON whose `kind` says which; errors name the field.
    pub fn from_value(kind: Kind, v: Value) -> Result<Object, String> {
        fn de<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                if path == "." {
                    e.inner().to_string()
                } else {
                    format!("{path}: {}", e.inner())
                }
            })
        }
        Ok(match kind {
            Kind::Pod => Object::Pod(de(v)?),
            Kind::Service => Object::Service(de(v)?),
            Kind::Endpoints => Object::Endpoints(de(v)?),
            Kind::EndpointSlice => Object::EndpointSlice(de(v)?),
            Kind::Deployment => Object::Deployment(de(v)?),
            Kind::ReplicaSet => Object::ReplicaSet(de(v)?),
            Kind::Event => Object::Event(de(v)?),
            Kind::Node => Object::Node(de(v)?),
            Kind::Lease => Object::Lease(de(v)?),
        })
    }
}

impl Serialize for Object {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        let kind = v
            .get("kind")
            .and_then(Value::as_str)
            .and_then(Kind::parse)
            .ok_or_else(|| serde::de::Error::custom("an object needs a known kind"))?;
        Object::from_value(kind, v).map_err(serde::de::Error::custom)
    }
}
