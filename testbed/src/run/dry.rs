//! A dry run of a scenario's API requests against a scratch API server (no cluster,
//! no root): its objects and every `apply`, `delete` and `scale` step in order, so
//! that admission's complaints (a port out of range, a ClusterIP outside the range or
//! taken, a Deployment that is not there to scale) come with their file and line
//! before anything is built.

use std::sync::Arc;

use crate::api::server::{Api, ObjectProblem};
use crate::api::{Key, Kind, Object, Store};
use crate::scenario::objects::Manifest;
use crate::scenario::steps::Action;
use crate::scenario::{Located, Scenario};

/// Every problem admission would have with the scenario's requests.
pub fn admit(s: &Scenario) -> Vec<Located> {
    let plan = crate::plan::Plan::new(&s.name, s);
    let api = Api::with_dns_ip(Arc::new(Store::default()), plan.service_cidr, plan.dns_ip);
    // The cluster DNS's objects are there in every testbed.
    if api
        .apply(crate::dns::addon::objects(plan.dns_ip, 2))
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
pub fn load(file: &std::path::Path) -> Result<Scenario, crate::scenario::ScenarioError> {
    let s = crate::scenario::load(file)?;
    let problems = admit(&s);
    if problems.is_empty() {
        Ok(s)
    } else {
        Err(crate::scenario::ScenarioError {
            file: file.to_path_buf(),
            problems,
        })
    }
}
