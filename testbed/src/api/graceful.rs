//! Graceful deletion of pods, as the API server does it: a running pod is not
//! removed but marked (`deletionTimestamp`, `deletionGracePeriodSeconds`), and its
//! kubelet removes it once its containers have stopped.

use super::store::Tx;
use super::{Key, Object, Store};

/// A pod's `terminationGracePeriodSeconds` when it sets none.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Marks the running pod `key` as terminating (or leaves it terminating), with
/// `grace` or its own grace period: the pod as it is then, or `None` when it is to
/// be deleted at once (a grace of 0, a pod not scheduled, or one that has ended).
pub fn mark_terminating(store: &Store, key: &Key, grace: Option<i64>) -> Option<Object> {
    store.write(|tx| mark_terminating_in(tx, key, grace))
}

/// [`mark_terminating`] within the batch of writes `tx`.
pub fn mark_terminating_in(tx: &mut Tx, key: &Key, grace: Option<i64>) -> Option<Object> {
    let Some(Object::Pod(mut pod)) = tx.get(key).cloned() else {
        return None;
    };
    let spec = pod.spec.as_ref()?;
    let grace = grace
        .or(spec.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_SECONDS);
    // Upstream's CheckGracefulDelete: at once when it is not scheduled or has ended;
    // a pod on a node but not started yet is its kubelet's to remove.
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let ended = matches!(phase, Some("Failed" | "Succeeded"));
    if grace <= 0 || spec.node_name.is_none() || ended {
        return None;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Object::Pod(pod));
    }
    pod.metadata.deletion_timestamp = Some(super::store::now());
    pod.metadata.deletion_grace_period_seconds = Some(grace);
    Some(tx.put(Object::Pod(pod)))
}

/// Deletes pod `key` as a controller does through the API server: a scheduled pod
/// that has not ended is marked terminating (its own grace period), any other removed at once; within
/// the batch of writes `tx`, so a controller deleting several makes one change.
pub fn delete_pod(tx: &mut Tx, key: &Key) {
    if mark_terminating_in(tx, key, None).is_none() {
        tx.delete(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;
    use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};

    /// Whether pod `web` (on `node`, in `phase`) is deleted at once.
    fn at_once(node: Option<&str>, phase: &str, grace: Option<i64>) -> bool {
        let store = Store::default();
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_string),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        };
        store.write(|tx| {
            tx.put(Object::Pod(pod));
        });
        let key = Key::new(Kind::Pod, "default", "web");
        match mark_terminating(&store, &key, grace) {
            None => true,
            Some(marked) => {
                let m = marked.meta();
                assert!(m.deletion_timestamp.is_some());
                assert_eq!(m.deletion_grace_period_seconds, Some(grace.unwrap_or(30)));
                false
            }
        }
    }

    #[test]
    fn a_scheduled_pod_that_has_not_ended_is_deleted_gracefully_as_upstream_does() {
        assert!(!at_once(Some("node-1"), "Running", None));
        assert!(!at_once(Some("node-1"), "Running", Some(5)));
        // Pending on a node: its kubelet removes it (at once, if it never started).
        assert!(!at_once(Some("node-1"), "Pending", None));
        assert!(at_once(None, "Pending", None), "not scheduled");
        assert!(at_once(Some("node-1"), "Succeeded", None), "ended");
        assert!(at_once(Some("node-1"), "Failed", None), "ended");
        assert!(at_once(Some("node-1"), "Running", Some(0)), "grace 0");
    }
}
