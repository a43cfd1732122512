//! kube-proxy's nftables mode with real traffic: every Service type and policy the
//! iptables tests cover, the table as upstream's reads, its repair, and the real `nft`
//! taking every transaction our partial syncs write. Needs root.

mod common;

use std::time::{Duration, Instant};

use common::running::{apply, from_outside, text, Running};
use common::*;

/// Polls `f` until it is true, for up to 10 s.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}: not in 10 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn curl(tb: &Running, from: &str, url: &str, secs: &str) -> std::process::Output {
    tb.exec(from, &["curl", "-s", "-m", secs, url])
}

#[test]
fn cluster_ips_answer_and_what_has_no_endpoint_is_rejected_or_dropped() {
    if !root() {
        return;
    }
    let tb = Running::up_in_mode("nftcip", "nftables");
    let nodes = tb.json(&["get", "nodes"]);
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["mode"] == "nftables"),
        "{nodes}"
    );
    apply(
        &tb,
        "svcs",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: nobody}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80}]\n",
    );
    tb.wait_ready("web", 2);
    let web = tb.cluster_ip("web");
    let seen = tb.answers("client-1", &format!("http://{web}/hostname"), 20);
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        ["web-1", "web-2"],
        "{seen:?}"
    );
    // No endpoints: rejected (curl's 7, refused) through reject-chain.
    let nobody = tb.cluster_ip("nobody");
    let out = curl(&tb, "client-1", &format!("http://{nobody}/"), "2");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    // A port the Service does not have: rejected by cluster-ips-check; an address of
    // the Service CIDR no Service has: dropped (a timeout, curl's 28).
    let out = curl(&tb, "client-1", &format!("http://{web}:81/"), "2");
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let out = curl(&tb, "client-1", "http://10.96.0.250/", "1");
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    // The table reads as upstream's, and the node has no iptables rules of ours.
    let table = tb.rules("node-1", "nftables");
    for want in [
        "chain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}",
        "comment \"default/nobody\" : goto reject-chain",
        "numgen random mod 2 vmap { 0 : goto endpoint-",
        "masquerade fully-random",
    ] {
        assert!(table.contains(want), "{want:?} not in:\n{table}");
    }
    let legacy = tb.rules("node-1", "iptables");
    assert!(!legacy.contains("KUBE-SERVICES"), "{legacy}");
}

#[test]
fn node_ports_answer_on_the_node_address_and_a_local_policy_keeps_the_client() {
    if !root() {
        return;
    }
    let tb = Running::up_in_mode("nftnp", "nftables");
    apply(
        &tb,
        "np",
        "apiVersion: v1\nkind: Service\nmetadata: {name: np-cluster}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30080}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: only-2, labels: {app: only-2}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: np-local}\nspec:\n  type: NodePort\n  externalTrafficPolicy: Local\n  selector: {app: only-2}\n  ports: [{port: 80, targetPort: 8080, nodePort: 30081}]\n",
    );
    tb.wait_ready("np-cluster", 2);
    tb.wait_ready("np-local", 1);
    let outside = |url: &str, secs: &str| from_outside(&tb, &["curl", "-s", "-m", secs, url]);
    for node in ["172.18.0.2", "172.18.0.3"] {
        let out = outside(&format!("http://{node}:30080/hostname"), "5");
        assert!(text(&out).starts_with("web-"), "{node}: {out:?}");
    }
    // Local: the client's own address on node-2; node-1 has no endpoint and drops.
    let out = outside("http://172.18.0.3:30081/clientip", "5");
    assert!(text(&out).starts_with("172.18.0.1:"), "{out:?}");
    let out = outside("http://172.18.0.2:30081/hostname", "2");
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    // From the node to its own address; pods are not subject to the Local policy.
    let out = curl(&tb, "node/node-1", "http://172.18.0.2:30080/hostname", "5");
    assert!(text(&out).starts_with("web-"), "{out:?}");
    let out = curl(&tb, "client-1", "http://172.18.0.2:30081/hostname", "5");
    assert_eq!(text(&out), "only-2", "{out:?}");
    // Upstream's nftables mode takes node ports on the node's primary address only
    // (--nodeport-addresses' default there): not on localhost.
    let out = curl(&tb, "node/node-1", "http://127.0.0.1:30080/hostname", "2");
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let ips = tb.exec(
        "node/node-1",
        &["nft", "list", "set", "ip", "kube-proxy", "nodeport-ips"],
    );
    assert!(text(&ips).contains("elements = { 172.18.0.2 }"), "{ips:?}");
}

#[test]
fn a_local_internal_traffic_policy_drops_where_no_endpoint_is() {
    if !root() {
        return;
    }
    let tb = Running::up_in_mode("nftitp", "nftables");
    apply(
        &tb,
        "itp",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: only-here, labels: {app: only-here}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: only-here}\nspec:\n  internalTrafficPolicy: Local\n  selector: {app: only-here}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("only-here", 1);
    let url = format!("http://{}/hostname", tb.cluster_ip("only-here"));
    let out = curl(&tb, "client-2", &url, "5");
    assert_eq!(text(&out), "only-here", "{out:?}");
    let out = curl(&tb, "client-1", &url, "2");
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    let map = tb.exec(
        "node/node-1",
        &[
            "nft",
            "list",
            "map",
            "ip",
            "kube-proxy",
            "no-endpoint-services",
        ],
    );
    assert!(
        text(&map).contains("comment \"default/only-here\" : drop"),
        "{map:?}"
    );
}

#[test]
fn a_load_balancer_address_answers_from_outside_within_its_source_ranges() {
    if !root() {
        return;
    }
    let tb = Running::up_text(
        "nftlb",
        "name: lb\ncluster: {nodes: 2, hosts: [laptop], kubeProxy: {mode: nftables}}\n",
    );
    apply(
        &tb,
        "lb",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: lb-server, labels: {app: lb}}\nspec:\n  nodeName: node-2\n  containers:\n  - {name: main, image: agnhost, ports: [{containerPort: 8080}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: lb-local}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  loadBalancerSourceRanges: [172.18.0.4/32]\n  selector: {app: lb}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("lb-local", 1);
    let mut ip = String::new();
    eventually("an ingress address", || {
        let s = tb.json(&["get", "svc", "lb-local"]);
        ip = s["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !ip.is_empty()
    });
    tb.wait_synced();
    // The laptop is in the source ranges and keeps its address; the gateway is not.
    let out = curl(&tb, "host/laptop", &format!("http://{ip}/clientip"), "5");
    assert!(text(&out).starts_with("172.18.0.4:"), "{out:?}");
    let out = from_outside(&tb, &["curl", "-s", "-m", "2", &format!("http://{ip}/")]);
    assert_eq!(out.status.code(), Some(28), "{out:?}");
    let map = tb.exec(
        "node/node-2",
        &["nft", "list", "map", "ip", "kube-proxy", "firewall-ips"],
    );
    assert!(
        text(&map).contains(&format!("{ip} . tcp . 80 : goto firewall-")),
        "{map:?}"
    );
}

#[test]
fn a_deleted_table_is_back_at_the_next_sync() {
    if !root() {
        return;
    }
    let tb = Running::up_in_mode("nftback", "nftables");
    let out = tb.exec(
        "node/node-1",
        &["nft", "delete", "table", "ip", "kube-proxy"],
    );
    assert!(out.status.success(), "{out:?}");
    let dns = "kubernetes.default.svc.cluster.local";
    eventually("the table and ClusterIP traffic back", || {
        let out = tb.exec("client-1", &["dig", "+short", "+time=1", "+tries=1", dns]);
        out.status.success() && text(&out) == "10.96.0.1"
    });
    let out = tb.exec("node/node-1", &["nft", "flush", "ruleset"]);
    assert!(out.status.success(), "{out:?}");
    eventually("back after a flush of the ruleset", || {
        let out = tb.exec("client-1", &["dig", "+short", "+time=1", "+tries=1", dns]);
        out.status.success() && text(&out) == "10.96.0.1"
    });
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_endpoint() {
    if !root() {
        return;
    }
    let tb = Running::up_in_mode("nftaff", "nftables");
    apply(
        &tb,
        "sticky",
        "apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  selector: {app: web}\n  sessionAffinity: ClientIP\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    tb.wait_ready("sticky", 2);
    let url = format!("http://{}/hostname", tb.cluster_ip("sticky"));
    let seen = tb.answers("client-1", &url, 20);
    assert_eq!(seen.len(), 1, "{seen:?}");
    let out = tb.exec("node/node-1", &["nft", "list", "sets", "ip"]);
    assert!(text(&out).contains("timeout 3h"), "{out:?}");
}
