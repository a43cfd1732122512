//! The Deployment controller: keeps `replicas` pods of the current template, named
//! `<deployment>-<template hash>-<suffix>` with suffixes that repeat from run to run
//! (Kubernetes picks them at random). A changed template rolls: pods of the new
//! template are made first, the old ones go once enough new ones are Ready. Pods are
//! owned by the Deployment directly (there are no ReplicaSet objects here).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::api::graceful;
use crate::api::labels::pod_ready;
use crate::api::{Event, EventType, Key, Kind, Object, Store};
use crate::informer::Reconcile;

pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
pub const ORDINAL_ANNOTATION: &str = "testbed/ordinal";
/// A short hash of the pod template, as the `pod-template-hash` label.
pub fn template_hash(d: &Deployment) -> String {
    let template = d
        .spec
        .as_ref()
        .map(|s| serde_json::to_string(&s.template).unwrap_or_default());
    crate::names::k8s_suffix(&Sha256::digest(template.unwrap_or_default().as_bytes()), 10)
}

/// The name of the `ordinal`th pod of a template.
pub fn pod_name(deployment: &str, hash: &str, ordinal: u32) -> String {
    let h = Sha256::digest(format!("{deployment}/{hash}/{ordinal}").as_bytes());
    format!("{deployment}-{hash}-{}", crate::names::k8s_suffix(&h, 5))
}

fn ordinal(p: &Pod) -> u32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ORDINAL_ANNOTATION))
        .and_then(|o| o.parse().ok())
        .unwrap_or(u32::MAX)
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(TEMPLATE_HASH_LABEL)
        .map(String::as_str)
}

/// Whether `pod` belongs to the Deployment `name`.
pub fn owned_by(pod: &Pod, name: &str) -> bool {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "Deployment" && o.name == name)
}

/// What to do to reach the Deployment's wish from the pods it owns.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub create: Vec<Pod>,
    pub delete: Vec<String>,
    pub status: DeploymentStatus,
}

/// A pod that counts (the ReplicaSet controller's `FilterActivePods`): not being
/// deleted, not finished.
fn active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

// Long because it is the ReplicaSet controller's one pass: count the active pods, scale
// down, create at free ordinals, retire the old template, and the status.
pub fn reconcile(d: &Deployment, all: &[&Pod]) -> Step {
    let Some(spec) = &d.spec else {
        return Step::default();
    };
    let name = d.metadata.name.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let hash = template_hash(d);
    // Terminating pods are not counted (a deleted one is replaced at once), but they
    // keep their names until they are gone.
    let owned: Vec<&Pod> = all.iter().copied().filter(|p| active(p)).collect();
    let (mut current, old): (Vec<&Pod>, Vec<&Pod>) = owned
        .iter()
        .partition(|p| hash_of(p) == Some(hash.as_str()));
    current.sort_by_key(|p| ordinal(p));
    let mut step = Step::default();
    // Too many: the newest go first.
    while current.len() > want {
        let p = current.pop().expect("non-empty");
        step.delete
            .push(p.metadata.name.clone().unwrap_or_default());
    }
    // Too few: the lowest ordinals no pod of this template has.
    let used: HashSet<u32> = all
        .iter()
        .filter(|p| hash_of(p) == Some(hash.as_str()))
        .map(|p| ordinal(p))
        .collect();
    let mut next = 0;
    for _ in current.len()..want {
        while used.contains(&next) {
            next += 1;
        }
        let mut labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(TEMPLATE_HASH_LABEL.into(), hash.clone());
        let mut annotations = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        annotations.insert(ORDINAL_ANNOTATION.into(), next.to_string());
        step.create.push(Pod {
            metadata: ObjectMeta {
                name: Some(pod_name(&name, &hash, next)),
                namespace: d.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: Some(annotations),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: name.clone(),
                    uid: d.metadata.uid.clone().unwrap_or_default(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: spec.template.spec.clone(),
            status: None,
        });
        next += 1;
    }
    let ready_new = current.iter().filter(|p| pod_ready(p)).count();
    // The old template's pods go once the new ones can take over.
    if ready_new >= want {
        step.delete.extend(
            old.iter()
                .map(|p| p.metadata.name.clone().unwrap_or_default()),
        );
    }
    let ready_all = owned.iter().filter(|p| pod_ready(p)).count() as i32;
    step.status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(owned.len() as i32),
        updated_replicas: Some(current.len() as i32),
        ready_replicas: Some(ready_all),
        available_replicas: Some(ready_all),
        unavailable_replicas: Some((want as i32 - ready_new as i32).max(0)),
        ..Default::default()
    };
    step
}

/// Runs the controller until the store's watch ends.
pub async fn run(store: Arc<Store>, synced: &watch::Sender<u64>) {
    let controller = DeploymentController {
        store: store.clone(),
        deployments: BTreeMap::new(),
        pods: HashMap::new(),
    };
    crate::informer::run(store, controller, synced).await
}

type NsName = (String, String);

struct DeploymentController {
    store: Arc<Store>,
    deployments: BTreeMap<NsName, Deployment>,
    pods: HashMap<NsName, Pod>,
}

#[async_trait::async_trait]
impl Reconcile for DeploymentController {
    /// A Deployment.
    type Key = NsName;

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Deployment, Kind::Pod]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<NsName>) {
        let deleted = event.kind == EventType::Deleted;
        let key = (
            event.object.namespace().to_string(),
            event.object.name().to_string(),
        );
        match event.object {
            Object::Deployment(d) => {
                dirty.insert(key.clone());
                if deleted {
                    self.deployments.remove(&key);
                } else {
                    self.deployments.insert(key, d);
                }
            }
            Object::Pod(p) => {
                for o in p.metadata.owner_references.iter().flatten() {
                    if o.kind == "Deployment" {
                        dirty.insert((key.0.clone(), o.name.clone()));
                    }
                }
                if deleted {
                    self.pods.remove(&key);
                } else {
                    self.pods.insert(key, p);
                }
            }
            _ => {}
        }
    }

    async fn reconcile(&mut self, dirty: BTreeSet<NsName>, _: u64) -> Result<(), BTreeSet<NsName>> {
        for (ns, name) in dirty {
            self.sync(&ns, &name);
        }
        Ok(())
    }
}

impl DeploymentController {
    /// Makes the pods of Deployment `ns/name` what its spec asks, and its status
    /// what they are; a deleted Deployment's pods go too.
    fn sync(&self, ns: &str, name: &str) {
        let store = &self.store;
        let owned: Vec<&Pod> = self
            .pods
            .iter()
            .filter(|((pns, _), p)| pns == ns && owned_by(p, name))
            .map(|(_, p)| p)
            .collect();
        let Some(d) = self.deployments.get(&(ns.to_string(), name.to_string())) else {
            // Deleted: its pods go too (Kubernetes' garbage collector).
            let doomed: Vec<Key> = owned
                .iter()
                .map(|p| {
                    Key::new(
                        Kind::Pod,
                        ns,
                        p.metadata.name.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            store.write(|tx| doomed.iter().for_each(|k| graceful::delete_pod(tx, k)));
            return;
        };
        let step = reconcile(d, &owned);
        let status_changed = d.status.as_ref() != Some(&step.status);
        if step.create.is_empty() && step.delete.is_empty() && !status_changed {
            return;
        }
        let key = Key::new(Kind::Deployment, ns, name);
        store.write(|tx| {
            // Pods go as the API server deletes them: gracefully, when they run.
            for n in &step.delete {
                graceful::delete_pod(tx, &Key::new(Kind::Pod, ns, n));
            }
            for p in step.create {
                tx.put(Object::Pod(p));
            }
            // The status goes on the Deployment as it is now: a user's change
            // may be newer than what this controller has seen.
            if let Some(Object::Deployment(mut now)) = tx.get(&key).cloned() {
                if status_changed && now.status.as_ref() != Some(&step.status) {
                    now.status = Some(step.status);
                    tx.put(Object::Deployment(now));
                }
            }
        });
    }
}
