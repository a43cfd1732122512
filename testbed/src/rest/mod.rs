//! The Kubernetes REST API, a second door to the testbed's one API server: HTTPS
//! with the testbed's own CA on a loopback port, so kubectl, client-go, kube-rs and
//! the Python client work against a testbed as they do against a cluster. Every write
//! goes through [`crate::api::server::Api`]: admission, ClusterIP allocation and the
//! limits are where they are for the CLI and scenarios.
//!
//! It listens on a loopback port (the owner's kubeconfig names it) and inside the
//! testbed, on the first node's address, port 6443: the endpoint of the
//! `kubernetes` Service, so pods reach it at `https://kubernetes.default.svc`.
//!
//! Who may call: the owner's client certificate (`kubernetes-admin`, in the
//! kubeconfig only the owner and root can read), and pods with the ServiceAccount
//! token the kubelet gave them (see [`authz`] for what each may do). Anyone else is
//! answered `401 Unauthorized`, as an API server with anonymous access off answers,
//! and the refusal is logged.

pub mod authz;
pub mod exec;
pub mod handler;
pub mod local;
pub mod logs;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod resources;
pub mod schema;
pub mod select;
pub mod status;
pub mod table;
pub mod watch;
pub mod write;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use hyper::body::Bytes;
use tokio::net::TcpListener;

use crate::api::refusals::Refusals;
use crate::api::server::Api;
use crate::api::tokens::{ServiceAccounts, Subject};
use crate::api::{Key, Kind};

pub use pki::Pki;

/// A response body: whole, or a stream (a watch).
pub type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Bounds on what the REST door serves, as the API server bounds its own.
pub mod limits {
    use std::time::Duration;
    /// Connections served at once; more wait in the kernel's backlog.
    pub const CONNECTIONS: usize = 4096;
    /// A request body (the API server's limit is 3 MiB per object; a list of
    /// manifests is sent one object per request).
    pub const BODY_BYTES: usize = 3 << 20;
    /// A TLS handshake or a request's headers that take longer are dropped.
    pub const HANDSHAKE: Duration = Duration::from_secs(10);
    /// Changes queued for one watch that does not read, before it is closed.
    pub const WATCH_BUFFER: usize = 10_000;
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum User {
    /// The owner's certificate: every verb on everything.
    Admin,
    /// A pod's ServiceAccount token.
    ServiceAccount(Subject),
    /// No credentials the server knows.
    Anonymous,
}

/// The testbed a door serves.
pub struct Testbed {
    pub name: String,
    pub exe: std::path::PathBuf,
    pub owner_uid: u32,
    /// Each node's kube-proxy as it is now (`testbed get nodes`).
    pub nodes: NodesFn,
}

/// Reports the nodes and their kube-proxies' state.
pub type NodesFn = Arc<dyn Fn() -> Vec<crate::proxy::node::NodeStatus> + Send + Sync>;

/// What the REST door serves with.
pub struct Door {
    pub api: Arc<Api>,
    pub pki: Pki,
    /// The pods' tokens, checked on every request that carries one.
    pub accounts: Arc<ServiceAccounts>,
    /// The testbed's name, the `testbed` program and the owner: `exec` runs commands
    /// in pods through `testbed exec`, as the kubelet starts containers.
    pub testbed: String,
    pub exe: std::path::PathBuf,
    pub owner_uid: u32,
    pub nodes: NodesFn,
    /// `https://127.0.0.1:PORT`, as discovery reports it.
    pub address: String,
    refusals: Mutex<Refusals>,
}

impl Door {
    pub fn new(
        api: Arc<Api>,
        pki: Pki,
        accounts: Arc<ServiceAccounts>,
        address: String,
        testbed: Testbed,
    ) -> Door {
        Door {
            api,
            pki,
            accounts,
            testbed: testbed.name,
            exe: testbed.exe,
            owner_uid: testbed.owner_uid,
            nodes: testbed.nodes,
            address,
            refusals: Mutex::new(Refusals::default()),
        }
    }

    /// Logs a refused request (a few lines, however many are refused).
    pub fn log_refusal(&self, line: &str) {
        if let Some(line) = self.refusals.lock().expect("refusals").note(line) {
            tracing::warn!("{line}");
            eprintln!("{line}");
        }
    }

    fn user(&self, certs: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> User {
        match certs.and_then(|c| c.first()) {
            Some(c) if c.as_ref() == self.pki.admin_der.as_ref() => User::Admin,
            _ => User::Anonymous,
        }
    }

    /// Who a request is from: its connection's certificate, else its bearer token,
    /// valid while the pod it was issued to exists (a bound token).
    pub fn authenticate(&self, by_cert: &User, headers: &http::HeaderMap) -> User {
        if *by_cert != User::Anonymous {
            return by_cert.clone();
        }
        let token = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let Some(subject) = token.and_then(|t| self.accounts.tokens.verify(t.trim())) else {
            return User::Anonymous;
        };
        let pod = Key::new(Kind::Pod, &subject.namespace, &subject.pod);
        if self.api.store.read(|tx| tx.get(&pod).is_some()) {
            User::ServiceAccount(subject)
        } else {
            User::Anonymous
        }
    }
}

/// Binds the API's port on loopback (a free one the kernel picks).
pub async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Binds `address` inside the network namespace `netns` (a node's).
pub fn bind_in(netns: &str, address: SocketAddr) -> std::io::Result<TcpListener> {
    crate::netns::tcp_listener_in(netns, address)
}

/// Serves the REST API on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, door: Arc<Door>) {
    let config = match door.pki.server_config() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("api: cannot serve HTTPS: {e}");
            return;
        }
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits::CONNECTIONS));
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => {
                backoff = Duration::from_millis(5);
                c
            }
            Err(e) => {
                door.log_refusal(&format!("api: accept: {e}"));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let (door, acceptor) = (door.clone(), acceptor.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(Ok(tls)) = tokio::time::timeout(limits::HANDSHAKE, acceptor.accept(tcp)).await
            else {
                return;
            };
            let user = door.user(tls.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |req| {
                let door = door.clone();
                let user = user.clone();
                let peer = peer.to_string();
                async move {
                    Ok::<_, std::convert::Infallible>(handler::handle(door, user, &peer, req).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits::HANDSHAKE)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}
