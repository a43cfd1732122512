//! The Services and their EndpointSlices (by the `kubernetes.io/service-name` label)
//! as an informer's cache keeps them: what kube-proxy's change tracker and the load
//! balancer both watch.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::labels::SERVICE_NAME_LABEL;
use super::{Event, EventType, Object};

/// A Service, by namespace and name.
pub type SvcKey = (String, String);

#[derive(Debug, Default)]
pub struct ServiceSlices {
    services: BTreeMap<SvcKey, Service>,
    /// Each Service's slices, by slice name.
    slices: BTreeMap<SvcKey, BTreeMap<String, EndpointSlice>>,
}

impl ServiceSlices {
    /// Takes one change of a Service or an EndpointSlice (as a deletion when `forget`
    /// or when it is one); returns the Service it concerns, or `None` for other
    /// kinds and slices of no Service.
    pub fn observe(&mut self, event: Event, forget: bool) -> Option<SvcKey> {
        let deleted = forget || event.kind == EventType::Deleted;
        let ns = event.object.namespace().to_string();
        let name = event.object.name().to_string();
        match event.object {
            Object::Service(s) => {
                let key = (ns, name);
                if deleted {
                    self.services.remove(&key);
                } else {
                    self.services.insert(key.clone(), s);
                }
                Some(key)
            }
            Object::EndpointSlice(s) => {
                let svc = s.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
                let key = (ns, svc);
                let of = self.slices.entry(key.clone()).or_default();
                if deleted {
                    of.remove(&name);
                } else {
                    of.insert(name, s);
                }
                if of.is_empty() {
                    self.slices.remove(&key);
                }
                Some(key)
            }
            _ => None,
        }
    }

    pub fn service(&self, key: &SvcKey) -> Option<&Service> {
        self.services.get(key)
    }

    /// Every Service, by key.
    pub fn services(&self) -> &BTreeMap<SvcKey, Service> {
        &self.services
    }

    /// A Service's slices (it may have some before it exists, or none).
    pub fn slices_of(&self, key: &SvcKey) -> impl Iterator<Item = &EndpointSlice> {
        self.slices.get(key).into_iter().flat_map(|m| m.values())
    }

    /// Every Service's slices.
    pub fn slices(&self) -> impl Iterator<Item = (&SvcKey, &EndpointSlice)> {
        self.slices
            .iter()
            .flat_map(|(k, m)| m.values().map(move |s| (k, s)))
    }
}
