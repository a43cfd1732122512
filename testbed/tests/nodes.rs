//! Nodes as the API shows them to the machine's real kubectl: each kubelet
//! registers its Node (Ready, its address, its pod CIDR) and renews its Lease in
//! kube-node-lease. Needs root. (A node that goes silent: the scenario
//! node-goes-silent.)

mod common;

use common::kubectl::Kubectl;
use common::running::Running;
use common::*;
use serde_json::Value;

#[test]
fn kubectl_gets_the_nodes_and_their_leases_which_are_renewed() {
    if !root() {
        return;
    }
    let text = std::fs::read_to_string(repo().join("scenarios/two-nodes.yaml")).unwrap();
    let text = text.replacen(
        "  nodes: 2\n",
        "  nodes: 2\n  kubelet: {nodeLeaseDurationSeconds: 2}\n",
        1,
    );
    let tb = Running::up_text("nodes", &text);
    let k = Kubectl::for_testbed(&tb);

    let nodes = k.ok(&["get", "nodes"]);
    let rows: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
        "{nodes}"
    );
    assert_eq!(rows.len(), 3, "{nodes}");
    for (row, name) in rows[1..].iter().zip(["node-1", "node-2"]) {
        assert_eq!(
            (row[0], row[1], row[2], row[4]),
            (name, "Ready", "<none>", "v1.33.0"),
            "{nodes}"
        );
    }
    let wide = k.ok(&["get", "nodes", "-o", "wide"]);
    assert!(
        wide.contains("INTERNAL-IP") && wide.contains("172.18.0.3"),
        "{wide}"
    );

    let node = k.json(&["get", "node", "node-1"]);
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24", "{node}");
    assert!(
        node["metadata"].get("namespace").is_none(),
        "a Node has no namespace: {node}"
    );
    let ready = &node["status"]["conditions"][0];
    assert_eq!(
        (&ready["type"], &ready["status"], &ready["reason"]),
        (
            &Value::from("Ready"),
            &Value::from("True"),
            &Value::from("KubeletReady")
        )
    );
    assert_eq!(
        node["metadata"]["labels"]["kubernetes.io/hostname"],
        "node-1"
    );
    // A Node is outside every namespace: asked for in one, it is not there.
    let in_ns = k.out(&["get", "--raw", "/api/v1/namespaces/default/nodes/node-1"]);
    assert!(!in_ns.status.success());
    leases_are_held_and_renewed(&k);
}

/// Each node holds its own Lease, owned by its Node, renewed every half second (a
/// quarter of its 2 s).
fn leases_are_held_and_renewed(k: &Kubectl) {
    let leases = k.ok(&["get", "leases", "-n", "kube-node-lease"]);
    assert!(leases.starts_with("NAME"), "{leases}");
    for name in ["node-1", "node-2"] {
        assert!(
            leases
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([name, name])),
            "{name} holds its own Lease: {leases}"
        );
    }
    let renew = |v: &Value| {
        v["spec"]["renewTime"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let lease = k.json(&["get", "lease", "-n", "kube-node-lease", "node-2"]);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 2, "{lease}");
    assert_eq!(
        lease["metadata"]["ownerReferences"][0]["kind"], "Node",
        "{lease}"
    );
    let first = renew(&lease);
    k.wait(
        &["get", "lease", "-n", "kube-node-lease", "node-2"],
        "the Lease renewed",
        |v| renew(v) != first,
    );
}
