//! Which pods a ReplicaSet deletes first when it has too many: upstream's
//! `ActivePodsWithRanks` order (pkg/controller/controller_utils.go) with
//! `LogarithmicScaleDown`, as the ReplicaSet controller's `getPodsToDelete` uses it.

use std::cmp::Ordering;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::labels::ready_condition as pod_ready;

/// The annotation that makes a pod cheaper or dearer to delete.
pub const DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A pod that counts (`IsPodActive`): not being deleted, not finished.
pub fn active(p: &Pod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    p.metadata.deletion_timestamp.is_none() && !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The `n` of `pods` to delete, first to go first. `related` are the active pods of
/// every ReplicaSet of the same owner: a pod on a node with more of them goes
/// before one on a node with fewer.
pub fn to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], n: usize, now: &Time) -> Vec<&'a Pod> {
    let mut on_node: HashMap<&str, usize> = HashMap::new();
    for p in related.iter().filter(|p| active(p)) {
        *on_node.entry(node(p)).or_default() += 1;
    }
    let mut ranked: Vec<(&Pod, usize)> = pods
        .iter()
        .map(|p| (*p, on_node.get(node(p)).copied().unwrap_or(0)))
        .collect();
    ranked.sort_by(|a, b| first_to_go(a, b, now));
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

fn node(p: &Pod) -> &str {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

fn phase_ordinal(p: &Pod) -> u8 {
    match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Unknown") => 1,
        Some("Running") => 2,
        // Pending, and no phase yet.
        _ => 0,
    }
}

fn cost(p: &Pod) -> i32 {
    crate::api::labels::annotation(&p.metadata, DELETION_COST).unwrap_or(0)
}

fn ready_since(p: &Pod) -> Option<&Time> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready" && c.status == "True")?
        .last_transition_time
        .as_ref()
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .max()
        .unwrap_or(0)
}

/// `Less` of `ActivePodsWithRanks`: `Less` when `a` goes before `b`.
fn first_to_go(a: &(&Pod, usize), b: &(&Pod, usize), now: &Time) -> Ordering {
    let ((pa, rank_a), (pb, rank_b)) = (a, b);
    // 1. Unassigned before assigned.
    let by = node(pa)
        .is_empty()
        .cmp(&node(pb).is_empty())
        .reverse()
        // 2. Pending, then Unknown, then Running.
        .then(phase_ordinal(pa).cmp(&phase_ordinal(pb)))
        // 3. Not ready before ready.
        .then(pod_ready(pa).cmp(&pod_ready(pb)))
        // 4. Lower deletion cost first.
        .then(cost(pa).cmp(&cost(pb)))
        // 5. More of its kind on its node first.
        .then(rank_b.cmp(rank_a));
    if by != Ordering::Equal {
        return by;
    }
    // 6. Ready for less time first (on a log scale; ties by uid).
    if pod_ready(pa) && pod_ready(pb) {
        let by = newer_first(pa, pb, ready_since(pa), ready_since(pb), now);
        if by != Ordering::Equal {
            return by;
        }
    }
    // 7. More restarts first.
    let by = restarts(pb).cmp(&restarts(pa));
    if by != Ordering::Equal {
        return by;
    }
    // 8. Newer first (on a log scale; ties by uid).
    let created = |p: &'_ Pod| p.metadata.creation_timestamp.clone();
    newer_first(pa, pb, created(pa).as_ref(), created(pb).as_ref(), now)
}

/// Of two times, the later (or a missing one) first; when both are in the same
/// power-of-two bucket of age, by uid, as upstream's pseudo-random tie-break.
fn newer_first(pa: &Pod, pb: &Pod, ta: Option<&Time>, tb: Option<&Time>, now: &Time) -> Ordering {
    match (ta, tb) {
        (Some(a), Some(b)) if a == b => Ordering::Equal,
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => match log_age(a, now).cmp(&log_age(b, now)) {
            Ordering::Equal => pa.metadata.uid.cmp(&pb.metadata.uid),
            by => by,
        },
    }
}

/// `floor(log2(now - t))` in nanoseconds, -1 for a time not in the past.
fn log_age(t: &Time, now: &Time) -> i64 {
    let d = now.0.as_nanosecond() - t.0.as_nanosecond();
    if d > 0 {
        (d as f64).log2() as i64
    } else {
        -1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, uid: u32, v: serde_json::Value) -> Pod {
        let mut p = json!({
            "metadata": {
                "name": name,
                "uid": format!("00000000-0000-4000-8000-{uid:012x}"),
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "spec": {"nodeName": "node-1", "containers": []},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:10Z"}
            ]},
        });
        merge(&mut p, v);
        serde_json::from_value(p).unwrap()
    }

    fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b,
        }
    }

    fn order(pods: &[Pod], related: &[Pod]) -> Vec<String> {
        let now: Time = serde_json::from_value(json!("2026-01-01T01:00:00Z")).unwrap();
        let refs: Vec<&Pod> = pods.iter().collect();
        let related: Vec<&Pod> = related.iter().collect();
        to_delete(&refs, &related, pods.len(), &now)
            .into_iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    #[test]
    fn unscheduled_pending_unready_cheap_crowded_go_first() {
        let pods = [
            pod("ready", 1, json!({})),
            pod(
                "dear",
                2,
                json!({"metadata": {"annotations": {DELETION_COST: "10"}}}),
            ),
            pod("unready", 3, json!({"status": {"conditions": []}})),
            pod("pending", 4, json!({"status": {"phase": "Pending"}})),
            pod("unscheduled", 5, json!({"spec": {"nodeName": null}})),
            pod(
                "cheap",
                6,
                json!({"metadata": {"annotations": {DELETION_COST: "-5"}}}),
            ),
        ];
        assert_eq!(
            order(&pods, &pods),
            [
                "unscheduled",
                "pending",
                "unready",
                "cheap",
                "ready",
                "dear"
            ]
        );
    }

    #[test]
    fn a_pod_on_a_crowded_node_goes_before_one_alone() {
        let alone = pod("alone", 1, json!({"spec": {"nodeName": "node-2"}}));
        let crowded = pod("crowded", 2, json!({}));
        // Another pod of the Deployment (an older ReplicaSet's) shares node-1.
        let neighbour = pod("neighbour", 3, json!({}));
        let pods = [alone.clone(), crowded.clone()];
        assert_eq!(
            order(&pods, &[alone, crowded, neighbour]),
            ["crowded", "alone"]
        );
    }

    #[test]
    fn the_most_recently_ready_then_most_restarted_then_newest_go_first() {
        let late = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:50:00Z"}
        ]}});
        let restarted = json!({"status": {"containerStatuses": [
            {"name": "main", "image": "x", "imageID": "", "ready": true, "restartCount": 3}
        ]}});
        let newer = json!({"metadata": {"creationTimestamp": "2026-01-01T00:59:00Z"}});
        let pods = [
            pod("old", 1, json!({})),
            pod("newer", 2, newer),
            pod("restarted", 3, restarted),
            pod("late-ready", 4, late),
        ];
        assert_eq!(
            order(&pods, &pods),
            ["late-ready", "restarted", "newer", "old"]
        );
    }

    #[test]
    fn ages_in_one_power_of_two_bucket_tie_and_fall_to_the_uid() {
        // 59 min and 58 min old: one bucket of log2(ns), so the lower uid goes first
        // although it is the older, as upstream's LogarithmicScaleDown does.
        let a = pod(
            "older",
            1,
            json!({"metadata": {"creationTimestamp": "2026-01-01T00:01:00Z"}}),
        );
        let b = pod(
            "newer",
            2,
            json!({"metadata": {"creationTimestamp": "2026-01-01T00:02:00Z"}}),
        );
        assert_eq!(order(&[b.clone(), a.clone()], &[a, b]), ["older", "newer"]);
    }
}
