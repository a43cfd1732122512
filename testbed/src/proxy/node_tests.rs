//! A node's kube-proxy without root: the node loop over the iptables backend, its
//! commands going to a recording fake that applies restores to a model of the
//! tables. Partial syncs must leave the node as one full sync would, and UDP
//! endpoints that go away must have their conntrack entries deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Service, ServicePort as SvcPort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use tokio::sync::watch;

use super::fake::{self, Model};
use super::node::{NodeProxy, SyncError, SyncState};
use super::render::Config;
use super::sync::Proxier;
use super::tracker::SvcKey;
use super::Mode;
use crate::api::labels::SERVICE_NAME_LABEL;
use crate::api::{Event, EventType, Object};
use crate::informer::Reconcile;
use crate::kernel::exec::{CommandError, Recorder};

fn cfg() -> Config {
    Config {
        cluster_cidr: Some("10.244.0.0/16".parse().unwrap()),
        ..Default::default()
    }
}

/// A Service `default/NAME` at `10.96.0.IP` with ports `(name, port, protocol)`.
pub(super) fn service(name: &str, ip: u8, ports: &[(&str, i32, &str)]) -> Object {
    Object::Service(Service {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(format!("10.96.0.{ip}")),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| SvcPort {
                        name: Some(n.to_string()).filter(|n| !n.is_empty()),
                        port: *p,
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        status: None,
    })
}

/// The slice of Service `name`: endpoints `10.244.1.HOST` (ready or not) serving
/// every port of `ports` on `8000 + port`.
pub(super) fn slice(name: &str, ports: &[(&str, i32, &str)], endpoints: &[(u8, bool)]) -> Object {
    Object::EndpointSlice(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(format!("{name}-abcde")),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: endpoints
            .iter()
            .map(|(host, ready)| Endpoint {
                addresses: vec![format!("10.244.1.{host}")],
                conditions: Some(EndpointConditions {
                    ready: Some(*ready),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, p, proto)| EndpointPort {
                    name: Some(n.to_string()),
                    port: Some(8000 + *p),
                    protocol: Some(proto.to_string()),
                    ..Default::default()
                })
                .collect(),
        ),
    })
}

fn event(kind: EventType, object: Object) -> Event {
    Event { kind, object }
}

/// A node's kube-proxy over the iptables backend and a model of the node's tables.
pub(super) struct Node {
    pub(super) proxy: NodeProxy<Recorder>,
    pub(super) exec: Recorder,
    pub(super) model: Arc<Mutex<Model>>,
    state: watch::Receiver<SyncState>,
    dirty: BTreeSet<SvcKey>,
}

impl Node {
    pub(super) fn new() -> Node {
        let model = Arc::new(Mutex::new(Model::default()));
        let exec = fake::node(model.clone());
        let (tx, state) = watch::channel(SyncState::default());
        let backend = Mode::Iptables.backend(cfg());
        Node {
            proxy: NodeProxy::new("node-1".into(), backend, exec.clone(), tx),
            exec,
            model,
            state,
            dirty: BTreeSet::new(),
        }
    }

    pub(super) fn observe(&mut self, kind: EventType, object: Object) {
        self.proxy.observe(event(kind, object), &mut self.dirty);
    }

    /// One sync, as the runtime makes it.
    pub(super) async fn sync(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        self.proxy
            .reconcile(dirty, 0)
            .await
            .unwrap_or_else(|_| panic!("sync failed: {:?}", self.state.borrow().last_error));
    }

    pub(super) fn tables(&self) -> Model {
        self.model.lock().unwrap().clone()
    }
}

/// The tables one full sync of `node`'s service ports makes on an empty node.
pub(super) fn full_sync_of(node: &Node) -> Model {
    let all = node.proxy.tracker().all();
    let update = Proxier::new(cfg()).prepare(&all);
    let mut m = Model::default();
    let jumps = super::fixed::ensure_text(&super::fixed::JUMPS);
    m.restore(&(update.text + &jumps))
        .expect("a full sync restores");
    m
}

/// xorshift64*: the sequences repeat from run to run.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];

fn random_ports(rng: &mut Rng) -> Vec<(&'static str, i32, &'static str)> {
    let n = 1 + rng.below(3) as usize;
    (0..n)
        .map(|i| {
            let proto = if rng.below(3) == 0 { "UDP" } else { "TCP" };
            (PORT_NAMES[i], 80 + rng.below(3) as i32, proto)
        })
        .collect()
}

fn random_endpoints(rng: &mut Rng) -> Vec<(u8, bool)> {
    let n = rng.below(5);
    let mut hosts: BTreeMap<u8, bool> = BTreeMap::new();
    for _ in 0..n {
        hosts.insert(2 + rng.below(8) as u8, rng.below(4) != 0);
    }
    hosts.into_iter().collect()
}

#[tokio::test]
async fn partial_syncs_leave_the_node_as_one_full_sync_would() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut sequences, mut syncs, mut partial, mut rewrites) = (0, 0, 0, 0);
    for _ in 0..300 {
        sequences += 1;
        let mut node = Node::new();
        // What each Service has now: its ports, if it exists.
        let mut services: BTreeMap<usize, Vec<(&str, i32, &str)>> = BTreeMap::new();
        let steps = 1 + rng.below(12);
        for _ in 0..steps {
            // A batch of changes, then one sync. Now and then a big one, so that
            // KUBE-SERVICES is rewritten rather than edited in place.
            let big = rng.below(10) == 0;
            let changes = if big {
                30 + rng.below(40)
            } else {
                1 + rng.below(4)
            };
            for _ in 0..changes {
                let i = rng.below(if big { 80 } else { 12 }) as usize;
                let name = format!("svc-{i}");
                let ip = 10 + i as u8;
                match (rng.below(6), services.get(&i).cloned()) {
                    (0, Some(ports)) => {
                        node.observe(EventType::Deleted, service(&name, ip, &ports));
                        services.remove(&i);
                    }
                    (1, Some(ports)) => {
                        node.observe(EventType::Deleted, slice(&name, &ports, &[]));
                    }
                    (2 | 3, Some(ports)) => {
                        let eps = random_endpoints(&mut rng);
                        node.observe(EventType::Modified, slice(&name, &ports, &eps));
                    }
                    (_, old) => {
                        let ports = random_ports(&mut rng);
                        let kind = if old.is_some() {
                            EventType::Modified
                        } else {
                            EventType::Added
                        };
                        node.observe(kind, service(&name, ip, &ports));
                        let eps = random_endpoints(&mut rng);
                        node.observe(EventType::Modified, slice(&name, &ports, &eps));
                        services.insert(i, ports);
                    }
                }
            }
            let before = node.exec.calls().len();
            node.sync().await;
            syncs += 1;
            let restores: Vec<_> = node.exec.calls()[before..]
                .iter()
                .filter(|c| c.program == "iptables-restore")
                .filter_map(|c| c.stdin.clone())
                .collect();
            if syncs > 1 && restores.iter().any(|t| !t.contains(":KUBE-POSTROUTING")) {
                partial += 1;
            }
            if restores
                .iter()
                .any(|t| !t.contains(":KUBE-POSTROUTING") && t.contains(":KUBE-SERVICES"))
            {
                rewrites += 1;
            }
            assert_eq!(
                node.tables().canonical(),
                full_sync_of(&node).canonical(),
                "after {syncs} syncs; the last restores:\n{}",
                restores.join("\n---\n")
            );
        }
    }
    assert_eq!(sequences, 300);
    // The partial paths were taken, in place and by rewriting the chain.
    assert!(partial > 1000, "only {partial} partial syncs");
    assert!(rewrites > 20, "only {rewrites} rewrites of KUBE-SERVICES");
}

#[tokio::test]
async fn udp_endpoints_that_go_have_their_conntrack_entries_deleted() {
    let mut node = Node::new();
    let ports = [("dns", 53, "UDP"), ("http", 80, "TCP")];
    node.observe(EventType::Added, service("dns", 10, &ports));
    node.observe(
        EventType::Added,
        slice("dns", &ports, &[(2, true), (3, true), (4, true)]),
    );
    node.sync().await;
    let conntrack = |node: &Node| -> Vec<Vec<String>> {
        node.exec
            .calls()
            .into_iter()
            .filter(|c| c.program == "conntrack")
            .map(|c| c.args)
            .collect()
    };
    // At the start every UDP Service with endpoints is newly active, as upstream
    // counts it: what a client sent before is cleared once.
    assert_eq!(
        conntrack(&node),
        vec![["-D", "-p", "udp", "--orig-dst", "10.96.0.10"]
            .map(String::from)
            .to_vec()]
    );
    node.exec.clear();
    // 10.244.1.3 goes, 10.244.1.4 is no longer ready: both leave the UDP port (and
    // the TCP one, which needs no clean-up).
    node.observe(
        EventType::Modified,
        slice("dns", &ports, &[(2, true), (4, false)]),
    );
    node.sync().await;
    let want = |host: &str| {
        [
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            "10.96.0.10",
            "--dst-nat",
            host,
        ]
        .map(String::from)
        .to_vec()
    };
    assert_eq!(
        conntrack(&node),
        vec![want("10.244.1.3"), want("10.244.1.4")]
    );
    // The Service goes: its last UDP endpoint too.
    node.exec.clear();
    node.observe(EventType::Deleted, service("dns", 10, &ports));
    node.sync().await;
    assert_eq!(conntrack(&node), vec![want("10.244.1.2")]);
    assert!(node
        .tables()
        .chain("nat", "KUBE-SERVICES")
        .is_some_and(|r| r.len() == 1));
}

#[tokio::test]
async fn a_refused_restore_is_reported_and_the_next_sync_is_full() {
    let model = Arc::new(Mutex::new(Model::default()));
    let refuse = Arc::new(Mutex::new(true));
    let exec = {
        let (model, refuse) = (model.clone(), refuse.clone());
        Recorder::answering(move |call| {
            if call.program != "iptables-restore" {
                return Ok(String::new());
            }
            if *refuse.lock().unwrap() {
                return Err(CommandError::Failed {
                    program: call.program.clone(),
                    args: call.args.join(" "),
                    status: "exit status: 4".into(),
                    stderr: "iptables-restore: line 3 failed".into(),
                });
            }
            let text = call.stdin.as_deref().unwrap_or_default();
            model.lock().unwrap().restore(text).unwrap();
            Ok(String::new())
        })
    };
    let (tx, state) = watch::channel(SyncState::default());
    let mut proxy = NodeProxy::new(
        "node-1".into(),
        Mode::Iptables.backend(cfg()),
        exec.clone(),
        tx,
    );
    let ports = [("http", 80, "TCP")];
    let mut dirty = BTreeSet::new();
    proxy.observe(
        event(EventType::Added, service("web", 20, &ports)),
        &mut dirty,
    );
    proxy.observe(
        event(EventType::Added, slice("web", &ports, &[(2, true)])),
        &mut dirty,
    );
    assert!(proxy.reconcile(dirty, 7).await.is_err());
    let error = state.borrow().last_error.clone();
    // Told apart from a missing program: the kernel (here, the program) refused.
    assert!(
        matches!(&error, Some(SyncError::Apply(CommandError::Failed { stderr, .. })) if stderr.contains("line 3 failed")),
        "{error:?}"
    );
    assert!(proxy.unfinished(), "a retry is due");
    // The retry, with nothing new: a full sync, which the node now takes.
    *refuse.lock().unwrap() = false;
    assert!(proxy.reconcile(BTreeSet::new(), 8).await.is_ok());
    assert!(!proxy.unfinished());
    assert_eq!(state.borrow().last_error, None);
    let last = exec.calls().last().cloned().unwrap();
    assert!(
        last.stdin.unwrap().contains(":KUBE-POSTROUTING"),
        "a full sync"
    );
    assert_eq!(
        model
            .lock()
            .unwrap()
            .canonical()
            .chain("nat", "KUBE-SERVICES")
            .map(<[String]>::len),
        Some(2)
    );
}

#[tokio::test]
async fn a_missing_iptables_restore_is_told_apart_from_refused_rules() {
    let exec = Recorder::answering(|call| {
        Err(CommandError::Missing {
            program: call.program.clone(),
        })
    });
    let (tx, state) = watch::channel(SyncState::default());
    let mut proxy = NodeProxy::new("node-1".into(), Mode::Iptables.backend(cfg()), exec, tx);
    let ports = [("http", 80, "TCP")];
    let mut dirty = BTreeSet::new();
    proxy.observe(
        event(EventType::Added, service("web", 20, &ports)),
        &mut dirty,
    );
    assert!(proxy.reconcile(dirty, 3).await.is_err());
    let error = state.borrow().last_error.clone();
    assert_eq!(
        error,
        Some(SyncError::Apply(CommandError::Missing {
            program: "iptables-restore".into()
        }))
    );
    assert_eq!(
        error.unwrap().to_string(),
        "cannot run iptables-restore: it is not installed"
    );
}

fn conntrack_calls(node: &Node) -> Vec<String> {
    node.exec
        .calls()
        .into_iter()
        .filter(|c| c.program == "conntrack")
        .map(|c| c.args.join(" "))
        .collect()
}

#[tokio::test]
async fn a_udp_service_that_gets_endpoints_has_its_stale_entries_deleted() {
    let mut node = Node::new();
    let ports = [("dns", 53, "UDP")];
    node.observe(EventType::Added, service("dns", 10, &ports));
    node.observe(EventType::Added, slice("dns", &ports, &[]));
    node.sync().await;
    assert!(
        conntrack_calls(&node).is_empty(),
        "no endpoints: nothing to clear"
    );
    // From none to one: a client that sent meanwhile holds an entry that was never
    // DNATed (its packets were rejected); it goes.
    node.observe(EventType::Modified, slice("dns", &ports, &[(2, true)]));
    node.sync().await;
    assert_eq!(conntrack_calls(&node), ["-D -p udp --orig-dst 10.96.0.10"]);
    // One more endpoint: the Service was active already.
    node.exec.clear();
    node.observe(
        EventType::Modified,
        slice("dns", &ports, &[(2, true), (3, true)]),
    );
    node.sync().await;
    assert!(
        conntrack_calls(&node).is_empty(),
        "{:?}",
        conntrack_calls(&node)
    );
    // All gone, then one back: each gone endpoint's entries, then the Service's.
    node.observe(EventType::Modified, slice("dns", &ports, &[]));
    node.sync().await;
    node.observe(EventType::Modified, slice("dns", &ports, &[(4, true)]));
    node.sync().await;
    assert_eq!(
        conntrack_calls(&node),
        [
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.2",
            "-D -p udp --orig-dst 10.96.0.10 --dst-nat 10.244.1.3",
            "-D -p udp --orig-dst 10.96.0.10",
        ]
    );
}

/// `object` with the label `key: value`.
fn labelled(mut object: Object, key: &str, value: &str) -> Object {
    object
        .meta_mut()
        .labels
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
    object
}

#[tokio::test]
async fn services_for_another_proxy_and_headless_slices_are_not_seen() {
    let mut node = Node::new();
    let ports = [("http", 80, "TCP")];
    let other = "service.kubernetes.io/service-proxy-name";
    let svc_chains = |node: &Node| {
        node.tables()
            .chain("nat", "KUBE-SERVICES")
            .map_or(0, |r| r.len())
            - 1
    };
    node.observe(
        EventType::Added,
        labelled(service("web", 20, &ports), other, "cilium"),
    );
    node.observe(EventType::Added, slice("web", &ports, &[(2, true)]));
    node.sync().await;
    assert_eq!(svc_chains(&node), 0, "another proxy's Service: no rules");
    // The label goes: the Service is seen (as an informer sees an object that starts
    // matching its selector).
    node.observe(EventType::Modified, service("web", 20, &ports));
    node.sync().await;
    assert_eq!(svc_chains(&node), 1);
    // A slice labelled headless is not seen either: the Service has no endpoints.
    let headless = labelled(
        slice("web", &ports, &[(2, true)]),
        "service.kubernetes.io/headless",
        "",
    );
    node.observe(EventType::Modified, headless);
    node.sync().await;
    let filter = node
        .tables()
        .chain("filter", "KUBE-SERVICES")
        .map(<[String]>::to_vec);
    assert!(
        filter
            .unwrap_or_default()
            .iter()
            .any(|r| r.contains("has no endpoints")),
        "the Service rejects: its only slice is not seen"
    );
    // The label comes back: gone again.
    node.observe(
        EventType::Modified,
        labelled(service("web", 20, &ports), other, "cilium"),
    );
    node.sync().await;
    assert_eq!(svc_chains(&node), 0);
}
