//! `pods/log`: a container's log as `kubectl logs` reads it, whole or followed
//! (`follow=true` streams new lines until the pod goes or the client does), with
//! `tailLines`, `timestamps`, `sinceSeconds`/`sinceTime` and `limitBytes`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame};

use super::handler::{full, Query, ResourcePath};
use super::status::{self, Refusal, Target};
use super::{Body, Door};
use crate::api::{Key, Kind, Object};
use crate::kubelet::logs;

/// How often a followed log is read again.
const FOLLOW_EVERY: Duration = Duration::from_millis(200);

pub fn log(
    door: &Arc<Door>,
    t: &ResourcePath,
    name: &str,
    q: &Query,
) -> Result<Response<Body>, Refusal> {
    let ns = t.namespace.as_deref().unwrap_or("default");
    let target = Target {
        plural: "pods",
        group: "",
        kind: "Pod",
        name,
    };
    let Some(Object::Pod(pod)) = door.api.store.get(&Key::new(Kind::Pod, ns, name)) else {
        return Err(status::not_found(&target));
    };
    let names: Vec<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
        .collect();
    let container = match q.get("container") {
        Some(c) if names.iter().any(|n| n == c) => c.to_string(),
        Some(c) => {
            return Err(status::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )))
        }
        None if names.len() == 1 => names[0].clone(),
        None => {
            return Err(status::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            )))
        }
    };
    if q.flag("previous") {
        return Err(status::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{name}\" not found"
        )));
    }
    let query = query(q)?;
    let path = logs::path(&door.testbed, ns, name, &container);
    let text = logs::read(&path, &query);
    if !q.flag("follow") {
        return Ok(full(StatusCode::OK, "text/plain", text));
    }
    Ok(follow(path, text, query.timestamps))
}

/// What `kubectl logs` asks for, from the query.
fn query(q: &Query) -> Result<logs::Query, Refusal> {
    let num = |k: &str| -> Result<Option<i64>, Refusal> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| status::bad_request(format!("{k}={v:?} is not a number")))
            })
            .transpose()
    };
    let since = match (num("sinceSeconds")?, q.get("sinceTime")) {
        (Some(s), _) => Some(
            k8s_openapi::jiff::Timestamp::from_second(now_secs() - s)
                .map_err(|e| status::bad_request(e.to_string()))?,
        ),
        (None, Some(t)) => Some(
            t.parse()
                .map_err(|_| status::bad_request(format!("sinceTime={t:?} is not a time")))?,
        ),
        (None, None) => None,
    };
    Ok(logs::Query {
        tail_lines: num("tailLines")?.map(|n| n.max(0) as usize),
        timestamps: q.flag("timestamps"),
        since,
        limit_bytes: num("limitBytes")?.map(|n| n.max(0) as usize),
    })
}

/// A followed log: what is there, then what comes, until the log file goes (the
/// pod was deleted) or the client does.
fn follow(path: std::path::PathBuf, text: String, timestamps: bool) -> Response<Body> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(16);
    tokio::spawn(async move {
        let mut offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if tx.send(Ok(Frame::data(Bytes::from(text)))).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_EVERY) => {}
                _ = tx.closed() => return,
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                return;
            };
            if meta.len() < offset {
                offset = 0;
            }
            if meta.len() == offset {
                continue;
            }
            let Ok(all) = std::fs::read(&path) else {
                return;
            };
            let new = String::from_utf8_lossy(&all[offset as usize..]).into_owned();
            // Only whole lines; the rest waits for its end.
            let Some(end) = new.rfind('\n') else { continue };
            offset += end as u64 + 1;
            let q = logs::Query {
                timestamps,
                ..Default::default()
            };
            let out = logs::render(&new[..=end], &q);
            if tx.send(Ok(Frame::data(Bytes::from(out)))).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut r = Response::new(StreamBody::new(stream).boxed());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
