//! A dry run of a scenario's API requests against a scratch API server (no cluster,
//! no root): its objects and every `apply`, `delete` and `scale` step in order, so
//! that admission's complaints (a port out of range, a ClusterIP outside the range or
//! taken, a Deployment that is not there to scale) come with their file and line
//! before anything is built.

use std::sync::Arc;

use super::{Located, Scenario};
use crate::api::server::Api;
use crate::api::{Key, Kind, Store};

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
    let mut out = super::steps::apply::dry_run(&api, &s.objects);
    for step in &s.steps {
        let here = |message: String| Located {
            file: None,
            pos: step.pos,
            message: format!("steps[{}]: {message}", step.index),
        };
        for (what, target) in step.action.targets() {
            if let Some(why) = unknown(&api, s, what, target) {
                out.push(here(why));
            }
        }
        out.extend(step.action.dry_run(&api, &here));
    }
    out
}

/// Why `target` (a pod, `NAMESPACE/POD`, or a node, `node/NAME` or `NAME`) names
/// nothing the scenario has by this step: its pods, the pods applied so far, or a
/// pod of a Deployment applied so far (whose names start with the Deployment's).
fn unknown(api: &Api, s: &Scenario, what: &str, target: &str) -> Option<String> {
    if what == "host" {
        let host = target.strip_prefix("host/").unwrap_or(target);
        let known = || {
            std::iter::once(crate::plan::OUTSIDE_HOST)
                .chain(s.cluster.hosts.iter().map(String::as_str))
        };
        return (!known().any(|h| h == host)).then(|| {
            format!(
                "there is no host {host:?} (hosts: {})",
                known().collect::<Vec<_>>().join(", ")
            )
        });
    }
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
