//! The cluster DNS: records computed from the store ([`records`]), a hickory-server
//! handler answering from the latest snapshot ([`handler`]), and the server of each
//! kube-dns pod ([`serve`]). [`run`] keeps the snapshot current.

pub mod addon;
pub mod client;
pub mod handler;
pub mod pod_files;
pub mod records;
pub mod serve;
pub mod tcp;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod upstream_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::{Event, EventType, Kind, Object, Store};
use crate::informer::Reconcile;
pub use records::{Config, Zone};

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
    pub fn new(cfg: &Config, upstream: Vec<SocketAddr>) -> Self {
        let empty: [&Service; 0] = [];
        let none: [&EndpointSlice; 0] = [];
        Dns {
            zone: Arc::new(ArcSwap::from_pointee(Zone::build(
                cfg,
                empty,
                none,
                serial(),
            ))),
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

/// Keeps `dns`'s zone equal to the store's Services and EndpointSlices: every batch
/// of changes builds a new snapshot and swaps it in; readers never wait.
pub async fn run(store: Arc<Store>, dns: Dns) {
    let zone = ZoneWriter {
        cfg: dns.zone.load().config().clone(),
        dns: dns.clone(),
        services: BTreeMap::new(),
        slices: HashMap::new(),
    };
    crate::informer::run(store, zone, &dns.revision).await
}

/// The zone's writer: the Services and EndpointSlices it is built from.
struct ZoneWriter {
    dns: Dns,
    cfg: Config,
    services: BTreeMap<Key, Service>,
    slices: HashMap<Key, EndpointSlice>,
}

#[async_trait::async_trait]
impl Reconcile for ZoneWriter {
    /// The zone is rebuilt whole (it takes about a millisecond per 1,000 Services).
    type Key = ();

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Service, Kind::EndpointSlice]
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
            _ => return,
        }
        dirty.insert(());
    }

    async fn reconcile(&mut self, _: BTreeSet<()>, _: u64) -> Result<(), BTreeSet<()>> {
        let zone = Zone::build(
            &self.cfg,
            self.services.values(),
            self.slices.values(),
            serial(),
        );
        self.dns.zone.store(Arc::new(zone));
        Ok(())
    }
}
