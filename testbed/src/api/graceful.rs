//! Graceful deletion of pods, as the API server does it: a running pod is not
//! removed but marked (`deletionTimestamp`, `deletionGracePeriodSeconds`), and its
//! kubelet removes it once its containers have stopped.

use super::store::Tx;
use super::{Key, Object, Store};

/// A pod's `terminationGracePeriodSeconds` when it sets none.
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Marks the running pod `key` as terminating (or leaves it terminating), with
/// `grace` or its own grace period: the pod as it is then, or `None` when it is to
/// be deleted at once (a grace of 0, or a pod that is not running on a node).
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
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let running = spec.node_name.is_some() && phase == Some("Running");
    if grace <= 0 || !running {
        return None;
    }
    if pod.metadata.deletion_timestamp.is_some() {
        return Some(Object::Pod(pod));
    }
    pod.metadata.deletion_timestamp = Some(super::store::now());
    pod.metadata.deletion_grace_period_seconds = Some(grace);
    Some(tx.put(Object::Pod(pod)))
}

/// Deletes pod `key` as a controller does through the API server: a running pod is
/// marked terminating (its own grace period), any other removed at once; within
/// the batch of writes `tx`, so a controller deleting several makes one change.
pub fn delete_pod(tx: &mut Tx, key: &Key) {
    if mark_terminating_in(tx, key, None).is_none() {
        tx.delete(key);
    }
}
