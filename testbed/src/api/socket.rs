//! The API server on a local socket, `/run/testbed/<name>/api.sock`: one JSON request
//! per line, one JSON response per line (a stream of them for a watch). Only root and
//! the testbed's owner may talk to it; anyone else is refused, and the refusal logged.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use super::object::{Key, Kind, Object};
use super::server::{Api, Applied, ObjectProblem};
use super::store::Event;

pub const SOCKET: &str = "api.sock";

pub fn socket_path(testbed: &str) -> PathBuf {
    crate::state::dir(testbed).join(SOCKET)
}

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

pub async fn serve(listener: UnixListener, owner_uid: u32, api: Arc<Api>, nodes: NodesFn) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            continue;
        };
        let uid = conn.peer_cred().map(|c| c.uid()).unwrap_or(u32::MAX);
        let (api, nodes) = (api.clone(), nodes.clone());
        tokio::spawn(async move {
            if uid != 0 && uid != owner_uid {
                tracing::warn!("api: refused a request from uid {uid}: only root and the owner (uid {owner_uid}) may use this testbed");
                eprintln!("api: refused a request from uid {uid}: only root and the owner (uid {owner_uid}) may use this testbed");
                let mut conn = conn;
                let r = error(format!(
                    "permission denied: uid {uid} is neither root nor the owner of this testbed (uid {owner_uid})"
                ));
                let _ = write(&mut conn, &r).await;
                return;
            }
            let _ = handle(conn, api, nodes).await;
        });
    }
}

async fn write(conn: &mut UnixStream, r: &Response) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(r).expect("responses serialize");
    line.push(b'\n');
    conn.write_all(&line).await
}

async fn handle(conn: UnixStream, api: Arc<Api>, nodes: NodesFn) -> std::io::Result<()> {
    let (read, mut conn_w) = conn.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Some(line) = lines.next_line().await? {
        let req: Request = match serde_json::from_str(&line) {
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
            let (now, mut rx) = api.store.watch(Some(kind), namespace.as_deref());
            let send = |r: Response| {
                let mut buf = serde_json::to_vec(&r).expect("serialize");
                buf.push(b'\n');
                buf
            };
            for o in now {
                let ev = Event {
                    kind: super::EventType::Added,
                    object: o,
                };
                conn_w
                    .write_all(&send(Response::Event { event: ev }))
                    .await?;
            }
            while let Some(ev) = rx.recv().await {
                conn_w
                    .write_all(&send(Response::Event { event: ev }))
                    .await?;
            }
            return Ok(());
        }
        let r = answer(&api, &nodes, req);
        let mut buf = serde_json::to_vec(&r).expect("serialize");
        buf.push(b'\n');
        conn_w.write_all(&buf).await?;
    }
    Ok(())
}

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
                let problem = |path: &str, message: String| ObjectProblem {
                    index: Some(i),
                    object: format!("{kind} {name}"),
                    path: path.into(),
                    message,
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
                    message: problems
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    problems,
                },
            }
        }
        Request::Nodes => Response::Nodes { nodes: nodes() },
        Request::Watch { .. } => unreachable!("handled by the connection"),
    }
}
