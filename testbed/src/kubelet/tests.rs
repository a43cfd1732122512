//! The kubelets without root: their loop and each pod's life over a recording fake
//! runtime. Pods are scheduled, addressed, started and reported; readiness follows
//! the probes and their thresholds; a sandbox that cannot be made, a kill, a
//! deletion; one slow teardown holds up no other pod.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use tokio::sync::watch;

use super::probe::{Check, ProbeSpec, Target};
use super::runtime::{PodRuntime, Processes, SandboxError};
use super::{faults::Faults, Config, NodeInfo};
use crate::api::labels::pod_ready;
use crate::api::{Key, Kind, Object, Store};
use crate::plan::PodPlan;

/// What the fake is told to do, and what it saw.
#[derive(Default)]
pub(super) struct Script {
    /// `create node-2 default/web 10.244.2.2`, `start default/web`, `kill
    /// default/web`, `remove default/web`, in order (probes are counted apart).
    pub(super) calls: Vec<String>,
    pub(super) probes: usize,
    /// Whether probes pass.
    pub(super) probe_ok: bool,
    /// Pods whose sandbox cannot be made.
    pub(super) broken: HashSet<String>,
    /// Pods whose sandbox exists already.
    pub(super) existing: HashSet<String>,
    /// Pods whose removal waits until the gate opens.
    pub(super) slow: HashSet<String>,
    /// Pods whose container exits by itself: after how long, with which code.
    pub(super) exits: std::collections::HashMap<String, (Duration, i32)>,
    /// Containers started, restarts included.
    pub(super) runs: usize,
}

#[derive(Clone)]
pub(super) struct Fake {
    script: Arc<Mutex<Script>>,
    gate: watch::Sender<bool>,
}

impl Fake {
    pub(super) fn new() -> Self {
        Fake {
            script: Arc::default(),
            gate: watch::Sender::new(false),
        }
    }

    pub(super) fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut self.script.lock().unwrap())
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    fn log(&self, call: String) {
        self.with(|s| s.calls.push(call));
    }
}

/// A cause with a cause, as the topology's errors are.
#[derive(Debug, thiserror::Error)]
#[error("create veth pair {0}")]
struct Veth(String, #[source] std::io::Error);

struct FakeProcesses {
    fake: Fake,
    pod: String,
    exit: Option<(Duration, i32)>,
}

#[async_trait::async_trait]
impl Processes for FakeProcesses {
    async fn kill(&mut self) {
        self.fake.log(format!("kill {}", self.pod));
    }

    async fn wait(&mut self) -> i32 {
        match self.exit {
            Some((after, code)) => {
                tokio::time::sleep(after).await;
                code
            }
            None => std::future::pending().await,
        }
    }
}

fn id(pod: &PodPlan) -> String {
    format!("{}/{}", pod.namespace, pod.name)
}

#[async_trait::async_trait]
impl PodRuntime for Fake {
    fn sandbox_exists(&self, namespace: &str, name: &str) -> bool {
        self.with(|s| s.existing.contains(&format!("{namespace}/{name}")))
    }

    async fn create_sandbox(&self, _node: usize, pod: &PodPlan) -> Result<(), SandboxError> {
        self.log(format!("create {} {} {}", pod.node, id(pod), pod.ip));
        if self.with(|s| s.broken.contains(&id(pod))) {
            let cause = std::io::Error::from_raw_os_error(17);
            return Err(SandboxError(Box::new(Veth(pod.host_veth.clone(), cause))));
        }
        Ok(())
    }

    async fn prepare(&self, pod: &PodPlan, _: &PodSpec) -> Vec<String> {
        self.log(format!("start {}", id(pod)));
        Vec::new()
    }

    async fn start_container(
        &self,
        pod: &PodPlan,
        spec: &PodSpec,
        c: &Container,
    ) -> Result<Box<dyn Processes>, super::runtime::StartError> {
        // As the machine's runtime checks a container's user before it starts.
        super::identity::of(spec, Some(c), 0).map_err(super::runtime::StartError::Config)?;
        let exit = self.with(|s| {
            s.runs += 1;
            s.exits.get(&id(pod)).copied()
        });
        Ok(Box::new(FakeProcesses {
            fake: self.clone(),
            pod: id(pod),
            exit,
        }))
    }

    async fn probe(&self, _: &Target, p: &ProbeSpec) -> Result<(), String> {
        if let Check::Exec { command } = &p.check {
            self.log(format!("exec {}", command.join(" ")));
            return Ok(());
        }
        let ok = self.with(|s| {
            s.probes += 1;
            s.probe_ok
        });
        ok.then_some(()).ok_or_else(|| "connection refused".into())
    }

    async fn remove_sandbox(&self, _: usize, pod: &PodPlan) {
        if self.with(|s| s.slow.contains(&id(pod))) {
            let mut gate = self.gate.subscribe();
            let _ = gate.wait_for(|open| *open).await;
        }
        self.log(format!("remove {}", id(pod)));
    }
}

fn node(i: u8) -> NodeInfo {
    NodeInfo {
        name: format!("node-{i}"),
        netns: format!("tb-node-{i}"),
        ip: Ipv4Addr::new(192, 168, 0, 10 + i),
        pod_cidr: format!("10.244.{i}.0/24").parse().unwrap(),
        bridge_ip: Ipv4Addr::new(10, 244, i, 1),
    }
}

pub(super) struct Kubelets {
    pub(super) store: Arc<Store>,
    pub(super) fake: Fake,
    pub(super) faults: Arc<Faults>,
    pub(super) _task: tokio::task::JoinHandle<()>,
}

/// The kubelets of two nodes over a fake runtime.
pub(super) fn start(fake: &Fake) -> Kubelets {
    let store = Arc::new(Store::default());
    let faults = Arc::new(Faults::default());
    let cfg = Arc::new(Config {
        testbed: "tb".into(),
        nodes: vec![node(1), node(2)],
        shared_etc: "/nonexistent".into(),
        cluster_dns: crate::dns::pod_files::ClusterDns {
            ip: Ipv4Addr::new(10, 96, 0, 10),
            domain: "cluster.local".into(),
        },
        dns: None,
        exe: "/nonexistent/testbed".into(),
        faults: faults.clone(),
        backoff: Default::default(),
        owner_uid: 0,
        node_health: Default::default(),
        service_accounts: None,
    });
    let (s, f) = (store.clone(), fake.clone());
    let task = tokio::spawn(async move {
        let synced = watch::Sender::new(0);
        super::run_on(cfg, s, Arc::new(f), &synced).await
    });
    Kubelets {
        store,
        fake: fake.clone(),
        faults,
        _task: task,
    }
}

/// Pod `default/NAME`, on `node` if given, with a TCP readiness probe if `probed`.
pub(super) fn pod(name: &str, node: Option<&str>, probed: bool) -> Object {
    let probe =
        serde_json::json!({"tcpSocket": {"port": 80}, "periodSeconds": 1, "failureThreshold": 3});
    let mut container = serde_json::json!({"name": "main", "ports": [{"containerPort": 80}]});
    if probed {
        container["readinessProbe"] = probe;
    }
    Object::Pod(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": node, "containers": [container]},
        }))
        .unwrap(),
    )
}

impl Kubelets {
    pub(super) fn put(&self, obj: Object) {
        self.store.write(|tx| tx.put(obj));
    }

    pub(super) fn delete(&self, name: &str) {
        self.store
            .write(|tx| tx.delete(&Key::new(Kind::Pod, "default", name)));
    }

    pub(super) fn get(&self, name: &str) -> Option<Pod> {
        match self.store.get(&Key::new(Kind::Pod, "default", name)) {
            Some(Object::Pod(p)) => Some(p),
            _ => None,
        }
    }

    /// Waits (in the test's paused time) until `done` holds.
    pub(super) async fn until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let wait = async {
            while !done(self) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("{what} did not happen; calls: {:?}", self.fake.calls());
        }
    }

    pub(super) fn phase(&self, name: &str) -> Option<String> {
        self.get(name)?.status?.phase
    }

    pub(super) fn ready(&self, name: &str) -> bool {
        self.get(name).is_some_and(|p| pod_ready(&p))
    }

    /// The pod's RESTARTS.
    pub(super) fn restarts(&self, name: &str) -> i32 {
        let st = self.get(name).and_then(|p| p.status);
        st.and_then(|s| s.container_statuses)
            .into_iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    }
}

#[tokio::test(start_paused = true)]
async fn a_pod_gets_a_node_an_address_a_sandbox_and_its_running_status() {
    let k = start(&Fake::new());
    k.put(pod("pinned", Some("node-2"), false));
    k.until("pinned running and ready", |k| k.ready("pinned"))
        .await;
    let p = k.get("pinned").unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    assert_eq!(st.pod_ip.as_deref(), Some("10.244.2.2"));
    assert_eq!(st.host_ip.as_deref(), Some("192.168.0.12"));
    let conditions: Vec<(String, String)> = st
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    let want = [
        ("PodScheduled", "True"),
        ("Initialized", "True"),
        ("ContainersReady", "True"),
        ("Ready", "True"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(t, s)| (t.to_string(), s.to_string()))
        .collect();
    assert_eq!(conditions, want);
    assert_eq!(
        k.fake.calls(),
        [
            "create node-2 default/pinned 10.244.2.2",
            "start default/pinned"
        ]
    );

    // Three pods that name no node go to the node with the fewest pods, in order,
    // each at the next free address of its node.
    for name in ["a", "b", "c"] {
        k.put(pod(name, None, false));
    }
    k.until("a, b and c ready", |k| {
        ["a", "b", "c"].iter().all(|n| k.ready(n))
    })
    .await;
    let placed: Vec<(String, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let p = k.get(n).unwrap();
            (
                p.spec.unwrap().node_name.unwrap(),
                p.status.unwrap().pod_ip.unwrap(),
            )
        })
        .collect();
    let want = [
        ("node-1", "10.244.1.2"),
        ("node-1", "10.244.1.3"),
        ("node-2", "10.244.2.3"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(n, ip)| (n.to_string(), ip.to_string()))
        .collect();
    assert_eq!(placed, want);
}

#[tokio::test(start_paused = true)]
async fn a_pod_made_with_the_cluster_is_adopted_with_its_address() {
    let fake = Fake::new();
    fake.with(|s| s.existing.insert("default/planned".into()));
    let k = start(&fake);
    let Object::Pod(mut p) = pod("planned", Some("node-1"), false) else {
        unreachable!()
    };
    p.status = Some(k8s_openapi::api::core::v1::PodStatus {
        pod_ip: Some("10.244.1.7".into()),
        ..Default::default()
    });
    k.put(Object::Pod(p));
    k.until("planned ready", |k| k.ready("planned")).await;
    let ip = k.get("planned").unwrap().status.unwrap().pod_ip;
    assert_eq!(ip.as_deref(), Some("10.244.1.7"));
    // Its sandbox is not made again.
    assert_eq!(k.fake.calls(), ["start default/planned"]);
}

#[tokio::test(start_paused = true)]
async fn readiness_follows_the_probe_and_its_failure_threshold() {
    let k = start(&Fake::new());
    k.put(pod("web", Some("node-1"), true));
    k.until("web running", |k| {
        k.phase("web").as_deref() == Some("Running")
    })
    .await;
    k.until("web probed 3 times", |k| k.fake.with(|s| s.probes >= 3))
        .await;
    assert!(!k.ready("web"), "not ready while its probe fails");

    k.fake.with(|s| s.probe_ok = true);
    k.until("web ready", |k| k.ready("web")).await;

    // failureThreshold 3: two failures leave it ready, the third does not.
    let before = k.fake.with(|s| {
        s.probe_ok = false;
        s.probes
    });
    k.until("web probed twice more", |k| {
        k.fake.with(|s| s.probes >= before + 2)
    })
    .await;
    assert!(k.ready("web"), "still ready after two failures");
    k.until("web not ready", |k| !k.ready("web")).await;
    let failed = k.fake.with(|s| s.probes) - before;
    assert_eq!(failed, 3, "not ready after the third failure");
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_that_cannot_be_made_fails_the_pod_with_why() {
    let fake = Fake::new();
    fake.with(|s| s.broken.insert("default/web".into()));
    let k = start(&fake);
    k.put(pod("web", Some("node-1"), false));
    k.until("web failed", |k| {
        k.phase("web").as_deref() == Some("Failed")
    })
    .await;
    let message = k.get("web").unwrap().status.unwrap().message;
    let veth = crate::names::pod_host_veth("default", "web");
    assert_eq!(
        message,
        Some(format!(
            "create veth pair {veth}: File exists (os error 17)"
        ))
    );
    assert!(!k.ready("web"));
    // Nothing was started in it.
    assert_eq!(k.fake.calls(), ["create node-1 default/web 10.244.1.2"]);
}

#[tokio::test(start_paused = true)]
async fn a_killed_pod_restarts_or_fails_by_its_policy_and_a_deleted_one_is_torn_down() {
    let k = start(&Fake::new());
    k.put(pod("web", Some("node-1"), false));
    let mut never = pod("once", Some("node-2"), false);
    if let Object::Pod(p) = &mut never {
        p.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    }
    k.put(never);
    k.until("both ready", |k| k.ready("web") && k.ready("once"))
        .await;

    for name in ["web", "once"] {
        k.faults.update(|s| {
            *s.kills.entry(("default".into(), name.into())).or_default() += 1;
        });
    }
    // Always (the default): started again at once, RESTARTS 1, the last state the kill.
    k.until("web restarted", |k| k.restarts("web") == 1).await;
    k.until("web ready again", |k| k.ready("web")).await;
    let st = k.get("web").unwrap().status.unwrap();
    let c = &st.container_statuses.unwrap()[0];
    let last = c.last_state.clone().unwrap().terminated.unwrap();
    assert_eq!(
        (last.exit_code, last.reason.as_deref()),
        (137, Some("Error"))
    );
    assert_eq!(st.phase.as_deref(), Some("Running"));
    // Never: it stays terminated, the pod Failed and not ready.
    k.until("once failed", |k| {
        k.phase("once").as_deref() == Some("Failed")
    })
    .await;
    assert!(!k.ready("once"));
    assert_eq!(k.restarts("once"), 0);
    assert_eq!(k.fake.with(|s| s.runs), 3, "web twice, once once");
    assert_eq!(
        k.fake
            .calls()
            .iter()
            .filter(|c| c.starts_with("kill"))
            .count(),
        2
    );

    k.delete("web");
    k.until("web removed", |k| {
        k.fake.calls().last().map(String::as_str) == Some("remove default/web")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn one_slow_teardown_holds_up_no_other_pod() {
    let fake = Fake::new();
    fake.with(|s| s.slow.insert("default/slow".into()));
    let k = start(&fake);
    k.put(pod("slow", Some("node-1"), false));
    k.until("slow ready", |k| k.ready("slow")).await;
    k.delete("slow");

    // While its teardown hangs, another pod starts, at another address (the slow
    // one's is still taken), and a pod of the same name waits for it.
    k.put(pod("other", Some("node-1"), false));
    k.until("other ready", |k| k.ready("other")).await;
    let ip = k.get("other").unwrap().status.unwrap().pod_ip;
    assert_eq!(ip.as_deref(), Some("10.244.1.3"));
    k.put(pod("slow", Some("node-1"), false));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let calls = k.fake.calls();
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("create node-1 default/slow"))
            .count(),
        1,
        "the new slow waits for the old one's teardown: {calls:?}"
    );

    k.fake.gate.send_replace(true);
    k.until("the new slow ready", |k| k.ready("slow")).await;
    let calls = k.fake.calls();
    let removed = calls
        .iter()
        .position(|c| c == "remove default/slow")
        .unwrap();
    let created = calls
        .iter()
        .rposition(|c| c.starts_with("create node-1 default/slow"))
        .unwrap();
    assert!(removed < created, "removed before made again: {calls:?}");
}
