//! The API server on a local socket, `/run/testbed/<name>/api.sock`: one JSON request
//! per line, one JSON response per line (a stream of them for a watch). Only root and
//! the testbed's owner may talk to it; anyone else is refused, and the refusal logged.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::object::{Key, Kind, Object};
use super::server::{Api, Applied, ObjectProblem};
use super::store::Event;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    Apply {
        objects: Vec<Value>,
    },
    Get {
        kind: Kind,
        namespace: Option<String>,
        name: Option<String>,
    },
    Delete {
        kind: Kind,
        namespace: String,
        name: String,
    },
    Scale {
        namespace: String,
        name: String,
        replicas: i32,
    },
    Watch {
        kind: Kind,
        namespace: Option<String>,
    },
    Nodes,
}

/// A node as `testbed get nodes` shows it, with its kube-proxy's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    /// The store revision its rules reflect, and the store's own.
    pub synced_revision: u64,
    pub store_revision: u64,
    pub syncs: u64,
    pub last_sync_ms: f64,
    pub service_ports: usize,
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum Response {
    Applied {
        results: Vec<Applied>,
    },
    Objects {
        items: Vec<Object>,
    },
    Deleted {
        object: Object,
    },
    Event {
        event: Event,
    },
    Nodes {
        nodes: Vec<NodeStatus>,
    },
    Error {
        message: String,
        problems: Vec<ObjectProblem>,
    },
}

/// Reports the nodes for a `Nodes` request.
pub type NodesFn = Arc<dyn Fn() -> Vec<NodeStatus> + Send + Sync>;

fn error(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
        problems: Vec::new(),
    }
}

/// Binds the socket (mode 0666: the kernel's peer credentials decide who may talk).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(l)
}

/// Bounds on what one testbed's API socket serves, as the API server and CoreDNS
/// bound theirs. Each refusal says which limit it hit.
pub mod limits {
    use std::time::Duration;
    /// Connections served at once; the next is answered "too many connections" and
    /// closed (so the descriptors left keep the rest of the testbed working).
    pub const CONNECTIONS: usize = 4096;
    /// Of them, from one uid.
    pub const CONNECTIONS_PER_UID: usize = 3072;
    /// One request line: a manifest of 10,000 Services is about 4 MiB of JSON.
    pub const REQUEST_BYTES: usize = 16 << 20;
    /// A connection that sends no request for this long is closed (a watch is not idle).
    pub const IDLE: Duration = Duration::from_secs(60);
    /// Changes queued for one watcher that does not read; past them it is dropped
    /// with "too old resource version", as Kubernetes drops a slow watcher.
    pub const WATCH_BUFFER: usize = 10_000;
}

/// Counts refusals so a stranger who keeps knocking adds a log line now and then,
/// not one per connection.
#[derive(Default)]
pub struct Refusals {
    last_logged: Option<std::time::Instant>,
    unlogged: u64,
}

impl Refusals {
    /// The line to log for one more refusal, when one is due.
    pub fn note(&mut self, what: &str) -> Option<String> {
        let now = std::time::Instant::now();
        let due = self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10));
        if !due {
            self.unlogged += 1;
            return None;
        }
        self.last_logged = Some(now);
        let more = std::mem::take(&mut self.unlogged);
        Some(if more > 0 {
            format!("{what} (and {more} more refusals in the last 10 s)")
        } else {
            what.to_string()
        })
    }
}

// Long because it owns one connection's life (peer check, framing, the request size and
// rate limits, the watch hand-off) and those share the connection's state.
pub async fn serve(listener: UnixListener, owner_uid: u32, api: Arc<Api>, nodes: NodesFn) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    let open = Arc::new(Mutex::new(HashMap::<u32, usize>::new()));
    let refusals = Arc::new(Mutex::new(Refusals::default()));
    let mut backoff = std::time::Duration::from_millis(5);
    loop {
        let conn = match listener.accept().await {
            Ok((conn, _)) => {
                backoff = std::time::Duration::from_millis(5);
                conn
            }
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) and the like: wait, as Go's
                // net/http does, instead of spinning on a listener that stays readable.
                if let Some(line) = refusals
                    .lock()
                    .expect("refusals")
                    .note(&format!("api: accept: {e}"))
                {
                    eprintln!("{line}; retrying in {backoff:?}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                continue;
            }
        };
        let uid = conn.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let (api, nodes, open, refusals) =
            (api.clone(), nodes.clone(), open.clone(), refusals.clone());
        tokio::spawn(async move {
            let refusal = if uid != 0 && uid != owner_uid {
                Some(format!(
                    "permission denied: uid {uid} is neither root nor the owner of this testbed (uid {owner_uid})"
                ))
            } else {
                let mut open = open.lock().expect("connections");
                let total: usize = open.values().sum();
                let mine = open.get(&uid).copied().unwrap_or(0);
                if total >= limits::CONNECTIONS {
                    Some(format!(
                        "too many connections: this testbed serves at most {} at once",
                        limits::CONNECTIONS
                    ))
                } else if mine >= limits::CONNECTIONS_PER_UID {
                    Some(format!(
                        "too many connections from uid {uid}: at most {} at once",
                        limits::CONNECTIONS_PER_UID
                    ))
                } else {
                    *open.entry(uid).or_default() += 1;
                    None
                }
            };
            if let Some(why) = refusal {
                if let Some(line) = refusals
                    .lock()
                    .expect("refusals")
                    .note(&format!("api: refused a connection from uid {uid}: {why}"))
                {
                    tracing::warn!("{line}");
                    eprintln!("{line}");
                }
                let mut conn = conn;
                let _ = write(&mut conn, &error(why)).await;
                // Let the client's request arrive before closing, so it reads the
                // answer instead of a reset (bounded: a little, for a little while).
                let _ = conn.shutdown().await;
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(std::time::Duration::from_millis(200), async {
                    use tokio::io::AsyncReadExt;
                    let mut left: usize = 64 * 1024;
                    while left > 0 {
                        match conn.read(&mut sink).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => left = left.saturating_sub(n),
                        }
                    }
                })
                .await;
                return;
            }
            let _ = handle(conn, api, nodes).await;
            let mut open = open.lock().expect("connections");
            if let Some(n) = open.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&uid);
                }
            }
        });
    }
}

async fn write(conn: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("responses serialize");
    line.push(b'\n');
    conn.write_all(&line).await
}

/// Reads one request line of at most `max` bytes into `buf` (without its newline).
/// `Ok(false)` at the end of the stream; an error for a longer line.
async fn read_line_limited(
    r: &mut (impl tokio::io::AsyncBufRead + Unpin),
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<bool> {
    buf.clear();
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(!buf.is_empty());
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        if buf.len() + take > max + 1 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a request is larger than {} MiB, the most this API server reads",
                    max >> 20
                ),
            ));
        }
        buf.extend_from_slice(&chunk[..take]);
        r.consume(take);
        if done {
            buf.pop();
            return Ok(true);
        }
    }
}

async fn handle(conn: UnixStream, api: Arc<Api>, nodes: NodesFn) -> std::io::Result<()> {
    let (read, mut conn_w) = conn.into_split();
    let mut read = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        let got = match tokio::time::timeout(
            limits::IDLE,
            read_line_limited(&mut read, &mut line, limits::REQUEST_BYTES),
        )
        .await
        {
            Err(_idle) => return Ok(()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                let mut buf = serde_json::to_vec(&error(e.to_string())).expect("serialize");
                buf.push(b'\n');
                let _ = conn_w.write_all(&buf).await;
                return Ok(());
            }
            Ok(got) => got?,
        };
        if !got {
            return Ok(());
        }
        let req: Request = match serde_json::from_slice(&line) {
            Ok(r) => r,
            Err(e) => {
                let mut buf =
                    serde_json::to_vec(&error(format!("bad request: {e}"))).expect("serialize");
                buf.push(b'\n');
                conn_w.write_all(&buf).await?;
                continue;
            }
        };
        if let Request::Watch { kind, namespace } = req {
            let (now, mut rx) =
                api.store
                    .watch_bounded(&[kind], namespace.as_deref(), limits::WATCH_BUFFER);
            let send = |r: Response| {
                let mut buf = serde_json::to_vec(&r).expect("serialize");
                buf.push(b'\n');
                buf
            };
            // A watcher that stops reading blocks these writes: after `IDLE` it is
            // let go, with what it was sent so far.
            let stalled =
                || std::io::Error::new(std::io::ErrorKind::TimedOut, "watcher stopped reading");
            for o in now {
                let ev = Event {
                    kind: super::EventType::Added,
                    object: o,
                };
                tokio::time::timeout(
                    limits::IDLE,
                    conn_w.write_all(&send(Response::Event { event: ev })),
                )
                .await
                .map_err(|_| stalled())??;
            }
            while let Some(ev) = rx.recv().await {
                tokio::time::timeout(
                    limits::IDLE,
                    conn_w.write_all(&send(Response::Event { event: ev })),
                )
                .await
                .map_err(|_| stalled())??;
            }
            // The store dropped this watcher: it fell too far behind.
            let gone = error(format!(
                "too old resource version: this watch fell {} changes behind and was closed; watch again",
                limits::WATCH_BUFFER
            ));
            conn_w.write_all(&send(gone)).await?;
            return Ok(());
        }
        let r = answer(&api, &nodes, req);
        let mut buf = serde_json::to_vec(&r).expect("serialize");
        buf.push(b'\n');
        conn_w.write_all(&buf).await?;
    }
}

// Long because it is the API's dispatch: one arm per request, each a few lines.
fn answer(api: &Api, nodes: &NodesFn, req: Request) -> Response {
    match req {
        Request::Apply { objects } => {
            let mut decoded = Vec::new();
            let mut problems = Vec::new();
            for (i, v) in objects.into_iter().enumerate() {
                let kind = v
                    .get("kind")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = v
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                let object = if v.is_object() {
                    format!("{} {name}", if kind.is_empty() { "object" } else { &kind })
                } else {
                    format!("objects[{i}] (not a map)")
                };
                let problem = |path: &str, message: String| ObjectProblem {
                    index: Some(i),
                    object: object.clone(),
                    path: path.into(),
                    message,
                    reason: Default::default(),
                };
                let Some(k) = Kind::parse(&kind).filter(|_| !kind.is_empty()) else {
                    problems.push(problem(
                        "kind",
                        format!(
                            "{kind:?} is not a kind this testbed knows: Pod, Service, Deployment"
                        ),
                    ));
                    continue;
                };
                let want = k.api_version();
                let got = v
                    .get("apiVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if got != want {
                    problems.push(problem(
                        "apiVersion",
                        format!("{kind} is served as {want}, not {got:?}"),
                    ));
                    continue;
                }
                match Object::from_value(k, v) {
                    Ok(o) => decoded.push(o),
                    Err(e) => problems.push(problem("", e)),
                }
            }
            if !problems.is_empty() {
                return Response::Error {
                    message: "the request is invalid; nothing was changed".into(),
                    problems,
                };
            }
            match api.apply(decoded) {
                Ok(results) => Response::Applied { results },
                Err(problems) => Response::Error {
                    message: "admission refused the request; nothing was changed".into(),
                    problems,
                },
            }
        }
        Request::Get {
            kind,
            namespace,
            name,
        } => match name {
            Some(n) => {
                let key = Key::new(kind, namespace.as_deref().unwrap_or("default"), &n);
                match api.store.get(&key) {
                    Some(o) => Response::Objects { items: vec![o] },
                    None => error(format!(
                        "{} {:?} not found in namespace {}",
                        kind.plural(),
                        n,
                        key.namespace
                    )),
                }
            }
            None => Response::Objects {
                items: api.store.list(kind, namespace.as_deref()),
            },
        },
        Request::Delete {
            kind,
            namespace,
            name,
        } => match api.delete(&Key::new(kind, &namespace, &name)) {
            Ok(object) => Response::Deleted { object },
            Err(p) => Response::Error {
                message: p.to_string(),
                problems: vec![p],
            },
        },
        Request::Scale {
            namespace,
            name,
            replicas,
        } => {
            if replicas < 0 {
                return error(format!("--replicas {replicas} is negative"));
            }
            match api.scale(&namespace, &name, replicas) {
                Ok(a) => Response::Applied { results: vec![a] },
                Err(problems) => Response::Error {
                    message: super::server::joined(&problems),
                    problems,
                },
            }
        }
        Request::Nodes => Response::Nodes { nodes: nodes() },
        Request::Watch { .. } => unreachable!("handled by the connection"),
    }
}
