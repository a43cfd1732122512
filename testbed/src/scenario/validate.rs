//! A dry run of a scenario's API requests against a scratch API server (no cluster,
//! no root): its objects and every `apply`, `delete` and `scale` step in order, so
//! that admission's complaints (a port out of range, a ClusterIP outside the range or
//! taken, a Deployment that is not there to scale) come with their file and line
//! before anything is built.

use std::sync::Arc;

use super::objects::Manifest;
use super::steps::Action;
use super::{Located, Scenario};
use crate::api::server::{Api, ObjectProblem};
use crate::api::{Key, Kind, Object, Store};

/// Every problem admission would have with the scenario's requests.
pub fn admit(s: &Scenario) -> Vec<Located> {
    let plan = s.plan(&s.name);
    let api = Api::with_dns_ip(Arc::new(Store::default()), plan.service_cidr, plan.dns_ip);
    // The cluster DNS's objects are there in every testbed.
    if api
        .apply(crate::dns::addon::objects(
            plan.dns_ip,
            crate::dns::addon::REPLICAS,
        ))
        .is_err()
    {
        return vec![Located {
            file: None,
            pos: None,
            message: "the cluster DNS objects are refused".into(),
        }];
    }
    let mut out = apply(&api, &s.objects);
    for step in &s.steps {
        let here = |message: String| Located {
            file: None,
            pos: step.pos,
            message: format!("steps[{}]: {message}", step.index),
        };
        for (what, target) in targets(&step.action) {
            if let Some(why) = unknown(&api, s, what, target) {
                out.push(here(why));
            }
        }
        match &step.action {
            Action::Apply(ms) => out.extend(apply(&api, ms)),
            Action::Delete {
                kind,
                namespace,
                name,
            } if *kind != Kind::Pod => {
                // Pods come and go with Deployments and the kubelets: not checked here.
                if let Err(p) = api.delete(&Key::new(*kind, namespace, name)) {
                    out.push(here(format!(
                        "{p} (no step before it creates it, and the cluster does not have it)"
                    )));
                }
            }
            Action::Scale {
                namespace, name, ..
            } => {
                if let Err(p) = api.scale(namespace, name, 0) {
                    out.extend(p.iter().map(|p| here(p.to_string())));
                }
            }
            _ => {}
        }
    }
    out
}

/// The pods and nodes a step acts on or from, each with what the step calls it.
fn targets(action: &Action) -> Vec<(&'static str, &str)> {
    use super::steps::{Until, View};
    fn pod_or_node(t: &str) -> (&'static str, &str) {
        (
            if t.starts_with("node/") {
                "node"
            } else {
                "pod"
            },
            t,
        )
    }
    match action {
        Action::Dns(q) => vec![("pod", q.from.as_str())],
        Action::Connect(c) => vec![("pod", c.from.as_str())],
        Action::Exec { target, .. } => vec![pod_or_node(target)],
        Action::Kill(pod) | Action::Readiness { pod, .. } => vec![("pod", pod.as_str())],
        Action::Node { name, .. } => vec![("node", name.as_str())],
        Action::Link { of, .. } => vec![pod_or_node(of)],
        Action::Wait {
            until: Until::Pod { pod, .. } | Until::Resolves { from: pod, .. },
            ..
        } => vec![("pod", pod.as_str())],
        Action::Snapshot { view, .. } => match view {
            View::Dns(q) => vec![("pod", q.from.as_str())],
            View::Backends(c) => vec![("pod", c.from.as_str())],
            View::Pod(p) => vec![("pod", p.as_str())],
            View::Nat(n) => vec![("node", n.as_str())],
            _ => vec![],
        },
        _ => vec![],
    }
}

/// Why `target` (a pod, `NAMESPACE/POD`, or a node, `node/NAME` or `NAME`) names
/// nothing the scenario has by this step: its pods, the pods applied so far, or a
/// pod of a Deployment applied so far (whose names start with the Deployment's).
fn unknown(api: &Api, s: &Scenario, what: &str, target: &str) -> Option<String> {
    if what == "node" {
        let node = target.strip_prefix("node/").unwrap_or(target);
        return (!s.cluster.nodes.iter().any(|n| n == node)).then(|| {
            format!(
                "there is no node {node:?} (nodes: {})",
                s.cluster.nodes.join(", ")
            )
        });
    }
    let (ns, name) = target.split_once('/').unwrap_or(("default", target));
    let declared = s.pods.iter().any(|p| p.namespace == ns && p.name == name);
    let applied = api.store.get(&Key::new(Kind::Pod, ns, name)).is_some();
    let of_deployment = api
        .store
        .list(Kind::Deployment, Some(ns))
        .iter()
        .any(|d| name.starts_with(&format!("{}-", d.name())));
    if declared || applied || of_deployment {
        return None;
    }
    let mut known: Vec<String> = s
        .pods
        .iter()
        .map(|p| {
            if p.namespace == "default" {
                p.name.clone()
            } else {
                format!("{}/{}", p.namespace, p.name)
            }
        })
        .collect();
    known.sort();
    Some(format!(
        "there is no pod {ns}/{name}: the scenario declares none, and no step before it applies one \
         (pods: {})",
        if known.is_empty() { "none".to_string() } else { known.join(", ") }
    ))
}

fn apply(api: &Api, manifests: &[Manifest]) -> Vec<Located> {
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for m in manifests {
        let kind = m
            .value
            .get("kind")
            .and_then(|k| k.as_str())
            .and_then(Kind::parse);
        match kind.map(|k| Object::from_value(k, m.value.clone())) {
            Some(Ok(o)) => objects.push(o),
            Some(Err(e)) => problems.push(m.problem("", e)),
            None => problems.push(m.problem("kind", "not a kind the testbed serves".into())),
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    match api.apply(objects) {
        Ok(_) => Vec::new(),
        Err(ps) => ps
            .iter()
            .map(
                |p: &ObjectProblem| match p.index.and_then(|i| manifests.get(i)) {
                    Some(m) => m.problem(&p.path, p.to_string()),
                    None => Located {
                        file: None,
                        pos: None,
                        message: p.to_string(),
                    },
                },
            )
            .collect(),
    }
}

/// Reads a scenario and checks everything that can be checked without building it:
/// its shape and meaning, its manifests, and admission's view of its requests.
pub fn load(file: &std::path::Path) -> Result<Scenario, super::ScenarioError> {
    let s = super::load(file)?;
    let problems = admit(&s);
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(super::ScenarioError {
            file: file.to_path_buf(),
            problems,
        })
    }
}
