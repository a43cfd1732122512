//! The cluster DNS: records computed from the store ([`records`]), a hickory-server
//! handler answering from the latest snapshot ([`handler`]), and the server of each
//! kube-dns pod ([`serve`]). [`run`] keeps the snapshot current.

pub mod addon;
pub mod handler;
pub mod pod_files;
pub mod records;
pub mod serve;
pub mod tcp;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::api::{EventType, Object, Store};
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
    let cfg = dns.zone.load().config().clone();
    let mut revision = store.subscribe();
    let (initial, mut events) = store.watch(None, None);
    let mut services: BTreeMap<Key, Service> = BTreeMap::new();
    let mut slices: HashMap<Key, EndpointSlice> = HashMap::new();
    let take = |obj: Object,
                deleted: bool,
                services: &mut BTreeMap<Key, Service>,
                slices: &mut HashMap<Key, EndpointSlice>|
     -> bool {
        let key = (obj.namespace().to_string(), obj.name().to_string());
        match obj {
            Object::Service(s) => {
                if deleted {
                    services.remove(&key);
                } else {
                    services.insert(key, s);
                }
                true
            }
            Object::EndpointSlice(s) => {
                if deleted {
                    slices.remove(&key);
                } else {
                    slices.insert(key, s);
                }
                true
            }
            _ => false,
        }
    };
    let mut changed = false;
    for obj in initial {
        changed |= take(obj, false, &mut services, &mut slices);
    }
    loop {
        // The revision first: every write up to it has its events queued already.
        let seen = *revision.borrow_and_update();
        while let Ok(ev) = events.try_recv() {
            let deleted = ev.kind == EventType::Deleted;
            changed |= take(ev.object, deleted, &mut services, &mut slices);
        }
        if changed {
            let zone = Zone::build(&cfg, services.values(), slices.values(), serial());
            dns.zone.store(Arc::new(zone));
            changed = false;
        }
        dns.revision.send_replace(seen);
        // An event, or the revision moving on: a write's events may have been taken
        // above before its revision was published.
        tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => {
                    let deleted = ev.kind == EventType::Deleted;
                    changed |= take(ev.object, deleted, &mut services, &mut slices);
                }
                None => return,
            },
            r = revision.changed() => if r.is_err() { return },
        }
    }
}
