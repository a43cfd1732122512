//! The Deployment controller: owns ReplicaSets named `<deployment>-<template hash>`,
//! one per template it has had, and sizes them as [`super::rollout`] says; the
//! ReplicaSet controller makes their pods. A deleted Deployment's ReplicaSets go
//! too (the garbage collector's cascade), and their pods with them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::replicaset::{controlled_by, controller_of};
use super::rollout::{self, Plan, DESIRED_REPLICAS, MAX_REPLICAS, REVISION};
use crate::api::events::{self, Type};
use crate::api::{Event, EventType, Key, Kind, Object, Store};
use crate::informer::Reconcile;

pub use super::replicaset::TEMPLATE_HASH_LABEL;
pub use super::rollout::template_hash;

/// Whether `pod` belongs to Deployment `name`: its ReplicaSet is the Deployment's
/// `<name>-<hash>`, as the pod's `pod-template-hash` label says.
pub fn owned_by(pod: &Pod, name: &str) -> bool {
    let Some(owner) = controller_of(&pod.metadata).filter(|o| o.kind == "ReplicaSet") else {
        return false;
    };
    super::replicaset::hash_of(&pod.metadata)
        .is_some_and(|hash| owner.name == format!("{name}-{hash}"))
}

/// Runs the controller until the store's watch ends.
pub async fn run(store: Arc<Store>, synced: &watch::Sender<u64>) {
    let controller = Controller {
        store: store.clone(),
        deployments: BTreeMap::new(),
        sets: BTreeMap::new(),
        pods: HashMap::new(),
    };
    crate::informer::run(store, controller, synced).await
}

type NsName = (String, String);

struct Controller {
    store: Arc<Store>,
    deployments: BTreeMap<NsName, Deployment>,
    sets: BTreeMap<NsName, ReplicaSet>,
    /// Each pod's ReplicaSet and whether it has not finished.
    pods: HashMap<NsName, (String, bool)>,
}

#[async_trait::async_trait]
impl Reconcile for Controller {
    /// A Deployment.
    type Key = NsName;

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::Deployment, Kind::ReplicaSet, Kind::Pod]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<NsName>) {
        let deleted = event.kind == EventType::Deleted;
        let ns = event.object.namespace().to_string();
        let key = (ns.clone(), event.object.name().to_string());
        match event.object {
            Object::Deployment(d) => {
                dirty.insert(key.clone());
                if deleted {
                    self.deployments.remove(&key);
                } else {
                    self.deployments.insert(key, d);
                }
            }
            Object::ReplicaSet(rs) => {
                if let Some(o) = controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                    dirty.insert((ns, o.name.clone()));
                }
                if deleted {
                    self.sets.remove(&key);
                } else {
                    self.sets.insert(key, rs);
                }
            }
            Object::Pod(p) => {
                let Some(rs) = controller_of(&p.metadata).filter(|o| o.kind == "ReplicaSet") else {
                    return;
                };
                let owner = self
                    .sets
                    .get(&(ns.clone(), rs.name.clone()))
                    .and_then(|s| controller_of(&s.metadata))
                    .filter(|o| o.kind == "Deployment");
                if let Some(o) = owner {
                    dirty.insert((ns, o.name.clone()));
                }
                if deleted {
                    self.pods.remove(&key);
                } else {
                    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                    let running = !matches!(phase, Some("Succeeded" | "Failed"));
                    self.pods.insert(key, (rs.name.clone(), running));
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

impl Controller {
    /// Sizes the ReplicaSets of Deployment `ns/name` and writes its status; a
    /// deleted Deployment's ReplicaSets go.
    fn sync(&self, ns: &str, name: &str) {
        let owned: Vec<ReplicaSet> = self
            .sets
            .iter()
            .filter(|((sns, _), rs)| sns == ns && controlled_by(&rs.metadata, "Deployment", name))
            .map(|(_, rs)| rs.clone())
            .collect();
        let Some(d) = self.deployments.get(&(ns.to_string(), name.to_string())) else {
            let doomed: Vec<Key> = owned
                .iter()
                .map(|rs| {
                    Key::new(
                        Kind::ReplicaSet,
                        ns,
                        rs.metadata.name.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            if !doomed.is_empty() {
                self.store.write(|tx| {
                    for k in &doomed {
                        tx.delete(k);
                    }
                });
            }
            return;
        };
        let running = |rs: &str| {
            self.pods
                .iter()
                .filter(|((pns, _), (of, running))| pns == ns && of == rs && *running)
                .count()
        };
        let plan = rollout::sync(d, &owned, &running, &crate::api::store::now());
        let revision_changed = plan.revision.is_some()
            && d.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION))
                != plan.revision.as_ref();
        let nothing = plan.create.is_none()
            && plan.update.is_empty()
            && plan.delete.is_empty()
            && d.status.as_ref() == Some(&plan.status)
            && !revision_changed;
        if !nothing {
            self.write(ns, name, plan);
        }
    }

    fn write(&self, ns: &str, name: &str, plan: Plan) {
        let key = Key::new(Kind::Deployment, ns, name);
        self.store.write(|tx| {
            if let Some(rs) = plan.create {
                let k = Key::new(
                    Kind::ReplicaSet,
                    ns,
                    rs.metadata.name.as_deref().unwrap_or_default(),
                );
                if tx.get(&k).is_none() {
                    tx.put(Object::ReplicaSet(rs));
                }
            }
            for rs in plan.update {
                // Onto the ReplicaSet as it is now: its status may be newer.
                let k = Key::new(
                    Kind::ReplicaSet,
                    ns,
                    rs.metadata.name.as_deref().unwrap_or_default(),
                );
                if let Some(Object::ReplicaSet(mut now)) = tx.get(&k).cloned() {
                    now.spec = rs.spec;
                    let notes = now
                        .metadata
                        .annotations
                        .get_or_insert_with(Default::default);
                    for a in [REVISION, DESIRED_REPLICAS, MAX_REPLICAS] {
                        if let Some(v) = rs.metadata.annotations.as_ref().and_then(|m| m.get(a)) {
                            notes.insert(a.into(), v.clone());
                        }
                    }
                    tx.put(Object::ReplicaSet(now));
                }
            }
            for n in &plan.delete {
                tx.delete(&Key::new(Kind::ReplicaSet, ns, n));
            }
            let Some(Object::Deployment(mut now)) = tx.get(&key).cloned() else {
                return;
            };
            for message in plan.events {
                let record = events::Record {
                    about: events::reference(&Object::Deployment(now.clone())),
                    type_: Type::Normal,
                    reason: "ScalingReplicaSet",
                    message,
                    source: events::Source {
                        component: "deployment-controller",
                        host: None,
                    },
                };
                events::record_in(tx, record, false);
            }
            let mut changed = false;
            if let Some(r) = plan.revision {
                let notes = now
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                changed |= notes.insert(REVISION.into(), r.clone()).as_ref() != Some(&r);
            }
            if now.status.as_ref() != Some(&plan.status) {
                now.status = Some(plan.status);
                changed = true;
            }
            if changed {
                tx.put(Object::Deployment(now));
            }
        });
    }
}
