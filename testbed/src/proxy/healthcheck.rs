//! kube-proxy's service health check servers (upstream's `pkg/proxy/healthcheck`):
//! for each LoadBalancer Service with `externalTrafficPolicy: Local`, an HTTP server
//! on its `healthCheckNodePort` on every node, which a cloud load balancer asks
//! whether to send traffic there: 200 with the number of the node's endpoints when it
//! has some, 503 when it has none.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::render::ServicePort;
use super::tracker::SvcKey;

/// A Service's health check: its name and how many endpoints this node has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

/// The answer to any request: status line and JSON body, as upstream's server writes
/// them.
pub fn answer(h: &Health) -> (u16, String) {
    let status = if h.local_endpoints > 0 { 200 } else { 503 };
    let body = serde_json::json!({
        "service": {"namespace": h.namespace, "name": h.name},
        "localEndpoints": h.local_endpoints,
        "serviceProxyHealthy": true,
    });
    (status, body.to_string())
}

/// What each health check port should say, from a node's service ports.
pub fn wanted<'a>(ports: impl Iterator<Item = &'a ServicePort>) -> BTreeMap<u16, Health> {
    let mut out: BTreeMap<u16, Health> = BTreeMap::new();
    for sp in ports.filter(|sp| sp.health_check_node_port != 0) {
        let h = out
            .entry(sp.health_check_node_port)
            .or_insert_with(|| Health {
                namespace: sp.namespace.clone(),
                name: sp.name.clone(),
                local_endpoints: 0,
            });
        h.local_endpoints = h.local_endpoints.max(sp.local_endpoints.len());
    }
    out
}

/// The servers of one node: one listener per port, answering from shared state.
pub struct Servers {
    netns: String,
    state: Arc<Mutex<BTreeMap<u16, Health>>>,
    tasks: BTreeMap<u16, tokio::task::JoinHandle<()>>,
    /// The ports each Service with one wants, so that a sync looks only at the
    /// Services that changed.
    by_service: BTreeMap<SvcKey, BTreeMap<u16, Health>>,
}

impl Servers {
    pub fn new(netns: &str) -> Servers {
        Servers {
            netns: netns.to_string(),
            state: Arc::default(),
            tasks: BTreeMap::new(),
            by_service: BTreeMap::new(),
        }
    }

    /// Takes what the Services that changed want now (each from its own service
    /// ports, nothing when it is gone) and serves what all want.
    pub fn update_services(
        &mut self,
        changed: impl IntoIterator<Item = (SvcKey, BTreeMap<u16, Health>)>,
    ) {
        let mut touched = false;
        for (svc, ports) in changed {
            touched |= if ports.is_empty() {
                self.by_service.remove(&svc).is_some()
            } else {
                self.by_service.insert(svc, ports.clone()) != Some(ports)
            };
        }
        if touched {
            let all = self.by_service.values().flat_map(|m| m.clone()).collect();
            self.update(all);
        }
    }

    /// Serves exactly `wanted`: new ports are bound in the node, gone ones closed.
    pub fn update(&mut self, wanted: BTreeMap<u16, Health>) {
        let gone: Vec<u16> = self
            .tasks
            .keys()
            .filter(|p| !wanted.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            if let Some(t) = self.tasks.remove(&p) {
                t.abort();
            }
        }
        for port in wanted.keys() {
            if self.tasks.contains_key(port) {
                continue;
            }
            let address = SocketAddr::from(([0, 0, 0, 0], *port));
            match crate::netns::tcp_listener_in(&self.netns, address) {
                Ok(l) => {
                    let state = self.state.clone();
                    let port = *port;
                    self.tasks.insert(port, tokio::spawn(serve(l, port, state)));
                }
                Err(e) => tracing::warn!(netns = self.netns, port, "health check port: {e}"),
            }
        }
        *self.state.lock().expect("health state lock") = wanted;
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for t in self.tasks.values() {
            t.abort();
        }
    }
}

/// Bounds on one request: its head, and how long it may take.
const MAX_REQUEST: usize = 8192;
const REQUEST_TIME: Duration = Duration::from_secs(2);

async fn serve(listener: TcpListener, port: u16, state: Arc<Mutex<BTreeMap<u16, Health>>>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut n = 0;
            let read = async {
                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k,
                    }
                }
            };
            if tokio::time::timeout(REQUEST_TIME, read).await.is_err() {
                return;
            }
            let health = state.lock().expect("health state lock").get(&port).cloned();
            let Some(h) = health else { return };
            let (status, body) = answer(&h);
            let reason = if status == 200 {
                "OK"
            } else {
                "Service Unavailable"
            };
            let reply = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Load-Balancing-Endpoint-Weight: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                h.local_endpoints,
                body.len()
            );
            let _ = conn.write_all(reply.as_bytes()).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_upstreams() {
        let mut h = Health {
            namespace: "ns2".into(),
            name: "svc2".into(),
            local_endpoints: 2,
        };
        assert_eq!(
            answer(&h),
            (200, r#"{"localEndpoints":2,"service":{"name":"svc2","namespace":"ns2"},"serviceProxyHealthy":true}"#.into())
        );
        h.local_endpoints = 0;
        assert_eq!(answer(&h).0, 503);
    }
}
