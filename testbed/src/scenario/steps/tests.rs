//! Steps run without root, against a [`Context`] made of an API server in memory,
//! the scenario's plan, and a recording fake for links: what each step does to the
//! cluster, the lines it reports, and the kernel requests of the fault steps.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{Context, Seen, Step};
use crate::api::server::Api;
use crate::api::{Key, Kind, Object, Store};
use crate::kernel::links::{Links, Recorder};
use crate::kubelet::faults::Faults;
use crate::plan::Plan;
use crate::scenario::{parse, Scenario};

struct Fake {
    api: Api,
    plan: Plan,
    faults: Faults,
    links: Recorder,
    file: PathBuf,
    snapshots: Vec<(String, String)>,
    background: super::context::Background,
}

#[async_trait::async_trait(?Send)]
impl Context for Fake {
    fn api(&self) -> &Api {
        &self.api
    }
    fn plan(&self) -> &Plan {
        &self.plan
    }
    fn faults(&self) -> &Faults {
        &self.faults
    }
    fn links(&self) -> &dyn Links {
        &self.links
    }
    fn file(&self) -> &Path {
        &self.file
    }
    fn scenario(&self) -> &str {
        "demo"
    }
    fn testbed(&self) -> &str {
        "demo"
    }
    fn exe(&self) -> &Path {
        Path::new("/nonexistent/testbed")
    }
    async fn wait_synced(&self, _: u64, _: Duration) -> bool {
        true
    }
    fn behind(&self, _: u64) -> String {
        "nobody".into()
    }
    fn background(&mut self) -> &mut super::context::Background {
        &mut self.background
    }
    fn snapshot(&mut self, name: &str, _: &str, content: &str) -> Result<String, String> {
        self.snapshots.push((name.into(), content.into()));
        Ok(format!("{name}: as stored"))
    }
}

/// The scenario `steps` (YAML lines under `steps:`) on two nodes, and a context
/// for it.
fn scenario(steps: &str) -> (Scenario, Fake) {
    let text = format!("name: demo\ncluster: {{nodes: 2}}\nsteps:\n{steps}");
    let s = parse(Path::new("demo.yaml"), &text).unwrap();
    let plan = s.plan("demo");
    let api = Api::with_dns_ip(Arc::new(Store::default()), plan.service_cidr, plan.dns_ip);
    let fake = Fake {
        api,
        plan,
        faults: Faults::default(),
        links: Recorder::default(),
        file: "demo.yaml".into(),
        snapshots: Vec::new(),
        background: Default::default(),
    };
    (s, fake)
}

async fn run(step: &Step, cx: &mut Fake) -> Seen {
    step.action
        .run(cx, &step.expect)
        .await
        .unwrap_or_else(|e| panic!("step {}: {e}", step.action.title()))
}

#[tokio::test]
async fn api_steps_change_the_cluster_and_say_what_they_did() {
    let (s, mut cx) = scenario(
        "  - apply:\n    - {apiVersion: v1, kind: Service, metadata: {name: web}, spec: {selector: {app: web}, ports: [{port: 80}]}}\n    - {apiVersion: apps/v1, kind: Deployment, metadata: {name: web}, spec: {replicas: 2, selector: {matchLabels: {app: web}}, template: {metadata: {labels: {app: web}}, spec: {containers: [{name: main}]}}}}\n  - scale: {deployment: web, replicas: 5}\n  - wait: {synced: true}\n  - snapshot: {view: services}\n  - delete: service/web\n",
    );
    let mut lines = Vec::new();
    for step in &s.steps {
        lines.extend(run(step, &mut cx).await.lines);
    }
    let replicas = match cx
        .api
        .store
        .get(&Key::new(Kind::Deployment, "default", "web"))
    {
        Some(Object::Deployment(d)) => d.spec.unwrap().replicas,
        _ => None,
    };
    assert_eq!(replicas, Some(5));
    assert!(cx
        .api
        .store
        .get(&Key::new(Kind::Service, "default", "web"))
        .is_none());
    assert_eq!(
        lines[0],
        "service default/web created (clusterIP 10.96.0.2)"
    );
    assert_eq!(lines[1], "deployment default/web created");
    assert_eq!(lines[2], "deployment default/web scaled to 5");
    assert!(
        lines[3].starts_with("every node's rules are in sync after "),
        "{lines:?}"
    );
    assert_eq!(lines[4], "demo@04-services: as stored");
    assert_eq!(lines[5], "service default/web deleted");
    let (name, content) = &cx.snapshots[0];
    assert_eq!(name, "demo@04-services");
    assert!(content.contains("default/web"), "{content}");
}

#[tokio::test]
async fn a_scale_of_a_missing_deployment_fails_with_the_api_server_s_reason() {
    let (s, mut cx) = scenario("  - scale: {deployment: ghost, replicas: 1}\n");
    let err = s.steps[0]
        .action
        .run(&mut cx, &s.steps[0].expect)
        .await
        .unwrap_err();
    assert!(err.contains("ghost"), "{err}");
}

#[tokio::test]
async fn fault_steps_set_links_through_the_kernel_seam() {
    let (s, mut cx) = scenario(
        "  - node: {name: node-2, state: down}\n  - link: {of: node/node-1, state: down}\n  - node: {name: node-2, state: up}\n",
    );
    let mut lines = Vec::new();
    for step in &s.steps {
        lines.extend(run(step, &mut cx).await.lines);
    }
    let fabric = cx.plan.fabric.netns.clone();
    let (n1, n2) = (cx.plan.nodes[0].clone(), cx.plan.nodes[1].clone());
    assert_eq!(
        cx.links.calls(),
        [
            (fabric.clone(), n2.fabric_port.clone(), false),
            (n2.netns.clone(), "cbr0".to_string(), false),
            (fabric.clone(), n1.fabric_port.clone(), false),
            (fabric.clone(), n2.fabric_port.clone(), true),
            (n2.netns.clone(), "cbr0".to_string(), true),
        ]
    );
    assert_eq!(
        lines,
        [
            "node node-2 is down: its underlay port and cbr0 are down, its 0 pods not ready"
                .to_string(),
            format!(
                "node node-1's underlay link cut ({} in {fabric})",
                n1.fabric_port
            ),
            "node node-2 is up: its links are up, its 0 pods ready".to_string(),
        ]
    );
    // The kubelets are told: node-2 was down, and is up again.
    assert!(cx.faults.get().nodes_down.is_empty());
}

#[tokio::test]
async fn a_node_step_on_a_node_the_plan_lacks_names_the_nodes() {
    let (s, mut cx) = scenario("  - node: {name: node-1, state: down}\n");
    cx.plan.nodes.retain(|n| n.name != "node-1");
    let err = s.steps[0]
        .action
        .run(&mut cx, &s.steps[0].expect)
        .await
        .unwrap_err();
    assert_eq!(err, "there is no node \"node-1\" (nodes: node-2)");
    assert!(cx.links.calls().is_empty(), "nothing was set");
}

#[tokio::test]
async fn a_silent_node_keeps_its_links_and_tells_the_kubelets_and_up_undoes_it() {
    let (s, mut cx) = scenario(
        "  - node: {name: node-2, state: silent}\n  - wait: {node: node-2, status: NotReady, timeout: 1s}\n",
    );
    assert_eq!(
        s.steps[0].action.title(),
        "make node node-2's kubelet silent"
    );
    assert_eq!(
        s.steps[1].action.title(),
        "wait for node node-2 NotReady (timeout 1s)"
    );
    let seen = run(&s.steps[0], &mut cx).await;
    assert_eq!(
        seen.lines,
        ["node node-2's kubelet is silent: no Lease renewals, no status; its 0 pods run on"]
    );
    assert!(cx.links.calls().is_empty(), "its links stay up");
    assert!(cx.faults.get().silent.contains("node-2"));
    // No Node object here: the wait says so when it times out.
    let err = s.steps[1]
        .action
        .run(&mut cx, &s.steps[1].expect)
        .await
        .unwrap_err();
    assert!(err.contains("node node-2 does not exist"), "{err}");
}

#[test]
fn node_states_and_node_waits_are_checked() {
    let text =
        "name: demo\nsteps:\n  - node: {name: node-2, state: sleepy}\n  - wait: {node: node-2}\n";
    let problems = match parse(Path::new("s.yaml"), text) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(
        problems.contains("steps[0].node.state: \"sleepy\" is not up, down or silent"),
        "{problems}"
    );
    assert!(
        problems.contains("steps[1].wait: node needs status: Ready or NotReady"),
        "{problems}"
    );
}
