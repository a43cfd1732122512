//! The ReplicaSet controller: keeps `replicas` active pods of its template, as
//! upstream's `manageReplicas`. Pods are named `<replicaset>-<5 chars>`; Kubernetes
//! picks the chars at random, here they follow from the pod's ordinal so a run
//! repeats its names. When it has too many, the pods go in upstream's
//! `getPodsToDelete` order ([`super::pod_rank`]). A deleted ReplicaSet's pods go too
//! (the garbage collector's cascade).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::pod_rank::{self, active};
use crate::api::graceful;
use crate::api::labels::ready_condition;
use crate::api::{Event, EventType, Key, Kind, Object, Store};
use crate::informer::Reconcile;

/// The label a Deployment's ReplicaSets and their pods carry: its template's hash.
pub const TEMPLATE_HASH_LABEL: &str = "pod-template-hash";
/// The pod's place among its ReplicaSet's pods, from which its name follows.
pub const ORDINAL_ANNOTATION: &str = "testbed/ordinal";

/// The name of the `ordinal`th pod of a ReplicaSet. A Deployment's ReplicaSet
/// `web-<hash>` names them as the Deployment always has.
pub fn pod_name(rs: &ReplicaSet, ordinal: u32) -> String {
    let name = rs.metadata.name.as_deref().unwrap_or_default();
    let seed = match (controller_of(&rs.metadata), hash_of(&rs.metadata)) {
        (Some(owner), Some(hash)) if owner.kind == "Deployment" => {
            format!("{}/{hash}/{ordinal}", owner.name)
        }
        _ => format!("{name}/{ordinal}"),
    };
    let h = Sha256::digest(seed.as_bytes());
    format!("{name}-{}", crate::names::k8s_suffix(&h, 5))
}

/// An object's controlling owner.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// Whether `meta`'s controller is the `kind` named `name`.
pub fn controlled_by(meta: &ObjectMeta, kind: &str, name: &str) -> bool {
    controller_of(meta).is_some_and(|o| o.kind == kind && o.name == name)
}

pub fn hash_of(meta: &ObjectMeta) -> Option<&str> {
    meta.labels
        .as_ref()?
        .get(TEMPLATE_HASH_LABEL)
        .map(String::as_str)
}

fn ordinal(p: &Pod) -> u32 {
    crate::api::labels::annotation(&p.metadata, ORDINAL_ANNOTATION).unwrap_or(u32::MAX)
}

/// What to do to reach the ReplicaSet's wish from the pods it owns.
#[derive(Debug, Default, PartialEq)]
pub struct Step {
    pub create: Vec<Pod>,
    pub delete: Vec<String>,
    pub status: ReplicaSetStatus,
}

/// One pass of the controller: `owned` are its pods (terminating ones too, which
/// keep their names), `related` the pods of every ReplicaSet of its owner.
pub fn reconcile(rs: &ReplicaSet, owned: &[&Pod], related: &[&Pod], now: &Time) -> Step {
    let mut step = Step::default();
    let Some(spec) = &rs.spec else {
        return step;
    };
    let want = spec.replicas.unwrap_or(1).max(0) as usize;
    let live: Vec<&Pod> = owned.iter().copied().filter(|p| active(p)).collect();
    if live.len() > want {
        step.delete = pod_rank::to_delete(&live, related, live.len() - want, now)
            .into_iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
    }
    // Too few: the lowest ordinals no pod of it holds.
    let used: HashSet<u32> = owned.iter().map(|p| ordinal(p)).collect();
    let mut free = (0..).filter(|o| !used.contains(o));
    for _ in live.len()..want {
        let next = free.next().expect("ordinals are endless");
        step.create.push(new_pod(rs, next));
    }
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let labelled = live.iter().filter(|p| {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    });
    let ready = live.iter().filter(|p| ready_condition(p)).count() as i32;
    step.status = ReplicaSetStatus {
        replicas: live.len() as i32,
        fully_labeled_replicas: Some(labelled.count() as i32),
        ready_replicas: Some(ready),
        // minReadySeconds is 0 here: a ready pod is available.
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        ..Default::default()
    };
    step
}

/// A pod of the template (`GetPodFromTemplate`), owned by the ReplicaSet.
fn new_pod(rs: &ReplicaSet, ordinal: u32) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(ORDINAL_ANNOTATION.into(), ordinal.to_string());
    // What admission gives every pod the API server creates.
    let mut spec = template.spec;
    if let Some(spec) = &mut spec {
        crate::api::taints::add_default_tolerations(spec);
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(rs, ordinal)),
            generate_name: rs.metadata.name.as_ref().map(|n| format!("{n}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: rs.metadata.name.clone().unwrap_or_default(),
                uid: rs.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

/// Runs the controller until the store's watch ends.
pub async fn run(store: Arc<Store>, synced: &watch::Sender<u64>) {
    let controller = Controller {
        store: store.clone(),
        sets: BTreeMap::new(),
        pods: HashMap::new(),
    };
    crate::informer::run(store, controller, synced).await
}

type NsName = (String, String);

struct Controller {
    store: Arc<Store>,
    sets: BTreeMap<NsName, ReplicaSet>,
    pods: HashMap<NsName, Pod>,
}

#[async_trait::async_trait]
impl Reconcile for Controller {
    /// A ReplicaSet.
    type Key = NsName;

    fn kinds(&self) -> &'static [Kind] {
        &[Kind::ReplicaSet, Kind::Pod]
    }

    fn observe(&mut self, event: Event, dirty: &mut BTreeSet<NsName>) {
        let deleted = event.kind == EventType::Deleted;
        let key = (
            event.object.namespace().to_string(),
            event.object.name().to_string(),
        );
        match event.object {
            Object::ReplicaSet(rs) => {
                dirty.insert(key.clone());
                if deleted {
                    self.sets.remove(&key);
                } else {
                    self.sets.insert(key, rs);
                }
            }
            Object::Pod(p) => {
                if let Some(o) = controller_of(&p.metadata).filter(|o| o.kind == "ReplicaSet") {
                    dirty.insert((key.0.clone(), o.name.clone()));
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
        let now = crate::api::store::now();
        for (ns, name) in dirty {
            self.sync(&ns, &name, &now);
        }
        Ok(())
    }
}

impl Controller {
    fn pods_of(&self, ns: &str, rs: &str) -> Vec<&Pod> {
        self.pods
            .iter()
            .filter(|((pns, _), p)| pns == ns && controlled_by(&p.metadata, "ReplicaSet", rs))
            .map(|(_, p)| p)
            .collect()
    }

    /// The pods of every ReplicaSet with the same owner as `rs` (its own without one).
    fn related(&self, ns: &str, rs: &ReplicaSet) -> Vec<&Pod> {
        let name = rs.metadata.name.as_deref().unwrap_or_default();
        let Some(owner) = controller_of(&rs.metadata) else {
            return self.pods_of(ns, name);
        };
        self.sets
            .iter()
            .filter(|((sns, _), s)| sns == ns && controller_of(&s.metadata) == Some(owner))
            .flat_map(|((_, n), _)| self.pods_of(ns, n))
            .collect()
    }

    /// Makes the pods of ReplicaSet `ns/name` what its spec asks, and its status
    /// what they are; a deleted ReplicaSet's pods go too.
    fn sync(&self, ns: &str, name: &str, now: &Time) {
        let store = &self.store;
        let owned = self.pods_of(ns, name);
        let Some(rs) = self.sets.get(&(ns.to_string(), name.to_string())) else {
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
        let related = self.related(ns, rs);
        let step = reconcile(rs, &owned, &related, now);
        let status_changed = rs.status.as_ref() != Some(&step.status);
        if step.create.is_empty() && step.delete.is_empty() && !status_changed {
            return;
        }
        let key = Key::new(Kind::ReplicaSet, ns, name);
        store.write(|tx| {
            // Pods go as the API server deletes them: gracefully, when they run.
            for n in &step.delete {
                graceful::delete_pod(tx, &Key::new(Kind::Pod, ns, n));
            }
            for p in step.create {
                let key = Key::new(
                    Kind::Pod,
                    ns,
                    p.metadata.name.as_deref().unwrap_or_default(),
                );
                if tx.get(&key).is_none() {
                    tx.put(Object::Pod(p));
                }
            }
            if let Some(Object::ReplicaSet(mut now)) = tx.get(&key).cloned() {
                if now.status.as_ref() != Some(&step.status) {
                    now.status = Some(step.status);
                    tx.put(Object::ReplicaSet(now));
                }
            }
        });
    }
}
