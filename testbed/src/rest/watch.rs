//! Watches: a chunked stream of `{"type": ..., "object": ...}` lines from a resource
//! version (410 Gone as an ERROR event when it is older than the changes kept),
//! filtered by the selectors (an object that stops matching is DELETED for this
//! watch, as the watch cache says it), with bookmarks and `timeoutSeconds`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::handler::{include, selectors, Query, ResourcePath};
use super::select::{Fields, Labels};
use super::status::{self, Refusal};
use super::table::{self, Include};
use super::{limits, Body, Door};
use crate::api::{Event, EventType, Key, Kind, Object};

/// How often a watch that asked for them gets a BOOKMARK with the latest version.
const BOOKMARK_EVERY: Duration = Duration::from_secs(15);

type Chunk = Result<Frame<Bytes>, Infallible>;

fn line(kind: &str, object: Value) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("events serialize");
    v.push(b'\n');
    Bytes::from(v)
}

/// One watch's stream: what it selects, how it renders, and where it stands.
struct Feed {
    kind: Kind,
    kind_name: &'static str,
    group_version: String,
    labels: Labels,
    fields: Fields,
    table: Option<Include>,
    bookmarks: bool,
    initial_end: bool,
    deadline: Option<tokio::time::Instant>,
    /// The objects this watch has said exist (for DELETED when one stops matching).
    seen: BTreeSet<Key>,
    last_rv: u64,
}

pub fn watch(
    door: &Arc<Door>,
    t: &ResourcePath,
    q: &Query,
    table_out: bool,
) -> Result<Response<Body>, Refusal> {
    let (labels, fields) = selectors(t, q)?;
    let store = door.api.store.clone();
    let ns = t.namespace.as_deref();
    let since = q.get("resourceVersion").unwrap_or("0");
    let since: u64 = since
        .parse()
        .map_err(|_| status::bad_request(format!("invalid resource version {since:?}")))?;
    let mut feed = Feed {
        kind: t.res.kind,
        kind_name: t.res.kind_name,
        group_version: t.res.group_version(),
        labels,
        fields,
        table: table_out.then(|| include(q)),
        bookmarks: q.flag("allowWatchBookmarks"),
        initial_end: q.flag("sendInitialEvents") && q.flag("allowWatchBookmarks"),
        deadline: q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(|s| tokio::time::Instant::now() + Duration::from_secs(s)),
        seen: BTreeSet::new(),
        last_rv: since,
    };
    // The starting point: the objects as they are (a watch from 0), or the changes
    // after `since`.
    let (start, rx) = if since == 0 || q.flag("sendInitialEvents") {
        let (now, rv) = store.list_at(feed.kind, ns);
        let (_, rx) = store
            .watch_since(&[feed.kind], ns, rv, limits::WATCH_BUFFER)
            .expect("a watch from now is never too old");
        feed.last_rv = rv;
        let start = now
            .into_iter()
            .map(|object| Event {
                kind: EventType::Added,
                object,
            })
            .collect();
        (start, rx)
    } else {
        match store.watch_since(&[feed.kind], ns, since, limits::WATCH_BUFFER) {
            Ok((past, rx)) => {
                // The client knows the objects as of `since`: those there now and
                // not made since then.
                let made: BTreeSet<Key> = past
                    .iter()
                    .filter(|e| e.kind == EventType::Added)
                    .map(|e| e.object.key())
                    .collect();
                let (now, _) = store.list_at(feed.kind, ns);
                feed.seen = now
                    .iter()
                    .filter(|o| feed.selects(o))
                    .map(Object::key)
                    .filter(|k| !made.contains(k))
                    .collect();
                (past, rx)
            }
            Err(too_old) => {
                let gone = status::gone(since, too_old.oldest);
                let chunk: Chunk = Ok(Frame::data(line("ERROR", gone.body)));
                return Ok(stream_response(
                    StreamBody::new(futures::stream::iter([chunk])).boxed(),
                ));
            }
        }
    };
    let (tx, mut out) = mpsc::channel::<Chunk>(64);
    tokio::spawn(async move { feed.run(start, rx, tx).await });
    let stream = futures::stream::poll_fn(move |cx| out.poll_recv(cx));
    Ok(stream_response(StreamBody::new(stream).boxed()))
}

impl Feed {
    fn selects(&self, o: &Object) -> bool {
        self.labels.matches(o.meta().labels.as_ref()) && self.fields.matches(o)
    }

    /// The line for one change, as this watch sees it (none when it selects neither
    /// the object's old nor its new state).
    fn event(&mut self, e: Event) -> Option<Bytes> {
        let o = e.object;
        self.last_rv = self.last_rv.max(o.resource_version());
        let key = o.key();
        let matches = self.selects(&o);
        let was = self.seen.contains(&key);
        let ty = match (e.kind, matches, was) {
            (EventType::Added, true, _) => "ADDED",
            (EventType::Deleted, m, w) if m || w => "DELETED",
            (EventType::Modified, false, true) => "DELETED",
            (EventType::Modified, true, true) => "MODIFIED",
            (EventType::Modified, true, false) => "ADDED",
            _ => return None,
        };
        if ty == "DELETED" {
            self.seen.remove(&key);
        } else {
            self.seen.insert(key);
        }
        let object = match self.table {
            Some(include) => {
                let rv = o.meta().resource_version.clone().unwrap_or_default();
                table::table(self.kind, std::slice::from_ref(&o), &rv, include)
            }
            None => o.to_value(),
        };
        Some(line(ty, object))
    }

    fn bookmark(&self, initial_end: bool) -> Bytes {
        let mut meta = json!({ "resourceVersion": self.last_rv.to_string() });
        if initial_end {
            meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
        }
        line(
            "BOOKMARK",
            json!({ "kind": self.kind_name, "apiVersion": self.group_version, "metadata": meta }),
        )
    }

    /// Sends the start, then every change, until the client goes, the store drops
    /// the watch (it fell behind) or `timeoutSeconds` pass.
    async fn run(
        mut self,
        start: Vec<Event>,
        mut rx: mpsc::Receiver<Event>,
        tx: mpsc::Sender<Chunk>,
    ) {
        let send = |b: Bytes| tx.send(Ok(Frame::data(b)));
        for e in start {
            if let Some(b) = self.event(e) {
                if send(b).await.is_err() {
                    return;
                }
            }
        }
        if self.initial_end && send(self.bookmark(true)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        let deadline = self.deadline;
        let until = async move {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(until);
        loop {
            let line = tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.event(ev),
                    None => return,
                },
                _ = tick.tick(), if self.bookmarks => Some(self.bookmark(false)),
                _ = tx.closed() => return,
                _ = &mut until => return,
            };
            if let Some(b) = line {
                if send(b).await.is_err() {
                    return;
                }
            }
        }
    }
}

fn stream_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    *r.status_mut() = StatusCode::OK;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}
