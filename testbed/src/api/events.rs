//! Events: what the control plane did, as `Event` objects (`kubectl get events -w`,
//! the Events of `kubectl describe`). A repeated event (same object, reason, source
//! and message) counts up instead of piling up, as client-go's correlator does; an
//! event [`Recorder::update`]s in place when only its latest message matters (a node's
//! proxy sync). At most [`MAX`] are kept: the oldest go first (the API server keeps
//! them an hour).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

use super::object::{Key, Kind, Object};
use super::store::{now, Store, Tx};

/// The most events a testbed keeps.
pub const MAX: usize = 1000;

/// Who reports: a component (`kubelet`, `kube-proxy`, `kube-apiserver`), on a host.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    pub component: &'a str,
    pub host: Option<&'a str>,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Normal,
    Warning,
}

/// The reference to `o` an event names.
pub fn reference(o: &Object) -> ObjectReference {
    let m = o.meta();
    ObjectReference {
        api_version: Some(o.kind().api_version().into()),
        kind: Some(o.kind().to_string()),
        namespace: m.namespace.clone(),
        name: m.name.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        field_path: None,
    }
}

/// A reference by kind and name alone (an object that is not stored: one refused,
/// or a node).
pub fn reference_to(
    kind: &str,
    api_version: &str,
    namespace: Option<&str>,
    name: &str,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        namespace: namespace.map(str::to_string),
        name: Some(name.into()),
        ..Default::default()
    }
}

/// One event to record.
pub struct Record<'a> {
    pub about: ObjectReference,
    pub type_: Type,
    pub reason: &'a str,
    pub message: String,
    pub source: Source<'a>,
}

fn same_subject(e: &Event, r: &Record) -> bool {
    let (a, b) = (&e.involved_object, &r.about);
    a.kind == b.kind
        && a.namespace == b.namespace
        && a.name == b.name
        && a.uid == b.uid
        && e.reason.as_deref() == Some(r.reason)
        && e.source.as_ref().and_then(|s| s.component.as_deref()) == Some(r.source.component)
        && e.source.as_ref().and_then(|s| s.host.as_deref()) == r.source.host
}

/// Records `r` in a write of the store: counts up a matching event (same message,
/// or any message when `replace` says the latest one is what matters), else adds one.
pub fn record_in(tx: &mut Tx, r: Record, replace: bool) {
    let ns = r
        .about
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into());
    let t = now();
    let existing = tx
        .list(Kind::Event)
        .filter_map(|o| match o {
            Object::Event(e) => Some(e),
            _ => None,
        })
        .find(|e| {
            e.metadata.namespace.as_deref() == Some(&ns)
                && same_subject(e, &r)
                && (replace || e.message.as_deref() == Some(r.message.as_str()))
        })
        .cloned();
    let event = match existing {
        Some(mut e) => {
            e.count = Some(e.count.unwrap_or(1) + 1);
            e.last_timestamp = Some(t);
            e.message = Some(r.message);
            e
        }
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let name = format!("{}.{nanos:x}", r.about.name.as_deref().unwrap_or("event"));
            Event {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(ns),
                    ..Default::default()
                },
                involved_object: r.about,
                reason: Some(r.reason.into()),
                message: Some(r.message),
                type_: Some(
                    match r.type_ {
                        Type::Normal => "Normal",
                        Type::Warning => "Warning",
                    }
                    .into(),
                ),
                source: Some(EventSource {
                    component: Some(r.source.component.into()),
                    host: r.source.host.map(str::to_string),
                }),
                reporting_component: Some(r.source.component.into()),
                reporting_instance: r.source.host.map(str::to_string),
                first_timestamp: Some(t.clone()),
                last_timestamp: Some(t.clone()),
                event_time: None::<MicroTime>,
                count: Some(1),
                ..Default::default()
            }
        }
    };
    tx.put(Object::Event(event));
    prune(tx);
}

/// Drops the oldest events past [`MAX`].
fn prune(tx: &mut Tx) {
    let mut all: Vec<(u64, Key)> = tx
        .list(Kind::Event)
        .map(|o| (o.resource_version(), o.key()))
        .collect();
    if all.len() <= MAX {
        return;
    }
    all.sort();
    let extra = all.len() - MAX;
    for (_, key) in all.into_iter().take(extra) {
        tx.delete(&key);
    }
}

/// The API server, as the source of its events.
pub const API_SERVER: Source = Source {
    component: "kube-apiserver",
    host: None,
};

/// A Service the API server created or changed, as an event: its ClusterIP
/// allocated, or kept.
pub fn service_written(tx: &mut Tx, stored: &Object, created: bool) {
    let Object::Service(s) = stored else {
        return;
    };
    let spec = s.spec.clone().unwrap_or_default();
    let address = match (spec.type_.as_deref(), spec.cluster_ip.as_deref()) {
        (Some("ExternalName"), _) => format!(
            "ExternalName {}, no ClusterIP",
            spec.external_name.unwrap_or_default()
        ),
        (_, Some("None")) => "headless, no ClusterIP".to_string(),
        (_, Some(ip)) => format!("ClusterIP {ip}"),
        _ => "no ClusterIP".to_string(),
    };
    let (reason, message) = if created {
        (
            "Created",
            format!("admitted and stored; {address} allocated"),
        )
    } else {
        ("Updated", format!("admitted and stored; {address}"))
    };
    record_in(
        tx,
        Record {
            about: reference(stored),
            type_: Type::Normal,
            reason,
            message,
            source: API_SERVER,
        },
        false,
    );
}

/// The cluster's Warning events, oldest first, as one line each: `REASON
/// kind/name: message`, with `(×N)` for a repeated one; the last `most` of them.
pub fn warnings(store: &Store, most: usize) -> Vec<String> {
    let mut all: Vec<(u64, String)> = store
        .list(Kind::Event, None)
        .into_iter()
        .filter_map(|o| {
            let rv = o.resource_version();
            let Object::Event(e) = o else { return None };
            if e.type_.as_deref() != Some("Warning") {
                return None;
            }
            let about = &e.involved_object;
            let kind = about.kind.as_deref().unwrap_or("object").to_lowercase();
            let name = about.name.as_deref().unwrap_or("?");
            let times = match e.count {
                Some(n) if n > 1 => format!(" (\u{d7}{n})"),
                _ => String::new(),
            };
            let reason = e.reason.as_deref().unwrap_or("");
            let message = e.message.as_deref().unwrap_or("");
            Some((rv, format!("{reason} {kind}/{name}: {message}{times}")))
        })
        .collect();
    all.sort();
    let skip = all.len().saturating_sub(most);
    all.into_iter().skip(skip).map(|(_, l)| l).collect()
}

/// Records events through a store.
#[derive(Clone)]
pub struct Recorder {
    store: std::sync::Arc<Store>,
}

impl Recorder {
    pub fn new(store: std::sync::Arc<Store>) -> Recorder {
        Recorder { store }
    }

    pub fn record(&self, r: Record) {
        self.store.write(|tx| record_in(tx, r, false));
    }

    /// Records `r`, replacing the message of the event it repeats.
    pub fn update(&self, r: Record) {
        self.store.write(|tx| record_in(tx, r, true));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(message: &str) -> Record<'static> {
        Record {
            about: reference_to("Service", "v1", Some("default"), "web"),
            type_: Type::Normal,
            reason: "Synced",
            message: message.into(),
            source: Source {
                component: "kube-proxy",
                host: Some("node-1"),
            },
        }
    }

    fn events(store: &Store) -> Vec<Event> {
        store
            .list(Kind::Event, None)
            .into_iter()
            .filter_map(|o| match o {
                Object::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn warnings_are_the_latest_warning_events_one_line_each() {
        let store = std::sync::Arc::new(Store::default());
        let r = Recorder::new(store.clone());
        let warn = |reason, message: &str| Record {
            type_: Type::Warning,
            reason,
            ..rec(message)
        };
        r.record(warn("First", "one"));
        r.record(rec("normal events are left out"));
        r.record(warn("Second", "two"));
        r.record(warn("Second", "two"));
        r.record(warn("Third", "three"));
        assert_eq!(
            warnings(&store, 2),
            [
                "Second service/web: two (\u{d7}2)",
                "Third service/web: three"
            ]
        );
        assert_eq!(warnings(&store, 8).len(), 3);
    }

    #[test]
    fn a_repeated_event_counts_up_and_an_update_replaces_the_message() {
        let store = std::sync::Arc::new(Store::default());
        let r = Recorder::new(store.clone());
        r.record(rec("a"));
        r.record(rec("a"));
        r.record(rec("b"));
        let e = events(&store);
        assert_eq!(e.len(), 2);
        assert_eq!(e.iter().map(|e| e.count.unwrap()).sum::<i32>(), 3);
        r.update(rec("c"));
        let e = events(&store);
        assert_eq!(e.len(), 2, "an update changes one in place");
        assert!(e.iter().any(|e| e.message.as_deref() == Some("c")));
        assert_eq!(e[0].type_.as_deref(), Some("Normal"));
        assert_eq!(e[0].metadata.namespace.as_deref(), Some("default"));
    }

    #[test]
    fn the_oldest_go_past_the_bound() {
        let store = std::sync::Arc::new(Store::default());
        let r = Recorder::new(store.clone());
        for i in 0..MAX + 5 {
            r.record(rec(&i.to_string()));
        }
        let e = events(&store);
        assert_eq!(e.len(), MAX);
        assert!(!e.iter().any(|e| e.message.as_deref() == Some("0")));
    }
}
