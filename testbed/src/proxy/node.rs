//! kube-proxy on one node, on the controller runtime: the [`Tracker`] turns Services
//! and EndpointSlices into service ports and changes, the node's [`ProxyBackend`]
//! turns each batch into one update, applied with one command inside the node's
//! namespace (through a [`NodeExec`]). UDP endpoints that go away have their conntrack
//! entries deleted, as kube-proxy does, or replies would keep going to a dead pod.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::tracker::{SvcKey, Tracker, UdpDest};
use super::{ProxyBackend, Writer};
use crate::api::{Event, Kind, Store};
use crate::informer::Reconcile;
use crate::kernel::exec::{CommandError, NodeExec, Nsenter};
use crate::netns;

/// A node as `testbed get nodes` shows it, with its kube-proxy's state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub ip: String,
    pub pod_cidr: String,
    /// Its kube-proxy's mode (`iptables`, `nftables`).
    #[serde(default)]
    pub mode: String,
    /// The store revision its rules reflect, and the store's own.
    pub synced_revision: u64,
    pub store_revision: u64,
    pub syncs: u64,
    pub last_sync_ms: f64,
    pub service_ports: usize,
    pub last_error: Option<String>,
}

/// What a node's kube-proxy last did.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    /// The store revision the node's rules reflect.
    pub revision: u64,
    pub syncs: u64,
    pub last_took: Duration,
    /// Of `last_took`: the time in the backend's command (`iptables-restore`).
    pub last_restore: Duration,
    /// Why the last sync failed, if it did.
    pub last_error: Option<SyncError>,
    pub service_ports: usize,
}

/// Why a node's rules could not be written, as a caller can tell the causes apart:
/// the backend's program missing, or the kernel (or the program) refusing the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("the namespace of node {node}: {message}")]
    Namespace { node: String, message: String },
    #[error(transparent)]
    Apply(#[from] CommandError),
}

/// Runs `program args` inside the namespace mounted at `ns`, feeding it `stdin`.
pub async fn run_in_netns(
    ns: &Path,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, CommandError> {
    let exec = Nsenter {
        netns: ns.to_path_buf(),
    };
    exec.run(program, args, stdin).await
}

/// Runs one node's kube-proxy until the store's watch ends, reporting on `state`.
pub async fn run(
    store: Arc<Store>,
    node: String,
    node_netns: String,
    backend: Box<dyn ProxyBackend>,
    state: watch::Sender<SyncState>,
) {
    let ns = netns::netns_path(&node_netns);
    if let Err(e) = std::fs::metadata(&ns) {
        state.send_modify(|s| {
            s.last_error = Some(SyncError::Namespace {
                node: node.clone(),
                message: e.to_string(),
            })
        });
        return;
    }
    let mut proxy = NodeProxy::new(node, backend, Nsenter { netns: ns }, state);
    proxy.events = Some(crate::api::events::Recorder::new(store.clone()));
    proxy.health = Some(super::healthcheck::Servers::new(&node_netns));
    let synced = watch::Sender::new(0);
    crate::informer::run(store, proxy, &synced).await
}

/// One node's kube-proxy: the tracker, the backend, and how commands reach the node.
pub struct NodeProxy<E> {
    node: String,
    tracker: Tracker,
    backend: Box<dyn ProxyBackend>,
    exec: E,
    state: watch::Sender<SyncState>,
    /// Where each sync that wrote rules is reported, as an event about the node.
    pub events: Option<crate::api::events::Recorder>,
    /// The health check servers of Local LoadBalancer Services, in the node.
    pub health: Option<super::healthcheck::Servers>,
}

impl<E: NodeExec> NodeProxy<E> {
    pub fn new(
        node: String,
        backend: Box<dyn ProxyBackend>,
        exec: E,
        state: watch::Sender<SyncState>,
    ) -> Self {
        NodeProxy {
            tracker: Tracker::for_node(&node),
            node,
            backend,
            exec,
            state,
            events: None,
            health: None,
        }
    }

    /// What the node's kube-proxy has seen.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }
}

/// The `conntrack -D` match of flows addressed to `d`.
fn orig(d: UdpDest) -> [String; 2] {
    match d {
        UdpDest::Ip(ip) => ["--orig-dst".into(), ip.to_string()],
        UdpDest::NodePort(p) => ["--orig-port-dst".into(), p.to_string()],
    }
}

/// Deletes the conntrack entries a sync leaves stale, as upstream's
/// `conntrack/cleanup.go`: those of UDP endpoints that are gone (at the ClusterIP,
/// the external and load balancer addresses, the node port), and every UDP flow to
/// the addresses of a Service that just got its first endpoints.
async fn clear_conntrack<E: NodeExec>(
    exec: &E,
    gone_udp: Vec<(UdpDest, std::net::SocketAddrV4)>,
    activated_udp: Vec<UdpDest>,
) {
    for (d, ep) in gone_udp {
        // `conntrack -D` exits 1 when there was nothing to delete.
        let [flag, value] = orig(d);
        let ep = ep.ip().to_string();
        let args = ["-D", "-p", "udp", &flag, &value, "--dst-nat", &ep];
        let _ = exec.run("conntrack", &args, None).await;
    }
    for d in activated_udp {
        // A flow started while the Service had no endpoints (or did not exist) was
        // not DNATed: it goes, so that its next packet is (upstream's
        // ClearEntriesForIP and ClearEntriesForPort).
        let [flag, value] = orig(d);
        let args = ["-D", "-p", "udp", &flag, &value];
        let _ = exec.run("conntrack", &args, None).await;
    }
}

/// How often a node's kube-proxy checks its jumps and canary chains when nothing
/// else happens (upstream's `syncPeriod`, 30 s by default; short here, so that a
/// flushed table or a deleted jump is back within a second).
pub const SYNC_PERIOD: Duration = Duration::from_secs(1);

impl<E: NodeExec> NodeProxy<E> {
    /// Runs the backend's check in the node: jumps deleted and canaries gone are
    /// noted for the next update. The upstream difference, on purpose: upstream
    /// ensures its jumps only on full syncs (at start, hourly, after a flush), so a
    /// jump deleted alone stays deleted for up to an hour; here each periodic sync
    /// looks (`iptables -S` of the built-in chains, about 2 ms each whatever the
    /// number of Services) and puts it back.
    async fn check(&mut self) {
        let Some((program, args)) = self.backend.check() else {
            return;
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        match self.exec.run(program, &args, None).await {
            Ok(out) => self.backend.checked(&out),
            Err(e) => tracing::warn!(node = self.node, "kube-proxy's check failed: {e}"),
        }
    }
}

#[async_trait::async_trait]
impl<E: NodeExec> Reconcile for NodeProxy<E> {
    type Key = SvcKey;

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Service, Kind::EndpointSlice]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<SvcKey>) {
        self.tracker.observe(event, dirty);
    }

    /// The first sync, and the one after a failure, are due even with nothing new.
    fn unfinished(&self) -> bool {
        !self.backend.in_sync()
    }

    /// kube-proxy's `syncPeriod`: each period with nothing to do, the node is checked
    /// for what someone else removed.
    fn resync_period(&self) -> Option<Duration> {
        Some(SYNC_PERIOD)
    }

    /// One sync: the changes of the dirty Services, or everything when the backend
    /// is not in sync; then the conntrack entries it leaves stale. A
    /// refused update is tried again (in full) after a back-off.
    // Long because it is one sync in upstream's order: check, render, restore, clear
    // conntrack, update the health check ports, then record the event.
    async fn reconcile(&mut self, dirty: BTreeSet<SvcKey>, _: u64) -> Result<(), BTreeSet<SvcKey>> {
        let start = Instant::now();
        let periodic = dirty.is_empty() && self.backend.in_sync();
        if periodic || !self.backend.in_sync() {
            self.check().await;
        }
        if periodic && self.backend.in_sync() && !self.backend.needs_repair() {
            return Ok(());
        }
        let changed: Vec<SvcKey> = dirty.iter().cloned().collect();
        let changes = self.tracker.update(dirty);
        let gone_udp = changes.gone_udp.clone();
        let activated_udp = changes.activated_udp.clone();
        let texts = self.backend.prepare(changes, &self.tracker);
        let mut error = None;
        let t = Instant::now();
        for text in &texts {
            let written = match self.backend.writer() {
                Writer::Program(program, args) => self.exec.run(program, args, Some(text)).await,
                Writer::Nftables => self.exec.nft(text).await,
            };
            if let Err(e) = written {
                tracing::error!(node = self.node, "kube-proxy sync failed: {e}");
                error = Some(SyncError::Apply(e));
                break;
            }
        }
        let restore = if texts.is_empty() || error.is_some() {
            Duration::ZERO
        } else {
            t.elapsed()
        };
        match error {
            None => self.backend.commit(),
            Some(_) => self.backend.failed(),
        }
        clear_conntrack(&self.exec, gone_udp, activated_udp).await;
        if let Some(h) = &mut self.health {
            let tracker = &self.tracker;
            h.update_services(changed.into_iter().map(|svc| {
                let wanted = super::healthcheck::wanted(tracker.ports_of(&svc).iter());
                (svc, wanted)
            }));
        }
        let took = start.elapsed();
        let n = self.tracker.len();
        let failed = error.is_some();
        if let (Some(events), true) = (&self.events, !texts.is_empty()) {
            use crate::api::events::{reference_to, Record, Source, Type};
            let (type_, reason, message) = match &error {
                None => (
                    Type::Normal,
                    "Synced",
                    format!(
                        "{n} Service ports in {:.1} ms ({} lines through {} in {:.1} ms{})",
                        took.as_secs_f64() * 1e3,
                        texts.iter().map(|t| t.lines().count()).sum::<usize>(),
                        self.backend.writer().name(),
                        restore.as_secs_f64() * 1e3,
                        match texts.len() {
                            1 => String::new(),
                            k => format!(", {k} transactions"),
                        }
                    ),
                ),
                Some(e) => (Type::Warning, "SyncFailed", e.to_string()),
            };
            events.update(Record {
                about: reference_to("Node", "v1", None, &self.node),
                type_,
                reason,
                message,
                source: Source {
                    component: "kube-proxy",
                    host: Some(&self.node),
                },
            });
        }
        self.state.send_modify(|s| {
            s.syncs += 1;
            s.last_took = took;
            s.last_restore = restore;
            s.last_error = error;
            s.service_ports = n;
        });
        if failed {
            Err(BTreeSet::new())
        } else {
            Ok(())
        }
    }

    fn synced(&mut self, revision: u64) {
        self.state.send_modify(|s| s.revision = revision);
    }
}
