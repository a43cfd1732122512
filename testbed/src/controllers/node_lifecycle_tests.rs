//! The node lifecycle controller's passes, on a store: a node unheard for its grace
//! period goes Unknown and is tainted, its pods go not ready, and are evicted when
//! their tolerations run out; a node that reports Ready again loses the taints.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

use super::{act_on_pod, monitor};
use crate::api::taints::UNREACHABLE;
use crate::api::{Key, Kind, Object, Store};

fn node(ready: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": "node-2"},
        "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletReady"}]},
    }))
    .unwrap()
}

fn pod(tolerations: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"nodeName": "node-2", "terminationGracePeriodSeconds": 30, "tolerations": tolerations,
                 "containers": [{"name": "web"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

fn stored_node(store: &Store) -> Node {
    match store.get(&Key::new(Kind::Node, "", "node-2")) {
        Some(Object::Node(n)) => n,
        other => panic!("{other:?}"),
    }
}

fn stored_pod(store: &Store) -> Pod {
    match store.get(&Key::new(Kind::Pod, "default", "web")) {
        Some(Object::Pod(p)) => p,
        other => panic!("{other:?}"),
    }
}

/// A store with node-2 unheard (Unknown, tainted unreachable) and pod `p` on it,
/// the controller having acted on the pod once, at `since`: the pod as stored then.
fn unreachable_with(p: Pod, since: Instant) -> (Store, Pod) {
    let store = Store::default();
    store.write(|tx| {
        tx.put(Object::Node(node("True")));
        tx.put(Object::Pod(p));
    });
    let n = stored_node(&store);
    store.write(|tx| monitor(tx, "node-2", &n, true));
    let (p, n) = (stored_pod(&store), stored_node(&store));
    store.write(|tx| act_on_pod(tx, &n, &p, Some(since)));
    let p = stored_pod(&store);
    (store, p)
}

fn taints(n: &Node) -> Vec<String> {
    let all = n.spec.iter().flat_map(|s| s.taints.iter().flatten());
    all.map(|t| format!("{}:{}", t.key, t.effect)).collect()
}

#[test]
fn an_unheard_node_goes_unknown_and_tainted_and_a_ready_one_is_untainted() {
    let store = Store::default();
    store.write(|tx| {
        tx.put(Object::Node(node("True")));
    });
    let n = stored_node(&store);
    store.write(|tx| monitor(tx, "node-2", &n, false));
    assert!(
        taints(&stored_node(&store)).is_empty(),
        "heard from: nothing changes"
    );
    store.write(|tx| monitor(tx, "node-2", &n, true));
    let n = stored_node(&store);
    let ready = n.status.as_ref().unwrap().conditions.as_ref().unwrap()[0].clone();
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_deref(),
            ready.message.as_deref()
        ),
        (
            "Unknown",
            Some("NodeStatusUnknown"),
            Some("Kubelet stopped posting node status.")
        )
    );
    assert_eq!(
        taints(&n),
        [
            format!("{UNREACHABLE}:NoSchedule"),
            format!("{UNREACHABLE}:NoExecute")
        ]
    );
    let events = store.list(Kind::Event, Some("default"));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Object::Event(e) if e.reason.as_deref() == Some("NodeNotReady"))),
        "{events:?}"
    );
    // The kubelet reports Ready again: the taints go.
    let mut back = stored_node(&store);
    back.status = node("True").status;
    store.write(|tx| {
        tx.put(Object::Node(back));
    });
    let n = stored_node(&store);
    store.write(|tx| monitor(tx, "node-2", &n, false));
    assert!(taints(&stored_node(&store)).is_empty());
}

#[test]
fn pods_on_an_unreachable_node_go_not_ready_then_are_evicted_when_tolerations_run_out() {
    let p = pod(
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]),
    );
    let (store, p) = unreachable_with(p, Instant::now());
    assert!(!crate::api::labels::pod_ready(&p), "marked not ready");
    assert!(
        p.metadata.deletion_timestamp.is_none(),
        "tolerated for 60 s"
    );
    // 60 s later (by the controller's clock): evicted, gracefully.
    let long_ago = Instant::now().checked_sub(Duration::from_secs(61)).unwrap();
    let n = stored_node(&store);
    store.write(|tx| act_on_pod(tx, &n, &p, Some(long_ago)));
    let p = stored_pod(&store);
    assert_eq!(p.metadata.deletion_grace_period_seconds, Some(30));
    let conds = p.status.as_ref().unwrap().conditions.as_ref().unwrap();
    assert!(conds
        .iter()
        .any(|c| c.type_ == "DisruptionTarget"
            && c.reason.as_deref() == Some("DeletionByTaintManager")));
}

#[test]
fn a_pod_that_tolerates_for_ever_stays_and_one_that_does_not_goes_at_once() {
    for (tolerations, evicted) in [
        (json!([{"key": UNREACHABLE, "operator": "Exists"}]), false),
        (json!([]), true),
    ] {
        let (_, p) = unreachable_with(pod(tolerations.clone()), Instant::now());
        assert_eq!(
            p.metadata.deletion_timestamp.is_some(),
            evicted,
            "{tolerations}"
        );
    }
}
