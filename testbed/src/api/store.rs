//! The cluster's data store: every object with a `resourceVersion` from one counter,
//! and watchers that see every change, in order. Controllers that only need "something
//! changed, look again" subscribe to the revision instead.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::object::{Key, Kind, Object};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

/// One change, as a Kubernetes watch reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub object: Object,
}

struct Watcher {
    kinds: Vec<Kind>,
    namespace: Option<String>,
    tx: WatchTx,
}

/// The testbed's own controllers see every change; a client's watch has a bound, and
/// is dropped when it is full (it does not read).
enum WatchTx {
    All(mpsc::UnboundedSender<Event>),
    Bounded(mpsc::Sender<Event>),
}

impl WatchTx {
    fn send(&self, e: &Event) -> bool {
        match self {
            WatchTx::All(tx) => tx.send(e.clone()).is_ok(),
            WatchTx::Bounded(tx) => tx.try_send(e.clone()).is_ok(),
        }
    }
}

#[derive(Default)]
struct Inner {
    objects: BTreeMap<Key, Object>,
    rv: u64,
    uid: u64,
    watchers: Vec<Watcher>,
    /// The latest changes, oldest first, for a watch that starts from a resource
    /// version (as the API server's watch cache keeps them).
    history: VecDeque<Event>,
    /// Every change after this resource version is in `history`.
    history_from: u64,
}

/// Changes kept for watches that start from a resource version; one from before them
/// is told "410 Gone", as the API server's watch cache answers.
pub const HISTORY: usize = 10_000;

/// A watch asked to start before the oldest change kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooOld {
    /// The oldest resource version a watch may start from now.
    pub oldest: u64,
}

pub struct Store {
    inner: Mutex<Inner>,
    revision: watch::Sender<u64>,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            inner: Mutex::default(),
            revision: watch::channel(0).0,
        }
    }
}

/// A batch of writes made under one lock: all are seen at once, in order.
pub struct Tx<'a> {
    inner: &'a mut Inner,
    events: Vec<Event>,
}

impl Tx<'_> {
    pub fn get(&self, key: &Key) -> Option<&Object> {
        self.inner.objects.get(key)
    }

    pub fn list(&self, kind: Kind) -> impl Iterator<Item = &Object> {
        let start = Key::new(kind, "", "");
        self.inner
            .objects
            .range(start..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Creates or replaces `obj`, giving it the next resource version (and a uid and
    /// creation time when it is new). Returns the stored object.
    pub fn put(&mut self, mut obj: Object) -> Object {
        let key = obj.key();
        self.inner.rv += 1;
        let rv = self.inner.rv;
        let old = self.inner.objects.get(&key);
        let kind = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        {
            let meta = obj.meta_mut();
            if let Some(old) = old {
                meta.uid = old.meta().uid.clone();
                meta.creation_timestamp = old.meta().creation_timestamp.clone();
            } else {
                self.inner.uid += 1;
                meta.uid = Some(format!("00000000-0000-4000-8000-{:012x}", self.inner.uid));
                meta.creation_timestamp = Some(now());
            }
            meta.namespace = key.kind.namespaced().then(|| key.namespace.clone());
            meta.resource_version = Some(rv.to_string());
        }
        self.inner.objects.insert(key, obj.clone());
        self.events.push(Event {
            kind,
            object: obj.clone(),
        });
        obj
    }

    pub fn delete(&mut self, key: &Key) -> Option<Object> {
        let mut obj = self.inner.objects.remove(key)?;
        self.inner.rv += 1;
        obj.meta_mut().resource_version = Some(self.inner.rv.to_string());
        self.events.push(Event {
            kind: EventType::Deleted,
            object: obj.clone(),
        });
        Some(obj)
    }
}

/// The time now, as Kubernetes objects carry it (whole seconds).
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default(),
    )
}

impl Store {
    /// Runs `f` with the store locked; its writes reach watchers together, in order.
    pub fn write<R>(&self, f: impl FnOnce(&mut Tx) -> R) -> R {
        let mut inner = self.inner.lock().expect("store lock");
        let mut tx = Tx {
            inner: &mut inner,
            events: Vec::new(),
        };
        let out = f(&mut tx);
        let events = std::mem::take(&mut tx.events);
        if !events.is_empty() {
            for e in &events {
                if inner.history.len() == HISTORY {
                    if let Some(old) = inner.history.pop_front() {
                        inner.history_from = old.object.resource_version();
                    }
                }
                inner.history.push_back(e.clone());
            }
            inner.watchers.retain(|w| {
                events
                    .iter()
                    .filter(|e| {
                        w.kinds.contains(&e.object.kind())
                            && w.namespace
                                .as_deref()
                                .is_none_or(|n| n == e.object.namespace())
                    })
                    .all(|e| w.tx.send(e))
            });
            let rv = inner.rv;
            self.revision.send_replace(rv);
        }
        out
    }

    /// Runs `f` on the objects as they are now.
    pub fn read<R>(&self, f: impl FnOnce(&Tx) -> R) -> R {
        let mut inner = self.inner.lock().expect("store lock");
        let tx = Tx {
            inner: &mut inner,
            events: Vec::new(),
        };
        f(&tx)
    }

    pub fn get(&self, key: &Key) -> Option<Object> {
        self.read(|tx| tx.get(key).cloned())
    }

    pub fn list(&self, kind: Kind, namespace: Option<&str>) -> Vec<Object> {
        self.read(|tx| {
            tx.list(kind)
                .filter(|o| namespace.is_none_or(|n| n == o.namespace()))
                .cloned()
                .collect()
        })
    }

    /// The objects of `kinds` (in `namespace`, or all) as they are now, and every
    /// change to them after that, in order.
    pub fn watch(
        &self,
        kinds: &[Kind],
        namespace: Option<&str>,
    ) -> (Vec<Object>, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let now = self.watch_with(kinds, namespace, WatchTx::All(tx));
        (now, rx)
    }

    /// [`Store::watch`] for a client: at most `capacity` changes wait for it; when
    /// more would, the watch is dropped (the receiver ends after what it holds).
    pub fn watch_bounded(
        &self,
        kinds: &[Kind],
        namespace: Option<&str>,
        capacity: usize,
    ) -> (Vec<Object>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let now = self.watch_with(kinds, namespace, WatchTx::Bounded(tx));
        (now, rx)
    }

    /// A client's watch from resource version `since`: the kept changes after it to
    /// `kinds` (in `namespace`), then every later one, at most `capacity` waiting.
    pub fn watch_since(
        &self,
        kinds: &[Kind],
        namespace: Option<&str>,
        since: u64,
        capacity: usize,
    ) -> Result<(Vec<Event>, mpsc::Receiver<Event>), TooOld> {
        let mut inner = self.inner.lock().expect("store lock");
        if since < inner.history_from {
            return Err(TooOld {
                oldest: inner.history_from,
            });
        }
        let matches = |e: &Event| {
            kinds.contains(&e.object.kind()) && namespace.is_none_or(|n| n == e.object.namespace())
        };
        let past = inner
            .history
            .iter()
            .filter(|e| e.object.resource_version() > since && matches(e))
            .cloned()
            .collect();
        let (tx, rx) = mpsc::channel(capacity.max(1));
        inner.watchers.push(Watcher {
            kinds: kinds.to_vec(),
            namespace: namespace.map(str::to_string),
            tx: WatchTx::Bounded(tx),
        });
        Ok((past, rx))
    }

    /// The objects of `kind` (in `namespace`, or all) and the resource version they
    /// are as of.
    pub fn list_at(&self, kind: Kind, namespace: Option<&str>) -> (Vec<Object>, u64) {
        self.read(|tx| {
            let items = tx
                .list(kind)
                .filter(|o| namespace.is_none_or(|n| n == o.namespace()))
                .cloned()
                .collect();
            (items, tx.inner.rv)
        })
    }

    fn watch_with(&self, kinds: &[Kind], namespace: Option<&str>, tx: WatchTx) -> Vec<Object> {
        let mut inner = self.inner.lock().expect("store lock");
        let mut now = Vec::new();
        for &kind in kinds {
            let start = Key::new(kind, "", "");
            now.extend(
                inner
                    .objects
                    .range(start..)
                    .take_while(|(k, _)| k.kind == kind)
                    .map(|(_, o)| o)
                    .filter(|o| namespace.is_none_or(|n| n == o.namespace()))
                    .cloned(),
            );
        }
        inner.watchers.push(Watcher {
            kinds: kinds.to_vec(),
            namespace: namespace.map(str::to_string),
            tx,
        });
        now
    }

    /// The latest resource version, changing whenever anything is written.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }
}
