//! The Deployment's passes over its ReplicaSets, step by step, with the ReplicaSets'
//! pods becoming available as each test says; and the ReplicaSet's own pass.

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::replicaset::{self, hash_of};
use super::rollout::{self, template_hash, Plan, REVISION};

fn time(secs: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }))
    .unwrap()
}

/// A Deployment and its ReplicaSets, passed over as the controllers would.
struct Sim {
    d: Deployment,
    sets: Vec<ReplicaSet>,
    clock: i64,
    events: Vec<String>,
}

impl Sim {
    fn new(d: Deployment) -> Sim {
        Sim {
            d,
            sets: Vec::new(),
            clock: 0,
            events: Vec::new(),
        }
    }

    /// One pass of the Deployment controller, its plan applied.
    fn pass(&mut self, pods_running: usize) -> Plan {
        self.clock += 1;
        let plan = rollout::sync(&self.d, &self.sets, &|_| pods_running, &time(self.clock));
        let applied = Plan {
            status: plan.status.clone(),
            ..Default::default()
        };
        if let Some(mut rs) = plan.create.clone() {
            rs.metadata.creation_timestamp = Some(time(self.clock));
            self.sets.push(rs);
        }
        for u in &plan.update {
            let rs = self
                .sets
                .iter_mut()
                .find(|s| s.metadata.name == u.metadata.name)
                .unwrap();
            rs.spec = u.spec.clone();
            rs.metadata.annotations = u.metadata.annotations.clone();
        }
        self.sets
            .retain(|s| !plan.delete.contains(s.metadata.name.as_ref().unwrap()));
        self.d.status = Some(plan.status.clone());
        self.events.extend(plan.events.iter().cloned());
        let _ = applied;
        plan
    }

    /// The ReplicaSet controller and kubelets: every pod asked for exists, and up
    /// to `available` of the new ReplicaSet's are available (all of the old ones).
    fn pods(&mut self, available: i32) {
        let hash = template_hash(&self.d);
        for rs in &mut self.sets {
            let want = rs.spec.as_ref().unwrap().replicas.unwrap();
            let avail = if hash_of(&rs.metadata) == Some(&hash) {
                want.min(available)
            } else {
                want
            };
            rs.status = Some(ReplicaSetStatus {
                replicas: want,
                ready_replicas: Some(avail),
                available_replicas: Some(avail),
                ..Default::default()
            });
        }
    }

    /// `old=N new=M` by revision.
    fn sizes(&self) -> String {
        let mut sets: Vec<&ReplicaSet> = self.sets.iter().collect();
        sets.sort_by_key(|rs| rs.metadata.annotations.as_ref().unwrap()[REVISION].clone());
        sets.iter()
            .map(|rs| {
                format!(
                    "r{}={}",
                    rs.metadata.annotations.as_ref().unwrap()[REVISION],
                    rs.spec.as_ref().unwrap().replicas.unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn roll_to(&mut self, image: &str) {
        let spec = self.d.spec.as_mut().unwrap();
        spec.template.spec.as_mut().unwrap().containers[0].image = Some(image.into());
        self.d.metadata.generation = Some(self.d.metadata.generation.unwrap() + 1);
    }

    /// Passes until nothing changes, the new pods becoming available one per pass
    /// after they exist: each line is the sizes after a pass that changed them.
    fn run(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let mut available = 0;
        for _ in 0..40 {
            self.pods(available);
            let plan = self.pass(0);
            if plan.create.is_some() || !plan.update.is_empty() {
                lines.push(self.sizes());
            } else {
                available += 1;
            }
        }
        lines
    }
}

#[test]
fn a_new_deployment_makes_its_replica_set_at_full_size() {
    let mut sim = Sim::new(deployment(3, "v1", json!({})));
    let plan = sim.pass(0);
    let rs = plan.create.expect("a ReplicaSet");
    let hash = template_hash(&sim.d);
    assert_eq!(
        rs.metadata.name.as_deref(),
        Some(format!("web-{hash}").as_str())
    );
    let spec = rs.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let sel = spec.selector.match_labels.unwrap();
    assert_eq!(sel["pod-template-hash"], hash);
    let labels = spec.template.unwrap().metadata.unwrap().labels.unwrap();
    assert_eq!(
        (labels["app"].as_str(), labels["pod-template-hash"].as_str()),
        ("web", hash.as_str())
    );
    assert_eq!(plan.revision.as_deref(), Some("1"));
    assert_eq!(
        sim.events,
        [format!("Scaled up replica set web-{hash} from 0 to 3")]
    );
    let progressing = &plan.status.conditions.unwrap()[1];
    assert_eq!(
        (progressing.type_.as_str(), progressing.reason.as_deref()),
        ("Progressing", Some("NewReplicaSetCreated"))
    );
}

#[test]
fn the_default_rolling_update_surges_one_and_keeps_every_replica_available() {
    // 4 replicas: maxSurge 25% is 1, maxUnavailable 25% is 1.
    let mut sim = Sim::new(deployment(4, "v1", json!({})));
    sim.run();
    sim.roll_to("v2");
    assert_eq!(
        sim.run(),
        [
            // One new over the four, and in the same pass one old goes: one may be
            // missing. Then each new pod that is available lets the next step go.
            "r1=3 r2=1",
            "r1=3 r2=2",
            "r1=2 r2=2",
            "r1=2 r2=3",
            "r1=1 r2=3",
            "r1=1 r2=4",
            "r1=0 r2=4",
        ]
    );
    let (done, said) = rollout::status(&deployment_with(&sim));
    assert!(done, "{said}");
    assert_eq!(said, "deployment \"web\" successfully rolled out");
}

fn deployment_with(sim: &Sim) -> Deployment {
    let mut d = sim.d.clone();
    d.status = sim.d.status.clone();
    d
}

#[test]
fn max_unavailable_zero_adds_before_it_takes_away() {
    let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut sim = Sim::new(deployment(2, "v1", strategy));
    sim.run();
    sim.roll_to("v2");
    assert_eq!(
        sim.run(),
        ["r1=2 r2=1", "r1=1 r2=1", "r1=1 r2=2", "r1=0 r2=2"]
    );
}

#[test]
fn max_surge_zero_takes_away_before_it_adds() {
    let strategy = json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "50%"}});
    let mut sim = Sim::new(deployment(4, "v1", strategy));
    sim.run();
    sim.roll_to("v2");
    assert_eq!(
        sim.run(),
        // No pod over the four: two old go first (the new ReplicaSet is made at 0).
        [
            "r1=2 r2=0",
            "r1=2 r2=2",
            "r1=1 r2=2",
            "r1=1 r2=3",
            "r1=0 r2=3",
            "r1=0 r2=4"
        ]
    );
}

#[test]
fn recreate_waits_for_every_old_pod_to_be_gone() {
    let mut sim = Sim::new(deployment(2, "v1", json!({"type": "Recreate"})));
    sim.run();
    sim.roll_to("v2");
    sim.pods(0);
    sim.pass(2);
    assert_eq!(sim.sizes(), "r1=0");
    // Its pods still terminate: nothing new yet.
    sim.pods(0);
    let plan = sim.pass(1);
    assert!(plan.create.is_none());
    sim.pods(0);
    let plan = sim.pass(0);
    assert_eq!(plan.create.unwrap().spec.unwrap().replicas, Some(2));
}

#[test]
fn scaling_mid_rollout_shares_the_new_size_in_proportion() {
    let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut sim = Sim::new(deployment(2, "v1", strategy));
    sim.run();
    sim.roll_to("v2");
    sim.pods(0);
    sim.pass(0);
    assert_eq!(sim.sizes(), "r1=2 r2=1");
    // Scaled to 4 (5 with the surge): the old gets round(2*5/3)-2 = 1 more, the
    // new round(1*5/3)-1 = 1 more.
    sim.d.spec.as_mut().unwrap().replicas = Some(4);
    sim.pods(0);
    sim.pass(0);
    assert_eq!(sim.sizes(), "r1=3 r2=2");
}

#[test]
fn old_replica_sets_beyond_the_history_limit_go() {
    let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    let mut d = deployment(1, "v1", strategy);
    d.spec.as_mut().unwrap().revision_history_limit = Some(1);
    let mut sim = Sim::new(d);
    sim.run();
    for v in ["v2", "v3"] {
        sim.roll_to(v);
        sim.run();
    }
    assert_eq!(sim.sizes(), "r2=0 r3=1");
}

#[test]
fn rolling_back_to_an_old_template_brings_its_replica_set_back_as_the_newest_revision() {
    let mut sim = Sim::new(deployment(1, "v1", json!({})));
    sim.run();
    sim.roll_to("v2");
    sim.run();
    sim.roll_to("v1");
    sim.run();
    assert_eq!(sim.sizes(), "r2=0 r3=1");
    assert_eq!(sim.sets.len(), 2, "no third ReplicaSet");
    // As `kubectl rollout undo` sends it: an empty `resources`, the same template.
    sim.roll_to("v2");
    let c = &mut sim
        .d
        .spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0];
    c.resources = Some(Default::default());
    sim.run();
    assert_eq!(sim.sizes(), "r3=0 r4=1");
    assert_eq!(sim.sets.len(), 2, "v2's ReplicaSet came back");
    assert_eq!(
        sim.d.status.as_ref().unwrap().updated_replicas,
        Some(1),
        "the v1 ReplicaSet is the new one again"
    );
}

fn rs_of(replicas: i32) -> ReplicaSet {
    serde_json::from_value(json!({
        "metadata": {
            "name": "web-abc", "namespace": "default", "uid": "rs-uid",
            "labels": {"app": "web", "pod-template-hash": "abc"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "d-uid", "controller": true}],
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web", "pod-template-hash": "abc"}},
            "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}, "spec": {"containers": [{"name": "main"}]}},
        },
    }))
    .unwrap()
}

fn with_status(mut p: Pod, node: &str, ready: bool) -> Pod {
    p.spec.as_mut().unwrap().node_name = Some(node.into());
    p.metadata.creation_timestamp = Some(time(0));
    p.status = serde_json::from_value(json!({
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}, "lastTransitionTime": "2027-01-15T08:00:00Z"}],
    }))
    .unwrap();
    p
}

#[test]
fn a_replica_set_names_its_pods_stably_and_scales_down_the_unready_first() {
    let rs = rs_of(3);
    let step = replicaset::reconcile(&rs, &[], &[], &time(10));
    let names: Vec<String> = step
        .create
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    // The names a Deployment's pods have always had: web-<hash>-<5 chars>.
    assert_eq!(names[0], replicaset::pod_name(&rs, 0));
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("web-abc-") && n.len() == 13),
        "{names:?}"
    );
    assert_eq!(
        replicaset::reconcile(&rs, &[], &[], &time(10)).create,
        step.create
    );
    let owner = &step.create[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ReplicaSet", "web-abc")
    );

    let pods = [
        with_status(step.create[0].clone(), "node-1", true),
        with_status(step.create[1].clone(), "node-2", false),
        with_status(step.create[2].clone(), "node-1", true),
    ];
    let owned: Vec<&Pod> = pods.iter().collect();
    let down = replicaset::reconcile(&rs_of(1), &owned, &owned, &time(10));
    // The unready one, then one of the two sharing node-1.
    assert_eq!(down.delete[0], names[1]);
    assert_eq!(down.delete.len(), 2);
    assert_ne!(down.delete[1], names[1]);
    assert_eq!(down.status.replicas, 3);
    assert_eq!(down.status.ready_replicas, Some(2));

    // A terminating pod is replaced at once, under a name it does not hold.
    let mut going = pods.clone();
    going[0].metadata.deletion_timestamp = Some(time(5));
    let owned: Vec<&Pod> = going.iter().collect();
    let again = replicaset::reconcile(&rs, &owned, &owned, &time(10));
    let made: Vec<String> = again
        .create
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(made, [replicaset::pod_name(&rs, 3)]);
    assert_eq!(again.status.replicas, 2);
}
