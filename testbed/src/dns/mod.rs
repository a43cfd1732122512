//! The cluster DNS: the store's objects indexed as CoreDNS indexes them ([`zone`]),
//! answers computed from them per question as CoreDNS computes them ([`answer`]), a
//! hickory-server handler answering from the latest snapshot ([`handler`]), and the
//! server of each kube-dns pod ([`serve`]). [`run`] keeps the snapshot current.

pub mod addon;
pub mod answer;
#[cfg(test)]
mod chain_tests;
pub mod client;
pub mod config;
#[cfg(test)]
mod coredns_tests;
mod find;
pub mod handler;
pub mod pod_files;
pub mod serve;
pub mod tcp;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;
pub mod zone;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::{Event, EventType, Kind, Object, Store};
use crate::informer::Reconcile;
pub use config::{Config, PodMode};
pub use zone::{Objects, Zone};

/// The images whose containers the kubelet runs as the cluster DNS server.
pub fn is_dns_image(image: &str) -> bool {
    let repo = image.split(['@', ':']).next().unwrap_or_default();
    repo.ends_with("/coredns") || repo == "coredns" || repo.ends_with("/k8s-dns-kube-dns")
}

/// The DNS state every kube-dns pod serves from.
#[derive(Clone, Debug)]
pub struct Dns {
    pub zone: Arc<ArcSwap<Zone>>,
    /// Where names outside the cluster domain are asked, in order.
    pub upstream: Vec<SocketAddr>,
    /// The store revision the zone reflects.
    pub revision: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Dns {
    /// A DNS whose zone is not built yet: until [`run`] builds it from the store, a
    /// name not found is SERVFAIL.
    pub fn new(cfg: &Config, upstream: Vec<SocketAddr>) -> Self {
        Dns {
            zone: Arc::new(ArcSwap::from_pointee(Zone::unsynced(cfg, serial()))),
            upstream,
            revision: Arc::new(tokio::sync::watch::Sender::new(0)),
        }
    }

    pub fn handler(&self) -> handler::Handler {
        handler::Handler::new(self.zone.clone(), self.upstream.clone())
    }
}

/// The SOA serial: the time of the change, in seconds, as CoreDNS has it.
fn serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

type Key = (String, String);

/// Keeps `dns`'s zone equal to the store's Services, EndpointSlices and Pods: every
/// batch of changes builds a new snapshot and swaps it in; readers never wait.
pub async fn run(store: Arc<Store>, dns: Dns) {
    let zone = ZoneWriter {
        cfg: dns.zone.load().config().clone(),
        dns: dns.clone(),
        services: BTreeMap::new(),
        slices: HashMap::new(),
        pods: HashMap::new(),
    };
    crate::informer::run(store, zone, &dns.revision).await
}

/// The zone's writer: the objects it is built from.
struct ZoneWriter {
    dns: Dns,
    cfg: Config,
    services: BTreeMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
    /// Of a pod, only its namespace and addresses count.
    pods: HashMap<Key, Pod>,
}

/// A pod as the zone sees it: its namespace and its addresses.
fn pod_view(p: &Pod) -> Pod {
    let mut view = Pod::default();
    view.metadata.namespace = p.metadata.namespace.clone();
    view.status = p
        .status
        .as_ref()
        .map(|s| k8s_openapi::api::core::v1::PodStatus {
            pod_ip: s.pod_ip.clone(),
            pod_ips: s.pod_ips.clone(),
            ..Default::default()
        });
    view
}

#[async_trait::async_trait]
impl Reconcile for ZoneWriter {
    /// The zone is rebuilt whole (it takes about a millisecond per 1,000 Services).
    type Key = ();

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Service, Kind::EndpointSlice, Kind::Pod]
    }

    /// The first build is due even from an empty store: until it, names are SERVFAIL.
    fn unfinished(&self) -> bool {
        !self.dns.zone.load().synced
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<()>) {
        let deleted = event.kind == EventType::Deleted;
        let key = (
            event.object.namespace().to_string(),
            event.object.name().to_string(),
        );
        match (event.object, deleted) {
            (Object::Service(_), true) => {
                self.services.remove(&key);
            }
            (Object::Service(s), false) => {
                self.services.insert(key, s);
            }
            (Object::EndpointSlice(_), true) => {
                self.slices.remove(&key);
            }
            (Object::EndpointSlice(s), false) => {
                self.slices.insert(key, s);
            }
            (Object::Pod(_), true) => {
                self.pods.remove(&key);
            }
            (Object::Pod(p), false) => {
                // Status changes that move no address change no answer.
                let view = pod_view(&p);
                if self.pods.get(&key) == Some(&view) {
                    return;
                }
                self.pods.insert(key, view);
            }
            _ => return,
        }
        dirty.insert(());
    }

    async fn reconcile(&mut self, _: BTreeSet<()>, _: u64) -> Result<(), BTreeSet<()>> {
        let objects = Objects {
            services: self.services.values().collect(),
            slices: self.slices.values().collect(),
            pods: self.pods.values().collect(),
            namespaces: Vec::new(),
        };
        let zone = Zone::build(&self.cfg, objects, serial());
        self.dns.zone.store(Arc::new(zone));
        Ok(())
    }
}
