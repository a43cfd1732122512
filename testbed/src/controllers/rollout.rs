//! What a Deployment does to its ReplicaSets in one pass, as upstream's deployment
//! controller (pkg/controller/deployment: sync.go, rolling.go, recreate.go,
//! progress.go and util/deployment_util.go): a scaling event scales them in
//! proportion; a RollingUpdate adds new pods up to `maxSurge` over the replicas and
//! takes old ones away while at most `maxUnavailable` are missing; Recreate removes
//! every old pod before the new ones come. One step per pass: each waits for the
//! ReplicaSets' status to move before the next.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sha2::{Digest, Sha256};

use super::replicaset::TEMPLATE_HASH_LABEL;
pub use super::rollout_status::status;
use super::rollout_status::{self, Observed};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// A short hash of the pod template, as the `pod-template-hash` label (upstream
/// hashes it with FNV; the names only need to be stable and distinct).
pub fn template_hash(d: &Deployment) -> String {
    let template = d
        .spec
        .as_ref()
        .map(|s| serde_json::to_string(&s.template).unwrap_or_default());
    crate::names::k8s_suffix(&Sha256::digest(template.unwrap_or_default().as_bytes()), 10)
}

/// What one pass changes.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The new ReplicaSet, made in this pass.
    pub create: Option<ReplicaSet>,
    /// ReplicaSets whose replicas or annotations change.
    pub update: Vec<ReplicaSet>,
    /// Old ReplicaSets beyond `revisionHistoryLimit`.
    pub delete: Vec<String>,
    pub status: DeploymentStatus,
    /// The Deployment's revision (its new ReplicaSet's).
    pub revision: Option<String>,
    /// `ScalingReplicaSet` events' messages.
    pub events: Vec<String>,
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn available_of(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

fn annotation(rs: &ReplicaSet, key: &str) -> Option<i64> {
    crate::api::labels::annotation(&rs.metadata, key)
}

fn name_of(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or_default()
}

/// `maxSurge` and `maxUnavailable` as numbers of pods (`ResolveFenceposts`): a
/// surge percentage rounds up, an unavailable one down, and both 0 makes
/// unavailable 1. Recreate: none of either.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let Some(spec) = &d.spec else { return (0, 0) };
    let strategy = spec.strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() == Some("Recreate") {
        return (0, 0);
    }
    let want = spec.replicas.unwrap_or(1);
    let ru = strategy.rolling_update.unwrap_or_default();
    let surge = scaled(ru.max_surge.as_ref(), want, true);
    let unavailable = scaled(ru.max_unavailable.as_ref(), want, false);
    if surge == 0 && unavailable == 0 {
        return (0, 1);
    }
    (surge, unavailable)
}

/// An int-or-percent of `total` (25% when unset).
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    let percent = match v {
        Some(IntOrString::Int(n)) => return *n,
        Some(IntOrString::String(s)) => s
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .unwrap_or(25),
        None => 25,
    };
    let n = percent * i64::from(total);
    (if round_up { (n + 99) / 100 } else { n / 100 }) as i32
}

/// `MaxUnavailable`: never more than the replicas, none for Recreate or no replicas.
fn max_unavailable(d: &Deployment, want: i32) -> i32 {
    let rolling = !is_recreate(d);
    if !rolling || want == 0 {
        return 0;
    }
    fenceposts(d).1.min(want)
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// The Deployment's ReplicaSets as one pass sees and changes them.
struct Sets<'a> {
    d: &'a Deployment,
    want: i32,
    surge: i32,
    all: Vec<ReplicaSet>,
    changed: Vec<bool>,
    new: Option<usize>,
    created: bool,
    events: Vec<String>,
}

impl Sets<'_> {
    fn old(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.all.len()).filter(move |i| Some(*i) != self.new)
    }

    fn sum(&self, of: impl Iterator<Item = usize>, f: fn(&ReplicaSet) -> i32) -> i32 {
        of.map(|i| f(&self.all[i])).sum()
    }

    /// Sets ReplicaSet `i` to `n` replicas with the Deployment's size on it
    /// (`scaleReplicaSet`); whether anything changed.
    fn scale(&mut self, i: usize, n: i32) -> bool {
        let rs = &mut self.all[i];
        let was = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
        let desired = self.want.to_string();
        let max = (self.want + self.surge).to_string();
        let notes_changed = annotations.get(DESIRED_REPLICAS) != Some(&desired)
            || annotations.get(MAX_REPLICAS) != Some(&max);
        if was == n && !notes_changed {
            return false;
        }
        annotations.insert(DESIRED_REPLICAS.into(), desired);
        annotations.insert(MAX_REPLICAS.into(), max);
        rs.spec.get_or_insert_with(Default::default).replicas = Some(n);
        self.changed[i] = true;
        if was != n {
            let way = if n > was { "up" } else { "down" };
            self.events.push(format!(
                "Scaled {way} replica set {} from {was} to {n}",
                name_of(rs)
            ));
        }
        was != n
    }

    /// `NewRSNewReplicas`: what the new ReplicaSet may grow to now.
    fn new_rs_new_replicas(&self, new_now: i32) -> i32 {
        if is_recreate(self.d) {
            return self.want;
        }
        let current = self.sum(0..self.all.len(), replicas_of);
        let max_total = self.want + self.surge;
        if current >= max_total {
            return new_now;
        }
        new_now + (max_total - current).min(self.want - new_now)
    }
}

/// The ReplicaSet a Deployment's template makes (`getNewReplicaSet`).
fn new_replica_set(d: &Deployment, hash: &str, revision: i64, replicas: i32) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let name = d.metadata.name.clone().unwrap_or_default();
    let mut template = spec.template;
    let meta = template.metadata.get_or_insert_with(Default::default);
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    meta.labels = Some(labels.clone());
    let mut selector = spec.selector;
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    let annotations = BTreeMap::from([(REVISION.to_string(), revision.to_string())]);
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{hash}")),
            namespace: d.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name,
                uid: d.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector,
            template: Some(template),
            min_ready_seconds: None,
        }),
        status: None,
    }
}

/// One pass over Deployment `d` and the ReplicaSets it owns. `pods_running(rs)`:
/// how many of a ReplicaSet's pods have not finished (terminating ones too).
pub fn sync(
    d: &Deployment,
    owned: &[ReplicaSet],
    pods_running: &dyn Fn(&str) -> usize,
    now: &Time,
) -> Plan {
    let Some(spec) = &d.spec else {
        return Plan::default();
    };
    let want = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(d);
    let mut all = owned.to_vec();
    // Oldest first, names breaking ties (`ReplicaSetsByCreationTimestamp`).
    all.sort_by(|a, b| {
        (&a.metadata.creation_timestamp, name_of(a))
            .cmp(&(&b.metadata.creation_timestamp, name_of(b)))
    });
    // `FindNewReplicaSet`: the oldest whose template is the Deployment's.
    let new = all.iter().position(|rs| same_template(rs, &spec.template));
    let mut sets = Sets {
        d,
        want,
        surge: fenceposts(d).0,
        changed: vec![false; all.len()],
        all,
        new,
        created: false,
        events: Vec::new(),
    };
    if scaling_event(&sets) {
        sync_revision(&mut sets);
        scale(&mut sets);
    } else if is_recreate(d) {
        recreate(&mut sets, &hash, pods_running);
    } else {
        rolling(&mut sets, &hash);
    }
    finish(sets, now)
}

/// `EqualIgnoreHash`: a ReplicaSet's template is `template` but for its
/// `pod-template-hash` label, and for empty fields (Go's structs cannot tell
/// `resources: {}` from none: `kubectl rollout undo` sends it).
fn same_template(rs: &ReplicaSet, template: &PodTemplateSpec) -> bool {
    let Some(mut theirs) = rs.spec.as_ref().and_then(|s| s.template.clone()) else {
        return false;
    };
    if let Some(labels) = theirs.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(TEMPLATE_HASH_LABEL);
    }
    let value = |t: &PodTemplateSpec| pruned(serde_json::to_value(t).unwrap_or_default());
    value(&theirs) == value(template)
}

/// `v` without nulls, empty objects and empty lists, at any depth.
fn pruned(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    let empty = |v: &Value| match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (k, pruned(v)))
                .filter(|(_, v)| !empty(v))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(pruned).collect()),
        v => v,
    }
}

/// A Deployment whose replicas changed since its active ReplicaSets were sized.
fn scaling_event(sets: &Sets) -> bool {
    sets.all
        .iter()
        .filter(|rs| replicas_of(rs) > 0)
        .any(|rs| annotation(rs, DESIRED_REPLICAS).is_some_and(|n| n != i64::from(sets.want)))
}

fn max_old_revision(sets: &Sets) -> i64 {
    sets.old()
        .filter_map(|i| annotation(&sets.all[i], REVISION))
        .max()
        .unwrap_or(0)
}

/// The new ReplicaSet takes the next revision (a rollback to an old template
/// brings its ReplicaSet back as the newest revision).
fn sync_revision(sets: &mut Sets) {
    let Some(i) = sets.new else { return };
    let next = max_old_revision(sets) + 1;
    if annotation(&sets.all[i], REVISION).is_none_or(|r| r < next) {
        sets.all[i]
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(REVISION.into(), next.to_string());
        sets.changed[i] = true;
    }
}

/// The new ReplicaSet, made if there is none (at the size it may have now).
fn get_or_create_new(sets: &mut Sets, hash: &str) -> usize {
    if let Some(i) = sets.new {
        sync_revision(sets);
        return i;
    }
    let replicas = sets.new_rs_new_replicas(0);
    let mut rs = new_replica_set(sets.d, hash, max_old_revision(sets) + 1, replicas);
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    annotations.insert(DESIRED_REPLICAS.into(), sets.want.to_string());
    annotations.insert(MAX_REPLICAS.into(), (sets.want + sets.surge).to_string());
    if replicas > 0 {
        sets.events.push(format!(
            "Scaled up replica set {} from 0 to {replicas}",
            name_of(&rs)
        ));
    }
    sets.all.push(rs);
    sets.changed.push(false);
    sets.created = true;
    sets.new = Some(sets.all.len() - 1);
    sets.all.len() - 1
}

/// `scale`: the only active ReplicaSet takes the new size; a saturated new one
/// leaves the old at 0; else each grows or shrinks in proportion to its size.
fn scale(sets: &mut Sets) {
    let active: Vec<usize> = (0..sets.all.len())
        .filter(|i| replicas_of(&sets.all[*i]) > 0)
        .collect();
    let only = match active.len() {
        0 => sets.new.or(sets.all.len().checked_sub(1)),
        1 => Some(active[0]),
        _ => None,
    };
    if let Some(i) = only {
        sets.scale(i, sets.want);
        return;
    }
    if let Some(n) = sets.new {
        let rs = &sets.all[n];
        let saturated = replicas_of(rs) == sets.want
            && annotation(rs, DESIRED_REPLICAS) == Some(i64::from(sets.want))
            && available_of(rs) == sets.want;
        if saturated {
            for i in active.into_iter().filter(|i| *i != n) {
                sets.scale(i, 0);
            }
            return;
        }
    }
    let allowed = if sets.want > 0 {
        sets.want + sets.surge
    } else {
        0
    };
    let to_add = allowed - sets.sum(active.iter().copied(), replicas_of);
    let mut order = active;
    // Growing: the biggest first, newer before older; shrinking: older first.
    order.sort_by(|a, b| {
        let (ra, rb) = (&sets.all[*a], &sets.all[*b]);
        let by_size = replicas_of(rb).cmp(&replicas_of(ra));
        let by_age = (&ra.metadata.creation_timestamp, name_of(ra))
            .cmp(&(&rb.metadata.creation_timestamp, name_of(rb)));
        by_size.then(if to_add > 0 { by_age.reverse() } else { by_age })
    });
    let mut added = 0;
    let mut sizes = Vec::new();
    for &i in &order {
        let p = proportion(sets, &sets.all[i], to_add, added);
        sizes.push(replicas_of(&sets.all[i]) + p);
        added += p;
    }
    for (k, &i) in order.iter().enumerate() {
        let mut n = sizes[k];
        if k == 0 && to_add != 0 {
            n = (n + to_add - added).max(0);
        }
        sets.scale(i, n);
    }
}

/// `GetProportion`: a ReplicaSet's share of `to_add`, within what is left.
fn proportion(sets: &Sets, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if replicas_of(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if sets.want == 0 {
        -replicas_of(rs)
    } else {
        let target = i64::from(sets.want + sets.surge);
        let annotated = annotation(rs, MAX_REPLICAS).unwrap_or_else(|| {
            i64::from(sets.d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0))
        });
        if annotated == 0 {
            0
        } else {
            let size = (i64::from(replicas_of(rs)) * target) as f64 / annotated as f64;
            size.round() as i32 - replicas_of(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// `rolloutRolling`: grow the new ReplicaSet within the surge, else shrink the old
/// within the unavailability allowed.
fn rolling(sets: &mut Sets, hash: &str) {
    let n = get_or_create_new(sets, hash);
    // reconcileNewReplicaSet
    let new_now = replicas_of(&sets.all[n]);
    if new_now > sets.want {
        sets.scale(n, sets.want);
        return;
    }
    if new_now < sets.want {
        let grow = sets.new_rs_new_replicas(new_now);
        if sets.scale(n, grow) {
            return;
        }
    }
    // reconcileOldReplicaSets
    let old_pods = sets.sum(sets.old(), replicas_of);
    if old_pods == 0 {
        return;
    }
    let all_pods = sets.sum(0..sets.all.len(), replicas_of);
    let min_available = sets.want - max_unavailable(sets.d, sets.want);
    let new_unavailable = replicas_of(&sets.all[n]) - available_of(&sets.all[n]);
    let max_scaled_down = all_pods - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return;
    }
    let mut old: Vec<usize> = sets.old().collect();
    old.sort_by(|a, b| {
        let (ra, rb) = (&sets.all[*a], &sets.all[*b]);
        (&ra.metadata.creation_timestamp, name_of(ra))
            .cmp(&(&rb.metadata.creation_timestamp, name_of(rb)))
    });
    // cleanupUnhealthyReplicas: old pods that are not available go first.
    let mut cleaned = 0;
    for &i in &old {
        if cleaned >= max_scaled_down {
            break;
        }
        let (r, a) = (replicas_of(&sets.all[i]), available_of(&sets.all[i]));
        if r == 0 || r == a {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(r - a);
        sets.scale(i, r - down);
        cleaned += down;
    }
    // scaleDownOldReplicaSetsForRollingUpdate
    let available = sets.sum(0..sets.all.len(), available_of);
    let mut total = available - min_available;
    for &i in &old {
        if total <= 0 {
            break;
        }
        let r = replicas_of(&sets.all[i]);
        if r == 0 {
            continue;
        }
        let down = r.min(total);
        sets.scale(i, r - down);
        total -= down;
    }
}

/// `rolloutRecreate`: every old ReplicaSet to 0, then, once none of their pods
/// runs, the new one at full size.
fn recreate(sets: &mut Sets, hash: &str, pods_running: &dyn Fn(&str) -> usize) {
    let old: Vec<usize> = sets.old().collect();
    let mut scaled = false;
    for &i in &old {
        if replicas_of(&sets.all[i]) > 0 {
            scaled |= sets.scale(i, 0);
        }
    }
    if scaled || old.iter().any(|&i| pods_running(name_of(&sets.all[i])) > 0) {
        return;
    }
    let n = get_or_create_new(sets, hash);
    sets.scale(n, sets.want);
}

/// The Deployment's status from its ReplicaSets, and a complete rollout's history
/// trimmed.
fn finish(mut sets: Sets, now: &Time) -> Plan {
    let d = sets.d;
    let all = 0..sets.all.len();
    let actual = |rs: &ReplicaSet| rs.status.as_ref().map_or(0, |s| s.replicas);
    let ready = |rs: &ReplicaSet| {
        rs.status
            .as_ref()
            .and_then(|s| s.ready_replicas)
            .unwrap_or(0)
    };
    let observed = Observed {
        replicas: sets.sum(all.clone(), actual),
        updated: sets.new.map_or(0, |n| actual(&sets.all[n])),
        ready: sets.sum(all.clone(), ready),
        available: sets.sum(all.clone(), available_of),
        asked: sets.sum(all, replicas_of),
        min_available: sets.want - max_unavailable(d, sets.want),
        new_name: sets.new.map(|n| name_of(&sets.all[n]).to_string()),
        created: sets.created,
    };
    let status = rollout_status::calculate(d, sets.want, &observed, now);
    let mut plan = Plan {
        revision: sets.new.and_then(|n| {
            sets.all[n]
                .metadata
                .annotations
                .as_ref()?
                .get(REVISION)
                .cloned()
        }),
        ..Default::default()
    };
    let unchanged = !sets.changed.iter().any(|c| *c) && !sets.created;
    if unchanged && rollout_status::complete(d, sets.want, &status) {
        plan.delete = history_to_trim(&sets);
    }
    plan.status = status;
    plan.events = std::mem::take(&mut sets.events);
    for (i, rs) in sets.all.into_iter().enumerate() {
        if sets.created && Some(i) == sets.new {
            plan.create = Some(rs);
        } else if sets.changed[i] {
            plan.update.push(rs);
        }
    }
    plan
}

/// `cleanupDeployment`: old ReplicaSets with no pods beyond `revisionHistoryLimit`
/// (10), lowest revisions first.
fn history_to_trim(sets: &Sets) -> Vec<String> {
    let limit = sets
        .d
        .spec
        .as_ref()
        .and_then(|s| s.revision_history_limit)
        .unwrap_or(10)
        .max(0) as usize;
    let mut cleanable: Vec<&ReplicaSet> = sets
        .old()
        .map(|i| &sets.all[i])
        .filter(|rs| {
            replicas_of(rs) == 0
                && rs.status.as_ref().map_or(0, |s| s.replicas) == 0
                && rs.metadata.deletion_timestamp.is_none()
        })
        .collect();
    if cleanable.len() <= limit {
        return Vec::new();
    }
    cleanable.sort_by_key(|rs| annotation(rs, REVISION).unwrap_or(0));
    let extra = cleanable.len() - limit;
    cleanable[..extra]
        .iter()
        .map(|rs| name_of(rs).to_string())
        .collect()
}
