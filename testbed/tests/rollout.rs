//! Deployments and their ReplicaSets through the machine's real kubectl: `get rs`,
//! `set image`, `rollout status`, `rollout history`, `rollout undo`, `scale`, and
//! `delete` cascading to ReplicaSets and pods. Needs root.

mod common;

use std::collections::BTreeMap;

use common::kubectl::Kubectl;
use common::running::Running;
use common::*;
use serde_json::Value;

/// Each ReplicaSet of `app=web`: name -> (revision, spec.replicas, status.replicas).
fn replica_sets(k: &Kubectl) -> BTreeMap<String, (String, i64, i64)> {
    let list = k.json(&["get", "rs", "-l", "app=web"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rs| {
            let revision = rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                rs["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    revision,
                    rs["spec"]["replicas"].as_i64().unwrap(),
                    rs["status"]["replicas"].as_i64().unwrap_or(0),
                ),
            )
        })
        .collect()
}

fn pods_of(k: &Kubectl, rs: &str) -> Vec<String> {
    let list = k.json(&["get", "pods", "-l", "app=web"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["ownerReferences"][0]["name"] == rs)
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
// Long because it walks one Deployment through its revisions with kubectl; split, each
// part would build its own testbed and replay the ones before.
fn kubectl_rolls_a_deployment_out_back_and_away_through_its_replica_sets() {
    if !root() {
        return;
    }
    let tb = Running::up("rollout");
    let k = Kubectl::for_testbed(&tb);
    let web = repo().join("scenarios/manifests/web.yaml");
    k.ok(&["apply", "-f", &web.display().to_string()]);
    let status = k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    assert_eq!(status.trim(), "deployment \"web\" successfully rolled out");

    // One ReplicaSet, revision 1, whose pods are named after it.
    let first = replica_sets(&k);
    assert_eq!(first.len(), 1, "{first:?}");
    let (v1, (rev, want, have)) = first.into_iter().next().unwrap();
    assert_eq!((rev.as_str(), want, have), ("1", 3, 3));
    let pods = pods_of(&k, &v1);
    assert_eq!(pods.len(), 3);
    assert!(
        pods.iter()
            .all(|p| p.starts_with(&format!("{v1}-")) && p.len() == v1.len() + 6),
        "{pods:?}"
    );
    let wide = k.ok(&["get", "rs", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR"
        ]
    );
    assert!(
        wide.contains(&format!("app=web,pod-template-hash={}", &v1[4..])),
        "{wide}"
    );

    // A new image: a second ReplicaSet takes over, the first stays at 0 as history.
    k.ok(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.k8s.io/e2e-test-images/agnhost:2.53",
    ]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    let second = replica_sets(&k);
    assert_eq!(second.len(), 2, "{second:?}");
    assert_eq!(second[&v1], ("1".into(), 0, 0));
    let v2 = second.keys().find(|n| **n != v1).unwrap().clone();
    assert_eq!(second[&v2], ("2".into(), 3, 3));
    let history = k.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history
        .lines()
        .skip(2)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let events: Vec<String> = k.json(&["get", "events"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "ScalingReplicaSet")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        events.contains(&format!("Scaled up replica set {v2} from 0 to 1")),
        "{events:?}"
    );
    assert!(
        events.contains(&format!("Scaled down replica set {v1} from 3 to 2")),
        "{events:?}"
    );
    let described = k.ok(&["describe", "deployment", "web"]);
    assert!(
        described.contains(&format!("NewReplicaSet:   {v2} (3/3 replicas created)")),
        "{described}"
    );

    // Undo: the first ReplicaSet comes back as revision 3; no third one is made.
    k.ok(&["rollout", "undo", "deployment/web"]);
    k.ok(&["rollout", "status", "deployment/web", "--timeout=20s"]);
    let third = replica_sets(&k);
    assert_eq!(third.len(), 2, "{third:?}");
    assert_eq!(third[&v1], ("3".into(), 3, 3));
    assert_eq!(third[&v2], ("2".into(), 0, 0));

    // Scaled, the active ReplicaSet follows.
    k.ok(&["scale", "deployment/web", "--replicas=1"]);
    k.wait(&["get", "rs", &v1], "v1 at 1", |v: &Value| {
        v["status"]["replicas"] == 1
    });
    assert_eq!(pods_of(&k, &v1).len(), 1);

    // Deleted, its ReplicaSets go, and their pods.
    k.ok(&["delete", "deployment", "web"]);
    k.wait(
        &["get", "rs", "-l", "app=web"],
        "no ReplicaSet",
        |v: &Value| v["items"].as_array().is_some_and(Vec::is_empty),
    );
    k.wait(&["get", "pods"], "no pod of a ReplicaSet", |v: &Value| {
        v["items"].as_array().is_some_and(|pods| {
            pods.iter()
                .all(|p| p["metadata"]["ownerReferences"][0]["kind"] != "ReplicaSet")
        })
    });
}
